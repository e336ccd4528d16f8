"""``pugfast bench merge A.json B.json ...``: the reports of one load, added up exactly.

The reports are the ``--json`` output of generators that ran segments of one load (``--segment
I/N``), or of several runs of the same load. Counts add up, histograms merge bucket by bucket,
time series merge row by row (by their place in the window), and the thresholds given here are
judged on the sum, with the same exit statuses as a run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson


def merge_main(args: argparse.Namespace) -> int:
    """Merge ``args.reports``, print the merged report, return the exit status."""
    from .outcome import UsageError, finish
    from .results import merge_reports, missing_segments
    from .series import check_out
    from .thresholds import check_applicable, parse

    try:
        if not args.reports:
            raise UsageError("merge needs the --json reports to add up: pugfast bench merge "
                             "A.json B.json ...")
        reports = []
        for name in args.reports:
            try:
                reports.append(orjson.loads(Path(name).read_bytes()))
            except (OSError, orjson.JSONDecodeError) as exc:
                raise UsageError(f"{name}: {exc}") from None
        thresholds = [parse(t) for t in args.threshold]
        totals, target, config = merge_reports(reports)
        check_applicable(thresholds, config["mode"], totals.server is not None)
        if args.out:
            check_out(args.out)
    except (UsageError, ValueError) as exc:
        print(f"pugfast bench merge: error: {exc}", file=sys.stderr)
        return 2
    missing = missing_segments(totals)
    if missing:
        print(f"pugfast bench merge: warning: segments {', '.join(missing)} are missing: the "
              "figures cover only part of the load", file=sys.stderr)
    return finish(args, totals, target, config, thresholds, [])
