"""A log-bucket latency histogram: fixed memory, mergeable, about 3% relative precision.

Values are non-negative integers (nanoseconds here). Values below 64 have a bucket each; above,
every power of two is split into 32 equal buckets, so a bucket is at most 1/32 of its value
wide, as in HdrHistogram with two significant binary digits of five bits. Recording is a few
integer operations: the load generator's DeliveryTally (pugfast/_sink.py and its compiled twin)
records every delivery into buckets of this layout itself, and moves them into a Histogram
when the generator reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

SUB_BITS = 5
_SUB = 1 << SUB_BITS  # buckets per power of two
_LINEAR = 2 * _SUB  # values below this have a bucket each
# Enough buckets for every value below 2**63.
BUCKETS = (63 - SUB_BITS) * _SUB + _LINEAR


def bucket_index(value: int) -> int:
    """The bucket ``value`` falls in."""
    if value < _LINEAR:
        return value if value > 0 else 0
    shift = value.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value of bucket ``index``."""
    if index < _LINEAR:
        return index, index
    shift = (index >> SUB_BITS) - 1
    mantissa = index - (shift << SUB_BITS)
    return mantissa << shift, ((mantissa + 1) << shift) - 1


class Histogram:
    """Counts of values per bucket, with the exact count, sum, minimum and maximum.

    ``counts`` is a plain list, one count per bucket, that ``merge`` and the load generator's
    DeliveryTally.drain_into add to, along with ``count``, ``total``, ``min`` and ``max``.
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

    def percentile(self, p: float) -> int:
        """The value at or below which ``p`` percent of the values lie (0 when empty).

        It is the upper bound of the bucket holding that rank, clipped to the observed range,
        so it may overstate the exact value by one bucket width (at most 1/32 of it).
        ``percentile(100)`` is the exact maximum and ``percentile(0)`` the exact minimum.
        """
        if self.count == 0:
            return 0
        if p <= 0:
            return self.min
        if p >= 100:
            return self.max
        # The rank of the value wanted, counting from 1: the smallest r with r >= p% of count.
        rank = max(1, -(-int(p * self.count * 1000) // 100_000))
        seen = 0
        for index, n in enumerate(self.counts):
            if n:
                seen += n
                if seen >= rank:
                    return max(self.min, min(self.max, bucket_bounds(index)[1]))
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """(lowest value, highest value, count) of every non-empty bucket, in order."""
        for index, n in enumerate(self.counts):
            if n:
                low, high = bucket_bounds(index)
                yield low, high, n

    def to_state(self) -> dict[str, object]:
        """A compact, picklable and JSON-able form (``from_state`` reverses it)."""
        return {
            "buckets": [[index, n] for index, n in enumerate(self.counts) if n],
            "count": self.count, "total": self.total, "min": self.min, "max": self.max,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Histogram:
        hist = cls()
        for index, n in state["buckets"]:  # type: ignore[attr-defined]
            hist.counts[index] = n
        hist.count = int(state["count"])  # type: ignore[call-overload]
        hist.total = int(state["total"])  # type: ignore[call-overload]
        hist.min = int(state["min"])  # type: ignore[call-overload]
        hist.max = int(state["max"])  # type: ignore[call-overload]
        return hist

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        hist = cls()
        for value in values:
            hist.record(value)
        return hist


PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def summary_us(hist: Histogram) -> dict[str, float | int]:
    """Percentiles, mean, min and max of a nanosecond histogram, in microseconds."""
    out: dict[str, float | int] = {"count": hist.count}
    for name, p in PERCENTILES:
        out[name] = round(hist.percentile(p) / 1000, 1)
    out["max"] = round(max(hist.max, 0) / 1000, 1)
    out["min"] = round(max(hist.min, 0) / 1000, 1)
    out["mean"] = round(hist.mean / 1000, 1)
    return out
