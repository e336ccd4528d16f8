"""The connection layer and broadcast fan-out: the pure-Python twin of the compiled engine.

A ``Connection`` owns one upgraded WebSocket. It is its transport's protocol from the 101 on
(``data_received``/``connection_lost``; or, for an upgrade aiohttp answered, it is fed through
aiohttp's payload-parser hook, ``feed_data``/``feed_eof``); it parses the bytes, relays binary
messages to the other members of its ``Group`` itself, answers pings, enforces the rate limit,
and passes text messages and its own end to a *session* object (the room logic, in Python):

    session.on_text(conn, payload: bytes)   a text message (valid UTF-8), in order
    session.on_closed(conn)                 exactly once, when the connection starts to close
                                            (the member has left: tell the others)
    session.on_lost(conn)                   exactly once, when the TCP connection is gone

Nothing here imports asyncio: the loop's ``call_soon`` is handed in, and time comes from the
``clock`` callable, read once per chunk of input rather than once per message.

Writes are coalesced. Frames queued for a connection go into its pending buffer, and the
``Flusher`` writes every pending buffer once, from a callback scheduled for the next loop
iteration; a burst of messages therefore costs each recipient one write, however long it is.
A deferred frame (``Group.broadcast_deferred``: the room's join notices) waits longer, for the
connection's next write or the flusher's ``deferral``, so that members who come back together
get their notices in one write, not one per joiner; it never overtakes or falls behind
another frame, since both share the one buffer.
A recipient whose queued bytes pass ``max_buffered_bytes`` within one iteration has them
written at once instead (``_write_early``); if its transport still holds more than the bound,
the socket is not taking them, and the member is closed with 4503 on the spot. So a slow
member never holds up the others or makes the relay buffer without bound, and a prompt one is
never cut off for the size of a burst.

A write is at most ``WRITE_CHUNK`` bytes; a larger flush is offered in pieces. The event loop
keeps each buffer it was given until the whole of it is sent (uvloop holds the object itself,
the standard loop a view of it), so of a member that stops reading it holds its unsent bytes
and the sent part of one write besides: in pieces, that part is at most a piece, and the
relay's memory per member is bounded by ``max_buffered_bytes`` plus a message plus a piece
(docs/operations.md, "Sizing").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ProtocolError
from ._frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    encode_close,
    encode_frame,
)

__all__ = ["RATE_LIMITED", "RATE_NOTICE_INTERVAL", "WRITE_CHUNK", "Connection", "Flusher", "Group"]

# aiohttp's payload-parser interface returns (eof, tail); these two are reused, not rebuilt.
_MORE = (False, b"")
_DONE = (True, b"")

RATE_LIMITED = b'{"type":"error","code":"rate_limited"}'
_RATE_LIMITED_FRAME = encode_frame(OP_TEXT, RATE_LIMITED)
# The rate-limit notice is sent at most this often (docs/protocol.md §6.5).
RATE_NOTICE_INTERVAL = 1.0
CLOSE_BAD_MESSAGE = 4400
CLOSE_SLOW_CONSUMER = 4503
# The most one write offers the transport (see the module docstring).
WRITE_CHUNK = 262144


def relay_header(member_id: int, payload_len: int) -> bytes:
    """The head of a relayed binary frame: frame header, then the sender's id (4 bytes, BE)."""
    size = payload_len + 4
    if size < 126:
        head = bytes((0x82, size))
    elif size < 65536:
        head = bytes((0x82, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x82, 127)) + size.to_bytes(8, "big")
    return head + member_id.to_bytes(4, "big")


