# The load generator's hot paths in C: the compiled twin of pugfast/engine/_sink.py, with the
# same names, bytes, events and errors (read that module's docstring for what is sent, what is
# counted and why). Included by _speedups.pyx after _frames.pxi; the types are declared in
# _speedups.pxd.
#
# `pugfast bench` must spend less per delivery than the relay it measures, and a relayed
# message costs the relay well under a microsecond, so Python must not run per message, nor
# per lockstep round. A burst of messages is a prebuilt frame copied per message with its
# 12-byte head XORed in. A receiving member hands each socket read to its sink once: the
# relay's frames are found in place in the codec's buffer, each delivery's sender, send time and
# sequence number are read straight out of it into C counters, and when a room's round is
# complete the next one is written from here. Python sees the frames that are not deliveries.
# Open loop, the OpenLoopSender writes each tick's messages, stamped with the time they were
# due, and records how late each write was, with no Python per message.

from libc.string cimport memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from *:
    """
    /* The number of bits v needs, as Python's int.bit_length(). */
    static inline int pugfast_bit_length(unsigned long long v) {
    #if defined(__GNUC__) || defined(__clang__)
        return v ? 64 - __builtin_clzll(v) : 0;
    #else
        int n = 0;
        while (v) { n++; v >>= 1; }
        return n;
    #endif
    }
    """
    int pugfast_bit_length(unsigned long long v) noexcept nogil

cdef enum:
    # A message's head: send time (8 bytes) and sequence number (4), big-endian. The relay
    # puts the sender's member id (4) in front of a message it relays.
    _HEAD = 12
    _RELAYED_HEAD = 16
    # Member ids beyond this are no relay's: a room gives them from 1 up, one per join.
    _MAX_SENDERS = 65536
    _FIRST_SENDERS = 64

# Before a window is set nothing counts as measured.
cdef long long _NEVER = 1LL << 62
MAX_SENDERS = _MAX_SENDERS


cdef inline unsigned long long _load_be32(const unsigned char* p) noexcept nogil:
    # Spelled out byte by byte, which compilers turn into one load and a byte swap.
    return (<unsigned long long>p[0] << 24 | <unsigned long long>p[1] << 16
            | <unsigned long long>p[2] << 8 | p[3])


