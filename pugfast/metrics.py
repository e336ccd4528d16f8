"""Opt-in Prometheus metrics (``--metrics-listen``): aggregates of the whole relay only.

Every series is a total or a count for the relay as a whole, labelled at most by a reason
from a fixed list: never by room, member, address or anything a client chose. The endpoint
listens on its own address (typically loopback) so it is never exposed with the relay.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from . import __version__
from .gateway import Gateway
from .speedups import IMPLEMENTATION

JOIN_REFUSALS = ("bad_message", "no_such_room", "room_full", "wrong_secret")
ROOM_ENDINGS = ("expired", "purged", "empty", "unused")
POW_FAILURES = ("bad_proof", "challenge_expired", "challenge_used")


def _series(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return "\n".join(lines)


def render(gateway: Gateway) -> str:
    """The Prometheus text exposition of ``gateway``'s counters."""
    engine = gateway.flusher
    blocks = [
        _series("pugfast_info", "gauge", "Version and engine of this relay.",
                [(f'{{version="{__version__}",engine="{IMPLEMENTATION}"}}', 1)]),
        _series("pugfast_rooms", "gauge", "Rooms that exist now.", [("", len(gateway.registry))]),
        _series("pugfast_connections", "gauge", "Open WebSocket connections.",
                [("", len(gateway.connections))]),
        _series("pugfast_rooms_created_total", "counter", "Rooms created.",
                [("", gateway.rooms_created)]),
        _series("pugfast_rooms_ended_total", "counter", "Rooms ended, by why.",
                [(f'{{reason="{r}"}}', gateway.rooms_ended[r]) for r in ROOM_ENDINGS]),
        _series("pugfast_joins_total", "counter", "Successful joins.", [("", gateway.joins)]),
        _series("pugfast_joins_refused_total", "counter", "Joins refused, by why.",
                [(f'{{reason="{r}"}}', gateway.joins_refused[r]) for r in JOIN_REFUSALS]),
        _series("pugfast_pow_failures_total", "counter", "Room creations refused by the "
                "proof-of-work checks, by why.",
                [(f'{{reason="{r}"}}', gateway.pow_failures[r]) for r in POW_FAILURES]),
        _series("pugfast_messages_relayed_total", "counter", "Binary messages relayed.",
                [("", engine.messages)]),
        _series("pugfast_relayed_bytes_total", "counter", "Ciphertext bytes of relayed messages.",
                [("", engine.message_bytes)]),
        _series("pugfast_deliveries_total", "counter", "Relayed messages times their recipients.",
                [("", engine.deliveries)]),
        _series("pugfast_frames_sent_total", "counter", "WebSocket frames written.",
                [("", engine.frames)]),
        _series("pugfast_writes_total", "counter", "Socket writes (frames are coalesced).",
                [("", engine.writes)]),
        _series("pugfast_slow_consumer_closes_total", "counter",
                "Members closed for not reading fast enough.", [("", engine.slow_consumers)]),
    ]
    return "\n".join(blocks) + "\n"


def make_metrics_app(gateway: Gateway) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=render(gateway).encode(),
            headers={
                "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                "Cache-Control": "no-store",
            },
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