class Flusher:
    """Writes each connection's queued frames once per event-loop iteration, and deferred
    frames with the connection's next write or after ``deferral`` seconds.

    It also keeps the engine's counters, aggregates only: ``frames`` and ``writes`` count what
    went out (so coalescing can be observed), ``messages``, ``message_bytes`` and
    ``deliveries`` the binary messages relayed, and ``slow_consumers`` the members cut off.
    """

    __slots__ = (
        "_call_later", "_call_soon", "_deferral", "_deferred", "_deferred_scheduled", "_dirty",
        "_scheduled", "deliveries", "frames", "message_bytes", "messages", "slow_consumers",
        "writes",
    )

    def __init__(
        self,
        call_soon: Callable[[Callable[[], None]], Any],
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
        deferral: float = 0.0,
    ) -> None:
        self._call_soon = call_soon
        self._dirty: list[Connection] = []
        self._scheduled = False
        # Without call_later, a deferred frame is queued like any other.
        self._call_later = call_later
        self._deferral = deferral
        self._deferred: list[Connection] = []
        self._deferred_scheduled = False
        self.frames = 0
        self.writes = 0
        self.messages = 0
        self.message_bytes = 0
        self.deliveries = 0
        self.slow_consumers = 0

    def _mark(self, conn: Connection) -> None:
        conn._dirty = True
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._call_soon(self.flush)

    def _mark_deferred(self, conn: Connection) -> None:
        if self._call_later is None:
            self._mark(conn)
            return
        conn._deferred = True
        self._deferred.append(conn)
        if not self._deferred_scheduled:
            self._deferred_scheduled = True
            self._call_later(self._deferral, self.flush_deferred)

    def flush(self) -> None:
        """Write out everything queued since the last flush."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn._dirty = False
            conn._flush()

    def flush_deferred(self) -> None:
        """Write out deferred frames that no other write has taken along since."""
        self._deferred_scheduled = False
        deferred, self._deferred = self._deferred, []
        for conn in deferred:
            conn._deferred = False
            # One with other frames queued is written at the end of this iteration anyway.
            if not conn._dirty:
                conn._flush()


class Group:
    """The connections a room broadcasts to. Membership is the session's to change."""

    __slots__ = ("members",)

    def __init__(self) -> None:
        self.members: list[Connection] = []

    def __len__(self) -> int:
        return len(self.members)

    def add(self, conn: Connection) -> None:
        self.members.append(conn)
        conn.group = self

    def remove(self, conn: Connection) -> None:
        if conn.group is self:
            self.members.remove(conn)
            conn.group = None

    def clear(self) -> None:
        for conn in self.members:
            conn.group = None
        self.members.clear()

    def broadcast(self, frame: bytes) -> None:
        """Queue one prebuilt frame to every member."""
        for peer in self.members:
            peer._queue(frame)

    def broadcast_deferred(self, frame: bytes) -> None:
        """Queue one prebuilt frame to every member, to leave with that member's next write
        or within the flusher's ``deferral``, whichever comes first."""
        for peer in self.members:
            peer._queue(frame, True)


