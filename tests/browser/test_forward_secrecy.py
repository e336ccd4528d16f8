"""Forward secrecy (protocol version 2), the page and the Python client together, through a
real relay and, where a test needs to see or change frames, a man in the middle on loopback
(tests/relay_proxy.py): the documented vectors in the browser; a recording and the link read
nothing; a swapped key is detected and said in both clients; who a message reaches is said
in both clients; rooms of 2, 10 and 64 members mixing the page and Python, with joins and
leaves mid-conversation."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from browser_kit import Link, Person, Relay, b64u_decode, fingerprint_bits
from client_kit import ChatProcess, Peer
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from relay_proxy import RelayProxy
from test_client_senderkeys import documented_vectors

from pugfast.client import Message, Room, create_room
from pugfast.client.senderkeys import announce_key, hkdf

pytestmark = pytest.mark.browser

People = Callable[..., Person]


def new_room(relay: Relay, **fields: int) -> Link:
    """A room made with the library (its proof of work included), which nobody has joined."""
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs an event loop here
        made = pool.submit(asyncio.run, create_room(relay.url, **fields)).result(60)
    return Link.parse(str(made))


@pytest.fixture
def proxy(relay: Relay) -> Iterator[RelayProxy]:
    made = RelayProxy(relay.url)
    yield made
    made.close()


def test_documented_vectors_hold_in_the_browser(people: People, relay: Relay) -> None:
    vectors = documented_vectors()
    page = people("Tester").page
    page.goto(relay.url + "/")
    seen = page.evaluate(
        """async v => {
            const sk = await import('/static/js/senderkeys.js');
            const { b64uDecode, b64uEncode } = await import('/static/js/encoding.js');
            const hex = b => Array.from(b, x => x.toString(16).padStart(2, '0')).join('');
            const room = 'AAAAAAAAAAAAAAAAAAAAAA';
            const link = Uint8Array.from({ length: 32 }, (_, i) => i);
            const pair = async (d, x) => ({
                privateKey: await crypto.subtle.importKey('jwk', { kty: 'OKP', crv: 'X25519', d, x },
                                                          { name: 'X25519' }, false, ['deriveBits']),
                publicKey: await crypto.subtle.importKey('raw', b64uDecode(x), { name: 'X25519' }, true, []),
            });
            const d1 = b64uEncode(new Uint8Array(32).fill(0x11));
            const d2 = b64uEncode(new Uint8Array(32).fill(0x22));
            const one = new sk.KeyRing(room), two = new sk.KeyRing(room);
            const announce = await sk.announceCryptoKey(link, room);
            await one.init(announce, { keyPair: await pair(d1, v["member 1's public key"]),
                                       chainKey: new Uint8Array(32).fill(0x33) });
            await two.init(announce, { keyPair: await pair(d2, v["member 2's public key"]) });
            const keys1 = await pair(d1, v["member 1's public key"]);
            const shared = new Uint8Array(await crypto.subtle.deriveBits(
                { name: 'X25519', public: (await pair(d2, v["member 2's public key"])).publicKey },
                keys1.privateKey, 256));
            const pairKey = await sk.pairKey(shared, room, 1, one.publicKey, 2, two.publicKey);
            const [messageKey, next] = await sk.step(new Uint8Array(32).fill(0x33));
            const [aes, iv] = await sk.messageCipher(messageKey);
            one.me = 1;
            const padded = new Uint8Array(256).fill(0x20);
            padded.set(new TextEncoder().encode('{"text":"hello","ts":1700000000000}'));
            const sealed = b64uEncode(await one.seal(padded));
            await two.start(2, [1]);
            const outcomes = [...await two.onFrame(1, b64uDecode(v['keys frame']), 0),
                              ...await two.onFrame(1, b64uDecode(v['message frame']), 0)];
            return {
                announce: hex(await sk.announceKey(link, room)),
                pub1: b64uEncode(one.publicKey), pub2: b64uEncode(two.publicKey),
                pair: hex(pairKey), messageKey: hex(messageKey), next: hex(next), aes: hex(aes), iv: hex(iv),
                sealed,
                read: outcomes.map(o => o.type === 'readable'
                                   ? new TextDecoder().decode(o.plaintext).trim() : o.type),
            };
        }""",
        vectors,
    )
    assert seen == {
        "announce": vectors["announce key"],
        "pub1": vectors["member 1's public key"],
        "pub2": vectors["member 2's public key"],
        "pair": vectors["pair key of 1 and 2"],
        "messageKey": vectors["first message key"],
        "next": vectors["next chain key"],
        "aes": vectors["its AES key"],
        "iv": vectors["its IV"],
        "sealed": vectors["message frame"],
        "read": ['{"text":"hello","ts":1700000000000}'],
    }


def every_key_the_link_yields(link: Link) -> list[bytes]:
    """The link's key, and every key derived from it that anyone could compute."""
    keys = [link.key, announce_key(link.key, link.room), fingerprint_bits(link.key, link.room),
            hashlib.sha256(link.key).digest(), b64u_decode(link.secret)]
    for label in (b"pugfast/2 announce key", b"pugfast/2 pair", b"pugfast/2 sender key",
                  b"pugfast/2 message key", b"pugfast/2 message", b""):
        for salt in (link.room.encode(), b""):
            keys.append(hkdf(link.key, salt, label))
    return [k for k in keys if len(k) in (16, 32)]


