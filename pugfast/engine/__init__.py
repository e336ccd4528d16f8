"""The engine: the WebSocket codec, the connection layer with its fan-out, the room upgrade's
request head and the load generator's receive path, compiled or in pure Python.

Each piece is a pure-Python module here (``_frames``, ``_fanout``, ``_head``, ``_sink``) with a
compiled twin in the one extension module ``_speedups`` (its Cython sources are under
_ext/pugfast/engine/, a ``.pxi`` for each piece); docs/engine.md has the table of twins. This
module picks one of the two, once, at import, and is the only place the rest of pugfast
imports the engine from. ``PUGFAST_NO_EXTENSIONS`` set to anything but "" or "0" selects the
twin; otherwise the extension is used when it was built, and the twin when it was not (a source
install without a compiler). ``IMPLEMENTATION`` says which one is active. Both expose the same
names with the same behaviour; tests/ holds them to it.

Nothing in the engine imports asyncio, aiohttp or pugfast.bench (tests/test_core_imports.py):
the event loop's ``call_soon`` and ``call_later`` and a clock are handed in.
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
