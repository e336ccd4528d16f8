"""The load generator's ends of the wire, in pure Python: the messages a member sends, and
what it receives, counted.

This is the twin of the compiled source and sink in _ext/pugfast/engine/_sink.pxi: both expose
the same names and give the same bytes, counts, events and errors however the input is split
into ``feed()`` calls (tests/test_bench_sink.py holds them to it); the engine's selector,
pugfast/engine/__init__.py, picks one. The two are laid out alike, method for method: a reader
can put ``DeliverySink._feed``, ``_account`` and ``_grow`` beside their C.

A member of ``pugfast bench`` stamps every message with its send time (monotonic ns) and a
sequence number of its own (``MessageSource``); the relay puts the sender's member id in front.
A receiving member gives each socket read to its ``DeliverySink``, which parses the relay's
frames with the relay's own codec and, for every such delivery, checks the order per sender
(``gaps``: sequence numbers skipped; ``out_of_order``: one at or below one seen before), and
counts it into the ``DeliveryTally`` shared by the generator's members (which also counts what
was sent):

- ``received_total``: every delivery; ``received_in_window``: those that arrived inside the
  window [window_start, window_end) (the delivered rate is computed from these), and
  ``received_after_window`` those that arrived after it (during the drain); so the deliveries
  that arrived from the window's start on are known exactly, whenever they are read;
- ``delivered``: the deliveries of messages *sent* inside the window, whenever they arrive
  (the drain after the window waits for stragglers); only they carry latencies, kept in
  HdrHistogram's bucket layout (below) until ``drain_into`` moves them into a histogram.

Open loop, an ``OpenLoopSender`` writes each message stamped with the time it was *due*, not
the time the generator got round to writing it, so a generator that falls behind (a pause, a
busy core) shows in the latency instead of hiding it (coordinated omission); how late each
write was, its lag, goes into the tally's second histogram (``drain_lag_into``).

The histograms' layout is HdrHistogram's for two significant decimal digits
(pugfast/engine/buckets.py): a bucket is at most 1/128 of its values wide (under 1%).
``bucket_index`` gives a value's bucket; pugfast/bench/histogram.py reads the same layout.

Any other message (text, ping, pong, close, a binary one too short or from an impossible
member id) is handed back as FrameParser's event, and a broken frame raises FrameParser's
ProtocolError in its turn, so the caller keeps its own handling of those.

In lockstep, a room's sinks share its ``Lockstep``: when they have counted every delivery of a
round, it writes the next one to every member. So per read the caller makes two calls, however
many deliveries the read held, and none per round.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..errors import ProtocolError
from ._frames import OP_BINARY, BytesLike, Event, FrameParser, encode_frame
from .buckets import BUCKETS, SUB_BITS, bucket_index

__all__ = [
    "BUCKETS", "MAX_SENDERS", "SUB_BITS", "DeliverySink", "DeliveryTally", "Lockstep",
    "MessageSource", "OpenLoopSender", "bucket_index",
]

# A message's head: the send time and the sequence number, XORed with the frame's mask (the
# time, never negative, packed unsigned).
_MASKED_HEAD = struct.Struct(">QI")
# A relayed message's head: the sender's member id, then the message's head.
_RELAYED = struct.Struct(">IqI")
# Member ids beyond this are no relay's: a room gives them from 1 up, one per join.
MAX_SENDERS = 1 << 16
_FIRST_SENDERS = 64
# Before a window is set nothing counts as measured.
_NEVER = 1 << 62
# Times are 64-bit signed nanoseconds, as the compiled twin holds them.
_LIMIT = 1 << 63


def _nanoseconds(name: str, value: int) -> int:
    """``value``, a time in nanoseconds, if it fits where the compiled twin keeps it."""
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    if value >= _LIMIT:
        raise OverflowError(f"{name} does not fit in 64 bits")
    return value


class MessageSource:
    """The binary messages one sender writes, in masked client frames, numbered from 0.

    A message's payload is ``payload_bytes`` long: its send time (monotonic nanoseconds, 8
    bytes) and sequence number (4 bytes, wrapping at 2**32), big-endian, then zeros. ``seq``
    is the number the next message gets. Every message is masked with ``mask``.
    """

    __slots__ = ("_burst", "_frame", "_head_at", "_seq_mask", "_time_mask", "seq")

    def __init__(self, payload_bytes: int, mask: BytesLike) -> None:
        """Raises ValueError if ``payload_bytes`` is below 12 or ``mask`` is not 4 bytes."""
        if mask is None:
            raise TypeError("a mask is required")
        if payload_bytes < _MASKED_HEAD.size:
            raise ValueError(f"payload_bytes must be at least {_MASKED_HEAD.size}")
        self._frame = encode_frame(OP_BINARY, bytes(payload_bytes), mask=mask)
        self._head_at = len(self._frame) - payload_bytes
        self._time_mask = int.from_bytes(bytes(mask) * 2, "big")
        self._seq_mask = int.from_bytes(mask, "big")
        # The frames of the last burst, rewritten in place by the next one of its length.
        self._burst = bytearray()
        self.seq = 0

    def frames(self, k: int, sent_at: int) -> bytes:
        """``k`` messages stamped ``sent_at``, with the next ``k`` sequence numbers, in one bytes.

        Raises ValueError if ``k`` or ``sent_at`` is negative.
        """
        if k < 0:
            raise ValueError("k must not be negative")
        _nanoseconds("sent_at", sent_at)
        size = len(self._frame)
        burst = self._burst
        if len(burst) != k * size:
            burst = self._burst = bytearray(self._frame * k)
        pack = _MASKED_HEAD.pack_into
        at = self._head_at
        stamp = sent_at ^ self._time_mask
        seq_mask = self._seq_mask
        seq = self.seq
        for i in range(seq, seq + k):
            pack(burst, at, stamp, (i & 0xFFFFFFFF) ^ seq_mask)
            at += size
        self.seq = (seq + k) & 0xFFFFFFFF
        return bytes(burst)


class _Recorder:
    """Values not yet drained: counts per bucket, and their count, sum, minimum and maximum."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = self.total = self.min = self.max = 0

    def record(self, value: int) -> None:
        self.counts[bucket_index(value)] += 1
        if self.count == 0 or value < self.min:
            self.min = value
        if self.count == 0 or value > self.max:
            self.max = value
        self.count += 1
        self.total += value

    def drain_into(self, hist: Any) -> None:
        counts = hist.counts
        if len(counts) != BUCKETS:
            raise ValueError(f"the histogram must have {BUCKETS} buckets")
        if self.count == 0:
            return
        for index, n in enumerate(self.counts):
            if n:
                counts[index] += n
        hist.count += self.count
        hist.total += self.total
        if hist.min < 0 or self.min < hist.min:
            hist.min = self.min
        if self.max > hist.max:
            hist.max = self.max
        self.counts = [0] * BUCKETS
        self.count = self.total = 0


