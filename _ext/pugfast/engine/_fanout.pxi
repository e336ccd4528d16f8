# The connection layer and broadcast fan-out in C: the compiled twin of
# pugfast/engine/_fanout.py, with the same names and behaviour (read that module's docstring
# for the design). Included by _speedups.pyx after _frames.pxi; the types are declared in
# _speedups.pxd.
#
# The relay path of a binary message stays in C from the socket's bytes to every recipient's
# output buffer: the parser unmasks the payload in its own buffer, the frame (header, sender
# id, payload) is built once in the flusher's scratch buffer, and a memcpy puts it in each
# recipient's pending output. Python runs once per chunk read and once per write.

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE

cdef tuple _MORE = (False, b"")
cdef tuple _DONE = (True, b"")

RATE_LIMITED = b'{"type":"error","code":"rate_limited"}'
cdef bytes _RATE_LIMITED_FRAME = encode_frame(OP_TEXT, RATE_LIMITED)
cdef bytes _PING_FRAME = encode_frame(OP_PING, b"")
RATE_NOTICE_INTERVAL = 1.0
cdef double _RATE_NOTICE_INTERVAL = RATE_NOTICE_INTERVAL

cdef enum:
    CLOSE_BAD_MESSAGE = 4400
    CLOSE_SLOW_CONSUMER = 4503
    # A pending-output buffer grown past this by a burst is given back after its flush. It is
    # larger than a burst of big messages to a room of ten (3 x 9 x 4 KiB), so a busy member
    # does not free and regrow its buffer at every flush.
    _KEEP_OUTPUT = 262144
    # The most one write offers the transport: see WRITE_CHUNK in pugfast/engine/_fanout.py.
    _WRITE_CHUNK = 262144

WRITE_CHUNK = _WRITE_CHUNK


cdef int _grow(unsigned char** buf, Py_ssize_t* cap, Py_ssize_t need) except -1:
    """Make *buf hold at least need bytes, doubling, so appends are amortised O(1)."""
    cdef Py_ssize_t new_cap = cap[0] if cap[0] else 1024
    cdef unsigned char* grown
    while new_cap < need:
        new_cap *= 2
    grown = <unsigned char*>realloc(buf[0], new_cap)
    if grown == NULL:
        raise MemoryError()
    buf[0] = grown
    cap[0] = new_cap
    return 0


cdef class Flusher:
    """Writes each connection's queued frames once per event-loop iteration, and deferred
    frames with the connection's next write or after ``deferral`` seconds.

    It also keeps the engine's counters, aggregates only: ``frames`` and ``writes`` count what
    went out (so coalescing can be observed), ``messages``, ``message_bytes`` and
    ``deliveries`` the binary messages relayed, and ``slow_consumers`` the members cut off.
    """

    def __cinit__(self):
        self._dirty = []
        self._deferred = []
        self._scratch = NULL
        self._scratch_cap = 0

    def __init__(self, call_soon, call_later=None, double deferral=0.0):
        self._call_soon = call_soon
        self._flush_callback = self.flush
        self._call_later = call_later
        self._deferral = deferral
        self._deferred_callback = self.flush_deferred

    def __dealloc__(self):
        free(self._scratch)

    cdef inline int _mark(self, Connection conn) except -1:
        conn._dirty = True
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._call_soon(self._flush_callback)
        return 0

    cdef int _mark_deferred(self, Connection conn) except -1:
        if self._call_later is None:
            return self._mark(conn)
        conn._deferred = True
        self._deferred.append(conn)
        if not self._deferred_scheduled:
            self._deferred_scheduled = True
            self._call_later(self._deferral, self._deferred_callback)
        return 0

    def flush(self):
        """Write out everything queued since the last flush."""
        cdef list dirty = self._dirty
        cdef Connection conn
        self._scheduled = False
        self._dirty = []
        for conn in dirty:
            conn._dirty = False
            conn._flush()

    def flush_deferred(self):
        """Write out deferred frames that no other write has taken along since."""
        cdef list deferred = self._deferred
        cdef Connection conn
        self._deferred_scheduled = False
        self._deferred = []
        for conn in deferred:
            conn._deferred = False
            if not conn._dirty:
                conn._flush()


