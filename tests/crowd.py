"""Many clients at once, for tests of a relay's caps under a burst: rooms created and members
joined concurrently over real loopback sockets, each kept open until the test ends.

The joins speak RFC 6455 through plain asyncio streams (as support.RawClient does), with only
what a join needs, so that one test process can hold ten thousand of them.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import resource
from typing import Any

import aiohttp
import orjson
from engines import client_frame


def allow_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files so that ``needed`` sockets fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def create_rooms(base: str, count: int, concurrency: int = 64, **fields: Any) -> list[Any]:
    """Create ``count`` rooms at once, ``concurrency`` at a time: each a room's answer (a dict)
    or the status of a refusal (an int)."""
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> Any:
            async with gate:
                async with session.post(f"{base}/api/challenge") as response:
                    token = (await response.json())["token"]
                body = {"token": token, "nonce": "0", **fields}
                async with session.post(f"{base}/api/rooms", json=body) as response:
                    return await response.json() if response.status == 201 else response.status

        return await asyncio.gather(*(one() for _ in range(count)))


class Crowd:
    """Members joining rooms at once; ``outcomes`` counts how each attempt ended:
    ``welcome``, ``http 503`` (or another status), or ``close NNNN``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._writers: list[asyncio.StreamWriter] = []

    async def join(self, rooms: list[dict[str, Any]], per_room: int, concurrency: int = 1000) -> None:
        """``per_room`` members into each of ``rooms``, ``concurrency`` in flight at a time;
        every connection stays open (until ``close``).

        Keep ``concurrency`` under the relay's --max-pending-connections: this one process
        cannot write every request the moment its connection opens, so a relay would rightly
        take the slowest of a larger crowd for slow clients."""
        gate = asyncio.Semaphore(concurrency)

        async def one(room: dict[str, Any]) -> None:
            async with gate:
                self.outcomes[await self._join(room)] += 1

        await asyncio.gather(*(one(room) for room in rooms for _ in range(per_room)))

    async def _join(self, room: dict[str, Any]) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers.append(writer)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /r/{room['room']}/ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = int(head.split(b" ", 2)[1])
            if status != 101:
                return f"http {status}"
            writer.write(client_frame(1, orjson.dumps({"type": "join", "secret": room["secret"]})))
            while True:
                b0, b1 = await asyncio.wait_for(reader.readexactly(2), 30)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                payload = await reader.readexactly(n)
                if b0 & 0x0F == 8:
                    return f"close {int.from_bytes(payload[:2], 'big')}"
                if b0 & 0x0F == 1 and orjson.loads(payload)["type"] == "welcome":
                    return "welcome"
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError) as exc:
            return type(exc).__name__

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._writers.clear()
