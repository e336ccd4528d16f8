# The WebSocket frame codec (RFC 6455, docs/protocol.md §6.9) in C: the compiled twin of
# pugfast/engine/_frames.py, with the same names, events, errors and error texts. Included by
# _speedups.pyx; FrameParser's fields and cdef methods are declared in _speedups.pxd.
#
# A frame header is checked rule by rule as soon as the bytes that prove each rule are present,
# in the order of docs/protocol.md §6.9, so that where the input is cut never changes the outcome:
#   byte 0: reserved bits, opcode, fragmented control frame;
#   byte 1: control frame length, mask bit, continuation or data frame against the message state;
#   the extended length: its top bit, then the message size limit, before any payload arrives.
# The header is parsed afresh from the buffer until its frame is complete, so no parse state
# survives between calls but the fragmented message in progress.

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

from pugfast.errors import ProtocolError

OP_CONT = WS_CONT
OP_TEXT = WS_TEXT
OP_BINARY = WS_BINARY
OP_CLOSE = WS_CLOSE
OP_PING = WS_PING
OP_PONG = WS_PONG

cdef enum:
    _MAX_CONTROL_PAYLOAD = 125
    _MAX_CLOSE_REASON = _MAX_CONTROL_PAYLOAD - 2
    # What an input buffer holding part of a frame keeps once a big read is consumed (a
    # drained one keeps nothing), so that thousands of quiet connections do not each hold a
    # socket read's worth of memory.
    _KEEP_BYTES = 4096


cdef inline bint _known_opcode(int opcode) noexcept nogil:
    return opcode <= WS_BINARY or WS_CLOSE <= opcode <= WS_PONG


cdef inline bint _close_code_allowed(int code) noexcept nogil:
    """Whether RFC 6455 §7.4 lets code travel in a close frame."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


cdef inline void _unmask(
    unsigned char* data, Py_ssize_t n, const unsigned char* mask
) noexcept nogil:
    """XORs data in place with the repeating 4-byte mask, 8 bytes at a time."""
    cdef unsigned char pattern[8]
    cdef uint64_t mask8, word
    cdef Py_ssize_t i = 0
    memcpy(pattern, mask, 4)
    memcpy(pattern + 4, mask, 4)
    memcpy(&mask8, pattern, 8)
    # memcpy loads and stores are safe at any alignment and compile to plain moves.
    while i + 8 <= n:
        memcpy(&word, data + i, 8)
        word ^= mask8
        memcpy(data + i, &word, 8)
        i += 8
    while i < n:
        data[i] ^= mask[i & 3]
        i += 1


cdef inline bint _utf8_advance(
    Utf8State* state, const unsigned char* s, Py_ssize_t n
) noexcept nogil:
    """Runs the strict UTF-8 validator (RFC 3629) over s, carrying state across calls.

    Returns False at the first byte no valid text can hold: overlongs, surrogates and code
    points above U+10FFFF are rejected at the byte that proves them.
    """
    cdef int need = state.need
    cdef unsigned char lo = state.lo, hi = state.hi, c
    cdef uint64_t word
    cdef Py_ssize_t i = 0
    while i < n:
        if need == 0:
            # Between code points: skip ASCII 8 bytes at a time.
            while i + 8 <= n:
                memcpy(&word, s + i, 8)
                if word & 0x8080808080808080ULL:
                    break
                i += 8
            if i == n:
                break
            c = s[i]
            i += 1
            lo = 0x80
            hi = 0xBF
            if c < 0x80:
                continue
            elif 0xC2 <= c <= 0xDF:
                need = 1
            elif 0xE0 <= c <= 0xEF:
                need = 2
                if c == 0xE0:
                    lo = 0xA0  # shorter forms are overlong
                elif c == 0xED:
                    hi = 0x9F  # ED A0..BF would encode a UTF-16 surrogate
            elif 0xF0 <= c <= 0xF4:
                need = 3
                if c == 0xF0:
                    lo = 0x90  # shorter forms are overlong
                elif c == 0xF4:
                    hi = 0x8F  # beyond would exceed U+10FFFF
            else:
                return False
        else:
            c = s[i]
            i += 1
            if c < lo or c > hi:
                return False
            need -= 1
            lo = 0x80
            hi = 0xBF
    state.need = need
    state.lo = lo
    state.hi = hi
    return True


cdef inline bint _utf8_valid(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Utf8State state
    state.need = 0
    return _utf8_advance(&state, s, n) and state.need == 0


cdef inline Py_ssize_t _header_size(Py_ssize_t n, bint masked) noexcept nogil:
    return (2 if n < 126 else 4 if n <= 0xFFFF else 10) + (4 if masked else 0)


cdef inline Py_ssize_t _write_header(
    unsigned char* out, int opcode, Py_ssize_t n, bint masked
) noexcept nogil:
    """Writes a FIN frame's header up to its mask key; returns how many bytes it took."""
    cdef unsigned char mask_bit = 0x80 if masked else 0
    cdef int i
    out[0] = 0x80 | opcode
    if n < 126:
        out[1] = mask_bit | <unsigned char>n
        return 2
    if n <= 0xFFFF:
        out[1] = mask_bit | 126
        out[2] = <unsigned char>(n >> 8)
        out[3] = <unsigned char>n
        return 4
    out[1] = mask_bit | 127
    for i in range(8):
        out[2 + i] = <unsigned char>(<uint64_t>n >> (56 - 8 * i))
    return 10


