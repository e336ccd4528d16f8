"""The time series on disk: ``--out FILE.csv`` or ``FILE.jsonl`` (one row per interval) and
``--hdr-log FILE`` (HdrHistogram's interval log of the latencies, and of the open loop's lags
tagged ``lag``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson

from .histogram import IntervalLog
from .results import Totals

COLUMNS = ("start_s", "end_s", "phase", "stage", "offered", "sent", "delivered",
           "delivered_per_s", "errors", "measured", "p50_us", "p99_us", "p99.9_us", "max_us",
           "lag_p50_us", "lag_p99_us", "lag_max_us", "server_cpu", "server_rss_bytes")
SUFFIXES = (".csv", ".jsonl")


def check_out(path: str) -> None:
    """Raises ValueError unless ``path`` names a CSV or JSON Lines file."""
    if Path(path).suffix not in SUFFIXES:
        raise ValueError(f"--out {path!r}: the file must end in .csv or .jsonl")


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's time series without the histograms, ``offered`` blank in a closed loop."""
    open_loop = report["config"]["mode"] == "open"
    out = []
    for row in report["intervals"]:
        row = {k: row.get(k) for k in COLUMNS}
        if not open_loop:
            row["offered"] = None
        out.append(row)
    return out


def write_out(path: str, report: dict[str, Any]) -> None:
    """Write the time series of ``report`` to ``path`` (.csv or .jsonl)."""
    table = rows(report)
    if path.endswith(".jsonl"):
        with open(path, "wb") as f:
            for row in table:
                f.write(orjson.dumps(row) + b"\n")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in table:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_hdr_log(path: str, totals: Totals, started_epoch_s: float) -> None:
    """HdrHistogram's interval log of ``totals``' time series; times from the window's start."""
    with open(path, "w") as f:
        log = IntervalLog(f, started_epoch_s, comment=(
            "pugfast bench: delivery latency in nanoseconds from each message's scheduled send "
            "(Interval_Max in ms); lines tagged lag: how late the generator wrote them"))
        for _, row in sorted(totals.intervals.items()):
            length = row.end_s - row.start_s
            log.interval(row.start_s, length, row.latency)
            if row.lag.count:
                log.interval(row.start_s, length, row.lag, tag="lag")
