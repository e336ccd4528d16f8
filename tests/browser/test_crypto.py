"""The browser's encryption, checked from outside the browser.

The relay cannot be asked what it relayed, so the evidence is every WebSocket frame the
pages exchanged with it. Python's ``cryptography`` package decrypts what Chromium's Web
Crypto encrypted, and encrypts messages a page must accept or refuse: two AES-GCM
implementations agreeing on the format in docs/client.md. A proxy between one page and the
relay plays a dishonest relay that replays, re-attributes and corrupts ciphertexts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from browser_kit import (
    DESKTOP,
    PHONE,
    REPO,
    Link,
    Person,
    Relay,
    b64u_decode,
    b64u_encode,
    fingerprint_bits,
    fingerprint_words,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from playwright.sync_api import WebSocketRoute

pytestmark = pytest.mark.browser

People = Callable[..., Person]
BUCKETS = [256 * 2**i for i in range(9)]


def seal(key: bytes, room: str, message: dict[str, Any], *, version: int = 1) -> bytes:
    """Encrypts a message the way docs/client.md says a client must."""
    plaintext = json.dumps(message).encode()
    bucket = next(b for b in BUCKETS if b >= len(plaintext))
    iv = os.urandom(12)
    sealed = AESGCM(key).encrypt(iv, plaintext.ljust(bucket, b" "), room.encode("ascii"))
    return bytes([version]) + iv + sealed


def unseal(key: bytes, room: str, ciphertext: bytes) -> tuple[bytes, dict[str, Any]]:
    """Decrypts a client's ciphertext; returns the padded plaintext and the message."""
    assert ciphertext[0] == 0x01, "version byte"
    padded: bytes = AESGCM(key).decrypt(ciphertext[1:13], ciphertext[13:], room.encode("ascii"))
    return padded, json.loads(padded)


def test_relay_handles_only_ciphertext(people: People, relay: Relay) -> None:
    alice = people("Alice", viewport=DESKTOP)
    bob = people("Bob", viewport=PHONE)
    link = Link.parse(alice.create_room(relay))
    bob.open_link(link.text())
    bob.wait_in_room()
    alice.wait_for_notice(f"{bob.my_name()} joined.")

    said_by_alice = "the merger closes on Friday, tell nobody ✈"
    said_by_bob = "understood; shredding the memo"
    alice.say(said_by_alice)
    bob.wait_for_message(said_by_alice)
    bob.say(said_by_bob)
    alice.wait_for_message(said_by_bob)

    # Everything the relay received (frames sent by a page) or sent (frames a page received).
    binary = [f for p in (alice, bob) for d in ("sent", "received") for f in p.binary_frames(d)]
    text = [f.payload for p in (alice, bob) for f in p.frames if isinstance(f.payload, str)]
    secrets = [said_by_alice.encode(), said_by_bob.encode(), b"merger", b"shredding", link.key,
               link.key_text.encode()]
    for frame in binary:
        for secret in secrets:
            assert secret not in frame
    for frame_text in text:
        assert link.key_text not in frame_text
        assert "merger" not in frame_text and "shredding" not in frame_text

    # The relay passed Alice's message on unchanged, behind her 4-byte member id: version 2,
    # a message frame of 26 bytes more than its padded plaintext.
    (sent,) = [f for f in alice.binary_frames("sent") if f[:2] == b"\x02\x02"]
    (relayed,) = [f for f in bob.binary_frames("received") if f[4:6] == b"\x02\x02"]
    assert relayed[4:] == sent
    assert int.from_bytes(relayed[:4], "big") == 1, "the creator is the first member"
    assert len(sent) == 2 + 4 + 4 + 256 + 16
    # The link's key does not open it, whatever the bytes are taken for.
    for start in range(0, 40):
        for iv_at in range(start, start + 12):
            with pytest.raises(InvalidTag):
                AESGCM(link.key).decrypt(sent[iv_at : iv_at + 12], sent[iv_at + 12 :], link.room.encode())


