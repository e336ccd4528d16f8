"""Keeping a relay process's resident memory close to what it holds.

glibc's malloc serves a large block from an mmap of its own and unmaps it when it is freed,
but after the first such free it raises that threshold (up to 32 MiB) and serves later large
blocks from its heap, where a freed block in the middle cannot be given back. A relay makes
and frees large buffers only in bursts (the pending output of members that stop reading), and
with the raised threshold those bursts left their memory in the heap: 10 to 15% above the
documented worst case (docs/operations.md, "Sizing"). Fixing the threshold at glibc's default
keeps every block of 128 KiB or more in an mmap of its own, unmapped when freed. Ordinary
traffic is unaffected: its allocations are smaller.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 128 KiB; False where there is no glibc to ask (musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
