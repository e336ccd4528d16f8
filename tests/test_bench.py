"""``pugfast bench`` against a real relay on loopback: what it counts, the report, the time
series, stages, thresholds, honest output for odd runs, and the guard's verdict.

Most runs load a relay in a thread of this process (the generator's single worker runs in a
thread too), which it drives exactly as a remote one; tests/test_bench_faults.py stops relays
and generators, and tests/test_bench_split.py splits a load over generators.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench_kit import ROOT, bench, thread_relay

from pugfast.bench.control import Progress
from pugfast.bench.histogram import Histogram, merged

REPORT_KEYS = {
    "version", "target", "config", "segments", "rooms", "connections", "measured_s",
    "started_epoch_s", "aborted", "offered", "sent", "sent_total", "expected", "delivered",
    "lost", "loss_ratio", "received_in_window", "messages_per_s", "deliveries_per_s",
    "latency_us", "lag_us", "sequence_gaps", "errors", "error_count", "join", "generator",
    "server", "server_raw", "stages", "intervals", "histograms", "thresholds", "warnings",
}
LATENCY_KEYS = {"count", "p50", "p90", "p99", "p99.9", "p99.99", "max", "min", "mean"}
SERVER_KEYS = {
    "pid", "cpu_clock", "cpu_resolution_us", "cpu_s", "cpu_utilisation", "cpu_us_per_delivery",
    "deliveries_per_cpu_s", "cpu_us_per_join", "cpu_us_per_connection_s", "rss_bytes",
    "rss_begin_bytes", "rss_per_connection_bytes", "processes",
}
ROW_KEYS = {
    "start_s", "end_s", "phase", "stage", "offered", "sent", "delivered", "delivered_per_s",
    "errors", "measured", "p50_us", "p99_us", "p99.9_us", "max_us", "lag_p50_us",
    "lag_p99_us", "lag_max_us", "server_cpu", "server_rss_bytes", "latency", "lag",
}


@pytest.fixture(scope="module")
def relay_url() -> Iterator[str]:
    with thread_relay() as url:
        yield url


def test_lockstep_run_delivers_every_message_and_says_it_is_a_closed_loop(
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
    assert Histogram.from_state(report["histograms"]["latency"]).count == report["delivered"]
    # Every round is whole: all members send a burst of 2 each time.
    assert report["sent_total"] % (3 * 2) == 0
    assert report["config"]["loop"] == "closed" and report["offered"] is None
    assert report["lag_us"] is None
    assert any("closed loop" in w and "coordinated omission" in w for w in report["warnings"])


def test_open_loop_sends_on_schedule_and_stamps_each_message_with_it(
    relay_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "3", "--rate", "300",
                           "--warmup", "0.2", "--duration", "0.6")
    assert status == 0, report
    assert report["config"]["mode"] == "open" and report["config"]["loop"] == "open"
    # 300 messages/s for 0.6 s on a 1 ms grid: exactly 180 due, all sent.
    assert report["offered"] == report["sent"] == 180
    assert report["delivered"] == report["expected"] == report["sent"] * 2
    assert report["lost"] == 0 and report["errors"] == {}
    latency = report["latency_us"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"]
    assert latency["p99.9"] <= latency["max"]
    lag = report["lag_us"]
    assert lag["count"] == report["sent"] and lag["unsent"] == 0
    assert {"late", "late_ratio", "kept_schedule"} <= set(lag)


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
    assert set(report["generator"]) == {"cpu_s", "processes", "cpu_utilisation",
                                        "cpu_us_per_delivery", "precise_ticks"}
    assert report["join"]["count"] == 2
    assert report["server"]["pid"] == os.getpid() and report["server"]["rss_bytes"] > 0
    assert report["config"]["mode"] == "lockstep" and report["config"]["burst"] == 1
    assert all(set(row) == ROW_KEYS for row in report["intervals"])
    # The documentation lists every key.
    import pugfast.bench

    doc = pugfast.bench.__doc__ or ""
    for key in REPORT_KEYS | SERVER_KEYS | (ROW_KEYS - {"latency", "lag"}):
        assert f"``{key}``" in doc, key


def test_idle_run_sends_nothing_and_prints_only_what_it_measured(
    relay_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "2", "--idle",
                           "--warmup", "0", "--duration", "0.2", "--server-pid",
                           str(os.getpid()))
    assert status == 0
    assert report["connections"] == 4
    assert report["sent"] is None and report["delivered"] is None
    assert report["latency_us"]["p99"] is None
    assert report["server"]["cpu_us_per_connection_s"] is not None
    from pugfast.bench.report import format_text

    text = format_text(report)
    assert "idle" in text and "CPU per connection per second" in text
    for unmeasured in ("payload", "latency", "delivered", "per delivery", "sent"):
        assert unmeasured not in text, unmeasured


def test_a_single_member_may_only_idle(relay_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "1", "--idle",
                           "--warmup", "0", "--duration", "0.1")
    assert status == 0 and report["connections"] == 2


def test_full_room_is_an_error_by_kind(relay_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The relay's capacity is at most 64: the 65th member is refused with 4409.
    status, report = bench(capsys, relay_url, "--rooms", "1", "--members", "65", "--idle",
                           "--warmup", "0", "--duration", "0.1")
    assert status == 1
    assert report["connections"] == 64
    assert report["errors"].get("capacity_below_members") == 1
    assert report["errors"].get("close_4409") == 1


def test_module_entry_point_has_help() -> None:
    done = subprocess.run([sys.executable, "-m", "pugfast.bench", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    for flag in ("--server-pid", "--procs", "--threshold", "--stages", "--segment", "--out",
                 "--hdr-log", "merge"):
        assert flag in done.stdout, flag


# -- the time series ---------------------------------------------------------------------------

def test_the_time_series_adds_up_to_the_run_and_is_written_as_csv_and_jsonl(
    relay_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_csv, out_jsonl = tmp_path / "series.csv", tmp_path / "series.jsonl"
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "3", "--rate", "400",
                           "--warmup", "0.1", "--duration", "1.2", "--interval", "0.5",
                           "--out", str(out_csv), "--server-pid", str(os.getpid()))
    assert status == 0, report
    rows = report["intervals"]
    measure = [r for r in rows if r["phase"] == "measure"]
    # Cut every 0.5 s from the window's start, and at its end.
    assert [(r["start_s"], r["end_s"]) for r in measure] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.2)]
    assert all(r["phase"] == "drain" for r in rows[len(measure):])
    # The rows hold every delivery measured, exactly, and every message offered and sent.
    assert merged(r["latency"] for r in rows).to_state() == report["histograms"]["latency"]
    assert merged(r["lag"] for r in rows).to_state() == report["histograms"]["lag"]
    assert sum(r["offered"] for r in rows) == report["offered"] == 480
    assert [r["offered"] for r in measure] == [200, 200, 80]
    assert sum(r["sent"] for r in rows) == report["sent"]
    assert all(r["server_cpu"] is not None and r["server_rss_bytes"] for r in measure)
    with open(out_csv, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    # A row with nothing measured (a generator stalled through it) has no p99: blank.
    assert [float(r["p99_us"]) if r["p99_us"] else None for r in table] == [
        r["p99_us"] for r in rows]
    assert "latency" not in table[0]
    bench(capsys, relay_url, "--rooms", "1", "--members", "2", "--burst", "1", "--warmup", "0",
          "--duration", "0.3", "--out", str(out_jsonl))
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert lines and all(line["offered"] is None for line in lines)  # a closed loop offers none


def test_the_time_series_is_never_cut_before_its_time() -> None:
    # uvloop's timers count whole milliseconds and fire up to one early: a row cut early would
    # end before the time it is labelled with, and the last one could end before it starts.
    import uvloop

    from pugfast.bench.worker import Plan, Worker

    loop = uvloop.new_event_loop()
    worker = Worker(Plan(url="http://127.0.0.1:1"), 0, None, loop)

    async def early_by() -> list[int]:
        out = []
        for i in range(60):
            at = time.monotonic_ns() + 2_000_000 + i * 37_000  # across the millisecond
            fired: Any = loop.create_future()
            worker._call_at(at, lambda f=fired: f.set_result(time.monotonic_ns()))
            out.append(at - await fired)
        return out

    try:
        assert max(loop.run_until_complete(early_by())) <= 0
    finally:
        loop.close()


def test_stages_ramp_the_offered_rate(relay_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "2", "--members", "2", "--stages",
                           "200:500ms,600:0.5s", "--warmup", "0.1")
    assert status == 0, report
    assert report["config"]["stages"] == [[200.0, 0.5], [600.0, 0.5]]
    assert report["measured_s"] == 1.0
    first, second = report["stages"]
    # Linear ramps from 0 to 200/s and from 200 to 600/s, half a second each.
    assert (first["offered"], second["offered"]) == (50, 200)
    # Sent counts writes by when they happened: a busy generator may write a stage's last
    # messages in the next one, or in the drain, but every one of them.
    drain = [r for r in report["intervals"] if r["phase"] == "drain"]
    assert first["sent"] + second["sent"] + sum(r["sent"] for r in drain) == 250
    assert first["offered_per_s"] == 100 and second["offered_per_s"] == 400
    # Latencies by when they arrived: every one in a stage or in the drain after them.
    assert (first["latency_us"]["count"] + second["latency_us"]["count"]
            + sum(r["measured"] for r in drain)) == report["latency_us"]["count"] == 250
    assert report["offered"] == 250


# -- thresholds ---------------------------------------------------------------------------------

def test_broken_thresholds_exit_99_and_are_named(
    relay_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "1", "--members", "2", "--rate", "200",
                           "--warmup", "0", "--duration", "0.3", "--threshold", "p99<1ns",
                           "--threshold", "errors==0", "--threshold", "loss<=0%")
    assert status == 99
    verdicts = {v["threshold"]: v for v in report["thresholds"]}
    assert not verdicts["p99<1ns"]["ok"] and verdicts["p99<1ns"]["value"] > 0
    assert verdicts["errors==0"]["ok"] and verdicts["loss<=0%"]["ok"]
    assert "threshold broken: BROKEN p99<1ns: p99 was" in capsys.readouterr().err


def test_abort_on_fail_stops_the_run_early(
    relay_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = bench(capsys, relay_url, "--rooms", "1", "--members", "2", "--rate", "200",
                           "--warmup", "0", "--duration", "30", "--interval", "0.2",
                           "--threshold", "max<1ns", "--abort-on-fail")
    assert status == 99
    assert report["aborted"] and report["measured_s"] < 30
    assert not report["thresholds"][0]["ok"]
    assert any("aborted" in w for w in report["warnings"])


# -- progress -----------------------------------------------------------------------------------

def test_progress_shows_the_phase_the_last_interval_and_the_time_left(relay_url: str) -> None:
    from pugfast.bench.control import Controller, Options
    from pugfast.bench.worker import Plan

    class Lines(io.StringIO):
        def isatty(self) -> bool:
            return False

    out = Lines()
    plan = Plan(url=relay_url, rooms=1, members=2, mode="lockstep", warmup=0.3, duration=0.6,
                drain=1, interval=0.2)
    controller = Controller(plan, Options(), Progress(out, interval=0))
    controller.run()
    # Shown while it ran (how often depends on how busy the machine was) ...
    lines = [line for line in out.getvalue().splitlines() if "s left" in line]
    assert lines and all(" | " in line for line in lines)
    # ... and at any instant of each phase, with the run's last interval.
    t0, (start, end) = controller.t0, controller.window
    assert controller.last_row is not None
    for at, phase, left in [(t0 - 10**7, "starting", "1 s left, then up to 1 s drain"),
                            (t0 + 10**8, "warm-up 0 of 0.3 s", "1 s left, then up to 1 s drain"),
                            (start + 4 * 10**8, "measuring 0 of 0.6 s",
                             "0 s left, then up to 1 s drain"),
                            (end + 2 * 10**8, "drain", "up to 1 s left")]:
        text = controller.progress_text(at)
        assert text.startswith(phase + " | last "), text
        assert " deliveries/s, p99 " in text and text.endswith(left), text


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


def test_idle_members_answer_pings_unless_told_not_to(capsys: pytest.CaptureFixture[str]) -> None:
    # The relay drops a member silent for 2 s: long enough that a loaded machine answers its
    # pings in time, and the run lasts twice that, so that silent members are dropped in it.
    with thread_relay(ping_interval=0.25, idle_timeout=2.0) as url:
        args = ("--rooms", "1", "--members", "2", "--idle", "--warmup", "0", "--duration", "4")
        status, answering = bench(capsys, url, *args)
        assert status == 0 and answering["errors"] == {}
        status, silent = bench(capsys, url, *args, "--ignore-pings")
    assert status == 1
    assert silent["config"]["answer_pings"] is False
    # The relay hung up on members that never answered its pings.
    assert silent["errors"].get("close_1001") == 2


def test_the_relays_cpu_is_read_finer_than_clock_ticks() -> None:
    from pugfast.bench.procstat import SCHEDSTAT, TICKS, clock, sample

    if clock(os.getpid()) is not SCHEDSTAT:
        pytest.skip("this kernel has no /proc/PID/task/TID/schedstat")
    before = sample(os.getpid(), SCHEDSTAT)
    deadline = time.process_time() + 0.003
    while time.process_time() < deadline:
        pass
    after = sample(os.getpid(), SCHEDSTAT)
    spent = after.cpu_s - before.cpu_s
    # Three milliseconds of CPU, seen as such: ticks would say 0 or 10 ms.
    assert 0.002 < spent < 0.5
    assert round(spent / TICKS.resolution_s, 6) != round(spent / TICKS.resolution_s)


def test_the_relays_cpu_never_goes_back_when_a_thread_ends() -> None:
    import threading

    from pugfast.bench.procstat import SCHEDSTAT, clock, sample

    if clock(os.getpid()) is not SCHEDSTAT:
        pytest.skip("this kernel has no /proc/PID/task/TID/schedstat")

    def burn() -> None:
        deadline = time.thread_time() + 0.02
        while time.thread_time() < deadline:
            pass

    worker = threading.Thread(target=burn)
    worker.start()
    worker.join()
    before = sample(os.getpid(), SCHEDSTAT)
    burned, sampled = threading.Event(), threading.Event()

    def burn_and_stay() -> None:
        burn()
        burned.set()
        sampled.wait(60)

    worker = threading.Thread(target=burn_and_stay)
    worker.start()
    assert burned.wait(60)
    during = sample(os.getpid(), SCHEDSTAT)
    sampled.set()
    worker.join()
    after = sample(os.getpid(), SCHEDSTAT)
    # The thread's 20 ms stay counted after it has gone.
    assert during.cpu_s - before.cpu_s >= 0.015
    assert after.cpu_s >= during.cpu_s
