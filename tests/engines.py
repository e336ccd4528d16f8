"""Both engine implementations, for tests that hold them to the same behaviour.

The compiled one is tested whenever it is built, whichever engine PUGFAST_NO_EXTENSIONS makes
the relay use. A missing build fails the tests that need it, unless PUGFAST_NO_EXTENSIONS is
set: then they skip, saying so (a machine without a compiler can still test the twin).
"""

from __future__ import annotations

import os

import pytest

import pugfast._frames as py_impl

NO_EXTENSIONS = os.environ.get("PUGFAST_NO_EXTENSIONS", "") not in ("", "0")

try:
    import pugfast._speedups as c_impl
except ImportError:
    if not NO_EXTENSIONS:
        raise
    c_impl = None

NOT_BUILT = "the compiled engine is not built (allowed only with PUGFAST_NO_EXTENSIONS=1)"

IMPLEMENTATIONS = [
    pytest.param(py_impl, id="py"),
    pytest.param(c_impl, id="c", marks=pytest.mark.skipif(c_impl is None, reason=NOT_BUILT)),
]
