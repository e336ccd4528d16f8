"""Imports run one way: no module of pugfast imports one that imports it back, and the protocol
core, the engine above all, imports neither asyncio nor aiohttp (a sans-I/O core,
docs/engine.md), nor does the engine import the load generator (pugfast.bench) it serves.

Each core module is imported in a fresh interpreter, where nothing else can have pulled them
in. The cycles are found in the source: every import statement of every module, those inside
functions included (an import deferred into a function to dodge a cycle is still one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from engines import NOT_BUILT, c_impl

import pugfast

PACKAGE = Path(pugfast.__file__).parent

CHECK = """
import sys, {module}
loaded = sorted(name for name in {forbidden!r} if name in sys.modules)
assert not loaded, f"{module} imports {{loaded}}"
"""
IO_FRAMEWORKS = ("asyncio", "aiohttp", "uvloop")


def source_modules() -> dict[str, Path]:
    """Every module of the pugfast package in the source tree, by its dotted name."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = source_modules()
ENGINE = sorted(name for name in MODULES if name.startswith("pugfast.engine"))


def imported_modules(name: str, path: Path) -> set[str]:
    """The pugfast modules that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` imports the module; ``from module import name``
            # the module alone.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in MODULES and target != name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_imports_it_must() -> None:
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    assert "pugfast.engine._frames" in graph["pugfast.engine._fanout"]
    assert "pugfast.engine.buckets" in graph["pugfast.bench.histogram"]
    assert "pugfast.engine" in graph["pugfast.speedups"]
    assert "pugfast.errors" in graph["pugfast.engine._frames"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    assert cycles(graph) == []


def test_the_engine_imports_neither_the_bench_nor_an_io_framework_in_its_source() -> None:
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    for name in ENGINE:
        assert not {target for target in graph[name] if target.startswith("pugfast.bench")}, name
    assert len(ENGINE) >= 6, ENGINE


def run_check(module: str, forbidden: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module, forbidden=forbidden)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "module",
    [
        *ENGINE,
        pytest.param("pugfast.engine._speedups",
                     marks=pytest.mark.skipif(c_impl is None, reason=NOT_BUILT)),
    ],
)
def test_engine_module_imports_no_io_framework_and_not_the_bench(module: str) -> None:
    run_check(module, (*IO_FRAMEWORKS, "pugfast.bench"))


@pytest.mark.parametrize(
    "module",
    [
        "pugfast.speedups",
        "pugfast.allowance",
        "pugfast.liveness",
        "pugfast.workers.channel",
        "pugfast.handshake",
        "pugfast.pow",
        "pugfast.registry",
    ],
)
def test_core_module_imports_no_io_framework(module: str) -> None:
    run_check(module, IO_FRAMEWORKS)
