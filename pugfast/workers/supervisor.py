"""The supervisor of ``pugfast serve --workers N``: it starts the workers, keeps them
running, answers their questions, and stops them in order.

It owns the listening socket, whose connections its Router (router.py) sends to their
workers, and beyond that does three small jobs, none of them per message:

- **Spend challenge tokens.** Workers share the key tokens are signed with, so a challenge
  from one worker is good at another; the one set of spent tokens is kept here. A worker asks
  whether a token is spent before it checks the proof, and spends it before it creates a room.
- **Share out the caps.** ``--max-rooms`` and ``--max-connections`` are the relay's, wherever
  rooms land: a CapBroker per cap grants them to workers in blocks and takes back unused slots
  when it runs out (pugfast/allowance.py).
- **Keep workers running.** A worker that dies takes its own rooms with it (their members see
  their connections end) and is started again, on a clean channel; the other workers are
  untouched. Its exit is awaited, never polled for on the loop, so routing goes on meanwhile.
  SIGTERM, SIGINT or SIGHUP stops listening, then stops every worker as a single relay stops
  (1001 to members).

With ``--metrics-listen`` the supervisor serves the sum of every worker's metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import __version__
from ..acceptor import listen, raise_open_file_limit
from ..allowance import CONNECTIONS, ROOMS, CapBroker
from ..config import Settings
from ..engine import IMPLEMENTATION
from ..metrics import LoopLag, merge, render, serve_metrics
from ..pow import SpentTokens
from . import channel
from .channel import MAX_MESSAGE, ChannelError
from .router import Router

log = logging.getLogger("pugfast.supervisor")

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
# A worker whose channel failed while it still runs is asked to stop (SIGTERM), and killed
# if it has not after its shutdown grace and this much more.
STOP_MARGIN = 10.0


class WorkerProcess:
    """One worker slot: its process, its end of the channel, and what waits to be sent to it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        # Done, with the exit code, once the current process has ended and been reaped.
        self.exited: asyncio.Future[int] | None = None
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
    """Runs the workers and the router. ``await start()``, then ``await stop()``."""

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
        n = settings.workers
        self.workers = [WorkerProcess(i) for i in range(n)]
        self.router = Router(settings, n, self._deliver)
        self._token_key = secrets.token_bytes(32)
        self._spent = SpentTokens()
        self.brokers = {
            kind: CapBroker(cap, n, self._grant, self._ask_back_of(kind))
            for kind, cap in ((ROOMS, settings.max_rooms), (CONNECTIONS, settings.max_connections))
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._requests = itertools.count(1)
        self._metrics: dict[int, asyncio.Future[Any]] = {}
        self._metrics_runner: web.AppRunner | None = None
        # With --metrics-listen, how late the supervisor's own loop runs timers: a stall
        # here holds up every new connection.
        self.loop_lag: LoopLag | None = None
        self._stopping = False
        self.restarts = 0

    # -- starting and stopping -------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        loop = self._loop = asyncio.get_running_loop()
        raise_open_file_limit()
        listener = listen(s.host, s.port)
        self.port = listener.getsockname()[1]
        for worker in self.workers:
            await self._spawn(worker)
        # Connections wait in the kernel's backlog until every worker serves, so a health
        # check never finds a relay that is listening but cannot answer yet.
        ready = [w.ready for w in self.workers if w.ready is not None]
        deadline = time.monotonic() + START_TIMEOUT
        while not all(f.done() for f in ready) and not self.failed and time.monotonic() < deadline:
            await asyncio.wait(ready, timeout=0.1)
            ready = [w.ready for w in self.workers if w.ready is not None]
        if self.failed or not all(f.done() for f in ready):
            listener.close()
            await self.stop()
            raise RuntimeError("the worker processes could not start (see the lines above)")
        self.router.start(loop, listener)
        if s.metrics_address is not None:
            self.loop_lag = LoopLag(loop)
            self.loop_lag.start()
            self._metrics_runner, self.metrics_port = await serve_metrics(
                self.metrics_text, *s.metrics_address
            )
            log.info("metrics on port %d at /metrics (all workers)", self.metrics_port)
        log.info(
            "pugfast %s listening on port %d (http; %d workers; engine: %s; loop: %s)",
            __version__, self.port, len(self.workers), IMPLEMENTATION,
            type(loop).__module__.split(".")[0],
        )

    async def stop(self) -> None:
        """Stop accepting, then stop every worker (each closes its members with 1001)."""
        if self._stopping:
            return
        self._stopping = True
        self.router.stop()
        if self.loop_lag is not None:
            self.loop_lag.stop()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        exits = [w.exited for w in self.workers if w.exited is not None and not w.exited.done()]
        if exits:
            await asyncio.wait(exits, timeout=self.shutdown_grace + STOP_MARGIN)
        for worker in self.workers:
            if worker.exited is not None and not worker.exited.done():
                log.warning("worker %d did not stop in time; killing it", worker.index + 1)
                assert worker.process is not None
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.exited
            self._close_channel(worker)
        for task in list(self._tasks):
            task.cancel()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()

    async def _spawn(self, worker: WorkerProcess) -> None:
        assert self._loop is not None
        s = self.settings
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.send(channel.encode(channel.Hello(
            settings=dataclasses.asdict(s),
            worker=worker.index,
            workers=len(self.workers),
            token_key=self._token_key,
            allowance={kind: broker.ledger.grant(worker.index) for kind, broker in self.brokers.items()},
        )))
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-B", "-m", "pugfast.workers.worker", str(theirs.fileno()),
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                # Its own session, so a Ctrl-C or a closed terminal reaches the supervisor
                # alone, which then stops the workers in order.
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        worker.channel = ours
        worker.started_at = time.monotonic()
        worker.ready = self._loop.create_future()
        worker.exited = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._from_worker, worker)
        self._run(self._await_exit(worker, worker.process, worker.exited))

    def _run(self, coroutine: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_exit(
        self, worker: WorkerProcess, process: asyncio.subprocess.Process, exited: asyncio.Future[int]
    ) -> None:
        code = await process.wait()
        exited.set_result(code)
        if worker.process is process:
            self._reaped(worker, code)

    def _close_channel(self, worker: WorkerProcess) -> None:
        channel_, worker.channel = worker.channel, None
        if channel_ is not None and self._loop is not None:
            self._loop.remove_reader(channel_.fileno())
            self._loop.remove_writer(channel_.fileno())
            channel_.close()

    def _channel_lost(self, worker: WorkerProcess, *, ended: bool) -> None:
        """The worker's channel ended: the process ended (``ended``: a worker keeps its end
        open as long as it runs), or the channel is of no more use. Nothing queued for it
        reaches its replacement; it is stopped if it still runs, and replaced once it has
        been reaped (``_reaped``)."""
        self._close_channel(worker)
        for _message, conn in worker.outbox:
            if conn is not None:
                conn.close()
        worker.outbox.clear()
        for key, count in worker.addresses.items():
            for _ in range(count):
                self.router.release(key)
        worker.addresses.clear()
        for broker in self.brokers.values():
            broker.lost(worker.index)
            if ended:
                # Its connections are gone with it: what it held is free at once.
                broker.forget(worker.index)
        process = worker.process
        if ended or self._stopping or process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        assert self._loop is not None
        self._loop.call_later(self.shutdown_grace + STOP_MARGIN, self._kill_if_running, process)

    @staticmethod
    def _kill_if_running(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def _reaped(self, worker: WorkerProcess, code: int) -> None:
        """The worker's process ended: free its share of the caps and start it again."""
        if worker.channel is not None:
            self._channel_lost(worker, ended=True)
        for broker in self.brokers.values():
            broker.forget(worker.index)
        if self._stopping:
            return
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
        assert self._loop is not None
        self._loop.call_later(RESTART_BACKOFF if quick else 0, self._respawn, worker)

    def _respawn(self, worker: WorkerProcess) -> None:
        if not self._stopping:
            self._run(self._spawn(worker))

    # -- the channel to each worker --------------------------------------------------------

    def _deliver(self, index: int, sock: socket.socket, address: bytes | None, head: bytes) -> None:
        """The router's hand-over: pass ``sock`` to worker ``index``, or, while that one is being
        replaced, to another (the rooms of the one that ended are gone at every worker)."""
        worker = self.workers[index]
        if worker.channel is None:
            live = [w for w in self.workers if w.channel is not None]
            if live:
                worker = live[index % len(live)]
        if address is not None:
            # The worker says when the connection ends, so the count stays the relay's.
            worker.addresses[address] += 1
        self._send(worker, channel.Connection(address, head), sock)

    def _send(self, worker: WorkerProcess, message: Any, conn: socket.socket | None = None) -> None:
        worker.outbox.append((channel.encode(message), conn))
        if len(worker.outbox) == 1:
            self._flush(worker)

    def _flush(self, worker: WorkerProcess) -> None:
        channel_ = worker.channel
        if channel_ is None or self._loop is None:
            return  # a starting worker gets what waited for it once its channel is open
        outbox = worker.outbox
        while outbox:
            message, conn = outbox[0]
            try:
                if conn is None:
                    channel_.send(message)
                else:
                    socket.send_fds(channel_, [message], [conn.fileno()])
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(channel_.fileno(), self._flush, worker)
                return
            except OSError as exc:
                if conn is None:
                    return  # the worker is gone; _from_worker sees the end
                # Too many descriptors in flight (ETOOMANYREFS), say: drop this connection.
                log.warning("cannot pass a connection to worker %d (%s)", worker.index + 1,
                            exc.strerror)
            outbox.popleft()
            if conn is not None:
                conn.close()  # the worker holds its own descriptor now
        self._loop.remove_writer(channel_.fileno())

    def _from_worker(self, worker: WorkerProcess) -> None:
        channel_ = worker.channel
        while channel_ is not None and worker.channel is channel_:
            try:
                data = channel_.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._channel_lost(worker, ended=False)
                return
            if not data:
                self._channel_lost(worker, ended=True)
                return
            try:
                message = channel.decode(data)
            except ChannelError as exc:
                log.error("worker %d sent what the supervisor cannot read (%s); restarting it",
                          worker.index + 1, exc)
                self._channel_lost(worker, ended=False)
                return
            self._received(worker, message)

    def _received(self, worker: WorkerProcess, message: Any) -> None:
        if isinstance(message, channel.Acquire):
            others = [w.index for w in self.workers if w.channel is not None]
            round_ = self.brokers[message.kind].acquire(
                worker.index, message.request, message.need, others
            )
            if round_ is not None:
                assert self._loop is not None
                self._loop.call_later(GIVE_BACK_TIMEOUT, self.brokers[message.kind].end_round, round_)
        elif isinstance(message, channel.GivenBack):
            self.brokers[message.kind].given_back(worker.index, message.count)
        elif isinstance(message, channel.Closed):
            if worker.addresses[message.address] > 0:
                worker.addresses[message.address] -= 1
                if not worker.addresses[message.address]:
                    del worker.addresses[message.address]
                self.router.release(message.address)
        elif isinstance(message, channel.SpentQuestion):
            self._spent.forget_expired(time.monotonic())
            self._send(worker, channel.SpentAnswer(message.request, message.token in self._spent))
        elif isinstance(message, channel.TokenClaim):
            fresh = self._spent.add(message.token, time.monotonic())
            self._send(worker, channel.TokenAnswer(message.request, fresh))
        elif isinstance(message, channel.MetricsReport):
            future = self._metrics.get(message.request)
            if future is not None and not future.done():
                future.set_result(message.data)
        elif isinstance(message, channel.Ready) and worker.ready is not None and not worker.ready.done():
            worker.ready.set_result(None)

    # -- the relay-wide caps ---------------------------------------------------------------

    def _grant(self, index: int, request: int, count: int) -> None:
        worker = self.workers[index]
        if worker.channel is not None:  # else the request died with the worker's channel
            self._send(worker, channel.Grant(request, count))

    def _ask_back_of(self, kind: str) -> Callable[[int], None]:
        def ask_back(index: int) -> None:
            self._send(self.workers[index], channel.GiveBack(kind))

        return ask_back

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
            self._send(worker, channel.MetricsWanted(request))
        done: set[asyncio.Future[Any]] = set()
        try:
            if asked:
                done, _ = await asyncio.wait([f for _, f in asked], timeout=METRICS_TIMEOUT)
        finally:
            for request, _ in asked:
                self._metrics.pop(request, None)
        snapshots = [f.result() for f in done if not f.cancelled()]
        # The router's own guards, beside the workers'.
        router = self.router
        snapshots.append({
            "pugfast_http_deadline_closes_total": [("", router.deadline_closes)],
            "pugfast_pending_evictions_total": [("", router.evictions)],
            "pugfast_address_cap_refusals_total": [("", router.addresses.refusals)],
            **(self.loop_lag.snapshot() if self.loop_lag is not None else {}),
        })
        return render(merge(snapshots), workers=len(self.workers))
