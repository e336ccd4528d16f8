"""Accessibility scans (axe-core, vendored) of every screen, in light and dark schemes, and
the screenshots kept as test artifacts.

axe runs inside the page under the relay's real Content-Security-Policy: Playwright's
page.evaluate goes through the DevTools protocol, which CSP does not govern, so there is no
need to weaken the policy (bypass_csp) for the scan and no risk of scanning a page that
differs from what users get.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from browser_kit import AXE_SOURCE, DESKTOP, PHONE, Person, Relay

pytestmark = pytest.mark.browser

People = Callable[..., Person]
BLOCKING = {"serious", "critical"}


def axe_violations(person: Person) -> list[dict[str, Any]]:
    """Runs axe on the page as it is now; returns the serious and critical violations."""
    page = person.page
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SOURCE.read_text())
    results = page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ['violations'] });
            return r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(' ')),
            }));
        }"""
    )
    return [v for v in results if v["impact"] in BLOCKING]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_screen_passes_axe(people: People, relay: Relay, scheme: str) -> None:
    alice = people("Alice", viewport=DESKTOP, color_scheme=scheme)
    bob = people("Bob", viewport=PHONE, color_scheme=scheme)
    found: dict[str, list[dict[str, Any]]] = {}

    alice.open_home(relay)
    found["home"] = axe_violations(alice)
    bob.open_home(relay)
    bob.screenshot(f"home-{scheme}")
    alice.screenshot(f"home-{scheme}")

    link = alice.create_room(relay)
    bob.open_link(link)
    bob.wait_in_room()
    alice.say("Hello! Can you read this?")
    bob.wait_for_message("Hello! Can you read this?")
    bob.say("Loud and clear.\nSecond line, to show wrapping of a longer message on a phone.")
    alice.wait_for_message("Loud and clear.\nSecond line, to show wrapping of a longer message on a phone.")
    found["room"] = axe_violations(alice) + axe_violations(bob)
    alice.screenshot(f"room-{scheme}")
    bob.screenshot(f"room-{scheme}")

    alice.page.click("#purge")
    alice.page.wait_for_selector("#purge-dialog[open]")
    found["purge dialog"] = axe_violations(alice)
    alice.screenshot(f"purge-dialog-{scheme}")
    alice.page.click("#purge-confirm")
    bob.wait_for_ending("purged")
    alice.wait_for_ending("purged")
    found["ended"] = axe_violations(bob)
    bob.screenshot(f"ended-{scheme}")
    alice.screenshot(f"ended-{scheme}")

    problems = {screen: v for screen, v in found.items() if v}
    assert not problems, f"serious or critical accessibility violations: {problems}"


def test_controls_have_labels_and_work_without_a_mouse(people: People, relay: Relay) -> None:
    alice = people("Alice", viewport=PHONE)
    alice.open_home(relay)
    # Every control has an accessible name.
    unnamed = alice.page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea')]
                  .filter(el => !el.labels?.length && !el.textContent.trim()
                                && !el.getAttribute('aria-label'))
                  .map(el => el.id)"""
    )
    assert unnamed == []
    # Tab to "Create room" and press Enter: the room opens with the message box focused.
    for _ in range(10):
        if alice.page.evaluate("document.activeElement.id") == "create":
            break
        alice.page.keyboard.press("Tab")
    alice.page.keyboard.press("Enter")
    alice.wait_in_room()
    assert alice.page.evaluate("document.activeElement.id") == "compose"
    alice.page.keyboard.type("typed, not clicked")
    alice.page.keyboard.press("Enter")
    alice.page.wait_for_selector("#messages .message.mine")
    assert alice.messages()[0]["text"] == "typed, not clicked"
