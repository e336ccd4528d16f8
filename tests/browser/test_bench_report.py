"""bench/run.py's report.html, rendered in Chromium: every chart has a title that names its load
(offered rate and loop type), both axis labels and visible data, and the page asks nothing of
any other origin.

The results behind it are real: short ``pugfast bench`` runs against a relay in this process
(closed loop, open loop, a sweep's steps, the idle-tail pair), summarised by bench/run.py's own
code, so the charts are drawn from the shapes a real run writes.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from bench_kit import ROOT, bench, thread_relay

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


def load(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_results(capsys: pytest.CaptureFixture[str]) -> tuple[dict, dict, list]:
    run = load("run")
    lockstep = ["--rooms", "2", "--members", "3", "--burst", "2", "--warmup", "0.1",
                "--duration", "0.4"]
    open_loop = ["--rooms", "2", "--members", "3", "--warmup", "0.1", "--duration", "0.8",
                 "--interval", "0.2"]
    pid = str(os.getpid())
    with thread_relay() as url:
        closed = [bench(capsys, url, *lockstep, "--server-pid", pid)[1] for _ in range(2)]
        steps = [bench(capsys, url, *open_loop, "--rate", str(rate), "--server-pid", pid)[1]
                 for rate in (200, 400)]
        alone, beside = steps
    results = {
        "room10": {"pugfast-cython": run.summarise(closed)},
        "room10-open": {"pugfast-cython": run.summarise([steps[1]])},
    }
    for step in steps:
        step["kept_up"] = True
    extras = {
        "sweeps": {"room10-sweep": {"pugfast-cython": [
            {"rate": s["config"]["rate"], "latency_us": s["latency_us"], "kept_up": True}
            for s in steps]}},
        "series": [(f"room10-open / pugfast-cython: latency per interval, open loop at "
                    f"{steps[1]['config']['rate']:,.0f} msg/s offered", steps[1]["intervals"])],
        "idle_tail": {"pugfast-cython": [run.idle_tail_point([{
            "idle": 12, "rate": alone["config"]["rate"], "alone": alone, "beside": beside,
            "idle_cpu_us_per_member_s": 1.0, "idle_rss_per_member": 2048}])]},
    }
    checks = run.checks(results, extras)
    return results, extras, checks


def test_every_chart_has_a_title_axis_labels_and_data(
    browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_report = load("html_report")
    results, extras, checks = real_results(capsys)
    meta = {"started": "now", "seconds": 1, "quick": True, "runs": 2,
            "cores": {"server": "0", "generator": "1"}, "cpu": "test", "nproc": 2,
            "kernel": "Linux", "python": sys.version.split()[0], "fd_limit": 20000,
            "load_range": [0.5, 1.5], "notes": {}, "scenarios": {"room10": "rooms of 10"}}
    page_path = tmp_path / "report.html"
    html_report.write_report(page_path, meta, results, checks, extras)
    context = browser.new_context()
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    charts = page.eval_on_selector_all("svg.chart", """charts => charts.map(svg => ({
        title: (svg.querySelector('.chart-title') || {}).textContent || '',
        axes: [...svg.querySelectorAll('.axis-label')].map(a => a.textContent.trim()),
        data: [...svg.querySelectorAll('.data')].filter(d => {
            const box = d.getBBox();
            return box.width > 0 || box.height > 0;
        }).length,
        shown: svg.getBoundingClientRect().width > 0,
    }))""")
    header = page.inner_text("#machine")
    context.close()
    titles = [c["title"] for c in charts]
    # Efficiency, two CDFs, the knee, a time series, and the idle-tail's two.
    assert len(charts) == 7, titles
    for chart in charts:
        assert chart["shown"], chart
        assert "loop" in chart["title"], chart["title"]
        assert len(chart["axes"]) == 2 and all(chart["axes"]), chart
        assert chart["data"] > 0, chart
    assert any("log scale" in t and "closed loop" in t for t in titles)
    assert any("against offered rate" in t for t in titles)
    assert any("open loop at 400 msg/s" in t for t in titles)
    assert "quick mode" in header and "load average" in header and "cores" in header
    # Nothing but the page itself: no script, style, font or image from anywhere.
    assert requests == [page_path.as_uri()]
