"""What the bench tests share: a relay to load (in a thread, or as a process that can be
stopped with SIGSTOP), and ``pugfast bench`` run in-process or as a command.

A relay process runs the test's engine (PUGFAST_NO_EXTENSIONS is inherited), as does every
``pugfast bench`` command. Runs wait for stragglers as long as a loaded machine may need
(DRAIN).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import relay_settings

from pugfast.bench import add_arguments, main
from pugfast.server import Relay

ROOT = Path(__file__).resolve().parent.parent
# A run's drain ends as soon as every message due in its window has arrived: runs the tests
# start wait up to a minute for stragglers on a loaded machine unless they say otherwise (a
# message lost for good still shows, as loss, a minute later).
DRAIN = ("--drain", "60")
RELAY_FLAGS = ["--pow-difficulty", "0", "--rate-limit", "0", "--log-level", "warning",
               "--capacity-max", "64"]


@contextlib.contextmanager
def thread_relay(**overrides: Any) -> Iterator[str]:
    """A relay on its own loop in a thread (rate limit off, as for any benchmark); its URL."""
    loop = asyncio.new_event_loop()
    relay = Relay(relay_settings(**{"rate_limit": 0, "capacity_max": 64, **overrides}))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(relay.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{relay.port}"
    finally:
        asyncio.run_coroutine_threadsafe(relay.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RelayProcess:
    """``pugfast serve`` as a process of its own (so that it can be stopped and resumed)."""

    process: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "the relay exited at start"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            assert time.monotonic() < deadline, "the relay did not answer /healthz"
            time.sleep(0.05)


@contextlib.contextmanager
def relay_process(*flags: str, prefix: list[str] | None = None, host: str = "127.0.0.1",
                  port: int | None = None) -> Iterator[RelayProcess]:
    """``pugfast serve`` on ``host`` (loopback by default), stopped afterwards. ``prefix``
    runs it through another command (``ip netns exec NS``)."""
    port = port or free_port()
    command = [*(prefix or []), sys.executable, "-m", "pugfast", "serve", "--host", host,
               "--port", str(port), *RELAY_FLAGS, *flags]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    relay = RelayProcess(process, f"http://{host}:{port}")
    try:
        if prefix is None:
            wait_ready(relay.url, process)
        yield relay
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench_here(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``pugfast bench ARGV --quiet`` in this process: its status and what it printed."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    status = main(parser.parse_args([*with_drain(argv), "--quiet"]))
    captured = capsys.readouterr()
    sys.stderr.write(captured.err)  # for the test to read
    return status, captured.out


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """``pugfast bench ARGV --json --quiet`` in this process: its status and report."""
    status, out = bench_here(capsys, *argv, "--json")
    return status, json.loads(out)


def with_drain(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` with the tests' DRAIN unless it gives one."""
    return argv if "--drain" in argv else (*argv, *DRAIN)


def bench_command(*argv: str, prefix: list[str] | None = None) -> list[str]:
    return [*(prefix or []), sys.executable, "-m", "pugfast.bench", *argv]


def start_bench(*argv: str, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    """``pugfast bench ARGV`` as a process (its own session, so that it can be stopped whole),
    with the tests' DRAIN unless it gives one."""
    return subprocess.Popen(bench_command(*with_drain(argv), prefix=prefix), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"pugfast bench ended early: {process.communicate()[1]}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
