"""``pugfast serve --workers N``: one port, rooms whole in one worker, workers that die alone.

The supervisor runs in the test's process (so a test can see its workers and shorten its
timeouts); the workers are real child processes, on the same event loop implementation and
engine as the test, serving real sockets that the supervisor passed them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
from typing import Any

import aiohttp
import orjson
import pytest
import uvloop
import websockets
from crowd import Crowd, allow_open_files, create_rooms
from support import RawClient, ServerProcess, free_port, loop_name, relay_settings, running_workers

from pugfast.config import load_settings
from pugfast.errors import ConfigError
from pugfast.registry import ALPHABET, RoomIds, worker_of
from pugfast.workers import supervisor as supervisor_module
from pugfast.workers.supervisor import Supervisor


async def create_room(port: int, **fields: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/api/challenge") as response:
            token = (await response.json())["token"]
        async with session.post(
            f"http://127.0.0.1:{port}/api/rooms", json={"token": token, "nonce": "0", **fields}
        ) as response:
            assert response.status == 201, await response.text()
            return await response.json()


async def rooms_on_every_worker(port: int, workers: int) -> dict[int, dict[str, Any]]:
    """Create rooms until every worker owns one; return one room per worker."""
    rooms: dict[int, dict[str, Any]] = {}
    for _ in range(8 * workers):
        room = await create_room(port)
        rooms.setdefault(worker_of(room["room"], workers), room)
        if len(rooms) == workers:
            return rooms
    raise AssertionError(f"room creation reached only workers {sorted(rooms)}")


async def join(port: int, room: dict[str, Any]) -> tuple[RawClient, int]:
    client = RawClient()
    await client.connect(port, f"/r/{room['room']}/ws")
    await client.send_json({"type": "join", "secret": room["secret"]})
    welcome = await client.recv_json()
    assert welcome["type"] == "welcome", welcome
    return client, welcome["you"]["id"]


async def next_binary(client: RawClient) -> bytes:
    while True:
        frame = await client.recv()
        if frame.opcode == 2:
            return frame.payload


async def chat(a: tuple[RawClient, int], b: tuple[RawClient, int]) -> None:
    """Each member sends one message; the other gets it behind the sender's id."""
    for (sender, sender_id), (receiver, _) in ((a, b), (b, a)):
        payload = os.urandom(64)
        await sender.send_binary(payload)
        assert await next_binary(receiver) == struct.pack(">I", sender_id) + payload


async def scrape(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        name: float(value)
        for name, value in re.findall(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE)
    }


# -- room ids that name their worker and node ----------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 3, 7, 64])
def test_every_id_a_worker_makes_names_that_worker(workers: int) -> None:
    for worker in range(workers):
        ids = RoomIds(worker=worker, workers=workers)
        for _ in range(50):
            room_id = ids.new()
            assert re.fullmatch("[A-Za-z0-9_-]{22}", room_id)
            assert len(base64.urlsafe_b64decode(room_id + "==")) == 16
            assert worker_of(room_id, workers) == worker


def test_a_node_letter_starts_every_id_and_the_rest_stays_random() -> None:
    ids = RoomIds(node="B", worker=1, workers=2)
    made = {ids.new() for _ in range(2000)}
    assert len(made) == 2000
    assert all(room_id[0] == "B" and worker_of(room_id, 2) == 1 for room_id in made)
    # The second character is spread over the whole class of worker 1 (32 characters).
    assert {room_id[1] for room_id in made} == set(ALPHABET[1::2])


@pytest.mark.parametrize("node", ["", "AB", "+", "/", "=", "é"])
def test_a_node_must_be_one_character_of_the_id_alphabet(node: str) -> None:
    with pytest.raises(ValueError):
        RoomIds(node=node)
    with pytest.raises(ConfigError, match="--node must be one character"):
        load_settings({"node": node}, environ={})


