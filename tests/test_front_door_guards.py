"""The front door under slow, idle, flooding and crowding clients (docs/protocol.md §2.6): request
and keep-alive deadlines, the cap on connections that are not WebSockets, the per-address cap,
and running out of file descriptors. Real sockets, on both event loops, on the engine the run
selected (the suite runs once on each: PUGFAST_NO_EXTENSIONS=1 selects the twin); the same
guards with ``--workers 2``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from crowd import allow_open_files
from protocol_helpers import wait_until
from support import RawClient, ServerProcess, loop_name, running_relay, running_relay_of
from test_websocket import read_response, upgrade_request

from pugfast.metrics import snapshot

SECURITY = ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options")


async def slow_client(port: int, first: bytes, host: str = "127.0.0.1") -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
    writer.write(first)
    await writer.drain()
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the relay sends until it closes the connection, which must be soon."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                data += chunk
    return data


def assert_408(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 408"), lines[0]
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    for name in SECURITY:
        assert name in headers, name
    assert orjson.loads(body)["error"] == "request_timeout"


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


# -- deadlines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100,
     b"GET /r/" + b"A" * 22 + b"/ws HTTP/1.1\r\nHost: x\r\n"],
    ids=["page", "upgrade"],
)
async def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_deadline(head: bytes) -> None:
    async with running_relay(request_timeout=0.6) as r:
        started = time.monotonic()
        reader, writer = await slow_client(r.port, b"")
        dribble = asyncio.ensure_future(trickle(writer, head, 0.05))
        answer = await closed_within(reader, 5)
        dribble.cancel()
        assert 0.5 < time.monotonic() - started < 3
        assert_408(answer)
        assert snapshot(r.gateway)["pugfast_http_deadline_closes_total"] == [("", 1)]
        writer.close()


async def test_a_trickled_body_is_cut_at_the_deadline() -> None:
    async with running_relay(request_timeout=0.6) as r:
        started = time.monotonic()
        reader, writer = await slow_client(
            r.port, b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n{"
        )
        dribble = asyncio.ensure_future(trickle(writer, b" " * 199, 0.05))
        answer = await closed_within(reader, 5)
        dribble.cancel()
        assert 0.5 < time.monotonic() - started < 3
        assert_408(answer)
        assert not r.gateway.registry.rooms
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed_at_its_timeout() -> None:
    async with running_relay(keepalive_timeout=0.4, request_timeout=5) as r:
        reader, writer = await slow_client(r.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await read_response(reader)
        assert status == 200
        started = time.monotonic()
        assert await closed_within(reader, 3) == b""  # closed, and nothing more said
        assert 0.3 < time.monotonic() - started < 2
        writer.close()


async def test_a_normal_client_is_unaffected_by_short_deadlines() -> None:
    async with running_relay(request_timeout=0.5, keepalive_timeout=0.5) as r:
        room = await r.create_room()
        a, _ = await r.member(room)
        b, _ = await r.member(room)
        assert (await a.recv_json())["type"] == "join"
        # WebSockets are not held to the HTTP deadlines.
        await asyncio.sleep(1.2)
        await a.send_binary(b"still here")
        frame = await b.recv()
        assert frame.payload == b"\x00\x00\x00\x01still here"
        await a.close()
        await b.close()


# -- the cap on connections that are not WebSockets -----------------------------------------


async def test_slow_heads_past_the_cap_are_evicted_oldest_first_and_a_client_still_chats() -> None:
    async with running_relay() as r:  # --max-pending-connections 1024
        slow = []
        for _ in range(2000):
            slow.append(await slow_client(r.port, b"GET / HTTP/1.1\r\nHost: x\r\n"))
        entrance = r.gateway.entrance
        await wait_until(lambda: entrance.evictions >= 2000 - 1024, timeout=10)
        assert len(entrance.pending) <= 1024
        # A new visitor gets in: it creates a room, and two members join and chat.
        room = await r.create_room()
        a, _ = await r.member(room)
        b, _ = await r.member(room)
        assert (await a.recv_json())["type"] == "join"
        await a.send_binary(b"hello")
        assert (await b.recv()).payload == b"\x00\x00\x00\x01hello"
        # The oldest slow connections were the ones closed; the newest are still open.
        assert await closed_within(slow[0][0], 2) == b""
        assert await closed_within(slow[900][0], 2) == b""
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow[-1][0].read(1), 0.2)
        assert snapshot(r.gateway)["pugfast_pending_evictions_total"][0][1] >= 976
        for _, writer in slow:
            writer.close()
        await a.close()
        await b.close()


# -- the per-address cap ---------------------------------------------------------------------


async def held_from(port: int, host: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await slow_client(port, b"GET / HTTP/1.1\r\nHost: x\r\n", host)


async def refused(reader: asyncio.StreamReader) -> bool:
    """Whether the relay closed this connection at once."""
    try:
        return await asyncio.wait_for(reader.read(1), 1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_connections_per_address_are_capped_and_websockets_count(workers: int) -> None:
    async with running_relay_of(workers, max_connections_per_address=3) as r:
        room = await r.create_room()
        members = []
        for _ in range(2):  # two WebSockets from 127.0.0.2
            client = RawClient()
            client.reader, client.writer = await slow_client(
                r.port, upgrade_request(r.port, room["room"]), "127.0.0.2"
            )
            status, _, _ = await read_response(client.reader)
            assert status == 101
            await client.send_json({"type": "join", "secret": room["secret"]})
            assert (await client.recv_json())["type"] == "welcome"
            members.append(client)
        third = await held_from(r.port, "127.0.0.2")
        fourth = await held_from(r.port, "127.0.0.2")
        assert await refused(fourth[0])
        assert not await refused(third[0])
        # Other addresses are not affected.
        others = [await held_from(r.port, "127.0.0.3") for _ in range(3)]
        assert not any([await refused(reader) for reader, _ in others])
        # When one of 127.0.0.2's WebSockets ends, it may connect again.
        await members.pop().close()
        for _attempt in range(50):
            again = await held_from(r.port, "127.0.0.2")
            if not await refused(again[0]):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the address's count was not given back")
        for _, writer in (third, fourth, again, *others):
            writer.close()
        for member in members:
            await member.close()


# -- --workers 2: the acceptor's own deadline and cap ---------------------------------------


async def test_with_workers_a_request_line_that_never_ends_gets_408() -> None:
    async with running_relay_of(2, request_timeout=0.5) as r:
        reader, writer = await slow_client(r.port, b"GET /heal")
        answer = await closed_within(reader, 5)
        assert_408(answer)
        writer.close()


async def test_with_workers_a_trickled_head_is_cut_by_the_worker() -> None:
    # The request line arrives whole, so the acceptor passes the connection on; the worker's
    # front door holds the rest of the head to the same deadline.
    async with running_relay_of(2, request_timeout=0.6) as r:
        reader, writer = await slow_client(r.port, b"GET / HTTP/1.1\r\n")
        dribble = asyncio.ensure_future(trickle(writer, b"Host: x\r\nX-Slow: " + b"a" * 100, 0.05))
        answer = await closed_within(reader, 5)
        dribble.cancel()
        assert_408(answer)
        writer.close()


async def test_with_workers_the_acceptor_evicts_the_oldest_past_the_cap() -> None:
    async with running_relay_of(2, max_pending_connections=20) as r:
        slow = [await slow_client(r.port, b"GET /he") for _ in range(30)]
        assert r.supervisor is not None
        await wait_until(lambda: r.supervisor.router.evictions >= 10, timeout=5)
        assert await closed_within(slow[0][0], 2) == b""
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow[-1][0].read(1), 0.2)
        room = await r.create_room()
        assert len(room["room"]) == 22
        for _, writer in slow:
            writer.close()


# -- running out of file descriptors ---------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its children (a supervisor's workers)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return total + sum(cpu_seconds(int(child)) for child in children.read().split())


@contextlib.asynccontextmanager
async def relay_with_few_descriptors(limit: int, *flags: str) -> AsyncIterator[ServerProcess]:
    # prlimit sets the limit and then becomes the relay (exec): the pid is the relay's, and
    # its workers, if any, inherit the limit.
    server = ServerProcess("--event-loop", loop_name(), "--rate-limit", "0", *flags,
                           prefix=("prlimit", f"--nofile={limit}:{limit}"))
    try:
        await server.ready()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
async def test_a_flood_past_the_descriptor_limit_neither_stops_nor_spins_the_relay(
    workers: str,
) -> None:
    async with relay_with_few_descriptors(200, "--workers", workers) as server:
        room = await server.create_room()
        a, b = RawClient(), RawClient()
        for client in (a, b):
            await client.connect(server.port, f"/r/{room['room']}/ws")
            await client.send_json({"type": "join", "secret": room["secret"]})
            assert (await client.recv_json())["type"] == "welcome"
        assert (await a.recv_json())["type"] == "join"
        pid = server.process.pid
        flood = []
        for _ in range(400):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", server.port))
            flood.append(sock)
        await asyncio.sleep(0.5)
        before, started = cpu_seconds(pid), time.monotonic()
        # The joined members keep chatting through the flood.
        for i in range(20):
            await a.send_binary(b"m%d" % i)
            assert (await b.recv()).payload == b"\x00\x00\x00\x01m%d" % i
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        used = (cpu_seconds(pid) - before) / (time.monotonic() - started)
        assert used < 0.5, f"the relay used {used:.2f} of a core while out of descriptors"
        for sock in flood:
            sock.close()
        # Once the flood ends the relay serves as before.
        deadline = time.monotonic() + 10
        while True:
            try:
                fresh = await server.create_room()
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline, "the relay did not recover"
                await asyncio.sleep(0.2)
        assert len(fresh["room"]) == 22
        await a.close()
        await b.close()
    assert "Traceback" not in server.stderr
    assert " ERROR " not in server.stderr


async def test_with_workers_slow_request_lines_cost_the_supervisor_no_wakeups() -> None:
    """1,000 connections that sent only part of their request line: the supervisor reads what
    came and then waits for readiness, making no system call for them while they are silent
    (it used to peek at every one of them every 10 ms: about 100,000 calls a second). When
    their request lines do arrive, each is routed and answered."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    allow_open_files(1000)
    server = ServerProcess("--workers", "2", "--event-loop", loop_name())
    try:
        await server.ready()
        slow = [await slow_client(server.port, b"GET /r/") for _ in range(1000)]
        await asyncio.sleep(0.5)  # the supervisor has read every first piece by now
        traced = await asyncio.to_thread(
            subprocess.run,
            ["timeout", "-s", "INT", "2", "strace", "-c", "-e", "trace=recvfrom,recvmsg",
             "-p", str(server.process.pid)],
            capture_output=True, text=True,
        )
        calls = sum(int(line.split()[3]) for line in traced.stderr.splitlines()
                    if line.split()[-1:] in (["recvfrom"], ["recvmsg"]))
        assert "attached" in traced.stderr or "% time" in traced.stderr, traced.stderr
        assert calls < 50, traced.stderr
        for _, writer in slow:
            writer.write(b"AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for reader, writer in slow:
            status, _, _ = await read_response(reader)
            assert status == 200
            writer.close()
    finally:
        server.kill()
