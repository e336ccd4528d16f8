"""Latency histograms in HdrHistogram's layout: fixed memory, exact merges, under 1% error.

Values are non-negative integers (nanoseconds here). The layout is HdrHistogram's for a lowest
discernible value of 1 and two significant decimal digits (pugfast/engine/buckets.py): values
below 256 have a bucket each, and above that every power of two is split into 128 equal
buckets, so a bucket is at most 1/128 of its values wide. A percentile is reported as the
highest value of its bucket (as HdrHistogram does), clipped to the exact minimum and maximum: it
may overstate the true value by at most 0.8%, from 1 ns to 2**63 ns (an hour is 3.6e12).
Figures are printed with three significant digits, which is all that precision supports.

The load generator's DeliveryTally (pugfast/engine/_sink.py and its compiled twin) records into
buckets of this same layout and moves them into a Histogram with ``drain_into``. Histograms of
several workers, processes, segments or runs merge exactly: counts add up bucket by bucket,
and the count, sum, minimum and maximum are kept exactly beside them.

``encode`` writes a histogram in HdrHistogram's compressed form (V2 encoding, deflated,
base64), and ``IntervalLog`` writes HdrHistogram's interval log, so HdrHistogram's own tools
(HistogramLogProcessor, the plotter, the hdrhistogram packages) read what ``--hdr-log`` wrote.
"""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import TextIO

from ..engine.buckets import BUCKETS, bucket_bounds, bucket_index

SIGNIFICANT_DIGITS = 2
LAYOUT = {"unit": "ns", "lowest": 1, "significant_digits": SIGNIFICANT_DIGITS}


