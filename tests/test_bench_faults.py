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

# The window opens about 0.1 s after every member has joined, plus the warm-up.
WARMUP = 0.5
START_DELAY = 0.1


def microseconds(figure: str) -> float:
    """A figure as the text report prints it (``1.23 ms``), in microseconds."""
    number, unit = figure.split()
    return float(number.replace(",", "")) * {"ns": 1e-3, "us": 1, "ms": 1e3, "s": 1e6}[unit]


def stop_for(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


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
            str(WARMUP), "--duration", "4", "--drain", "10", "--out", str(series),
            "--threshold", "p99<2ms", "--ready-file", str(ready), "--json", "--quiet")
        wait_for_file(ready, bench)
        # One second into the four-second window, for one second.
        time.sleep(START_DELAY + WARMUP + 1.0)
        stop_for(relay.pid, 1.0)
        status, report, err = finish(bench)
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
        workers = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(bench.pid)], capture_output=True, text=True,
            check=True).stdout.split()]
        assert len(workers) == 2
        time.sleep(START_DELAY + WARMUP + 1.0)
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
        time.sleep(START_DELAY + WARMUP + 1.0)
        # One process: the generator is the bench itself.
        stop_for(bench.pid, 0.5)
        status, report, err = finish(bench)
    assert status == 0, err
    lag = report["lag_us"]
    assert not lag["kept_schedule"] and lag["max"] >= 400_000
    assert report["latency_us"]["p99"] >= 250_000
    # Every message due was still sent, late: none was skipped.
    assert report["sent"] == report["offered"] and lag["unsent"] == 0
    assert any("fell behind" in w for w in report["warnings"])


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