cdef inline void _store_be(unsigned char* p, unsigned long long value, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        p[i] = <unsigned char>(value >> (8 * (n - 1 - i)))


cdef inline long long _monotonic_ns() noexcept nogil:
    """time.monotonic_ns(), which is CLOCK_MONOTONIC on Linux."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <long long>now.tv_sec * 1000000000 + now.tv_nsec


cdef inline Py_ssize_t _bucket(long long value) noexcept nogil:
    """bucket_index (pugfast/engine/buckets.py): 256 linear buckets, then 128 per power of two."""
    cdef int shift
    if value < (2 << SINK_SUB_BITS):
        return value if value > 0 else 0
    shift = pugfast_bit_length(<unsigned long long>value) - SINK_SUB_BITS - 1
    return (shift << SINK_SUB_BITS) + (value >> shift)


cdef inline void _record(Recorder* r, long long value) noexcept nogil:
    r.counts[_bucket(value)] += 1
    if r.count == 0 or value < r.min:
        r.min = value
    if r.count == 0 or value > r.max:
        r.max = value
    r.count += 1
    # The sum would overflow only after 292 years of values; unsigned, it cannot trap even then.
    r.total = <long long>(<unsigned long long>r.total + <unsigned long long>value)


cdef int _drain(Recorder* r, hist) except -1:
    """Adds r's values to the histogram ``hist`` and forgets them (see drain_into)."""
    cdef Py_ssize_t i
    counts = hist.counts
    if len(counts) != SINK_BUCKETS:
        raise ValueError(f"the histogram must have {SINK_BUCKETS} buckets")
    if r.count == 0:
        return 0
    for i in range(SINK_BUCKETS):
        if r.counts[i]:
            counts[i] += r.counts[i]
    hist.count += r.count
    hist.total += r.total
    if hist.min < 0 or r.min < hist.min:
        hist.min = r.min
    if r.max > hist.max:
        hist.max = r.max
    memset(r, 0, sizeof(Recorder))
    return 0


SUB_BITS = SINK_SUB_BITS
BUCKETS = SINK_BUCKETS


def bucket_index(long long value):
    """The histogram bucket ``value`` (a non-negative integer below 2**63) falls in."""
    return _bucket(value)


cdef inline Py_ssize_t _plain_binary(FrameParser parser, Py_ssize_t* length) noexcept:
    """The header size of the frame at the parser's read offset, if it is a whole binary message
    in one unmasked frame with a 7- or 16-bit length within the size limit, all of it received
    (every delivery the relay sends); else 0, and the codec checks the frame rule by rule.

    Such a frame breaks no rule, so skipping next_c for it changes no outcome.
    """
    cdef const unsigned char* p = parser._buf + parser._start
    cdef Py_ssize_t available = parser._end - parser._start
    cdef Py_ssize_t size = 2
    cdef Py_ssize_t n
    # A finished parser still holds the bytes after a close frame until next_c drops them.
    if (parser._finished or available < 2 or p[0] != (0x80 | WS_BINARY)
            or parser._frag_opcode != WS_CONT):
        return 0
    n = p[1]
    if n == 126:
        if available < 4:
            return 0
        n = p[2] << 8 | p[3]
        size = 4
    elif n > 126:
        # A 64-bit length, or the mask bit set.
        return 0
    if n > parser._max_message_bytes or available - size < n:
        return 0
    length[0] = n
    return size


cdef class MessageSource:
    """The binary messages one sender writes, in masked client frames, numbered from 0.

    A message's payload is ``payload_bytes`` long: its send time (monotonic nanoseconds, 8
    bytes) and sequence number (4 bytes, wrapping at 2**32), big-endian, then zeros. ``seq``
    is the number the next message gets. Every message is masked with ``mask``.
    """

    def __init__(self, Py_ssize_t payload_bytes, mask):
        """Raises ValueError if ``payload_bytes`` is below 12 or ``mask`` is not 4 bytes."""
        if mask is None:
            raise TypeError("a mask is required")
        if payload_bytes < _HEAD:
            raise ValueError(f"payload_bytes must be at least {_HEAD}")
        self._frame = encode_frame(WS_BINARY, bytes(payload_bytes), mask=mask)
        self._head_at = PyBytes_GET_SIZE(self._frame) - payload_bytes

    def frames(self, Py_ssize_t k, long long sent_at):
        """``k`` messages stamped ``sent_at``, with the next ``k`` sequence numbers, in one bytes.

        Raises ValueError if ``k`` or ``sent_at`` is negative.
        """
        if k < 0:
            raise ValueError("k must not be negative")
        if sent_at < 0:
            raise ValueError("sent_at must not be negative")
        return self._frames(k, sent_at)

    cdef bytes _frames(self, Py_ssize_t k, long long sent_at):
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self._frame)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, k * size)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        cdef unsigned char head[_HEAD]
        cdef Py_ssize_t i
        cdef int j
        _store_be(head, <unsigned long long>sent_at, 8)
        for i in range(k):
            memcpy(p, PyBytes_AS_STRING(self._frame), size)
            _store_be(head + 8, self.seq, 4)
            # The frame's payload is the mask where the plain payload is zero: XORing the head
            # into it masks the head.
            for j in range(_HEAD):
                p[self._head_at + j] ^= head[j]
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            p += size
        return out


