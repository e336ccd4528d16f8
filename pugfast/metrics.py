"""Opt-in Prometheus metrics (``--metrics-listen``): aggregates of the whole relay only.

Every series is a total or a count for the relay as a whole, labelled at most by a reason
from a fixed list: never by room, member, address or anything a client chose. The endpoint
listens on its own address (typically loopback) so it is never exposed with the relay.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from . import __version__
from .acceptor import listen
from .allowance import CONNECTIONS, ROOMS
from .engine import IMPLEMENTATION
from .gateway import Gateway

JOIN_REFUSALS = ("bad_message", "no_such_room", "room_full", "wrong_secret")
ROOM_ENDINGS = ("expired", "purged", "empty", "unused")
POW_FAILURES = ("bad_proof", "challenge_expired", "challenge_used")
CAPS = ((ROOMS, "rooms"), (CONNECTIONS, "connections"))


# A snapshot: for each series, its samples as (labels, value). Snapshots of several workers
# add up sample by sample (``merge``), so ``--workers`` reports the relay as a whole.
Snapshot = dict[str, list[tuple[str, float]]]

# name: (type, help)
SERIES: dict[str, tuple[str, str]] = {
    "pugfast_rooms": ("gauge", "Rooms that exist now."),
    "pugfast_connections": ("gauge", "Open WebSocket connections."),
    "pugfast_rooms_created_total": ("counter", "Rooms created."),
    "pugfast_rooms_ended_total": ("counter", "Rooms ended, by why."),
    "pugfast_joins_total": ("counter", "Successful joins."),
    "pugfast_joins_refused_total": ("counter", "Joins refused, by why."),
    "pugfast_pow_failures_total": ("counter", "Room creations refused by the proof-of-work "
                                   "checks, by why."),
    "pugfast_messages_relayed_total": ("counter", "Binary messages relayed."),
    "pugfast_relayed_bytes_total": ("counter", "Ciphertext bytes of relayed messages."),
    "pugfast_deliveries_total": ("counter", "Relayed messages times their recipients."),
    "pugfast_frames_sent_total": ("counter", "WebSocket frames written."),
    "pugfast_writes_total": ("counter", "Socket writes (frames are coalesced)."),
    "pugfast_slow_consumer_closes_total": ("counter", "Members closed for not reading fast enough."),
    "pugfast_http_deadline_closes_total": ("counter", "Connections closed because a request did "
                                           "not arrive whole in time (--request-timeout)."),
    "pugfast_pending_evictions_total": ("counter", "Connections not yet WebSockets closed to make "
                                        "room past --max-pending-connections."),
    "pugfast_address_cap_refusals_total": ("counter", "Connections refused at accept by "
                                           "--max-connections-per-address."),
    "pugfast_capacity_refusals_total": ("counter", "Room creations and upgrades answered 503 "
                                        "because --max-rooms or --max-connections was reached, "
                                        "by cap."),
    "pugfast_event_loop_lag_seconds": ("gauge", "How late the event loop ran a timer over the "
                                       "last minute: its 99th percentile and its maximum "
                                       "(quantile 1), of the slowest process."),
}
# Series that add up across processes by their largest value rather than their sum.
WORST_OF = frozenset({"pugfast_event_loop_lag_seconds"})


class LoopLag:
    """Measures how late the event loop runs a timer set for a moment: the time a ready
    callback waits behind whatever holds the loop (a long callback, a collection of the
    garbage collector). A probe every ``interval`` seconds; ``quantiles`` over the last
    ``window`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.1, window: float = 60.0) -> None:
        self._loop = loop
        self._interval = interval
        self._samples: collections.deque[float] = collections.deque(maxlen=int(window / interval))
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = self._loop.time() + self._interval
        self._timer = self._loop.call_at(self._due, self._probe)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _probe(self) -> None:
        now = self._loop.time()
        self._samples.append(max(0.0, now - self._due))
        self._due = now + self._interval
        self._timer = self._loop.call_at(self._due, self._probe)

    def quantiles(self) -> tuple[float, float]:
        """The 99th percentile and the maximum of the lag over the window (0 before any)."""
        if not self._samples:
            return 0.0, 0.0
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], ordered[-1]

    def snapshot(self) -> Snapshot:
        p99, worst = self.quantiles()
        return {"pugfast_event_loop_lag_seconds": [('{quantile="0.99"}', p99), ('{quantile="1"}', worst)]}


def snapshot(gateway: Gateway, lag: LoopLag | None = None) -> Snapshot:
    """The current value of every series for one relay process (the loop's lag, with ``lag``)."""
    engine = gateway.flusher
    door = gateway.entrance
    return {
        "pugfast_rooms": [("", len(gateway.registry))],
        "pugfast_connections": [("", len(gateway.connections))],
        "pugfast_rooms_created_total": [("", gateway.rooms_created)],
        "pugfast_rooms_ended_total":
            [(f'{{reason="{r}"}}', gateway.rooms_ended[r]) for r in ROOM_ENDINGS],
        "pugfast_joins_total": [("", gateway.joins)],
        "pugfast_joins_refused_total":
            [(f'{{reason="{r}"}}', gateway.joins_refused[r]) for r in JOIN_REFUSALS],
        "pugfast_pow_failures_total":
            [(f'{{reason="{r}"}}', gateway.pow_failures[r]) for r in POW_FAILURES],
        "pugfast_messages_relayed_total": [("", engine.messages)],
        "pugfast_relayed_bytes_total": [("", engine.message_bytes)],
        "pugfast_deliveries_total": [("", engine.deliveries)],
        "pugfast_frames_sent_total": [("", engine.frames)],
        "pugfast_writes_total": [("", engine.writes)],
        "pugfast_slow_consumer_closes_total": [("", engine.slow_consumers)],
        "pugfast_http_deadline_closes_total": [("", door.deadline_closes if door else 0)],
        "pugfast_pending_evictions_total": [("", door.evictions if door else 0)],
        "pugfast_address_cap_refusals_total": [("", door.address_refusals if door else 0)],
        "pugfast_capacity_refusals_total":
            [(f'{{cap="{name}"}}', gateway.capacity_refusals[kind]) for kind, name in CAPS],
        **(lag.snapshot() if lag is not None else {}),
    }


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several snapshots, sample by sample (the largest, for ``WORST_OF``)."""
    totals: dict[str, dict[str, float]] = {name: {} for name in SERIES}
    for snap in snapshots:
        for name, samples in snap.items():
            if name in totals:
                for labels, value in samples:
                    if name in WORST_OF:
                        totals[name][labels] = max(totals[name].get(labels, 0), value)
                    else:
                        totals[name][labels] = totals[name].get(labels, 0) + value
    return {name: list(samples.items()) for name, samples in totals.items()}


def render(snap: Snapshot, workers: int = 1) -> str:
    """The Prometheus text exposition of a snapshot."""
    lines = [
        "# HELP pugfast_info Version, engine and worker processes of this relay.",
        "# TYPE pugfast_info gauge",
        f'pugfast_info{{version="{__version__}",engine="{IMPLEMENTATION}",workers="{workers}"}} 1',
    ]
    for name, (kind, help_text) in SERIES.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {value:g}" for labels, value in snap.get(name, ())]
    return "\n".join(lines) + "\n"


def make_metrics_app(source: Callable[[], Awaitable[str]]) -> web.Application:
    """An application serving ``/metrics`` with the text ``source`` gives at each scrape."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=(await source()).encode(),
            headers={
                "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                "Cache-Control": "no-store",
            },
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def serve_metrics(
    source: Callable[[], Awaitable[str]], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve ``/metrics`` from ``source`` on its own address; return the runner (to clean up)
    and the port."""
    runner = web.AppRunner(make_metrics_app(source), access_log=None, handle_signals=False)
    await runner.setup()
    sock = listen(host, port)
    await web.SockSite(runner, sock).start()
    return runner, sock.getsockname()[1]