def test_workers_flag() -> None:
    assert load_settings({}, environ={}).workers == 1
    assert load_settings({"workers": "3"}, environ={}).workers == 3
    assert load_settings({}, environ={"PUGFAST_WORKERS": "auto"}).workers == len(os.sched_getaffinity(0))
    for bad in ("0", "65", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match=r"--workers must be 'auto' or a whole number from 1 to 64"):
            load_settings({"workers": bad}, environ={})


def test_workers_refuse_tls_and_say_what_to_do_instead() -> None:
    with pytest.raises(ConfigError, match="Terminate TLS in a proxy"):
        load_settings({"workers": "2", "tls_cert": "c.pem", "tls_key": "k.pem"}, environ={},
                      path_exists=lambda path: True)


# -- one port, several workers -------------------------------------------------------------


async def test_members_arriving_through_different_accepts_share_their_room() -> None:
    async with running_workers(2, metrics_listen="127.0.0.1:0") as supervisor:
        port = supervisor.port
        rooms = await rooms_on_every_worker(port, 2)
        members = {w: (await join(port, room), await join(port, room)) for w, room in rooms.items()}
        for a, b in members.values():
            await chat(a, b)
        # The supervisor's metrics add up both workers: two rooms, four members, four messages.
        assert supervisor.metrics_port is not None
        samples = await scrape(supervisor.metrics_port)
        assert samples["pugfast_rooms"] == 2
        assert samples["pugfast_connections"] == 4
        assert samples["pugfast_joins_total"] == 4
        assert samples["pugfast_messages_relayed_total"] == 4
        assert samples['pugfast_info{version="0.1.0",engine="%s",workers="2"}' % (
            "python" if os.environ.get("PUGFAST_NO_EXTENSIONS") else "cython")] == 1
        for a, b in members.values():
            await a[0].close()
            await b[0].close()


async def test_a_connection_carries_one_request_so_each_is_routed() -> None:
    async with (
        running_workers(2) as supervisor,
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{supervisor.port}/healthz") as response,
    ):
        assert response.status == 200
        assert response.headers["Connection"] == "close"


async def test_a_challenge_is_good_at_every_worker_and_spent_at_all_of_them() -> None:
    async with running_workers(2) as supervisor:
        base = f"http://127.0.0.1:{supervisor.port}"
        async with aiohttp.ClientSession() as session:
            owners = []
            # Challenges and creations each go to the workers in turn. Four challenges come
            # from workers 0, 1, 0, 1 (or 1, 0, 1, 0); spent in these two orders, every token
            # is answered once by the worker that made it and once by the other.
            for order in ((0, 1, 2, 3), (1, 0, 3, 2)):
                tokens = []
                for _ in range(4):
                    async with session.post(f"{base}/api/challenge") as response:
                        tokens.append((await response.json())["token"])
                for i in order:
                    body = {"token": tokens[i], "nonce": "0"}
                    async with session.post(f"{base}/api/rooms", json=body) as response:
                        assert response.status == 201
                        owners.append(worker_of((await response.json())["room"], 2))
                for token in tokens:  # each replayed at both workers
                    for _ in range(2):
                        body = {"token": token, "nonce": "0"}
                        async with session.post(f"{base}/api/rooms", json=body) as response:
                            assert response.status == 409
                            assert (await response.json())["error"] == "challenge_used"
            assert sorted(owners) == [0, 0, 0, 0, 1, 1, 1, 1]


async def test_a_request_line_in_pieces_still_reaches_the_owner() -> None:
    async with running_workers(2) as supervisor:
        rooms = await rooms_on_every_worker(supervisor.port, 2)
        for room in rooms.values():
            reader, writer = await asyncio.open_connection("127.0.0.1", supervisor.port)
            request = (
                f"GET /r/{room['room']}/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            for piece in (request[:7], request[7:20], request[20:]):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101")
            client = RawClient()
            client.reader, client.writer = reader, writer
            await client.send_json({"type": "join", "secret": room["secret"]})
            assert (await client.recv_json())["type"] == "welcome"  # not 4404: the owner answered
            await client.close()


