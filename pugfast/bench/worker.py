"""One load-generating worker: its share of the rooms, on its own event loop.

A worker creates its rooms through the HTTP API, joins every member, runs the load and
reports what it counted. The controller (control.py) drives workers through a pipe, so that
all of them join and start together: it sends ``("join",)``, then ``("start", t0,
window_start, window_end, stage_starts)`` in monotonic nanoseconds, and may send ``("stop",)``
to end the load early (``--abort-on-fail``). A worker answers ``("created", n)``, ``("joined",
stats)``, a ``("slice", row)`` at every cut of the time series (every ``--interval`` from the
window's start, and where each stage starts), and finally ``("result", counters)``; or
``("error", text)`` at any point.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import ipaddress
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..engine import OpenLoopSender
from ..pow import solve
from .client import JoinError, Member, Pacer, Room, Stats, upgrade_request
from .histogram import Histogram
from .schedule import TICK_NS, Schedule

JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Plan:
    """What to run. ``rooms`` and ``schedule`` are a worker's share when handed to one."""

    url: str
    rooms: int = 10
    members: int = 2
    payload: int = 256
    mode: str = "lockstep"  # lockstep, open or idle
    burst: int = 1
    schedule: Schedule | None = None  # the open loop's, from the warm-up's start
    duration: float = 10.0
    warmup: float = 2.0
    drain: float = 5.0
    interval: float = 1.0
    concurrency: int = 100
    source_addresses: int = 1
    insecure: bool = False
    event_loop: str = "uvloop"
    ttl: int = 3600
    answer_pings: bool = True
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
        self.stats = Stats(plan.answer_pings)
        self.rooms: list[Room] = []
        self.join_latency = Histogram()
        self.cpu: dict[str, float] = {}
        self.stopping: asyncio.Event | None = None
        self.pacer: Pacer | None = None
        # Where the last row of the time series ended, and the window's counters then (from
        # nothing: the tally and the errors count only what happens from the window's start).
        self.cut_at = 0
        self.cut_counts = (0, 0, 0)
        self.window = (0, 0)
        self.stage_starts: list[int] = []
        self.measured_ns = 0
        self.t0 = 0
        self.cut_handle: asyncio.TimerHandle | None = None

    # -- talking to the controller -------------------------------------------------------

    def send(self, *message: Any) -> None:
        self.chan.send(message)

    async def recv(self) -> tuple[Any, ...]:
        message = await self._next_message()
        if message[0] == "abort":
            raise asyncio.CancelledError("aborted by the controller")
        return message

    async def _next_message(self) -> tuple[Any, ...]:
        chan = self.chan
        while not chan.poll():
            ready: asyncio.Future[None] = self.loop.create_future()
            self.loop.add_reader(chan.fileno(), _settle, ready)
            try:
                await ready
            finally:
                self.loop.remove_reader(chan.fileno())
        return tuple(chan.recv())

    # -- the phases ----------------------------------------------------------------------

    async def run(self) -> None:
        await self.create_rooms()
        self.send("created", len(self.rooms), dict(self.stats.errors))
        await self.recv()  # ("join",)
        started = time.monotonic_ns()
        await self.join_all()
        # Everything the run keeps (members, rooms, the HTTP session) exists now: a full
        # collection here and a freeze keep the garbage collector from walking it all again in
        # the window, a pause of tens of milliseconds with a thousand members that would count
        # as the relay's latency (the generator's own stall).
        gc.collect()
        gc.freeze()
        self.send("joined", {
            "joins": self.join_latency.count,
            "seconds": (time.monotonic_ns() - started) / 1e9,
            "latency": self.join_latency.to_state(),
        })
        _, t0, window_start, window_end, stage_starts = await self.recv()
        self.stage_starts = list(stage_starts)
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
        self.t0 = t0
        self.window = (window_start, window_end)
        self.cut_at = window_start
        self.stopping = asyncio.Event()
        listening = loop.create_task(self._listen())
        self._call_at(window_start, self._open_window)
        await self._sleep_until(t0)
        try:
            if plan.mode == "lockstep":
                for room in self.rooms:
                    room.start_lockstep(plan.burst)
                await self._sleep_until(window_end)
                for room in self.rooms:
                    room.stop()
                self._end_window()
                await self._drain(window_end, lambda: all(
                    r.outstanding <= 0 or r.stalled for r in self.rooms))
            elif plan.mode == "open":
                await self._open_loop(t0)
                self._end_window()
                await self._drain(window_end, lambda: True)
            else:
                await self._sleep_until(window_end)
                self._end_window()
        finally:
            if self.cut_handle is not None:
                self.cut_handle.cancel()
            listening.cancel()
            if self.pacer is not None:
                self.pacer.stop()
            stats.closing = True
            for room in self.rooms:
                room.stop()
            # The last row takes everything not yet reported (see _slice).
            self._slice(time.monotonic_ns())
            for room in self.rooms:
                for member in room.members:
                    if member.transport is not None:
                        member.transport.close()
            await asyncio.sleep(0)

    async def _open_loop(self, t0: int) -> None:
        members = [m for r in self.rooms for m in r.joined]
        fanout = {id(r): len(r.joined) - 1 for r in self.rooms}
        assert self.plan.schedule is not None
        sender = OpenLoopSender(self.stats.tally, [m.source for m in members],
                                [m.write for m in members],
                                [fanout[id(m.room)] for m in members], time.monotonic_ns)
        self.pacer = Pacer(self.loop, sender, self.plan.schedule, t0)
        if not members:
            return
        self.pacer.start()
        assert self.stopping is not None
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([self.pacer.done, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            self.pacer.stop()

    async def _listen(self) -> None:
        """Hears the controller while the load runs: ``("stop",)`` or ``("abort",)`` ends it
        early."""
        assert self.stopping is not None
        await self._next_message()
        self.stopping.set()

    def _call_at(self, at_ns: int, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once the monotonic clock has reached ``at_ns``, never before: the
        loop's timers count whole milliseconds and may fire early (a row cut early would end
        before the time it is labelled with). ``cut_handle`` is its handle, to cancel it."""

        def due() -> None:
            if time.monotonic_ns() < at_ns:
                self._call_at(at_ns, callback)
            else:
                callback()

        delay = (at_ns - time.monotonic_ns()) / 1e9
        self.cut_handle = self.loop.call_later(max(0.0, delay), due)

    def _open_window(self) -> None:
        """The window opens: the generator's CPU time starts here (its CPU over the window says
        whether it, not the relay, was the limit), and the time series is cut from here on.

        Nothing is counted here: this may run late, after the first messages due in the
        window were written and delivered (a busy or stopped generator, or a tick that fires
        first), and those belong to the window all the same. The tally counts only what
        belongs to the window and the rows start from nothing, so every one is in a row."""
        self._take_cpu("cpu_start")
        self._call_at(self._next_cut(self.cut_at), self._cut)

    def _end_window(self) -> None:
        """The window is over (at its end, or early when stopped)."""
        start, end = self.window
        stopped = self.stopping is not None and self.stopping.is_set()
        self.measured_ns = max(0, min(time.monotonic_ns(), end) - start) if stopped else end - start
        if "cpu_end" not in self.cpu:
            self._take_cpu("cpu_end")

    def _take_cpu(self, key: str) -> None:
        self.cpu.setdefault(key, time.process_time())

    # -- the time series -----------------------------------------------------------------

    def _next_cut(self, after: int) -> int:
        """The first cut after ``after``: the interval grid from the window's start, the
        window's end and the stages' starts."""
        start, end = self.window
        step = max(1, round(self.plan.interval * 1e9))
        cut = start + ((after - start) // step + 1) * step
        if after < end:
            cut = min(cut, end)
        later = [s for s in self.stage_starts if s > after]
        return min(cut, later[0]) if later else cut

    def _cut(self) -> None:
        nxt = self._next_cut(self.cut_at)
        self._slice(nxt)
        self._call_at(self._next_cut(nxt), self._cut)

    def _slice(self, end: int) -> None:
        """Reports the time series' row from the last cut to ``end`` (monotonic ns), with
        everything counted since the last cut.

        Nothing is counted before the window's start, and no cut is taken before its time, so
        whatever a row holds was counted after it started: a row that would end where it
        starts (the load ended before the window opened) holds nothing, and is not sent."""
        start = self.cut_at
        if end <= start:
            return
        window_start, window_end = self.window
        tally, stats = self.stats.tally, self.stats
        # Sent: the window's messages written during the row (all of them, summed over rows);
        # delivered: what arrived during it, from the window's start on.
        counts = (tally.sent_window, tally.received_in_window + tally.received_after_window,
                  stats.window_errors)
        sent, received, errors = (now - then for now, then in zip(counts, self.cut_counts,
                                                                  strict=True))
        self.cut_at, self.cut_counts = end, counts
        latency, lag = stats.take_latency()
        offered = self._offered(start, min(end, window_end)) if start < window_end else 0
        measuring = start < window_end
        stage = (bisect.bisect_right(self.stage_starts, start) - 1
                 if measuring and self.stage_starts else None)
        self.send("slice", {
            "phase": "measure" if measuring else "drain",
            "start_s": (start - window_start) / 1e9, "end_s": (end - window_start) / 1e9,
            "stage": stage, "offered": offered, "sent": sent, "delivered": received,
            "errors": errors, "latency": latency.to_state(), "lag": lag.to_state(),
        })

    async def _sleep_until(self, deadline_ns: int) -> None:
        """Until ``deadline_ns``, or until the controller says stop."""
        delay = (deadline_ns - time.monotonic_ns()) / 1e9
        if delay > 0 and self.stopping is not None and not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _drain(self, window_end: int, settled: Any) -> None:
        """Wait for the window's end, then for its messages still in flight, up to
        ``plan.drain`` seconds."""
        await self._sleep_until(window_end)
        tally = self.stats.tally
        deadline = window_end + int(self.plan.drain * 1e9)
        while time.monotonic_ns() < deadline and not (
                self.stopping is not None and self.stopping.is_set()):
            if tally.delivered >= tally.expected and settled():
                return
            await asyncio.sleep(0.005)

    def result(self) -> dict[str, Any]:
        t = self.stats.tally
        return {
            "counts": {
                "rooms": len(self.rooms),
                "connections": self.join_latency.count,
                "offered": self._offered(*self.window),
                "sent_total": t.sent_total,
                "sent": t.sent_window,
                "expected": t.expected,
                "delivered": t.delivered,
                "received_total": t.received_total,
                "received_in_window": t.received_in_window,
                "out_of_order": t.out_of_order,
                "gaps": t.gaps,
                "stalled_rooms": sum(1 for r in self.rooms if r.stalled),
            },
            "errors": dict(self.stats.errors),
            "cpu_s": self.cpu.get("cpu_end", 0.0) - self.cpu.get("cpu_start", 0.0),
            "measured_s": self.measured_ns / 1e9,
            "precise_ticks": self.pacer.precise if self.pacer is not None else True,
            "aborted": self.stopping is not None and self.stopping.is_set(),
        }

    def _offered(self, start: int, end: int) -> int:
        """Messages the schedule stamps with a tick in [start, end) (monotonic ns): the open
        loop's offered load."""
        schedule = self.plan.schedule
        if schedule is None or self.plan.mode != "open":
            return 0

        def ticks_up(at: int) -> int:  # the first tick at or after ``at``
            return -(-(at - self.t0) // TICK_NS) * TICK_NS

        return schedule.due_by(ticks_up(end)) - schedule.due_by(ticks_up(start))


def run_worker(plan: Plan, index: int, chan: Any) -> None:
    """Run one worker to the end on a new event loop (in a thread or a process)."""
    if threading.current_thread() is threading.main_thread():
        # A process of its own: the controller stops it (Ctrl-C reaches the whole process
        # group), and SIGTERM ends it as it would any process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
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
