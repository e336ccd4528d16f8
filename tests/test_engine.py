"""pugfast.engine, the selector: which engine it chose, its former name pugfast.speedups, and
the two halves of every twin pair exposing the same names."""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from engines import NOT_BUILT, TWIN_MODULES, c_impl

import pugfast.engine
import pugfast.speedups


def test_the_selector_reports_the_active_engine() -> None:
    no_extensions = os.environ.get("PUGFAST_NO_EXTENSIONS", "") not in ("", "0")
    expected = "python" if no_extensions else "cython"
    assert expected == pugfast.engine.IMPLEMENTATION
    module = pugfast.engine.Connection.__module__
    assert module == ("pugfast.engine._fanout" if no_extensions else "pugfast.engine._speedups")


def test_pugfast_speedups_is_the_selector_under_its_former_name() -> None:
    assert pugfast.speedups.__all__ == pugfast.engine.__all__
    for name in pugfast.engine.__all__:
        assert getattr(pugfast.speedups, name) is getattr(pugfast.engine, name), name


@pytest.mark.parametrize("twin", TWIN_MODULES, ids=lambda module: module.__name__)
def test_the_compiled_module_has_every_public_name_of_each_twin(twin: ModuleType) -> None:
    if c_impl is None:
        pytest.skip(NOT_BUILT)
    missing = [name for name in twin.__all__ if not hasattr(c_impl, name)]
    assert not missing, f"{twin.__name__} has names the compiled module lacks: {missing}"