def open_anyhow(keys: list[bytes], aads: list[bytes | None], frame: bytes) -> Iterator[bytes]:
    """Every plaintext any of ``keys`` opens from ``frame``: the IV at any offset in its first
    40 bytes, the sealed part to the end, with no associated data, the room id, or the labels
    of docs/client.md."""
    for key in keys:
        aead = AESGCM(key)
        for at in range(0, min(40, len(frame) - 28)):
            for aad in aads:
                try:
                    yield aead.decrypt(frame[at : at + 12], frame[at + 12 :], aad)
                except InvalidTag:
                    continue


def test_a_recording_and_the_link_read_nothing_after_everyone_left(
    people: People, relay: Relay, proxy: RelayProxy
) -> None:
    link = new_room(relay)
    bob, carol = people("Bob"), people("Carol")
    for person in (bob, carol):
        person.open_link(proxy.link(link.text()))
        person.wait_in_room()
    python = Peer(proxy.link(link.text()))
    said = ["the merger closes on Friday", "shred the memo", "nobody must know", "from python"]
    bob.wait_for_notice(f"{python.room.me.name} joined.")
    carol.wait_for_notice(f"{python.room.me.name} joined.")
    bob.say(said[0])
    carol.wait_for_message(said[0])
    carol.say(said[1])
    bob.wait_for_message(said[1])
    bob.say(said[2])
    python.call(python.room.send, said[3])
    carol.wait_for_message(said[3])
    texts = [e.text for e in (python.next(Message), python.next(Message), python.next(Message))]
    assert texts == said[:3]
    python.close()
    for person in (bob, carol):
        person.page.close()
    # Everything the relay sent to these members, and the whole link: no message in it opens.
    assert len(proxy.recording) > 8
    keys = every_key_the_link_yields(link)
    for frame in proxy.recording:
        sender = frame[:4]
        aads = [None, link.room.encode(),
                *(label + link.room.encode() + sender + frame[6:14]
                  for label in (b"pugfast/2 message", b"pugfast/2 announce"))]
        for plaintext in open_anyhow(keys, aads, frame[4:]):
            for text in said:
                assert text.encode() not in plaintext
    # The link's announcement key does open the announcements: public keys only.
    announce = AESGCM(announce_key(link.key, link.room))
    opened = 0
    for frame in proxy.recording:
        if frame[4:6] == b"\x02\x01":
            sender = frame[:4]
            aad = b"pugfast/2 announce" + link.room.encode() + sender
            assert len(announce.decrypt(frame[6:18], frame[18:66], aad)) == 32
            opened += 1
    assert opened >= 4


