"""Helpers for tests that talk to a real relay over loopback.

``running_relay`` starts the relay in-process on the test's own event loop (so each test runs
on asyncio and on uvloop). ``RawClient`` speaks WebSocket over a plain socket, so tests can send
exactly the bytes they mean, malformed ones included; its frame reader is written here from
RFC 6455, independently of the relay's own codec.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from engines import client_frame

from pugfast.config import Settings
from pugfast.server import Relay
from pugfast.workers.supervisor import Supervisor

TEST_DEFAULTS: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "pow_difficulty": 0}


def relay_settings(**overrides: Any) -> Settings:
    values = dict(TEST_DEFAULTS)
    values.update(overrides)
    return Settings(**values)


@dataclass
class RunningRelay:
    """A relay under test: one in-process relay, or a supervisor and its worker processes."""

    port: int
    session: aiohttp.ClientSession
    relay: Relay | None = None
    supervisor: Supervisor | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> Any:
        assert self.relay is not None, "a relay of several workers has no gateway in this process"
        return self.relay.gateway

    async def create_room(self, **fields: Any) -> dict[str, Any]:
        async with self.session.post(f"{self.base}/api/challenge") as response:
            challenge = await response.json()
        body = {"token": challenge["token"], "nonce": "0", **fields}
        async with self.session.post(f"{self.base}/api/rooms", json=body) as response:
            assert response.status == 201, await response.text()
            return await response.json()

    async def raw(self, room: str) -> RawClient:
        client = RawClient()
        await client.connect(self.port, f"/r/{room}/ws")
        return client

    async def member(self, room: dict[str, Any]) -> tuple[RawClient, dict[str, Any]]:
        """A raw client joined to ``room``; returns it with its welcome message."""
        client = await self.raw(room["room"])
        await client.send_json({"type": "join", "secret": room["secret"]})
        welcome = await client.recv_json()
        assert welcome["type"] == "welcome", welcome
        return client, welcome


@contextlib.asynccontextmanager
async def running_relay(**overrides: Any) -> AsyncIterator[RunningRelay]:
    # Test clients often do not hang up when the relay shuts down; waiting for them is
    # pointless here (test_serve.py covers the shutdown of a real process).
    relay = Relay(relay_settings(**overrides), shutdown_grace=0.05)
    await relay.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield RunningRelay(relay.port, session, relay=relay)
    finally:
        await relay.stop()


def loop_name() -> str:
    """The running event loop's kind, as ``--event-loop`` names it."""
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


@contextlib.asynccontextmanager
async def running_workers(workers: int = 2, **overrides: Any) -> AsyncIterator[Supervisor]:
    """``--workers N`` with the supervisor in this process (so a test can see its workers and
    shorten its timeouts) and real worker processes on this test's loop and engine."""
    settings = relay_settings(workers=workers, event_loop=loop_name(), **overrides)
    supervisor = Supervisor(settings, shutdown_grace=0.05)
    await supervisor.start()
    try:
        # Every worker answers before the test starts (round-robin reaches each in turn).
        async with aiohttp.ClientSession() as session:
            for _ in range(workers):
                for _attempt in range(200):
                    try:
                        async with session.get(f"http://127.0.0.1:{supervisor.port}/healthz") as r:
                            assert r.status == 200
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
        yield supervisor
    finally:
        await supervisor.stop()


@contextlib.asynccontextmanager
async def running_relay_of(workers: int, **overrides: Any) -> AsyncIterator[RunningRelay]:
    """``running_relay`` for ``workers == 1``, else a relay of that many worker processes."""
    if workers == 1:
        async with running_relay(**overrides) as r:
            yield r
        return
    async with running_workers(workers, **overrides) as supervisor, aiohttp.ClientSession() as session:
        yield RunningRelay(supervisor.port, session, supervisor=supervisor)


@dataclass
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8")