def test_page_refuses_what_a_dishonest_relay_forges(people: People, relay: Relay) -> None:
    alice = people("Alice", viewport=DESKTOP)
    bob = people("Bob", viewport=DESKTOP)
    link = Link.parse(alice.create_room(relay))

    # Bob's connection passes through a proxy that records what the relay sends him and
    # lets the test inject frames of its own, as a dishonest relay could.
    routes: list[WebSocketRoute] = []
    from_relay: list[bytes] = []

    def proxy(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def forward(message: str | bytes) -> None:
            if isinstance(message, bytes):
                from_relay.append(message)
            route.send(message)

        server.on_message(forward)
        routes.append(route)

    bob.page.route_web_socket(re.compile(r"/ws$"), proxy)
    bob.open_link(link.text())
    bob.wait_in_room()
    (route,) = routes
    alice_name = alice.my_name()
    alice.wait_for_notice(f"{bob.my_name()} joined.")

    alice.say("pay the invoice")
    bob.wait_for_message("pay the invoice")
    (original,) = [f for f in from_relay if f[4:6] == b"\x02\x02"]
    sender, frame = original[:4], original[4:]

    def inject(data: bytes) -> None:
        route.send(data)

    def shown() -> list[tuple[str, str]]:
        return [(m["sender"], m["text"]) for m in bob.messages() if not m["failed"]]

    # A replay of the same frame is dropped, and Bob is told.
    inject(original)
    bob.wait_for_notice(f"A repeated or out-of-order message from {alice_name} was ignored.")
    # Moved to a later iteration of her chain, or corrupted too: "could not be decrypted",
    # never text (an earlier iteration would be a replay, as above).
    ahead = bytearray(frame)
    ahead[9] += 1
    flipped = bytearray(ahead)
    flipped[9] += 1
    flipped[20] ^= 0x01
    for data in (bytes(ahead), bytes(flipped)):
        inject(sender + data)
    bob.page.wait_for_function(
        "() => document.querySelectorAll('#messages .message.undecryptable').length === 2"
    )
    # A message sealed the old way (version 1, under the link's key) is not read: the room
    # needs forward secrecy. Bob is told that its sender's client is too old.
    old = {"text": "forged", "ts": int(time.time() * 1000), "sid": b64u_encode(os.urandom(8)), "n": 1}
    inject(sender + seal(link.key, link.room, old))
    bob.wait_for_notice(f"{alice_name} uses an older client, which cannot take part in this room: "
                        "they need a newer one.")
    assert "forged" not in (bob.page.text_content("#messages") or "")
    assert shown() == [(alice_name, "pay the invoice")]
    # The genuine sender keeps working alongside.
    alice.say("second real message")
    bob.wait_for_message("second real message")


def documented_vector() -> dict[str, str]:
    """The test vector in docs/client.md, read from the page itself so the two cannot drift."""
    doc = (REPO / "docs" / "client.md").read_text()
    section = doc.split("### Version 1 test vector", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())

    def find(pattern: str, text: str) -> str:
        match = re.search(pattern, text)
        assert match, f"docs/client.md: the test vector has no match for {pattern}"
        return match.group(1)

    return {
        "key": find(r"link text `([A-Za-z0-9_-]{43})`", flat),
        "room": find(r"room id `([A-Za-z0-9_-]{22})`", flat),
        "plaintext": find(r"plaintext `(\{.*?\})`", flat),
        "ciphertext": "".join(find(r"```\s*([A-Za-z0-9_\s-]+?)\s*```", section).split()),
        "fingerprint": find(r"fingerprint is `([a-z ]+)`", flat),
    }


def test_documented_test_vector_holds_in_python_and_in_the_browser(people: People, relay: Relay) -> None:
    vector = documented_vector()
    key = b64u_decode(vector["key"])
    assert key == bytes(range(32))
    iv = bytes(range(12))
    padded = vector["plaintext"].encode().ljust(256, b" ")
    expected = bytes([1]) + iv + AESGCM(key).encrypt(iv, padded, vector["room"].encode())
    assert b64u_encode(expected) == vector["ciphertext"]

    page = people("Tester").page
    page.goto(relay.url + "/")
    seen = page.evaluate(
        """async v => {
            const { b64uDecode } = await import('/static/js/encoding.js');
            const { importRoomKey, decrypt, fingerprint } = await import('/static/js/crypto.js');
            const { decodeMessage } = await import('/static/js/message.js');
            const raw = b64uDecode(v.key);
            const key = await importRoomKey(raw);
            const message = decodeMessage(await decrypt(key, v.room, b64uDecode(v.ciphertext)));
            return { message, fingerprint: (await fingerprint(raw, v.room)).join(' ') };
        }""",
        vector,
    )
    assert seen["message"] == json.loads(vector["plaintext"])
    assert seen["fingerprint"] == vector["fingerprint"] == " ".join(fingerprint_words(key, vector["room"]))


def documented_fingerprints() -> list[tuple[str, str, str, str]]:
    """The rows of the fingerprint table in docs/client.md: key, room id, bits (hex), words."""
    doc = (REPO / "docs" / "client.md").read_text()
    section = doc.split("\n## Key fingerprint\n", 1)[1].split("\n## ", 1)[0]
    row = r"^\| `([A-Za-z0-9_-]{43})`[^|]*\| `([A-Za-z0-9_-]{22})` \| `([0-9a-f]{32})` \| `([a-z ]+)` \|$"
    rows = re.findall(row, section, re.MULTILINE)
    assert len(rows) >= 2, "docs/client.md: the fingerprint table has lost its rows"
    return rows


def test_fingerprint_is_version_2_in_python_and_in_the_browser(people: People, relay: Relay) -> None:
    documented = documented_fingerprints()
    for key_text, room, bits, words in documented:
        key = b64u_decode(key_text)
        assert fingerprint_bits(key, room).hex() == bits
        assert " ".join(fingerprint_words(key, room)) == words
    # Random keys and room ids as well, so every bit of the cut into words is exercised.
    cases = [(key_text, room) for key_text, room, _, _ in documented]
    cases += [(b64u_encode(os.urandom(32)), b64u_encode(os.urandom(16))) for _ in range(6)]

    page = people("Tester").page
    page.goto(relay.url + "/")
    seen = page.evaluate(
        """async cases => {
            const { b64uDecode } = await import('/static/js/encoding.js');
            const { fingerprint } = await import('/static/js/crypto.js');
            const out = [];
            for (const [key, room] of cases) out.push(await fingerprint(b64uDecode(key), room));
            return out;
        }""",
        cases,
    )
    assert seen == [fingerprint_words(b64u_decode(key), room) for key, room in cases]
    assert all(len(words) == 9 for words in seen)


def test_sha256_in_javascript_matches_web_crypto_and_hashlib(people: People, relay: Relay) -> None:
    page = people("Tester").page
    page.goto(relay.url + "/")
    lengths = [*range(0, 130), 183, 255, 256, 257, 1000]
    result = page.evaluate(
        """async lengths => {
            const { sha256, PrefixHasher, wordsToBytes } = await import('/static/js/sha256.js');
            const hex = b => Array.from(b, x => x.toString(16).padStart(2, '0')).join('');
            const out = [];
            for (const n of lengths) {
                const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff);
                const ours = hex(sha256(data));
                const theirs = hex(new Uint8Array(await crypto.subtle.digest('SHA-256', data)));
                // The proof-of-work path: a reused midstate over a prefix, then a suffix.
                const cut = Math.floor(n / 2);
                const end = Math.min(n, cut + 60);
                const hasher = new PrefixHasher(data.subarray(0, cut));
                hasher.digest(Uint8Array.of(1, 2, 3));
                const split = hex(wordsToBytes(hasher.digest(data.subarray(cut, end))));
                const whole = data.subarray(0, end);
                const splitRef = hex(new Uint8Array(await crypto.subtle.digest('SHA-256', whole)));
                out.push({ n, ours, theirs, split, splitRef });
            }
            return out;
        }""",
        lengths,
    )
    for row in result:
        data = bytes((i * 31 + row["n"]) & 0xFF for i in range(row["n"]))
        assert row["ours"] == row["theirs"] == hashlib.sha256(data).hexdigest(), row["n"]
        assert row["split"] == row["splitRef"], row["n"]


def test_proof_of_work_worker_finds_a_valid_nonce(people: People, relay: Relay) -> None:
    page = people("Tester").page
    page.goto(relay.url + "/")
    token = "v1.test-token:with:colons/and+odd=chars" * 3
    difficulty = 14
    nonce = page.evaluate(
        """async ([token, difficulty]) => {
            const { solveChallenge } = await import('/static/js/pow.js');
            return solveChallenge({ token, difficulty });
        }""",
        [token, difficulty],
    )
    assert re.fullmatch(r"0|[1-9][0-9]{0,19}", nonce)
    digest = int.from_bytes(hashlib.sha256(f"{token}:{nonce}".encode("ascii")).digest(), "big")
    assert digest >> (256 - difficulty) == 0
    # It is the first such nonce: the search counts up from 0.
    for smaller in range(int(nonce)):
        h = int.from_bytes(hashlib.sha256(f"{token}:{smaller}".encode()).digest(), "big")
        assert h >> (256 - difficulty) != 0


def test_create_shows_progress_and_can_be_cancelled(people: People, relay: Relay) -> None:
    alice = people("Alice", viewport=PHONE)
    # A challenge no browser will solve in a test's lifetime, so there is time to cancel.
    alice.page.route(
        "**/api/challenge",
        lambda route: route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps({"token": "t" * 40, "difficulty": 48, "expires": 0}),
        ),
    )
    created: list[str] = []
    alice.page.on("request", lambda r: created.append(r.url) if "/api/rooms" in r.url else None)
    alice.open_home(relay)
    alice.page.click("#create")
    alice.page.wait_for_selector("#working:not([hidden])")
    alice.page.wait_for_function("() => document.querySelector('#work-progress').value > 0")
    assert re.search(r"attempts of about", alice.page.text_content("#work-detail") or "")
    assert alice.page.evaluate("document.activeElement.id") == "cancel"
    alice.screenshot("home-working")
    alice.page.keyboard.press("Enter")
    alice.page.wait_for_selector("#working", state="hidden")
    assert alice.page.text_content("#create-status") == "Cancelled. No room was created."
    assert alice.page.is_enabled("#create")
    assert created == []
