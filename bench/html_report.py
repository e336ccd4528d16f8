"""bench/results/report.html: one self-contained page, charts drawn as inline SVG.

No script, no stylesheet or font from anywhere else: the page opens from disk, offline.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

COLOURS = {"pugfast-cython": "#1b7f5b", "pugfast-python": "#d08c18", "aiohttp-plain": "#8a3ffc"}
FALLBACK = "#555"


def _e(text: object) -> str:
    return html.escape(str(text))


def _num(value: Any, digits: int = 0) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:,.{digits}f}"


def latency_chart(title: str, series: dict[str, list[list[int]]]) -> str:
    """Cumulative distribution of latency, log-scaled time axis, one line per server kind."""
    width, height, left, right, top, bottom = 640, 300, 56, 30, 28, 40
    points: dict[str, list[tuple[float, float]]] = {}
    lo, hi = math.inf, 0.0
    for kind, buckets in series.items():
        total = sum(n for _, _, n in buckets)
        if not total:
            continue
        seen = 0
        line = []
        for _, high, n in buckets:
            seen += n
            us = max(high / 1000, 1.0)
            line.append((us, seen / total))
            lo, hi = min(lo, us), max(hi, us)
        points[kind] = line
    if not points:
        return ""
    lo_exp = math.floor(math.log10(lo))
    hi_exp = math.ceil(math.log10(hi)) if hi > lo else lo_exp + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(us: float) -> float:
        return left + (math.log10(us) - lo_exp) / (hi_exp - lo_exp) * plot_w

    # The share axis is stretched towards the tail, as in HdrHistogram's plots: 0%, 90%, 99%
    # and 99.9% are equally far apart, so p99 and p99.9 can be read off.
    nines = 4.0

    def y(fraction: float) -> float:
        depth = min(nines, -math.log10(max(1.0 - fraction, 10 ** -nines)))
        return top + (1 - depth / nines) * plot_h

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{_e(title)}">',
             f'<text x="{left}" y="18" class="t">{_e(title)}</text>']
    for exp in range(lo_exp, hi_exp + 1):
        gx = x(10 ** exp)
        label = (f"{10 ** exp:g} us" if exp < 3 else f"{10 ** (exp - 3):g} ms" if exp < 6
                 else f"{10 ** (exp - 6):g} s")
        parts.append(f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" y2="{top + plot_h}" '
                     'class="g"/>')
        parts.append(f'<text x="{gx:.1f}" y="{height - 22}" class="a" '
                     f'text-anchor="middle">{label}</text>')
    for frac in (0, 0.9, 0.99, 0.999, 0.9999):
        gy = y(frac)
        parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + plot_w}" y2="{gy:.1f}" '
                     'class="g"/>')
        parts.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" class="a" '
                     f'text-anchor="end">{frac * 100:.4g}%</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" class="a" '
                 'text-anchor="middle">latency (sender write to receiver read), cumulative share'
                 '</text>')
    for i, (kind, line) in enumerate(points.items()):
        colour = COLOURS.get(kind, FALLBACK)
        path = " ".join(f"{'M' if j == 0 else 'L'}{x(us):.1f},{y(f):.1f}"
                        for j, (us, f) in enumerate(line))
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<rect x="{left + 8}" y="{top + 8 + i * 16}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{left + 22}" y="{top + 17 + i * 16}" '
                     f'class="a">{_e(kind)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def efficiency_chart(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Deliveries per server CPU-second, grouped by scenario, one bar per server kind."""
    groups = [(name, kinds) for name, kinds in results.items()
              if any(isinstance(k.get("deliveries_per_cpu_s"), (int, float)) and
                     k.get("deliveries_per_cpu_s") for k in kinds.values())]
    if not groups:
        return ""
    kinds = sorted({kind for _, ks in groups for kind in ks},
                   key=lambda k: list(COLOURS).index(k) if k in COLOURS else 99)
    top_value = max(k.get("deliveries_per_cpu_s") or 0 for _, ks in groups for k in ks.values())
    width, height, left, top, bottom = 640, 300, 70, 28, 40
    plot_w, plot_h = width - left - 16, height - top - bottom
    group_w = plot_w / len(groups)
    bar_w = group_w * 0.8 / max(1, len(kinds))
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'role="img" aria-label="deliveries per server CPU-second">',
             f'<text x="{left}" y="18" class="t">Deliveries per server CPU-second '
             '(higher is better)</text>']
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        gy = top + (1 - frac) * plot_h
        parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + plot_w}" y2="{gy:.1f}" '
                     'class="g"/>')
        parts.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" class="a" text-anchor="end">'
                     f'{top_value * frac / 1e6:.2f}M</text>')
    for g, (name, ks) in enumerate(groups):
        gx = left + g * group_w + group_w * 0.1
        for i, kind in enumerate(kinds):
            value = ks.get(kind, {}).get("deliveries_per_cpu_s") or 0
            h = value / top_value * plot_h if top_value else 0
            parts.append(f'<rect x="{gx + i * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                         f'width="{bar_w - 2:.1f}" height="{h:.1f}" '
                         f'fill="{COLOURS.get(kind, FALLBACK)}"><title>{_e(kind)}: '
                         f'{value:,.0f}</title></rect>')
        parts.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{height - 22}" class="a" '
                     f'text-anchor="middle">{_e(name)}</text>')
    for i, kind in enumerate(kinds):
        parts.append(f'<rect x="{left + 8 + i * 150}" y="{height - 14}" width="10" height="10" '
                     f'fill="{COLOURS.get(kind, FALLBACK)}"/><text x="{left + 22 + i * 150}" '
                     f'y="{height - 5}" class="a">{_e(kind)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(path: Path, meta: dict[str, Any], results: dict[str, dict[str, dict[str, Any]]],
                 checks: list[tuple[str, str, bool | None]]) -> None:
    rows = []
    for scenario, kinds in results.items():
        plain = kinds.get("aiohttp-plain", {}).get("deliveries_per_cpu_s")
        for kind, s in kinds.items():
            ratio = (s["deliveries_per_cpu_s"] / plain
                     if plain and s.get("deliveries_per_cpu_s") else None)
            rss = s.get("rss_per_connection")
            rows.append(
                "<tr>" + "".join(f"<td>{c}</td>" for c in (
                    _e(scenario), _e(kind), _num(s.get("deliveries_per_s")),
                    _num(s.get("cpu_us_per_delivery"), 3), _num(s.get("deliveries_per_cpu_s")),
                    _num(ratio, 2), _num(s.get("cpu_utilisation"), 2), _num(s.get("p50_us")),
                    _num(s.get("p99_us")), _num(s.get("p999_us")), _num(s.get("lost")),
                    _num(rss / 1024 if rss is not None else None, 1),
                    _num(s.get("joins_per_s")), _num(s.get("cpu_us_per_join"), 1),
                    _num(s.get("load"), 1),
                    _e(", ".join(f"{k} {v}" for k, v in s.get("errors", {}).items()) or "-"),
                )) + "</tr>")
    check_rows = "".join(
        f'<tr><td class="{"ok" if met else "bad"}">{"met" if met else "missed"}</td>'
        f"<td>{_e(target)}</td><td>{_e(measured)}</td></tr>" for target, measured, met in checks)
    charts = [efficiency_chart(results)]
    for scenario, kinds in results.items():
        series = {kind: s.get("histogram", []) for kind, s in kinds.items() if s.get("histogram")}
        if series:
            charts.append(latency_chart(f"{scenario}: latency distribution", series))
    scenario_list = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>"
                            for k, v in meta.get("scenarios", {}).items())
    notes = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in meta.get("notes", {}).items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pugfast bench report</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;