cdef class DeliveryTally:
    """What the members of one load generator sent and received, summed over all of them.

    ``sent`` counts what was sent: ``sent_total`` messages, ``sent_window`` of them inside
    the window and the ``expected`` deliveries of those. Every DeliverySink counts what it
    received: ``received_total``, ``received_in_window`` (those that arrived inside the
    window), ``received_after_window`` (those that arrived after it), ``delivered`` (those of
    messages sent inside it, whenever they arrived; only they carry latencies), ``gaps`` and
    ``out_of_order``; ``drain_into`` moves the latencies into a histogram, ``drain_lag_into``
    the open loop's lags. ``window_start`` and ``window_end`` (monotonic nanoseconds) bound the window;
    until they are set nothing is measured.
    """

    def __cinit__(self):
        self._window_start = _NEVER
        self._window_end = _NEVER

    @property
    def window_start(self):
        return self._window_start

    @window_start.setter
    def window_start(self, long long value):
        """Raises ValueError if ``value`` is negative, OverflowError beyond 64 bits."""
        if value < 0:
            raise ValueError("window_start must not be negative")
        self._window_start = value

    @property
    def window_end(self):
        return self._window_end

    @window_end.setter
    def window_end(self, long long value):
        """Raises ValueError if ``value`` is negative, OverflowError beyond 64 bits."""
        if value < 0:
            raise ValueError("window_end must not be negative")
        self._window_end = value

    def sent(self, long long messages, long long deliveries, long long now_ns):
        """Counts ``messages`` sent at ``now_ns``, owed ``deliveries`` deliveries in all (each
        to every other member of its room). Raises ValueError if any is negative."""
        if messages < 0 or deliveries < 0 or now_ns < 0:
            raise ValueError("counts and times must not be negative")
        self._sent(messages, deliveries, now_ns)

    cdef void _sent(self, long long messages, long long deliveries, long long now) noexcept:
        self.sent_total += messages
        if self._window_start <= now < self._window_end:
            self.sent_window += messages
            self.expected += deliveries

    def drain_into(self, hist):
        """Adds the latencies measured since the last drain to ``hist`` and forgets them.

        ``hist`` has ``counts``, a list of BUCKETS counts in this module's layout, and
        ``count``, ``total``, ``min`` (-1 when empty) and ``max``, which are updated (as
        pugfast.bench.histogram.Histogram has). Raises ValueError if its layout is not this one.
        """
        _drain(&self._latency, hist)

    def drain_lag_into(self, hist):
        """Adds the open loop's lags since the last drain to ``hist``, as ``drain_into`` does."""
        _drain(&self._lag, hist)


cdef class OpenLoopSender:
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

    def __init__(self, DeliveryTally tally not None, sources, writes, deliveries, clock):
        """Raises ValueError if the three lists differ in length or a delivery count is
        negative, TypeError if a source is not a MessageSource."""
        self._tally = tally
        self._sources = list(sources)
        self._writes = list(writes)
        self._deliveries = [int(d) for d in deliveries]
        for source in self._sources:
            if not isinstance(source, MessageSource):
                raise TypeError("every source must be a MessageSource")
        if not len(self._sources) == len(self._writes) == len(self._deliveries):
            raise ValueError("sources, writes and deliveries must be as many")
        for d in self._deliveries:
            if d < 0:
                raise ValueError("delivery counts must not be negative")
        self._clock = clock

    def send(self, Py_ssize_t n, long long due_ns):
        """Writes the next ``n`` messages, due at ``due_ns``, to the members in turn.

        Raises ValueError if ``n`` or ``due_ns`` is negative, or if there are no members to
        write to; and what the writes raise.
        """
        cdef DeliveryTally tally = self._tally
        cdef Py_ssize_t count = len(self._writes)
        cdef Py_ssize_t i, cursor
        cdef long long now
        cdef bint measured
        if n < 0:
            raise ValueError("n must not be negative")
        if due_ns < 0:
            raise ValueError("due_ns must not be negative")
        if n and not count:
            raise ValueError("no members to send from")
        measured = tally._window_start <= due_ns < tally._window_end
        for i in range(n):
            cursor = self.cursor
            now = self._clock()
            self._writes[cursor]((<MessageSource>self._sources[cursor])._frames(1, due_ns))
            if measured:
                _record(&tally._lag, now - due_ns if now > due_ns else 0)
            tally._sent(1, <long long>self._deliveries[cursor], due_ns)
            self.sent += 1
            self.cursor = cursor + 1 if cursor + 1 < count else 0


