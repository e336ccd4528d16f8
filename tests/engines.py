"""Both engine implementations, for tests that hold them to the same behaviour, and a frame
builder written from RFC 6455 independently of either.

The compiled one is tested whenever it is built, whichever engine PUGFAST_NO_EXTENSIONS makes
the relay use. A missing build fails the tests that need it, unless PUGFAST_NO_EXTENSIONS is
set: then they skip, saying so (a machine without a compiler can still test the twin).
"""

from __future__ import annotations

import os

import pytest

import pugfast.engine._frames as py_impl

NO_EXTENSIONS = os.environ.get("PUGFAST_NO_EXTENSIONS", "") not in ("", "0")

try:
    import pugfast.engine._speedups as c_impl
except ImportError:
    if not NO_EXTENSIONS:
        raise
    c_impl = None

NOT_BUILT = "the compiled engine is not built (allowed only with PUGFAST_NO_EXTENSIONS=1)"

IMPLEMENTATIONS = [
    pytest.param(py_impl, id="py"),
    pytest.param(c_impl, id="c", marks=pytest.mark.skipif(c_impl is None, reason=NOT_BUILT)),
]


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None,
          wide: int = 0) -> bytes:
    """Builds a frame; ``wide`` forces a 16- or 64-bit length field even for a short payload."""
    n = len(payload)
    mask_bit = 0 if mask is None else 0x80
    head = bytes([(0x80 if fin else 0) | opcode])
    if wide == 64 or n > 0xFFFF:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    elif wide == 16 or n > 125:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | n])
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
