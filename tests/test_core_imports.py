"""The protocol core imports neither asyncio nor aiohttp (a sans-I/O core, docs/engine.md).

Each module is imported in a fresh interpreter, where nothing else can have pulled them in.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from engines import NOT_BUILT, c_impl

CHECK = """
import sys, {module}
loaded = sorted(name for name in ("asyncio", "aiohttp", "uvloop") if name in sys.modules)
assert not loaded, f"{module} imports {{loaded}}"
"""


@pytest.mark.parametrize(
    "module",
    [
        "pugfast.engine._frames",
        "pugfast.engine._fanout",
        "pugfast.engine._sink",
        "pugfast.engine._head",
        "pugfast.allowance",
        "pugfast.liveness",
        "pugfast.workers.channel",
        "pugfast.handshake",
        "pugfast.pow",
        "pugfast.registry",
        pytest.param("pugfast.engine._speedups", marks=pytest.mark.skipif(c_impl is None, reason=NOT_BUILT)),
    ],
)
def test_core_module_imports_no_io_framework(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
