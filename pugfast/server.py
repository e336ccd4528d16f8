"""Running the relay: the listening socket, the liveness sweep, and a clean shutdown.

A relay either listens itself, or (as one worker of ``--workers N``) takes the connections
its supervisor hands it over a WorkerLink and never opens a socket of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import __version__
from .app import make_app
from .config import Settings
from .gateway import Gateway
from .metrics import make_metrics_app, render, snapshot
from .registry import RoomIds
from .speedups import IMPLEMENTATION
from .worker import WorkerLink

log = logging.getLogger("pugfast")

# Connections the kernel may hold before they are accepted: enough for a join storm (the
# kernel caps it at net.core.somaxconn).
BACKLOG = 4096


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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
        loop.close()


class Relay:
    """One running relay. ``await start()``, then ``await stop()`` (or ``async with``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        shutdown_grace: float = 2.0,
        link: WorkerLink | None = None,
        on_link_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.link = link
        self._on_link_lost = on_link_lost
        self._adopting: set[asyncio.Task[None]] = set()
        # How long members get to hang up after the 1001 close before they are dropped.
        self.shutdown_grace = shutdown_grace
        self.gateway: Gateway | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        link = self.link
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
            make_app(gateway), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        self._sweeper = loop.create_task(gateway.sweep_forever())
        if link is not None:
            link.start(loop, self._adopt, lambda: snapshot(gateway), gateway.give_back,
                       self._on_link_lost)
            log.debug("worker %d of %d ready (engine: %s)", link.index + 1, link.workers,
                      IMPLEMENTATION)
            return
        sock = socket.create_server((s.host, s.port), family=_family(s.host), backlog=BACKLOG)
        self.port = sock.getsockname()[1]
        # aiohttp listens again on the socket it is given, with its own backlog unless told.
        self._site = web.SockSite(
            self._runner, sock, ssl_context=self._ssl_context(), backlog=BACKLOG
        )
        await self._site.start()
        if s.metrics_address is not None:
            await self._start_metrics(*s.metrics_address)
        # The port, not the address: no log line names an IP address, not even our own.
        log.info(
            "pugfast %s listening on port %d (%s; engine: %s; loop: %s)",
            __version__, self.port, "https" if s.tls else "http", IMPLEMENTATION,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def _adopt(self, sock: socket.socket) -> None:
        """Serve a connection the supervisor accepted, as if this relay had accepted it."""
        assert self._runner is not None and self._runner.server is not None
        task = asyncio.get_running_loop().create_task(self._serve_accepted(self._runner.server, sock))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    @staticmethod
    async def _serve_accepted(server: web.Server, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(server, sock)
        except OSError:
            sock.close()

    async def _start_metrics(self, host: str, port: int) -> None:
        gateway = self.gateway
        assert gateway is not None

        async def text() -> str:
            return render(snapshot(gateway))

        self._metrics_runner = web.AppRunner(
            make_metrics_app(text), access_log=None, handle_signals=False
        )
        await self._metrics_runner.setup()
        sock = socket.create_server((host, port), family=_family(host))
        self.metrics_port = sock.getsockname()[1]
        await web.SockSite(self._metrics_runner, sock).start()
        log.info("metrics on port %d at /metrics", self.metrics_port)

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
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if self.link is not None:
            self.link.close()
        site, self._site = self._site, None
        if site is not None:
            # First refuse new connections, so none arrives while members are being closed
            # (and a load balancer's health check fails at once).
            await site.stop()
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
