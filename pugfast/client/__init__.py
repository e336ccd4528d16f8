"""``pugfast.client``: the browser's end-to-end protocol from Python, for terminals, scripts
and bots (docs/client.md, "Python and terminal client").

    from pugfast.client import Message, Room

    async with Room.join(link) as room:
        await room.send("hello")
        async for event in room:
            if isinstance(event, Message):
                print(event.sender.name, event.text)

Needs the ``client`` extra (``pip install 'pugfast[client]'``) for AES-GCM; importing this
package does not, so a missing extra is reported as MissingDependency when a room is joined.
"""

from .create import create_room, solve_challenge
from .errors import (
    ApiError,
    ClientError,
    DecryptError,
    JoinRefused,
    LinkError,
    MessageFormatError,
    MessageTooLarge,
    MissingDependency,
    NoSuchRoom,
    NotConnected,
    NotCreator,
    RelayAnswerError,
    RelayUnreachable,
    RoomFull,
    WordListError,
    WrongSecret,
)
from .events import (
    Delivery,
    Ended,
    Event,
    Joined,
    KeyWarning,
    Left,
    Member,
    Message,
    Overflow,
    RelayError,
    Replayed,
    Undecryptable,
)
from .fingerprint import fingerprint
from .link import Link, parse_link, parse_relay_url
from .room import Room

__all__ = [
    "ApiError",
    "ClientError",
    "DecryptError",
    "Delivery",
    "Ended",
    "Event",
    "JoinRefused",
    "Joined",
    "KeyWarning",
    "Left",
    "Link",
    "LinkError",
    "Member",
    "Message",
    "MessageFormatError",
    "MessageTooLarge",
    "MissingDependency",
    "NoSuchRoom",
    "NotConnected",
    "NotCreator",
    "Overflow",
    "RelayAnswerError",
    "RelayError",
    "RelayUnreachable",
    "Replayed",
    "Room",
    "RoomFull",
    "Undecryptable",
    "WordListError",
    "WrongSecret",
    "create_room",
    "fingerprint",
    "parse_link",
    "parse_relay_url",
    "solve_challenge",
]
