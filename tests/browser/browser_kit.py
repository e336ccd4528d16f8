"""What the browser tests share: the relay subprocess, people (browser contexts) and links.

Imported by conftest.py (fixtures) and the test modules (helpers and constants).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, ViewportSize

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
AXE_SOURCE = Path(__file__).with_name("vendor") / "axe.min.js"

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)
HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
MISSING = [
    what
    for what, present in (
        ("Chromium (no `chromium` on PATH, no /usr/bin/chromium)", CHROMIUM is not None),
        ("the playwright Python package", HAVE_PLAYWRIGHT),
    )
    if not present
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PHONE: ViewportSize = {"width": 360, "height": 740}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}

# Fast for tests, but not zero: the Web Worker really searches and the relay really checks.
TEST_POW_DIFFICULTY = 8
SERVER_START_TIMEOUT = 20.0
UI_TIMEOUT_MS = 10_000


# --- The relay ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Relay:
    """A running ``pugfast serve`` subprocess."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_relay(log_dir: Path, *flags: str) -> Iterator[Relay]:
    """Starts the relay with ``flags`` and stops it on exit; fails if it is not ready in time."""
    port = _free_port()
    log = log_dir / f"relay-{port}.log"
    command = [
        sys.executable, "-m", "pugfast", "serve",
        "--host", "127.0.0.1", "--port", str(port), *flags,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    relay = Relay(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the relay exited with {process.returncode}:\n{relay.output()}")
            try:
                with urllib.request.urlopen(relay.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the relay was not ready in {SERVER_START_TIMEOUT} s:\n{relay.output()}")
            time.sleep(0.1)
        yield relay
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- People ------------------------------------------------------------------------------


@dataclass
class Frame:
    """One WebSocket frame as the page saw it: sent to the relay, or received from it."""

    direction: str  # "sent" or "received"
    payload: bytes | str


@dataclass
class Person:
    """One browser context with one page, and what it saw."""

    name: str
    context: BrowserContext
    page: Page
    viewport: ViewportSize
    errors: list[str] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    expected_errors: list[re.Pattern[str]] = field(default_factory=list)

    def expect_error(self, pattern: str) -> None:
        """Tolerates console errors matching pattern (regular expression) for this person."""
        self.expected_errors.append(re.compile(pattern))

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected_errors)]

    def binary_frames(self, direction: str) -> list[bytes]:
        return [f.payload for f in self.frames if f.direction == direction and isinstance(f.payload, bytes)]

    # -- what people do --

    def open_home(self, relay: Relay) -> None:
        self.page.goto(relay.url + "/")
        self.page.wait_for_selector("#create:enabled")

    def create_room(self, relay: Relay, *, capacity: int | None = None, ttl: int | None = None) -> str:
        """Creates a room through the home page and returns the link, read from the clipboard
        after pressing "Copy link", the way a person would share it."""
        self.open_home(relay)
        if capacity is not None:
            self.page.fill("#capacity", str(capacity))
        if ttl is not None:
            self.page.select_option("#ttl", str(ttl))
        self.page.click("#create")
        self.wait_in_room()
        return self.copy_link()

    def copy_link(self) -> str:
        self.page.click("#copy-link")
        self.page.wait_for_selector("#copy-status:has-text('Link copied')")
        return str(self.page.evaluate("navigator.clipboard.readText()"))

    def open_link(self, link: str) -> None:
        self.page.goto(link)

    def wait_in_room(self) -> None:
        self.page.wait_for_selector("#room:not([hidden])")

    def wait_for_ending(self, ending: str) -> None:
        self.page.wait_for_selector(f"#ended[data-ending='{ending}']:not([hidden])")

    def say(self, text: str) -> None:
        self.page.fill("#compose", text)
        self.page.press("#compose", "Enter")

    def messages(self) -> list[dict[str, str]]:
        return list(
            self.page.eval_on_selector_all(
                "#messages .message",
                """items => items.map(li => ({
                    sender: li.querySelector('.sender').textContent,
                    time: li.querySelector('time').textContent,
                    text: li.querySelector('.text').textContent,
                    mine: li.classList.contains('mine'),
                    failed: li.classList.contains('undecryptable'),
                }))""",
            )
        )

    def wait_for_message(self, text: str) -> None:
        self.page.wait_for_function(
            """text => [...document.querySelectorAll('#messages .message .text')]
                         .some(p => p.textContent === text)""",
            arg=text,
        )

    def wait_for_notice(self, text: str) -> None:
        self.page.wait_for_function(
            """text => [...document.querySelectorAll('#messages .notice')]
                         .some(li => li.textContent === text)""",
            arg=text,
        )

    def member_names(self) -> list[str]:
        return list(self.page.eval_on_selector_all("#members li", "lis => lis.map(li => li.textContent)"))

    def fingerprint(self) -> list[str]:
        return list(self.page.eval_on_selector_all("#fingerprint li", "lis => lis.map(li => li.textContent)"))

    def my_name(self) -> str:
        return str(
            self.page.eval_on_selector(
                "#members li:has(.tag:text-is('you'))", "li => li.firstChild.textContent"
            )
        )

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}-{self.viewport['width']}x{self.viewport['height']}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


# --- Link and crypto helpers ---------------------------------------------------------------


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fingerprint_bits(key: bytes, room: str) -> bytes:
    """The 16 bytes behind a room's key fingerprint, version 2 (docs/client.md)."""
    salt = f"pugfast-fingerprint-v2:{room}".encode("ascii")
    return hashlib.pbkdf2_hmac("sha256", key, salt, 65536, 16)


def fingerprint_words(key: bytes, room: str) -> list[str]:
    """The nine words of a room's key fingerprint, version 2: the first 99 bits, 11 at a time,
    each an index into static/js/words.js (read as one JSON array, as other clients read it)."""
    text = (REPO / "static" / "js" / "words.js").read_text(encoding="utf-8")
    words = json.loads(text[text.index("[") : text.rindex("]") + 1])
    first99 = int.from_bytes(fingerprint_bits(key, room), "big") >> (128 - 99)
    return [words[(first99 >> (11 * (8 - i))) & 0x7FF] for i in range(9)]


@dataclass(frozen=True)
class Link:
    origin: str
    room: str
    key: bytes
    key_text: str
    secret: str

    @classmethod
    def parse(cls, link: str) -> Link:
        match = re.fullmatch(
            r"(https?://[^/]+)/r/([A-Za-z0-9_-]{22})#k=([A-Za-z0-9_-]{43})&s=([A-Za-z0-9_-]{22})",
            link,
        )
        assert match, f"not a room link: {link!r}"
        origin, room, key_text, secret = match.groups()
        return cls(origin, room, b64u_decode(key_text), key_text, secret)

    def text(self, *, key_text: str | None = None, secret: str | None = None) -> str:
        return f"{self.origin}/r/{self.room}#k={key_text or self.key_text}&s={secret or self.secret}"
