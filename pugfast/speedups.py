"""Chooses the engine: the compiled extension, or its pure-Python twin.

The choice is made once, at import. ``PUGFAST_NO_EXTENSIONS`` set to anything but "" or "0"
selects the twin; otherwise the extension is used when it was built, and the twin when it was
not (a source install without a compiler). ``IMPLEMENTATION`` says which one is active.
Both expose the same names with the same behaviour; tests/ holds them to it.
"""

import os

_DISABLED = os.environ.get("PUGFAST_NO_EXTENSIONS", "") not in ("", "0")

if not _DISABLED:
    try:
        from ._speedups import (
            OP_BINARY,
            OP_CLOSE,
            OP_CONT,
            OP_PING,
            OP_PONG,
            OP_TEXT,
            Connection,
            DeliverySink,
            DeliveryTally,
            Flusher,
            FrameParser,
            Group,
            Lockstep,
            MessageSource,
            OpenLoopSender,
            apply_mask,
            encode_close,
            encode_frame,
            parse_upgrade_head,
        )
    except ImportError:
        _DISABLED = True

if _DISABLED:
    from ._fanout import Connection, Flusher, Group
    from ._frames import (
        OP_BINARY,
        OP_CLOSE,
        OP_CONT,
        OP_PING,
        OP_PONG,
        OP_TEXT,
        FrameParser,
        apply_mask,
        encode_close,
        encode_frame,
    )
    from ._head import parse_upgrade_head
    from ._sink import DeliverySink, DeliveryTally, Lockstep, MessageSource, OpenLoopSender

IMPLEMENTATION: str = "python" if _DISABLED else "cython"

__all__ = [
    "IMPLEMENTATION", "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT",
    "Connection", "DeliverySink", "DeliveryTally", "Flusher", "FrameParser", "Group",
    "Lockstep", "MessageSource", "OpenLoopSender", "apply_mask", "encode_close", "encode_frame",
    "parse_upgrade_head",
]
