"""The page facing a hostile member (issue 19): it repairs lone surrogates as the Python
client does, shows every control and format character as an escape, keeps its replay guard
bounded with the same verdicts as Python's, and survives a seeded random barrage.

The hostile member is tests/hostile_kit.py's: a raw WebSocket client with the link, sealing
whatever plaintext the test makes, through the real relay."""

from __future__ import annotations

import json
import os
import random
import unicodedata
from collections.abc import Callable

import pytest
from browser_kit import Person, Relay
from hostile_kit import END, IGNORED, MALFORMED, UNDECRYPTABLE, HostileMember, barrage

from pugfast.client.errors import MessageFormatError
from pugfast.client.message import decode_text

pytestmark = pytest.mark.browser

People = Callable[..., Person]
ESCAPED = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def shown_in_page(text: str) -> str:
    """How the page shows text, by docs/client.md: a line break stays one, every other
    control, format or separator character is its escape."""
    out = []
    for ch in text:
        if ch != "\n" and unicodedata.category(ch) in ESCAPED:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


PLAINTEXTS = [
    b'{"text":"X\\ud800Y","ts":1}',
    b'{"text":"\\udc00\\ud800 \\ud83d\\udc36 \\ud83d","ts":1}',
    '{"text":"raw \u202e\u2028 ok","ts":1}'.encode(),
    *MALFORMED,
]


def test_page_and_python_read_hostile_plaintexts_alike(people: People, relay: Relay) -> None:
    page = people("Tester").page
    page.goto(relay.url + "/")
    seen = page.evaluate(
        """async plaintexts => {
            const { decodeText } = await import('/static/js/message.js');
            return plaintexts.map(bytes => {
                try { return decodeText(new Uint8Array(bytes)).text; }
                catch (error) { return null; }
            });
        }""",
        [list(p) for p in PLAINTEXTS],
    )
    expected = []
    for plaintext in PLAINTEXTS:
        try:
            expected.append(decode_text(plaintext)[0])
        except MessageFormatError:
            expected.append(None)
    assert seen == expected
    assert seen[0] == "X\ufffdY" and seen[1] == "\ufffd\ufffd \U0001f436 \ufffd"


def test_the_pages_keys_stay_bounded_whatever_a_member_sends(people: People, relay: Relay) -> None:
    """Two key rings in the page exchange keys; then the hostile one sends 100,000 messages,
    each under a chain id of its own whose keys never come, and frames from member ids nobody
    announced: the receiver's heap does not grow with them."""
    page = people("Tester").page
    page.goto(relay.url + "/")
    cdp = page.context.new_cdp_session(page)
    page.evaluate(
        """async () => {
            const { KeyRing, announceCryptoKey } = await import('/static/js/senderkeys.js');
            const room = 'AAAAAAAAAAAAAAAAAAAAAA';
            const announce = await announceCryptoKey(new Uint8Array(32), room);
            const receiver = new KeyRing(room), hostile = new KeyRing(room);
            await receiver.init(announce);
            await hostile.init(announce);
            await receiver.start(1, [2]);
            await hostile.start(2, [1]);
            for (let round = 0; round < 3; round++) {
                for (const [id, from, to] of [[1, receiver, hostile], [2, hostile, receiver]]) {
                    for (const frame of from.outbox.splice(0)) await to.onFrame(id, frame, 0);
                }
            }
            window.receiver = receiver;
            window.hostileFrame = await hostile.seal(new Uint8Array(256));
        }"""
    )

    def heap() -> int:
        cdp.send("HeapProfiler.collectGarbage")
        return int(cdp.send("Runtime.getHeapUsage")["usedSize"])

    before = heap()
    result = page.evaluate(
        """async () => {
            const frame = window.hostileFrame.slice();
            const view = new DataView(frame.buffer);
            let unread = 0;
            for (let chain = 2; chain < 100002; chain++) {
                view.setUint32(2, chain);
                for (const o of await window.receiver.onFrame(2, frame, 0)) unread += o.type === 'unreadable';
            }
            let strangers = 0;
            for (let member = 10; member < 10010; member++) {
                strangers += (await window.receiver.onFrame(member, window.hostileFrame, 0)).length;
            }
            return { unread, strangers, present: [...window.receiver.present()] };
        }"""
    )
    grown = heap() - before
    assert result == {"unread": 100_000 - 64, "strangers": 10_000, "present": [2]}
    assert grown < 512 * 1024, f"the page's heap grew by {grown:,} bytes"


def hostile_seed() -> int:
    """PUGFAST_HOSTILE_SEED replays a run; otherwise a new seed each run, named on failure."""
    return int(os.environ.get("PUGFAST_HOSTILE_SEED") or random.SystemRandom().randrange(2**32))


@pytest.mark.parametrize("seed", [hostile_seed()])
def test_page_survives_a_random_hostile_member(people: People, relay: Relay, seed: int) -> None:
    alice = people("Alice")
    link = alice.create_room(relay)
    script = barrage(random.Random(seed), 100, 32768 - 10)
    hostile = HostileMember(link)
    try:
        alice.wait_for_notice(f"{hostile.name} joined.")
        hostile.exchange(others=1)
        alice.page.fill("#compose", "typing along")
        hostile.send_barrage(script)
        alice.page.wait_for_function(
            """end => [...document.querySelectorAll('#messages .message .text')]
                          .some(p => p.textContent === end)""",
            arg=END, timeout=60_000,
        )
        messages = alice.messages()
        shown = [m["text"] for m in messages if not m["failed"]]
        assert shown == [shown_in_page(text) for text in [*script.shown(), END]], f"seed {seed}"
        assert sum(m["failed"] for m in messages) == script.count(UNDECRYPTABLE), f"seed {seed}"
        notices = alice.page.eval_on_selector_all("#messages .notice", "ls => ls.map(li => li.textContent)")
        assert sum("repeated or out-of-order" in n for n in notices) == script.count(IGNORED), f"seed {seed}"
        whole = str(alice.page.text_content("#messages"))
        raw = [ch for ch in whole if ch != "\n" and unicodedata.category(ch) in ESCAPED]
        assert raw == [], f"seed {seed}: raw characters on the page: {[hex(ord(ch)) for ch in raw]}"
        # The same, by the browser's own Unicode tables.
        raw_pattern = r"/[\p{Cf}\p{Zl}\p{Zp}]|(?!\n)\p{Cc}/u"
        assert alice.page.evaluate(
            f"() => {raw_pattern}.test(document.getElementById('messages').textContent)"
        ) is False, f"seed {seed}"
        # Still in the room, the half-typed text intact, and it still talks.
        assert alice.page.is_visible("#room") and alice.page.input_value("#compose") == "typing along"
        alice.page.press("#compose", "Enter")
        while not isinstance(frame := hostile.ws.recv(timeout=15), bytes):
            assert json.loads(frame)["type"] in ("join", "leave"), frame
        assert len(frame) > 4 + 29
    finally:
        hostile.close()