async def test_a_connection_that_never_sends_its_request_line_is_closed() -> None:
    # The acceptor's wait for a request line follows --request-timeout.
    async with running_workers(2, request_timeout=0.3) as supervisor:
        reader, writer = await asyncio.open_connection("127.0.0.1", supervisor.port)
        writer.write(b"GET /heal")
        # Answered as the single relay answers it, then closed.
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert supervisor.router.deadline_closes == 1
        writer.close()


async def test_a_dead_worker_takes_only_its_own_rooms_and_comes_back() -> None:
    async with running_workers(2) as supervisor:
        port = supervisor.port
        rooms = await rooms_on_every_worker(port, 2)
        doomed = (await join(port, rooms[0]), await join(port, rooms[0]))
        spared = (await join(port, rooms[1]), await join(port, rooms[1]))
        process = supervisor.workers[0].process
        assert process is not None
        old_pid = process.pid
        os.kill(old_pid, signal.SIGKILL)
        # Worker 0's members see their connections end...
        for client, _ in doomed:
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                while True:  # presence notices may come first
                    await client.recv(timeout=5)
        # ...while worker 1's room carries on.
        await chat(*spared)
        for _ in range(200):
            restarted = supervisor.workers[0].process
            if supervisor.restarts == 1 and restarted is not None and restarted.pid != old_pid:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("worker 0 was not started again")
        # The new worker 0 knows nothing of the old one's rooms, and makes rooms of its own.
        client = RawClient()
        await client.connect(port, f"/r/{rooms[0]['room']}/ws")
        await client.send_json({"type": "join", "secret": rooms[0]["secret"]})
        await client.expect_closed_with(4404)
        fresh = await rooms_on_every_worker(port, 2)
        await chat(await join(port, fresh[0]), await join(port, fresh[0]))
        await chat(*spared)
        for member, _ in spared:
            await member.close()


async def test_serve_with_two_workers_chats_on_one_port_and_stops_cleanly() -> None:
    server = ServerProcess("--workers", "2", "--event-loop", loop_name())
    try:
        await server.ready()
        rooms = await rooms_on_every_worker(server.port, 2)
        sockets = []
        for room in rooms.values():
            url = f"ws://127.0.0.1:{server.port}/r/{room['room']}/ws"
            pair = [await websockets.connect(url), await websockets.connect(url)]
            for ws in pair:
                await ws.send(orjson.dumps({"type": "join", "secret": room["secret"]}).decode())
                while orjson.loads(await ws.recv())["type"] != "welcome":
                    pass
            await pair[0].send(b"across")
            while (message := await asyncio.wait_for(pair[1].recv(), 5)) and isinstance(message, str):
                pass
            assert message[4:] == b"across"
            sockets += pair
        with open(f"/proc/{server.process.pid}/task/{server.process.pid}/children") as children:
            worker_pids = [int(pid) for pid in children.read().split()]
        assert len(worker_pids) == 2
        # SIGTERM: every member of both workers is closed with 1001, and all exit 0.
        os.kill(server.process.pid, signal.SIGTERM)
        for ws in sockets:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert server.stop() == 0
        assert "2 workers" in server.stderr
        for pid in worker_pids:
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie_of_nobody(pid)
    finally:
        server.kill()


def _is_zombie_of_nobody(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_worker_that_cannot_start_makes_the_supervisor_give_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "RESTART_BACKOFF", 0.2)
    # A "python" that exits at once: every worker dies right after it starts.
    monkeypatch.setattr(supervisor_module.sys, "executable", "/bin/false")
    gave_up = asyncio.Event()
    supervisor = Supervisor(relay_settings(workers=2), shutdown_grace=0.05, on_failure=gave_up.set)
    with pytest.raises(RuntimeError, match="the worker processes could not start"):
        await asyncio.wait_for(supervisor.start(), 10)
    assert gave_up.is_set() and supervisor.failed
    assert supervisor.restarts >= supervisor_module.MAX_QUICK_RESTARTS
    assert all(w.process is not None and w.process.returncode is not None for w in supervisor.workers)


