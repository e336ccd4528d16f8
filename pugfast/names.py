"""Display names the relay gives members ("Amber Otter"), unique within a room."""

from __future__ import annotations

import os
from array import array
from collections.abc import Container

ADJECTIVES = (
    "Amber", "Azure", "Bold", "Brave", "Bright", "Calm", "Clever", "Coral", "Crimson", "Curious",
    "Dapper", "Eager", "Fancy", "Fern", "Gentle", "Golden", "Happy", "Hazel", "Honest", "Indigo",
    "Ivory", "Jade", "Jolly", "Keen", "Kind", "Lively", "Lucky", "Lunar", "Merry", "Mint",
    "Misty", "Noble", "Ochre", "Olive", "Patient", "Plum", "Polar", "Quick", "Quiet", "Rapid",
    "Rosy", "Ruby", "Rustic", "Sage", "Scarlet", "Silver", "Sly", "Snowy", "Solar", "Steady",
    "Sunny", "Swift", "Tidy", "Topaz", "Umber", "Vivid", "Warm", "Wild", "Witty", "Zesty",
)
ANIMALS = (
    "Badger", "Beaver", "Bison", "Crane", "Dolphin", "Falcon", "Ferret", "Finch", "Fox", "Gecko",
    "Heron", "Ibex", "Jackal", "Koala", "Lark", "Lemur", "Lynx", "Marten", "Moose", "Newt",
    "Ocelot", "Orca", "Osprey", "Otter", "Owl", "Panda", "Pelican", "Puffin", "Quail", "Rabbit",
    "Raven", "Robin", "Salmon", "Seal", "Sparrow", "Stoat", "Swan", "Tapir", "Tiger", "Toucan",
    "Turtle", "Walrus", "Weasel", "Whale", "Wolf", "Wombat", "Wren", "Yak", "Zebra", "Marmot",
)


# Every pair, made once: a member's name is one of these shared strings, not a copy of its own.
NAMES = tuple(f"{adjective} {animal}" for adjective in ADJECTIVES for animal in ANIMALS)


# Two random bytes make a value below 65,536; those below the last whole multiple of the
# number of names pick one uniformly, the others are drawn again.
_LIMIT = 65536 - 65536 % len(NAMES)
# Random values from the OS CSPRNG, read a few KiB at a time: a read is a system call, which
# costs more than the rest of picking a name, and a join storm picks thousands a second. The
# values decide nothing secret (a name is shown to the room), and each is used once.
_POOL_BYTES = 4096
_values = array("H")


def pick_name(taken: Container[str]) -> str:
    """A random "Adjective Animal" not in ``taken``.

    There are 3,000 pairs, far more than a room's largest capacity; should a room ever use them
    all, a number is added to stay unique.
    """
    values = _values
    for _ in range(64):
        if not values:
            values.frombytes(os.urandom(_POOL_BYTES))
        value = values.pop()
        if value < _LIMIT:
            name = NAMES[value % len(NAMES)]
            if name not in taken:
                return name
    for name in NAMES:
        if name not in taken:
            return name
    number = 2
    while f"{NAMES[0]} {number}" in taken:
        number += 1
    return f"{NAMES[0]} {number}"
