"""The bench's latency histogram: HdrHistogram's layout and encodings, exact merges, figures
printed at the precision the histogram has.

The encodings are checked against the ``hdrhistogram`` package (HdrHistogram's Python port),
which reads what we write; it is a test requirement only (.ci/run installs it): pugfast bench
itself depends on nothing but the runtime dependencies.
"""

from __future__ import annotations

import io
import json
import os
import random

import pytest

from pugfast.bench.histogram import (
    BUCKETS,
    Histogram,
    IntervalLog,
    bucket_bounds,
    bucket_index,
    encode,
    format_ns,
    format_us,
    merged,
    summary_us,
)

HOUR_NS = 3_600 * 10**9


def hdrh() -> object:
    """The hdrhistogram package; missing, skip, except under CI (.ci/run installs it)."""
    try:
        import hdrh.histogram
        import hdrh.log
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the hdrhistogram package is missing: .ci/run installs it")
        pytest.skip("the hdrhistogram package is not installed (pip install hdrhistogram)")
    return hdrh


def test_buckets_tile_the_integers() -> None:
    previous_high = -1
    for index in range(BUCKETS):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1
        previous_high = high
    assert previous_high >= (1 << 63) - 1


@pytest.mark.parametrize("value", [0, 1, 255, 256, 257, 999, 1000, 10**6, 10**9 + 7, HOUR_NS,
                                   2**62])
def test_a_bucket_is_under_one_percent_of_its_values(value: int) -> None:
    low, high = bucket_bounds(bucket_index(value))
    assert low <= value <= high
    # From 1 us to an hour (and beyond): at most 1/128 of the value wide.
    assert high - low <= value // 128


def test_percentiles_are_within_one_percent_from_a_microsecond_to_an_hour() -> None:
    rng = random.Random(7)
    # Log-uniform from 1 us to an hour.
    values = sorted(int(10 ** rng.uniform(3, 12.556)) for _ in range(20_000))
    hist = Histogram.of(values)
    for p in (1, 10, 50, 90, 99, 99.9, 99.99):
        exact = values[max(0, int(p * len(values) / 100 + 0.5) - 1)]
        got = hist.percentile(p)
        assert got is not None
        assert exact <= got <= exact * 1.01, (p, exact, got)
    assert hist.percentile(100) == values[-1] and hist.percentile(0) == values[0]
    # Below 256 every value has its own bucket: percentiles are exact.
    small = Histogram.of(range(1, 11))
    assert small.percentiles([10, 50, 90, 99]) == [1, 5, 9, 10]


def test_an_empty_histogram_has_no_figures() -> None:
    empty = Histogram()
    assert empty.percentile(50) is None and empty.mean is None
    summary = summary_us(empty)
    assert summary["count"] == 0
    assert all(v is None for k, v in summary.items() if k != "count")
    assert format_us(summary["p99"]) == "-"


def test_merges_are_exact_and_round_trip_through_json() -> None:
    rng = random.Random(3)
    parts = [[rng.randint(0, 10**10) for _ in range(n)] for n in (0, 1, 500, 3000)]
    whole = Histogram.of(v for part in parts for v in part)
    states = [json.loads(json.dumps(Histogram.of(part).to_state())) for part in parts]
    total = merged(states)
    assert total.to_state() == whole.to_state()
    assert total.percentiles([50, 99, 99.9]) == whole.percentiles([50, 99, 99.9])


def test_a_state_of_another_layout_is_refused() -> None:
    state = Histogram.of([5]).to_state()
    with pytest.raises(ValueError, match="layout"):
        Histogram.from_state({**state, "layout": None})
    with pytest.raises(ValueError, match="count"):
        Histogram.from_state({**state, "count": 2})
    with pytest.raises(ValueError, match="malformed"):
        Histogram.from_state({"layout": state["layout"]})


def test_count_above() -> None:
    hist = Histogram.of([10, 999_000, 1_100_000, 5_000_000])
    assert hist.count_above(1_000_000) == 2
    assert hist.count_above(10**18) == 0


@pytest.mark.parametrize(("ns", "text"), [
    (None, "-"), (0, "0 ns"), (812, "812 ns"), (4_560, "4.56 us"), (45_678, "45.7 us"),
    (999_700, "1.00 ms"), (1_234_567, "1.23 ms"), (2 * 10**9, "2.00 s"), (HOUR_NS, "3,600 s"),
])
def test_figures_are_printed_with_three_significant_digits(ns: int | None, text: str) -> None:
    assert format_ns(ns) == text


def test_summary_is_in_microseconds_at_three_significant_digits() -> None:
    summary = summary_us(Histogram.of([1_234_567] * 10 + [812, 2_000_000]))
    assert summary["p50"] == 1240.0  # the bucket's highest value, 1,236,991 ns, to 3 digits
    assert summary["min"] == 0.812 and summary["max"] == 2000.0
    assert summary["count"] == 12


def test_hdrhistogram_decodes_what_encode_writes() -> None:
    hdr = hdrh()
    rng = random.Random(11)
    values = [rng.randint(1, 10**11) for _ in range(5000)] + [1, 1, 200, 256, 10**6] * 3
    hist = Histogram.of(values)
    decoded = hdr.histogram.HdrHistogram.decode(encode(hist))  # type: ignore[attr-defined]
    assert decoded.get_total_count() == hist.count
    assert decoded.significant_figures == 2
    for p in (0.1, 50, 90, 99, 99.9):
        # The same bucket: ours is clipped to the exact maximum, theirs is not.
        ours, theirs = hist.percentile(p), decoded.get_value_at_percentile(p)
        assert ours is not None
        assert bucket_index(ours) == bucket_index(theirs), p
    assert bucket_index(decoded.get_max_value()) == bucket_index(hist.max)
    empty = hdr.histogram.HdrHistogram.decode(encode(Histogram()))  # type: ignore[attr-defined]
    assert empty.get_total_count() == 0


def test_hdrhistogram_reads_the_interval_log() -> None:
    hdr = hdrh()
    out = io.StringIO()
    log = IntervalLog(out, 1_700_000_000.25, comment="latency in ns")
    intervals = [Histogram.of([1000 * i + 5, 2000 * i + 9, 10**9]) for i in range(1, 4)]
    for i, hist in enumerate(intervals):
        log.interval(float(i), 1.0, hist)
        log.interval(float(i), 1.0, Histogram.of([i + 1]), tag="lag")
    text = out.getvalue()
    assert text.startswith("#[Histogram log format version 1.3]\n")
    assert '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"' \
        in text
    assert "\n0.000,1.000,1000.000,HISTF" in text and "\nTag=lag,2.000,1.000,0.000,HISTF" in text
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hdr-{os.getpid()}.log")
    with open(path, "w") as f:
        f.write(text)
    try:
        reference = hdr.histogram.HdrHistogram(1, HOUR_NS, 2)  # type: ignore[attr-defined]
        reader = hdr.log.HistogramLogReader(path, reference)  # type: ignore[attr-defined]
        read = []
        while (interval := reader.get_next_interval_histogram()) is not None:
            read.append((interval.get_tag(), interval.get_total_count(),
                         interval.get_start_time_stamp()))
        reader.close()
    finally:
        os.unlink(path)
    assert reader.get_start_time_sec() == pytest.approx(1_700_000_000.25)
    assert [(tag, n) for tag, n, _ in read] == [(None, 3), ("lag", 1)] * 3
    # Start times are absolute (milliseconds), one second apart.
    assert [t for tag, _, t in read if tag is None] == pytest.approx(
        [1_700_000_000_250 + 1000 * i for i in range(3)])
