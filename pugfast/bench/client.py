"""The load generator's side of the wire: rooms of members, each a raw asyncio Protocol.

A member is a plain ``asyncio.Protocol``: it writes the HTTP upgrade request by hand, then
leaves the hot paths to the engine (pugfast/engine/_sink.py, compiled in
_ext/pugfast/engine/_sink.pxi, on the relay's own codec), so that the generator spends less per
delivery than the relay it measures:

- Sending: a ``MessageSource`` writes masked binary frames, each a prebuilt frame with the
  head of its payload stamped in: a time (``time.monotonic_ns()``: CLOCK_MONOTONIC is
  system-wide, so it compares across processes) and the sender's sequence number. The relay
  puts the sender's member id in front.
- Receiving: every read goes to the member's ``DeliverySink``, which parses the relay's frames
  and, for each delivery, checks the order per sender and counts it and its latency (into
  HdrHistogram's buckets) in the worker's ``DeliveryTally``. Text messages, pings, a close and
  protocol errors come back as events, answered here.
- Lockstep (closed loop): every member of a room sends the same burst in a round, stamped with
  the time the round starts, so the room's ``Lockstep`` builds it once; the members' sinks
  count the round's deliveries down and the Lockstep writes the next round. Python runs once
  per read, never per message or per round.
- Open loop: the ``Pacer`` follows the schedule (pugfast/bench/schedule.py) on a 1 ms grid and
  has the engine's ``OpenLoopSender`` write each tick's messages, stamped with the tick's time,
  when they were due: latency counts from there, and how late the write was is its lag.

What counts: a message belongs to the measured window when it was *sent* (open loop: *due*)
inside it; each one is expected once by every other member of its room. ``delivered`` counts
the deliveries of such messages, whenever they arrive (the drain after the window waits for
stragglers), and only they carry latencies. ``received_in_window`` counts every delivery that
*arrived* inside the window, which is what the delivered rate is computed from.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import Counter
from typing import Any

import orjson

from ..engine import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    DeliverySink,
    DeliveryTally,
    Lockstep,
    MessageSource,
    OpenLoopSender,
    encode_frame,
)
from ..errors import ProtocolError
from .histogram import Histogram
from .schedule import TICK_NS, Schedule
from .ticker import Ticker


class Stats:
    """The counters of one worker, shared by its members.

    ``tally`` counts what was sent and received (see DeliveryTally: the members' sinks count
    into it, in C with the compiled engine), ``errors`` what went wrong, by kind, and
    ``window_errors`` how many of those came from the window's start on (for the time series).
    """

    def __init__(self, answer_pings: bool = True) -> None:
        self.tally = DeliveryTally()
        self.errors: Counter[str] = Counter()
        self.window_errors = 0
        self.closing = False
        self.answer_pings = answer_pings

    def take_latency(self) -> tuple[Histogram, Histogram]:
        """The latencies and the open loop's lags measured since the last call."""
        latency, lag = Histogram(), Histogram()
        self.tally.drain_into(latency)
        self.tally.drain_lag_into(lag)
        return latency, lag

    def error(self, kind: str, n: int = 1) -> None:
        if not self.closing:
            self.errors[kind] += n
            if time.monotonic_ns() >= self.tally.window_start:
                self.window_errors += n


class Member(asyncio.Protocol):
    """One connection of the generator: upgrade, join, then send and count messages."""

    def __init__(self, room: Room, stats: Stats, request: bytes, max_message_bytes: int) -> None:
        self.room = room
        self.stats = stats
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.sink = DeliverySink(stats.tally, max_message_bytes)
        self.mask = os.urandom(4)
        self.head: bytearray | None = bytearray()
        self.member_id = 0
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Its messages when it sends on its own (open loop); in lockstep its room sends for it.
        self.source = MessageSource(room.payload_bytes, self.mask)

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
        # Only the handshake comes here: then the sink reads for this member (on_events).
        rest = self._read_response(data)
        if self.head is None and self.transport is not None and not self.transport.is_closing():
            self.sink.protocol = self
            self.transport.set_protocol(self.sink)
            if rest:
                self.sink.data_received(rest)

    def on_events(self) -> None:
        """What the sink found that is not a delivery: control messages, or a broken frame."""
        sink = self.sink
        try:
            while (event := sink.next_event()) is not None:
                self._control(event)
        except ProtocolError as exc:
            self.stats.error(f"protocol_error_{exc.code}")
            self.abort()

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
        if opcode == OP_BINARY:
            # Too short to be the generator's, or from a member id no room gives.
            self.stats.error("unexpected_binary")
        elif opcode == OP_TEXT:
            self._on_text(event[1])
        elif opcode == OP_PING:
            if self.stats.answer_pings:
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


