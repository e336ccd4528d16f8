"""The relay's documented worst case for memory holds (docs/operations.md, "Sizing"): members
that stop reading while others send 64 KiB messages in bursts, with no rate limit, take the
relay to at most B + N x (max-buffered-bytes + 2 x max-message-bytes + 256 KiB).

The scenario is bench/worst_case.py's, which operators run to measure their own machine.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pugfast.engine._fanout import WRITE_CHUNK

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("worst_case", ROOT / "bench" / "worst_case.py")
assert _spec is not None and _spec.loader is not None
worst_case = importlib.util.module_from_spec(_spec)
sys.modules["worst_case"] = worst_case
_spec.loader.exec_module(worst_case)


def test_the_scenario_uses_the_engines_write_piece() -> None:
    assert worst_case.WRITE_CHUNK == WRITE_CHUNK


@pytest.mark.parametrize("flags", [[], ["--max-buffered-bytes", "262144"]], ids=["default", "256KiB"])
async def test_peak_memory_stays_under_the_documented_bound(loop_name: str, flags: list[str]) -> None:
    measured = await worst_case.peak_memory(["--event-loop", loop_name, *flags])
    assert measured["peak"] <= measured["bound"], {k: round(v / 2**20, 1) for k, v in measured.items()}
    # And the scenario is a real load: the relay held far more than when the members joined.
    assert measured["peak"] - measured["joined"] > 0.25 * (measured["bound"] - measured["joined"])
