"""The room registry: rooms, their members and their deadlines, in memory and nowhere else.

Plain data with one owner (the gateway). Times are passed in: ``now`` is the monotonic clock,
which deadlines use; ``wall_ms`` is Unix milliseconds, which is only ever shown to clients.
Only the SHA-256 of a room's secret is kept, so a dump of the relay's memory cannot be used to
join a room.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from .names import pick_name
from .pow import b64u


@dataclass(eq=False, slots=True)
class Member:
    """One joined connection: its id in the room, its display name and its engine connection."""

    id: int
    name: str
    conn: Any

    def describe(self) -> bytes:
        """``{"id":i,"name":s}`` as JSON. A name is letters, digits and spaces
        (pugfast.names), so nothing in it needs escaping."""
        return b'{"id":%d,"name":"%b"}' % (self.id, self.name.encode("ascii"))


@dataclass(eq=False, slots=True)
class Room:
    """A room, from creation until it ends. ``group`` is the engine's fan-out set."""

    id: str
    secret_digest: bytes
    ttl: int
    capacity: int
    expires_at: float
    expires_ms: int
    join_deadline: float
    group: Any
    members: dict[int, Member] = field(default_factory=dict)
    next_member_id: int = 1
    creator_id: int | None = None
    joined_once: bool = False
    timer: Any = None
    # Every member's ``describe()``, comma-separated, in join order: the list a welcome
    # carries (docs/protocol.md §6.2), kept so that a join does not build it again.
    roster: bytes = b""

    def add_member(self, conn: Any) -> Member:
        """Give ``conn`` the next member id and a name unique in the room."""
        # A list, not a set: a room is small, and a set costs more to build than it saves.
        member = Member(self.next_member_id, pick_name([m.name for m in self.members.values()]), conn)
        self.next_member_id += 1
        self.members[member.id] = member
        self.roster = self.roster + b"," + member.describe() if self.roster else member.describe()
        if not self.joined_once:
            self.joined_once = True
            self.creator_id = member.id
        return member

    def remove_member(self, member: Member) -> None:
        del self.members[member.id]
        self.roster = b",".join([m.describe() for m in self.members.values()])
        if self.creator_id == member.id:
            # The room lives on without a creator: nobody else may purge it.
            self.creator_id = None


# The base64url alphabet, in order: a room id's characters.
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def worker_of(room_id: str, workers: int) -> int:
    """Which of ``workers`` worker processes owns ``room_id`` (its second character says)."""
    return ALPHABET.index(room_id[1]) % workers


class RoomIds:
    """Makes room ids that say where their room lives (docs/scaling.md).

    An id is 16 bytes from the OS CSPRNG in base64url: 22 characters of [A-Za-z0-9_-]. Its
    first two characters carry exactly the first 12 bits, so they can be chosen without
    changing the id's shape. With ``node`` (one character of the alphabet) every id starts
    with it, so a router sends ``/r/{room}/ws`` to the right relay by the first character.
    Of ``workers`` processes, worker ``w`` picks its second character among those whose
    position in the alphabet is ``w`` modulo ``workers``, so the acceptor finds the owner from
    the path alone. Either choice costs at most 6 of the 128 random bits.
    """

    def __init__(self, node: str | None = None, worker: int = 0, workers: int = 1) -> None:
        if node is not None and (len(node) != 1 or node not in ALPHABET):
            raise ValueError(f"a node is one character of [A-Za-z0-9_-], not {node!r}")
        if not 0 <= worker < workers <= len(ALPHABET):
            raise ValueError(f"worker {worker} of {workers}")
        self.node = node
        self._seconds = ALPHABET[worker::workers] if workers > 1 else None

    def new(self) -> str:
        room_id = b64u(secrets.token_bytes(16))
        if self.node is None and self._seconds is None:
            return room_id
        first = self.node or room_id[0]
        second = secrets.choice(self._seconds) if self._seconds else room_id[1]
        return first + second + room_id[2:]


def secret_digest(secret_text: str) -> bytes:
    """SHA-256 of a secret's text exactly as a client sends it."""
    return hashlib.sha256(secret_text.encode("utf-8", "surrogatepass")).digest()


class Registry:
    """Every live room, by id."""

    def __init__(self, ids: RoomIds | None = None) -> None:
        self.rooms: dict[str, Room] = {}
        self.ids = ids or RoomIds()

    def __len__(self) -> int:
        return len(self.rooms)

    def create(
        self, *, ttl: int, capacity: int, join_window: float, group: Any, now: float, wall_ms: int
    ) -> tuple[Room, str]:
        """Make a room; return it and its secret (b64u), which is not kept."""
        room_id = self.ids.new()
        while room_id in self.rooms:
            room_id = self.ids.new()
        secret = b64u(secrets.token_bytes(16))
        room = Room(
            id=room_id,
            secret_digest=secret_digest(secret),
            ttl=ttl,
            capacity=capacity,
            expires_at=now + ttl,
            expires_ms=wall_ms + ttl * 1000,
            join_deadline=now + join_window,
            group=group,
        )
        self.rooms[room_id] = room
        return room, secret

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    def remove(self, room: Room) -> None:
        self.rooms.pop(room.id, None)