class DeliveryTally:
    """What the members of one load generator sent and received, summed over all of them.

    ``sent`` counts what was sent: ``sent_total`` messages, ``sent_window`` of them inside
    the window and the ``expected`` deliveries of those. Every DeliverySink counts what it
    received: ``received_total``, ``received_in_window`` (those that arrived inside the
    window), ``received_after_window`` (those that arrived after it), ``delivered`` (those of
    messages sent inside it, whenever they arrived; only they carry latencies), ``gaps`` and
    ``out_of_order``; ``drain_into`` moves the latencies into a histogram, ``drain_lag_into``
    the open loop's lags. ``window_start`` and ``window_end``
    (monotonic nanoseconds) bound the window; until they are set nothing is measured.
    """

    __slots__ = (
        "_lag",
        "_latency",
        "_window_end",
        "_window_start",
        "delivered",
        "expected",
        "gaps",
        "out_of_order",
        "received_after_window",
        "received_in_window",
        "received_total",
        "sent_total",
        "sent_window",
    )

    def __init__(self) -> None:
        self._window_start = _NEVER
        self._window_end = _NEVER
        self.sent_total = 0
        self.sent_window = 0
        self.expected = 0
        self.received_total = 0
        self.received_in_window = 0
        self.received_after_window = 0
        self.delivered = 0
        self.gaps = 0
        self.out_of_order = 0
        self._latency = _Recorder()
        self._lag = _Recorder()

    @property
    def window_start(self) -> int:
        return self._window_start

    @window_start.setter
    def window_start(self, value: int) -> None:
        """Raises ValueError if ``value`` is negative, OverflowError beyond 64 bits."""
        self._window_start = _nanoseconds("window_start", value)

    @property
    def window_end(self) -> int:
        return self._window_end

    @window_end.setter
    def window_end(self, value: int) -> None:
        """Raises ValueError if ``value`` is negative, OverflowError beyond 64 bits."""
        self._window_end = _nanoseconds("window_end", value)

    def sent(self, messages: int, deliveries: int, now_ns: int) -> None:
        """Counts ``messages`` sent at ``now_ns``, owed ``deliveries`` deliveries in all (each
        to every other member of its room). Raises ValueError if any is negative."""
        if messages < 0 or deliveries < 0 or now_ns < 0:
            raise ValueError("counts and times must not be negative")
        self.sent_total += messages
        if self._window_start <= now_ns < self._window_end:
            self.sent_window += messages
            self.expected += deliveries

    def drain_into(self, hist: Any) -> None:
        """Adds the latencies measured since the last drain to ``hist`` and forgets them.

        ``hist`` has ``counts``, a list of BUCKETS counts in this module's layout, and
        ``count``, ``total``, ``min`` (-1 when empty) and ``max``, which are updated (as
        pugfast.bench.histogram.Histogram has). Raises ValueError if its layout is not this one.
        """
        self._latency.drain_into(hist)

    def drain_lag_into(self, hist: Any) -> None:
        """Adds the open loop's lags since the last drain to ``hist``, as ``drain_into`` does."""
        self._lag.drain_into(hist)


