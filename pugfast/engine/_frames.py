"""The WebSocket frame codec (RFC 6455, docs/protocol.md §6.9), sans I/O, in pure Python.

This is the twin of the compiled codec in _ext/pugfast/engine/_frames.pxi: both expose the same
names and give the same events and errors however the input is split into ``feed()`` calls
(tests/test_frames_differential.py holds them to it); the engine's selector,
pugfast/engine/__init__.py, picks one. FrameParser's methods pair with the compiled ones of
the same names (``next_event`` with ``next_c``): ``_read_header`` checks a header,
``_control`` and ``_add_fragment`` take a frame's payload, ``_fail`` raises the ProtocolError
and ``_release`` drops the buffers.

A frame header is checked rule by rule as soon as the bytes that prove each rule are present,
in the order of docs/protocol.md §6.9, so that where the input is cut never changes the outcome:

- byte 0: reserved bits, opcode, fragmented control frame;
- byte 1: control frame length, mask bit, continuation or data frame against the message state;
- the extended length: its top bit, then the message size limit, before any payload arrives.

A text message's UTF-8 is checked frame by frame, as each frame's payload completes.
"""

from __future__ import annotations

import codecs
import struct
from typing import NoReturn

from ..errors import ProtocolError

__all__ = [
    "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT", "FrameParser",
    "apply_mask", "encode_close", "encode_frame",
]

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
_MAX_CONTROL_PAYLOAD = 125
_MAX_CLOSE_REASON = _MAX_CONTROL_PAYLOAD - 2

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

Event = tuple[int, bytes] | tuple[int, int | None, str]
BytesLike = bytes | bytearray | memoryview


