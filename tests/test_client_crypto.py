"""The Python client's cryptography, to the byte as the browser's: docs/client.md's test
vectors (read from the page, so the two cannot drift), the plaintext format, padding, the
replay guard, the fingerprint and the proof of work. Pure functions: no network here."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pugfast import pow as relay_pow
from pugfast.client import DecryptError, MessageFormatError, WordListError, fingerprint, solve_challenge
from pugfast.client._b64u import b64u_decode, b64u_encode
from pugfast.client.crypto import OVERHEAD, bucket_for, cipher, largest_bucket, pad, seal, unseal
from pugfast.client.fingerprint import grouped, load_words
from pugfast.client.message import decode_message, encode_message, new_sid

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "client.md").read_text()


def documented_vector() -> dict[str, str]:
    """The ciphertext test vector in docs/client.md (as tests/browser/test_crypto.py reads it)."""
    section = DOC.split("### Version 1 test vector", 1)[1].split("\n## ", 1)[0]
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


def documented_fingerprints() -> list[tuple[str, str, str, str]]:
    """The rows (key text, room id, bits in hex, words) of the fingerprint table."""
    section = DOC.split("## Key fingerprint", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(
        r"^\| `([A-Za-z0-9_-]{43})`[^|]*\| `([A-Za-z0-9_-]{22})` \| `([0-9a-f]{32})` \| `([a-z ]+)` \|$",
        section, re.M,
    )
    assert len(rows) >= 2, "docs/client.md: the fingerprint table has fewer than two rows"
    return rows


VECTOR = documented_vector()
KEY = b64u_decode(VECTOR["key"]) or b""
IV = bytes(range(12))


def test_the_documented_vector_encrypts_to_the_documented_bytes() -> None:
    assert bytes(range(32)) == KEY
    message = json.loads(VECTOR["plaintext"])
    plaintext = encode_message(message["text"], message["ts"], message["sid"], message["n"])
    assert plaintext == VECTOR["plaintext"].encode(), "the JSON must be written as JSON.stringify writes it"
    sealed = seal(cipher(KEY), VECTOR["room"], plaintext, iv=IV)
    assert len(sealed) == 285
    assert b64u_encode(sealed) == VECTOR["ciphertext"]


def test_the_documented_vector_decrypts_to_the_documented_message() -> None:
    padded = unseal(cipher(KEY), VECTOR["room"], b64u_decode(VECTOR["ciphertext"]) or b"")
    assert padded == VECTOR["plaintext"].encode().ljust(256, b" ")
    decoded = decode_message(padded)
    assert (decoded.text, decoded.ts, decoded.sid, decoded.n) == ("hello", 1700000000000, "AAAAAAAAAAA", 1)


def test_the_documented_vector_fingerprint() -> None:
    assert " ".join(fingerprint(KEY, VECTOR["room"])) == VECTOR["fingerprint"]


@pytest.mark.parametrize("row", documented_fingerprints())
def test_the_documented_fingerprint_table(row: tuple[str, str, str, str]) -> None:
    key_text, room, bits, words = row
    key = b64u_decode(key_text) or b""
    derived = hashlib.pbkdf2_hmac("sha256", key, b"pugfast-fingerprint-v2:" + room.encode(), 65536, 16)
    assert derived.hex() == bits
    # Independently of the module: nine 11-bit numbers off a string of the bits.
    binary = "".join(f"{byte:08b}" for byte in derived)
    expected = [load_words()[int(binary[11 * i : 11 * i + 11], 2)] for i in range(9)]
    assert " ".join(expected) == words
    assert " ".join(fingerprint(key, room)) == words


def test_the_fingerprint_binds_the_room() -> None:
    assert len(load_words()) == 2048
    a = fingerprint(KEY, "A" * 22)
    assert len(a) == 9
    assert fingerprint(KEY, "B" * 21 + "A") != a
    assert fingerprint(bytes(32), "A" * 22) != a


def test_a_word_list_of_the_wrong_size_fails_clearly(tmp_path: Path) -> None:
    short = tmp_path / "words.js"
    short.write_text('export const WORDS = Object.freeze(["a", "b"]);\n')
    with pytest.raises(WordListError, match="holds 2 words"):
        load_words(short)
    doubled = tmp_path / "doubled.js"
    doubled.write_text("x = [" + ", ".join(['"same"'] * 2048) + "];")
    with pytest.raises(WordListError, match="2048 distinct"):
        load_words(doubled)
    broken = tmp_path / "broken.js"
    broken.write_text("export const WORDS = [oops];")
    with pytest.raises(WordListError, match="JSON array"):
        load_words(broken)
    with pytest.raises(WordListError, match="cannot read"):
        load_words(tmp_path / "absent.js")
    with pytest.raises(WordListError):
        fingerprint(KEY, "A" * 22, words=("a", "b"))


def test_fingerprint_words_print_in_three_groups_of_three() -> None:
    assert grouped(tuple("abcdefghi")) == "a b c   d e f   g h i"


# -- padding and size -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "bucket"), [(0, 256), (1, 256), (256, 256), (257, 512), (1024, 1024), (1025, 2048)]
)
def test_buckets(length: int, bucket: int) -> None:
    assert bucket_for(length) == bucket
    padded = pad(b"x" * length)
    assert len(padded) == bucket and padded[length:] == b" " * (bucket - length)


@pytest.mark.parametrize(
    ("max_bytes", "largest"), [(65536, 32768), (32768 + 29, 32768), (32768 + 28, 16384), (284, 0), (285, 256)]
)
def test_largest_bucket_follows_the_browser(max_bytes: int, largest: int) -> None:
    assert OVERHEAD == 29
    assert largest_bucket(max_bytes) == largest


# -- ciphertexts the browser would refuse ------------------------------------------------------


def test_ciphertexts_that_do_not_authenticate_are_refused() -> None:
    aead = cipher(KEY)
    good = seal(aead, VECTOR["room"], b'{"text":"x"}')
    cases = {
        "too short": good[:28],
        "unknown version 2": bytes([2]) + good[1:],
        "authentication failed": good[:-1] + bytes([good[-1] ^ 1]),
    }
    for reason, message in cases.items():
        with pytest.raises(DecryptError, match=reason):
            unseal(aead, VECTOR["room"], message)
    with pytest.raises(DecryptError, match="authentication failed"):
        unseal(aead, "B" * 21 + "A", good)  # bound to its room by the associated data
    with pytest.raises(DecryptError, match="authentication failed"):
        unseal(cipher(bytes(32)), VECTOR["room"], good)


def test_python_seals_what_an_independent_aes_gcm_opens() -> None:
    text = "Grüße 🐶\nzweite Zeile"
    plaintext = encode_message(text, 1, new_sid(), 7)
    sealed = seal(cipher(KEY), "A" * 22, plaintext)
    assert sealed[0] == 1 and len(sealed) == 29 + 256
    opened = AESGCM(KEY).decrypt(sealed[1:13], sealed[13:], b"A" * 22)
    assert json.loads(opened)["text"] == text


# -- the plaintext format ------------------------------------------------------------------------

SID = "AAAAAAAAAAA"


def test_messages_are_written_as_json_stringify_writes_them() -> None:
    assert encode_message('a "q" \\ \n\t\x01 ü 🐶 \u2028', 5, SID, 2) == (
        '{"text":"a \\"q\\" \\\\ \\n\\t\\u0001 ü 🐶 \u2028","ts":5,"sid":"AAAAAAAAAAA","n":2}'.encode()
    )
    # A lone surrogate cannot be UTF-8: JSON.stringify escapes it, and so does the client.
    assert b'"text":"\\ud800"' in encode_message("\ud800", 5, SID, 2)


def msg(**fields: object) -> bytes:
    return json.dumps({"text": "t", "ts": 1, "sid": SID, "n": 1, **fields}).encode().ljust(256)


@pytest.mark.parametrize(
    ("padded", "field"),
    [
        (b"\xff" + b" " * 255, "UTF-8 JSON"),
        (b"[1]".ljust(256), "object"),
        (b'{"text":"t","ts":NaN,"sid":"AAAAAAAAAAA","n":1}'.ljust(256), "JSON"),
        (msg(text=5), "text"),
        (msg(text=None), "text"),
        (msg(ts=-1), "ts"),
        (msg(ts=1.5), "ts"),
        (msg(ts=True), "ts"),
        (msg(ts=2**53), "ts"),
        (msg(sid="AAAA"), "sid"),
        (msg(sid="AAAAAAAAAAB"), "sid"),
        (msg(sid=7), "sid"),
        (msg(n=0), "n"),
        (msg(n="1"), "n"),
    ],
)
def test_malformed_plaintexts_are_refused(padded: bytes, field: str) -> None:
    with pytest.raises(MessageFormatError, match=field):
        decode_message(padded)


def test_unknown_fields_are_ignored_and_integral_numbers_accepted() -> None:
    decoded = decode_message(msg(extra=[1, 2], ts=5.0, n=3))
    assert (decoded.text, decoded.ts, decoded.n) == ("t", 5, 3)


def test_sender_ids_are_eight_random_bytes() -> None:
    sids = {new_sid() for _ in range(100)}
    assert len(sids) == 100
    assert all(len(b64u_decode(s) or b"") == 8 for s in sids)


# -- proof of work -------------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", [0, 1, 8, 14])
def test_the_solver_finds_what_the_relay_accepts(difficulty: int) -> None:
    seen: list[int] = []
    token = f"token-{difficulty}"
    nonce, tries = solve_challenge(token, difficulty, lambda t, d: seen.append(t))
    assert relay_pow.solves(token, nonce, difficulty)
    assert tries == int(nonce) + 1
    assert seen[-1] == tries
    assert not any(relay_pow.solves(token, str(n), difficulty) for n in range(int(nonce)))


def test_the_solver_refuses_impossible_difficulties() -> None:
    with pytest.raises(ValueError):
        solve_challenge("t", 257)


@pytest.mark.parametrize("module", ["_b64u", "link", "crypto", "message", "senderkeys", "text", "screen",
                                    "answers", "backlog", "fingerprint", "events"])
def test_the_pure_modules_do_no_io(module: str) -> None:
    """Links, encryption, the plaintext, the key ring, text and layout, the checks of relay
    answers and the fingerprint are without I/O: they import no network, no aiohttp and no
    threads (the backlog only asyncio's Event)."""
    import ast
    import importlib.util

    # The module as imported: the checkout's, or an installed wheel's when the suite runs
    # against one (scripts/test_installed_wheel.sh).
    tree = ast.parse(Path(importlib.util.find_spec(f"pugfast.client.{module}").origin).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    forbidden = {"aiohttp", "socket", "ssl", "urllib3", "threading"}
    if module != "backlog":
        forbidden.add("asyncio")
    assert not imported & forbidden, imported
