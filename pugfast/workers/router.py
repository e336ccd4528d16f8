"""The supervisor's acceptor: every connection's request line decides its worker.

For each connection it accepts, the router reads up to the end of the request line, which
names the room of an upgrade (``/r/{room}/ws``: the worker that owns the room, by
pugfast.registry.worker_of) or is anything else (the next worker in turn; room creations take
turns of their own, so that a client's challenge-then-create pairs spread their rooms). It
then hands the connection on, with the bytes it read, to be passed to that worker; from then
on it never sees a byte of it.

Reading is driven by readiness alone: the bytes are taken off the socket as they come, so a
client that sends its request line slowly leaves the socket unreadable between its pieces and
costs nothing until the next one. (Peeking, which leaves them in place, would keep the socket
readable and make the router look again on a timer.)

The guards of the single relay's front door (pugfast/frontdoor.py), for the whole relay:

- *The request deadline.* A connection whose request line has not arrived within
  ``--request-timeout`` is answered 408 and closed; the rest of the request is the worker's
  to time. The deadlines are all the same length and kept in order of arrival, so a sweep a
  few times a second finds the expired ones at the front and looks at nothing else.
- *The pending cap.* At most ``--max-pending-connections`` connections wait for their request
  line; past it, the one that has waited longest is closed to make room, once it has had its
  chance to speak (``Settings.eviction_grace``): a burst of clients arriving at once is let
  in over the cap, and the sweep brings the count back under it after their grace.
- *The per-address cap* (``--max-connections-per-address``): counted here for the whole relay,
  under a keyed hash; a worker reports each counted connection's end (``release``).
- *No spin without descriptors*: when accepting fails for want of them, the router stops
  reading the listener, says so once, and starts again a second later.

It keeps totals of what the guards did (for ``--metrics-listen``), never an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import socket
from collections.abc import Callable

from ..acceptor import EXHAUSTED, RETRY
from ..addresses import AddressCounts
from ..config import Settings
from ..headers import TIMED_OUT, error_response
from ..registry import worker_of

log = logging.getLogger("pugfast.supervisor")

# The most the router reads of a request: the request line is all it needs, and one longer
# than this goes on as it is (the worker's HTTP server refuses it).
HEAD_BYTES = 2048
# Connections taken per readiness of the listener, so a storm does not starve the others.
ACCEPT_BATCH = 64
_ROOM_UPGRADE = re.compile(rb"[A-Z]+ (?:[a-zA-Z]+://[^/ ]*)?/r/([A-Za-z0-9_-]{22})/ws[? ]")
_CREATE = re.compile(rb"POST (?:[a-zA-Z]+://[^/ ]*)?/api/rooms[? ]")

# Where a connection goes: the worker's index, the socket, its address key (when the
# per-address cap counts it) and the bytes read from it.
Deliver = Callable[[int, socket.socket, "bytes | None", bytes], None]


class _Waiting:
    """A connection whose request line the router waits for."""

    __slots__ = ("address", "deadline", "head", "sock")

    def __init__(self, sock: socket.socket, deadline: float, address: bytes | None) -> None:
        self.sock = sock
        self.deadline = deadline
        self.address = address
        self.head = b""


class Router:
    """Accepts on a listening socket and hands each connection to ``deliver`` (see ``Deliver``)
    once its request line names its worker, among ``workers``. ``start``, then ``stop``."""

    def __init__(self, settings: Settings, workers: int, deliver: Deliver) -> None:
        self.settings = settings
        self.workers = workers
        self._deliver = deliver
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        # By descriptor, oldest first (dicts keep insertion order), which is also soonest
        # deadline first.
        self.waiting: dict[int, _Waiting] = {}
        self.addresses = AddressCounts(settings.max_connections_per_address)
        self._turn = itertools.cycle(range(workers))
        self._create_turn = itertools.cycle(range(workers))
        self._sweeper: asyncio.TimerHandle | None = None
        self._paused: asyncio.TimerHandle | None = None
        self._pause_reported = False
        self.deadline_closes = 0
        self.evictions = 0

    def start(self, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
        self._loop = loop
        self._listener = listener
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), self._accept)
        self._sweeper = loop.call_later(self._tick(), self._sweep)

    def stop(self) -> None:
        """Stop accepting and close every connection still waiting for its request line."""
        loop, listener = self._loop, self._listener
        if loop is None or listener is None:
            return
        self._listener = None
        for timer in (self._sweeper, self._paused):
            if timer is not None:
                timer.cancel()
        loop.remove_reader(listener.fileno())
        listener.close()
        for fd in list(self.waiting):
            self._drop(fd)

    def release(self, address: bytes) -> None:
        """A connection counted under ``address`` ended."""
        self.addresses.release(address)

    # -- accepting -----------------------------------------------------------------------

    def _accept(self) -> None:
        listener, loop = self._listener, self._loop
        assert listener is not None and loop is not None
        s = self.settings
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()  # the address is never kept
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in EXHAUSTED:
                    self._pause()
                return  # anything else concerns that one connection alone
            self._pause_reported = False
            address = None
            if s.max_connections_per_address:
                address = self.addresses.admit(peer[0])
                if address is None:
                    sock.close()
                    continue
            sock.setblocking(False)
            fd = sock.fileno()
            now = loop.time()
            self.waiting[fd] = _Waiting(sock, now + s.request_timeout, address)
            loop.add_reader(fd, self._readable, fd)
            self._make_room(now)

    def _pause(self) -> None:
        # Out of descriptors: the listener stays readable, so reading on would spin.
        assert self._listener is not None and self._loop is not None
        self._loop.remove_reader(self._listener.fileno())
        if not self._pause_reported:
            self._pause_reported = True
            log.warning("out of file descriptors: accepting again as connections end")
        self._paused = self._loop.call_later(RETRY, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._listener is not None and self._loop is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    # -- reading the request line ----------------------------------------------------------

    def _readable(self, fd: int) -> None:
        waiting = self.waiting[fd]
        try:
            data = waiting.sock.recv(HEAD_BYTES - len(waiting.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left before it had asked for anything
            self._drop(fd)
            return
        head = waiting.head = waiting.head + data
        if b"\n" not in head and len(head) < HEAD_BYTES:
            return  # part of a request line: the rest makes the socket readable again
        assert self._loop is not None
        self._loop.remove_reader(fd)
        del self.waiting[fd]
        self._deliver(self.route(head), waiting.sock, waiting.address, head)

    def route(self, head: bytes) -> int:
        """The worker a request starting with ``head`` goes to."""
        match = _ROOM_UPGRADE.match(head)
        if match:
            return worker_of(match.group(1).decode("ascii"), self.workers)
        if _CREATE.match(head):
            return next(self._create_turn)
        return next(self._turn)

    # -- the guards ----------------------------------------------------------------------

    def _tick(self) -> float:
        # A deadline is noticed at most this late.
        return min(0.25, self.settings.request_timeout / 8)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        while self.waiting:
            fd, waiting = next(iter(self.waiting.items()))
            if waiting.deadline > now:
                break
            self.deadline_closes += 1
            # Nothing was answered on it: say why it ends, if the socket takes it now.
            with contextlib.suppress(OSError):
                waiting.sock.send(error_response(408, *TIMED_OUT, False))
            self._drop(fd)
        self._make_room(now)
        self._sweeper = loop.call_later(self._tick(), self._sweep)

    def _make_room(self, now: float) -> None:
        """Past the pending cap, close the connections that have waited longest, once they
        have had their chance to send the request line."""
        s = self.settings
        spoken_by = now - s.eviction_grace + s.request_timeout  # as a deadline
        while len(self.waiting) > s.max_pending_connections:
            fd, waiting = next(iter(self.waiting.items()))
            if waiting.deadline > spoken_by:
                return  # all of them just arrived: the sweep looks again
            # A busy supervisor may not have read what came: read it first.
            self._readable(fd)
            if self.waiting.get(fd) is waiting:
                self.evictions += 1
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        """Close a waiting connection and forget it."""
        waiting = self.waiting.pop(fd)
        if self._loop is not None:
            self._loop.remove_reader(fd)
        if waiting.address is not None:
            self.addresses.release(waiting.address)
        waiting.sock.close()