class Connection:
    """One WebSocket connection after the upgrade. See the module docstring."""

    def __init__(
        self,
        transport: Any,
        session: Any,
        flusher: Flusher,
        *,
        max_message_bytes: int,
        max_buffered_bytes: int,
        rate: float,
        burst: int,
        clock: Callable[[], float],
    ) -> None:
        self.transport = transport
        self.session = session
        # Until the upgrade is answered, the front door that reads the request (see ``begin``).
        self.door: Any = None
        self.member_id = 0
        self.group: Group | None = None
        self.closing = False
        self.opened_at = self.last_activity = clock()
        self.close_code = 0
        self._flusher = flusher
        self._clock = clock
        self._parser = FrameParser(max_message_bytes)
        self._pending = bytearray()
        self._frames = 0
        self._dirty = False
        self._deferred = False
        self._notified = False
        self._aborted = False
        self._peer_closed = False
        self._backlog = 0
        self._max_buffered = max_buffered_bytes
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last_notice = -RATE_NOTICE_INTERVAL

    # -- the transport's protocol ---------------------------------------------------------
    # A connection is its transport's protocol from the accept on. Until the upgrade is
    # answered it passes every event to its front door (pugfast/frontdoor.py), which reads the
    # request and either calls ``begin`` or hands the transport to aiohttp. Being the protocol
    # from the start spares the switch (``set_protocol``), which in uvloop stops and restarts
    # reading. Then the event loop hands each read straight to ``data_received``. Nothing
    # waits on writing: a member is judged by its transport's buffer instead (``_queue``). An
    # end of input closes the transport, which then reports ``connection_lost``.

    def connection_made(self, transport: Any) -> None:
        if self.door is not None:
            self.transport = transport
            self.door.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.door is not None:
            self.door.head_received(self, data)
            return
        self.feed_data(data)

    def eof_received(self) -> bool | None:
        if self.door is not None:
            return self.door.eof_received()
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.door is not None:
            self.door.connection_lost(exc)
            return
        self.feed_eof()

    def begin(self, session: Any) -> None:
        """The front door answered the upgrade: from now on this is a WebSocket of
        ``session``, its join timeout counted from here."""
        self.door = None
        self.session = session
        self.opened_at = self.last_activity = self._clock()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # -- aiohttp's payload-parser interface ------------------------------------------------
    # An upgrade that aiohttp answered (on a connection it already served) feeds the same
    # connection through aiohttp's own hook instead (docs/engine.md).

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Take bytes from the socket; relay, answer or hand on every complete message."""
        if self.closing:
            return _DONE
        now = self._clock()
        if self._rate:
            self._tokens = min(self._burst, self._tokens + (now - self.last_activity) * self._rate)
        self.last_activity = now
        parser = self._parser
        parser.feed(data)
        try:
            while not self.closing:
                event: Any = parser.next_event()
                if event is None:
                    break
                opcode = event[0]
                if opcode == OP_BINARY:
                    self._on_binary(event[1], now)
                elif opcode == OP_TEXT:
                    self._on_text(event[1], now)
                elif opcode == OP_PING:
                    self._queue(encode_frame(OP_PONG, event[1]))
                elif opcode == OP_CLOSE:
                    # Echo the peer's code; an empty close is answered with 1000
                    # (docs/protocol.md §6.10). The close handshake is then complete, so the
                    # TCP connection can go at once.
                    self._peer_closed = True
                    self.close(event[1] or 1000)
                # An unsolicited pong is ignored; its arrival already counted as activity.
        except ProtocolError as exc:
            self.close(exc.code, exc.reason)
        return _DONE if self.closing else _MORE

    def feed_eof(self) -> None:
        """The transport is gone (its connection_lost)."""
        self.closing = True
        self._aborted = True
        self._pending = bytearray()
        self._notify_closed()
        self.session.on_lost(self)

    # -- messages ------------------------------------------------------------------------

    def _take_token(self, now: float) -> bool:
        if not self._rate:
            return True
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if now - self._last_notice >= RATE_NOTICE_INTERVAL:
            self._last_notice = now
            self._queue(_RATE_LIMITED_FRAME)
        return False

    def _on_binary(self, payload: bytes, now: float) -> None:
        if not self.member_id:
            self.close(CLOSE_BAD_MESSAGE, "binary before join")
            return
        if not payload or not self._take_token(now):
            return
        group = self.group
        if group is None:
            return
        # The frame is built once and queued to every other member.
        frame = relay_header(self.member_id, len(payload)) + payload
        for peer in group.members:
            if peer is not self:
                peer._queue(frame)
        flusher = self._flusher
        flusher.messages += 1
        flusher.message_bytes += len(payload)
        flusher.deliveries += len(group.members) - 1

    def _on_text(self, payload: bytes, now: float) -> None:
        if self.member_id and not self._take_token(now):
            return
        self.session.on_text(self, payload)

    # -- output --------------------------------------------------------------------------

    def _queue(self, frame: bytes, deferred: bool = False) -> None:
        # A deferred frame waits for the connection's next write or the flusher's deferral.
        if self.closing:
            return
        self._pending += frame
        self._frames += 1
        if len(self._pending) + self._backlog > self._max_buffered:
            # The cached backlog only ever overstates what the transport holds; ask it.
            self._backlog = self.transport.get_write_buffer_size()
            if len(self._pending) + self._backlog > self._max_buffered:
                self._write_early()
                return
        if self._dirty:
            return
        if not deferred:
            self._flusher._mark(self)
        elif not self._deferred:
            self._flusher._mark_deferred(self)

    def _write_early(self) -> None:
        # One iteration's burst can pass the bound on its own: twenty members sending 64 KiB
        # each at once queue 1.25 MiB for every recipient. The bound is on what the member's
        # socket could not take (docs/protocol.md §6.6), so offer the pending bytes to the transport now, not
        # at the end of the iteration, and judge by what it still holds. A prompt reader's
        # socket takes them; only a member whose socket is full is cut off. This runs only
        # past the bound, so the common path pays nothing for it.
        self._write_pending()
        if self._backlog > self._max_buffered:
            self._drop_slow_consumer()

    def send_text(self, payload: bytes) -> None:
        """Queue a text message (``payload`` is UTF-8 JSON)."""
        self._queue(encode_frame(OP_TEXT, payload))

    def send_frame(self, frame: bytes) -> None:
        """Queue a frame built by ``encode_frame``."""
        self._queue(frame)

    def ping(self) -> None:
        """Queue a ping; the reply (or any other frame) refreshes ``last_activity``."""
        self._queue(encode_frame(OP_PING, b""))

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is already queued, then close the TCP connection."""
        if self.closing:
            return
        self._pending += encode_close(code, reason)
        self._frames += 1
        self.close_code = code
        self.closing = True
        if not self._dirty:
            self._flusher._mark(self)

    def _drop_slow_consumer(self) -> None:
        # Best effort (docs/protocol.md §6.6): the close frame goes out only if the socket takes it now, and
        # the connection is dropped either way, with nothing more buffered for it.
        self.closing = True
        self._aborted = True
        self.close_code = CLOSE_SLOW_CONSUMER
        self._flusher.slow_consumers += 1
        self._pending = bytearray()
        self.transport.write(encode_close(CLOSE_SLOW_CONSUMER, "slow consumer"))
        self.transport.abort()
        # The session hears of it from the flush, not from inside someone else's broadcast.
        if not self._dirty:
            self._flusher._mark(self)

    def _write_pending(self) -> None:
        # Write what is pending, and note what the transport still holds (``_backlog``).
        pending = self._pending
        self._pending = bytearray()
        self._flusher.frames += self._frames
        self._flusher.writes += 1
        self._frames = 0
        if len(pending) <= WRITE_CHUNK:
            self.transport.write(pending)
        else:
            view = memoryview(pending)
            for start in range(0, len(pending), WRITE_CHUNK):
                # A copy: a slice of the view would keep the whole buffer alive.
                self.transport.write(bytes(view[start:start + WRITE_CHUNK]))
        self._backlog = self.transport.get_write_buffer_size()

    def _flush(self) -> None:
        if self._pending and not self._aborted:
            self._write_pending()
            if self.closing:
                self._end_output()
            elif self._backlog > self._max_buffered:
                self._drop_slow_consumer()
        if self.closing:
            self._notify_closed()

    def _end_output(self) -> None:
        # Once the peer's close is echoed, the relay closes the TCP connection first (RFC 6455
        # §7.1.1). Closing first after a close of its own could make the client's kernel reset
        # the connection and lose the close frame if the client is still sending, so the relay
        # only half-closes and keeps reading (and discarding) until the client hangs up; the
        # gateway aborts a client that never does.
        if self._peer_closed or not self.transport.can_write_eof():
            self.transport.close()
        else:
            self.transport.write_eof()

    def _notify_closed(self) -> None:
        if not self._notified:
            self._notified = True
            self.session.on_closed(self)
