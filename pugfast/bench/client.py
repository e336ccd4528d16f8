"""The load generator's side of the wire: rooms of members, each a raw asyncio Protocol.

A member is a plain ``asyncio.Protocol``: it writes the HTTP upgrade request by hand, then
frames with the relay's own codec (``encode_frame`` builds masked client frames,
``FrameParser(require_mask=False)`` reads the relay's frames), so the generator spends less per
message than the server it measures. Every payload starts with the time it was sent
(``time.monotonic_ns()``: CLOCK_MONOTONIC is system-wide, so it compares across processes) and
the sender's sequence number; the relay puts the sender's member id in front. A receiver
checks the order per sender, counts what it got, and records latencies into a shared
log-bucket histogram with the bucket arithmetic inlined.

What counts: a message belongs to the measured window when it was *sent* inside it; each one
is expected once by every other member of its room. ``delivered`` counts the deliveries of such
messages, whenever they arrive (the drain after the window waits for stragglers), and only they
carry latencies. ``received_in_window`` counts every delivery that *arrived* inside the window,
which is what the delivered rate is computed from.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import ProtocolError
from ..speedups import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, encode_frame
from .histogram import Histogram

# A payload's head: send time (monotonic ns) and the sender's sequence number.
PAYLOAD_HEAD = struct.Struct(">qI")
# A relayed message: the sender's member id, then the payload's head.
_RELAYED = struct.Struct(">IqI")
MIN_PAYLOAD = PAYLOAD_HEAD.size
# Before the window is set nothing counts as measured.
_NEVER = 1 << 62


class Stats:
    """The counters of one worker, shared by its members."""

    def __init__(self) -> None:
        self.window_start = _NEVER
        self.window_end = _NEVER
        self.sent_total = 0
        self.sent_window = 0
        self.expected = 0
        self.received_total = 0
        self.received_in_window = 0
        self.delivered = 0
        self.out_of_order = 0
        self.gaps = 0
        self.latency = Histogram()
        self.errors: Counter[str] = Counter()
        self.closing = False

    def error(self, kind: str, n: int = 1) -> None:
        if not self.closing:
            self.errors[kind] += n


class Member(asyncio.Protocol):
    """One connection of the generator: upgrade, join, then send and count messages."""

    def __init__(self, room: Room, stats: Stats, request: bytes, max_message_bytes: int) -> None:
        self.room = room
        self.stats = stats
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.parser = FrameParser(max_message_bytes, require_mask=False)
        self.mask = os.urandom(4)
        self.head: bytearray | None = bytearray()
        self.member_id = 0
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Per sender (by member id, which the relay gives from 1 up), the sequence number
        # expected next.
        self.expect: list[int] = [0] * 64
        self.seq = 0
        self.body = bytearray(room.payload_bytes)
        self.on_welcome: Callable[[Member], None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("connection closed before the welcome"))
        elif not self.stats.closing:
            self.stats.error("connection_lost")
        self.room.lost(self)

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            data = self._read_response(data)
            if not data:
                return
        parser = self.parser
        parser.feed(data)
        now = time.monotonic_ns()
        stats = self.stats
        ws = stats.window_start
        we = stats.window_end
        expect = self.expect
        counts = stats.latency.counts
        unpack = _RELAYED.unpack_from
        next_event = parser.next_event
        binaries = measured = total = 0
        # Deliveries stamped alike (a lockstep burst: one time for the whole round) land in
        # the same bucket: ``run`` of them are counted at once, at ``run_lat``.
        run = run_lat = run_index = 0
        run_at = -1
        low = _NEVER
        high = -1
        try:
            while True:
                event = next_event()
                if event is None:
                    break
                if event[0] != OP_BINARY:
                    self._control(event)
                    continue
                binaries += 1
                sender, sent_at, seq = unpack(event[1])
                try:
                    wanted = expect[sender]
                except IndexError:
                    expect.extend([0] * (sender + 1 - len(expect)))
                    wanted = 0
                if seq != wanted:
                    if seq > wanted:
                        stats.gaps += seq - wanted
                    else:
                        stats.out_of_order += 1
                expect[sender] = seq + 1
                if sent_at == run_at:
                    run += 1
                elif ws <= sent_at < we:
                    if run:
                        counts[run_index] += run
                        measured += run
                        total += run * run_lat
                    lat = now - sent_at
                    # Histogram.record, inlined: see histogram.bucket_index.
                    if lat < 64:
                        run_index = lat if lat > 0 else 0
                    else:
                        shift = lat.bit_length() - 6
                        run_index = (shift << 5) + (lat >> shift)
                    run = 1
                    run_lat = lat
                    run_at = sent_at
                    if lat > high:
                        high = lat
                    if lat < low:
                        low = lat
        except ProtocolError as exc:
            stats.error(f"protocol_error_{exc.code}")
            self.abort()
        if run:
            counts[run_index] += run
            measured += run
            total += run * run_lat
        if binaries:
            stats.received_total += binaries
            if ws <= now < we:
                stats.received_in_window += binaries
            if measured:
                stats.delivered += measured
                hist = stats.latency
                hist.count += measured
                hist.total += total
                if high > hist.max:
                    hist.max = high
                if hist.min < 0 or low < hist.min:
                    hist.min = low
            self.room.received(binaries)

    # -- the handshake and control messages ----------------------------------------------

    def _read_response(self, data: bytes) -> bytes:
        head = self.head
        assert head is not None
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > 16384:
                self._fail_join("handshake_too_long")
            return b""
        status_line = bytes(head[: head.find(b"\r\n")])
        rest = bytes(head[end + 4:])
        self.head = None
        parts = status_line.split()
        status = parts[1].decode("ascii", "replace") if len(parts) > 1 else "?"
        if status != "101":
            self._fail_join(f"http_{status}")
            return b""
        join = b'{"type":"join","secret":"' + self.room.secret.encode("ascii") + b'"}'
        assert self.transport is not None
        self.transport.write(encode_frame(OP_TEXT, join, mask=self.mask))
        return rest

    def _fail_join(self, kind: str) -> None:
        self.head = None
        if not self.joined.done():
            self.joined.set_exception(JoinError(kind))
        self.abort()

    def _control(self, event: tuple[Any, ...]) -> None:
        opcode = event[0]
        if opcode == OP_TEXT:
            self._on_text(event[1])
        elif opcode == OP_PING:
            self.write(encode_frame(OP_PONG, event[1], mask=self.mask))
        elif opcode == OP_CLOSE:
            code = event[1]
            if not self.joined.done():
                self.joined.set_exception(JoinError(f"close_{code}"))
            else:
                self.stats.error(f"close_{code}")
            if self.transport is not None:
                self.transport.close()

    def _on_text(self, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            kind = message.get("type")
        except (orjson.JSONDecodeError, AttributeError):
            self.stats.error("bad_text")
            return
        if kind == "welcome":
            self.member_id = int(message["you"]["id"])
            if not self.joined.done():
                self.joined.set_result(None)
        elif kind == "error":
            self.stats.error(str(message.get("code", "error")))
        elif kind in ("expired", "purged"):
            self.stats.error(f"room_{kind}")
        # join and leave notices need no answer.

    # -- sending -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def frames(self, k: int, sent_at: int) -> bytes:
        """``k`` binary frames stamped ``sent_at``, with this member's next sequence numbers."""
        body = self.body
        mask = self.mask
        pack = PAYLOAD_HEAD.pack_into
        seq = self.seq
        out = []
        for i in range(k):
            pack(body, 0, sent_at, seq + i)
            out.append(encode_frame(OP_BINARY, body, mask=mask))
        self.seq = seq + k
        return b"".join(out) if k > 1 else out[0]