def swap_announcements(frame: bytes) -> bytes:
    """A man in the middle's key in every announcement: what it can make without the link."""
    if frame[4:6] != b"\x02\x01":
        return frame
    return frame[:6] + os.urandom(12 + 48) + frame[66:]


def test_a_swapped_key_is_detected_and_said_in_the_page_and_the_terminal(
    people: People, relay: Relay, proxy: RelayProxy
) -> None:
    link = proxy.link(new_room(relay).text())
    bob = people("Bob")
    bob.open_link(link)
    bob.wait_in_room()
    proxy.tamper = swap_announcements
    chat = ChatProcess(link)
    try:
        chat_name = chat.joined()
        bob_name = bob.my_name()
        bob.wait_for_notice(f"{chat_name} joined.")
        warning = (f"Warning: the key {chat_name} announced could not be authenticated (the relay or "
                   "someone on the way may have changed it); their messages cannot be read.")
        bob.page.wait_for_function(
            """w => [...document.querySelectorAll('#messages .notice')]
                       .some(li => li.textContent.startsWith(w))""",
            arg=warning,
        )
        said = rf"^-- Warning: the key {re.escape(bob_name)} announced could not be authenticated"
        chat.stderr.wait_for(said)
        bob.say("for the terminal")
        chat.say("for the page")
        chat.stderr.wait_for(rf"^-- A message from {re.escape(bob_name)} could not be decrypted")
        bob.page.wait_for_function("() => document.querySelectorAll('#messages .undecryptable').length >= 1")
        assert "for the page" not in (bob.page.text_content("#messages") or "")
        assert chat.stdout.seen == []
        chat.close_input()
        chat.wait()
    finally:
        chat.kill()


def test_who_a_message_reaches_is_said_in_the_page_and_in_pipe_mode(
    people: People, relay: Relay, proxy: RelayProxy
) -> None:
    alice = people("Alice")
    link = Link.parse(alice.create_room(relay))
    # Alone: not delivered, in the page.
    alice.say("anyone here?")
    alice.page.wait_for_selector("#messages .message.mine.not-delivered")
    status = alice.page.text_content("#messages .not-delivered .delivery") or ""
    assert status.startswith("Not delivered: nobody else is here yet."), status

    # Bob's connection passes a man in the middle that lets through only Alice's keys: the
    # terminal client's never reach him, so his message can reach Alice but not the terminal.
    def only_alices_keys(frame: bytes) -> bytes | None:
        if frame[4:6] == b"\x02\x01" and int.from_bytes(frame[:4], "big") != 1:
            return None
        return frame

    proxy.tamper = only_alices_keys
    bob = people("Bob")
    bob.open_link(proxy.link(link.text()))
    bob.wait_in_room()
    chat = ChatProcess(link.text())
    try:
        chat_name = chat.joined()
        bob.wait_for_notice(f"{chat_name} joined.")
        bob.say("to everyone")
        bob.page.wait_for_selector("#messages .message.mine.partly-delivered", timeout=15_000)
        status = bob.page.text_content("#messages .partly-delivered .delivery") or ""
        expected = f"Not read by {chat_name}: their keys were still on the way. Read by 1 of 2."
        assert status == expected, status
        alice.wait_for_message("to everyone")
        chat.stderr.wait_for(r"^-- A message from .* could not be read: it was sent before its sender's keys")
        assert chat.stdout.seen == []
        chat.close_input()
        chat.wait()
    finally:
        chat.kill()
    # Pipe mode, alone in a room of its own: said on standard error.
    alone = ChatProcess(new_room(relay).text())
    try:
        alone.joined()
        alone.say("hello?")
        alone.stderr.wait_for(r"^-- Not delivered: nobody else is here yet\.", timeout=20)
        alone.close_input()
        alone.wait()
    finally:
        alone.kill()


