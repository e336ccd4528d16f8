"""Process-level privacy: no core dumps, no bytecode written, and logs that cannot leak.

The relay's own log lines carry counts and settings only. Lines from libraries (aiohttp,
asyncio) may interpolate a peer address or a path into their message, so for those only the
message template is printed, never its arguments; and no exception's text is printed from any
logger, only its type and where it was raised.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys
import traceback

PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    """No core file, and on Linux no ptrace or /proc/PID/mem access by other processes."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - libc without prctl
            pass


class PrivateFormatter(logging.Formatter):
    """Formats pugfast's records normally and everything else by its template alone."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not record.name.startswith("pugfast"):
            record = logging.makeLogRecord(record.__dict__)
            record.msg = str(record.msg)
            record.args = None
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        text = super().format(record)
        if exc_info and exc_info[1] is not None:
            frames = traceback.extract_tb(exc_info[2])
            where = " <- ".join(
                f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames)
            )
            text += f" [{type(exc_info[1]).__name__} at {where}]"
        return text


def configure_logging(level: str) -> None:
    """Send every logger's records to stderr through PrivateFormatter, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrivateFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access logger is never attached to a server here; this makes sure of it.
    logging.getLogger("aiohttp.access").disabled = True
