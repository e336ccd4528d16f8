"""What a room yields to whoever iterates it: small frozen dataclasses, one per kind of event."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the room: its id (unique in the room, never reused) and the display name
    the relay picked for it."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Message:
    """A message from another member, decrypted and checked. ``ts`` is the sender's clock when
    sending, in Unix milliseconds (the sender chose it: it is a claim, not a fact)."""

    sender: Member
    text: str
    ts: int


@dataclass(frozen=True, slots=True)
class Joined:
    """Someone joined the room."""

    member: Member


@dataclass(frozen=True, slots=True)
class Left:
    """Someone left the room."""

    member: Member


@dataclass(frozen=True, slots=True)
class Undecryptable:
    """A ciphertext from ``sender`` failed to decrypt or was not a well-formed message (the
    browser shows "could not be decrypted"). ``reason`` says which, in a few words."""

    sender: Member
    reason: str


@dataclass(frozen=True, slots=True)
class Replayed:
    """A repeated or out-of-order ciphertext arrived as if from ``sender`` and was ignored
    (docs/client.md, "Replay protection")."""

    sender: Member


@dataclass(frozen=True, slots=True)
class KeyWarning:
    """The key ``member`` announced did not authenticate (``reason`` "unauthenticated": the
    relay or someone on the way changed it) or changed during the connection ("changed"):
    that member's messages cannot be read. Compare fingerprints out of band."""

    member: Member
    reason: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """Who a message sent can be read by: ``reached``, the members present that hold this
    client's current key, and ``waiting``, those present whose keys were still on the way (they
    will not read it). Both empty: nobody else was here, and nobody will read it."""

    reached: tuple[Member, ...]
    waiting: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class RelayError:
    """The relay reported an error and kept the connection open: ``rate_limited`` (some of
    this client's messages were dropped), ``not_creator``, or a code added later."""

    code: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """``dropped`` events were not kept because whoever iterates the room did not take them in
    time: at most ``MAX_PENDING_EVENTS`` events (and ``MAX_PENDING_TEXT`` characters of message
    text) wait (docs/client.md, "The library"). It comes where the gap is, before the next
    event kept; ``room.members`` stays right regardless."""

    dropped: int


@dataclass(frozen=True, slots=True)
class Ended:
    """This client's visit is over; the last event a room yields.

    ``reason`` is one of ``left`` (this client left), ``purged`` (the creator ended the room),
    ``expired`` (its time ran out) or ``lost`` (anything else: network, relay restart, idle
    timeout, slow consumer); ``code`` is the WebSocket close code when there was one, and
    ``message`` says it in words.
    """

    reason: str
    code: int | None
    message: str


Event = Message | Joined | Left | Undecryptable | Replayed | KeyWarning | RelayError | Overflow | Ended
"""Anything a room yields."""
