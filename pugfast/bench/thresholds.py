"""``--threshold EXPR``: pass/fail criteria on a run's figures, as k6's thresholds (sans I/O).

An expression is ``METRIC OP VALUE``: ``p99<2ms``, ``p99.9<=10ms``, ``loss<=0``,
``errors==0``, ``cpu_per_delivery<1us``, ``lag_p99<1ms``. OP is one of ``< <= > >= == !=``.
Times take a unit (ns, us, ms, s; a bare number is microseconds), ratios may end in ``%``.
``METRICS`` lists the metrics, where each comes from in the JSON report and what it needs. A
threshold is judged on the whole window at the end; with ``--abort-on-fail`` also after each
interval on the window so far (except ``loss`` and ``lost``, which only the drain can settle).
A metric that was not measured breaks its threshold: a criterion nobody could check has not
been met.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .histogram import format_us

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_EXPR = re.compile(r"^\s*([a-z_][a-z0-9_.]*)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+)\s*([a-zµ%]*)\s*$")
_TIME_UNITS = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6, "": 1.0}


@dataclass(frozen=True)
class Metric:
    """A figure thresholds can judge: its path in the JSON report, its kind (``time`` in
    microseconds, ``ratio``, ``count`` or ``rate``), what it needs, and whether it can be judged
    before the run ends."""

    path: tuple[str, ...]
    kind: str
    needs: str = ""  # "load" (messages sent), "open" (the open loop), "server" (--server-pid)
    early: bool = True


METRICS: dict[str, Metric] = {
    **{name: Metric(("latency_us", name), "time", "load")
       for name in ("p50", "p90", "p99", "p99.9", "p99.99", "max", "min", "mean")},
    **{f"lag_{name}": Metric(("lag_us", name), "time", "open")
       for name in ("p50", "p99", "max")},
    "loss": Metric(("loss_ratio",), "ratio", "load", early=False),
    "lost": Metric(("lost",), "count", "load", early=False),
    "errors": Metric(("error_count",), "count"),
    "deliveries_per_s": Metric(("deliveries_per_s",), "rate", "load"),
    "cpu_per_delivery": Metric(("server", "cpu_us_per_delivery"), "time", "server"),
    "cpu_per_join": Metric(("server", "cpu_us_per_join"), "time", "server"),
    "gen_cpu_per_delivery": Metric(("generator", "cpu_us_per_delivery"), "time", "load"),
    "join_p99": Metric(("join", "latency_us", "p99"), "time"),
}


@dataclass(frozen=True)
class Threshold:
    """One parsed ``--threshold``: ``text`` as given, the metric, the comparison and the
    limit in the metric's unit (microseconds for times, a fraction for ratios)."""

    text: str
    metric: str
    op: str
    limit: float

    def holds(self, value: float | None) -> bool:
        return value is not None and _OPS[self.op](value, self.limit)


def parse(text: str) -> Threshold:
    """Parse ``text``; raises ValueError with a message saying what is wrong."""
    match = _EXPR.match(text)
    if not match:
        raise ValueError(f"threshold {text!r} is not METRIC OP VALUE, e.g. 'p99<2ms'")
    name, op, number, unit = match.groups()
    metric = METRICS.get(name)
    if metric is None:
        raise ValueError(f"threshold {text!r}: unknown metric {name!r}; known: "
                         + ", ".join(METRICS))
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"threshold {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"threshold {text!r}: the limit must be finite")
    if metric.kind == "time":
        if unit not in _TIME_UNITS:
            raise ValueError(f"threshold {text!r}: {unit!r} is not a time unit (ns, us, ms, s)")
        value *= _TIME_UNITS[unit]
    elif metric.kind == "ratio":
        if unit not in ("", "%"):
            raise ValueError(f"threshold {text!r}: a ratio is a fraction or a percentage")
        value = value / 100 if unit == "%" else value
    elif unit:
        raise ValueError(f"threshold {text!r}: {name} takes no unit")
    return Threshold(text.strip(), name, op, value)


def check_applicable(thresholds: list[Threshold], mode: str, server: bool) -> None:
    """Raises ValueError for a threshold that this kind of run cannot measure at all."""
    for t in thresholds:
        needs = METRICS[t.metric].needs
        if needs == "load" and mode == "idle":
            raise ValueError(f"threshold {t.text!r}: an idle run sends no messages")
        if needs == "open" and mode != "open":
            raise ValueError(f"threshold {t.text!r}: the lag is the open loop's (--rate or "
                             "--stages)")
        if needs == "server" and not server:
            raise ValueError(f"threshold {t.text!r}: needs --server-pid (the relay's CPU)")


def value_of(report: dict[str, Any], metric: str) -> float | None:
    """The figure ``metric`` names in a JSON report (None when not measured)."""
    node: Any = report
    for key in METRICS[metric].path:
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) else None


def evaluate(thresholds: list[Threshold], report: dict[str, Any],
             final: bool = True) -> list[dict[str, Any]]:
    """Every threshold judged on ``report``: ``{"threshold", "metric", "value", "ok"}``, the
    value in the metric's unit (None when not measured). Before the end (``final`` False)
    those that only the end can settle are left out."""
    out = []
    for t in thresholds:
        if not final and not METRICS[t.metric].early:
            continue
        value = value_of(report, t.metric)
        out.append({"threshold": t.text, "metric": t.metric, "value": value,
                    "ok": t.holds(value)})
    return out


def describe(result: dict[str, Any]) -> str:
    """A judged threshold as a line of text, its value in the metric's unit."""
    value = result["value"]
    kind = METRICS[result["metric"]].kind
    if value is None:
        shown = "not measured"
    elif kind == "time":
        shown = format_us(value)
    elif kind == "ratio":
        shown = f"{value * 100:.4g}%"
    else:
        shown = f"{value:,.6g}"
    verdict = "ok" if result["ok"] else "BROKEN"
    return f"{verdict:<6} {result['threshold']}: {result['metric']} was {shown}"