def run_python_members(link: str, count: int, said: list[str], ready: threading.Event,
                       done: threading.Event, results: dict[str, object]) -> None:
    """``count`` library Rooms on one event loop: each says one line once everyone is in,
    then collects what it reads until ``done``."""

    async def main() -> None:
        rooms = [await Room.join(link) for _ in range(count)]
        read: dict[str, list[str]] = {room.me.name: [] for room in rooms}

        async def listen(room: Room) -> None:
            async for event in room:
                if isinstance(event, Message):
                    read[room.me.name].append(event.text)

        listeners = [asyncio.create_task(listen(room)) for room in rooms]
        results["names"] = [room.me.name for room in rooms]
        results["read"] = read  # filled in as they read, for the test to watch
        ready.set()
        while not results.get("go"):
            await asyncio.sleep(0.05)
        for room in rooms:
            await room.send(f"from {room.me.name}")
            said.append(f"from {room.me.name}")
        while not done.is_set():
            await asyncio.sleep(0.05)
        for room in rooms:
            await room.leave()
        await asyncio.gather(*listeners, return_exceptions=True)

    asyncio.run(main())


@pytest.mark.parametrize("size", [2, 10, 64])
def test_rooms_of_2_10_and_64_mixing_the_page_and_python(people: People, relay_factory: Callable[..., Relay],
                                                        size: int) -> None:
    relay = relay_factory("--pow-difficulty", "4", "--capacity-max", "64")
    alice = people("Alice")
    link = alice.create_room(relay, capacity=size)
    pages = [alice]
    if size > 2:
        bob = people("Bob")
        bob.open_link(link)
        bob.wait_in_room()
        pages.append(bob)
    said: list[str] = []
    ready, done = threading.Event(), threading.Event()
    results: dict[str, object] = {}
    python = threading.Thread(target=run_python_members,
                              args=(link, size - len(pages), said, ready, done, results), daemon=True)
    python.start()
    assert ready.wait(60)
    names = list(results["names"])  # type: ignore[call-overload]
    for page in pages:
        page.page.wait_for_function(
            "n => document.querySelectorAll('#members li').length === n", arg=size, timeout=60_000)
    # Everyone says one line once all are in; every member reads every other's.
    results["go"] = True
    for page in pages:
        page.say(f"from page {page.name}")
    for page in pages:
        wanted = [f"from {name}" for name in names] + [f"from page {o.name}" for o in pages if o is not page]
        page.page.wait_for_function(
            """wanted => {
                const shown = new Set([...document.querySelectorAll('#messages .message .text')]
                                      .map(p => p.textContent));
                return wanted.every(text => shown.has(text));
            }""",
            arg=wanted, timeout=60_000,
        )
    # And every Python member reads every other member's line (a line that came ahead of its
    # sender's keys waits for them, so this can take a moment on a busy machine).
    expected = {f"from page {p.name}" for p in pages}
    read = results["read"]
    assert isinstance(read, dict)

    def everyone_read() -> bool:
        return len(said) == len(names) and all(
            expected | {f"from {n}" for n in names if n != name} <= set(texts)
            for name, texts in list(read.items())
        )

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not everyone_read():
        time.sleep(0.2)
    done.set()
    python.join(60)
    for name, texts in read.items():
        assert expected <= set(texts), (name, texts)
        assert {f"from {n}" for n in names if n != name} <= set(texts), name
    # Mid-conversation: the Python members left; a newcomer joins; the page reads it and the
    # newcomer reads the page, and none of what was said before.
    newcomer = Peer(link)
    alice.wait_for_notice(f"{newcomer.room.me.name} joined.")
    alice.say("after the newcomer")
    event = newcomer.next(Message)
    assert isinstance(event, Message) and event.text == "after the newcomer"
    newcomer.call(newcomer.room.send, "hello from the newcomer")
    alice.wait_for_message("hello from the newcomer")
    newcomer.close()