async def test_workers_end_when_their_supervisor_is_killed() -> None:
    server = ServerProcess("--workers", "2", "--event-loop", loop_name())
    try:
        await server.ready()
        await rooms_on_every_worker(server.port, 2)
        with open(f"/proc/{server.process.pid}/task/{server.process.pid}/children") as children:
            worker_pids = [int(pid) for pid in children.read().split()]
        assert len(worker_pids) == 2
    finally:
        server.kill()  # SIGKILL: the supervisor cannot tell anyone
    # Each worker sees its control channel end and shuts down by itself.
    for _ in range(200):
        if all(_is_zombie_of_nobody(pid) for pid in worker_pids):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("a worker outlived its supervisor")


async def test_the_bench_measures_a_supervisor_and_its_workers_together() -> None:
    server = ServerProcess("--workers", "2", "--rate-limit", "0", "--event-loop", loop_name())
    try:
        await server.ready()
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pugfast", "bench", server.base, "--rooms", "6", "--members", "3",
             "--burst", "2", "--warmup", "0.5", "--duration", "1", "--json", "--quiet",
             "--server-pid", str(server.process.pid)],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["lost"] == 0 and report["delivered"] == report["expected"] > 0
        assert report["server"]["processes"] == 3
        assert report["server"]["supervisor_cpu_s"] <= report["server"]["cpu_s"]
        assert report["server"]["supervisor_cpu_us_per_join"] is not None
    finally:
        server.kill()


# -- the relay-wide caps, shared out between workers -----------------------------------------


async def upgrade_status(port: int, room: dict[str, Any]) -> tuple[int, RawClient]:
    """The status of an upgrade into ``room`` (the client stays open to hold a 101)."""
    client = RawClient()
    status, _ = await client.handshake(port, f"/r/{room['room']}/ws")
    return status, client


async def create_status(port: int) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/api/challenge") as response:
            token = (await response.json())["token"]
        async with session.post(
            f"http://127.0.0.1:{port}/api/rooms", json={"token": token, "nonce": "0"}
        ) as response:
            return response.status


async def test_max_connections_is_the_relays_not_each_workers() -> None:
    # Split evenly, a cap of 2 gave each worker 1, and a room of two could never fill.
    async with running_workers(2, max_connections=2) as supervisor:
        port = supervisor.port
        room = (await rooms_on_every_worker(port, 2))[0]
        a, b = await join(port, room), await join(port, room)
        await chat(a, b)
        status, extra = await upgrade_status(port, room)
        assert status == 503
        await extra.close()


async def test_connections_skewed_onto_one_worker_use_the_whole_cap_exactly() -> None:
    async with running_workers(2, max_connections=5, capacity_max=8) as supervisor:
        port = supervisor.port
        rooms = await rooms_on_every_worker(port, 2)
        # All five slots go to worker 0's room: worker 1 gives back what it holds.
        members = [await join(port, rooms[0]) for _ in range(5)]
        for room in (rooms[0], rooms[1]):
            status, extra = await upgrade_status(port, room)
            assert status == 503, room
            await extra.close()
        # One leaves; its slot is free again, and the other worker gets it when it asks.
        await members.pop()[0].close()
        for _attempt in range(100):
            status, client = await upgrade_status(port, rooms[1])
            if status == 101:
                break
            await client.close()
            await asyncio.sleep(0.05)
        assert status == 101
        await client.send_json({"type": "join", "secret": rooms[1]["secret"]})
        assert (await client.recv_json())["type"] == "welcome"
        # The relay is full again, on both workers.
        for room in (rooms[0], rooms[1]):
            status, extra = await upgrade_status(port, room)
            assert status == 503, room
            await extra.close()
        await chat(members[0], members[1])