cdef class Lockstep:
    """The lockstep rounds of one room, driven by its members' sinks.

    In a round every member writes the same burst of ``burst`` messages from ``source``,
    stamped with ``clock()`` (time.monotonic_ns) when the round starts; ``writes`` are the
    members' write callables (their transports' ``write``). The next round starts as soon as
    the sinks given this Lockstep have counted the n * (n - 1) * burst deliveries outstanding,
    while it is ``running`` and the window has not ended. ``rounds`` counts the rounds.
    """

    def __init__(self, DeliveryTally tally not None, MessageSource source not None,
                 Py_ssize_t burst, writes, clock):
        """Raises ValueError if ``burst`` is below 1."""
        cdef Py_ssize_t n
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

    def start(self):
        """Writes the first round; with fewer than two members there are none to write."""
        self.running = True
        if len(self._writes) >= 2:
            self._round(self._clock())

    def stop(self):
        """Starts no more rounds."""
        self.running = False

    cdef int _received(self, Py_ssize_t n) except -1:
        cdef long long now
        self.outstanding -= n
        if self.outstanding <= 0 and self.running:
            now = self._clock()
            if now < self._tally._window_end:
                self._round(now)
        return 0

    cdef int _round(self, long long now) except -1:
        cdef bytes frames
        if now < 0:
            raise ValueError("sent_at must not be negative")
        frames = self._source._frames(self._burst, now)
        self.outstanding += self._deliveries
        self.rounds += 1
        self._tally._sent(self._messages, self._deliveries, now)
        for write in self._writes:
            write(frames)
        return 0


