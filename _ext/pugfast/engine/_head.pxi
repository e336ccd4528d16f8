# Reading the one request head the relay answers without aiohttp, in one pass of C over its
# bytes: the compiled twin of pugfast/engine/_head.py, which states the rules and holds the
# reasons. Included by _speedups.pyx.

from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcmp

READ = (
    "host", "upgrade", "connection", "sec-websocket-version", "sec-websocket-key", "origin",
    "content-length", "transfer-encoding",
)
cdef tuple _READ = READ
cdef tuple _READ_BYTES = tuple(name.encode("ascii") for name in READ)
cdef enum:
    _LONGEST_READ = 21  # len("sec-websocket-version")
    _ROOM_ID_LEN = 22

# Byte classes: 1 = an RFC 9110 token character, 2 = a room id (base64url) character.
cdef unsigned char _CLASS[256]


cdef void _init_classes():
    cdef bytes token = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    cdef bytes room = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    cdef unsigned char c
    for c in token:
        _CLASS[c] |= 1
    for c in room:
        _CLASS[c] |= 2


_init_classes()


cdef inline bint _is_value_byte(unsigned char c):
    return c == 9 or 0x20 <= c <= 0x7E


cdef int _read_index(const unsigned char* name, Py_ssize_t n):
    """The index in READ of the field name (any case), or -1."""
    cdef unsigned char lower[_LONGEST_READ]
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef int k
    cdef bytes candidate
    if n > _LONGEST_READ:
        return -1
    for i in range(n):
        c = name[i]
        lower[i] = c + 32 if 65 <= c <= 90 else c
    for k in range(len(_READ_BYTES)):
        candidate = <bytes>_READ_BYTES[k]
        if PyBytes_GET_SIZE(candidate) == n and memcmp(lower, PyBytes_AS_STRING(candidate), n) == 0:
            return k
    return -1


def parse_upgrade_head(bytes head):
    """``(room_id, fields, accept)`` for a plain room upgrade request head, else None (see
    pugfast/engine/_head.py)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(head)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t i, name_end, vs, ve
    cdef int k
    cdef dict fields = {}
    cdef str key
    # The request line.
    if n < 41 or memcmp(p, b"GET /r/", 7) != 0:
        return None
    for i in range(7, 7 + _ROOM_ID_LEN):
        if not _CLASS[p[i]] & 2:
            return None
    if memcmp(p + 29, b"/ws", 3) != 0:
        return None
    i = 32
    if i < n and p[i] == b"?":
        i += 1
        while i < n and 0x21 <= p[i] <= 0x7E:
            i += 1
    if n - i < 9 or memcmp(p + i, b" HTTP/1.1", 9) != 0:
        return None
    i += 9
    # The fields, each after a CR LF.
    while i < n:
        if i + 1 >= n or p[i] != b"\r" or p[i + 1] != b"\n":
            return None
        i += 2
        name_end = i
        while name_end < n and _CLASS[p[name_end]] & 1:
            name_end += 1
        if name_end == i or name_end >= n or p[name_end] != b":":
            return None
        vs = ve = name_end + 1
        while ve < n and p[ve] != b"\r":
            if not _is_value_byte(p[ve]):
                return None
            ve += 1
        k = _read_index(p + i, name_end - i)
        i = ve
        if k < 0:
            continue
        while vs < ve and (p[vs] == 32 or p[vs] == 9):
            vs += 1
        while ve > vs and (p[ve - 1] == 32 or p[ve - 1] == 9):
            ve -= 1
        key = <str>_READ[k]
        if key not in fields:
            fields[key] = PyUnicode_DecodeASCII(<const char*>p + vs, ve - vs, NULL)
        elif k == 0:  # a second Host
            return None
    if "host" not in fields or "content-length" in fields or "transfer-encoding" in fields:
        return None
    return (PyUnicode_DecodeASCII(<const char*>p + 7, _ROOM_ID_LEN, NULL), fields,
            _upgrade_accept(fields))