async def test_max_rooms_is_the_relays_not_each_workers() -> None:
    async with running_workers(2, max_rooms=3) as supervisor:
        port = supervisor.port
        statuses = [await create_status(port) for _ in range(6)]
        # Creations take turns between the workers, and the relay as a whole makes three.
        assert statuses == [201, 201, 201, 503, 503, 503]


async def test_a_dead_workers_share_of_the_caps_is_free_again() -> None:
    async with running_workers(2, max_connections=2) as supervisor:
        port = supervisor.port
        rooms = await rooms_on_every_worker(port, 2)
        doomed = await join(port, rooms[0]), await join(port, rooms[0])
        process = supervisor.workers[0].process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        for client, _ in doomed:
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                while True:
                    await client.recv(timeout=5)
        # The members see the end as the kernel closes the dead worker's sockets; the
        # supervisor learns of it from its channel, a moment later on a busy machine. Once it
        # has started a replacement, it has taken the dead worker's share back.
        for _ in range(400):
            if supervisor.workers[0].process is not process:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("worker 0 was not replaced")
        # Worker 0 held both slots; with it gone, worker 1's room can fill.
        a, b = await join(port, rooms[1]), await join(port, rooms[1])
        await chat(a, b)


async def test_a_worker_whose_channel_fails_is_replaced_while_the_relay_serves_on() -> None:
    """Reaping a worker never waits on the loop: while the old process still lives (stopped
    here, so that it cannot end by itself), the supervisor routes and the other worker serves.
    The old process is then stopped and replaced, and the new one makes rooms of its own."""
    async with running_workers(2) as supervisor:
        port = supervisor.port
        rooms = await rooms_on_every_worker(port, 2)
        old = supervisor.workers[0].process
        assert old is not None and supervisor.workers[0].channel is not None
        os.kill(old.pid, signal.SIGSTOP)
        try:
            supervisor.workers[0].channel.shutdown(socket.SHUT_RDWR)
            await chat(await join(port, rooms[1]), await join(port, rooms[1]))
            assert await create_status(port) in (201, 503)  # routed, whatever worker it met
            # All that was served while the old worker had not ended, nor been reaped.
            assert old.returncode is None
        finally:
            os.kill(old.pid, signal.SIGCONT)  # it now takes the SIGTERM it was sent
        for _ in range(400):
            current = supervisor.workers[0].process
            if current is not old and current is not None and supervisor.workers[0].channel:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("worker 0 was not replaced")
        assert old.returncode == 0  # it stopped as on SIGTERM
        fresh = await rooms_on_every_worker(port, 2)
        await chat(await join(port, fresh[0]), await join(port, fresh[0]))


async def test_caps_stay_exact_after_a_worker_dies_with_admissions_in_flight() -> None:
    """Worker 0 is killed in the middle of a burst of upgrades that need the supervisor's
    grants (blocks of one slot, at these caps); afterwards the relay admits exactly
    --max-rooms and --max-connections again, on both workers."""
    async with running_workers(2, max_connections=30, max_rooms=12) as supervisor:
        port = supervisor.port
        rooms = await rooms_on_every_worker(port, 2)
        crowd = Crowd(port)
        burst = asyncio.ensure_future(crowd.join([rooms[0], rooms[1]] * 30, 1, concurrency=60))
        await asyncio.sleep(0.05)
        old = supervisor.workers[0].process
        assert old is not None
        os.kill(old.pid, signal.SIGKILL)
        await burst
        assert crowd.outcomes["welcome"] > 0
        await crowd.close()
        for _ in range(400):
            now = await metrics_of(supervisor)
            worker = supervisor.workers[0]
            if (worker.process is not old and worker.ready is not None and worker.ready.done()
                    and now["pugfast_connections"] == 0):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("worker 0 was not replaced, or connections did not end")
        rooms_left = int(now["pugfast_rooms"])
        made = [room for room in await create_rooms(f"http://127.0.0.1:{port}", 20, capacity=64)
                if isinstance(room, dict)]
        assert len(made) == 12 - rooms_left
        crowd = Crowd(port)
        await crowd.join(made, 8, concurrency=100)
        assert crowd.outcomes == {"welcome": 30, "http 503": 8 * len(made) - 30}, crowd.outcomes
        await crowd.close()


