"""bench/results/report.html: one self-contained page, charts drawn as inline SVG.

No script, no stylesheet, font or image from anywhere else: the page opens from disk, offline.
Every chart is an ``<svg class="chart">`` with a title (``.chart-title``, naming the offered
rate and the loop type), two axis labels (``.axis-label``) and its data (``.data``), which
tests/test_bench_report.py checks in Chromium. Server kinds share a chart only when they were
offered the same load: closed-loop (lockstep) runs at saturation, or open-loop runs at one rate.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLOURS = {"pugfast-cython": "#1b7f5b", "pugfast-python": "#d08c18", "aiohttp-plain": "#8a3ffc",
           "pugfast-workers2": "#1f5fbf"}
SERIES_COLOURS = ("#1b7f5b", "#b00020", "#1f5fbf", "#d08c18", "#8a3ffc", "#555")
FALLBACK = "#555"
WIDTH, HEIGHT = 660, 320
CLOSED_LOOP = ("Closed loop (lockstep): a member sends its next burst only once the last one has "
               "arrived, so a stall of the relay holds the sending back too and the wait of the "
               "messages it held back is never counted (coordinated omission): its latency "
               "tails read low. Its scenarios measure throughput and CPU per delivery.")
OPEN_LOOP = ("Open loop: messages go out on a schedule whatever comes back, and each one's "
             "latency counts from the time it was due, so stalls show in the tail.")
QUICK = ('<p class="quick">Quick mode: short runs and small scenarios, to try the runner; not '
         "figures to quote.</p>")
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 48, 58
TITLE_CHARS = 95


def _e(text: object) -> str:
    return html.escape(str(text))


def _num(value: Any, digits: int = 0) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:,.{digits}f}"


def _figure(value: float) -> str:
    """A value at three significant digits, with a k/M suffix for large ones."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _us(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.3g} s"
    if value >= 1e3:
        return f"{value / 1e3:.3g} ms"
    return f"{value:.3g} us"


def colour(name: str, i: int) -> str:
    return COLOURS.get(name, SERIES_COLOURS[i % len(SERIES_COLOURS)])


class Axis:
    """A linear or logarithmic axis from ``lo`` to ``hi`` onto pixels ``a`` to ``b``."""

    def __init__(self, values: Sequence[float], a: float, b: float, log: bool,
                 zero: bool = False) -> None:
        finite = [v for v in values if v is not None and (v > 0 or not log)]
        lo, hi = (min(finite), max(finite)) if finite else (1.0, 10.0)
        self.log = log
        if log:
            self.lo = 10 ** math.floor(math.log10(lo))
            self.hi = 10 ** math.ceil(math.log10(hi)) if hi > self.lo else self.lo * 10
        else:
            self.lo = 0.0 if zero else lo
            self.hi = hi * 1.08 if hi > self.lo else self.lo + 1
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.a + f * (self.b - self.a)

    def ticks(self) -> list[float]:
        if self.log:
            out, v = [], self.lo
            while v <= self.hi * 1.0001:
                out.append(v)
                v *= 10
            return out
        step = 10 ** math.floor(math.log10((self.hi - self.lo) / 4 or 1))
        while (self.hi - self.lo) / step > 6:
            step *= 2
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step) + 1)]


def _title(title: str) -> str:
    """The chart's title, on two lines when it is long."""
    lines, line = [], ""
    for word in title.split():
        if line and len(line) + 1 + len(word) > TITLE_CHARS:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    spans = "".join(f'<tspan x="10" dy="{0 if i == 0 else 15}">{_e(text)}</tspan>'
                    for i, text in enumerate(lines))
    return f'<text class="chart-title t" x="10" y="16">{spans}</text>'


def _frame(title: str, x_label: str, y_label: str) -> list[str]:
    return [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{_e(title)}">', _title(title),
            f'<text class="axis-label x a" x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" '
            f'y="{HEIGHT - 6}" text-anchor="middle">{_e(x_label)}</text>',
            f'<text class="axis-label y a" text-anchor="middle" '
            f'transform="translate(14,{TOP + (HEIGHT - TOP - BOTTOM) / 2}) rotate(-90)">'
            f"{_e(y_label)}</text>"]


def _grid(x: Axis | None, y: Axis, fmt_x: Any, fmt_y: Any) -> list[str]:
    out = []
    for v in y.ticks():
        gy = y(v)
        out.append(f'<line class="g" x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" '
                   f'y2="{gy:.1f}"/><text class="a" x="{LEFT - 6}" y="{gy + 4:.1f}" '
                   f'text-anchor="end">{_e(fmt_y(v))}</text>')
    if x is not None:
        for v in x.ticks():
            gx = x(v)
            out.append(f'<line class="g" x1="{gx:.1f}" y1="{TOP}" x2="{gx:.1f}" '
                       f'y2="{HEIGHT - BOTTOM}"/><text class="a" x="{gx:.1f}" '
                       f'y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{_e(fmt_x(v))}</text>')
    return out


