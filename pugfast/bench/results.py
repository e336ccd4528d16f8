"""What a run measured, summed exactly over its parts, and the JSON report made from it.

A run's parts are its workers; ``pugfast bench merge`` adds up whole reports (segments of one
load run from several machines, or several runs of the same load) the same way, so a merged
report is what one generator of the whole load would have written: counts add up, histograms
merge bucket by bucket (pugfast/bench/histogram.py), intervals merge by their place in the
window. Every figure of the report (percentiles, rates, loss, CPU per delivery, the generator's
lag and the warnings) is computed here from those sums, and nowhere else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .histogram import Histogram, format_us, summary_us

VERSION = 2
# The open loop has kept its schedule when its lag's p99 is at most this, and at most
# LATE_SHARE of the offered messages were later than it or never sent.
LATE_NS = 1_000_000
LATE_SHARE = 0.01
# A generator process busier than this may have set the pace rather than the relay.
BUSY_GENERATOR = 0.9

COUNTERS = ("offered", "sent", "sent_total", "expected", "delivered", "received_total",
            "received_in_window", "gaps", "out_of_order", "stalled_rooms", "rooms",
            "connections")


@dataclass
class Interval:
    """One row of the time series: an interval of the window (or of the drain after it), from
    ``start_s`` to ``end_s`` seconds after the window opened. Rows are cut every
    ``--interval`` and where a stage starts, at the same instants in every part of a run."""

    phase: str  # "measure" or "drain"
    start_s: float
    end_s: float
    stage: int | None = None
    offered: int = 0
    sent: int = 0
    delivered: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)
    server_cpu: float | None = None
    server_rss_bytes: int | None = None

    @property
    def key(self) -> tuple[int, str]:
        """Where the row belongs: its start, in whole milliseconds, and its phase."""
        return round(self.start_s * 1000), self.phase

    def add(self, other: Interval) -> None:
        self.start_s = min(self.start_s, other.start_s)
        self.end_s = max(self.end_s, other.end_s)
        self.offered += other.offered
        self.sent += other.sent
        self.delivered += other.delivered
        self.errors += other.errors
        self.latency.merge(other.latency)
        self.lag.merge(other.lag)
        if self.server_cpu is None:
            self.server_cpu, self.server_rss_bytes = other.server_cpu, other.server_rss_bytes

    def row(self, states: bool) -> dict[str, Any]:
        """The interval as the report's and ``--out``'s row; with its histograms (exact, for
        merging) when ``states``."""
        length = self.end_s - self.start_s
        lat = summary_us(self.latency)
        lag = summary_us(self.lag)
        row: dict[str, Any] = {
            "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
            "phase": self.phase, "stage": self.stage, "offered": self.offered,
            "sent": self.sent, "delivered": self.delivered,
            "delivered_per_s": round(self.delivered / length) if length > 0 else None,
            "errors": self.errors, "measured": self.latency.count,
            "p50_us": lat["p50"], "p99_us": lat["p99"], "p99.9_us": lat["p99.9"],
            "max_us": lat["max"], "lag_p50_us": lag["p50"], "lag_p99_us": lag["p99"],
            "lag_max_us": lag["max"], "server_cpu": self.server_cpu,
            "server_rss_bytes": self.server_rss_bytes,
        }
        if states:
            row["latency"] = self.latency.to_state()
            row["lag"] = self.lag.to_state()
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Interval:
        return cls(
            phase=row["phase"], start_s=row["start_s"],
            end_s=row["end_s"], stage=row["stage"], offered=row["offered"], sent=row["sent"],
            delivered=row["delivered"], errors=row["errors"],
            latency=Histogram.from_state(row["latency"]), lag=Histogram.from_state(row["lag"]),
            server_cpu=row["server_cpu"], server_rss_bytes=row["server_rss_bytes"],
        )


@dataclass
class Totals:
    """Everything a run (or a merge of runs) counted, in a form that adds up exactly."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)
    join: Histogram = field(default_factory=Histogram)
    join_seconds: float = 0.0
    generator_cpu_s: float = 0.0
    processes: int = 0
    measured_s: float = 0.0
    precise_ticks: bool = True
    aborted: bool = False
    intervals: dict[tuple[int, str], Interval] = field(default_factory=dict)
    server: dict[str, Any] | None = None
    segments: list[list[int]] = field(default_factory=list)
    # When the window opened, in seconds since the epoch (the time series' origin).
    started_epoch_s: float = 0.0

    def add(self, other: Totals) -> None:
        """Add ``other``: a part of the same load (a worker, a segment, another run)."""
        self.counts.update(other.counts)
        self.errors.update(other.errors)
        self.latency.merge(other.latency)
        self.lag.merge(other.lag)
        self.join.merge(other.join)
        # Parts join and measure side by side: the longest one spans them all.
        self.join_seconds = max(self.join_seconds, other.join_seconds)
        self.measured_s = max(self.measured_s, other.measured_s)
        self.generator_cpu_s += other.generator_cpu_s
        self.processes += other.processes
        self.precise_ticks = self.precise_ticks and other.precise_ticks
        self.aborted = self.aborted or other.aborted
        for interval in other.intervals.values():
            self.add_interval(interval)
        if self.server is None:
            self.server = other.server
        self.segments += other.segments
        if other.started_epoch_s and (not self.started_epoch_s
                                      or other.started_epoch_s < self.started_epoch_s):
            self.started_epoch_s = other.started_epoch_s

    def add_interval(self, interval: Interval) -> None:
        mine = self.intervals.get(interval.key)
        if mine is None:
            mine = self.intervals[interval.key] = Interval(
                interval.phase, interval.start_s, interval.end_s, interval.stage)
        mine.add(interval)

    # -- the report ------------------------------------------------------------------------

    def report(self, target: str, config: dict[str, Any]) -> dict[str, Any]:
        """The JSON report (pugfast/bench/__init__.py lists its keys)."""
        c = self.counts
        mode = config["mode"]
        measured = self.measured_s or config["duration"]
        expected, delivered = c["expected"], c["delivered"]
        received = c["received_in_window"]
        error_count = sum(self.errors.values()) + c["out_of_order"] + c["stalled_rooms"]
        errors = Counter(self.errors)
        if c["out_of_order"]:
            errors["out_of_order"] += c["out_of_order"]
        if c["stalled_rooms"]:
            errors["stalled_rooms"] += c["stalled_rooms"]
        load = mode != "idle"
        report: dict[str, Any] = {
            "version": VERSION,
            "target": target,
            "config": config,
            "segments": sorted(self.segments),
            "rooms": c["rooms"],
            "connections": c["connections"],
            "measured_s": round(measured, 3),
            "started_epoch_s": round(self.started_epoch_s, 3),
            "aborted": self.aborted,
            "offered": c["offered"] if mode == "open" else None,
            "sent": c["sent"] if load else None,
            "sent_total": c["sent_total"] if load else None,
            "expected": expected if load else None,
            "delivered": delivered if load else None,
            "lost": max(0, expected - delivered) if load else None,
            "loss_ratio": (expected - delivered) / expected if expected else (0.0 if load else None),
            "received_in_window": received if load else None,
            "messages_per_s": c["sent"] / measured if load and measured else None,
            "deliveries_per_s": received / measured if load and measured else None,
            "latency_us": summary_us(self.latency),
            "lag_us": self._lag_summary() if mode == "open" else None,
            "sequence_gaps": c["gaps"],
            "errors": {k: v for k, v in sorted(errors.items()) if v},
            "error_count": error_count,
            "join": {
                "count": self.join.count,
                "seconds": round(self.join_seconds, 3),
                "per_s": self.join.count / self.join_seconds if self.join_seconds else None,
                "latency_us": summary_us(self.join),
            },
            "generator": {
                "cpu_s": round(self.generator_cpu_s, 3),
                "processes": self.processes,
                # Per process: near 1.0 means the generator, not the relay, set the pace.
                "cpu_utilisation": round(self.generator_cpu_s / self.processes / measured, 3)
                if self.processes and measured else None,
                # Comparable with the server's: a generator that costs less per delivery than
                # the relay measures the relay, not itself.
                "cpu_us_per_delivery": round(self.generator_cpu_s * 1e6 / received, 3)
                if received else None,
                "precise_ticks": self.precise_ticks if mode == "open" else None,
            },
            "server": self._server(received, measured),
            "stages": self._stages(config) if config.get("stages") else None,
            "intervals": self.rows(states=True),
            "histograms": {"latency": self.latency.to_state(), "lag": self.lag.to_state(),
                           "join": self.join.to_state()},
            "server_raw": self.server,
        }
        report["warnings"] = warnings(report, config)
        return report

    def rows(self, states: bool) -> list[dict[str, Any]]:
        """The time series, in order (see Interval.row)."""
        return [iv.row(states) for _, iv in sorted(self.intervals.items())]

    def _lag_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = summary_us(self.lag)
        offered, sent = self.counts["offered"], self.counts["sent"]
        late, unsent = self.lag.count_above(LATE_NS), max(0, offered - sent)
        summary["late"], summary["unsent"] = late, unsent
        missed = late + unsent
        summary["late_ratio"] = missed / offered if offered else 0.0
        p99 = self.lag.percentile(99)
        summary["kept_schedule"] = (p99 is None or p99 <= LATE_NS) and (
            not offered or missed <= LATE_SHARE * offered)
        return summary

    def _server(self, received: int, measured: float) -> dict[str, Any] | None:
        raw = self.server
        if raw is None:
            return None
        cpu, wall = raw["cpu_s"], raw["window_s"]
        connections = self.counts["connections"]
        out = {
            "pid": raw["pid"],
            "cpu_clock": raw["cpu_clock"],
            "cpu_resolution_us": raw["cpu_resolution_us"],
            "cpu_s": round(cpu, 6),
            "cpu_utilisation": round(cpu / wall, 3) if wall > 0 else None,
            "cpu_us_per_delivery": round(cpu * 1e6 / received, 3) if received else None,
            "deliveries_per_cpu_s": round(received / cpu) if received and cpu > 0 else None,
            "cpu_us_per_join": round(raw["join_cpu_s"] * 1e6 / connections, 2)
            if connections else None,
            "cpu_us_per_connection_s": round(cpu * 1e6 / connections / wall, 3)
            if connections and wall > 0 else None,
            "rss_bytes": raw["rss_bytes"],
            "rss_begin_bytes": raw["rss_begin_bytes"],
            "rss_per_connection_bytes": round(
                (raw["rss_bytes"] - raw["rss_begin_bytes"]) / connections)
            if connections else None,
            "processes": raw["processes"],
        }
        if raw["processes"] > 1:
            # A supervisor with workers: its own share is the cost of routing connections.
            out["supervisor_cpu_s"] = round(raw["supervisor_cpu_s"], 6)
            out["supervisor_cpu_us_per_join"] = (
                round(raw["supervisor_join_cpu_s"] * 1e6 / connections, 2)
                if connections else None)
        return out

    def _stages(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        start_rate = config.get("rate") or 0.0
        for i, (target, seconds) in enumerate(config["stages"]):
            rows = [iv for iv in self.intervals.values() if iv.stage == i]
            latency, lag = Histogram(), Histogram()
            offered = sent = delivered = 0
            for iv in rows:
                latency.merge(iv.latency)
                lag.merge(iv.lag)
                offered, sent, delivered = (offered + iv.offered, sent + iv.sent,
                                            delivered + iv.delivered)
            out.append({
                "stage": i, "from_rate": start_rate, "to_rate": target, "seconds": seconds,
                "offered": offered, "sent": sent,
                "offered_per_s": offered / seconds, "sent_per_s": sent / seconds,
                "delivered_per_s": delivered / seconds,
                "latency_us": summary_us(latency), "lag_us": summary_us(lag),
            })
            start_rate = target
        return out

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Totals:
        """The sums behind a JSON report, to add to others. Raises ValueError for a report
        this version cannot merge."""
        if report.get("version") != VERSION:
            raise ValueError(f"report version {report.get('version')!r}: only version "
                             f"{VERSION} reports can be merged (run both with this pugfast)")
        try:
            totals = cls(
                errors=Counter({k: v for k, v in report["errors"].items()
                                if k not in ("out_of_order", "stalled_rooms")}),
                latency=Histogram.from_state(report["histograms"]["latency"]),
                lag=Histogram.from_state(report["histograms"]["lag"]),
                join=Histogram.from_state(report["histograms"]["join"]),
                join_seconds=report["join"]["seconds"],
                generator_cpu_s=report["generator"]["cpu_s"],
                processes=report["generator"]["processes"],
                measured_s=report["measured_s"],
                precise_ticks=report["generator"]["precise_ticks"] is not False,
                aborted=report["aborted"],
                server=report["server_raw"],
                segments=[list(s) for s in report["segments"]],
                started_epoch_s=report["started_epoch_s"],
            )
            c = totals.counts
            for key in ("offered", "sent", "sent_total", "expected", "delivered",
                        "received_in_window", "rooms", "connections"):
                c[key] = report[key] or 0
            c["gaps"] = report["sequence_gaps"]
            c["out_of_order"] = report["errors"].get("out_of_order", 0)
            c["stalled_rooms"] = report["errors"].get("stalled_rooms", 0)
            for row in report["intervals"]:
                totals.add_interval(Interval.from_row(row))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a pugfast bench report: missing {exc}") from None
        return totals


def warnings(report: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Plain sentences about what limits the figures, for the text and the JSON alike."""
    out = []
    mode = config["mode"]
    lag = report.get("lag_us")
    if mode == "open" and lag and not lag["kept_schedule"]:
        out.append(
            f"the generator fell behind its schedule: lag p99 {format_us(lag['p99'])}, max "
            f"{format_us(lag['max'])}; {lag['late'] + lag['unsent']:,} of "
            f"{report['offered']:,} offered messages ({lag['late_ratio'] * 100:.2f}%) were "
            "sent over 1 ms late or not at all. The latencies count from each message's "
            "scheduled time, so they include that delay: give the generator more cores "
            "(--procs) or offer less.")
    if mode == "open" and report["generator"]["precise_ticks"] is False:
        out.append("no timerfd on this system: the open loop's ticks use the event loop's "
                   "timers, whose millisecond granularity shows in the lag and the latency")
    if mode == "lockstep":
        out.append(
            "closed loop: in lockstep a member sends its next burst only once the last one "
            "has arrived, so a stall of the relay also holds back the messages that would "
            "have waited through it, and their wait is never counted (coordinated omission): "
            "its tails read low. Use --rate (open loop) for latency.")
    util = report["generator"]["cpu_utilisation"]
    if mode != "idle" and util is not None and util > BUSY_GENERATOR:
        out.append(f"the generator used {util * 100:.0f}% of a core per process: it, not the "
                   "relay, may have set the pace (--procs spreads it)")
    if report.get("aborted"):
        out.append("aborted early: a threshold was broken (--abort-on-fail)")
    return out


# Configuration that may differ between the parts of one load: which segment, and how many
# processes each generator used.
_PER_PART = ("segment", "procs")


def merge_reports(reports: list[dict[str, Any]]) -> tuple[Totals, str, dict[str, Any]]:
    """The sums of several reports of one load (its segments, or several runs of it), with the
    target and configuration they share. Raises ValueError when they are not of one load, or
    when a segment comes twice."""
    if not reports:
        raise ValueError("no reports to merge")
    totals = Totals()
    first = reports[0]
    shared = {k: v for k, v in first["config"].items() if k not in _PER_PART}
    seen: set[tuple[int, int]] = set()
    for i, report in enumerate(reports):
        part = Totals.from_report(report)
        config = {k: v for k, v in report["config"].items() if k not in _PER_PART}
        if config != shared:
            differing = sorted(k for k in set(config) | set(shared)
                               if config.get(k) != shared.get(k))
            raise ValueError(f"report {i + 1} is of another load: its {', '.join(differing)} "
                             "differ from the first report's")
        for segment in part.segments:
            key = (segment[0], segment[1])
            if key in seen and segment[1] > 1:
                raise ValueError(f"segment {key[0]}/{key[1]} comes twice")
            seen.add(key)
        totals.add(part)
    config = dict(first["config"], segment=None,
                  procs=sum(r["config"]["procs"] for r in reports))
    return totals, first["target"], config


def missing_segments(totals: Totals) -> list[str]:
    """Segments of a split load that none of the merged reports holds, as ``I/N``."""
    counts = {n for _, n in totals.segments if n > 1}
    held = {(i, n) for i, n in totals.segments}
    return [f"{i}/{n}" for n in sorted(counts) for i in range(n) if (i, n) not in held]
