"""How a run of ``pugfast bench``, or a merge of runs, ends: its report printed and written, its
thresholds judged, its exit status; and the UsageError that ends one before it starts.

Shared by the command (pugfast/bench/__init__.py) and ``pugfast bench merge``
(pugfast/bench/merge.py), below both of them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

THRESHOLD_BROKEN = 99


class UsageError(Exception):
    """The arguments describe no run that can be carried out; the message says why."""


def finish(args: argparse.Namespace, totals: Any, target: str, config: dict[str, Any],
           thresholds: list[Any], broken_early: list[dict[str, Any]]) -> int:
    """Report ``totals`` (a run's, or a merge's), write the time series, judge thresholds;
    return the exit status."""
    import orjson

    from .report import format_text
    from .series import write_hdr_log, write_out
    from .thresholds import describe, evaluate

    report = totals.report(target, config)
    verdicts = evaluate(thresholds, report)
    # A threshold that stopped the run early is broken, whatever the rest of the window says.
    for early in broken_early:
        for verdict in verdicts:
            if verdict["threshold"] == early["threshold"] and verdict["ok"]:
                verdict.update(ok=False, value=early["value"])
    report["thresholds"] = verdicts
    if args.out:
        write_out(args.out, report)
    if args.hdr_log:
        write_hdr_log(args.hdr_log, totals, totals.started_epoch_s)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_text(report, verdicts))
    broken = [v for v in verdicts if not v["ok"]]
    if broken:
        for verdict in broken:
            print(f"pugfast bench: threshold broken: {describe(verdict)}", file=sys.stderr)
        return THRESHOLD_BROKEN
    return 1 if report["lost"] or report["error_count"] else 0