class RawClient:
    """A WebSocket client over a plain TCP stream."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def connect(self, port: int, path: str, headers: dict[str, str] | None = None) -> None:
        status, self.response_headers = await self.handshake(port, path, headers)
        assert status == 101, (status, self.response_headers)

    async def handshake(
        self, port: int, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str]]:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {
            "Host": f"127.0.0.1:{port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        }
        fields.update(headers or {})
        request = f"GET {path} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in fields.items()
        )
        self.writer.write(request.encode() + b"\r\n")
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        response_headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                response_headers[name.strip().lower()] = value.strip()
        return status, response_headers

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def send_json(self, message: Any) -> None:
        self.send(client_frame(1, orjson.dumps(message)))
        await self.writer.drain()

    async def send_binary(self, payload: bytes) -> None:
        self.send(client_frame(2, payload))
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame from the server (server frames must be unmasked, with no RSV bits)."""
        async def read() -> Frame:
            b0, b1 = await self.reader.readexactly(2)
            assert b0 & 0x70 == 0, "server frame with an RSV bit"
            assert b1 & 0x80 == 0, "server frames must not be masked"
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return Frame(b0 & 0x0F, await self.reader.readexactly(n), bool(b0 & 0x80))

        return await asyncio.wait_for(read(), timeout)

    async def recv_json(self, timeout: float = 5.0) -> Any:
        frame = await self.recv(timeout)
        assert frame.opcode == 1, frame
        return orjson.loads(frame.payload)

    async def recv_close(self, timeout: float = 5.0) -> Frame:
        """Read until the close frame, skipping others; then expect the server to end its side
        of the TCP connection, and hang up as a well-behaved client does."""
        while True:
            frame = await self.recv(timeout)
            if frame.opcode == 8:
                rest = await asyncio.wait_for(self.reader.read(), timeout)
                assert rest == b"", "data after the server's close frame"
                await self.close()
                return frame

    async def expect_closed_with(self, code: int, timeout: float = 5.0) -> Frame:
        frame = await self.recv_close(timeout)
        assert frame.close_code == code, (frame.close_code, frame.payload)
        return frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``pugfast serve`` in a child process on a free loopback port, stopped with SIGTERM.

    ``prefix`` runs the server under another program (``strace``); stderr is collected.
    """

    def __init__(self, *flags: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None):
        import subprocess
        import sys

        self.port = free_port()
        self.prefix = prefix
        command = [*prefix, sys.executable, "-m", "pugfast", "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--pow-difficulty", "0", *flags]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # so kill() reaches a server started under a prefix too
        )
        self.stderr = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.process.poll() is None, self.process.stderr.read().decode()  # type: ignore[union-attr]
                try:
                    async with session.get(f"{self.base}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                assert loop.time() < deadline, "the server did not start"
                await asyncio.sleep(0.05)

    async def create_room(self, **fields: Any) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.base}/api/challenge") as response:
                token = (await response.json())["token"]
            body = {"token": token, "nonce": "0", **fields}
            async with session.post(f"{self.base}/api/rooms", json=body) as response:
                assert response.status == 201
                return await response.json()

    @property
    def server_pid(self) -> int:
        """The relay's own pid: the child's, or under a prefix that stays (strace) the
        grandchild's; a prefix that execs the relay (prlimit) leaves it the child."""
        if not self.prefix:
            return self.process.pid
        with open(f"/proc/{self.process.pid}/comm") as comm:
            if comm.read().strip() != os.path.basename(self.prefix[0])[:15]:
                return self.process.pid
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as children:
            return int(children.read().split()[0])

    def stop(self, timeout: float = 10.0, signum: int = 15) -> int:
        """SIGTERM (or ``signum``), then wait; returns the exit code and keeps stderr in
        ``self.stderr``."""
        import subprocess

        if self.process.poll() is None:
            os.kill(self.server_pid, signum)
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.stderr = err.decode("utf-8", "replace")
        return self.process.returncode

    def kill(self) -> None:
        """Kill the server and anything it runs under, at once."""
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.communicate()


def self_signed_certificate(directory: Any, host: str = "127.0.0.1") -> tuple[str, str]:
    """A throwaway certificate and key for ``host`` (an IP address or a name), as PEM files in
    ``directory``; returns their paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    try:
        alt_name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt_name = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_path, key_path