text-align:right}}td:nth-child(-n+2),th{{text-align:left}}.ok{{color:#1b7f5b;font-weight:bold}}
.bad{{color:#b00020;font-weight:bold}}svg{{margin:1em 1em 0 0;border:1px solid #eee}}
svg .t{{font:bold 13px system-ui,sans-serif}}svg .a{{font:11px system-ui,sans-serif;fill:#444}}
svg .g{{stroke:#e4e4e4}}
</style></head><body>
<h1>pugfast bench report</h1>
<p>Started {_e(meta.get("started"))}, {_e(meta.get("seconds"))} s; {_e(meta.get("runs"))} runs
per scenario and server (medians shown); server on core {_e(meta["cores"]["server"])},
generator on core {_e(meta["cores"]["generator"])}; {_e(meta.get("cpu"))},
{_e(meta.get("nproc"))} cores; Python {_e(meta.get("python"))}; RLIMIT_NOFILE
{_e(meta.get("fd_limit"))}. "load" is the 1-minute load average before the runs.</p>
<h2>Targets</h2><table><tr><th>status</th><th>target</th><th>measured</th></tr>{check_rows}
</table>
<h2>Results</h2>
<table><tr><th>scenario</th><th>server</th><th>deliveries/s</th><th>µs CPU/delivery</th>
<th>deliveries/CPU-s</th><th>x plain</th><th>CPU util</th><th>p50 µs</th><th>p99 µs</th>
<th>p99.9 µs</th><th>lost</th><th>RSS/conn KiB</th><th>joins/s</th><th>µs CPU/join</th>
<th>load</th><th>errors</th></tr>
{"".join(rows)}</table>
<h2>Charts</h2>{"".join(charts)}
<h2>Scenarios</h2><ul>{scenario_list}</ul>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
