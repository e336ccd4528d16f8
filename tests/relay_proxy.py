"""A man in the middle on loopback, for forward-secrecy tests: it forwards HTTP requests and
WebSocket frames between clients (the page, ``pugfast chat``, the library) and a real relay,
records every frame the relay sends to a member, and can change or drop frames in transit.

Clients use the proxy's origin in their links; it rewrites the ``Origin`` header to the
relay's, as a TLS-terminating proxy that serves the same site would. It runs an event loop of
its own in a thread, so synchronous tests (Playwright's sync API) can use it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

# Called as tamper(frame) for every binary frame the relay sends to a member (the sender's id
# in its first 4 bytes); returns the frame to deliver, or None to drop it.
Tamper = Callable[[bytes], bytes | None]


@dataclass
class RelayProxy:
    relay: str  # http://127.0.0.1:PORT
    recording: list[bytes] = field(default_factory=list)
    tamper: Tamper | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def link(self, link: str) -> str:
        """``link`` (to the relay) as a link through the proxy."""
        return link.replace(self.relay, self.url, 1)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)

    def _headers(self, request: web.Request) -> dict[str, str]:
        skip = {"host", "origin", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
                "sec-websocket-extensions", "content-length", "accept-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        if "Origin" in request.headers:
            headers["Origin"] = self.relay
        return headers

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        async with self._session.request(request.method, self.relay + request.path_qs,
                                         headers=self._headers(request), data=await request.read(),
                                         allow_redirects=False) as upstream:
            body = await upstream.read()
            headers = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding", "connection")}
            return web.Response(status=upstream.status, body=body, headers=headers)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with self._session.ws_connect(self.relay.replace("http", "ws", 1) + request.path_qs,
                                            headers={"Origin": self.relay}) as upstream:

            async def to_relay() -> None:
                async for msg in client:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await upstream.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await upstream.send_bytes(msg.data)
                await upstream.close()

            async def to_client() -> None:
                async for msg in upstream:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await client.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        self.recording.append(bytes(msg.data))
                        frame = self.tamper(bytes(msg.data)) if self.tamper else bytes(msg.data)
                        if frame is not None:
                            await client.send_bytes(frame)
                code = upstream.close_code
                await client.close(code=1001 if code in (None, 1005, 1006) else code)

            tasks = [asyncio.ensure_future(to_relay()), asyncio.ensure_future(to_client())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        return client

    def close(self) -> None:
        async def stop() -> None:
            await self._session.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
