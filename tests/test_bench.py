"""``pugfast bench`` against a real relay on loopback, its histogram, and the guard's verdict.

The relay runs in-process on its own event loop in a thread, so the generator (whose single
worker also runs in a thread) drives it exactly as it drives a remote one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import relay_settings

from pugfast.bench import add_arguments, main
from pugfast.server import Relay

ROOT = Path(__file__).resolve().parent.parent

REPORT_KEYS = {
    "version", "target", "config", "rooms", "connections", "sent", "sent_total", "expected",
    "delivered", "lost", "loss_ratio", "received_in_window", "messages_per_s",
    "deliveries_per_s", "latency_us", "histogram", "sequence_gaps", "errors", "join",
    "generator", "server",
}
LATENCY_KEYS = {"count", "p50", "p90", "p99", "p99.9", "p99.99", "max", "min", "mean"}
SERVER_KEYS = {
    "pid", "cpu_s", "cpu_utilisation", "cpu_us_per_delivery", "deliveries_per_cpu_s",
    "cpu_us_per_join", "rss_bytes", "rss_begin_bytes", "rss_per_connection_bytes", "processes",
}


@pytest.fixture(scope="module")
def relay_url() -> Iterator[str]:
    """A relay on its own loop in a thread (rate limit off, as for any benchmark)."""
    loop = asyncio.new_event_loop()
    relay = Relay(relay_settings(rate_limit=0, capacity_max=64))
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


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    status = main(parser.parse_args([*argv, "--json", "--quiet"]))
    return status, json.loads(capsys.readouterr().out)


def test_lockstep_run_delivers_every_message(
    relay_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "3", "--burst", "2",
                           "--warmup", "0.2", "--duration", "0.6", "--drain", "5",
                           "--server-pid", str(os.getpid()))
    assert status == 0, report
    assert report["connections"] == 6
    assert report["sent"] > 0
    assert report["expected"] == report["sent"] * 2
    assert report["delivered"] == report["expected"]
    assert report["lost"] == 0 and report["errors"] == {} and report["sequence_gaps"] == 0
    assert report["latency_us"]["count"] == report["delivered"]
    assert sum(n for _, _, n in report["histogram"]) == report["delivered"]
    # Every round is whole: all members send a burst of 2 each time.
    assert report["sent_total"] % (3 * 2) == 0


def test_open_loop_run_delivers_every_message(
    relay_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "3", "--rate", "300",
                           "--warmup", "0.2", "--duration", "0.6")
    assert status == 0, report
    assert report["config"]["mode"] == "open"
    # 300 messages/s for 0.6 s, give or take the ticks at the window's edges.
    assert 150 <= report["sent"] <= 200
    assert report["delivered"] == report["expected"] == report["sent"] * 2
    assert report["lost"] == 0 and report["errors"] == {}
    latency = report["latency_us"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"]
    assert latency["p99.9"] <= latency["max"]


def test_json_report_has_the_documented_keys(
    relay_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "1", "--members", "2", "--warmup", "0",
                           "--duration", "0.3", "--server-pid", str(os.getpid()))
    assert status == 0
    assert set(report) == REPORT_KEYS
    assert set(report["latency_us"]) == LATENCY_KEYS
    assert set(report["server"]) == SERVER_KEYS
    assert set(report["join"]) == {"count", "seconds", "per_s", "latency_us"}
    assert set(report["generator"]) == {"cpu_s", "cpu_utilisation", "cpu_us_per_delivery"}
    assert report["join"]["count"] == 2
    assert report["server"]["pid"] == os.getpid() and report["server"]["rss_bytes"] > 0
    assert report["config"]["mode"] == "lockstep" and report["config"]["burst"] == 1


def test_idle_run_sends_nothing(relay_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "2", "--idle",
                           "--warmup", "0", "--duration", "0.2")
    assert status == 0
    assert report["connections"] == 4 and report["sent"] == 0 and report["delivered"] == 0


def test_full_room_is_an_error_by_kind(relay_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The relay's capacity is at most 64: the 65th member is refused with 4409.
    status, report = bench(capsys, relay_url, "--rooms", "1", "--members", "65", "--idle",
                           "--warmup", "0", "--duration", "0.1")
    assert status == 1
    assert report["connections"] == 64
    assert report["errors"].get("capacity_below_members") == 1
    assert report["errors"].get("close_4409") == 1


def test_unreachable_relay_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, "http://127.0.0.1:9", "--rooms", "1", "--duration", "0.1",
                           "--warmup", "0")
    assert status == 1
    assert report["rooms"] == 0
    assert report["errors"] == {"create_ClientConnectorError": 1}


def test_module_entry_point_has_help() -> None:
    done = subprocess.run([sys.executable, "-m", "pugfast.bench", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert "--server-pid" in done.stdout and "--procs" in done.stdout


# -- the guard's verdict -----------------------------------------------------------------------

def load_guard() -> Any:
    spec = importlib.util.spec_from_file_location("bench_guard", ROOT / "bench" / "guard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_guard_flags_a_regression_beyond_tolerance() -> None:
    guard = load_guard()
    baseline = {"cython_ir_per_delivery": 1000.0, "python_ir_per_delivery": 9000.0}
    assert guard.compare({"cython_ir_per_delivery": 1099.0, "python_ir_per_delivery": 9000.0},
                         baseline, 0.10) == []
    problems = guard.compare({"cython_ir_per_delivery": 1101.0,
                              "python_ir_per_delivery": 9000.0}, baseline, 0.10)
    assert len(problems) == 1 and "cython" in problems[0] and "+10.1%" in problems[0]
    assert len(guard.compare({"cython_ir_per_delivery": 2000.0,
                              "python_ir_per_delivery": 20000.0}, baseline, 0.10)) == 2
    # Faster is never a regression, and an engine that was not measured is not judged.
    assert guard.compare({"cython_ir_per_delivery": 500.0}, baseline, 0.10) == []


def test_committed_guard_baseline_matches_the_workload() -> None:
    guard = load_guard()
    baseline = json.loads((ROOT / "bench" / "guard_baseline.json").read_text())
    assert baseline["workload"] == guard.WORKLOAD
    assert baseline["cython_ir_per_delivery"] < baseline["python_ir_per_delivery"]
