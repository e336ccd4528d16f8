"""A hostile room member, for tests of what the clients show: it holds the link and takes
part in the key exchange (so its messages decrypt), then sends whatever plaintext a test
makes, through a real relay.

``HostileMember`` joins with a raw WebSocket (the websockets library, not the client under
test) and keeps its keys with the Python client's sans-I/O key ring (the receivers are what
is tested). ``barrage`` makes a seeded random script of hostile steps and says, by the rules
of docs/client.md written out again here (not by calling the clients), what a receiver must
show for each: the text (lone surrogates repaired), "could not be decrypted", or "ignored"
(an earlier frame sent again).
"""

from __future__ import annotations

import json
import random
import time
import unicodedata
from dataclasses import dataclass

from websockets.sync.client import connect

from pugfast.client import Link, parse_link
from pugfast.client.senderkeys import KeyRing

SHOWN, UNDECRYPTABLE, IGNORED = "shown", "undecryptable", "ignored"
ESCAPED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}

# Format characters (Cf) from across the planes, the separators, and the controls.
FORMAT = [0xAD, 0x600, 0x605, 0x61C, 0x6DD, 0x70F, 0x180E, 0x200B, 0x200C, 0x200D, 0x200E,
          0x200F, *range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x2070), 0xFEFF,
          0xFFF9, 0xFFFA, 0xFFFB, 0x110BD, 0x1D173, 0x1D17A, 0xE0001, 0xE0020, 0xE0041, 0xE007F]
SEPARATORS = [0x2028, 0x2029]
CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
PLAIN = "abc xyz ABC 0123 .,:;!? -- \\ / héllo naïve Grüße 日本語 한국어 עברית العربية 🐶 👍🏽 🇩🇪 e\u0301"


MALFORMED = [
    b"\xff\xfe not utf-8",
    b"not json",
    b"[1,2]",
    b'{"text":5,"ts":1}',
    b'{"text":"x","ts":-1}',
    b'{"text":"x"}',
    b'{"text":"x","ts":Infinity}',
    b'{"text":"\xed\xa0\x80 a surrogate as bytes","ts":1}',
]


@dataclass(frozen=True)
class Sent:
    """One step of a barrage and what a receiver must make of it: a plaintext sealed under
    the member's chain (SHOWN or UNDECRYPTABLE), a message sealed and never sent (``skip``:
    nothing, the next one jumps ahead in the chain), or an earlier frame sent again
    (``replay``: IGNORED)."""

    plaintext: bytes
    outcome: str  # SHOWN, UNDECRYPTABLE, IGNORED, or "" for a skip
    text: str = ""  # for SHOWN: the text a receiver shows (repaired)
    replay: int = -1  # for IGNORED: which earlier step's frame is sent again
    skip: bool = False


def repaired(text: str) -> str:
    """``text`` as a receiver reads it from JSON: an escaped surrogate pair is one character,
    a lone surrogate U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def shown_one_line(text: str) -> str:
    """How pipe mode (and a terminal row) writes text, by docs/client.md's rules."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif unicodedata.category(ch) in ESCAPED_CATEGORIES:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def random_char(rng: random.Random) -> str:
    pool = rng.random()
    if pool < 0.35:
        return rng.choice(PLAIN)
    if pool < 0.5:
        return chr(rng.choice(FORMAT))
    if pool < 0.6:
        return chr(rng.choice(CONTROLS + SEPARATORS))
    if pool < 0.65:
        return chr(rng.randint(0xD800, 0xDFFF))  # a lone surrogate (most of the time)
    if pool < 0.8:
        return chr(rng.randint(0, 0xFFFF))
    return chr(rng.randint(0x10000, 0x10FFFF))  # every plane past the first


def random_text(rng: random.Random, max_bytes: int) -> str:
    kind = rng.random()
    if kind < 0.1:
        return ""
    if kind < 0.8:
        length = rng.randint(1, 40)
    elif kind < 0.95:
        length = rng.randint(40, 400)
    else:
        length = max_bytes  # cut to fit below
    return "".join(random_char(rng) for _ in range(length))


def encode(fields: dict[str, object], rng: random.Random) -> bytes:
    """JSON as either client could write it: non-ASCII raw or escaped; a lone surrogate always
    escaped (\\udXXX), as JSON.stringify writes it."""
    if rng.random() < 0.5:
        return json.dumps(fields).encode("ascii")
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Barrage:
    """A script of hostile steps."""

    sent: list[Sent]

    def shown(self) -> list[str]:
        return [s.text for s in self.sent if s.outcome == SHOWN]

    def count(self, outcome: str) -> int:
        return sum(s.outcome == outcome for s in self.sent)


