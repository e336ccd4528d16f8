"""The open loop's schedule: how many messages are due by when (sans I/O: times are arguments).

The offered load is an arrival rate in messages per second: constant (``--rate R``), or ramped
stage by stage (``--stages 1000:10s,5000:30s,0:5s``, as k6's ramping-arrival-rate): each stage
goes linearly from the rate the previous one ended at (the first from ``--rate``, or 0) to its
own target over its duration. The warm-up before the window runs at the starting rate.

The generator sends on a 1 ms grid: at each tick it writes the messages due before the next
one, stamped with the tick's time, which is when they are due. So the offered rate holds on any
scale above a millisecond, and a message's latency counts from its tick, however late the
generator got round to writing it. ``due_by(t)`` is how many messages are due before ``t``
nanoseconds after the schedule's start, a whole number that never decreases.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

TICK_NS = 1_000_000
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?$")
_SCALE = {"ms": 1e-3, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Stage:
    """Ramp linearly to ``target`` messages per second over ``seconds``."""

    target: float
    seconds: float


def parse_duration(text: str) -> float:
    """``30s``, ``1.5m``, ``250ms``, ``2h`` or plain seconds, in seconds. Raises ValueError."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30s, 250ms, 2m or 1h")
    return float(match.group(1)) * _SCALE[match.group(2)]


def parse_stages(text: str) -> list[Stage]:
    """``RATE:DURATION,...`` as k6 writes stages (``1000:10s,5000:30s,0:5s``). Raises ValueError
    naming the stage that is wrong: a rate must be a finite number of 0 or more, a duration
    at least a millisecond."""
    stages = []
    for i, part in enumerate(text.split(","), 1):
        rate, sep, duration = part.strip().partition(":")
        if not sep:
            raise ValueError(f"stage {i} ({part.strip()!r}) is not RATE:DURATION, e.g. 1000:30s")
        try:
            target = float(rate)
        except ValueError:
            raise ValueError(f"stage {i}: {rate!r} is not a rate in messages per second") from None
        if not (math.isfinite(target) and target >= 0):
            raise ValueError(f"stage {i}: the rate must be a finite number of 0 or more")
        seconds = parse_duration(duration)
        if seconds < 0.001:
            raise ValueError(f"stage {i}: the duration must be at least 1ms")
        stages.append(Stage(target, seconds))
    return stages


def whole_ticks(seconds: float) -> int:
    """``seconds`` in nanoseconds, rounded to the 1 ms grid."""
    return round(seconds * 1000) * TICK_NS


class Schedule:
    """Messages due over time: ``warmup_ns`` at ``start_rate``, then ``stages`` (or, without
    any, ``window_ns`` more at ``start_rate``), then nothing. Times are from the start of the
    warm-up, in nanoseconds; every span is rounded to whole milliseconds."""

    def __init__(self, start_rate: float, warmup_ns: int, stages: list[Stage] | None = None,
                 window_ns: int = 0) -> None:
        """Raises ValueError for a negative or infinite rate."""
        if not (math.isfinite(start_rate) and start_rate >= 0):
            raise ValueError("the rate must be a finite number of 0 or more")
        # Pieces (start ns, length ns, rate at start, rate at end, messages due before it).
        self.pieces: list[tuple[int, int, float, float, float]] = []
        at, rate, before = 0, start_rate, 0.0
        spans = [(rate, whole_ticks(warmup_ns / 1e9))]
        if stages is None:
            spans.append((rate, whole_ticks(window_ns / 1e9)))
        else:
            spans += [(s.target, whole_ticks(s.seconds)) for s in stages]
        for target, length in spans:
            if length <= 0:
                continue
            self.pieces.append((at, length, rate, target, before))
            before += (rate + target) / 2 * length / 1e9
            at, rate = at + length, target
        self.end_ns = at
        self.total = math.floor(before + 1e-6)

    @classmethod
    def scaled(cls, schedule: Schedule, share: float) -> Schedule:
        """The same schedule at ``share`` of its rates (a worker's part of the load)."""
        scaled = cls.__new__(cls)
        scaled.pieces = [(a, n, r0 * share, r1 * share, b * share)
                         for a, n, r0, r1, b in schedule.pieces]
        scaled.end_ns = schedule.end_ns
        before = sum((r0 + r1) / 2 * n / 1e9 for _, n, r0, r1, _ in scaled.pieces)
        scaled.total = math.floor(before + 1e-6)
        return scaled

    def due_by(self, t_ns: int) -> int:
        """How many messages are due before ``t_ns`` (capped at the schedule's end)."""
        if t_ns <= 0:
            return 0
        if t_ns >= self.end_ns:
            return self.total
        for at, length, r0, r1, before in self.pieces:
            if t_ns < at + length:
                x = (t_ns - at) / 1e9
                slope = (r1 - r0) / (length / 1e9)
                # A tiny allowance, so that 500/s x 4 s is 2000 and not 1999.9999.
                return math.floor(before + r0 * x + slope * x * x / 2 + 1e-6)
        return self.total
