"""One member's connection to a room (docs/protocol.md §6), over aiohttp's WebSocket client:

    async with Room.join(link) as room:
        await room.send("hello")
        async for event in room:
            ...

Joining fetches the relay's limits, opens the WebSocket, sends the secret and waits for the
welcome; a refusal raises at once. Afterwards one task reads the connection (so pings are
answered even while nobody iterates), decrypts each ciphertext, refuses replays, and queues
events; iterating the room takes them in order and stops after the final ``Ended``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import AsyncIterator, Generator, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from . import _http, answers
from .backlog import Backlog
from .crypto import cipher, largest_bucket, pad, seal, unseal
from .errors import (
    DecryptError,
    JoinRefused,
    MessageFormatError,
    MessageTooLarge,
    NoSuchRoom,
    NotConnected,
    NotCreator,
    RelayAnswerError,
    RoomFull,
    WrongSecret,
    relay_text,
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
    RelayError,
    Replayed,
    Undecryptable,
)
from .fingerprint import fingerprint
from .link import Link, parse_link
from .message import decode_message, decode_text, encode_message, encode_text, new_sid
from .senderkeys import MESSAGE_OVERHEAD, VERSION, KeyProblem, KeyRing, Readable, Unreadable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DEFAULT_MAX_MESSAGE_BYTES = 65536
MEMBER_ID_BYTES = 4
ROOM_ENDED = 4410

_REFUSALS: dict[int, tuple[type[JoinRefused], str]] = {
    4404: (
        NoSuchRoom,
        "no such room: it never existed, or it has ended (a room ends when its last member "
        "leaves, when its time runs out, or when its creator purges it)",
    ),
    4409: (RoomFull, "the room is full: try again when someone leaves"),
    4403: (
        WrongSecret,
        "the relay refused the link's secret: the link is wrong or has been changed; ask for it again",
    ),
}

# How long a message waits for the keys of members still exchanging them, and how long keys
# frames that arrive together wait to be answered with one frame (docs/client.md).
KEY_WAIT = 2.0
KEY_BATCH = 0.025
OLD_VERSION = 0x01
OLD_CLIENT = "sent by an older client, which cannot take part in this room: they need a newer one"
# What an older client (protocol version 1) shows when a member of this version joins.
UPGRADE_NOTICE = ("[This room now needs a newer pugfast client, with forward secrecy: this client cannot "
                  "read what the others write, nor they what it writes. Update it, or open the link in a "
                  "browser.]")
_UNREADABLE = {
    "failed": "could not be decrypted",
    "malformed": "could not be decrypted: malformed",
    "no-keys": "could not be read: it was sent before its sender's keys reached this client",
}

_ENDINGS = {
    "left": "you left the room",
    "purged": "the room was purged by its creator",
    "expired": "the room's time ran out",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Room:
    """A joined room. Make one with ``Room.join(link)``.

    Attributes, set by the welcome: ``me`` (this client as a Member), ``creator`` (whether this
    client may purge), ``capacity``, ``expires`` (the relay's Unix milliseconds), and
    ``max_message_bytes`` (the relay's limit from /api/limits).
    """

    me: Member
    creator: bool
    capacity: int
    expires: int

    # The creator is the room's first member, and member ids start at 1 and are never reused
    # (docs/protocol.md §5.3): the welcome says so to the creator alone (``creator``).
    CREATOR_ID = 1

    def is_creator(self, member: Member) -> bool:
        """Whether ``member`` is the room's creator (who may purge it)."""
        return member.id == (self.me.id if self.creator else self.CREATOR_ID)

    def __init__(self, link: Link, *, insecure: bool = False, timeout: float = 10.0) -> None:
        self.link = link
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self.ended: Ended | None = None
        self._insecure = insecure
        self._timeout = timeout
        self._aead: AESGCM | None = None  # the link's key: only for older clients' frames
        self._ring: KeyRing | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._events = Backlog()
        self._members: dict[int, Member] = {}
        self._names: dict[int, str] = {}
        self._send_lock = asyncio.Lock()
        self._old_clients: set[int] = set()
        self._answer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._leaving = False
        self._clock_offset = 0
        self._fingerprint: tuple[str, ...] | None = None

    # -- joining and leaving ----------------------------------------------------------------

    @classmethod
    def join(cls, link: Link | str, *, insecure: bool = False, timeout: float = 10.0) -> Joining:
        """Joins the room ``link`` names: ``async with Room.join(link) as room`` (leaves on
        exit), or ``room = await Room.join(link)`` (then call ``leave()``).

        ``insecure`` skips TLS certificate checks (self-signed test relays only); ``timeout``
        bounds connecting and the join, in seconds.

        Raises LinkError (a malformed link given as text), MissingDependency (no
        ``cryptography``), RelayUnreachable, NoSuchRoom, RoomFull, WrongSecret, JoinRefused
        (any other refusal) or ApiError.
        """
        if isinstance(link, str):
            link = parse_link(link)
        return Joining(cls(link, insecure=insecure, timeout=timeout))

    async def _connect(self) -> Room:
        self._aead = cipher(self.link.key)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=None)
        )
        try:
            await asyncio.wait_for(self._handshake(), self._timeout)
        except BaseException as exc:
            await self._close_session()
            if isinstance(exc, asyncio.TimeoutError):
                raise _http.unreachable(self.link.origin, exc) from None
            raise
        self._ring = KeyRing(self.link.key, self.link.room)
        self._ring.start(self.me.id, self._members)
        # Older clients (protocol version 1) cannot read this room: tell them so, in the one
        # format they read (docs/upgrading.md).
        notice = encode_message(UPGRADE_NOTICE, now_ms(), new_sid(), 1, upgrade=VERSION)
        assert self._ws is not None and self._aead is not None
        await self._ws.send_bytes(seal(self._aead, self.link.room, notice))
        await self._send_outbox()
        self._reader = asyncio.create_task(self._read())
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def _handshake(self) -> None:
        assert self._session is not None
        origin = self.link.origin
        ssl_context = _http.ssl_setting(self._insecure)
        limits, date = await _http.request(
            self._session, "GET", origin, "/api/limits", ssl_context=ssl_context
        )
        self.max_message_bytes = answers.max_message_bytes(limits)
        self._clock_offset = _clock_offset(date)
        try:
            # No Origin header: the relay checks one only when it is sent (docs/protocol.md §6.1).
            ws = await self._session.ws_connect(self.link.websocket_url, ssl=ssl_context, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 503:
                raise JoinRefused("the relay is at capacity: try again later", status=503) from None
            raise JoinRefused(f"the relay refused the connection ({exc.status} {relay_text(exc.message)})",
                              status=exc.status) from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise _http.unreachable(origin, exc) from None
        self._ws = ws
        await ws.send_str(json.dumps({"type": "join", "secret": self.link.secret}))
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    data = answers.loads(msg.data)
                except ValueError as exc:
                    raise RelayAnswerError(f"a message during the join is not JSON ({exc})") from None
                if not isinstance(data, dict):
                    raise RelayAnswerError("a message during the join is not a JSON object")
                if data.get("type") == "welcome":
                    self._welcome(answers.welcome(data))
                    return
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                code = ws.close_code
                kind, text = _REFUSALS.get(code or 0, (JoinRefused, ""))
                raise kind(text or f"the relay closed the connection before the join completed "
                           f"(close code {code})", code=code)

    def _welcome(self, welcome: answers.Welcome) -> None:
        self.me = welcome.you
        self.creator = welcome.creator
        self.capacity = welcome.capacity
        self.expires = welcome.expires
        self._members = {m.id: m for m in welcome.members}
        self._names.update((m.id, m.name) for m in welcome.members)

    async def leave(self) -> None:
        """Leaves the room (close 1000); the iteration then ends with ``Ended("left")``. Safe to
        call more than once, and after the room has ended."""
        if self._ws is not None and not self._leaving:
            self._leaving = True
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._ws.close(code=1000), self._timeout)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- what a member does -----------------------------------------------------------------

    async def send(self, text: str) -> Delivery:
        """Encrypts ``text`` under this member's sender key and sends it to the room (no echo
        comes back). Returns who can read it: the members present that hold this member's
        current key, and those that do not yet (their keys are still on the way), so that a
        message nobody could read is never shown as sent.

        Raises MessageTooLarge when it would not fit under the relay's size limit (nothing is
        sent), NotConnected when the room has ended or was left.
        """
        if self._ring is not None:
            await self._settle(self._ring)  # outside the lock: the reader sends keys meanwhile
        async with self._send_lock:
            ws, ring = self._ws, self._ring
            if ws is None or ring is None or ws.closed or self._leaving or self.ended is not None:
                raise NotConnected("not connected to the room: the message was not sent")
            plaintext = encode_text(text, now_ms())
            budget = largest_bucket(self.max_message_bytes, MESSAGE_OVERHEAD)
            if len(plaintext) > budget:
                envelope = len(encode_text("", now_ms()))
                raise MessageTooLarge(len(plaintext) - envelope, max(0, budget - envelope))
            try:
                await self._send_outbox_locked()
                reached = ring.holders()
                await ws.send_bytes(ring.seal(pad(plaintext)))
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise NotConnected(f"not connected to the room: the message was not sent ({exc})") from None
            others = [m for m in self._members.values() if m.id != self.me.id]
            return Delivery(tuple(m for m in others if m.id in reached),
                            tuple(m for m in others if m.id not in reached))

    def text_limit(self) -> int:
        """The most bytes of UTF-8 (JSON-escaped) text one message can hold on this relay."""
        budget = largest_bucket(self.max_message_bytes, MESSAGE_OVERHEAD)
        return max(0, budget - len(encode_text("", now_ms())))

    async def _settle(self, ring: KeyRing) -> None:
        """Waits, up to KEY_WAIT seconds, for the keys of members who have just joined (or
        whom this client has just joined), so that a message sent right after a join reaches
        them. The reader task keeps exchanging keys meanwhile."""
        deadline = time.monotonic() + KEY_WAIT
        while ring.awaiting() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _send_outbox(self) -> None:
        async with self._send_lock:
            await self._send_outbox_locked()

    def _answer_keys_soon(self) -> None:
        """Sends this member's chain to the members just learnt of, KEY_BATCH seconds from
        now, with whoever else turns up by then: one frame for a burst of joins."""
        if self._ring is not None and self._ring.owes() and self._answer is None:
            self._answer = asyncio.get_running_loop().call_later(KEY_BATCH, self._answer_now)

    def _answer_now(self) -> None:
        self._answer = None
        self._background.add(task := asyncio.ensure_future(self._answer_keys()))
        task.add_done_callback(self._background.discard)

    async def _answer_keys(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await self._send_outbox()

    async def _send_outbox_locked(self) -> None:
        """Sends the key ring's frames, in order, before anything sealed after them."""
        ring, ws = self._ring, self._ws
        if ring is None or ws is None:
            return
        ring.flush()
        while ring.outbox:
            await ws.send_bytes(ring.outbox.pop(0))

    async def _tick(self) -> None:
        """Reports, once a second, the messages that waited too long for their keys."""
        while self._ring is not None:
            await asyncio.sleep(1.0)
            if self._ring is not None:
                for outcome in self._ring.tick(time.monotonic()):
                    self._outcome(outcome)

    async def purge(self) -> None:
        """Ends the room for everyone; the relay then sends every member ``purged``.

        Raises NotCreator unless this client is the room's creator, NotConnected when the room
        has already ended or was left.
        """
        if not self.creator:
            raise NotCreator("only the room's creator can purge it")
        ws = self._ws
        if ws is None or ws.closed or self._leaving or self.ended is not None:
            raise NotConnected("not connected to the room")
        try:
            await ws.send_str('{"type":"purge"}')
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise NotConnected(f"not connected to the room ({exc})") from None

    # -- what a member knows ----------------------------------------------------------------

    @property
    def members(self) -> Mapping[int, Member]:
        """Everyone in the room now, this client included, by member id."""
        return MappingProxyType(self._members)

    @property
    def fingerprint(self) -> tuple[str, ...]:
        """The key's nine fingerprint words. Raises WordListError if the word list is unusable."""
        # Kept once made: the derivation costs 65,536 PBKDF2 iterations, on purpose.
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.link.key, self.link.room)
        return self._fingerprint

    def seconds_left(self) -> float:
        """Seconds until the room expires, by the relay's clock (corrected for this machine's
        clock when the two differ by more than two seconds, as the browser does)."""
        return max(0.0, (self.expires - (now_ms() + self._clock_offset)) / 1000)

    # -- events -----------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = await self._events.get()
        if event is None:  # every later iteration ends at once, too
            raise StopAsyncIteration
        return event

    def _name(self, member_id: int) -> Member:
        return Member(member_id, self._names.get(member_id, f"Member {member_id}"))

    async def _read(self) -> None:
        assert self._ws is not None
        ws = self._ws
        ending: str | None = None
        close_reason = ""
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self._ciphertext(msg.data)
                    self._answer_keys_soon()
                    if self._ring is not None and self._ring.outbox:
                        await self._send_outbox()
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    ending = self._control(answers.json_object(msg.data))
                    if ending is not None:
                        # The 4410 close follows; the room is over either way.
                        await ws.close(code=1000)
                        break
                    if self._ring is not None and self._ring.outbox:
                        await self._send_outbox()
                else:
                    # CLOSE (aiohttp has answered it), or CLOSING (leave() is closing), or the
                    # connection broke.
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        close_reason = str(msg.extra or "")
                    break
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self._finish(ending, ws.close_code, close_reason)

    def _ciphertext(self, data: bytes) -> None:
        if len(data) <= MEMBER_ID_BYTES or self._ring is None or self._aead is None:
            return
        sender_id, frame = int.from_bytes(data[:MEMBER_ID_BYTES], "big"), data[MEMBER_ID_BYTES:]
        if frame[0] == OLD_VERSION:
            self._old_client(sender_id, frame)
            return
        for outcome in self._ring.on_frame(sender_id, frame, time.monotonic()):
            self._outcome(outcome)

    def _outcome(self, outcome: Readable | Unreadable | KeyProblem) -> None:
        if isinstance(outcome, KeyProblem):
            self._events.put(KeyWarning(self._name(outcome.member), outcome.why))
            return
        sender = self._name(outcome.sender)
        if isinstance(outcome, Unreadable):
            if outcome.why == "repeated":
                self._events.put(Replayed(sender))
            else:
                self._events.put(Undecryptable(sender, _UNREADABLE[outcome.why]))
            return
        try:
            text, ts = decode_text(outcome.plaintext)
        except MessageFormatError as exc:
            self._events.put(Undecryptable(sender, f"could not be decrypted ({exc})"))
            return
        self._events.put(Message(sender, text, ts))

    def _old_client(self, sender_id: int, frame: bytes) -> None:
        """A frame of protocol version 1, sealed under the link's key: another new client's
        notice for older clients (ignored), or an older client's message (not read: this room
        needs forward secrecy; its sender is told, once, that it needs a newer client)."""
        assert self._aead is not None
        with contextlib.suppress(DecryptError, MessageFormatError):
            if decode_message(unseal(self._aead, self.link.room, frame)).upgrade:
                return
        if sender_id not in self._old_clients:
            self._old_clients.add(sender_id)
            self._events.put(Undecryptable(self._name(sender_id), OLD_CLIENT))

    def _control(self, data: dict[str, Any] | None) -> str | None:
        """Handles one control message; returns "expired" or "purged" when the room ended."""
        kind = data.get("type") if data is not None else None
        if data is None or kind is None:
            return None
        if kind in ("expired", "purged"):
            return str(kind)
        try:
            if kind == "join":
                member = answers.member(data.get("member"))
                self._members[member.id] = member
                self._names[member.id] = member.name
                if self._ring is not None:
                    self._ring.on_join(member.id)
                self._events.put(Joined(member))
            elif kind == "leave":
                member = answers.member(data.get("member"))
                self._members.pop(member.id, None)
                if self._ring is not None:
                    self._ring.on_leave(member.id)  # a new chain, which the one who left lacks
                self._events.put(Left(member))
            elif kind == "error":
                self._events.put(RelayError(answers.error_code(data)))
        except RelayAnswerError:
            pass  # a notice that is not well-formed says nothing; it is ignored
        return None

    def _finish(self, ending: str | None, code: int | None, close_reason: str) -> None:
        if self.ended is not None:
            return
        if self._leaving:
            reason = "left"
        elif ending is not None:
            reason = ending
        elif code == ROOM_ENDED:
            reason = "purged" if close_reason == "purged" else "expired"
        else:
            reason = "lost"
        message = _ENDINGS.get(reason) or (
            f"connection lost (close code {code})" if code else "connection lost"
        )
        self.ended = Ended(reason, code, message)
        # The keys are of no more use; drop them, as the browser does when a room ends.
        self._aead = None
        self._ring = None
        if self._ticker is not None:
            self._ticker.cancel()
        if self._answer is not None:
            self._answer.cancel()
        self._events.put(self.ended)


class Joining:
    """What ``Room.join`` returns: await it for a Room, or use it with ``async with``."""

    def __init__(self, room: Room) -> None:
        self._room = room

    def __await__(self) -> Generator[Any, None, Room]:
        return self._room._connect().__await__()

    async def __aenter__(self) -> Room:
        return await self._room._connect()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._room.leave()


def _clock_offset(date: str | None) -> int:
    """Milliseconds the relay's clock is ahead of this one, when more than two seconds off."""
    if date is None:
        return 0
    try:
        relay = email.utils.parsedate_to_datetime(date).timestamp() * 1000
    except (TypeError, ValueError):
        return 0
    offset = int(relay - now_ms())
    return offset if abs(offset) > 2000 else 0
