"""Running the relay: the listening socket, the gateway's timers, and a clean shutdown.

A relay either listens itself, or (as one worker of ``--workers N``) takes the connections
its supervisor hands it over a WorkerLink and never opens a socket of its own.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import __version__
from .acceptor import BACKLOG, RESERVED_DESCRIPTORS, Acceptor, listen, raise_open_file_limit
from .app import make_app
from .collector import FreezeSurvivors
from .config import Settings
from .engine import IMPLEMENTATION
from .frontdoor import Entrance
from .gateway import Gateway
from .metrics import LoopLag, render, serve_metrics, snapshot
from .registry import RoomIds
from .workers.link import WorkerLink

log = logging.getLogger("pugfast")

# Each stops the relay the same way: every member is closed with 1001, then exit 0. SIGHUP
# is what closing the terminal that runs `pugfast serve` sends.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_on_event_loop(event_loop: str, main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main()`` to completion on a new loop of the kind ``--event-loop`` names, then
    close the loop. Raises ImportError when uvloop is asked for and not installed."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if event_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    loop = factory()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        try:
            _finish_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _finish_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is still running and let it end, as ``asyncio.run`` does.

    aiohttp's shutdown cancels the handler of a connection it was still serving (one that
    lingers over an unread request body, say) but does not wait for the cancellation to be
    delivered; closing the loop first would destroy those tasks pending, each with an ERROR
    line in the log.
    """
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({
                "message": "a task failed while the relay was stopping",
                "exception": task.exception(),
                "task": task,
            })


class Relay:
    """One running relay. ``await start()``, then ``await stop()`` (or ``async with``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        shutdown_grace: float = 2.0,
        link: WorkerLink | None = None,
        on_link_lost: Callable[[], None] = lambda: None,
        freeze_survivors: bool = False,
    ) -> None:
        self.settings = settings
        self.link = link
        # A process of its own (not a relay inside a test, say) keeps the garbage collector's
        # pauses short (pugfast/collector.py).
        self._freeze_survivors = freeze_survivors
        self._collector: FreezeSurvivors | None = None
        self._on_link_lost = on_link_lost
        self._adopting: set[asyncio.Task[None]] = set()
        # How long members get to hang up after the 1001 close before they are dropped.
        self.shutdown_grace = shutdown_grace
        self.gateway: Gateway | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._entrance: Entrance | None = None
        self._server: asyncio.Server | None = None
        self._acceptor: Acceptor | None = None
        self._metrics_runner: web.AppRunner | None = None
        # With --metrics-listen, how late the loop runs timers (a stall shows on a dashboard).
        self.loop_lag: LoopLag | None = None

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        link = self.link
        files = raise_open_file_limit()
        if link is None:
            gateway = Gateway(s, loop, ids=RoomIds(s.node))
        else:
            gateway = Gateway(
                s, loop, ids=RoomIds(s.node, link.index, link.workers),
                token_key=link.token_key, shared=link, allowance=link.allowance,
            )
        self.gateway = gateway
        # No access log: it would name rooms (in paths) and addresses.
        self._runner = web.AppRunner(
            make_app(gateway), access_log=None, handle_signals=False, shutdown_timeout=1.0,
            keepalive_timeout=s.keepalive_timeout, lingering_time=s.request_timeout,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        # Every connection starts at the front door, which answers WebSocket upgrades itself
        # and hands everything else to aiohttp's server (pugfast/frontdoor.py).
        self._entrance = Entrance(gateway, self._runner.server, tls=s.tls)
        self._entrance.start(loop)
        gateway.start_liveness()
        if s.metrics_address is not None:
            self.loop_lag = LoopLag(loop)
            self.loop_lag.start()
        # What start-up made (modules, the application, tables) lives as long as the relay:
        # the cyclic garbage collector need not walk it again at every full collection, which
        # with many connections open comes round often during a join storm.
        gc.freeze()
        if self._freeze_survivors and FreezeSurvivors.suits(loop):
            self._collector = FreezeSurvivors(loop)
            self._collector.start()
        if link is not None:
            self._entrance.release_address = link.connection_closed
            link.start(loop, self._adopt, lambda: snapshot(gateway, self.loop_lag), gateway.give_back,
                       self._on_link_lost)
            log.debug("worker %d of %d ready (engine: %s)", link.index + 1, link.workers,
                      IMPLEMENTATION)
            return
        sock = listen(s.host, s.port)
        self.port = sock.getsockname()[1]
        if type(loop).__module__.startswith("uvloop"):
            self._server = await loop.create_server(
                self._entrance, sock=sock, ssl=self._ssl_context(), backlog=BACKLOG
            )
        else:
            # The standard library's server spins and logs when descriptors run out.
            self._acceptor = Acceptor(loop, sock, self._entrance, self._ssl_context())
            self._entrance.descriptor_freed = self._acceptor.descriptor_freed
            self._acceptor.start()
        if s.metrics_address is not None:
            async def text() -> str:
                return render(snapshot(gateway, self.loop_lag))

            self._metrics_runner, self.metrics_port = await serve_metrics(text, *s.metrics_address)
            log.info("metrics on port %d at /metrics", self.metrics_port)
        # The port, not the address: no log line names an IP address, not even our own.
        log.info(
            "pugfast %s listening on port %d (%s; engine: %s; loop: %s)",
            __version__, self.port, "https" if s.tls else "http", IMPLEMENTATION,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        log.info("open files: up to %d, room for about %d connections",
                 files, max(0, files - RESERVED_DESCRIPTORS))

    def _adopt(self, sock: socket.socket, address: bytes | None, head: bytes) -> None:
        """Serve a connection the supervisor accepted, as if this relay had accepted it and
        read ``head`` from it; ``address`` is its key when the supervisor counts connections
        per address."""
        assert self._entrance is not None
        task = asyncio.get_running_loop().create_task(
            self._serve_accepted(self._entrance, sock, address, head)
        )
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    @staticmethod
    async def _serve_accepted(
        entrance: Entrance, sock: socket.socket, address: bytes | None, head: bytes
    ) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: entrance(address, head), sock
            )
        except OSError:
            sock.close()
            if address is not None:
                entrance.release_address(address)

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(s.tls_cert, s.tls_key)  # type: ignore[arg-type]
        return context

    async def stop(self) -> None:
        """Stop listening, close every member with 1001, then release everything.

        Calling it again does nothing.
        """
        if self.gateway is not None:
            self.gateway.stop_liveness()
        if self.loop_lag is not None:
            self.loop_lag.stop()
        if self._collector is not None:
            self._collector.stop()
        if self.link is not None:
            self.link.close()
        # First refuse new connections, so none arrives while members are being closed (and
        # a load balancer's health check fails at once).
        server, self._server = self._server, None
        if server is not None:
            server.close()
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
        if self._entrance is not None:
            self._entrance.stop()
            self._entrance.close_pending()
        if self.gateway is not None:
            await self.gateway.close_all(self.shutdown_grace)
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._metrics_runner = None

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