class Histogram:
    """Counts of values per bucket, with the exact count, sum, minimum and maximum.

    ``counts`` is a plain list, one count per bucket, that ``merge`` and the load generator's
    DeliveryTally.drain_into add to, along with ``count``, ``total``, ``min`` (-1 when empty)
    and ``max`` (-1 when empty).
    """

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.total = 0
        self.min = -1
        self.max = -1

    def record(self, value: int, times: int = 1) -> None:
        self.counts[bucket_index(value)] += times
        self.count += times
        self.total += value * times
        if self.min < 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s values to this one."""
        mine = self.counts
        for index, n in enumerate(other.counts):
            if n:
                mine[index] += n
        self.count += other.count
        self.total += other.total
        if other.min >= 0 and (self.min < 0 or other.min < self.min):
            self.min = other.min
        self.max = max(self.max, other.max)

    def percentiles(self, ps: Iterable[float]) -> list[int | None]:
        """The values at percentiles ``ps`` (each 0 to 100), in one pass; None when empty.

        A value is the highest of the bucket holding its rank, HdrHistogram's way (the rank
        of percentile p is p% of the count, rounded, at least 1), clipped to the observed
        range. ``0`` is the exact minimum and ``100`` the exact maximum.
        """
        wanted = list(ps)
        if self.count == 0:
            return [None for _ in wanted]
        out: list[int | None] = [None] * len(wanted)
        ranks = []
        for i, p in enumerate(wanted):
            if p <= 0:
                out[i] = self.min
            elif p >= 100:
                out[i] = self.max
            else:
                ranks.append((max(1, int(p * self.count / 100 + 0.5)), i))
        ranks.sort()
        seen = 0
        pending = iter(ranks)
        rank = next(pending, None)
        for index, n in enumerate(self.counts):
            if rank is None:
                break
            if n:
                seen += n
                while rank is not None and seen >= rank[0]:
                    out[rank[1]] = max(self.min, min(self.max, bucket_bounds(index)[1]))
                    rank = next(pending, None)
        return out

    def percentile(self, p: float) -> int | None:
        """The value at percentile ``p`` (see ``percentiles``); None when empty."""
        return self.percentiles([p])[0]

    def count_above(self, value: int) -> int:
        """How many values lie in buckets wholly above ``value``."""
        first = bucket_index(value) + 1
        return sum(self.counts[first:]) if first < BUCKETS else 0

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """(lowest value, highest value, count) of every non-empty bucket, in order."""
        for index, n in enumerate(self.counts):
            if n:
                low, high = bucket_bounds(index)
                yield low, high, n

    def to_state(self) -> dict[str, object]:
        """A compact, picklable and JSON-able form, exact (``from_state`` reverses it)."""
        return {
            "layout": LAYOUT,
            "buckets": [[index, n] for index, n in enumerate(self.counts) if n],
            "count": self.count, "total": self.total, "min": self.min, "max": self.max,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Histogram:
        """The histogram ``to_state`` described. Raises ValueError for another layout (a
        report of an older ``pugfast bench``) or a malformed state."""
        if state.get("layout") != LAYOUT:
            raise ValueError(f"histogram layout {state.get('layout')!r} is not {LAYOUT!r} "
                             "(a report from another version of pugfast bench?)")
        hist = cls()
        try:
            for index, n in state["buckets"]:  # type: ignore[attr-defined]
                hist.counts[index] += int(n)
            hist.count = int(state["count"])  # type: ignore[call-overload]
            hist.total = int(state["total"])  # type: ignore[call-overload]
            hist.min = int(state["min"])  # type: ignore[call-overload]
            hist.max = int(state["max"])  # type: ignore[call-overload]
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"malformed histogram: {exc}") from None
        if hist.count != sum(hist.counts):
            raise ValueError("malformed histogram: its count is not the sum of its buckets")
        return hist

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        hist = cls()
        for value in values:
            hist.record(value)
        return hist


def merged(states: Iterable[dict[str, object]]) -> Histogram:
    """One histogram holding every value of the histograms ``states`` describe."""
    total = Histogram()
    for state in states:
        total.merge(Histogram.from_state(state))
    return total


# -- figures at the histogram's precision ------------------------------------------------------

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("p99.99", 99.99))


def significant(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits}g}") if value else 0.0


def summary_us(hist: Histogram) -> dict[str, float | int | None]:
    """Count, percentiles, max, min and mean of a nanosecond histogram, in microseconds at
    three significant digits (the histogram's precision); None where there is no value."""
    out: dict[str, float | int | None] = {"count": hist.count}
    names = [name for name, _ in PERCENTILES] + ["max", "min"]
    values = hist.percentiles([p for _, p in PERCENTILES] + [100.0, 0.0])
    for name, value in zip(names, values, strict=True):
        out[name] = None if value is None else significant(value / 1000)
    mean = hist.mean
    out["mean"] = None if mean is None else significant(mean / 1000)
    return out


_UNITS = (("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000))


def format_ns(value: float | None) -> str:
    """A duration in nanoseconds as text with three significant digits and a fitting unit
    (``812 ns``, ``4.56 us``, ``1.23 ms``, ``2.00 s``); ``-`` for None."""
    if value is None:
        return "-"
    for i, (unit, scale) in enumerate(_UNITS):
        shown = significant(value / scale)
        if abs(shown) < 1000 or i == len(_UNITS) - 1:
            decimals = 0 if abs(shown) >= 100 or scale == 1 else 1 if abs(shown) >= 10 else 2
            return f"{shown:,.{decimals}f} {unit}"
    raise AssertionError("unreachable")


def format_us(value: float | None) -> str:
    """``format_ns`` for a value in microseconds (as the JSON report holds them)."""
    return format_ns(None if value is None else value * 1000)


# -- HdrHistogram's encodings -------------------------------------------------------------------

_ENCODING_COOKIE = 0x1C849303 | 0x10  # V2, as HdrHistogram writes it
_COMPRESSED_COOKIE = 0x1C849304 | 0x10
# Cookie, payload length, normalizing index offset, significant digits, lowest and highest
# trackable value, integer-to-double ratio.
_PAYLOAD_HEADER = struct.Struct(">iiiiqqd")
# The highest trackable value an encoded histogram declares, at least: an hour.
_HIGHEST = 3_600_000_000_000


def _zigzag_leb128(value: int, out: bytearray) -> None:
    """HdrHistogram's ZigZag LEB128-64b9B: 7 bits a byte, and all 8 in a ninth."""
    value = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    for _ in range(8):
        if value < 0x80:
            out.append(value)
            return
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode(hist: Histogram) -> str:
    """``hist`` in HdrHistogram's compressed, base64 form (the ``HISTF...`` of its logs).

    The counts go as HdrHistogram's V2 encoding does (runs of empty buckets as negative
    numbers), deflated, behind its headers; the declared range is 1 ns to at least an hour.
    """
    last = max((i for i, n in enumerate(hist.counts) if n), default=-1)
    counts = bytearray()
    index = 0
    while index <= last:
        n = hist.counts[index]
        if n:
            _zigzag_leb128(n, counts)
            index += 1
            continue
        run = 1
        while hist.counts[index + run] == 0:
            run += 1
        _zigzag_leb128(-run if run > 1 else 0, counts)
        index += run
    highest = max(_HIGHEST, hist.max)
    payload = _PAYLOAD_HEADER.pack(_ENCODING_COOKIE, len(counts), 0, SIGNIFICANT_DIGITS, 1,
                                   highest, 1.0) + bytes(counts)
    compressed = zlib.compress(payload)
    return base64.b64encode(struct.pack(">ii", _COMPRESSED_COOKIE, len(compressed))
                            + compressed).decode("ascii")


class IntervalLog:
    """HdrHistogram's interval log (format 1.3), as ``--hdr-log`` writes it.

    A header (format version, start time, base time, a legend), then one line per interval:
    its start in seconds from the start time, its length, its maximum in milliseconds and its
    histogram (``encode``). Lines may carry a tag (``Tag=lag,...``), which HdrHistogram's
    readers keep apart.
    """

    def __init__(self, out: TextIO, start_epoch_s: float, comment: str = "") -> None:
        self.out = out
        self.start = start_epoch_s
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_epoch_s))
        out.write("#[Histogram log format version 1.3]\n")
        out.write(f"#[StartTime: {start_epoch_s:.3f} (seconds since epoch), {stamp}]\n")
        out.write(f"#[BaseTime: {start_epoch_s:.3f} (seconds since epoch)]\n")
        if comment:
            out.write(f"#{comment}\n")
        out.write('"StartTimestamp","Interval_Length","Interval_Max",'
                  '"Interval_Compressed_Histogram"\n')

    def interval(self, start_s: float, length_s: float, hist: Histogram,
                 tag: str | None = None) -> None:
        """One interval: ``start_s`` seconds after the log's start, ``length_s`` long."""
        prefix = f"Tag={tag}," if tag else ""
        self.out.write(f"{prefix}{start_s:.3f},{length_s:.3f},{max(hist.max, 0) / 1e6:.3f},"
                       f"{encode(hist)}\n")
        self.out.flush()
