# The WebSocket opening handshake of a plain upgrade in C: the checks of pugfast/handshake.py's
# check_upgrade and the Sec-WebSocket-Accept value, so that answering an upgrade runs no Python
# and no OpenSSL call. Its twin is check_upgrade itself (pugfast/engine/_head.py calls it), and
# the tests hold the two to the same answer for any fields. Included by _speedups.pyx after
# _head.pxi, whose parse_upgrade_head calls _upgrade_accept.

from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint32_t
from libc.string cimport memcpy, memset

cdef bytes _GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
cdef const char* _B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

cdef enum:
    _KEY_LEN = 24  # 16 bytes in base64: 22 characters and "=="
    _ACCEPT_LEN = 28  # 20 bytes in base64


cdef inline uint32_t _rotl(uint32_t x, int n) noexcept nogil:
    return (x << n) | (x >> (32 - n))


cdef inline uint32_t _schedule(uint32_t* w, int i) noexcept nogil:
    # The message schedule in a ring of 16 words, made as the steps need it (an array of 80
    # made ahead stalls on its own stores).
    if i >= 16:
        w[i & 15] = _rotl(w[(i + 13) & 15] ^ w[(i + 8) & 15] ^ w[(i + 2) & 15] ^ w[i & 15], 1)
    return w[i & 15]


cdef void _sha1_block(uint32_t* h, const unsigned char* p) noexcept nogil:
    """One 64-byte block of SHA-1 (FIPS 180-4 §6.1.2) into the state h."""
    cdef uint32_t w[16]
    cdef uint32_t a, b, c, d, e, t
    cdef uint32_t k0 = 0x5A827999, k1 = 0x6ED9EBA1, k2 = 0x8F1BBCDC, k3 = 0xCA62C1D6
    cdef int i
    for i in range(16):
        w[i] = ((<uint32_t>p[4 * i] << 24) | (<uint32_t>p[4 * i + 1] << 16)
                | (<uint32_t>p[4 * i + 2] << 8) | <uint32_t>p[4 * i + 3])
    a = h[0]
    b = h[1]
    c = h[2]
    d = h[3]
    e = h[4]
    # Four rounds of twenty steps, each with its own function and constant.
    for i in range(20):
        t = _rotl(a, 5) + ((b & c) | (~b & d)) + e + k0 + _schedule(w, i)
        e = d
        d = c
        c = _rotl(b, 30)
        b = a
        a = t
    for i in range(20, 40):
        t = _rotl(a, 5) + (b ^ c ^ d) + e + k1 + _schedule(w, i)
        e = d
        d = c
        c = _rotl(b, 30)
        b = a
        a = t
    for i in range(40, 60):
        t = _rotl(a, 5) + ((b & c) | (b & d) | (c & d)) + e + k2 + _schedule(w, i)
        e = d
        d = c
        c = _rotl(b, 30)
        b = a
        a = t
    for i in range(60, 80):
        t = _rotl(a, 5) + (b ^ c ^ d) + e + k3 + _schedule(w, i)
        e = d
        d = c
        c = _rotl(b, 30)
        b = a
        a = t
    h[0] += a
    h[1] += b
    h[2] += c
    h[3] += d
    h[4] += e


cdef str _accept_of(const unsigned char* key):
    """Sec-WebSocket-Accept for a 24-byte key: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
    The key and the GUID are 60 bytes, so the padded message is exactly two blocks."""
    cdef unsigned char message[128]
    cdef unsigned char digest[21]
    cdef char text[_ACCEPT_LEN]
    cdef uint32_t h[5]
    cdef int i
    cdef uint32_t v
    memcpy(message, key, _KEY_LEN)
    memcpy(message + _KEY_LEN, PyBytes_AS_STRING(_GUID), 36)
    message[60] = 0x80
    memset(message + 61, 0, 128 - 61)
    # The message's length in bits, 480, big-endian in the last 8 bytes.
    message[126] = 480 >> 8
    message[127] = 480 & 0xFF
    h[0] = 0x67452301
    h[1] = 0xEFCDAB89
    h[2] = 0x98BADCFE
    h[3] = 0x10325476
    h[4] = 0xC3D2E1F0
    _sha1_block(h, message)
    _sha1_block(h, message + 64)
    for i in range(5):
        digest[4 * i] = h[i] >> 24
        digest[4 * i + 1] = (h[i] >> 16) & 0xFF
        digest[4 * i + 2] = (h[i] >> 8) & 0xFF
        digest[4 * i + 3] = h[i] & 0xFF
    digest[20] = 0
    # 20 bytes: six whole groups of three, then two bytes and one "=".
    for i in range(7):
        v = (<uint32_t>digest[3 * i] << 16) | (<uint32_t>digest[3 * i + 1] << 8) | digest[3 * i + 2]
        text[4 * i] = _B64[v >> 18]
        text[4 * i + 1] = _B64[(v >> 12) & 63]
        text[4 * i + 2] = _B64[(v >> 6) & 63]
        text[4 * i + 3] = _B64[v & 63]
    text[27] = b"="
    return PyUnicode_DecodeASCII(text, _ACCEPT_LEN, NULL)


cdef inline unsigned char _lower(unsigned char c):
    return c + 32 if 65 <= c <= 90 else c


cdef bint _is_space(unsigned char c):
    # What str.strip() removes from the values a head can hold (visible ASCII, space, tab).
    return c == 32 or c == 9


cdef inline bint _is_base64(unsigned char c):
    return (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 43 or c == 47


cdef const char* _field(dict fields, str name, Py_ssize_t* n) except? NULL:
    """The field's text (ASCII: parse_upgrade_head decoded it so), or NULL when absent."""
    value = fields.get(name)
    if value is None:
        return NULL
    return PyUnicode_AsUTF8AndSize(value, n)


cdef bint _has_token(const char* value, Py_ssize_t n, const char* token, Py_ssize_t token_len):
    """Whether the comma-separated list holds the lower-case token, in any case (as
    pugfast/handshake.py's _has_token)."""
    cdef Py_ssize_t start = 0, end, i, s, e
    while start <= n:
        end = start
        while end < n and value[end] != b",":
            end += 1
        s = start
        e = end
        while s < e and _is_space(value[s]):
            s += 1
        while e > s and _is_space(value[e - 1]):
            e -= 1
        if e - s == token_len:
            for i in range(token_len):
                if _lower(value[s + i]) != token[i]:
                    break
            else:
                return True
        start = end + 1
    return False


cdef object _upgrade_accept(dict fields):
    """Sec-WebSocket-Accept when the fields make a valid version-13 upgrade, else None: the
    checks of check_upgrade, which answers the refusals."""
    cdef const char* p
    cdef Py_ssize_t n, i
    p = _field(fields, "upgrade", &n)
    if p == NULL or not _has_token(p, n, b"websocket", 9):
        return None
    p = _field(fields, "connection", &n)
    if p == NULL or not _has_token(p, n, b"upgrade", 7):
        return None
    p = _field(fields, "sec-websocket-version", &n)
    if p == NULL or n != 2 or p[0] != b"1" or p[1] != b"3":
        return None
    p = _field(fields, "sec-websocket-key", &n)
    if p == NULL or n != _KEY_LEN or p[22] != b"=" or p[23] != b"=":
        return None
    for i in range(22):
        if not _is_base64(<unsigned char>p[i]):
            return None
    return _accept_of(<const unsigned char*>p)
