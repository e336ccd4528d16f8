"""The sender-key ring (pugfast/client/senderkeys.py) without a network: members exchange
frames through a few lines standing in for the relay, which hands every frame to every other
member with the sender's id, as docs/protocol.md §6.3 says. Forward secrecy, the departed member,
replays, substituted keys, messages ahead of their keys."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pugfast.client.senderkeys import (
    KeyProblem,
    KeyRing,
    Readable,
    Unreadable,
    announce_key,
    decode_frame,
    message_cipher,
    pair_key,
    step,
)

ROOM = "AAAAAAAAAAAAAAAAAAAAAA"
LINK_KEY = bytes(range(32))


class Room:
    """Members and a relay that delivers every frame to everyone else, in order."""

    def __init__(self) -> None:
        self.rings: dict[int, KeyRing] = {}
        self.seen: dict[int, list[object]] = {}
        self.recording: list[tuple[int, bytes]] = []
        self.next_id = 1
        self.now = 0.0

    def join(self) -> int:
        member = self.next_id
        self.next_id += 1
        ring = KeyRing(LINK_KEY, ROOM)
        for other in self.rings.values():
            other.on_join(member)
        self.rings[member] = ring
        self.seen[member] = []
        ring.start(member, [m for m in self.rings if m != member])
        self.pump()
        return member

    def leave(self, member: int) -> KeyRing:
        ring = self.rings.pop(member)
        for other in self.rings.values():
            other.on_leave(member)
        self.pump()
        return ring

    def deliver(self, sender: int, frame: bytes) -> None:
        self.recording.append((sender, frame))
        for member, ring in list(self.rings.items()):
            if member != sender:
                self.seen[member] += ring.on_frame(sender, frame, self.now)

    def pump(self) -> None:
        for ring in self.rings.values():
            ring.flush()
        while any(r.outbox or r.owes() for r in self.rings.values()):
            for ring in self.rings.values():
                ring.flush()
            for member, ring in list(self.rings.items()):
                frames, ring.outbox = ring.outbox, []
                for frame in frames:
                    self.deliver(member, frame)

    def say(self, member: int, text: str) -> set[int]:
        ring = self.rings[member]
        ring.flush()
        reached = ring.holders()
        self.deliver(member, ring.seal(text.encode().ljust(256)))
        self.pump()
        return reached

    def texts(self, member: int) -> list[str]:
        return [o.plaintext.decode().rstrip() for o in self.seen[member] if isinstance(o, Readable)]


def test_members_read_each_other_from_their_join_on() -> None:
    room = Room()
    a = room.join()
    assert room.say(a, "nobody here") == set()
    b = room.join()
    assert room.say(a, "hello b") == {b}
    assert room.say(b, "hello a") == {a}
    c = room.join()
    assert room.say(c, "hi all") == {a, b}
    assert room.texts(b) == ["hello b", "hi all"]
    assert room.texts(a) == ["hello a", "hi all"]
    assert room.texts(c) == []


def test_a_member_that_left_cannot_read_what_follows() -> None:
    room = Room()
    a, b, c = room.join(), room.join(), room.join()
    room.say(a, "before")
    gone = room.leave(c)
    after = len(room.recording)
    room.say(a, "after c left")
    room.say(b, "also after")
    # c keeps its whole state and gets the recording of everything sent since.
    outcomes = [o for sender, frame in room.recording[after:] for o in gone.on_frame(sender, frame, 0.0)]
    assert not any(isinstance(o, Readable) for o in outcomes), outcomes
    assert room.texts(b)[-1] == "after c left"


def test_the_link_alone_reads_nothing_of_a_recording() -> None:
    room = Room()
    a, b = room.join(), room.join()
    room.say(a, "secret one")
    room.say(b, "secret two")
    # Whoever has the link and the recording, but joined nothing: a fresh ring reads no message.
    stranger = KeyRing(LINK_KEY, ROOM)
    stranger.start(99, [])
    outcomes = [o for s, f in room.recording for o in stranger.on_frame(s, f, 0.0)]
    assert not any(isinstance(o, Readable) for o in outcomes)


def test_a_replayed_message_is_refused() -> None:
    room = Room()
    a, b = room.join(), room.join()
    room.say(a, "once")
    sender, frame = room.recording[-1]
    room.deliver(sender, frame)
    assert room.seen[b][-1] == Unreadable(a, "repeated")
    room.deliver(b + 5, frame)  # attributed to a member id nobody announced: refused
    assert room.seen[b][-1] == Unreadable(b + 5, "failed")


def test_a_substituted_public_key_is_detected() -> None:
    room = Room()
    a = room.join()
    ring_b = KeyRing(LINK_KEY, ROOM)
    room.rings[2] = ring_b
    room.seen[2] = []
    room.rings[a].on_join(2)
    ring_b.start(2, [a])
    (announce,) = ring_b.outbox
    ring_b.outbox.clear()
    swapped = bytearray(announce)
    swapped[2 + 12] ^= 0x01  # a bit of the public key, inside the sealed announcement
    room.deliver(2, bytes(swapped))
    assert room.seen[a] == [KeyProblem(2, "unauthenticated")]
    # A key sealed under the link but for another member id does not pass either.
    room.rings[a].on_join(3)
    room.deliver(3, announce)
    assert room.seen[a][-1] == KeyProblem(3, "unauthenticated")


def test_a_message_ahead_of_its_keys_waits_then_is_reported() -> None:
    ring = KeyRing(LINK_KEY, ROOM)
    ring.start(1, [2])
    other = KeyRing(LINK_KEY, ROOM)
    other.start(2, [1])
    frame = other.seal(b"early".ljust(256))
    assert ring.on_frame(2, frame, now=0.0) == []
    assert ring.tick(1.0) == []
    assert ring.tick(6.0) == [Unreadable(2, "no-keys")]


def test_frames_are_what_the_spec_says() -> None:
    ring = KeyRing(LINK_KEY, ROOM, private=bytes(32 * [7]))
    ring.start(1, [])
    ring.flush()
    keys = decode_frame(ring.outbox[0])
    assert len(ring.outbox[0]) == 2 + 60 + 2 and keys.entries == ()
    assert len(announce_key(LINK_KEY, ROOM)) == 32
    message = ring.seal(os.urandom(256))
    assert message[:2] == b"\x02\x02" and len(message) == 2 + 4 + 4 + 256 + 16


# -- the documented test vectors (docs/client.md, "Version 2 test vectors") ----------------------


def documented_vectors() -> dict[str, str]:
    """The rows and frames of docs/client.md's version 2 vectors, read from the page itself."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "client.md").read_text()
    section = doc.split("### Version 2 test vectors", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| ([A-Za-z0-9' ]+?)(?: \(b64u\))? \| `([A-Za-z0-9_-]+)` \|$", section, re.M))
    frames = ["".join(block.split()) for block in re.findall(r"```\n(.*?)```", section, re.S)]
    assert len(rows) == 8 and len(frames) == 2, "docs/client.md: the version 2 vectors lost rows"
    return {**rows, "keys frame": frames[0], "message frame": frames[1]}


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_the_documented_vectors_hold_in_python() -> None:
    vectors = documented_vectors()
    one = KeyRing(LINK_KEY, ROOM, private=bytes([0x11] * 32), chain_key=bytes([0x33] * 32))
    two = KeyRing(LINK_KEY, ROOM, private=bytes([0x22] * 32))
    assert announce_key(LINK_KEY, ROOM).hex() == vectors["announce key"]
    assert one.public == b64u_decode(vectors["member 1's public key"])
    assert two.public == b64u_decode(vectors["member 2's public key"])
    shared = X25519PrivateKey.from_private_bytes(bytes([0x11] * 32)).exchange(
        X25519PublicKey.from_public_bytes(two.public))
    assert pair_key(shared, ROOM, 1, one.public, 2, two.public).hex() == vectors["pair key of 1 and 2"]
    message_key, following = step(bytes([0x33] * 32))
    assert message_key.hex() == vectors["first message key"]
    assert following.hex() == vectors["next chain key"]
    aes, iv = message_cipher(message_key)
    assert (aes.hex(), iv.hex()) == (vectors["its AES key"], vectors["its IV"])
    # Member 1 seals the documented message byte for byte (no randomness in a message frame).
    one.me = 1
    padded = b'{"text":"hello","ts":1700000000000}'.ljust(256)
    assert one.seal(padded) == b64u_decode(vectors["message frame"])
    # Member 2 reads both documented frames.
    two.start(2, [1])
    outcomes = two.on_frame(1, b64u_decode(vectors["keys frame"]), 0.0)
    outcomes += two.on_frame(1, b64u_decode(vectors["message frame"]), 0.0)
    assert outcomes == [Readable(1, padded)]
