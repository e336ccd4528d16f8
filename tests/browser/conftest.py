"""Fixtures for driving the browser client in a real Chromium against a real relay.

The relay runs as a subprocess (``python -m pugfast serve``) on a free local port; Chromium
is Debian's, driven by Playwright's sync API. Every test here skips, naming what is missing,
when Chromium or the playwright package is absent, and only then.

A person (browser_kit.Person) is one browser context, with its own storage, clipboard and
viewport, and one page: the two ends of a conversation are two people. Each page records its
console errors (a CSP violation is one), uncaught exceptions and WebSocket frames; the
``people`` fixture fails the test if any page logged an error it was not told to expect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_kit import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    MISSING,
    TEST_POW_DIFFICULTY,
    UI_TIMEOUT_MS,
    Frame,
    Person,
    Relay,
    run_relay,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright, ViewportSize


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not MISSING:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="browser tests need " + " and ".join(MISSING))
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A relay with the deployment defaults, except a small proof-of-work difficulty."""
    with run_relay(tmp_path_factory.mktemp("relay"), "--pow-difficulty", str(TEST_POW_DIFFICULTY)) as running:
        yield running


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    """Starts extra relays with their own flags, for tests that need unusual limits."""
    with contextlib.ExitStack() as stack:

        def start(*flags: str) -> Relay:
            return stack.enter_context(run_relay(tmp_path, *flags))

        yield start


# --- The browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if MISSING:
        pytest.skip("browser tests need " + " and ".join(MISSING))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def people(browser: Browser) -> Iterator[Callable[..., Person]]:
    """Makes people: ``people("Alice", viewport=PHONE)``. Fails the test afterwards if any
    page logged an error it did not expect (CSP violations included)."""
    made: list[Person] = []

    def make(name: str, *, viewport: ViewportSize = DESKTOP, **options: Any) -> Person:
        context = browser.new_context(viewport=viewport, **options)
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()
        person = Person(name, context, page, viewport)
        page.on("console", lambda m: person.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: person.errors.append(f"uncaught: {e}"))

        def on_websocket(ws: Any) -> None:
            person.sockets.append(ws.url)
            ws.on("framesent", lambda payload: person.frames.append(Frame("sent", payload)))
            ws.on("framereceived", lambda payload: person.frames.append(Frame("received", payload)))

        page.on("websocket", on_websocket)
        made.append(person)
        return person

    yield make
    problems = {p.name: p.unexpected_errors() for p in made}
    for person in made:
        person.context.close()
    problems = {name: errors for name, errors in problems.items() if errors}
    assert not problems, f"browser errors: {problems}"
