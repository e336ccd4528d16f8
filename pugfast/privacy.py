"""Process-level privacy: no core dumps, no bytecode written, and logs that cannot leak.

The relay's own log lines carry counts and settings only. Lines from libraries (aiohttp,
asyncio) may interpolate a peer address or a path into their message, so for those only the
message template is printed, never its arguments; and no exception's text is printed from any
logger, only its type and where it was raised. A client's malformed request is logged at
debug only, and without its address or its text (``quiet_client_faults``).
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys
import traceback

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

PR_SET_DUMPABLE = 4

# The logger aiohttp's server reports request errors on (aiohttp/log.py).
AIOHTTP_SERVER = "aiohttp.server"


def client_fault(exc: BaseException | None) -> bool:
    """Whether ``exc``, met while serving a request, is the client's doing rather than the
    relay's: a request aiohttp cannot parse (a bad request line, header or chunk, a line over
    its limits, a body that does not decode), or a client that went away mid-request.

    aiohttp reports a client gone with a ConnectionResetError it makes itself ("Connection
    lost", "Cannot write to closing transport"), which carries no errno. One the system raises
    has an errno, and on a socket the relay uses for itself (a worker's link to its
    supervisor) it is the relay's fault, so it is not counted here.
    """
    if isinstance(exc, (HttpProcessingError, RequestPayloadError)):
        return True
    return isinstance(exc, ConnectionResetError) and exc.errno is None


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


class ClientFaultFilter(logging.Filter):
    """Turns aiohttp's reports of a client's malformed request into one scrubbed debug line.

    aiohttp 3.x answers an unparsable request (and a body that fails to decode while a
    handler reads it) with a 400 and logs ``"Error handling request from %s"`` on
    ``aiohttp.server`` at ERROR, with the peer's address as argument and the parser's
    exception attached (at DEBUG only for a bad method in a connection's first request);
    when such a body is still unread after the response it logs ``"Unhandled exception"``
    with the same error. Any client can write those lines at will, and the exception's text
    quotes the request line, which holds a room id. A client's bad input is not the
    operator's error, so a record carrying one (``client_fault``) becomes a debug line naming
    the exception's type and nothing else: no address, no text, no traceback.

    A filter on the logger rather than a subclass of aiohttp's RequestHandler: it sees every
    place aiohttp reports these (handle_error, the request loop, and whatever a later
    version adds, since it keys on the exception rather than on a message or a call site),
    it is scrubbed before any handler sees it (ours, pytest's, an embedding program's), and
    a genuine fault of the relay (any other exception) keeps its ERROR.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not client_fault(exc):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg = f"refused a bad request ({type(exc).__name__})"
        record.args = None
        record.exc_info = record.exc_text = record.stack_info = None
        # The logger let the record through at its old level; handlers check only their own.
        return self._logger.isEnabledFor(logging.DEBUG)


def quiet_client_faults() -> None:
    """Install ClientFaultFilter on aiohttp's server logger (once, however often called)."""
    logger = logging.getLogger(AIOHTTP_SERVER)
    if not any(isinstance(f, ClientFaultFilter) for f in logger.filters):
        logger.addFilter(ClientFaultFilter(logger))


def configure_logging(level: str) -> None:
    """Send every logger's records to stderr through PrivateFormatter, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrivateFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access logger is never attached to a server here; this makes sure of it.
    logging.getLogger("aiohttp.access").disabled = True
    quiet_client_faults()