cdef class DeliverySink:
    """The receiving end of one generator connection, from the relay's 101 response on.

    ``feed`` takes the bytes the relay sent and counts every delivery of the generator's
    messages into the tally at once; ``next_event`` hands out the other events in order.
    ``lockstep``, when set, is told how many deliveries each ``feed`` counted. Once the
    handshake is over the sink becomes the transport's protocol (``transport.set_protocol``),
    so the event loop hands each read straight to compiled code; ``protocol`` (the member)
    gets ``on_events``, ``eof_received`` and ``connection_lost``.
    """

    def __cinit__(self):
        self._events = []
        self._expect = NULL
        self._senders = 0

    def __init__(self, DeliveryTally tally not None, Py_ssize_t max_message_bytes):
        """Raises ValueError if ``max_message_bytes`` is negative."""
        self._tally = tally
        self._parser = FrameParser(max_message_bytes, require_mask=False)

    def __dealloc__(self):
        free(self._expect)

    # -- as the transport's protocol, once the handshake is over ----------------------------

    def data_received(self, data):
        """The relay's bytes, fed as they arrive, with no Python in between; ``protocol``
        hears ``on_events()`` only when there are events other than deliveries."""
        self._feed(data, _monotonic_ns())
        if self._events or self._error is not None:
            self.protocol.on_events()

    def eof_received(self):
        return self.protocol.eof_received()

    def connection_lost(self, exc):
        self.protocol.connection_lost(exc)

    def connection_made(self, transport):
        pass

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    def feed(self, data, long long now_ns):
        """Takes the bytes that arrived at ``now_ns``; returns how many deliveries they completed.

        ``now_ns`` is time.monotonic_ns() when they arrived. A delivery is a binary message of
        at least 16 bytes from a member id below MAX_SENDERS: it is counted into the tally
        here (and may start the next lockstep round). Every other event, and the ProtocolError
        of a broken frame (which ends the stream), waits for ``next_event``. Bytes after the
        stream ended are ignored. Raises TypeError if ``data`` is not a bytes-like object,
        ValueError if ``now_ns`` is negative, and what the lockstep's writes raise.
        """
        return self._feed(data, now_ns)

    cdef Py_ssize_t _feed(self, data, long long now_ns) except -1:
        cdef FrameParser parser = self._parser
        cdef Py_buffer view
        cdef Py_ssize_t received = 0
        cdef Py_ssize_t size, n
        cdef const unsigned char* payload
        cdef int opcode
        cdef bint arrived
        if now_ns < 0:
            raise ValueError("now_ns must not be negative")
        if parser._finished:
            parser._release()
            return 0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            parser.feed_c(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        arrived = self._tally._window_start <= now_ns < self._tally._window_end
        try:
            while True:
                size = _plain_binary(parser, &n)
                if size:
                    payload = parser._buf + parser._start + size
                    parser._start += size + n
                    opcode = WS_BINARY
                else:
                    opcode = parser.next_c()
                    if opcode < 0:
                        break
                    payload = parser.payload
                    n = parser.payload_len
                if opcode == WS_BINARY and self._account(payload, n, now_ns, arrived):
                    received += 1
                elif opcode == WS_CLOSE:
                    self._events.append((
                        WS_CLOSE,
                        None if parser.close_code < 0 else parser.close_code,
                        (<const char*>payload)[:n].decode("utf-8"),
                    ))
                else:
                    self._events.append((opcode, (<const char*>payload)[:n]))
        except ProtocolError as exc:
            self._error = exc
        if received and now_ns >= self._tally._window_end:
            self._tally.received_after_window += received
        if received and self.lockstep is not None:
            self.lockstep._received(received)
        return received

    def next_event(self):
        """Returns the next event that was not a delivery, or None when there is none.

        The events are FrameParser's: ``(OP_TEXT, bytes)``, ``(OP_PING, bytes)``,
        ``(OP_PONG, bytes)``, ``(OP_CLOSE, code or None, reason)``, and ``(OP_BINARY, bytes)``
        for a binary message that is not a delivery. Raises the ProtocolError that ended the
        stream, carrying the close code, after the events before it; then returns None.
        """
        cdef object error
        if self._events:
            return self._events.pop(0)
        if self._error is not None:
            error = self._error
            self._error = None
            raise error
        return None

    cdef bint _account(self, const unsigned char* p, Py_ssize_t n, long long now,
                       bint arrived_in_window) except -1:
        """Counts the relayed message p[:n] if it is a delivery; False if it is not one."""
        cdef DeliveryTally tally = self._tally
        cdef unsigned long long sender, seq, wanted
        cdef long long sent_at
        if n < _RELAYED_HEAD:
            return False
        sender = _load_be32(p)
        if sender >= _MAX_SENDERS:
            return False
        if sender >= <unsigned long long>self._senders:
            self._grow(<Py_ssize_t>sender)
        sent_at = <long long>(_load_be32(p + 4) << 32 | _load_be32(p + 8))
        seq = _load_be32(p + 12)
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
            # The window and now_ns are never negative, so the difference fits.
            _record(&tally._latency, now - sent_at)
            tally.delivered += 1
        return True

    cdef int _grow(self, Py_ssize_t sender) except -1:
        """Makes room for sender's expected sequence number; new senders expect 0."""
        cdef Py_ssize_t capacity = max(_FIRST_SENDERS, 2 * self._senders, sender + 1)
        cdef unsigned long long* grown
        capacity = min(capacity, _MAX_SENDERS)
        grown = <unsigned long long*>realloc(self._expect, capacity * sizeof(unsigned long long))
        if grown == NULL:
            raise MemoryError()
        memset(grown + self._senders, 0, (capacity - self._senders) * sizeof(unsigned long long))
        self._expect = grown
        self._senders = capacity
        return 0