class JoinError(Exception):
    """A member could not join; the message is the error's kind (e.g. ``close_4409``)."""


class Room:
    """A room of the generator: its members, and the lockstep rounds when there are any.

    In lockstep, every member sends a burst of ``burst`` messages, and the next round starts
    when every member has received all of the others' (``n * (n - 1) * burst`` deliveries).
    """

    def __init__(self, room_id: str, secret: str, payload_bytes: int, stats: Stats) -> None:
        self.room_id = room_id
        self.secret = secret
        self.payload_bytes = payload_bytes
        self.stats = stats
        self.members: list[Member] = []
        self.burst = 0
        self.running = False
        self.outstanding = 0
        self.rounds = 0
        self.stalled = False
        self.on_idle: Callable[[Room], None] | None = None

    @property
    def joined(self) -> list[Member]:
        return [m for m in self.members if m.joined.done() and not m.joined.exception()
                and m.transport is not None]

    def start_lockstep(self, burst: int) -> None:
        self.burst = burst
        self.running = True
        self.members = self.joined
        if len(self.members) >= 2:
            self._round()

    def stop(self) -> None:
        self.running = False

    def _round(self) -> None:
        stats = self.stats
        now = time.monotonic_ns()
        members = self.members
        n = len(members)
        k = self.burst
        self.outstanding += n * (n - 1) * k
        self.rounds += 1
        stats.sent_total += n * k
        if stats.window_start <= now < stats.window_end:
            stats.sent_window += n * k
            stats.expected += n * (n - 1) * k
        for member in members:
            member.write(member.frames(k, now))

    def received(self, n: int) -> None:
        if self.burst:
            self.outstanding -= n
            if self.outstanding <= 0:
                if self.running and time.monotonic_ns() < self.stats.window_end:
                    self._round()
                elif self.on_idle is not None:
                    self.on_idle(self)

    def lost(self, member: Member) -> None:
        if self.burst and self.running and member in self.members:
            # The round can never complete: the room stops, and its loss shows in the counts.
            self.stalled = True
            self.running = False


