# Declarations of the compiled engine's extension types (see _speedups.pyx).

# --- frame codec ---
# Implemented in _frames.pxi; its Python-level API is the same as pugfast/engine/_frames.py's.

cdef enum:
    # RFC 6455 opcodes as C constants; the module's OP_* names are the same values for Python.
    WS_CONT = 0
    WS_TEXT = 1
    WS_BINARY = 2
    WS_CLOSE = 8
    WS_PING = 9
    WS_PONG = 10

cdef struct Utf8State:
    # Continuation bytes still owed by the code point in progress (0 between code points), and
    # the range the next one must fall in: RFC 3629 narrows it after E0, ED, F0 and F4.
    int need
    unsigned char lo
    unsigned char hi

cdef class FrameParser:
    # The event next_c returned last: see next_c in _frames.pxi.
    cdef const unsigned char* payload
    cdef Py_ssize_t payload_len
    cdef int close_code

    # Received bytes: _buf[_start:_end] is not yet consumed; _buf_cap bytes are allocated.
    cdef unsigned char* _buf
    cdef Py_ssize_t _buf_cap
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    # The fragmented message in progress (_frag_opcode is 0 when there is none).
    cdef unsigned char* _frag
    cdef Py_ssize_t _frag_cap
    cdef Py_ssize_t _frag_len
    cdef int _frag_opcode
    cdef Utf8State _utf8
    # The header _read_header checked last.
    cdef bint _fin
    cdef bint _masked
    cdef int _opcode
    cdef Py_ssize_t _length

    cdef Py_ssize_t _max_message_bytes
    cdef bint _require_mask
    cdef bint _finished

    cdef int feed_c(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int next_c(self) except -2
    cdef Py_ssize_t _read_header(self, const unsigned char* p, Py_ssize_t available) except -1
    cdef int _control(self, const unsigned char* data, Py_ssize_t n) except -2
    cdef int _add_fragment(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _resize(self, Py_ssize_t capacity) except -1
    cdef int _trim(self) except -1
    cdef int _fail(self, int code, str reason) except -1
    cdef void _release(self) noexcept


# --- connection layer and fan-out ---
# Implemented in _fanout.pxi; its Python-level API is the same as pugfast/engine/_fanout.py's.

cdef class Connection
cdef class Group


cdef class Flusher:
    cdef object _call_soon
    cdef object _flush_callback
    cdef list _dirty
    cdef bint _scheduled
    # Deferred frames (Group.broadcast_deferred) wait up to _deferral seconds for company.
    cdef object _call_later
    cdef object _deferred_callback
    cdef list _deferred
    cdef bint _deferred_scheduled
    cdef double _deferral
    # Where a relayed frame is built once before it is copied to each recipient.
    cdef unsigned char* _scratch
    cdef Py_ssize_t _scratch_cap
    cdef public Py_ssize_t frames
    cdef public Py_ssize_t writes
    cdef public Py_ssize_t messages
    cdef public Py_ssize_t message_bytes
    cdef public Py_ssize_t deliveries
    cdef public Py_ssize_t slow_consumers

    cdef int _mark(self, Connection conn) except -1
    cdef int _mark_deferred(self, Connection conn) except -1


cdef class Group:
    cdef public list members


cdef class Connection:
    cdef public object transport
    cdef public object session
    cdef public object door
    cdef public Group group
    cdef public unsigned int member_id
    cdef public bint closing
    cdef public double opened_at
    cdef public double last_activity
    cdef public int close_code

    cdef Flusher _flusher
    cdef object _clock
    cdef FrameParser _parser
    # Pending output: frames queued since the last flush.
    cdef unsigned char* _out
    cdef Py_ssize_t _out_len
    cdef Py_ssize_t _out_cap
    cdef Py_ssize_t _frames
    cdef Py_ssize_t _backlog
    cdef Py_ssize_t _max_buffered
    cdef bint _dirty
    # Whether the connection waits in the flusher's deferred list.
    cdef bint _deferred
    # Whether a relayed message was queued since the last flush (see _write_pending).
    cdef bint _relayed
    cdef bint _notified
    cdef bint _aborted
    cdef bint _peer_closed
    cdef double _rate
    cdef double _burst
    cdef double _tokens
    cdef double _last_notice

    cdef int _feed(self, data) except -1
    cdef bint _take_token(self, double now) except -1
    cdef int _on_binary(self, const unsigned char* payload, Py_ssize_t n, double now) except -1
    cdef int _on_text(self, bytes payload, double now) except -1
    cdef int _append(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _take(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _queue(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _queue_deferred(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _queue_bytes(self, bytes frame) except -1
    cdef int _write_early(self) except -1
    cdef int _write_pending(self) except -1
    cdef int _drop_slow_consumer(self) except -1
    cdef int _flush(self) except -1
    cdef int _end_output(self) except -1
    cdef int _notify_closed(self) except -1


# --- the load generator's hot paths ---
# Implemented in _sink.pxi; its Python-level API is the same as pugfast/engine/_sink.py's.

cdef enum:
    # Histogram buckets: HdrHistogram's layout for two significant digits (buckets.py's SUB_BITS
    # = 7): (63 - 7) * 128 + 256.
    SINK_SUB_BITS = 7
    SINK_BUCKETS = 7424


# Values not yet drained: counts per bucket, and their count, sum, minimum and maximum.
cdef struct Recorder:
    long long counts[SINK_BUCKETS]
    long long count
    long long total
    long long min
    long long max


cdef class MessageSource:
    cdef readonly unsigned long long seq
    # One message: a masked binary frame whose payload is all zeros before masking.
    cdef bytes _frame
    cdef Py_ssize_t _head_at

    cdef bytes _frames(self, Py_ssize_t k, long long sent_at)


cdef class DeliveryTally:
    cdef readonly long long sent_total
    cdef readonly long long sent_window
    cdef readonly long long expected
    cdef readonly long long received_total
    cdef readonly long long received_in_window
    cdef readonly long long received_after_window
    cdef readonly long long delivered
    cdef readonly long long gaps
    cdef readonly long long out_of_order
    cdef long long _window_start
    cdef long long _window_end
    # The latencies of deliveries, and the open loop's lags, not yet drained.
    cdef Recorder _latency
    cdef Recorder _lag

    cdef void _sent(self, long long messages, long long deliveries, long long now) noexcept


cdef class OpenLoopSender:
    cdef readonly Py_ssize_t cursor
    cdef readonly long long sent
    cdef DeliveryTally _tally
    cdef list _sources
    cdef list _writes
    cdef list _deliveries
    cdef object _clock


cdef class Lockstep:
    cdef readonly long long outstanding
    cdef readonly long long rounds
    cdef readonly bint running
    cdef DeliveryTally _tally
    cdef MessageSource _source
    cdef Py_ssize_t _burst
    cdef list _writes
    cdef object _clock
    # What one round sends: messages, and their deliveries in all.
    cdef long long _messages
    cdef long long _deliveries

    cdef int _received(self, Py_ssize_t n) except -1
    cdef int _round(self, long long now) except -1


cdef class DeliverySink:
    cdef public Lockstep lockstep
    # The member it reads for, told of everything that is not a delivery.
    cdef public object protocol
    cdef FrameParser _parser
    cdef DeliveryTally _tally
    # The events that were not deliveries, and the error that ended the stream, not yet taken.
    cdef list _events
    cdef object _error
    # The sequence number expected next from each sender, indexed by member id.
    cdef unsigned long long* _expect
    cdef Py_ssize_t _senders

    cdef Py_ssize_t _feed(self, data, long long now_ns) except -1
    cdef bint _account(self, const unsigned char* p, Py_ssize_t n, long long now,
                       bint arrived_in_window) except -1
    cdef int _grow(self, Py_ssize_t sender) except -1
