"""Display names the relay gives members ("Amber Otter"), unique within a room."""

from __future__ import annotations

import secrets
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


def pick_name(taken: Container[str]) -> str:
    """A random "Adjective Animal" not in ``taken``.

    There are 3,000 pairs, far more than a room's largest capacity; should a room ever use them
    all, a number is added to stay unique.
    """
    for _ in range(64):
        # One draw from the OS for both words: each is a system call.
        pair = secrets.randbelow(len(ADJECTIVES) * len(ANIMALS))
        name = f"{ADJECTIVES[pair // len(ANIMALS)]} {ANIMALS[pair % len(ANIMALS)]}"
        if name not in taken:
            return name
    for adjective in ADJECTIVES:
        for animal in ANIMALS:
            name = f"{adjective} {animal}"
            if name not in taken:
                return name
    number = 2
    while f"{ADJECTIVES[0]} {ANIMALS[0]} {number}" in taken:
        number += 1
    return f"{ADJECTIVES[0]} {ANIMALS[0]} {number}"