cdef class Group:
    """The connections a room broadcasts to. Membership is the session's to change."""

    def __cinit__(self):
        self.members = []

    def __len__(self):
        return len(self.members)

    def add(self, Connection conn):
        self.members.append(conn)
        conn.group = self

    def remove(self, Connection conn):
        if conn.group is self:
            self.members.remove(conn)
            conn.group = None

    def clear(self):
        cdef Connection conn
        for conn in self.members:
            conn.group = None
        self.members.clear()

    def broadcast(self, bytes frame):
        """Queue one prebuilt frame to every member."""
        cdef Connection peer
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(frame)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(frame)
        for peer in self.members:
            peer._queue(data, n)

    def broadcast_deferred(self, bytes frame):
        """Queue one prebuilt frame to every member, to leave with that member's next write
        or within the flusher's ``deferral``, whichever comes first."""
        cdef Connection peer
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(frame)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(frame)
        for peer in self.members:
            peer._queue_deferred(data, n)


cdef class Connection:
    """One WebSocket connection after the upgrade; see pugfast/engine/_fanout.py."""

    def __cinit__(self):
        self._out = NULL
        self._out_len = 0
        self._out_cap = 0

    def __init__(
        self,
        transport,
        session,
        Flusher flusher,
        *,
        Py_ssize_t max_message_bytes,
        Py_ssize_t max_buffered_bytes,
        double rate,
        Py_ssize_t burst,
        clock,
    ):
        self.transport = transport
        self.session = session
        self.door = None
        self.member_id = 0
        self.group = None
        self.closing = False
        self.opened_at = self.last_activity = clock()
        self.close_code = 0
        self._flusher = flusher
        self._clock = clock
        self._parser = FrameParser(max_message_bytes)
        self._frames = 0
        self._backlog = 0
        self._max_buffered = max_buffered_bytes
        self._rate = rate
        self._burst = <double>burst
        self._tokens = <double>burst
        self._last_notice = -_RATE_NOTICE_INTERVAL

    def __dealloc__(self):
        free(self._out)

    # -- the transport's protocol (see pugfast/engine/_fanout.py) --------------------------

    def connection_made(self, transport):
        if self.door is not None:
            self.transport = transport
            self.door.connection_made(transport)

    def data_received(self, data):
        if self.door is not None:
            self.door.head_received(self, data)
            return
        self._feed(data)

    def eof_received(self):
        if self.door is not None:
            return self.door.eof_received()
        return None

    def connection_lost(self, exc):
        if self.door is not None:
            self.door.connection_lost(exc)
            return
        self.feed_eof()

    def begin(self, session):
        """The front door answered the upgrade: from now on this is a WebSocket of
        ``session``, its join timeout counted from here."""
        self.door = None
        self.session = session
        self.opened_at = self.last_activity = self._clock()

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    # -- aiohttp's payload-parser interface ------------------------------------------------

    def feed_data(self, data):
        """Take bytes from the socket; relay, answer or hand on every complete message."""
        self._feed(data)
        return _DONE if self.closing else _MORE

    cdef int _feed(self, data) except -1:
        cdef FrameParser parser = self._parser
        cdef double now
        cdef int opcode
        if self.closing:
            return 0
        if not PyBytes_CheckExact(data):
            data = bytes(data)
        now = self._clock()
        if self._rate:
            self._tokens = min(self._burst, self._tokens + (now - self.last_activity) * self._rate)
        self.last_activity = now
        parser.feed_c(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        try:
            while not self.closing:
                opcode = parser.next_c()
                if opcode == -1:
                    break
                if opcode == WS_BINARY:
                    self._on_binary(parser.payload, parser.payload_len, now)
                elif opcode == WS_TEXT:
                    self._on_text(
                        PyBytes_FromStringAndSize(<const char*>parser.payload, parser.payload_len), now
                    )
                elif opcode == WS_PING:
                    self._queue_bytes(_frame(WS_PONG, parser.payload, parser.payload_len, NULL))
                elif opcode == WS_CLOSE:
                    # Echo the peer's code; an empty close is answered with 1000
                    # (docs/protocol.md §6.10). The close handshake is then complete, so the
                    # TCP connection can go at once.
                    self._peer_closed = True
                    self.close(parser.close_code if parser.close_code != -1 else 1000)
                # An unsolicited pong is ignored; its arrival already counted as activity.
        except ProtocolError as exc:
            self.close(exc.code, exc.reason)
        return 0

    def feed_eof(self):
        """The transport is gone (its connection_lost)."""
        self.closing = True
        self._aborted = True
        self._out_len = 0
        self._notify_closed()
        self.session.on_lost(self)

    # -- messages ------------------------------------------------------------------------

    cdef bint _take_token(self, double now) except -1:
        if not self._rate:
            return True
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if now - self._last_notice >= _RATE_NOTICE_INTERVAL:
            self._last_notice = now
            self._queue_bytes(_RATE_LIMITED_FRAME)
        return False

    cdef int _on_binary(self, const unsigned char* payload, Py_ssize_t n, double now) except -1:
        cdef Group group
        cdef list members
        cdef Connection peer
        cdef Flusher flusher = self._flusher
        cdef Py_ssize_t size, head, i
        cdef unsigned char* frame
        if not self.member_id:
            self.close(CLOSE_BAD_MESSAGE, "binary before join")
            return 0
        if n == 0 or not self._take_token(now):
            return 0
        group = self.group
        if group is None:
            return 0
        # The frame is built once, in the flusher's scratch buffer, and copied to each peer.
        size = _header_size(n + 4, False) + 4 + n
        if flusher._scratch_cap < size:
            _grow(&flusher._scratch, &flusher._scratch_cap, size)
        frame = flusher._scratch
        head = _write_header(frame, WS_BINARY, n + 4, False)
        frame[head] = <unsigned char>(self.member_id >> 24)
        frame[head + 1] = <unsigned char>(self.member_id >> 16)
        frame[head + 2] = <unsigned char>(self.member_id >> 8)
        frame[head + 3] = <unsigned char>self.member_id
        memcpy(frame + head + 4, payload, n)
        members = group.members
        i = 0
        while i < PyList_GET_SIZE(members):
            peer = <Connection>PyList_GET_ITEM(members, i)
            if peer is not self:
                peer._relayed = True
                peer._queue(frame, size)
            i += 1
        flusher.messages += 1
        flusher.message_bytes += n
        flusher.deliveries += i - 1
        return 0

    cdef int _on_text(self, bytes payload, double now) except -1:
        if self.member_id and not self._take_token(now):
            return 0
        self.session.on_text(self, payload)
        return 0

    # -- output --------------------------------------------------------------------------

    cdef int _append(self, const unsigned char* data, Py_ssize_t n) except -1:
        if self._out_cap < self._out_len + n:
            _grow(&self._out, &self._out_cap, self._out_len + n)
        memcpy(self._out + self._out_len, data, n)
        self._out_len += n
        self._frames += 1
        return 0

    cdef inline int _take(self, const unsigned char* data, Py_ssize_t n) except -1:
        # Put a frame in the pending buffer; 1 when it waits there for a flush, 0 when it was
        # dropped (closing) or written already (past the bound: see _write_early). The twin
        # does this in _queue, whose ``deferred`` flag stands for _queue_deferred here.
        if self.closing:
            return 0
        self._append(data, n)
        if self._out_len + self._backlog > self._max_buffered:
            # The cached backlog only ever overstates what the transport holds; ask it.
            self._backlog = self.transport.get_write_buffer_size()
            if self._out_len + self._backlog > self._max_buffered:
                self._write_early()
                return 0
        return 1

    cdef int _queue(self, const unsigned char* data, Py_ssize_t n) except -1:
        if self._take(data, n) and not self._dirty:
            self._flusher._mark(self)
        return 0

    cdef int _queue_deferred(self, const unsigned char* data, Py_ssize_t n) except -1:
        if self._take(data, n) and not self._dirty and not self._deferred:
            self._flusher._mark_deferred(self)
        return 0

    cdef int _write_early(self) except -1:
        # See _write_early in pugfast/engine/_fanout.py: past the bound within one iteration,
        # write now and judge by what the transport could not take.
        self._write_pending()
        if self._backlog > self._max_buffered:
            self._drop_slow_consumer()
        return 0

    cdef int _queue_bytes(self, bytes frame) except -1:
        return self._queue(<const unsigned char*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))

    def send_text(self, bytes payload):
        """Queue a text message (``payload`` is UTF-8 JSON)."""
        self._queue_bytes(_frame(WS_TEXT, <const unsigned char*>PyBytes_AS_STRING(payload),
                                 PyBytes_GET_SIZE(payload), NULL))

    def send_frame(self, bytes frame):
        """Queue a frame built by ``encode_frame``."""
        self._queue_bytes(frame)

    def ping(self):
        """Queue a ping; the reply (or any other frame) refreshes ``last_activity``."""
        self._queue_bytes(_PING_FRAME)

    def close(self, int code, str reason=""):
        """Send a close frame after what is already queued, then close the TCP connection."""
        cdef bytes frame
        if self.closing:
            return
        frame = encode_close(code, reason)
        self._append(<const unsigned char*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))
        self.close_code = code
        self.closing = True
        if not self._dirty:
            self._flusher._mark(self)

    cdef int _drop_slow_consumer(self) except -1:
        # Best effort (docs/protocol.md §6.6): the close frame goes out only if the socket takes it now, and
        # the connection is dropped either way, with nothing more buffered for it.
        self.closing = True
        self._aborted = True
        self.close_code = CLOSE_SLOW_CONSUMER
        self._flusher.slow_consumers += 1
        self._out_len = 0
        self.transport.write(encode_close(CLOSE_SLOW_CONSUMER, "slow consumer"))
        self.transport.abort()
        # The session hears of it from the flush, not from inside someone else's broadcast.
        if not self._dirty:
            self._flusher._mark(self)
        return 0

    cdef int _write_pending(self) except -1:
        # Write what is pending, and note what the transport still holds (``_backlog``).
        cdef Py_ssize_t n = self._out_len
        cdef Py_ssize_t start
        cdef object pending
        # Only members that receive relayed messages and keep up with them keep a buffer
        # between flushes: one that got notices alone (a welcome, a join, a ping) is probably
        # quiet, and one whose transport holds a backlog is slow, so they give it back. Since
        # a quiet member is pinged, every idle connection ends up holding none.
        cdef bint keep = self._out_cap <= _KEEP_OUTPUT and self._relayed
        if n <= _WRITE_CHUNK:
            pending = PyBytes_FromStringAndSize(<const char*>self._out, n)
        else:
            # In pieces, so that the transport holds the sent part of one piece at most.
            pending = [
                PyBytes_FromStringAndSize(<const char*>self._out + start, min(_WRITE_CHUNK, n - start))
                for start in range(0, n, _WRITE_CHUNK)
            ]
        self._out_len = 0
        self._relayed = False
        self._flusher.frames += self._frames
        self._flusher.writes += 1
        self._frames = 0
        if n <= _WRITE_CHUNK:
            self.transport.write(pending)
        else:
            for piece in pending:
                self.transport.write(piece)
        self._backlog = self.transport.get_write_buffer_size()
        if not keep or self._backlog:
            free(self._out)
            self._out = NULL
            self._out_cap = 0
        return 0

    cdef int _flush(self) except -1:
        if self._out_len and not self._aborted:
            self._write_pending()
            if self.closing:
                self._end_output()
            elif self._backlog > self._max_buffered:
                self._drop_slow_consumer()
        if self.closing:
            self._notify_closed()
        return 0

    cdef int _end_output(self) except -1:
        # See _end_output in pugfast/engine/_fanout.py: close at once after echoing the peer's
        # close, half-close and keep reading after a close of the relay's own.
        if self._peer_closed or not self.transport.can_write_eof():
            self.transport.close()
        else:
            self.transport.write_eof()
        return 0

    cdef int _notify_closed(self) except -1:
        if not self._notified:
            self._notified = True
            self.session.on_closed(self)
        return 0