class OpenLoopSender:
    """The open loop's writes: messages round-robin over members, each stamped with the time
    it was due.

    ``sources``, ``writes`` and ``deliveries`` are per member: its MessageSource, its write
    callable (its transport's ``write``) and how many receive its messages (its room's other
    members). ``send(n, due_ns)`` writes the next ``n`` messages, each stamped ``due_ns``, its
    scheduled send time, so that latency counts from the schedule and not from whenever the
    generator got round to it; each is counted into the tally as sent at ``due_ns``, and its
    lag (``clock()`` just before its write, minus ``due_ns``) goes into the tally's lag
    histogram when ``due_ns`` is inside the window. ``sent`` counts the messages written.
    """

    __slots__ = ("_clock", "_deliveries", "_sources", "_tally", "_writes", "cursor", "sent")

    def __init__(self, tally: DeliveryTally, sources: Iterable[MessageSource],
                 writes: Iterable[Callable[[bytes], object]], deliveries: Iterable[int],
                 clock: Callable[[], int]) -> None:
        """Raises ValueError if the three lists differ in length or a delivery count is
        negative, TypeError if a source is not a MessageSource."""
        if not isinstance(tally, DeliveryTally):
            raise TypeError("tally must be a DeliveryTally")
        self._tally = tally
        self._sources = list(sources)
        self._writes = list(writes)
        self._deliveries = [int(d) for d in deliveries]
        if not all(isinstance(s, MessageSource) for s in self._sources):
            raise TypeError("every source must be a MessageSource")
        if not len(self._sources) == len(self._writes) == len(self._deliveries):
            raise ValueError("sources, writes and deliveries must be as many")
        if any(d < 0 for d in self._deliveries):
            raise ValueError("delivery counts must not be negative")
        self._clock = clock
        self.cursor = 0
        self.sent = 0

    def send(self, n: int, due_ns: int) -> None:
        """Writes the next ``n`` messages, due at ``due_ns``, to the members in turn.

        Raises ValueError if ``n`` or ``due_ns`` is negative, or if there are no members to
        write to; and what the writes raise.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        _nanoseconds("due_ns", due_ns)
        if n and not self._writes:
            raise ValueError("no members to send from")
        tally = self._tally
        measured = tally._window_start <= due_ns < tally._window_end
        lag = tally._lag
        count = len(self._writes)
        for _ in range(n):
            cursor = self.cursor
            now = self._clock()
            self._writes[cursor](self._sources[cursor].frames(1, due_ns))
            if measured:
                lag.record(now - due_ns if now > due_ns else 0)
            tally.sent(1, self._deliveries[cursor], due_ns)
            self.sent += 1
            self.cursor = cursor + 1 if cursor + 1 < count else 0


class Lockstep:
    """The lockstep rounds of one room, driven by its members' sinks.

    In a round every member writes the same burst of ``burst`` messages from ``source``,
    stamped with ``clock()`` (time.monotonic_ns) when the round starts; ``writes`` are the
    members' write callables (their transports' ``write``). The next round starts as soon as
    the sinks given this Lockstep have counted the n * (n - 1) * burst deliveries outstanding,
    while it is ``running`` and the window has not ended. ``rounds`` counts the rounds.
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_deliveries",
        "_messages",
        "_source",
        "_tally",
        "_writes",
        "outstanding",
        "rounds",
        "running",
    )

    def __init__(self, tally: DeliveryTally, source: MessageSource, burst: int,
                 writes: Iterable[Callable[[bytes], object]], clock: Callable[[], int]) -> None:
        """Raises ValueError if ``burst`` is below 1."""
        if not isinstance(tally, DeliveryTally) or not isinstance(source, MessageSource):
            raise TypeError("a DeliveryTally and a MessageSource are required")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._tally = tally
        self._source = source
        self._burst = burst
        self._writes = list(writes)
        self._clock = clock
        n = len(self._writes)
        self._messages = n * burst
        self._deliveries = n * (n - 1) * burst
        self.outstanding = 0
        self.rounds = 0
        self.running = False

    def start(self) -> None:
        """Writes the first round; with fewer than two members there are none to write."""
        self.running = True
        if len(self._writes) >= 2:
            self._round(self._clock())

    def stop(self) -> None:
        """Starts no more rounds."""
        self.running = False

    def _received(self, n: int) -> None:
        self.outstanding -= n
        if self.outstanding <= 0 and self.running:
            now = self._clock()
            if now < self._tally._window_end:
                self._round(now)

    def _round(self, now: int) -> None:
        frames = self._source.frames(self._burst, now)
        self.outstanding += self._deliveries
        self.rounds += 1
        self._tally.sent(self._messages, self._deliveries, now)
        for write in self._writes:
            write(frames)


