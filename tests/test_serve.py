"""``pugfast serve`` as an operator runs it: a child process, its flags, signals and privacy.

Each async test runs the server on the same event loop implementation as the test itself
(``--event-loop``), so both loops are covered end to end.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys

import aiohttp
import pytest
import websockets
from engines import client_frame
from support import RawClient, ServerProcess, self_signed_certificate

from pugfast import __version__
from pugfast.config import OPTIONS


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pugfast", *args], capture_output=True, text=True, timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("args", [["--version"], ["serve", "--version"]])
def test_version(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 0
    assert result.stdout.strip() == f"pugfast {__version__}"


def test_the_console_script_is_installed() -> None:
    script = shutil.which("pugfast")
    assert script, "pip install should have put a pugfast command on PATH"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == f"pugfast {__version__}"


def test_help_lists_every_flag_with_its_variable() -> None:
    text = run_cli("serve", "--help").stdout
    for option in OPTIONS:
        assert f"--{option.name}" in text
        assert option.env in text.replace("\n", " ").replace("  ", " ") or option.env in text


def test_no_command_prints_help_and_fails() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "serve" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--ttl-min", "0"], {}, "--ttl-min must be a whole number from 1 to 604800 (got '0')"),
        (["--port", "99999"], {}, "--port must be a whole number from 0 to 65535"),
        ([], {"PUGFAST_RATE_BURST": "many"}, "PUGFAST_RATE_BURST must be a whole number from 1 to"),
        ([], {"PORT": "x"}, "PORT must be a whole number from 0 to 65535 (got 'x')"),
        (["--tls-cert", "/nonexistent"], {}, "--tls-cert and --tls-key go together"),
    ],
)
def test_bad_values_are_refused_at_start(args, env, message) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def _open_http_connections_in_every_state(port: int) -> list[socket.socket]:
    """Plain HTTP connections as a stop may find them: idle between keep-alive requests, a
    head half sent, a body half sent, and a response given early whose client hung up while
    aiohttp still lingered over the rest of its body."""
    loop = asyncio.get_running_loop()
    kept = []

    async def connect(request: bytes, *, answered: bool) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        await loop.sock_sendall(sock, request)
        if answered:
            assert (await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)).startswith(b"HTTP/1.1 ")
        return sock

    for _ in range(3):
        kept.append(await connect(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", answered=True))
        kept.append(await connect(b"GET /api/lim", answered=False))
        kept.append(await connect(b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n{",
                                  answered=False))
        early = await connect(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\nab", answered=True)
        early.close()
    await asyncio.sleep(0.2)  # the relay sees those clients go
    return kept


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_stop_signal_closes_members_with_1001_exits_0_and_logs_no_warning(
    loop_name: str, workers: str, signum: int
) -> None:
    """SIGTERM, SIGINT and SIGHUP (what closing the relay's terminal sends) stop it the same
    way, one process or several, with HTTP connections in any state: nothing at WARNING or
    above is logged (no aiohttp task destroyed pending, say)."""
    server = ServerProcess("--event-loop", loop_name, "--workers", workers)
    try:
        await server.ready()
        room = await server.create_room()
        clients = []
        for _ in range(2):
            client = RawClient()
            await client.connect(server.port, f"/r/{room['room']}/ws")
            await client.send_json({"type": "join", "secret": room["secret"]})
            assert (await client.recv_json())["type"] == "welcome"
            clients.append(client)
        held = await _open_http_connections_in_every_state(server.port)
        started = asyncio.get_running_loop().time()
        code = await asyncio.to_thread(server.stop, 20.0, signum)
        assert code == 0, server.stderr
        assert asyncio.get_running_loop().time() - started < 10
        for client in clients:
            await client.expect_closed_with(1001)
        alarms = [line for line in server.stderr.splitlines()
                  if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
        assert not alarms, server.stderr
        for sock in held:
            sock.close()
    finally:
        server.kill()


async def test_production_without_tls_warns(loop_name: str) -> None:
    server = ServerProcess("--production", "--event-loop", loop_name)
    try:
        await server.ready()
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0
    assert "warning: --production without TLS" in server.stderr


async def test_production_behind_a_tls_proxy_does_not_warn(loop_name: str) -> None:
    server = ServerProcess("--production", "--allowed-origin", "https://chat.example.org",
                           "--event-loop", loop_name)
    try:
        await server.ready()
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0
    assert "warning" not in server.stderr


async def test_tls_serves_https_and_wss_with_hsts(loop_name: str, tmp_path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = ServerProcess("--tls-cert", cert, "--tls-key", key, "--production",
                           "--event-loop", loop_name)
    context = ssl.create_default_context(cafile=cert)
    base = f"https://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/healthz", ssl=context) as response:
                        assert response.status == 200
                        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            async with session.post(f"{base}/api/challenge", ssl=context) as response:
                token = (await response.json())["token"]
            async with session.post(f"{base}/api/rooms", json={"token": token, "nonce": "0"},
                                    ssl=context) as response:
                room = await response.json()
        url = f"wss://127.0.0.1:{server.port}/r/{room['room']}/ws"
        async with websockets.connect(url, ssl=context) as a, websockets.connect(url, ssl=context) as b:
            for ws in (a, b):
                await ws.send(f'{{"type":"join","secret":"{room["secret"]}"}}')
                assert '"welcome"' in await ws.recv()
            assert '"join"' in await a.recv()
            await b.send(b"ciphertext")
            assert await a.recv() == b"\x00\x00\x00\x02ciphertext"
    finally:
        assert await asyncio.to_thread(server.stop) == 0
    assert "production without TLS" not in server.stderr


async def exercise(server: ServerProcess, marker: bytes) -> dict[str, str]:
    """Drive a server through everything that might be logged; return what must not be."""
    room = await server.create_room(ttl=60, capacity=2)
    path = f"/r/{room['room']}/ws"
    a, b, c = RawClient(), RawClient(), RawClient()
    for client in (a, b):
        await client.connect(server.port, path)
        await client.send_json({"type": "join", "secret": room["secret"]})
        assert (await client.recv_json())["type"] == "welcome"
    await c.connect(server.port, path)
    await c.send_json({"type": "join", "secret": room["secret"]})
    await c.expect_closed_with(4409)
    await a.recv_json()  # b's join
    a.send(client_frame(2, marker) * 100)  # past the burst: rate limited
    assert (await b.recv()).payload.endswith(marker)
    await b.send_json({"type": "nonsense", "secret": room["secret"]})
    await b.expect_closed_with(4400)
    wrong = RawClient()
    await wrong.connect(server.port, f"/r/{'A' * 22}/ws")
    await wrong.send_json({"type": "join", "secret": room["secret"]})
    await wrong.expect_closed_with(4404)
    bad_origin = RawClient()
    status, _ = await bad_origin.handshake(server.port, path, {"Origin": "http://evil.test"})
    assert status == 403
    # A malformed request and an abrupt disconnect, for aiohttp's own error paths.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /\x00 HTTP/1.1\r\nHost: " + marker + b"\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    writer.transport.abort()
    await a.close()
    return {"room id": room["room"], "secret": room["secret"], "payload": marker.decode()}


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_logs_at_debug_name_no_address_room_secret_or_payload(loop_name: str, workers: str) -> None:
    server = ServerProcess("--log-level", "debug", "--rate-burst", "5", "--event-loop", loop_name,
                           "--workers", workers)
    try:
        await server.ready()
        secrets = await exercise(server, b"PAYLOAD-MARKER-7f3a")
    finally:
        assert await asyncio.to_thread(server.stop) == 0
    log = server.stderr
    assert "DEBUG" in log, "the server did not log at debug level"
    assert "room created" in log
    assert not re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", log), log
    assert "::1" not in log
    for what, value in secrets.items():
        assert value not in log, f"the log names the {what}"


def test_core_dumps_are_disabled() -> None:
    code = (
        "import ctypes, resource; from pugfast.privacy import disable_core_dumps; "
        "disable_core_dumps(); print(resource.getrlimit(resource.RLIMIT_CORE), "
        "ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == ["(0,", "0)", "0"]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_the_running_server_has_no_core_limit(loop_name: str, workers: str) -> None:
    server = ServerProcess("--event-loop", loop_name, "--workers", workers)
    try:
        await server.ready()
        pids = [server.server_pid]
        if workers != "1":
            await server.create_room()  # so that every worker is surely up
            with open(f"/proc/{server.server_pid}/task/{server.server_pid}/children") as children:
                pids += [int(pid) for pid in children.read().split()]
            assert len(pids) == 1 + int(workers)
        for pid in pids:
            with open(f"/proc/{pid}/limits") as limits:
                line = next(line for line in limits if line.startswith("Max core file size"))
            assert line.split()[4:6] == ["0", "0"], line
    finally:
        assert await asyncio.to_thread(server.stop) == 0


WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_no_file_is_opened_for_writing_after_start_up(loop_name: str, workers: str, tmp_path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI"):
            pytest.fail("strace is missing: .ci/run installs it")
        pytest.skip("strace is not installed (.ci/run installs it)")
    trace = tmp_path / "trace"
    server = ServerProcess(
        "--log-level", "debug", "--event-loop", loop_name, "--workers", workers,
        prefix=(strace, "-f", "-qq", "-e", "trace=%file", "-o", str(trace)),
    )
    try:
        await server.ready(timeout=30)
        started = len(trace.read_text().splitlines())
        await exercise(server, b"another-marker")
        async with aiohttp.ClientSession() as session:
            for path in ("/", "/static/nonexistent.js", f"/r/{'B' * 22}"):
                async with session.get(server.base + path) as response:
                    await response.read()
    finally:
        assert await asyncio.to_thread(server.stop, 20) == 0
    after = trace.read_text().splitlines()[started:]
    assert after, "strace saw no file activity at all: is it tracing?"
    writes = [
        line for line in after
        if any(flag in line for flag in WRITE_FLAGS)
        or re.search(r"\b(creat|mkdir(at)?|rename(at2?)?|unlink(at)?|truncate|(sym)?link)\(", line)
    ]
    assert writes == [], writes