def upgrade_request(host_header: str, room_id: str) -> bytes:
    """The HTTP request that opens a WebSocket into ``room_id``."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    return (
        f"GET /r/{room_id}/ws HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "User-Agent: pugfast-bench\r\n\r\n"
    ).encode("ascii")


class OpenLoop:
    """Sends at a fixed total rate, whatever the deliveries do, spread over every member.

    A timer ticks every millisecond and sends what the schedule says is due by then, one
    message per write, to the members in turn.
    """

    TICK = 0.001

    def __init__(self, loop: asyncio.AbstractEventLoop, members: list[Member],
                 rooms: dict[Member, int], rate: float, stats: Stats) -> None:
        self.loop = loop
        self.members = members
        # How many others receive each member's message (its room's size minus one).
        self.fanout = rooms
        self.rate = rate
        self.stats = stats
        self.started = 0
        self.sent = 0
        self.cursor = 0
        self.stop_at = 0
        self.done: asyncio.Future[None] = loop.create_future()

    def start(self, stop_at_ns: int) -> None:
        self.started = time.monotonic_ns()
        self.stop_at = stop_at_ns
        if not self.members:
            self.done.set_result(None)
            return
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic_ns()
        if now >= self.stop_at:
            if not self.done.done():
                self.done.set_result(None)
            return
        due = int((now - self.started) * self.rate / 1e9)
        n = due - self.sent
        if n > 0:
            stats = self.stats
            members = self.members
            count = len(members)
            cursor = self.cursor
            fanout = self.fanout
            measured = stats.window_start <= now < stats.window_end
            for _ in range(n):
                member = members[cursor]
                cursor += 1
                if cursor == count:
                    cursor = 0
                member.write(member.frames(1, now))
                if measured:
                    stats.expected += fanout[member]
            self.cursor = cursor
            self.sent = due
            stats.sent_total += n
            if measured:
                stats.sent_window += n
        self.loop.call_later(self.TICK, self._tick)
