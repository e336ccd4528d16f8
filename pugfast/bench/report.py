"""The human-readable report of a run (the JSON report is the dict itself).

Figures are printed at the histogram's precision (three significant digits), a figure that
was not measured as ``-``, and an idle run shows only what an idle run measures.
"""

from __future__ import annotations

from typing import Any

from .histogram import format_us
from .thresholds import describe


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


def _percentiles(summary: dict[str, Any], names: tuple[str, ...]) -> str:
    return "  ".join(f"{name} {format_us(summary[name])}" for name in names)


def load_line(report: dict[str, Any]) -> str:
    c = report["config"]
    rooms = f"{report['rooms']:,} rooms x {c['members']} members"
    if c["mode"] == "idle":
        return f"{rooms}, idle (joined, sending nothing)"
    if c["mode"] == "lockstep":
        load = f"lockstep bursts of {c['burst']} (closed loop)"
    elif c.get("stages"):
        ramp = ", ".join(f"{_n(rate)}/s over {seconds:g} s" for rate, seconds in c["stages"])
        load = f"open loop from {_n(c['rate'] or 0)} messages/s, ramping to {ramp}"
    else:
        load = f"open loop at {_n(c['rate'])} messages/s offered"
    return f"{rooms}, {c['payload']:,}-byte payloads, {load}"


def format_text(report: dict[str, Any], thresholds: list[dict[str, Any]] | None = None) -> str:
    c = report["config"]
    mode = c["mode"]
    join = report["join"]
    segments = report.get("segments") or []
    parts = (f"; segments {', '.join(f'{i}/{n}' for i, n in segments)}"
             if any(n > 1 for _, n in segments) else "")
    lines = [
        f"pugfast bench against {report['target']}",
        f"  load        {load_line(report)}",
        f"  time        {c['warmup']:g} s warm-up, {report['measured_s']:g} s measured"
        + (f", up to {c['drain']:g} s drain" if mode != "idle" else "")
        + f"; {c['procs']} generator process(es){parts}",
        f"  joined      {report['connections']:,} connections in {join['seconds']:.2f} s "
        f"({_n(join['per_s'])}/s; join p50 {format_us(join['latency_us']['p50'])}, "
        f"p99 {format_us(join['latency_us']['p99'])})",
    ]
    if mode != "idle":
        lat = report["latency_us"]
        since = ("each message's scheduled send time" if mode == "open"
                 else "each round's write (closed loop)")
        if mode == "open":
            lines.append(f"  offered     {report['offered']:,} messages in the window")
        lines += [
            f"  sent        {report['sent']:,} messages ({_n(report['messages_per_s'])}/s)",
            f"  delivered   {report['delivered']:,} of {report['expected']:,} expected "
            f"(lost {report['lost']:,}, {report['loss_ratio'] * 100:.3f}%)",
            f"  rate        {_n(report['deliveries_per_s'])} deliveries/s arrived in the window",
            f"  latency     {_percentiles(lat, ('p50', 'p90', 'p99', 'p99.9'))}  "
            f"max {format_us(lat['max'])}  (from {since})",
        ]
        lag = report.get("lag_us")
        if lag:
            lines.append(
                f"  lag         {_percentiles(lag, ('p50', 'p99'))}  max {format_us(lag['max'])}; "
                f"{lag['late']:,} sent over 1 ms late, {lag['unsent']:,} not sent"
                + ("" if lag["kept_schedule"] else "  -- the generator fell behind"))
        for stage in report.get("stages") or []:
            lines.append(
                f"  stage {stage['stage'] + 1:<4}  {_n(stage['from_rate'])} -> "
                f"{_n(stage['to_rate'])}/s over {stage['seconds']:g} s: offered "
                f"{_n(stage['offered_per_s'])}/s, sent {_n(stage['sent_per_s'])}/s, "
                f"delivered {_n(stage['delivered_per_s'])}/s, p99 "
                f"{format_us(stage['latency_us']['p99'])}")
        gen = report["generator"]
        lines.append(f"  generator   {gen['cpu_s']:.2f} s CPU in the window "
                     f"({_n((gen['cpu_utilisation'] or 0) * 100)}% of a core per process), "
                     f"{format_us(gen['cpu_us_per_delivery'])} CPU per delivery")
    errors = report["errors"]
    lines.append("  errors      " + (", ".join(f"{k} {v:,}" for k, v in errors.items())
                                    if errors else "none"))
    lines += _server_lines(report)
    for result in thresholds or []:
        lines.append(f"  threshold   {describe(result)}")
    for warning in report.get("warnings", []):
        lines.append(f"  note: {warning}")
    return "\n".join(lines)


def _server_lines(report: dict[str, Any]) -> list[str]:
    server = report.get("server")
    if not server:
        return []
    mode = report["config"]["mode"]
    lines = [f"  server      pid {server['pid']}: {server['cpu_s']:.2f} s CPU in the window "
             f"({_n((server['cpu_utilisation'] or 0) * 100)}% of a core)"]
    joins = report["connections"]
    resolution = server["cpu_resolution_us"]
    per_join = server["cpu_us_per_join"]
    if per_join is not None and joins and resolution >= 1:
        # A clock of whole ticks: say how coarse the figure is.
        join_text = (f"{format_us(per_join)} CPU per join (+/- {format_us(resolution / joins)}: "
                     f"{server['cpu_clock']} ticks of {format_us(resolution)} over {joins:,} "
                     "joins)")
    else:
        join_text = f"{format_us(per_join)} CPU per join"
    if mode == "idle":
        lines.append(f"              {join_text}, "
                     f"{format_us(server['cpu_us_per_connection_s'])} CPU per connection "
                     "per second held")
    else:
        lines.append(f"              {format_us(server['cpu_us_per_delivery'])} CPU per "
                     f"delivery, {_n(server['deliveries_per_cpu_s'])} deliveries per "
                     f"CPU-second, {join_text}")
    lines.append(f"              RSS {_bytes(server['rss_bytes'])} "
                 f"(from {_bytes(server['rss_begin_bytes'])}; "
                 f"{_bytes(server['rss_per_connection_bytes'])} per connection)")
    if server.get("processes", 1) > 1:
        lines.append(
            f"              {server['processes']} processes; the supervisor alone: "
            f"{server['supervisor_cpu_s']:.2f} s CPU in the window, "
            f"{format_us(server['supervisor_cpu_us_per_join'])} CPU per join (routing)")
    return lines
