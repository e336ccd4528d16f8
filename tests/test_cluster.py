"""Several relays behind one router: deploy/cluster's nginx and HAProxy configurations, run.

A router and two relay nodes, A (``--workers 2``) and B (one process), each in a network
namespace of its own (tests/cluster_kit.py draws the network); the test process is every
client, from several source addresses. Through the router: rooms are made on both nodes (the
client's address picks the node), members chat in both, then node A dies at once, as a
machine losing power would. Its members see their connections end, B's room carries on, new
rooms are made on B, and A's old room fails fast. Neither router nor relay logs an address,
a room id or a path. docs/scaling.md describes the design.

The cluster needs root, iproute2, nginx and haproxy; without them it skips and says what is
missing, except under CI (which .ci/run provisions), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from cluster_kit import (
    DEPLOY,
    NODES,
    ROUTER_PORT,
    ROUTERS,
    Cluster,
    missing_for,
    router_command,
)
from websockets.typing import Origin

ROUTED = {"A", "B"}


def need(router: str, *, network: bool = True) -> None:
    """Skip when this machine lacks what the test needs; under CI, fail instead."""
    missing = missing_for(router, network=network)
    if missing:
        refuse(f"needs {', '.join(missing)}")


def refuse(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: .ci/run must provide it, and CI may not skip this", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(params=ROUTERS)
def cluster(request: pytest.FixtureRequest, tmp_path: Path, loop_name: str) -> Iterator[Cluster]:
    """Nodes A and B and the router, started; everything removed afterwards, even on failure."""
    router = request.param
    need(router)
    network = Cluster(router, tmp_path)
    try:
        try:
            network.build()
        except RuntimeError as exc:  # no permission to make namespaces here, for one
            refuse(f"cannot build the test network ({exc})")
        # The relays run on the event loop the test runs on.
        network.start_nodes(loop_name)
        network.wait_for_nodes()
        network.start_router()
        network.wait_for_router()
        yield network
    finally:
        network.teardown()


# -- clients ---------------------------------------------------------------------------------


async def create_room(cluster: Cluster, client: str) -> dict[str, Any]:
    """Challenge, then create, from ``client``'s address, each on a new connection (as a
    browser may): only the router's hash of the address keeps both on one node."""
    connector = aiohttp.TCPConnector(local_addr=(client, 0), force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(f"{cluster.base}/api/challenge") as response:
            assert response.status == 200, await response.text()
            token = (await response.json())["token"]
        body = {"token": token, "nonce": "0"}
        async with session.post(f"{cluster.base}/api/rooms", json=body) as response:
            assert response.status == 201, await response.text()
            return await response.json()


async def connect(
    cluster: Cluster, room_id: str, client: str, origin: str | None = None
) -> websockets.ClientConnection:
    return await websockets.connect(
        f"ws://{cluster.router_host}:{ROUTER_PORT}/r/{room_id}/ws",
        origin=None if origin is None else Origin(origin),
        local_addr=(client, 0), proxy=None, compression=None, ping_interval=None,
        open_timeout=10,
    )


async def join(
    cluster: Cluster, room: dict[str, Any], client: str, origin: str | None = None
) -> tuple[websockets.ClientConnection, int]:
    ws = await connect(cluster, room["room"], client, origin)
    await ws.send(orjson.dumps({"type": "join", "secret": room["secret"]}).decode())
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return ws, welcome["you"]["id"]


async def next_binary(ws: websockets.ClientConnection) -> bytes:
    while True:
        message = await asyncio.wait_for(ws.recv(), 5)
        if isinstance(message, bytes):
            return message


async def chat(*pair: tuple[websockets.ClientConnection, int]) -> None:
    """Each member sends once; the other gets it behind the sender's id. The first sender
    reads the second's message next, so an echo of its own would have shown up first."""
    a, b = pair
    for (sender, sender_id), (receiver, _) in ((a, b), (b, a)):
        payload = os.urandom(64)
        await sender.send(payload)
        assert await next_binary(receiver) == struct.pack(">I", sender_id) + payload


async def connection_ends(ws: websockets.ClientConnection, within: float) -> None:
    """The connection drops: no close frame, since nobody was left to send one."""
    deadline = time.monotonic() + within
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
    assert closed.value.rcvd is None, closed.value


# -- the test --------------------------------------------------------------------------------


async def test_each_room_lives_on_its_node_and_outlives_the_other_node(cluster: Cluster) -> None:
    # Rooms from one client address after another, until each node has made one: the router
    # hashes the address, and a token is good only at the node that issued it.
    rooms: dict[str, dict[str, Any]] = {}
    creators: dict[str, str] = {}
    for client in cluster.clients:
        room = await create_room(cluster, client)
        node = room["room"][0]
        assert node in ROUTED, room["room"]
        rooms.setdefault(node, room)
        creators.setdefault(node, client)
        if rooms.keys() == ROUTED:
            break
    assert rooms.keys() == ROUTED, f"{len(cluster.clients)} client addresses all went to {set(rooms)}"

    # Two members in each room. The second comes from an address the router hashes to the
    # other node: a room's WebSocket goes where its id says, whoever asks. The first sends
    # the Origin a browser would: the relay compares it with the Host the router passed on.
    public = f"{cluster.router_host}:{ROUTER_PORT}"
    members = {
        node: (
            await join(cluster, room, creators[node], origin=f"http://{public}"),
            await join(cluster, room, creators[(ROUTED - {node}).pop()]),
        )
        for node, room in rooms.items()
    }
    for pair in members.values():
        await chat(*pair)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(cluster, rooms["B"]["room"], creators["B"], origin="http://elsewhere.example")
    assert refused.value.response.status_code == 403
    page = f"{cluster.base}/r/{rooms['A']['room']}"
    async with aiohttp.ClientSession() as session, session.get(page) as response:
        assert response.status == 200
        assert f"ws://{public} " in response.headers["Content-Security-Policy"]

    # Node A's machine dies: every process at once, supervisor and workers.
    cluster.kill_namespace("A")
    for ws, _ in members["A"]:
        await connection_ends(ws, within=5)
    await chat(*members["B"])

    # New rooms land on B, for the client whose address hashed to A too (twice: once while
    # the router finds out, once after). A's old room fails at once rather than hanging.
    for client in (creators["A"], creators["A"], creators["B"]):
        assert (await create_room(cluster, client))["room"][0] == "B"
    started = time.monotonic()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(cluster, rooms["A"]["room"], creators["B"])
    assert refused.value.response.status_code in (502, 503)
    assert time.monotonic() - started < 3
    await chat(*members["B"])
    for ws, _ in members["B"]:
        await ws.close()

    # Nobody logged an address (the clients', or the router's as the relays saw it), a room
    # id, a secret or a path.
    cluster.kill_namespace("router")
    never = [*cluster.clients, *(host.rsplit(".", 1)[0] + ".1" for host in NODES.values()),
             *(room["room"] for room in rooms.values()),
             *(room["secret"] for room in rooms.values()), "/r/", "/api/"]
    for role in ("router", "A", "B"):
        log = cluster.stderr(role)
        leaked = [word for word in never if word in log]
        assert not leaked, f"{role} logged {leaked}:\n{log}"


# -- the configurations ----------------------------------------------------------------------


@pytest.mark.parametrize("router", ROUTERS)
def test_the_configuration_as_shipped_is_valid(router: str, tmp_path: Path) -> None:
    need(router, network=False)
    config = DEPLOY / ("nginx.conf" if router == "nginx" else "haproxy.cfg")
    done = subprocess.run(router_command(router, config, tmp_path, check=True),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def _directives(path: Path) -> list[str]:
    """The configuration's lines without comments and indentation."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_nginx_logs_no_request_and_passes_no_address() -> None:
    lines = _directives(DEPLOY / "nginx.conf")
    assert [line for line in lines if line.startswith("access_log")] == ["access_log off;"] * 2
    assert {line for line in lines if line.startswith("error_log")} == {"error_log stderr emerg;"}
    assert not [line for line in lines if "log_format" in line]
    # The client's address is used once: to pick a node.
    assert [line for line in lines if "$remote_addr" in line] == ["hash $remote_addr consistent;"]
    assert 'proxy_set_header X-Forwarded-For "";' in lines


def test_haproxy_logs_nothing_and_passes_no_address() -> None:
    lines = _directives(DEPLOY / "haproxy.cfg")
    assert not [line for line in lines if re.match(r"(no )?log\b|option (http|tcp)log", line)]
    assert not [line for line in lines if "forwardfor" in line or line.startswith("cookie")]
