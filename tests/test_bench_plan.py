"""The bench's sans-I/O pieces: the open loop's schedule and thresholds; and the HdrHistogram
log of a real run, read back by HdrHistogram's own Python port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench_kit import bench, thread_relay
from test_bench_histogram import hdrh

from pugfast.bench.schedule import TICK_NS, Schedule, Stage, parse_duration, parse_stages
from pugfast.bench.thresholds import METRICS, evaluate, parse

S = 1_000_000_000


def test_a_constant_rate_is_due_tick_by_tick() -> None:
    schedule = Schedule(300.0, warmup_ns=S, window_ns=2 * S)
    assert schedule.end_ns == 3 * S and schedule.total == 900
    assert schedule.due_by(0) == 0 and schedule.due_by(S) == 300
    assert schedule.due_by(S + TICK_NS) == 300  # 0.3 of a message per tick: not yet
    assert schedule.due_by(S + 4 * TICK_NS) == 301
    assert schedule.due_by(10 * S) == 900
    counts = [schedule.due_by((k + 1) * TICK_NS) - schedule.due_by(k * TICK_NS)
              for k in range(3000)]
    assert sum(counts) == 900 and set(counts) == {0, 1}


def test_stages_ramp_linearly_from_the_start_rate() -> None:
    schedule = Schedule(100.0, warmup_ns=S, stages=[Stage(300.0, 2.0), Stage(300.0, 1.0),
                                                    Stage(0.0, 1.0)])
    # Warm-up 100; the ramp 100 -> 300 over 2 s: 400; the hold: 300; the ramp down: 150.
    assert schedule.due_by(S) == 100
    assert schedule.due_by(3 * S) == 500
    assert schedule.due_by(4 * S) == 800
    assert schedule.due_by(5 * S) == 950 == schedule.total
    # Half-way up the first ramp: 100 + (100 + 200) / 2.
    assert schedule.due_by(2 * S) == 250


def test_a_scaled_schedule_is_a_share_of_every_rate() -> None:
    whole = Schedule(1000.0, warmup_ns=0, window_ns=4 * S)
    halves = [Schedule.scaled(whole, 0.5) for _ in range(2)]
    assert sum(h.due_by(4 * S) for h in halves) == whole.due_by(4 * S) == 4000


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("250ms", 0.25), ("2m", 120),
                                               ("1h", 3600), ("1.5", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_stages_as_k6_writes_them() -> None:
    assert parse_stages("1000:10s, 5000:30s,0:5s") == [
        Stage(1000, 10), Stage(5000, 30), Stage(0, 5)]
    for bad in ("1000", "x:1s", "-5:1s", "inf:1s", "10:0s", "10:soon"):
        with pytest.raises(ValueError):
            parse_stages(bad)


@pytest.mark.parametrize(("text", "metric", "op", "limit"), [
    ("p99<2ms", "p99", "<", 2000.0), ("p99.9 <= 10ms", "p99.9", "<=", 10_000.0),
    ("loss<=0", "loss", "<=", 0.0), ("loss<0.1%", "loss", "<", 0.001),
    ("errors==0", "errors", "==", 0.0), ("cpu_per_delivery<1us", "cpu_per_delivery", "<", 1.0),
    ("lag_p99<1ms", "lag_p99", "<", 1000.0), ("max<500ns", "max", "<", 0.5),
    ("deliveries_per_s>=1e5", "deliveries_per_s", ">=", 1e5), ("p50!=3s", "p50", "!=", 3e6),
])
def test_thresholds_parse_into_the_metrics_unit(text: str, metric: str, op: str,
                                                limit: float) -> None:
    threshold = parse(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.limit == pytest.approx(limit)


def test_thresholds_are_judged_on_the_report_and_unmeasured_breaks() -> None:
    report = {"latency_us": {"p99": 1500.0, "max": None}, "loss_ratio": 0.0, "error_count": 2}
    verdicts = evaluate([parse("p99<2ms"), parse("max<1s"), parse("errors==0"),
                         parse("loss<=0")], report)
    assert [(v["metric"], v["value"], v["ok"]) for v in verdicts] == [
        ("p99", 1500.0, True), ("max", None, False), ("errors", 2.0, False),
        ("loss", 0.0, True)]
    early = evaluate([parse("loss<=0"), parse("p99<1ms")], report, final=False)
    assert [v["metric"] for v in early] == ["p99"]
    assert all(m.path for m in METRICS.values())


def test_a_runs_hdr_log_reads_back_as_its_histogram(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    hdr = hdrh()
    log = tmp_path / "latency.hlog"
    with thread_relay() as url:
        status, report = bench(capsys, url, "--rooms", "2", "--members", "3", "--rate", "400",
                               "--warmup", "0.1", "--duration", "1", "--interval", "0.25",
                               "--hdr-log", str(log))
    assert status == 0
    reference = hdr.histogram.HdrHistogram(1, 3_600 * S, 2)  # type: ignore[attr-defined]
    reader = hdr.log.HistogramLogReader(str(log), reference)  # type: ignore[attr-defined]
    latency = hdr.histogram.HdrHistogram(1, 3_600 * S, 2)  # type: ignore[attr-defined]
    intervals = lag = 0
    while (interval := reader.get_next_interval_histogram()) is not None:
        if interval.get_tag() == "lag":
            lag += interval.get_total_count()
        else:
            intervals += 1
            latency.add(interval)
    reader.close()
    assert intervals == len(report["intervals"])
    assert latency.get_total_count() == report["delivered"]
    assert lag == report["lag_us"]["count"] == report["sent"]
    ours = report["histograms"]["latency"]
    assert latency.get_max_value() >= ours["max"]
    p99 = latency.get_value_at_percentile(99) / 1000
    assert p99 == pytest.approx(report["latency_us"]["p99"], rel=0.01)
    assert os.path.getsize(log) < 200_000
