"""One load-generating worker: its share of the rooms, on its own event loop.

A worker creates its rooms through the HTTP API, joins every member, runs the load and
reports its counters. The controller (control.py) drives workers through a pipe, so that
all of them join and start together: it sends ``("join",)``, then
``("start", t0, window_start, window_end)`` in monotonic nanoseconds; a worker answers
``("created", n)``, ``("joined", stats)``, ``("progress", snapshot)`` now and then, and finally
``("result", counters)``, or ``("error", text)`` at any point.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..pow import solve
from .client import JoinError, Member, OpenLoop, Room, Stats, upgrade_request
from .histogram import Histogram

PROGRESS_INTERVAL = 0.5
JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Plan:
    """What to run. ``rooms`` and ``rate`` are a worker's share when handed to one."""

    url: str
    rooms: int = 10
    members: int = 2
    payload: int = 256
    mode: str = "lockstep"  # lockstep, open or idle
    burst: int = 1
    rate: float = 0.0
    duration: float = 10.0
    warmup: float = 2.0
    drain: float = 5.0
    concurrency: int = 100
    source_addresses: int = 1
    insecure: bool = False
    event_loop: str = "uvloop"
    ttl: int = 3600
    max_message_bytes: int = 1 << 20


class Endpoint:
    """Where the relay is, split from the URL the user gave (http, https, ws or wss)."""

    def __init__(self, url: str, insecure: bool) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"the URL must be http(s):// or ws(s):// (got {url!r})")
        self.tls = parts.scheme in ("https", "wss")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc
        self.api = f"{'https' if self.tls else 'http'}://{parts.netloc}"
        self.ssl: ssl.SSLContext | None = None
        if self.tls:
            self.ssl = ssl.create_default_context()
            if insecure:
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE

    def source_addresses(self, count: int) -> list[tuple[str, int] | None]:
        """Local addresses to spread connections over (loopback targets only)."""
        if count <= 1:
            return [None]
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback or ":" in self.host:
            raise ValueError("--source-addresses needs an IPv4 loopback target such as 127.0.0.1")
        return [(f"127.0.0.{1 + i}", 0) for i in range(min(count, 254))]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Worker:
    def __init__(self, plan: Plan, index: int, chan: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.plan = plan
        self.index = index
        self.chan = chan
        self.loop = loop
        self.endpoint = Endpoint(plan.url, plan.insecure)
        self.stats = Stats()
        self.rooms: list[Room] = []
        self.phase = "create"
        self.join_latency = Histogram()
        self.cpu: dict[str, float] = {}

    # -- talking to the controller -------------------------------------------------------

    def send(self, *message: Any) -> None:
        self.chan.send(message)

    async def recv(self) -> tuple[Any, ...]:
        chan = self.chan
        while not chan.poll():
            ready: asyncio.Future[None] = self.loop.create_future()
            self.loop.add_reader(chan.fileno(), _settle, ready)
            try:
                await ready
            finally:
                self.loop.remove_reader(chan.fileno())
        message = chan.recv()
        if message[0] == "abort":
            raise asyncio.CancelledError("aborted by the controller")
        return tuple(message)

    # -- the phases ----------------------------------------------------------------------

    async def run(self) -> None:
        await self.create_rooms()
        self.send("created", len(self.rooms))
        await self.recv()  # ("join",)
        self.phase = "join"
        started = time.monotonic_ns()
        await self.join_all()
        joins = self.join_latency.count
        self.send("joined", {
            "joins": joins,
            "seconds": (time.monotonic_ns() - started) / 1e9,
            "latency": self.join_latency.to_state(),
            "errors": dict(self.stats.errors),
        })
        _, t0, window_start, window_end = await self.recv()
        await self.measure(t0, window_start, window_end)
        self.send("result", self.result())

    async def create_rooms(self) -> None:
        plan = self.plan
        limit = asyncio.Semaphore(min(plan.concurrency, 64))
        connector = aiohttp.TCPConnector(limit=min(plan.concurrency, 64),
                                         ssl=self.endpoint.ssl or False)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def create() -> None:
                async with limit:
                    room = await self._create_room(session)
                if room is not None:
                    self.rooms.append(room)

            await asyncio.gather(*(create() for _ in range(plan.rooms)))

    async def _create_room(self, session: aiohttp.ClientSession) -> Room | None:
        plan, api = self.plan, self.endpoint.api
        try:
            async with session.post(f"{api}/api/challenge") as response:
                if response.status != 200:
                    self.stats.error(f"challenge_http_{response.status}")
                    return None
                challenge = await response.json(content_type=None)
            difficulty = int(challenge["difficulty"])
            nonce = solve(challenge["token"], difficulty) if difficulty else "0"
            body = {"token": challenge["token"], "nonce": nonce, "ttl": plan.ttl,
                    "capacity": plan.members}
            async with session.post(f"{api}/api/rooms", json=body) as response:
                answer = await response.json(content_type=None)
                if response.status != 201:
                    self.stats.error(f"create_http_{response.status}_{answer.get('error', '')}")
                    return None
        except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            self.stats.error(f"create_{type(exc).__name__}")
            return None
        if int(answer.get("capacity", plan.members)) < plan.members:
            self.stats.error("capacity_below_members")
        return Room(answer["room"], answer["secret"], plan.payload, self.stats)

    async def join_all(self) -> None:
        plan = self.plan
        limit = asyncio.Semaphore(plan.concurrency)
        sources = self.endpoint.source_addresses(plan.source_addresses)
        jobs = []
        n = 0
        for room in self.rooms:
            for _ in range(plan.members):
                member = Member(room, self.stats, upgrade_request(self.endpoint.host_header,
                                                                  room.room_id),
                                plan.max_message_bytes)
                room.members.append(member)
                jobs.append(self._join(member, limit, sources[n % len(sources)]))
                n += 1
        await asyncio.gather(*jobs)

    async def _join(self, member: Member, limit: asyncio.Semaphore,
                    source: tuple[str, int] | None) -> None:
        async with limit:
            started = time.monotonic_ns()
            try:
                await asyncio.wait_for(self._connect(member, source), JOIN_TIMEOUT)
            except JoinError as exc:
                self.stats.error(str(exc))
            except asyncio.TimeoutError:
                self.stats.error("join_timeout")
                member.abort()
            except OSError as exc:
                self.stats.error(f"connect_{type(exc).__name__}")
            else:
                self.join_latency.record(time.monotonic_ns() - started)

    async def _connect(self, member: Member, source: tuple[str, int] | None) -> None:
        endpoint = self.endpoint
        await self.loop.create_connection(
            lambda: member, endpoint.host, endpoint.port, ssl=endpoint.ssl,
            local_addr=source,
            server_hostname=endpoint.host if endpoint.ssl is not None else None,
        )
        await member.joined

    async def measure(self, t0: int, window_start: int, window_end: int) -> None:
        plan, stats, loop = self.plan, self.stats, self.loop
        stats.tally.window_start = window_start
        stats.tally.window_end = window_end
        await asyncio.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
        self.phase = "run"
        progress = loop.call_later(PROGRESS_INTERVAL, self._progress)
        # The generator's own CPU time over the window says whether it, not the relay, was
        # the limit.
        for at, key in ((window_start, "cpu_start"), (window_end, "cpu_end")):
            loop.call_later(max(0.0, (at - time.monotonic_ns()) / 1e9), self._take_cpu, key)
        try:
            if plan.mode == "lockstep":
                for room in self.rooms:
                    room.start_lockstep(plan.burst)
                await self._sleep_until(window_end)
                for room in self.rooms:
                    room.stop()
                self.phase = "drain"
                await self._drain(window_end, lambda: all(
                    r.outstanding <= 0 or r.stalled for r in self.rooms))
            elif plan.mode == "open":
                members = [m for r in self.rooms for m in r.joined]
                fanout = {}
                for room in self.rooms:
                    joined = room.joined
                    for m in joined:
                        fanout[m] = len(joined) - 1
                sender = OpenLoop(loop, members, fanout, plan.rate, stats)
                sender.start(window_end)
                await sender.done
                self.phase = "drain"
                await self._drain(window_end, lambda: True)
            else:
                await self._sleep_until(window_end)
        finally:
            progress.cancel()
            stats.closing = True
            for room in self.rooms:
                room.stop()
                for member in room.members:
                    if member.transport is not None:
                        member.transport.close()
            await asyncio.sleep(0)

    def _take_cpu(self, key: str) -> None:
        self.cpu[key] = time.process_time()

    async def _sleep_until(self, deadline_ns: int) -> None:
        delay = (deadline_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)

    async def _drain(self, window_end: int, settled: Any) -> None:
        """Wait for the window's messages still in flight, up to ``plan.drain`` seconds."""
        tally = self.stats.tally
        deadline = window_end + int(self.plan.drain * 1e9)
        while time.monotonic_ns() < deadline:
            if tally.delivered >= tally.expected and settled():
                return
            await asyncio.sleep(0.005)

    def _progress(self) -> None:
        s, t = self.stats, self.stats.tally
        self.send("progress", {
            "phase": self.phase,
            "sent": t.sent_total,
            "received": t.received_total,
            "received_in_window": t.received_in_window,
            "delivered": t.delivered,
            "expected": t.expected,
            "errors": sum(s.errors.values()),
            "latency": s.latency.to_state(),
        })
        self.loop.call_later(PROGRESS_INTERVAL, self._progress)

    def result(self) -> dict[str, Any]:
        s, t = self.stats, self.stats.tally
        return {
            "rooms": len(self.rooms),
            "connections": self.join_latency.count,
            "sent_total": t.sent_total,
            "sent": t.sent_window,
            "expected": t.expected,
            "delivered": t.delivered,
            "received_total": t.received_total,
            "received_in_window": t.received_in_window,
            "out_of_order": t.out_of_order,
            "gaps": t.gaps,
            "stalled_rooms": sum(1 for r in self.rooms if r.stalled),
            "latency": s.latency.to_state(),
            "errors": dict(s.errors),
            "cpu_s": self.cpu.get("cpu_end", 0.0) - self.cpu.get("cpu_start", 0.0),
        }


def run_worker(plan: Plan, index: int, chan: Any) -> None:
    """Run one worker to the end on a new event loop (in a thread or a process)."""
    loop: asyncio.AbstractEventLoop
    if plan.event_loop == "uvloop":
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(Worker(plan, index, chan, loop).run())
    except asyncio.CancelledError:
        pass
    except BaseException as exc:  # reported to the controller, whatever it was
        with contextlib.suppress(OSError):
            chan.send(("error", f"worker {index}: {type(exc).__name__}: {exc}"))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
