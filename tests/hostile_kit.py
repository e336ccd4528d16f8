"""A hostile room member, for tests of what the clients show: it holds the link (so its
ciphertexts authenticate) and sends whatever plaintext a test makes, through a real relay.

``HostileMember`` joins with a raw WebSocket (the websockets library, not the client under
test) and seals with PyCA's AES-GCM as docs/client.md says. ``barrage`` makes a seeded random
script of hostile messages and says, by the rules of docs/client.md written out again here
(not by calling the clients), what a receiver must show for each: the text (lone surrogates
repaired), "could not be decrypted", or "ignored" (a replay by the sid and counter rules).
"""

from __future__ import annotations

import json
import os
import random
import time
import unicodedata
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from websockets.sync.client import connect

from pugfast.client import Link, parse_link

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
    b'{"text":5,"ts":1,"sid":"AAAAAAAAAAA","n":1}',
    b'{"text":"x","ts":1,"sid":"short","n":1}',
    b'{"text":"x","ts":Infinity,"sid":"AAAAAAAAAAA","n":1}',
    b'{"text":"\xed\xa0\x80 a surrogate as bytes","ts":1,"sid":"AAAAAAAAAAA","n":1}',
]


@dataclass(frozen=True)
class Sent:
    """One ciphertext's plaintext and what a receiver must make of it."""

    plaintext: bytes
    outcome: str  # SHOWN, UNDECRYPTABLE or IGNORED
    text: str = ""  # for SHOWN: the text a receiver shows (repaired)


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
    """A script of hostile plaintexts, and the sid and counter that continue it (so a final,
    ordinary message under them is shown after everything else)."""

    sent: list[Sent]
    sid: str
    next_n: int

    def shown(self) -> list[str]:
        return [s.text for s in self.sent if s.outcome == SHOWN]

    def count(self, outcome: str) -> int:
        return sum(s.outcome == outcome for s in self.sent)


END = "END OF BARRAGE"


def barrage(rng: random.Random, count: int, max_plaintext: int) -> Barrage:
    """``count`` hostile plaintexts, each at most ``max_plaintext`` bytes, and their outcomes.

    Mostly well-formed messages under one sid with rising counters (shown), mixed with
    messages under a new sid or an old counter (ignored), and with plaintexts that are not
    the message format: invalid UTF-8, not JSON, fields of the wrong type (undecryptable).
    """
    sid = b64u(os.urandom(8))
    bound: str | None = None  # the sid this member's first accepted message bound
    highest = 0
    next_n = 1
    sent: list[Sent] = []
    for _ in range(count):
        roll = rng.random() if bound is not None else 1.0  # the first is a good message
        if roll < 0.07:
            bad = rng.choice([*MALFORMED, json.dumps({"text": "x", "ts": -1, "sid": sid, "n": 1}).encode()])
            sent.append(Sent(bad, UNDECRYPTABLE))
            continue
        use_sid = sid if roll > 0.12 else b64u(os.urandom(8))
        if roll > 0.18:
            n, next_n = next_n, next_n + rng.randint(1, 3)
        else:
            n = rng.randint(1, max(1, highest))  # a counter already used (or passed)
        text = random_text(rng, max_plaintext)
        fields = {"text": text, "ts": int(time.time() * 1000), "sid": use_sid, "n": n}
        plaintext = encode(fields, rng)
        while len(plaintext) > max_plaintext:
            text = text[: len(text) * 3 // 4]
            fields["text"] = text
            plaintext = encode(fields, rng)
        if (bound is None or use_sid == bound) and n > highest:
            bound, highest = use_sid, n
            sent.append(Sent(plaintext, SHOWN, repaired(text)))
        else:
            sent.append(Sent(plaintext, IGNORED))
    return Barrage(sent, sid, next_n)


def b64u(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def bucket(length: int) -> int:
    size = 256
    while size < length:
        size *= 2
    return size


class HostileMember:
    """A member that seals any plaintext it is given with the room's key."""

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
        self._aead = AESGCM(self.link.key)

    def seal(self, plaintext: bytes) -> bytes:
        iv = os.urandom(12)
        padded = plaintext.ljust(bucket(len(plaintext)), b" ")
        return b"\x01" + iv + self._aead.encrypt(iv, padded, self.link.room.encode("ascii"))

    def send(self, plaintext: bytes) -> None:
        self.ws.send(self.seal(plaintext))

    def say(self, text: str, sid: str, n: int) -> None:
        """Sends a well-formed message."""
        self.send(json.dumps({"text": text, "ts": int(time.time() * 1000), "sid": sid, "n": n}).encode())

    def send_barrage(self, script: Barrage, pause: float = 0.035) -> None:
        """Sends every plaintext of ``script``, then END as an ordinary message after it,
        ``pause`` seconds apart (by default under the relay's rate limit of 30 a second)."""
        for sent in script.sent:
            self.send(sent.plaintext)
            time.sleep(pause)
        self.say(END, script.sid, script.next_n)

    def close(self) -> None:
        self.ws.close()