def _legend(names: Sequence[str], colours: Sequence[str]) -> list[str]:
    out = []
    for i, (name, c) in enumerate(zip(names, colours, strict=True)):
        x = LEFT + 8 + (i % 3) * 190
        y = TOP + 6 + (i // 3) * 15
        out.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{c}"/>'
                   f'<text class="a" x="{x + 14}" y="{y + 9}">{_e(name)}</text>')
    return out


def line_chart(title: str, x_label: str, y_label: str,
               series: dict[str, list[tuple[float, float]]], *, x_log: bool = False,
               y_log: bool = True, fmt_x: Any = _figure, fmt_y: Any = _us,
               markers: bool = False) -> str:
    """Lines of (x, y) points, one per series; empty when there is no point."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x = Axis(xs, LEFT, WIDTH - RIGHT, x_log, zero=not x_log)
    y = Axis(ys, HEIGHT - BOTTOM, TOP, y_log, zero=not y_log)
    parts = _frame(title, x_label, y_label) + _grid(x, y, fmt_x, fmt_y)
    colours = [colour(name, i) for i, name in enumerate(series)]
    for c, (name, pts) in zip(colours, series.items(), strict=True):
        path = " ".join(f"{'M' if j == 0 else 'L'}{x(px):.1f},{y(py):.1f}"
                        for j, (px, py) in enumerate(pts))
        parts.append(f'<path class="data" d="{path}" fill="none" stroke="{c}" '
                     f'stroke-width="2"><title>{_e(name)}</title></path>')
        if markers:
            parts += [f'<circle class="data" cx="{x(px):.1f}" cy="{y(py):.1f}" r="3" '
                      f'fill="{c}"><title>{_e(name)}: {_e(fmt_x(px))}, {_e(fmt_y(py))}</title>'
                      '</circle>' for px, py in pts]
    parts += _legend(list(series), colours)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, y_label: str, groups: dict[str, dict[str, tuple[float, float, float]]],
              *, log: bool = True, fmt: Any = _figure, x_label: str = "scenario") -> str:
    """Grouped bars: ``groups[group][series] = (value, min, max)``, whiskers from min to max
    (across runs), each bar labelled with its value."""
    groups = {g: {s: v for s, v in ss.items() if v[0]} for g, ss in groups.items()}
    groups = {g: ss for g, ss in groups.items() if ss}
    if not groups:
        return ""
    names = list(dict.fromkeys(s for ss in groups.values() for s in ss))
    values = [v for ss in groups.values() for t in ss.values() for v in t if v]
    y = Axis(values, HEIGHT - BOTTOM, TOP + 16 * ((len(names) + 2) // 3), log, zero=not log)
    parts = _frame(title, x_label, y_label) + _grid(None, y, None, fmt)
    plot_w = WIDTH - LEFT - RIGHT
    group_w = plot_w / len(groups)
    bar_w = group_w * 0.8 / len(names)
    colours = [colour(n, i) for i, n in enumerate(names)]
    for g, (group, series) in enumerate(groups.items()):
        gx = LEFT + g * group_w + group_w * 0.1
        for i, name in enumerate(names):
            if name not in series:
                continue
            value, lo, hi = series[name]
            bx = gx + i * bar_w
            top = y(value)
            parts.append(f'<rect class="data" x="{bx:.1f}" y="{top:.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{max(0.5, HEIGHT - BOTTOM - top):.1f}" fill="{colours[i]}">'
                         f'<title>{_e(name)}: {_e(fmt(value))}</title></rect>')
            cx = bx + (bar_w - 2) / 2
            if hi > lo:
                parts.append(f'<line class="whisker" x1="{cx:.1f}" y1="{y(hi):.1f}" '
                             f'x2="{cx:.1f}" y2="{y(lo):.1f}" stroke="#222"/>')
            parts.append(f'<text class="a value" x="{cx:.1f}" y="{min(top, y(hi)) - 3:.1f}" '
                         f'text-anchor="middle">{_e(fmt(value))}</text>')
        parts.append(f'<text class="a" x="{gx + group_w * 0.4:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                     f'text-anchor="middle">{_e(group)}</text>')
    parts += _legend(names, colours)
    parts.append("</svg>")
    return "".join(parts)


def cdf_chart(title: str, series: dict[str, list[list[int]]]) -> str:
    """Cumulative distribution of latency ([low_ns, high_ns, count] buckets), the share axis
    stretched towards the tail as HdrHistogram's plots are: 0, 90, 99, 99.9, 99.99%."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for name, buckets in series.items():
        total = sum(n for _, _, n in buckets)
        seen = 0
        pts = []
        for _, high, n in buckets:
            seen += n
            nines = min(4.0, -math.log10(max(1 - seen / total, 1e-4)))
            pts.append((max(high / 1000, 1.0), nines))
        lines[name] = pts
    return line_chart(title, "latency (log scale)", "percentile", lines, x_log=True,
                      y_log=False, fmt_x=_us,
                      fmt_y=lambda n: f"{100 - 100 * 10 ** -n:.4g}%")


