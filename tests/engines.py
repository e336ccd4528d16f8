"""Both engine implementations, for tests that hold them to the same behaviour, and a frame
builder written from RFC 6455 independently of either.

``IMPLEMENTATIONS`` is the one list to parametrise twin tests over: the pure twin (``py_impl``:
the public names of pugfast/engine/_frames.py, _fanout.py, _head.py and _sink.py in one
namespace, as the compiled module holds them in one) and the compiled module (``c_impl``,
pugfast.engine._speedups). The compiled one is tested whenever it is built, whichever engine
PUGFAST_NO_EXTENSIONS makes the relay use. A missing build fails the tests that need it, unless
PUGFAST_NO_EXTENSIONS is set: then they skip, saying so (a machine without a compiler can still
test the twin).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from pugfast.engine import _fanout, _frames, _head, _sink

NO_EXTENSIONS = os.environ.get("PUGFAST_NO_EXTENSIONS", "") not in ("", "0")

try:
    import pugfast.engine._speedups as c_impl
except ImportError:
    if not NO_EXTENSIONS:
        raise
    c_impl = None

NOT_BUILT = "the compiled engine is not built (allowed only with PUGFAST_NO_EXTENSIONS=1)"

TWIN_MODULES = (_frames, _fanout, _head, _sink)
py_impl = SimpleNamespace(**{
    name: getattr(module, name) for module in TWIN_MODULES for name in module.__all__
})

IMPLEMENTATIONS = [
    pytest.param(py_impl, id="py"),
    pytest.param(c_impl, id="c", marks=pytest.mark.skipif(c_impl is None, reason=NOT_BUILT)),
]

# The mask a client's frames carry unless a test says otherwise.
CLIENT_MASK = b"\x11\x22\x33\x44"


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XORed with the repeating 4-byte ``mask``, a byte at a time (RFC 6455 §5.3)."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bytes | None = None, length: int | None = None, wide: int = 0) -> bytes:
    """Builds a frame bit by bit (RFC 6455 §5.2), the broken ones encode_frame refuses to make
    included. Unmasked, as a server sends, unless a 4-byte ``mask`` is given.

    ``rsv`` is the 3-bit RSV1-3 field; ``length`` is announced instead of the payload's own;
    ``wide`` (16 or 64) forces a 16- or 64-bit length field even for a short payload.
    """
    n = len(payload) if length is None else length
    mask_bit = 0 if mask is None else 0x80
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    if wide == 64 or n > 0xFFFF:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    elif wide == 16 or n > 125:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | n])
    if mask is None:
        return head + payload
    return head + mask + mask_payload(payload, mask)


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                 mask: bytes | None = CLIENT_MASK, length: int | None = None) -> bytes:
    """A frame as a client sends it: ``frame`` masked with ``CLIENT_MASK`` unless ``mask`` says
    otherwise (None for an unmasked one)."""
    return frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length=length)
