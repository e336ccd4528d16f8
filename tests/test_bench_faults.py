"""``pugfast bench`` when things go wrong: a relay that stalls, a generator that stalls, a relay
that is not there, and arguments that describe no run.

The stalls are real: SIGSTOP and SIGCONT on a relay process, or on one of the generator's
processes, in the middle of an open-loop window. An honest open loop counts every message
from the time it was due, so the stall must show in the tail, in the time series and, when
the generator was the one stopped, in its lag.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from bench_kit import ROOT, bench_command, relay_process, start_bench, wait_for_file

# The window opens 0.1 s after every member has joined (when the bench writes --ready-file),
# plus the warm-up.
WARMUP = 0.5
START_DELAY = 0.1


def microseconds(figure: str) -> float:
    """A figure as the text report prints it (``1.23 ms``), in microseconds."""
    number, unit = figure.split()
    return float(number.replace(",", "")) * {"ns": 1e-3, "us": 1, "ms": 1e3, "s": 1e6}[unit]


def window_opens(ready: Path, warmup: float = WARMUP) -> float:
    """When the window opens (time.time()): the bench wrote ``ready`` once every member had
    joined and starts the load START_DELAY later. Taken from the file, not from when this test
    saw it, so a test that is slow to look still stops things where it means to."""
    return ready.stat().st_mtime + START_DELAY + warmup


def sleep_until(epoch_s: float) -> None:
    time.sleep(max(0.0, epoch_s - time.time()))


def stop_for(pid: int, seconds: float) -> tuple[float, float]:
    """Stops ``pid`` for at least ``seconds``; returns when it was stopped and resumed."""
    os.kill(pid, signal.SIGSTOP)
    stopped = time.time()
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return stopped, time.time()


def assert_inside(stall: tuple[float, float], report: dict, before_end: float) -> None:
    """The stall began in the window, at least ``before_end`` seconds before its end (else
    this run could not show what the test looks for)."""
    opened = report["started_epoch_s"]
    assert opened <= stall[0] <= opened + report["measured_s"] - before_end, (stall, opened)


def worker_pids(bench: subprocess.Popen[str]) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(bench.pid)],
                                           capture_output=True, text=True,
                                           check=True).stdout.split()]


def finish(process: subprocess.Popen[str]) -> tuple[int, dict, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, json.loads(out), err


def test_a_relay_stopped_for_a_second_shows_in_the_tail_the_series_and_the_verdict(
    tmp_path: Path,
) -> None:
    ready, series = tmp_path / "joined", tmp_path / "series.csv"
    with relay_process() as relay:
        bench = start_bench(
            relay.url, "--rooms", "5", "--members", "4", "--rate", "500", "--warmup",
            str(WARMUP), "--duration", "4", "--out", str(series),
            "--threshold", "p99<2ms", "--ready-file", str(ready), "--json", "--quiet")
        wait_for_file(ready, bench)
        # One second into the four-second window, for one second.
        sleep_until(window_opens(ready) + 1.0)
        stall = stop_for(relay.pid, 1.0)
        status, report, err = finish(bench)
    assert_inside(stall, report, before_end=1.0)
    assert status == 99, err
    assert "p99<2ms" in err and "BROKEN" in err
    (verdict,) = report["thresholds"]
    assert verdict["threshold"] == "p99<2ms" and not verdict["ok"]
    assert report["latency_us"]["p99"] >= 250_000
    assert report["lost"] == 0
    with open(series, newline="") as f:
        rows = list(csv.DictReader(f))
    assert max(float(r["p99_us"]) for r in rows if r["p99_us"]) >= 900_000


def test_a_generator_process_stopped_for_half_a_second_owes_its_messages_and_says_so(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "joined"
    with relay_process() as relay:
        bench = start_bench(
            relay.url, "--rooms", "6", "--members", "3", "--rate", "600", "--procs", "2",
            "--warmup", str(WARMUP), "--duration", "4", "--ready-file", str(ready), "--quiet")
        wait_for_file(ready, bench)
        workers = worker_pids(bench)
        assert len(workers) == 2
        sleep_until(window_opens(ready) + 1.0)
        stop_for(workers[0], 0.5)
        out, err = bench.communicate(timeout=120)
    assert bench.returncode == 0, err
    latency = next(line for line in out.splitlines() if line.strip().startswith("latency"))
    lag = next(line for line in out.splitlines() if line.strip().startswith("lag"))
    assert "the generator fell behind" in lag
    assert "the generator fell behind its schedule" in out
    assert microseconds(re.search(r"p99 ([0-9.,]+ \w+)", latency).group(1)) >= 250_000, latency


def test_a_generator_stall_is_in_the_json_too(tmp_path: Path) -> None:
    ready = tmp_path / "joined"
    with relay_process() as relay:
        bench = start_bench(
            relay.url, "--rooms", "4", "--members", "2", "--rate", "400", "--warmup",
            str(WARMUP), "--duration", "3", "--ready-file", str(ready), "--json", "--quiet")
        wait_for_file(ready, bench)
        sleep_until(window_opens(ready) + 1.0)
        # One process: the generator is the bench itself.
        stall = stop_for(bench.pid, 0.5)
        status, report, err = finish(bench)
    assert_inside(stall, report, before_end=0.5)
    assert status == 0, err
    lag = report["lag_us"]
    assert not lag["kept_schedule"] and lag["max"] >= 400_000
    assert report["latency_us"]["p99"] >= 250_000
    # Every message due was still sent, late: none was skipped.
    assert report["sent"] == report["offered"] and lag["unsent"] == 0
    assert any("fell behind" in w for w in report["warnings"])


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_a_generator_asleep_when_the_window_opens_still_counts_every_message_due_in_it(
    tmp_path: Path, event_loop: str,
) -> None:
    ready = tmp_path / "joined"
    warmup = 1.5
    with relay_process() as relay:
        bench = start_bench(
            relay.url, "--rooms", "4", "--members", "2", "--rate", "400", "--procs", "2",
            "--warmup", str(warmup), "--duration", "2", "--interval", "0.5",
            "--event-loop", event_loop, "--ready-file", str(ready), "--json", "--quiet")
        wait_for_file(ready, bench)
        workers = worker_pids(bench)
        assert len(workers) == 2
        # Asleep from the warm-up's middle to half a second into the window: when it wakes, its
        # tick writes every message it owes, the window's first ones among them, before the
        # loop runs anything it had to do at the window's opening (the asyncio loop runs I/O
        # callbacks, the tick's timerfd among them, before timers).
        opens = window_opens(ready, warmup)
        sleep_until(opens - 0.7)
        stall = stop_for(workers[0], max(0.0, opens + 0.5 - time.time()))
        status, report, err = finish(bench)
    assert stall[0] < report["started_epoch_s"] < stall[1], "the stall missed the opening"
    assert status == 0, err
    # Each message due in the window was sent, with its lag; each delivery has its latency.
    assert report["sent"] == report["offered"] == 800
    lag = report["lag_us"]
    assert lag["count"] == report["sent"] and lag["max"] >= 400_000
    assert report["delivered"] == report["expected"] == report["latency_us"]["count"]
    # And the time series holds every one of them.
    rows = report["intervals"]
    assert sum(r["sent"] for r in rows) == report["sent"]
    assert sum(r["delivered"] for r in rows) >= report["received_in_window"]


# -- a relay that is not there ---------------------------------------------------------------

def run_bench(*argv: str, timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(bench_command(*argv), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return done.returncode, done.stderr, time.monotonic() - started


def test_an_unreachable_relay_exits_2_at_once_naming_the_error() -> None:
    # A ten-minute run: had it started, the test would time out long before its end.
    status, err, _ = run_bench("http://127.0.0.1:1", "--duration", "600", "--rate", "100")
    assert status == 2
    assert "cannot reach the relay at http://127.0.0.1:1" in err
    assert "ConnectionRefusedError" in err


def test_a_relay_that_never_answers_exits_2_within_the_reach_timeout() -> None:
    from pugfast.bench import REACH_TIMEOUT

    assert REACH_TIMEOUT < 2
    # Accepts connections (the kernel does, into the backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        status, err, _ = run_bench(f"http://127.0.0.1:{port}", "--duration", "600")
    assert status == 2
    assert f"cannot reach the relay at http://127.0.0.1:{port}" in err
    assert "timed out" in err


# -- arguments that describe no run ------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["--rate", "inf"], "must be a finite number of messages per second"),
    (["--rate", "nan"], "must be a finite number of messages per second"),
    (["--rate", "0"], "--rate must be more than 0"),
    (["--members", "1"], "a room needs two members"),
    (["--members", "1", "--rate", "10"], "a room needs two members"),
    (["--payload", "11"], "--payload must be at least 12"),
    (["--stages", "100:1s,fast:2s"], "stage 2: 'fast' is not a rate"),
    (["--stages", "100"], "is not RATE:DURATION"),
    (["--stages", "100:1s", "--burst", "2"], "--stages ramps the open loop"),
    (["--threshold", "p99<"], "is not METRIC OP VALUE"),
    (["--threshold", "speed<2"], "unknown metric 'speed'"),
    (["--threshold", "p99<2kg"], "is not a time unit"),
    (["--threshold", "cpu_per_delivery<1us"], "needs --server-pid"),
    (["--threshold", "lag_p99<1ms"], "the lag is the open loop's"),
    (["--idle", "--threshold", "p99<1ms"], "an idle run sends no messages"),
    (["--out", "series.txt"], "must end in .csv or .jsonl"),
    (["--segment", "2/2"], "must be I/N with 0 <= I < N"),
    (["--segment", "0/20", "--rooms", "10"], "there are only 10 rooms"),
])
def test_bad_arguments_exit_2_before_anything_starts(argv: list[str], message: str) -> None:
    # The relay URL is unreachable: a message about it would mean the arguments got past.
    status, err, _ = run_bench("http://127.0.0.1:1", *argv)
    assert status == 2, err
    assert message in err
    assert "cannot reach" not in err


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "gopher://relay"])
def test_a_url_of_another_scheme_exits_2(url: str) -> None:
    status, err, _ = run_bench(url)
    assert status == 2
    assert "must be http(s):// or ws(s)://" in err


def test_interrupted_runs_stop_their_workers(tmp_path: Path) -> None:
    ready = tmp_path / "joined"
    with relay_process() as relay:
        bench = start_bench(relay.url, "--rooms", "2", "--members", "2", "--idle", "--procs",
                            "2", "--duration", "600", "--ready-file", str(ready), "--quiet")
        wait_for_file(ready, bench)
        workers = subprocess.run(["pgrep", "-P", str(bench.pid)], capture_output=True,
                                 text=True, check=True).stdout.split()
        bench.send_signal(signal.SIGTERM)
        bench.communicate(timeout=60)
    assert bench.returncode == 130
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(
            f"/proc/{pid}/stat").read_text().split(")")[1][:3]