async def metrics_of(supervisor: Supervisor) -> dict[str, float]:
    text = await supervisor.metrics_text()
    return {name: float(value) for name, value in re.findall(r"^([a-z_]+) (\S+)$", text, re.MULTILINE)}


def in_crowd(scenario: Any) -> None:
    """Run a burst scenario on uvloop with a deadline of its own: thousands of joins from one
    Python process outlast conftest's minute on a busy machine, and each burst test runs once
    per engine rather than once per loop (the relays here run on their default loop)."""
    uvloop.run(asyncio.wait_for(scenario(), 300))


def test_a_burst_of_ten_thousand_joins_is_admitted_whole_by_two_workers() -> None:
    """With the default caps, 10,000 members joining 1,000 rooms at once all get in (each
    waiting upgrade used to ask the supervisor for a block of its own, and the ledger ran dry
    while the workers held slots nobody used)."""
    in_crowd(ten_thousand_joins)


async def ten_thousand_joins() -> None:
    allow_open_files(10_000)
    # This one test process cannot write every request the moment its connection opens; on a
    # loaded machine the relay would rightly take the slowest for slow clients (the pending
    # cap's business, tested in test_front_door_guards.py, not this test's).
    server = ServerProcess("--workers", "2", "--max-pending-connections", "20000")
    try:
        await server.ready()
        rooms = await create_rooms(server.base, 1000, capacity=10)
        assert all(isinstance(room, dict) for room in rooms)
        crowd = Crowd(server.port)
        await crowd.join(rooms, 10)
        assert crowd.outcomes == {"welcome": 10_000}, crowd.outcomes
        await crowd.close()
        assert server.stop() == 0, server.stderr
    finally:
        server.kill()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_burst_is_admitted_exactly_to_the_caps_and_the_operator_is_told(workers: str) -> None:
    """--max-rooms 300 and --max-connections 3,000 under bursts of 600 creations and 6,000
    joins: exactly the cap is admitted, the rest get 503, counted in the metrics and said in
    the log at most once a minute per process (the relay's limit, not a client's fault)."""
    in_crowd(lambda: admitted_exactly_to_the_caps(workers))


async def admitted_exactly_to_the_caps(workers: str) -> None:
    allow_open_files(6_000)
    metrics = free_port()
    server = ServerProcess(
        "--workers", workers, "--max-rooms", "300",
        "--max-connections", "3000", "--metrics-listen", f"127.0.0.1:{metrics}",
        "--max-pending-connections", "20000",  # as in the test above
    )
    try:
        await server.ready()
        made = await create_rooms(server.base, 600, concurrency=128, capacity=20)
        rooms = [room for room in made if isinstance(room, dict)]
        assert len(rooms) == 300 and made.count(503) == 300, sorted(set(map(str, made)))
        crowd = Crowd(server.port)
        await crowd.join(rooms, 20)
        assert crowd.outcomes == {"welcome": 3000, "http 503": 3000}, crowd.outcomes
        samples = await scrape(metrics)
        assert samples['pugfast_capacity_refusals_total{cap="rooms"}'] == 300
        assert samples['pugfast_capacity_refusals_total{cap="connections"}'] == 3000
        await crowd.close()
        assert server.stop() == 0, server.stderr
        said = server.stderr
        for flag, cap in (("--max-rooms", 300), ("--max-connections", 3000)):
            lines = [line for line in said.splitlines() if f"at capacity: {flag} ({cap})" in line]
            assert 1 <= len(lines) <= int(workers), said
        assert "127.0.0.1" not in said and all(room["room"] not in said for room in rooms)
    finally:
        server.kill()
