"""``pugfast serve --workers N``: one port, N worker processes, every room whole in one of them.

The supervisor owns the listening socket and does three small jobs, none of them per message:

- **Accept and route.** For each connection it peeks (MSG_PEEK: nothing is consumed) at the
  request line. An upgrade to ``/r/{room}/ws`` goes to the worker that owns the room, which
  the room id names (pugfast.registry.worker_of); anything else goes to the next worker in
  turn (room creations keep a turn of their own), so rooms are spread evenly. The socket
  itself is passed to the worker over a SOCK_SEQPACKET socket pair (SCM_RIGHTS), and the
  worker serves it as if it had accepted it.
  From then on the supervisor never sees a byte of that connection.
- **Spend challenge tokens.** Workers share the key tokens are signed with, so a challenge from
  one worker is good at another; the one set of spent tokens is kept here, and a worker asks
  whether a token is spent before it checks the proof, and spends it before it creates a room.
- **Share out the caps.** ``--max-rooms`` and ``--max-connections`` are the relay's, wherever
  rooms land: the supervisor grants them to workers in blocks and takes back unused slots
  when it runs out (pugfast/allowance.py).
- **Keep workers running.** A worker that dies takes its own rooms with it (their members see
  their connections end) and is started again; the other workers are untouched. SIGTERM or
  SIGINT stops listening, then stops every worker as a single relay stops (1001 to members).

With ``--metrics-listen`` the supervisor serves the sum of every worker's metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from . import __version__
from .acceptor import EXHAUSTED, raise_open_file_limit
from .acceptor import RETRY as ACCEPT_RETRY
from .addresses import AddressCounts
from .allowance import CONNECTIONS, KINDS, ROOMS, Ledger
from .config import Settings
from .headers import TIMED_OUT, error_response
from .metrics import make_metrics_app, merge, render
from .pow import SpentTokens
from .registry import worker_of
from .speedups import IMPLEMENTATION
from .worker import (
    ACQUIRE,
    CLOSED,
    CONNECTION,
    COUNT,
    GIVE_BACK,
    HELLO,
    MAX_MESSAGE,
    METRICS,
    READY,
    REQUEST_ID,
    SPENT,
    TOKEN,
)

log = logging.getLogger("pugfast.supervisor")

BACKLOG = 4096
# How much of a request the acceptor looks at: the request line is all it needs.
PEEK_BYTES = 2048
# A connection that has not sent its request line within --request-timeout is closed. A
# request line nearly always arrives in the first segment; when it does not, the acceptor
# looks again this often.
PEEK_RETRY = 0.01
# A worker that dies sooner than this after it started is restarted only after this long,
# so a worker that cannot start does not spin.
RESTART_BACKOFF = 1.0
# After this many quick deaths in a row a worker is not going to start: give up, exit 1.
MAX_QUICK_RESTARTS = 5
METRICS_TIMEOUT = 2.0
# How long the supervisor waits for workers to give back unused slots before it answers a
# worker that asked for more with what it has.
GIVE_BACK_TIMEOUT = 2.0
# How long the workers may take to start before the relay gives up at start-up.
START_TIMEOUT = 60.0
_ROOM_UPGRADE = re.compile(rb"[A-Z]+ (?:[a-zA-Z]+://[^/ ]*)?/r/([A-Za-z0-9_-]{22})/ws[? ]")
_CREATE = re.compile(rb"POST (?:[a-zA-Z]+://[^/ ]*)?/api/rooms[? ]")


class WorkerProcess:
    """One worker slot: its process, its end of the channel, and what waits to be sent to it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self.started_at = 0.0
        self.quick_deaths = 0
        self.ready: asyncio.Future[None] | None = None
        # Messages (and the connection each carries, if any) waiting for room in the channel.
        self.outbox: collections.deque[tuple[bytes, socket.socket | None]] = collections.deque()
        # Connections passed to this worker by address key, for --max-connections-per-address:
        # given back when the worker says they ended, or when it dies.
        self.addresses: collections.Counter[bytes] = collections.Counter()