# -- the page -----------------------------------------------------------------------------------

def _loop(summary: dict[str, Any]) -> str:
    rate = summary.get("offered_rate")
    if summary.get("loop") == "open" and rate:
        return f"open loop at {rate:,.0f} msg/s offered"
    if summary.get("loop") == "closed":
        return "closed loop (lockstep, at saturation)"
    return "idle"


def charts(results: dict[str, dict[str, dict[str, Any]]],
           extras: dict[str, Any]) -> list[str]:
    out = []
    # Efficiency: closed-loop runs at saturation are comparable across kinds.
    groups = {}
    for scenario, kinds in results.items():
        row = {kind: (s["deliveries_per_cpu_s"], *(s.get("deliveries_per_cpu_s_range")
                                                    or (s["deliveries_per_cpu_s"],) * 2))
               for kind, s in kinds.items()
               if s.get("loop") == "closed" and s.get("deliveries_per_cpu_s")}
        if row:
            groups[scenario] = row
    out.append(bar_chart("Deliveries per server CPU-second (log scale), closed loop (lockstep) "
                         "at saturation; whiskers: min-max across runs",
                         "deliveries per CPU-second", groups))
    # Latency CDFs: only kinds offered the same load share a chart.
    for scenario, kinds in results.items():
        by_load: dict[str, dict[str, list[list[int]]]] = {}
        for kind, s in kinds.items():
            if s.get("histogram"):
                by_load.setdefault(_loop(s), {})[kind] = s["histogram"]
        for load, series in by_load.items():
            out.append(cdf_chart(f"{scenario}: latency distribution, {load}", series))
    # The knee: offered rate against latency percentiles, from the sweep's steps.
    for scenario, kinds in extras.get("sweeps", {}).items():
        for kind, steps in kinds.items():
            series: dict[str, list[tuple[float, float]]] = {"p50": [], "p99": [], "p99.9": []}
            for step in steps:
                for name in series:
                    v = step["latency_us"].get(name)
                    if v:
                        series[name].append((step["rate"], v))
            knee = next((s["rate"] for s in reversed(steps) if s.get("kept_up")), None)
            knee_text = f"highest sustained {knee:,.0f} msg/s" if knee else "none sustained"
            out.append(line_chart(
                f"{scenario} / {kind}: latency against offered rate, open loop ({knee_text})",
                "offered messages per second", "latency (log scale)", series, markers=True))
    # A time series per open-loop run.
    for title, rows in extras.get("series", []):
        series = {name: [((r["start_s"] + r["end_s"]) / 2, r[key]) for r in rows
                         if r["phase"] == "measure" and r.get(key)]
                  for name, key in (("p50", "p50_us"), ("p99", "p99_us"), ("max", "max_us"))}
        out.append(line_chart(title, "seconds into the window", "latency (log scale)", series,
                              fmt_x=lambda v: f"{v:g} s", markers=True))
    # Idle members beside an open-loop chat.
    for kind, points in extras.get("idle_tail", {}).items():
        rate = points[0]["rate"] if points else 0
        groups = {}
        for point in points:
            for run_name in ("alone", "beside"):
                lat = point[run_name]
                groups.setdefault(f"{point['idle']:,} idle", {})
                for p in ("p99", "p99.9", "max"):
                    value = lat.get(p)
                    if value:
                        rng = lat.get(f"{p}_range") or (value, value)
                        groups[f"{point['idle']:,} idle"][f"{run_name} {p}"] = (value, *rng)
        out.append(bar_chart(f"idle-tail / {kind}: the chat's latency alone and beside idle "
                             f"members, open loop at {rate:,.0f} msg/s", "latency (log scale)",
                             groups, fmt=_us, x_label="idle members joined"))
        out.append(line_chart(
            f"idle-tail / {kind}: p99.9 of the chat against idle members, open loop at "
            f"{rate:,.0f} msg/s", "idle members joined", "p99.9 latency (log scale)",
            {"beside": [(p["idle"], p["beside"]["p99.9"]) for p in points
                        if p["beside"].get("p99.9")],
             "alone": [(p["idle"], p["alone"]["p99.9"]) for p in points
                       if p["alone"].get("p99.9")]}, markers=True))
    return [c for c in out if c]


