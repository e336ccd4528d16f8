"""What the relay says, checked field by field before the client uses any of it.

A relay is trusted to relay, not to be well-formed: every field of its JSON answers and
control messages (docs/protocol.md §2-§6) is checked here for its type and range, so that an odd
answer (``"expires": Infinity``, a member id of -1, a name of a megabyte) is a
``RelayAnswerError`` that says what was wrong, never an uncaught exception. Text the relay
chose (names, error codes) is repaired and bounded here and escaped where it is shown. Pure
functions, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import RelayAnswerError
from .events import Member
from .text import repair, visible

MAX_MEMBER_ID = 2**32 - 1
# Number.isSafeInteger's bound, as in message.py: the browser cannot hold a larger integer.
MAX_SAFE_INTEGER = 2**53 - 1
# The relay picks names like "Amber Otter"; anything far longer is not a name.
MAX_NAME_LENGTH = 200
# The relay's own bounds for these settings (pugfast/config.py), with room to spare.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_CAPACITY = 1_000_000
MAX_CODE_LENGTH = 64


def loads(text: str | bytes) -> Any:
    """JSON as docs/protocol.md §1.1 means it: NaN and Infinity (which Python's json accepts) are
    refused. Raises ValueError."""
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(text: str | bytes) -> dict[str, Any] | None:
    """The JSON object ``text`` holds, or None when it holds something else or no JSON."""
    try:
        value = loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def integer(value: Any, low: int, high: int) -> int | None:
    """``value`` when it is a JSON integer in ``low..high`` (not a bool, not a float)."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


def member(value: Any) -> Member:
    """A ``{"id": i, "name": s}`` object: an id in 1..2^32-1 and a name of 1 to 200
    characters (lone surrogates repaired). Raises RelayAnswerError."""
    if not isinstance(value, dict):
        raise RelayAnswerError("a member is not an object")
    member_id = integer(value.get("id"), 1, MAX_MEMBER_ID)
    if member_id is None:
        raise RelayAnswerError(f"a member id is {_shown(value.get('id'))}, not an integer from 1 to 2^32-1")
    name = value.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise RelayAnswerError(
            f"member {member_id}'s name is not a string of 1 to {MAX_NAME_LENGTH} characters"
        )
    return Member(member_id, repair(name))


@dataclass(frozen=True, slots=True)
class Welcome:
    """The fields of the relay's ``welcome`` (docs/protocol.md §6.2), checked."""

    you: Member
    creator: bool
    members: tuple[Member, ...]
    expires: int
    capacity: int


def welcome(data: dict[str, Any]) -> Welcome:
    """Checks a welcome: ``you`` a member, ``members`` a list of members with distinct ids that
    holds ``you``, ``creator`` a boolean, ``expires`` a Unix time in ms, ``capacity`` a
    positive integer at least the number of members. Raises RelayAnswerError naming the field."""
    you = member(data.get("you"))
    listed = data.get("members")
    if not isinstance(listed, list):
        raise RelayAnswerError("the welcome's members is not a list")
    members = tuple(member(m) for m in listed)
    if len({m.id for m in members}) != len(members):
        raise RelayAnswerError("the welcome lists a member id twice")
    if you not in members:
        raise RelayAnswerError("the welcome's member list leaves out the member joining")
    creator = data.get("creator")
    if not isinstance(creator, bool):
        raise RelayAnswerError(f"the welcome's creator is {_shown(creator)}, not true or false")
    expires = integer(data.get("expires"), 0, MAX_SAFE_INTEGER)
    if expires is None:
        raise RelayAnswerError(f"the welcome's expires is {_shown(data.get('expires'))}, not a time in ms")
    capacity = integer(data.get("capacity"), max(1, len(members)), MAX_CAPACITY)
    if capacity is None:
        raise RelayAnswerError(f"the welcome's capacity is {_shown(data.get('capacity'))}, "
                               f"not a whole number from {len(members)} to {MAX_CAPACITY:,}")
    return Welcome(you, creator, members, expires, capacity)


def max_message_bytes(limits: dict[str, Any]) -> int:
    """``maxMessageBytes`` from ``/api/limits``: 1 to 16 MiB. Raises RelayAnswerError."""
    value = integer(limits.get("maxMessageBytes"), 1, MAX_MESSAGE_BYTES)
    if value is None:
        raise RelayAnswerError(f"its limits give maxMessageBytes as {_shown(limits.get('maxMessageBytes'))}, "
                               f"not a size from 1 to {MAX_MESSAGE_BYTES:,} bytes")
    return value


def error_code(data: dict[str, Any]) -> str:
    """The ``code`` of a ``{"type":"error"}`` message, shown safely (at most 64 characters)."""
    code = data.get("code")
    if not isinstance(code, str) or not code:
        return "no code given"
    return visible(repair(code[:MAX_CODE_LENGTH]))


def _shown(value: Any) -> str:
    """A value the relay sent, quoted short and harmless for an error message."""
    text = json.dumps(value)  # Infinity and NaN spelled as the relay would have sent them
    return visible(repair(text[:40] + ("..." if len(text) > 40 else "")))