class Supervisor:
    """Runs the workers and the acceptor. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        shutdown_grace: float = 2.0,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        # Called when a worker cannot be kept running; ``failed`` is then True.
        self.on_failure = on_failure
        self.failed = False
        self.shutdown_grace = shutdown_grace
        self.port = 0
        self.metrics_port: int | None = None
        self.workers = [WorkerProcess(i) for i in range(settings.workers)]
        self._token_key = secrets.token_bytes(32)
        self._spent = SpentTokens()
        n = settings.workers
        self._ledgers = {
            ROOMS: Ledger(settings.max_rooms, n),
            CONNECTIONS: Ledger(settings.max_connections, n),
        }
        # Per cap: the workers asked to give back slots and not yet answered, the requests
        # for more that wait on them, and the timer that stops waiting.
        self._giving_back: dict[str, set[int]] = {kind: set() for kind in KINDS}
        self._waiting: dict[str, list[tuple[WorkerProcess, bytes]]] = {kind: [] for kind in KINDS}
        self._give_back_timers: dict[str, asyncio.TimerHandle] = {}
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Connections whose request line is awaited, oldest first: the socket, its deadline,
        # and its address's key when the per-address cap counts it.
        self._peeking: dict[int, tuple[socket.socket, asyncio.TimerHandle, bytes | None]] = {}
        self._addresses = AddressCounts(settings.max_connections_per_address)
        self._accept_reported = False
        # Totals for --metrics-listen, beside the workers' own.
        self.deadline_closes = 0
        self.evictions = 0
        # Room creations take turns on their own, so that a client's challenge-then-create
        # pairs do not all land their rooms on one worker.
        self._turn = itertools.cycle(range(settings.workers))
        self._create_turn = itertools.cycle(range(settings.workers))
        self._requests = itertools.count(1)
        self._metrics: dict[int, asyncio.Future[Any]] = {}
        self._metrics_runner: web.AppRunner | None = None
        self._stopping = False
        self.restarts = 0

    # -- starting and stopping -------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        raise_open_file_limit()
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        listener = socket.create_server((s.host, s.port), family=family, backlog=BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        for worker in self.workers:
            self._spawn(worker)
        # Connections wait in the kernel's backlog until every worker serves, so a health
        # check never finds a relay that is listening but cannot answer yet.
        deadline = time.monotonic() + START_TIMEOUT
        while not all(w.ready is not None and w.ready.done() for w in self.workers):
            if self.failed or time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError("the worker processes could not start (see the lines above)")
            await asyncio.sleep(0.01)
        self._loop.add_reader(listener.fileno(), self._accept)
        if s.metrics_address is not None:
            await self._start_metrics(*s.metrics_address)
        log.info(
            "pugfast %s listening on port %d (http; %d workers; engine: %s; loop: %s)",
            __version__, self.port, len(self.workers), IMPLEMENTATION,
            type(self._loop).__module__.split(".")[0],
        )

    async def stop(self) -> None:
        """Stop accepting, then stop every worker (each closes its members with 1001)."""
        if self._stopping:
            return
        self._stopping = True
        loop = self._loop
        assert loop is not None
        if self._listener is not None:
            loop.remove_reader(self._listener.fileno())
            self._listener.close()
        for sock, timer, _key in list(self._peeking.values()):
            self._forget(sock, timer)
            sock.close()
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_grace + 10.0
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if process.poll() is None:
                log.warning("worker %d did not stop in time; killing it", worker.index + 1)
                process.kill()
                process.wait()
            self._close_channel(worker)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()

    def _spawn(self, worker: WorkerProcess) -> None:
        assert self._loop is not None
        s = self.settings
        n = len(self.workers)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        hello = HELLO + orjson.dumps({
            "settings": dataclasses.asdict(s),
            "worker": worker.index,
            "workers": n,
            "token_key": self._token_key.hex(),
            "allowance": {kind: ledger.grant(worker.index) for kind, ledger in self._ledgers.items()},
        })
        ours.send(hello)
        worker.process = subprocess.Popen(
            [sys.executable, "-B", "-m", "pugfast.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            # Its own session, so a Ctrl-C reaches the supervisor alone, which then stops
            # the workers in order.
            start_new_session=True,
        )
        theirs.close()
        ours.setblocking(False)
        worker.channel = ours
        worker.started_at = time.monotonic()
        worker.ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._from_worker, worker)
        self._flush(worker)

    def _close_channel(self, worker: WorkerProcess) -> None:
        channel, worker.channel = worker.channel, None
        if channel is not None and self._loop is not None:
            self._loop.remove_reader(channel.fileno())
            self._loop.remove_writer(channel.fileno())
            channel.close()

    def _worker_gone(self, worker: WorkerProcess) -> None:
        self._close_channel(worker)
        for key, count in worker.addresses.items():
            for _ in range(count):
                self._addresses.release(key)
        worker.addresses.clear()
        # Its rooms and connections are gone, and so is its claim on the caps.
        for kind, ledger in self._ledgers.items():
            ledger.forget(worker.index)
            self._waiting[kind] = [(w, r) for w, r in self._waiting[kind] if w is not worker]
            self._given_back(kind, worker.index, 0)
        if self._stopping:
            return
        assert self._loop is not None and worker.process is not None
        try:
            code = worker.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            code = worker.process.wait()
        self.restarts += 1
        quick = time.monotonic() - worker.started_at < RESTART_BACKOFF
        worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
        if worker.quick_deaths >= MAX_QUICK_RESTARTS:
            log.error("worker %d ended %d times right after starting (exit code %s); giving up",
                      worker.index + 1, worker.quick_deaths, code)
            self.failed = True
            self.on_failure()
            return
        log.warning(
            "worker %d ended (exit code %s); its rooms are gone; starting it again%s",
            worker.index + 1, code, f" in {RESTART_BACKOFF:g} s" if quick else "",
        )
        if quick:
            self._loop.call_later(RESTART_BACKOFF, self._respawn, worker)
        else:
            self._spawn(worker)

    def _respawn(self, worker: WorkerProcess) -> None:
        if not self._stopping:
            self._spawn(worker)

    # -- accepting and routing -------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None and self._loop is not None
        s = self.settings
        for _ in range(64):
            try:
                sock, address = self._listener.accept()  # the address is never kept
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in EXHAUSTED:
                    self._pause_accepting()
                return
            self._accept_reported = False
            key = None
            if s.max_connections_per_address:
                key = self._addresses.admit(address[0])
                if key is None:
                    sock.close()
                    continue
            if len(self._peeking) >= s.max_pending_connections:
                # The connection that has waited longest for its request line makes room.
                oldest, oldest_timer, oldest_key = next(iter(self._peeking.values()))
                self.evictions += 1
                self._forget(oldest, oldest_timer)
                self._release(oldest_key)
                oldest.close()
            sock.setblocking(False)
            timer = self._loop.call_later(s.request_timeout, self._give_up, sock)
            self._peeking[sock.fileno()] = (sock, timer, key)
            self._loop.add_reader(sock.fileno(), self._peek, sock)

    def _pause_accepting(self) -> None:
        # Out of descriptors: the listener stays readable, so reading on would spin. Look
        # again once a second (connections end meanwhile); say so once per run of them.
        assert self._listener is not None and self._loop is not None
        self._loop.remove_reader(self._listener.fileno())
        if not self._accept_reported:
            self._accept_reported = True
            log.warning("out of file descriptors: accepting again as connections end")
        self._loop.call_later(ACCEPT_RETRY, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if not self._stopping and self._listener is not None and self._loop is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    def _release(self, key: bytes | None) -> None:
        if key is not None:
            self._addresses.release(key)

    def _peek(self, sock: socket.socket) -> None:
        try:
            head = sock.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            head = b""
        _, timer, key = self._peeking[sock.fileno()]
        if not head:  # the client left before it asked for anything
            self._forget(sock, timer)
            self._release(key)
            sock.close()
            return
        end = head.find(b"\r\n")
        if end < 0 and len(head) < PEEK_BYTES:
            # Part of a request line. The peeked bytes stay readable, so waiting for more
            # with the reader would spin: look again shortly instead.
            assert self._loop is not None
            self._loop.remove_reader(sock.fileno())
            self._loop.call_later(PEEK_RETRY, self._peek_again, sock)
            return
        self._forget(sock, timer)
        match = _ROOM_UPGRADE.match(head)
        if match:
            index = worker_of(match.group(1).decode("ascii"), len(self.workers))
        elif _CREATE.match(head):
            index = next(self._create_turn)
        else:
            index = next(self._turn)
        worker = self.workers[index]
        if key is not None:
            # The worker says when the connection ends, so the count stays the relay's.
            worker.addresses[key] += 1
        self._send(worker, CONNECTION + (key or b""), sock)

    def _peek_again(self, sock: socket.socket) -> None:
        if sock.fileno() in self._peeking and self._loop is not None:
            self._loop.add_reader(sock.fileno(), self._peek, sock)

    def _forget(self, sock: socket.socket, timer: asyncio.TimerHandle) -> None:
        timer.cancel()
        self._peeking.pop(sock.fileno(), None)
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())

    def _give_up(self, sock: socket.socket) -> None:
        entry = self._peeking.get(sock.fileno())
        if entry is not None and entry[0] is sock:
            self.deadline_closes += 1
            self._forget(sock, entry[1])
            self._release(entry[2])
            # Nothing was answered on it: say why it ends, if the socket takes it now.
            with contextlib.suppress(OSError):
                sock.send(error_response(408, *TIMED_OUT, False))
            sock.close()

    # -- the channel to each worker --------------------------------------------------------

    def _send(self, worker: WorkerProcess, message: bytes, conn: socket.socket | None = None) -> None:
        worker.outbox.append((message, conn))
        if len(worker.outbox) == 1:
            self._flush(worker)

    def _flush(self, worker: WorkerProcess) -> None:
        channel = worker.channel
        if channel is None or self._loop is None:
            return  # a restarting worker gets what waited for it once it is back
        outbox = worker.outbox
        while outbox:
            message, conn = outbox[0]
            try:
                if conn is None:
                    channel.send(message)
                else:
                    socket.send_fds(channel, [message], [conn.fileno()])
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(channel.fileno(), self._writable, worker)
                return
            except OSError as exc:
                if conn is None:
                    return  # the worker is gone; _from_worker sees the end and restarts it
                # Too many descriptors in flight (ETOOMANYREFS), say: drop this connection.
                log.warning("cannot pass a connection to worker %d (%s)", worker.index + 1,
                            exc.strerror)
            outbox.popleft()
            if conn is not None:
                conn.close()  # the worker holds its own descriptor now
        self._loop.remove_writer(channel.fileno())

    def _writable(self, worker: WorkerProcess) -> None:
        self._flush(worker)

    def _from_worker(self, worker: WorkerProcess) -> None:
        channel = worker.channel
        if channel is None:
            return
        while True:
            try:
                message = channel.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self._worker_gone(worker)
                return
            kind, request = message[:1], message[1:5]
            if kind == READY:
                if worker.ready is not None and not worker.ready.done():
                    worker.ready.set_result(None)
            elif kind == SPENT:
                token = message[5:].decode("ascii")
                self._spent.forget_expired(time.monotonic())
                self._send(worker, SPENT + request + (b"\x01" if token in self._spent else b"\x00"))
            elif kind == TOKEN:
                fresh = self._spent.add(message[5:].decode("ascii"), time.monotonic())
                self._send(worker, TOKEN + request + (b"\x01" if fresh else b"\x00"))
            elif kind == CLOSED:
                key = message[1:]
                if worker.addresses[key] > 0:
                    worker.addresses[key] -= 1
                    if not worker.addresses[key]:
                        del worker.addresses[key]
                    self._addresses.release(key)
            elif kind == ACQUIRE:
                self._acquire(worker, request, message[5:6].decode("ascii"))
            elif kind == GIVE_BACK:
                self._given_back(message[1:2].decode("ascii"), worker.index,
                                 COUNT.unpack_from(message, 2)[0])
            elif kind == METRICS:
                future = self._metrics.get(REQUEST_ID.unpack(request)[0])
                if future is not None and not future.done():
                    future.set_result(orjson.loads(message[5:]))

    # -- the relay-wide caps ---------------------------------------------------------------

    def _acquire(self, worker: WorkerProcess, request: bytes, kind: str) -> None:
        ledger = self._ledgers.get(kind)
        if ledger is None:
            return  # not a cap we know: the worker's question times out
        if ledger.free or self._giving_back[kind]:
            if not self._giving_back[kind]:
                self._send(worker, ACQUIRE + request + COUNT.pack(ledger.grant(worker.index)))
            else:
                self._waiting[kind].append((worker, request))
            return
        # Nothing left to grant: take back what the other workers hold and do not use.
        others = {w.index for w in self.workers if w is not worker and w.channel is not None}
        if not others:
            self._send(worker, ACQUIRE + request + COUNT.pack(0))
            return
        assert self._loop is not None
        self._waiting[kind].append((worker, request))
        self._giving_back[kind] = others
        for index in others:
            self._send(self.workers[index], GIVE_BACK + kind.encode("ascii"))
        self._give_back_timers[kind] = self._loop.call_later(
            GIVE_BACK_TIMEOUT, self._stop_waiting, kind
        )

    def _given_back(self, kind: str, index: int, count: int) -> None:
        ledger = self._ledgers.get(kind)
        if ledger is None:
            return
        ledger.returned(index, count)
        pending = self._giving_back[kind]
        if index in pending:
            pending.discard(index)
            if not pending:
                self._stop_waiting(kind)

    def _stop_waiting(self, kind: str) -> None:
        """Answer every worker waiting for slots of ``kind`` from what is free now."""
        self._giving_back[kind] = set()
        timer = self._give_back_timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        waiting, self._waiting[kind] = self._waiting[kind], []
        ledger = self._ledgers[kind]
        for worker, request in waiting:
            if worker.channel is not None:
                self._send(worker, ACQUIRE + request + COUNT.pack(ledger.grant(worker.index)))

    # -- metrics ---------------------------------------------------------------------------

    async def metrics_text(self) -> str:
        """Every worker's metrics, summed; a worker that does not answer in time is left out."""
        assert self._loop is not None
        asked = []
        for worker in self.workers:
            if worker.channel is None:
                continue
            request = next(self._requests)
            future = self._metrics[request] = self._loop.create_future()
            asked.append((request, future))
            self._send(worker, METRICS + REQUEST_ID.pack(request))
        done: set[asyncio.Future[Any]] = set()
        try:
            if asked:
                done, _ = await asyncio.wait([f for _, f in asked], timeout=METRICS_TIMEOUT)
        finally:
            for request, _ in asked:
                self._metrics.pop(request, None)
        snapshots = [f.result() for f in done if not f.cancelled()]
        # The acceptor's own guards, beside the workers'.
        snapshots.append({
            "pugfast_http_deadline_closes_total": [("", self.deadline_closes)],
            "pugfast_pending_evictions_total": [("", self.evictions)],
            "pugfast_address_cap_refusals_total": [("", self._addresses.refusals)],
        })
        return render(merge(snapshots), workers=len(self.workers))

    async def _start_metrics(self, host: str, port: int) -> None:
        self._metrics_runner = web.AppRunner(
            make_metrics_app(self.metrics_text), access_log=None, handle_signals=False
        )
        await self._metrics_runner.setup()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
        self.metrics_port = sock.getsockname()[1]
        await web.SockSite(self._metrics_runner, sock).start()
        log.info("metrics on port %d at /metrics (all workers)", self.metrics_port)
