"""The relay's documented worst cases, measured (docs/operations.md).

    python bench/worst_case.py memory [--runs 3] [serve flags...]
        Peak resident memory of a relay whose room of 64 holds 63 members that never read
        (4 KiB receive buffers) and one that sends 64 KiB messages, in a burst of 60 and
        then 30 a second, with no rate limit, against the documented bound
        B + N x (max-buffered-bytes + 2 x max-message-bytes + 256 KiB), with B the relay's
        memory once the 64 members have joined.
    python bench/worst_case.py slow-lines [--runs 3] [serve flags...]
        CPU of a --workers 2 supervisor holding 1,000 connections that sent only the start
        of a request line ("GET /r/") and then nothing.

Each run starts its own relay on a free loopback port and prints one line; the last line is
the median. The memory case runs relay and clients on the same cores, as on a busy machine: a
relay that falls behind reads its input in larger batches, which is what makes the worst
case. The slow-lines case pins the relay to core 0 and the clients to core 1 where there are
two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import orjson

KIB, MIB = 1024, 1024 * 1024
# pugfast/engine/_fanout.py: the most one write offers the transport.
WRITE_CHUNK = 256 * KIB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) >= 2 else []


class Relay:
    """``pugfast serve`` in a child process on a free loopback port."""

    def __init__(self, *flags: str, pin: bool = False) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [*(pinned(0) if pin else []), sys.executable, "-m", "pugfast", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--pow-difficulty", "0", *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the relay did not start: "
                                       + self.process.stderr.read().decode()) from None  # type: ignore[union-attr]
                time.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_room(self, **fields: Any) -> dict[str, Any]:
        def post(path: str, body: dict[str, Any]) -> Any:
            request = urllib.request.Request(f"{self.base}{path}", data=orjson.dumps(body),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return orjson.loads(response.read())

        token = post("/api/challenge", {})["token"]
        return post("/api/rooms", {"token": token, "nonce": "0", **fields})  # type: ignore[no-any-return]

    def status(self, key: str) -> int:
        """A /proc/PID/status field in bytes (VmRSS, VmHWM)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * KIB
        raise KeyError(key)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.kill()
        self.process.communicate()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


async def join(port: int, room: dict[str, Any], receive_buffer: int | None = None) -> Any:
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /r/{room['room']}/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    writer.write(client_frame(1, orjson.dumps({"type": "join", "secret": room["secret"]})))
    await writer.drain()
    return reader, writer


async def peak_memory(flags: list[str], senders: int = 1, members: int = 64) -> dict[str, float]:
    """The worst case of docs/operations.md "Sizing", measured once."""
    relay = Relay("--capacity-max", str(members), "--rate-limit", "0", *flags)
    try:
        room = relay.create_room(capacity=members)
        sending = [await join(relay.port, room, receive_buffer=4096) for _ in range(senders)]
        quiet = [await join(relay.port, room, receive_buffer=4096) for _ in range(members - senders)]
        await asyncio.sleep(0.5)
        joined = relay.status("VmRSS")

        async def discard(reader: asyncio.StreamReader) -> None:
            while await reader.read(1 << 20):
                pass

        readers = [asyncio.ensure_future(discard(reader)) for reader, _ in sending]
        frame = client_frame(2, os.urandom(65536))
        for _, writer in sending:
            writer.write(frame * 60)
        started = time.monotonic()
        while time.monotonic() - started < 4:
            for _, writer in sending:
                if not writer.is_closing():
                    writer.write(frame)
            await asyncio.sleep(1 / 30)
        await asyncio.sleep(1)
        peak = relay.status("VmHWM")
        for task in readers:
            task.cancel()
        for _, writer in sending + quiet:
            writer.transport.abort()
    finally:
        relay.stop()
    max_buffered = _flag(flags, "--max-buffered-bytes", MIB)
    max_message = _flag(flags, "--max-message-bytes", 64 * KIB)
    bound = joined + members * (max_buffered + 2 * max_message + WRITE_CHUNK)
    return {"joined": joined, "peak": peak, "bound": bound}


def _flag(flags: list[str], name: str, default: int) -> int:
    return int(flags[flags.index(name) + 1]) if name in flags else default


async def slow_lines(flags: list[str], connections: int = 1000, seconds: float = 5.0) -> float:
    """A --workers 2 supervisor's CPU (fraction of a core) with ``connections`` that sent only
    the start of a request line."""
    relay = Relay("--workers", "2", *flags, pin=True)
    try:
        held = []
        for _ in range(connections):
            _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"GET /r/")
            held.append(writer)
        await asyncio.sleep(0.5)
        before, started = relay.cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        used = (relay.cpu_seconds() - before) / (time.monotonic() - started)
        for writer in held:
            writer.close()
    finally:
        relay.stop()
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["memory", "slow-lines"])
    parser.add_argument("--runs", type=int, default=3)
    args, flags = parser.parse_known_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.case == "memory":
        peaks = []
        for run in range(args.runs):
            m = asyncio.run(peak_memory(flags))
            peaks.append(m["peak"])
            print(f"run {run + 1}: joined {m['joined'] / MIB:.1f} MiB, peak {m['peak'] / MIB:.1f} MiB, "
                  f"documented bound {m['bound'] / MIB:.1f} MiB")
        print(f"median peak {statistics.median(peaks) / MIB:.1f} MiB")
    else:
        if pinned(1):
            os.sched_setaffinity(0, {1})
        shares = []
        for run in range(args.runs):
            shares.append(asyncio.run(slow_lines(flags)))
            print(f"run {run + 1}: supervisor at {100 * shares[-1]:.1f}% of a core")
        print(f"median {100 * statistics.median(shares):.1f}% of a core "
              "with 1,000 partial request lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
