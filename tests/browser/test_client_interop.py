"""The browser and ``pugfast chat`` in one room, through a real ``pugfast serve``: each side
must read what the other wrote (non-ASCII and multi-line included), see the other come and
go, show the same fingerprint words, and end when the other purges. Chromium runs the page;
the terminal client runs as a subprocess, in pipe mode and on a pseudo-terminal."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from browser_kit import DESKTOP, PHONE, Person, Relay
from client_kit import ChatProcess, TerminalChat

from pugfast.client.chat import EXIT_LEFT, EXIT_PURGED

pytestmark = pytest.mark.browser

People = Callable[..., Person]
FROM_BROWSER = "Grüße aus dem Browser 🐶\nzweite Zeile, naïve café"
FROM_TERMINAL = "Antwort über ✓ — 日本語\nvom Terminal"


def purge_in_page(person: Person) -> None:
    person.page.click("#purge")
    person.page.wait_for_selector("#purge-dialog[open]")
    person.page.click("#purge-confirm")


def test_browser_creates_the_room_and_pugfast_chat_joins_from_the_copied_link(
    people: People, relay: Relay
) -> None:
    alice = people("Alice", viewport=DESKTOP)
    link = alice.create_room(relay)
    alice_name = alice.my_name()
    chat = ChatProcess(link)
    try:
        name = chat.joined()
        # Presence, both ways.
        alice.wait_for_notice(f"{name} joined.")
        assert alice.member_names() == [f"{alice_name} you creator", name]
        here = rf"In the room \(2 of 8\): {re.escape(alice_name)}, {re.escape(name)} \(you\)\.$"
        chat.stderr.wait_for(here)
        # The same nine words on both sides.
        words = chat.stderr.wait_for(r"^-- Key fingerprint: (.+)$").group(1).split()
        assert alice.fingerprint() == words and len(words) == 9

        # Browser to terminal: Shift+Enter makes the line break in the page.
        first, second = FROM_BROWSER.split("\n")
        alice.page.fill("#compose", first)
        alice.page.press("#compose", "Shift+Enter")
        alice.page.keyboard.type(second)
        alice.page.press("#compose", "Enter")
        line = chat.stdout.wait_for(rf"^{re.escape(alice_name)}: ").string
        assert line == f"{alice_name}: {FROM_BROWSER.replace(chr(10), chr(92) + 'n')}"

        # Terminal to browser: "\n" in a line of input is the line break.
        chat.say(FROM_TERMINAL.replace("\n", "\\n"))
        alice.wait_for_message(FROM_TERMINAL)
        shown = alice.messages()
        assert [(m["sender"], m["text"], m["failed"]) for m in shown] == [
            (f"{alice_name} (you)", FROM_BROWSER, False),
            (name, FROM_TERMINAL, False),
        ]
        assert re.fullmatch(r"\d\d:\d\d", shown[1]["time"])

        # A second browser comes and goes; the terminal sees both, and Bob sees the terminal.
        bob = people("Bob", viewport=PHONE)
        bob.open_link(link)
        bob.wait_in_room()
        bob_name = bob.my_name()
        assert name in bob.member_names()
        chat.stderr.wait_for(rf"^-- {re.escape(bob_name)} joined\.$")
        bob.page.close()
        chat.stderr.wait_for(rf"^-- {re.escape(bob_name)} left\.$")

        # The creator purges in the page: the terminal client ends with the purge's exit code.
        purge_in_page(alice)
        alice.wait_for_ending("purged")
        assert chat.wait() == EXIT_PURGED
        chat.stderr.wait_for(r"^-- The room was purged by its creator")
    finally:
        chat.kill()


def test_the_terminal_leaving_is_seen_in_the_page(people: People, relay: Relay) -> None:
    alice = people("Alice", viewport=DESKTOP)
    link = alice.create_room(relay)
    chat = ChatProcess(link)
    try:
        name = chat.joined()
        alice.wait_for_notice(f"{name} joined.")
        chat.say("bye")
        chat.close_input()
        assert chat.wait() == EXIT_LEFT
        alice.wait_for_message("bye")
        alice.wait_for_notice(f"{name} left.")
    finally:
        chat.kill()


def test_pugfast_chat_creates_the_room_the_browser_joins_and_purges_it(people: People, relay: Relay) -> None:
    term = TerminalChat("--create", relay.url)
    try:
        link = term.expect(r"^(http://\S+/r/\S+)\r?$").group(1)
        words = term.expect(r"^-- Key fingerprint: (.+?)\r?$").group(1)
        me = term.expect(r"^-- You joined as (.+?) \(creator\)\.").group(1)

        bob = people("Bob", viewport=PHONE)
        bob.open_link(link)
        bob.wait_in_room()
        bob_name = bob.my_name()
        assert bob.fingerprint() == words.split()
        assert bob.member_names() == [f"{me} creator", f"{bob_name} you"]
        term.expect(rf"^-- {re.escape(bob_name)} joined\.")

        term.type(FROM_TERMINAL.replace("\n", "\\n") + "\n")
        bob.wait_for_message(FROM_TERMINAL)
        bob.page.fill("#compose", FROM_BROWSER)
        bob.page.press("#compose", "Enter")
        first, second = (re.escape(part) for part in FROM_BROWSER.split("\n"))
        term.expect(rf"^\d\d:\d\d {re.escape(bob_name)}: {first}\r?\n +{second}\r?$")

        term.type("/purge\n")
        bob.wait_for_ending("purged")
        assert term.wait() == EXIT_PURGED
        term.expect(r"^-- The room was purged by its creator")
    finally:
        term.close()
