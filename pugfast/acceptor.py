"""Accepting connections when the process may run out of file descriptors, and raising its
limit on them at start.

When ``accept`` fails for want of descriptors (EMFILE, ENFILE) the connection stays in the
kernel's queue and the listening socket stays readable, so a loop that simply tries again
spins at 100% of a core, and one that logs each failure fills the log. The two event loops
differ here:

- uvloop (libuv) handles it itself: it briefly frees a reserve descriptor, accepts and closes
  the waiting connections, and goes on accepting once descriptors are free. The relay leaves
  uvloop's server as it is.
- The standard library's loop logs an ERROR and schedules a retry for every connection in the
  queue (``BaseSelectorEventLoop._accept_connection``), then fails to re-register its
  listener. ``Acceptor`` replaces its server for the relay: it stops reading the listening
  socket, says so once, and starts again after ``RETRY`` seconds or as soon as a connection of
  the relay's ends, whichever comes first.

Nothing here learns a client's address beyond handing the connection on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pugfast")

# Out of descriptors, or of the memory to make one: wait, do not spin.
EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
RETRY = 1.0
# Connections taken per readiness of the listener, so a storm does not starve the others.
BATCH = 64


# Connections the kernel may hold before they are accepted: enough for a join storm (the
# kernel caps it at net.core.somaxconn).
BACKLOG = 4096

# Descriptors the relay keeps for itself (its listener, the event loop, a worker's channel,
# files it opens at start) when it says how many connections its limit allows.
RESERVED_DESCRIPTORS = 64


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` (IPv6 when it has a colon) and ``port``. Raises
    OSError when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (one descriptor per
    connection); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # a container may forbid it; the limit stays what it was, and is said
    return soft


class Acceptor:
    """Accepts on ``sock`` and serves each connection with ``factory()`` on ``loop``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._ssl = ssl_context
        self._reading = False
        self._retry: asyncio.TimerHandle | None = None
        # Whether the last pause has been reported; a run of them is reported once.
        self._reported = False
        self._starting: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)

    def start(self) -> None:
        if not self._reading and self._sock.fileno() >= 0:
            self._reading = True
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def descriptor_freed(self) -> None:
        """A connection ended: if accepting waits for descriptors, try again now."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
            self.start()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._sock.close()

    def _accept(self) -> None:
        for _ in range(BATCH):
            try:
                conn, _address = self._sock.accept()  # the address is never kept
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in EXHAUSTED:
                    self._pause()
                # Anything else (a connection aborted while queued) concerns that one alone.
                return
            self._reported = False
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            conn.close()

    def _pause(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._reading = False
        if not self._reported:
            self._reported = True
            log.warning("out of file descriptors: accepting again as connections end")
        self._retry = self._loop.call_later(RETRY, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self.start()
