"""bench/run.py's idle-tail scenario (issue 24), end to end at a small scale: a relay, the
open-loop chat alone, a second ``pugfast bench --idle`` process holding idle members, the chat
again beside them; both runs, the relay's cost per idle member and the checks land in one
results file and one report, and the exit status says whether every target was met.

Not timed: the figures depend on the machine; what is checked is that the scenario measures
what it says, the way it says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench_kit import ROOT


def test_idle_tail_runs_the_chat_alone_and_beside_an_idle_crowd(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--runs", "1", "--scenarios", "idle-tail",
         "--kinds", "pugfast-cython", "--idle-members", "200", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    (point,) = results["extras"]["idle_tail"]["pugfast-cython"]
    assert point["idle"] == 200 and point["rate"] == 1600
    assert point["idle_cpu_us_per_member_s"] is not None and point["idle_rss_per_member"]
    for side in ("alone", "beside"):
        (report,) = results["raw"][f"idle-tail 200: {side}"]["pugfast-cython"]
        # The quick chat: a fifth of 100 rooms x 10 at 8,000 msg/s, open loop, for 3 s.
        assert report["config"]["loop"] == "open" and report["config"]["rate"] == 1600
        assert report["connections"] == 200 and report["offered"] == 4800
        assert report["lost"] == 0, report["errors"]
        assert point[side]["p99.9"] == report["latency_us"]["p99.9"]
    checks = [c for c in results["checks"] if c[0].startswith("idle-tail / pugfast-cython")]
    assert any("p99.9 within 1.5x" in c[0] for c in checks)
    assert any("max <= 20 ms" in c[0] for c in checks)
    missed = [c for c in results["checks"] if c[2] is False]
    assert done.returncode == (1 if missed else 0)
    page = (tmp_path / "report.html").read_text()
    assert "idle-tail / pugfast-cython: the chat&#x27;s latency alone and beside" in page
    assert "open loop at 1,600 msg/s" in page