END = "END OF BARRAGE"


def barrage(rng: random.Random, count: int, max_plaintext: int) -> Barrage:
    """``count`` hostile steps, each plaintext at most ``max_plaintext`` bytes, with their
    outcomes: mostly well-formed messages of random text (shown), some plaintexts that are not
    the message format (undecryptable), earlier frames sent again (ignored), and messages
    sealed but never sent, so the next jumps ahead in the chain (nothing; the next is shown).
    """
    sent: list[Sent] = []
    for _ in range(count):
        roll = rng.random()
        sealed_before = [i for i, s in enumerate(sent) if not s.skip and s.outcome != IGNORED]
        if roll < 0.07:
            sent.append(Sent(rng.choice(MALFORMED), UNDECRYPTABLE))
            continue
        if roll < 0.12 and sealed_before:
            sent.append(Sent(b"", IGNORED, replay=rng.choice(sealed_before)))
            continue
        text = random_text(rng, max_plaintext)
        fields: dict[str, object] = {"text": text, "ts": int(time.time() * 1000)}
        plaintext = encode(fields, rng)
        while len(plaintext) > max_plaintext:
            text = text[: len(text) * 3 // 4]
            fields["text"] = text
            plaintext = encode(fields, rng)
        if roll < 0.16:
            sent.append(Sent(plaintext, "", skip=True))
        else:
            sent.append(Sent(plaintext, SHOWN, repaired(text)))
    return Barrage(sent)


def b64u(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def bucket(length: int) -> int:
    size = 256
    while size < length:
        size *= 2
    return size


class HostileMember:
    """A member that seals any plaintext it is given under its own sender key (protocol
    version 2): it joins, exchanges keys with everyone present, then sends what it is told."""

    def __init__(self, link: Link | str) -> None:
        self.link = parse_link(link) if isinstance(link, str) else link
        self._connection = connect(self.link.websocket_url, max_size=None)
        self.ws = self._connection.__enter__()
        self.ws.send(json.dumps({"type": "join", "secret": self.link.secret}))
        while True:
            welcome = json.loads(self.ws.recv(timeout=15))
            if welcome.get("type") == "welcome":
                break
        self.id: int = welcome["you"]["id"]
        self.name: str = welcome["you"]["name"]
        self.ring = KeyRing(self.link.key, self.link.room)
        self.ring.start(self.id, [m["id"] for m in welcome["members"] if m["id"] != self.id])
        self.frames: list[bytes] = []
        self._flush()
        self.exchange()

    def _flush(self) -> None:
        self.ring.flush()
        while self.ring.outbox:
            self.ws.send(self.ring.outbox.pop(0))

    def exchange(self, others: int = 0, timeout: float = 15.0) -> None:
        """Reads the room until at least ``others`` other members are present and every one
        present holds this member's key."""
        deadline = time.monotonic() + timeout
        ring = self.ring
        while len(ring.present()) < others or ring.awaiting() or ring.holders() != ring.present():
            left = deadline - time.monotonic()
            assert left > 0, "the hostile member's keys were not exchanged in time"
            try:
                frame = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            if isinstance(frame, bytes):
                self.ring.on_frame(int.from_bytes(frame[:4], "big"), frame[4:], time.monotonic())
            else:
                notice = json.loads(frame)
                if notice.get("type") == "join":
                    self.ring.on_join(notice["member"]["id"])
                elif notice.get("type") == "leave":
                    self.ring.on_leave(notice["member"]["id"])
            self._flush()

    def send(self, plaintext: bytes) -> bytes:
        """Seals ``plaintext`` (padded to its bucket) and sends it; returns the frame."""
        frame = self.ring.seal(plaintext.ljust(bucket(len(plaintext)), b" "))
        self.ws.send(frame)
        return frame

    def say(self, text: str) -> None:
        """Sends a well-formed message."""
        self.send(json.dumps({"text": text, "ts": int(time.time() * 1000)}).encode())

    def send_barrage(self, script: Barrage, pause: float = 0.035) -> None:
        """Plays ``script``, then says END, ``pause`` seconds apart (by default under the
        relay's rate limit of 30 a second)."""
        frames: list[bytes] = []
        for step in script.sent:
            if step.skip:
                frames.append(self.ring.seal(step.plaintext.ljust(bucket(len(step.plaintext)), b" ")))
                continue
            if step.replay >= 0:
                self.ws.send(frames[step.replay])
                frames.append(b"")
            else:
                frames.append(self.send(step.plaintext))
            time.sleep(pause)
        self.say(END)

    def close(self) -> None:
        self.ws.close()