class JoinError(Exception):
    """A member could not join; the message is the error's kind (e.g. ``close_4409``)."""


class Room:
    """A room of the generator: its members, and its lockstep rounds when there are any.

    In lockstep, every member sends a burst of ``burst`` messages, and the next round starts
    when every member has received all of the others' (``n * (n - 1) * burst`` deliveries):
    the members' sinks count them and start the round (see Lockstep).
    """

    def __init__(self, room_id: str, secret: str, payload_bytes: int, stats: Stats) -> None:
        self.room_id = room_id
        self.secret = secret
        self.payload_bytes = payload_bytes
        self.stats = stats
        self.members: list[Member] = []
        # In lockstep every member sends the same burst in a round, sequence numbers included:
        # it is built once for all of them.
        self.source = MessageSource(payload_bytes, os.urandom(4))
        self.lockstep: Lockstep | None = None
        self.stalled = False

    @property
    def joined(self) -> list[Member]:
        return [m for m in self.members if m.joined.done() and not m.joined.exception()
                and m.transport is not None]

    @property
    def outstanding(self) -> int:
        """Deliveries of the lockstep round in progress still to arrive."""
        return self.lockstep.outstanding if self.lockstep is not None else 0

    def start_lockstep(self, burst: int) -> None:
        self.members = self.joined
        writes = [m.transport.write for m in self.members]  # type: ignore[union-attr]
        self.lockstep = Lockstep(self.stats.tally, self.source, burst, writes, time.monotonic_ns)
        for member in self.members:
            member.sink.lockstep = self.lockstep
        self.lockstep.start()

    def stop(self) -> None:
        if self.lockstep is not None:
            self.lockstep.stop()

    def lost(self, member: Member) -> None:
        if self.lockstep is not None and self.lockstep.running and member in self.members:
            # The round can never complete: the room stops, and its loss shows in the counts.
            self.stalled = True
            self.lockstep.stop()


def upgrade_request(host_header: str, room_id: str) -> bytes:
    """The HTTP request that opens a WebSocket into ``room_id``."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    return (
        f"GET /r/{room_id}/ws HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "User-Agent: pugfast-bench\r\n\r\n"
    ).encode("ascii")


class Pacer:
    """Drives the open loop: at each tick of the 1 ms grid, the messages the schedule says are
    due before the next tick go out through the OpenLoopSender, stamped with the tick's time.

    Ticks come from a Ticker (a timerfd where there is one). However late a tick runs, and
    however many a pause skipped, every tick's messages are sent, each stamped with its own
    tick: a generator that falls behind shows as lag, and in the latency, rather than sending
    less. ``done`` resolves when every tick before the schedule's end has been sent.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sender: OpenLoopSender,
                 schedule: Schedule, t0: int) -> None:
        self.loop = loop
        self.sender = sender
        self.schedule = schedule
        self.t0 = t0
        self.next_tick = 0
        self.ticks = -(-schedule.end_ns // TICK_NS)
        self.scheduled = 0
        self.ticker: Ticker | None = None
        self.done: asyncio.Future[None] = loop.create_future()

    @property
    def precise(self) -> bool:
        return self.ticker is None or self.ticker.precise

    def start(self) -> None:
        self.ticker = Ticker(self.loop, self.t0, TICK_NS, self.tick)

    def tick(self, now: int) -> None:
        last = min((now - self.t0) // TICK_NS, self.ticks - 1)
        schedule, sender = self.schedule, self.sender
        for k in range(self.next_tick, last + 1):
            due = schedule.due_by((k + 1) * TICK_NS)
            if due > self.scheduled:
                sender.send(due - self.scheduled, self.t0 + k * TICK_NS)
                self.scheduled = due
        self.next_tick = max(self.next_tick, last + 1)
        if self.next_tick >= self.ticks:
            self.stop()

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        if not self.done.done():
            self.done.set_result(None)
