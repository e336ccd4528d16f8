"""Test plumbing shared by the whole suite.

Every ``async def`` test runs twice, once on the standard library's event loop and once on
uvloop, so the stdlib loop is the oracle for uvloop. No pytest plugin is needed for that: the
two hooks below parametrise coroutine tests with ``loop_name`` and run them to completion.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import pytest

from pugfast import engine

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
    uvloop = None

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop

# A test that hangs fails instead of stalling CI.
ASYNC_TEST_TIMEOUT = 60.0


def pytest_report_header(config: pytest.Config) -> str:
    return f"pugfast engine: {engine.IMPLEMENTATION}; event loops: {', '.join(LOOP_FACTORIES)}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if inspect.iscoroutinefunction(metafunc.function):
        if "loop_name" not in metafunc.fixturenames:
            metafunc.fixturenames.append("loop_name")
        metafunc.parametrize("loop_name", list(LOOP_FACTORIES))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    loop = LOOP_FACTORIES[pyfuncitem.callspec.params["loop_name"]]()
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_TIMEOUT)
        )
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
    return True
