"""The human-readable report of a run (the JSON report is the dict itself)."""

from __future__ import annotations

from typing import Any


def _n(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{value:,.0f} B"
        value /= 1024
    return "-"


def format_text(report: dict[str, Any]) -> str:
    c = report["config"]
    if c["mode"] == "lockstep":
        load = f"lockstep bursts of {c['burst']}"
    elif c["mode"] == "open":
        load = f"open loop at {_n(c['rate'])} messages/s offered"
    else:
        load = "idle (no messages)"
    lat = report["latency_us"]
    join = report["join"]
    lines = [
        f"pugfast bench against {report['target']}",
        f"  load        {report['rooms']:,} rooms x {c['members']} members, "
        f"{c['payload']:,}-byte payloads, {load}",
        f"  time        {c['warmup']:g} s warm-up, {c['duration']:g} s measured, "
        f"up to {c['drain']:g} s drain; {c['procs']} generator process(es)",
        f"  joined      {report['connections']:,} connections in {join['seconds']:.2f} s "
        f"({_n(join['per_s'])}/s; join p50 {_n(join['latency_us']['p50'], 0)} us, "
        f"p99 {_n(join['latency_us']['p99'], 0)} us)",
    ]
    if c["mode"] != "idle":
        lines += [
            f"  sent        {report['sent']:,} messages ({_n(report['messages_per_s'])}/s)",
            f"  delivered   {report['delivered']:,} of {report['expected']:,} expected "
            f"(lost {report['lost']:,}, {report['loss_ratio'] * 100:.3f}%)",
            f"  rate        {_n(report['deliveries_per_s'])} deliveries/s arrived in the window",
            f"  latency     p50 {_n(lat['p50'], 1)}  p90 {_n(lat['p90'], 1)}  "
            f"p99 {_n(lat['p99'], 1)}  p99.9 {_n(lat['p99.9'], 1)}  max {_n(lat['max'], 1)} us",
        ]
    gen = report.get("generator")
    if gen and c["mode"] != "idle":
        lines.append(f"  generator   {gen['cpu_s']:.2f} s CPU in the window "
                     f"({_n((gen['cpu_utilisation'] or 0) * 100)}% of a core per process), "
                     f"{_n(gen['cpu_us_per_delivery'], 3)} us CPU per delivery")
    errors = report["errors"]
    lines.append("  errors      " + (", ".join(f"{k} {v:,}" for k, v in errors.items())
                                    if errors else "none"))
    server = report.get("server")
    if server:
        lines += [
            f"  server      pid {server['pid']}: {server['cpu_s']:.2f} s CPU in the window "
            f"({_n((server['cpu_utilisation'] or 0) * 100)}% of a core)",
            f"              {_n(server['cpu_us_per_delivery'], 3)} us CPU per delivery, "
            f"{_n(server['deliveries_per_cpu_s'])} deliveries per CPU-second, "
            f"{_n(server['cpu_us_per_join'], 1)} us CPU per join",
            f"              RSS {_bytes(server['rss_bytes'])} "
            f"(from {_bytes(server['rss_begin_bytes'])}; "
            f"{_bytes(server['rss_per_connection_bytes'])} per connection)",
        ]
        if server.get("processes", 1) > 1:
            lines.append(
                f"              {server['processes']} processes; the supervisor alone: "
                f"{server['supervisor_cpu_s']:.2f} s CPU in the window, "
                f"{_n(server['supervisor_cpu_us_per_join'], 1)} us CPU per join (routing)"
            )
    return "\n".join(lines)