def _close_code_allowed(code: int) -> bool:
    """Whether RFC 6455 §7.4 lets ``code`` travel in a close frame."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameParser:
    """Turns the bytes a WebSocket peer sends into events, enforcing docs/protocol.md §6.9.

    ``require_mask=True`` parses a client's frames (a server's parser: every frame must be
    masked); ``require_mask=False`` parses a server's frames (every frame must be unmasked).
    Data messages larger than ``max_message_bytes``, counted across fragments, are refused.
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_finished",
        "_frag",
        "_frag_opcode",
        "_max_message_bytes",
        "_pos",
        "_require_mask",
    )

    def __init__(self, max_message_bytes: int, *, require_mask: bool = True) -> None:
        """Raises ValueError if ``max_message_bytes`` is negative."""
        if max_message_bytes < 0:
            raise ValueError("max_message_bytes must not be negative")
        self._max_message_bytes = max_message_bytes
        self._require_mask = bool(require_mask)
        self._buf = bytearray()
        self._pos = 0  # _buf[:_pos] is consumed
        self._frag = bytearray()  # the fragmented message so far
        self._frag_opcode = 0  # OP_TEXT or OP_BINARY while a fragmented message is in progress
        self._decoder = _Utf8Decoder()  # its UTF-8 state across fragments
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once a close event was returned or a ProtocolError raised."""
        return self._finished

    @property
    def buffered(self) -> int:
        """Bytes received and held for events not yet returned."""
        if self._finished:
            return 0
        return len(self._buf) - self._pos + len(self._frag)

    def feed(self, data: BytesLike) -> None:
        """Appends received bytes (copied); ignored once the parser is finished.

        Raises TypeError if ``data`` is not a bytes-like object.
        """
        if not self._finished:
            self._buf += data

    def next_event(self) -> Event | None:
        """Returns the next complete event, or None until more bytes arrive.

        Events: ``(OP_TEXT, bytes)`` (valid UTF-8), ``(OP_BINARY, bytes)``,
        ``(OP_PING, bytes)``, ``(OP_PONG, bytes)`` and ``(OP_CLOSE, code or None, reason)``.
        Raises ProtocolError, carrying the close code, at the first rule the peer broke.
        After a close event or an error the parser is finished and returns None.
        """
        while not self._finished:
            header = self._read_header()
            if header is None:
                self._trim()
                return None
            fin, opcode, start, length = header
            end = start + length
            buf = self._buf
            if len(buf) < end:
                self._trim()
                return None
            self._pos = end
            # The mask bit was checked against require_mask: the mask is the 4 bytes before.
            if self._require_mask:
                payload = apply_mask(buf[start:end], buf[start - 4 : start])
            else:
                payload = bytes(buf[start:end])
            if opcode >= OP_CLOSE:
                return self._control(opcode, payload)
            if opcode != OP_CONT and fin:
                # A whole message in one frame, the common case.
                if opcode == OP_TEXT:
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8")
                return opcode, payload
            self._add_fragment(fin, opcode, payload)
            if fin:
                event = self._frag_opcode, bytes(self._frag)
                self._frag = bytearray()
                self._frag_opcode = 0
                return event
        return None

    def _read_header(self) -> tuple[bool, int, int, int] | None:
        """Checks the header at the read offset; returns (fin, opcode, where its payload starts,
        payload length) once the header is complete, None while bytes are missing.

        Raises ProtocolError as soon as the bytes present prove a broken rule.
        """
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 1:
            return None
        fin = bool(buf[pos] & 0x80)
        opcode = buf[pos] & 0x0F
        if buf[pos] & 0x70:
            self._fail(1002, "reserved bits set")
        if opcode not in _OPCODES:
            self._fail(1002, "unknown opcode")
        if opcode >= OP_CLOSE and not fin:
            self._fail(1002, "fragmented control frame")
        if available < 2:
            return None
        masked = bool(buf[pos + 1] & 0x80)
        length = buf[pos + 1] & 0x7F
        if opcode >= OP_CLOSE and length > _MAX_CONTROL_PAYLOAD:
            self._fail(1002, "control frame too long")
        if masked != self._require_mask:
            self._fail(1002, "unmasked frame" if self._require_mask else "masked frame")
        if opcode == OP_CONT and not self._frag_opcode:
            self._fail(1002, "continuation without a start")
        if opcode in (OP_TEXT, OP_BINARY) and self._frag_opcode:
            self._fail(1002, "data frame inside a fragmented message")
        start = pos + 2
        if length == 126:
            if available < 4:
                return None
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            start += 2
        elif length == 127:
            if available < 10:
                return None
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            start += 8
            if length >> 63:
                self._fail(1002, "length with the top bit set")
        if opcode < OP_CLOSE and len(self._frag) + length > self._max_message_bytes:
            self._fail(1009, "message too big")
        if masked:
            start += 4
            if len(buf) < start:
                return None
        return fin, opcode, start, length

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode != OP_CLOSE:
            return opcode, payload
        code = None
        reason = ""
        if len(payload) == 1:
            self._fail(1002, "close payload of 1 byte")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not _close_code_allowed(code):
                self._fail(1002, "invalid close code")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in close reason")
        self._finished = True
        # The reason is a copy, so the buffers go now (the compiled twin, whose reason lies in
        # them, frees them on the next call).
        self._release()
        return OP_CLOSE, code, reason

    def _add_fragment(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode != OP_CONT:
            self._frag_opcode = opcode
        if self._frag_opcode == OP_TEXT:
            try:
                self._decoder.decode(payload, fin)
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8")
            pending = self._decoder.getstate()[0]
            # CPython's decoder waits for a third byte before it rejects an encoded UTF-16
            # surrogate (ED A0..BF); every other invalid prefix it rejects at once, as the C
            # validator does with this one too, and the two must fail on the same frame.
            if pending[:1] == b"\xed" and pending[1:2] >= b"\xa0":
                self._fail(1007, "invalid UTF-8")
        self._frag += payload

    def _trim(self) -> None:
        # Compacting when the input runs out, not per frame, also lets a buffer grown by a big
        # read go.
        del self._buf[: self._pos]
        self._pos = 0

    def _fail(self, code: int, reason: str) -> NoReturn:
        self._release()
        self._finished = True
        # Raised in place of what revealed the broken rule (a UnicodeDecodeError, say).
        raise ProtocolError(code, reason) from None

    def _release(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._frag = bytearray()


def apply_mask(data: BytesLike, mask: BytesLike) -> bytes:
    """Returns ``data`` XORed with the repeating 4-byte ``mask`` (RFC 6455 §5.3).

    Masking twice with the same mask gives ``data`` back. Raises ValueError if ``mask`` is not
    4 bytes long.
    """
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    n = len(data)
    # One XOR of two big integers runs a machine word at a time, unlike a loop over bytes.
    repeated = bytes(mask) * (n // 4) + bytes(mask[: n % 4])
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: BytesLike, *, mask: BytesLike | None = None) -> bytes:
    """Returns one final (FIN) frame carrying ``payload``.

    Unmasked, as a server sends, unless a 4-byte ``mask`` is given, as a client sends.
    Raises ValueError for an unknown opcode, a control payload over 125 bytes, or a mask
    that is not 4 bytes long.
    """
    if opcode not in _OPCODES:
        raise ValueError(f"unknown opcode {opcode}")
    n = len(payload)
    if opcode >= OP_CLOSE and n > _MAX_CONTROL_PAYLOAD:
        raise ValueError("control frame payload over 125 bytes")
    if mask is not None and len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    first = 0x80 | opcode
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if mask is None:
        return header + payload
    return header + bytes(mask) + apply_mask(payload, mask)


def encode_close(code: int, reason: str = "") -> bytes:
    """Returns an unmasked close frame with ``code`` and ``reason``.

    The reason is cut to the 123 bytes a close frame has room for, on a UTF-8 character
    boundary. Raises ValueError if RFC 6455 does not let ``code`` be sent, and
    UnicodeEncodeError if ``reason`` holds a lone surrogate.
    """
    if not _close_code_allowed(code):
        raise ValueError(f"close code {code} may not be sent")
    text = reason.encode("utf-8")
    if len(text) > _MAX_CLOSE_REASON:
        cut = _MAX_CLOSE_REASON
        # Back off to the start of the character the cut would split.
        while text[cut] & 0xC0 == 0x80:
            cut -= 1
        text = text[:cut]
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + text)
