"""Opt-in Prometheus metrics (``--metrics-listen``): aggregates of the whole relay only.

Every series is a total or a count for the relay as a whole, labelled at most by a reason
from a fixed list: never by room, member, address or anything a client chose. The endpoint
listens on its own address (typically loopback) so it is never exposed with the relay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from . import __version__
from .acceptor import listen
from .allowance import CONNECTIONS, ROOMS
from .gateway import Gateway
from .speedups import IMPLEMENTATION

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
}


def snapshot(gateway: Gateway) -> Snapshot:
    """The current value of every series for one relay process."""
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
    }


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several snapshots, sample by sample."""
    totals: dict[str, dict[str, float]] = {name: {} for name in SERIES}
    for snap in snapshots:
        for name, samples in snap.items():
            if name in totals:
                for labels, value in samples:
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