class DeliverySink:
    """The receiving end of one generator connection, from the relay's 101 response on.

    ``feed`` takes the bytes the relay sent and counts every delivery of the generator's
    messages into the tally at once; ``next_event`` hands out the other events in order.
    ``lockstep``, when set, is told how many deliveries each ``feed`` counted. Once the
    handshake is over the sink becomes the transport's protocol (``transport.set_protocol``),
    so the event loop hands each read straight to it; ``protocol`` (the member) gets
    ``on_events``, ``eof_received`` and ``connection_lost``.
    """

    __slots__ = ("_error", "_events", "_expect", "_parser", "_tally", "lockstep", "protocol")

    def __init__(self, tally: DeliveryTally, max_message_bytes: int) -> None:
        """Raises ValueError if ``max_message_bytes`` is negative."""
        if not isinstance(tally, DeliveryTally):
            raise TypeError("tally must be a DeliveryTally")
        self._tally = tally
        self._parser = FrameParser(max_message_bytes, require_mask=False)
        self._events: list[Event] = []
        self._error: ProtocolError | None = None
        # The sequence number expected next from each sender, indexed by member id.
        self._expect: list[int] = []
        self.lockstep: Lockstep | None = None
        self.protocol: Any = None

    # -- as the transport's protocol, once the handshake is over ----------------------------

    def data_received(self, data: BytesLike) -> None:
        """The relay's bytes, fed as they arrive; ``protocol`` hears ``on_events()`` only
        when there are events other than deliveries."""
        self.feed(data, time.monotonic_ns())
        if self._events or self._error is not None:
            self.protocol.on_events()

    def eof_received(self) -> bool | None:
        return cast("bool | None", self.protocol.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def connection_made(self, transport: object) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def feed(self, data: BytesLike, now_ns: int) -> int:
        """Takes the bytes that arrived at ``now_ns``; returns how many deliveries they completed.

        ``now_ns`` is time.monotonic_ns() when they arrived. A delivery is a binary message of
        at least 16 bytes from a member id below MAX_SENDERS: it is counted into the tally
        here (and may start the next lockstep round). Every other event, and the ProtocolError
        of a broken frame (which ends the stream), waits for ``next_event``. Bytes after the
        stream ended are ignored. Raises TypeError if ``data`` is not a bytes-like object,
        ValueError if ``now_ns`` is negative, and what the lockstep's writes raise.
        """
        return self._feed(data, now_ns)

    def _feed(self, data: BytesLike, now_ns: int) -> int:
        _nanoseconds("now_ns", now_ns)
        parser = self._parser
        if parser.finished:
            return 0
        parser.feed(data)
        tally = self._tally
        arrived = tally._window_start <= now_ns < tally._window_end
        received = 0
        try:
            while (event := parser.next_event()) is not None:
                if event[0] == OP_BINARY and self._account(cast(bytes, event[1]), now_ns, arrived):
                    received += 1
                else:
                    self._events.append(event)
        except ProtocolError as exc:
            self._error = exc
        if received and now_ns >= tally._window_end:
            tally.received_after_window += received
        if received and self.lockstep is not None:
            self.lockstep._received(received)
        return received

    def next_event(self) -> Event | None:
        """Returns the next event that was not a delivery, or None when there is none.

        The events are FrameParser's: ``(OP_TEXT, bytes)``, ``(OP_PING, bytes)``,
        ``(OP_PONG, bytes)``, ``(OP_CLOSE, code or None, reason)``, and ``(OP_BINARY, bytes)``
        for a binary message that is not a delivery. Raises the ProtocolError that ended the
        stream, carrying the close code, after the events before it; then returns None.
        """
        if self._events:
            return self._events.pop(0)
        if self._error is not None:
            error = self._error
            self._error = None
            raise error
        return None

    def _account(self, payload: bytes, now: int, arrived_in_window: bool) -> bool:
        """Counts the relayed message ``payload`` if it is a delivery; False if it is not one."""
        if len(payload) < _RELAYED.size:
            return False
        sender, sent_at, seq = _RELAYED.unpack_from(payload)
        if sender >= MAX_SENDERS:
            return False
        if sender >= len(self._expect):
            self._grow(sender)
        tally = self._tally
        wanted = self._expect[sender]
        if seq > wanted:
            tally.gaps += seq - wanted
        elif seq < wanted:
            tally.out_of_order += 1
        self._expect[sender] = seq + 1
        tally.received_total += 1
        if arrived_in_window:
            tally.received_in_window += 1
        if tally._window_start <= sent_at < tally._window_end:
            tally._latency.record(now - sent_at)
            tally.delivered += 1
        return True

    def _grow(self, sender: int) -> None:
        """Makes room for ``sender``'s expected sequence number; new senders expect 0."""
        expect = self._expect
        capacity = min(max(_FIRST_SENDERS, 2 * len(expect), sender + 1), MAX_SENDERS)
        expect.extend([0] * (capacity - len(expect)))