cdef bytes _frame(
    int opcode, const unsigned char* payload, Py_ssize_t n, const unsigned char* mask
):
    """Builds one FIN frame; masked when mask is not NULL."""
    cdef bint masked = mask != NULL
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, _header_size(n, masked) + n)
    cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(frame)
    out += _write_header(out, opcode, n, masked)
    if masked:
        memcpy(out, mask, 4)
        out += 4
    if n:
        memcpy(out, payload, n)
    if masked:
        _unmask(out, n, mask)
    return frame


cdef class FrameParser:
    """Turns the bytes a WebSocket peer sends into events, enforcing docs/protocol.md §6.9.

    ``require_mask=True`` parses a client's frames (a server's parser: every frame must be
    masked); ``require_mask=False`` parses a server's frames (every frame must be unmasked).
    Data messages larger than ``max_message_bytes``, counted across fragments, are refused.
    """

    def __init__(self, Py_ssize_t max_message_bytes, *, bint require_mask=True):
        """Raises ValueError if ``max_message_bytes`` is negative."""
        if max_message_bytes < 0:
            raise ValueError("max_message_bytes must not be negative")
        self._max_message_bytes = max_message_bytes
        self._require_mask = require_mask
        self.close_code = -1

    def __dealloc__(self):
        self._release()

    @property
    def finished(self):
        """True once a close event was returned or a ProtocolError raised."""
        return self._finished

    @property
    def buffered(self):
        """Bytes received and held for events not yet returned."""
        if self._finished:
            return 0
        return self._end - self._start + self._frag_len

    def feed(self, data):
        """Appends received bytes (copied); ignored once the parser is finished.

        Raises TypeError if ``data`` is not a bytes-like object.
        """
        cdef Py_buffer view
        if self._finished:
            self._release()
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.feed_c(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def next_event(self):
        """Returns the next complete event, or None until more bytes arrive.

        Events: ``(OP_TEXT, bytes)`` (valid UTF-8), ``(OP_BINARY, bytes)``,
        ``(OP_PING, bytes)``, ``(OP_PONG, bytes)`` and ``(OP_CLOSE, code or None, reason)``.
        Raises ProtocolError, carrying the close code, at the first rule the peer broke.
        After a close event or an error the parser is finished and returns None.
        """
        cdef int opcode = self.next_c()
        if opcode < 0:
            return None
        if opcode == WS_CLOSE:
            return (
                WS_CLOSE,
                None if self.close_code < 0 else self.close_code,
                (<const char*>self.payload)[:self.payload_len].decode("utf-8"),
            )
        return opcode, (<const char*>self.payload)[:self.payload_len]

    cdef int feed_c(self, const unsigned char* data, Py_ssize_t n) except -1:
        """Appends n received bytes (copied); ignored once the parser is finished."""
        cdef Py_ssize_t live = self._end - self._start
        if self._finished:
            self._release()
            return 0
        if n == 0:
            return 0
        if self._buf_cap - self._end < n:
            # Compact first and grow only if that is not enough; doubling keeps feeding byte
            # by byte linear.
            self._resize(
                self._buf_cap if live + n <= self._buf_cap else max(live + n, 2 * self._buf_cap)
            )
        memcpy(self._buf + self._end, data, n)
        self._end += n
        return 0

    cdef int next_c(self) except -2:
        """Parses the next event: returns its opcode, or -1 until more bytes arrive.

        For TEXT, BINARY, PING and PONG, ``payload``/``payload_len`` hold the unmasked
        payload, never NULL even when empty; for CLOSE, ``close_code`` (-1 when absent) and
        ``payload``/``payload_len`` the validated reason. The payload lies in the parser's own
        buffers and stays valid until the next feed_c or next_c call. Raises ProtocolError at
        the first rule the peer broke. -1 once the parser is finished.
        """
        cdef Py_ssize_t available, header_len
        cdef unsigned char* data
        cdef int opcode
        if self._finished:
            self._release()
            return -1
        if self._frag_len == 0 and self._frag_cap > _KEEP_BYTES:
            # A big fragmented message was delivered by the last call; keep nothing for it.
            free(self._frag)
            self._frag = NULL
            self._frag_cap = 0
        while True:
            available = self._end - self._start
            header_len = self._read_header(self._buf + self._start, available)
            if header_len == 0 or available - header_len < self._length:
                self._trim()
                return -1
            data = self._buf + self._start + header_len
            if self._masked:
                _unmask(data, self._length, data - 4)
            self._start += header_len + self._length
            if self._opcode >= WS_CLOSE:
                return self._control(data, self._length)
            if self._opcode != WS_CONT and self._fin:
                # A whole message in one frame, the common case: it stays where it is.
                if self._opcode == WS_TEXT and not _utf8_valid(data, self._length):
                    self._fail(1007, "invalid UTF-8")
                self.payload = data
                self.payload_len = self._length
                return self._opcode
            self._add_fragment(data, self._length)
            if self._fin:
                # _frag is still NULL if every fragment so far was empty.
                self.payload = self._frag if self._frag != NULL else data
                self.payload_len = self._frag_len
                self._frag_len = 0
                opcode = self._frag_opcode
                self._frag_opcode = WS_CONT
                return opcode

    cdef Py_ssize_t _read_header(self, const unsigned char* p, Py_ssize_t available) except -1:
        """Checks the header at p; returns its size once complete, 0 while bytes are missing.

        Sets _fin, _opcode, _masked and _length. Raises ProtocolError as soon as the bytes
        present prove a broken rule.
        """
        cdef uint64_t length
        cdef Py_ssize_t size = 2
        cdef int i
        if available < 1:
            return 0
        self._fin = (p[0] & 0x80) != 0
        self._opcode = p[0] & 0x0F
        if p[0] & 0x70:
            self._fail(1002, "reserved bits set")
        if not _known_opcode(self._opcode):
            self._fail(1002, "unknown opcode")
        if self._opcode >= WS_CLOSE and not self._fin:
            self._fail(1002, "fragmented control frame")
        if available < 2:
            return 0
        self._masked = (p[1] & 0x80) != 0
        length = p[1] & 0x7F
        if self._opcode >= WS_CLOSE and length > _MAX_CONTROL_PAYLOAD:
            self._fail(1002, "control frame too long")
        if self._masked != self._require_mask:
            self._fail(1002, "unmasked frame" if self._require_mask else "masked frame")
        if self._opcode == WS_CONT and self._frag_opcode == WS_CONT:
            self._fail(1002, "continuation without a start")
        if self._opcode in (WS_TEXT, WS_BINARY) and self._frag_opcode != WS_CONT:
            self._fail(1002, "data frame inside a fragmented message")
        if length == 126:
            if available < 4:
                return 0
            length = p[2] << 8 | p[3]
            size = 4
        elif length == 127:
            if available < 10:
                return 0
            length = 0
            for i in range(2, 10):
                length = length << 8 | p[i]
            size = 10
            if length >> 63:
                self._fail(1002, "length with the top bit set")
        # The fragments so far never exceed the limit, so the subtraction cannot go negative.
        if (self._opcode < WS_CLOSE
                and length > <uint64_t>(self._max_message_bytes - self._frag_len)):
            self._fail(1009, "message too big")
        if self._masked:
            size += 4
            if available < size:
                return 0
        self._length = <Py_ssize_t>length
        return size

    cdef int _control(self, const unsigned char* data, Py_ssize_t n) except -2:
        cdef int code
        self.payload = data
        self.payload_len = n
        if self._opcode != WS_CLOSE:
            return self._opcode
        if n == 1:
            self._fail(1002, "close payload of 1 byte")
        self.close_code = -1
        if n:
            code = data[0] << 8 | data[1]
            if not _close_code_allowed(code):
                self._fail(1002, "invalid close code")
            if not _utf8_valid(data + 2, n - 2):
                self._fail(1007, "invalid UTF-8 in close reason")
            self.close_code = code
            self.payload = data + 2
            self.payload_len = n - 2
        # The buffers are freed by the next call: the reason lies in one of them.
        self._finished = True
        return WS_CLOSE

    cdef int _add_fragment(self, const unsigned char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t need = self._frag_len + n
        cdef Py_ssize_t capacity
        cdef unsigned char* grown
        if self._opcode != WS_CONT:
            self._frag_opcode = self._opcode
        if self._frag_opcode == WS_TEXT and (
            not _utf8_advance(&self._utf8, data, n) or (self._fin and self._utf8.need)
        ):
            self._fail(1007, "invalid UTF-8")
        if need > self._frag_cap:
            # Doubling keeps appends linear; the size check in _read_header bounds need.
            capacity = min(max(need, 2 * self._frag_cap), self._max_message_bytes)
            grown = <unsigned char*>realloc(self._frag, capacity)
            if grown == NULL:
                raise MemoryError()
            self._frag = grown
            self._frag_cap = capacity
        if n:
            memcpy(self._frag + self._frag_len, data, n)
        self._frag_len = need
        return 0

    cdef int _resize(self, Py_ssize_t capacity) except -1:
        """Moves the unconsumed bytes to the front, then makes the buffer capacity bytes."""
        cdef Py_ssize_t live = self._end - self._start
        cdef unsigned char* resized
        if self._start:
            memmove(self._buf, self._buf + self._start, live)
            self._start = 0
            self._end = live
        if capacity != self._buf_cap:
            resized = <unsigned char*>realloc(self._buf, capacity)
            if resized == NULL:
                raise MemoryError()
            self._buf = resized
            self._buf_cap = capacity
        return 0

    cdef int _trim(self) except -1:
        """Gives back the room a big read needed once the bytes it brought are consumed.

        A drained buffer is freed altogether: a quiet connection, the common case on a relay
        with many members, then holds no input buffer at all.
        """
        if self._end == self._start:
            free(self._buf)
            self._buf = NULL
            self._buf_cap = self._start = self._end = 0
        elif self._buf_cap > _KEEP_BYTES and self._end - self._start <= _KEEP_BYTES:
            self._resize(_KEEP_BYTES)
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        self._release()
        self._finished = True
        raise ProtocolError(code, reason)

    cdef void _release(self) noexcept:
        free(self._buf)
        self._buf = NULL
        self._buf_cap = self._start = self._end = 0
        free(self._frag)
        self._frag = NULL
        self._frag_cap = self._frag_len = 0


def apply_mask(data, mask):
    """Returns ``data`` XORed with the repeating 4-byte ``mask`` (RFC 6455 §5.3).

    Masking twice with the same mask gives ``data`` back. Raises ValueError if ``mask`` is not
    4 bytes long.
    """
    cdef Py_buffer source, key
    cdef bytes out
    PyObject_GetBuffer(mask, &key, PyBUF_SIMPLE)
    try:
        if key.len != 4:
            raise ValueError("mask must be 4 bytes")
        PyObject_GetBuffer(data, &source, PyBUF_SIMPLE)
        try:
            # A fresh object to write into: given the bytes, CPython may hand back a shared
            # one-byte bytes object.
            out = PyBytes_FromStringAndSize(NULL, source.len)
            if source.len:
                memcpy(PyBytes_AS_STRING(out), source.buf, source.len)
                _unmask(<unsigned char*>PyBytes_AS_STRING(out), source.len,
                        <const unsigned char*>key.buf)
        finally:
            PyBuffer_Release(&source)
        return out
    finally:
        PyBuffer_Release(&key)


def encode_frame(int opcode, payload, *, mask=None):
    """Returns one final (FIN) frame carrying ``payload``.

    Unmasked, as a server sends, unless a 4-byte ``mask`` is given, as a client sends.
    Raises ValueError for an unknown opcode, a control payload over 125 bytes, or a mask
    that is not 4 bytes long.
    """
    cdef Py_buffer data, key
    if not _known_opcode(opcode):
        raise ValueError(f"unknown opcode {opcode}")
    PyObject_GetBuffer(payload, &data, PyBUF_SIMPLE)
    try:
        if opcode >= WS_CLOSE and data.len > _MAX_CONTROL_PAYLOAD:
            raise ValueError("control frame payload over 125 bytes")
        if mask is None:
            return _frame(opcode, <const unsigned char*>data.buf, data.len, NULL)
        PyObject_GetBuffer(mask, &key, PyBUF_SIMPLE)
        try:
            if key.len != 4:
                raise ValueError("mask must be 4 bytes")
            return _frame(
                opcode, <const unsigned char*>data.buf, data.len, <const unsigned char*>key.buf
            )
        finally:
            PyBuffer_Release(&key)
    finally:
        PyBuffer_Release(&data)


def encode_close(int code, str reason=""):
    """Returns an unmasked close frame with ``code`` and ``reason``.

    The reason is cut to the 123 bytes a close frame has room for, on a UTF-8 character
    boundary. Raises ValueError if RFC 6455 does not let ``code`` be sent, and
    UnicodeEncodeError if ``reason`` holds a lone surrogate.
    """
    cdef unsigned char payload[_MAX_CONTROL_PAYLOAD]
    cdef bytes text
    cdef const unsigned char* p
    cdef Py_ssize_t n
    if not _close_code_allowed(code):
        raise ValueError(f"close code {code} may not be sent")
    text = reason.encode("utf-8")
    p = text
    n = len(text)
    if n > _MAX_CLOSE_REASON:
        n = _MAX_CLOSE_REASON
        # Back off to the start of the character the cut would split.
        while p[n] & 0xC0 == 0x80:
            n -= 1
    payload[0] = <unsigned char>(code >> 8)
    payload[1] = <unsigned char>code
    memcpy(payload + 2, p, n)
    return _frame(WS_CLOSE, payload, n + 2, NULL)