def write_report(path: Path, meta: dict[str, Any], results: dict[str, dict[str, dict[str, Any]]],
                 checks: list[tuple[str, str, bool | None]],
                 extras: dict[str, Any] | None = None) -> None:
    extras = extras or {}
    rows = []
    for scenario, kinds in results.items():
        for kind, s in kinds.items():
            spread = s.get("cpu_us_per_delivery_range")
            p99_range = s.get("p99_us_range")
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                _e(scenario), _e(kind), _e(_loop(s)), _num(s.get("deliveries_per_s")),
                _num(s.get("cpu_us_per_delivery"), 3),
                f"{spread[0]:.3f}-{spread[1]:.3f}" if spread else "-",
                _num(s.get("deliveries_per_cpu_s")), _num(s.get("cpu_utilisation"), 2),
                _num(s.get("p50_us")), _num(s.get("p99_us")),
                f"{p99_range[0]:,.0f}-{p99_range[1]:,.0f}" if p99_range else "-",
                _num(s.get("p999_us")), _num(s.get("lost")),
                _num(s["rss_per_connection"] / 1024 if s.get("rss_per_connection") else None, 1),
                _num(s.get("joins_per_s")), _num(s.get("cpu_us_per_join"), 1),
                _num(s.get("load"), 1),
                _e(", ".join(f"{k} {v}" for k, v in s.get("errors", {}).items()) or "-"),
            )) + "</tr>")
    check_rows = "".join(
        f'<tr><td class="{"ok" if met else "bad"}">{"met" if met else "missed"}</td>'
        f"<td>{_e(target)}</td><td>{_e(measured)}</td></tr>" for target, measured, met in checks)
    scenario_list = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>"
                            for k, v in meta.get("scenarios", {}).items())
    notes = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in meta.get("notes", {}).items())
    load = meta.get("load_range") or [None, None]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pugfast bench report</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;
text-align:right}}td:nth-child(-n+3),th{{text-align:left}}.ok{{color:#1b7f5b;font-weight:bold}}
.bad{{color:#b00020;font-weight:bold}}svg{{margin:1em 1em 0 0;border:1px solid #eee}}
svg .t{{font:bold 12px system-ui,sans-serif}}svg .a{{font:11px system-ui,sans-serif;fill:#444}}
svg .g{{stroke:#e4e4e4}}.quick{{background:#fff3cd;padding:.5em}}
</style></head><body>
<h1>pugfast bench report</h1>
{QUICK if meta.get("quick") else ""}
<p id="machine">Started {_e(meta.get("started"))}, {_e(meta.get("seconds"))} s;
{"quick mode" if meta.get("quick") else "full mode"}; {_e(meta.get("runs"))} runs per scenario and
server (medians shown, min-max beside); server on core {_e(meta["cores"]["server"])}, generator on
core {_e(meta["cores"]["generator"])}; machine: {_e(meta.get("cpu"))}, {_e(meta.get("nproc"))}
cores, {_e(meta.get("kernel"))}; Python {_e(meta.get("python"))}; RLIMIT_NOFILE
{_e(meta.get("fd_limit"))}; 1-minute load average {_num(load[0], 2)} to {_num(load[1], 2)}
across the runs (other work on the machine shows up as latency).</p>
<h2>Targets</h2><table><tr><th>status</th><th>target</th><th>measured</th></tr>{check_rows}
</table>
<h2>Results</h2>
<table><tr><th>scenario</th><th>server</th><th>load</th><th>deliveries/s</th>
<th>µs CPU/delivery</th><th>(min-max)</th><th>deliveries/CPU-s</th><th>CPU util</th>
<th>p50 µs</th><th>p99 µs</th><th>(min-max)</th><th>p99.9 µs</th><th>lost</th>
<th>RSS/conn KiB</th><th>joins/s</th><th>µs CPU/join</th><th>load avg</th><th>errors</th></tr>
{"".join(rows)}</table>
<h2>Charts</h2>
<p>{CLOSED_LOOP} {OPEN_LOOP}</p>
{"".join(charts(results, extras))}
<h2>Scenarios</h2><ul>{scenario_list}</ul>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
