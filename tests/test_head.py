"""The check of a room upgrade's request head (pugfast/engine/_head.py and its compiled twin): which
heads the front door answers itself, what it reads from them, and the two implementations
giving the same result for any bytes."""

from __future__ import annotations

from typing import Any

import pytest
from engines import IMPLEMENTATIONS, NOT_BUILT, c_impl, py_impl
from hypothesis import given, settings
from hypothesis import strategies as st

ROOM = "AbCdEfGhIjKlMnOpQr-_09"
LINE = f"GET /r/{ROOM}/ws HTTP/1.1".encode()
FIELDS = [
    b"Host: relay.example:3000",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
    b"Origin: http://relay.example:3000",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120",
]
GOOD = b"\r\n".join([LINE, *FIELDS])
READ_FROM_GOOD = {
    "host": "relay.example:3000",
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
    "origin": "http://relay.example:3000",
}

ACCEPTED = [
    ("plain", GOOD, READ_FROM_GOOD),
    ("query", GOOD.replace(b"/ws ", b"/ws?x=1&y=%20 "), READ_FROM_GOOD),
    ("empty query", GOOD.replace(b"/ws ", b"/ws? "), READ_FROM_GOOD),
    ("names in any case", GOOD.replace(b"Host:", b"hOST:").replace(b"Upgrade:", b"UPGRADE:"),
     READ_FROM_GOOD),
    ("spaces and tabs around values", GOOD.replace(b"Upgrade: websocket", b"Upgrade:\t websocket \t"),
     READ_FROM_GOOD),
    ("no space after the colon", GOOD.replace(b"Upgrade: websocket", b"Upgrade:websocket"),
     READ_FROM_GOOD),
    ("the first of two fields counts", GOOD + b"\r\nOrigin: http://evil.example", READ_FROM_GOOD),
    ("an empty value", b"\r\n".join([LINE, b"Host: h", b"Origin:"]), {"host": "h", "origin": ""}),
    ("only a host", LINE + b"\r\nHost: h", {"host": "h"}),
]

REFUSED = [
    ("no host", b"\r\n".join([LINE, *FIELDS[1:]])),
    ("two hosts", GOOD + b"\r\nHost: other"),
    ("a body announced", GOOD + b"\r\nContent-Length: 0"),
    ("a chunked body", GOOD + b"\r\nTransfer-Encoding: chunked"),
    ("HTTP/1.0", GOOD.replace(b"HTTP/1.1", b"HTTP/1.0")),
    ("HTTP/2", GOOD.replace(b"HTTP/1.1", b"HTTP/2.0")),
    ("POST", GOOD.replace(b"GET", b"POST", 1)),
    ("lower-case method", GOOD.replace(b"GET", b"get", 1)),
    ("absolute URI", GOOD.replace(b"GET /r/", b"GET http://h/r/", 1)),
    ("short room id", GOOD.replace(ROOM.encode(), ROOM[:21].encode())),
    ("long room id", GOOD.replace(ROOM.encode(), ROOM.encode() + b"A")),
    ("room id with +", GOOD.replace(ROOM.encode(), b"+" + ROOM[1:].encode())),
    ("room page, not its socket", GOOD.replace(b"/ws ", b" ")),
    ("trailing slash", GOOD.replace(b"/ws ", b"/ws/ ")),
    ("two spaces", GOOD.replace(b"/ws ", b"/ws  ")),
    ("obs-fold", GOOD + b"\r\n continued"),
    ("space before the colon", GOOD + b"\r\nX-A : b"),
    ("no colon", GOOD + b"\r\nnocolon"),
    ("empty name", GOOD + b"\r\n: value"),
    ("an empty line", GOOD + b"\r\n\r\nHost: h"),
    ("ends in CR LF", GOOD + b"\r\n"),
    ("a bare LF", GOOD.replace(b"\r\nUpgrade", b"\nUpgrade")),
    ("a bare CR", GOOD + b"\r\nX-A: b\rc"),
    ("a NUL", GOOD + b"\r\nX-A: b\x00c"),
    ("DEL", GOOD + b"\r\nX-A: \x7f"),
    ("obs-text", GOOD + "\r\nX-A: caf\u00e9".encode()),
    ("non-token name", GOOD + b"\r\nX(A): b"),
    ("a query with a space", GOOD.replace(b"/ws ", b"/ws?a b ")),
    ("empty", b""),
]


# RFC 6455 §1.3's example key and its accept value.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("head", "fields"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted_heads(impl: Any, head: bytes, fields: dict[str, str]) -> None:
    accept = ACCEPT if "sec-websocket-key" in fields else None
    assert impl.parse_upgrade_head(head) == (ROOM, fields, accept)


# The handshake's own checks (pugfast.handshake.check_upgrade's): a head that fails them is
# still read, but without an accept value, so that aiohttp answers with the refusal.
HANDSHAKES = [
    ("plain", GOOD, ACCEPT),
    ("upgrade in any case", GOOD.replace(b"Upgrade: websocket", b"Upgrade: WebSocket"), ACCEPT),
    ("connection list", GOOD.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"),
     ACCEPT),
    ("connection list, spaced", GOOD.replace(b"Connection: Upgrade", b"Connection: a ,\tupgrade ,b"),
     ACCEPT),
    ("upgrade list", GOOD.replace(b"Upgrade: websocket", b"Upgrade: h2c, websocket"), ACCEPT),
    ("no upgrade", GOOD.replace(b"Upgrade: websocket\r\n", b""), None),
    ("upgrade to something else", GOOD.replace(b"Upgrade: websocket", b"Upgrade: h2c"), None),
    ("upgrade token as a prefix", GOOD.replace(b"Upgrade: websocket", b"Upgrade: websockets"), None),
    ("connection without upgrade", GOOD.replace(b"Connection: Upgrade", b"Connection: close"), None),
    ("empty connection", GOOD.replace(b"Connection: Upgrade", b"Connection:"), None),
    ("version 8", GOOD.replace(b"Version: 13", b"Version: 8"), None),
    ("version 130", GOOD.replace(b"Version: 13", b"Version: 130"), None),
    ("no version", GOOD.replace(b"Sec-WebSocket-Version: 13\r\n", b""), None),
    ("short key", GOOD.replace(KEY, b"dGhlIHNhbXBsZSBub25jZ=="), None),
    ("key without padding", GOOD.replace(KEY, b"dGhlIHNhbXBsZSBub25jZQAA"), None),
    ("key with a URL-safe character", GOOD.replace(KEY, b"dGhlIHNhbXBsZSBub25jZ-=="), None),
    ("no key", GOOD.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), None),
]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("head", "accept"), [c[1:] for c in HANDSHAKES], ids=[c[0] for c in HANDSHAKES])
def test_the_handshake_is_checked_and_answered(impl: Any, head: bytes, accept: str | None) -> None:
    result = impl.parse_upgrade_head(head)
    assert result is not None and result[0] == ROOM
    assert result[2] == accept


@settings(max_examples=300)
@given(st.binary(min_size=16, max_size=16))
def test_any_key_gets_the_accept_value_of_the_rfc(key: bytes) -> None:
    import base64
    import hashlib

    text = base64.b64encode(key)
    expected = base64.b64encode(hashlib.sha1(text + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    head = GOOD.replace(b"dGhlIHNhbXBsZSBub25jZQ==", text)
    for impl in (py_impl, c_impl):
        if impl is not None:
            assert impl.parse_upgrade_head(head)[2] == expected.decode()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("head", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_heads(impl: Any, head: bytes) -> None:
    assert impl.parse_upgrade_head(head) is None


def test_both_read_the_same_fields() -> None:
    if c_impl is None:
        pytest.skip(NOT_BUILT)
    assert c_impl.READ == py_impl.READ


def differential(head: bytes) -> None:
    if c_impl is None:
        pytest.skip(NOT_BUILT)
    assert c_impl.parse_upgrade_head(head) == py_impl.parse_upgrade_head(head)


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_give_the_same_result(head: bytes) -> None:
    differential(head)


field_names = st.sampled_from(
    ["Host", "host", "Upgrade", "Origin", "Content-Length", "Sec-WebSocket-Key", "X-A",
     "Sec-WebSocket-Version", "sec-websocket-versionx", "Transfer-Encoding", "Connection", ""]
)
# Random text, and values that come close to passing the handshake's checks.
field_values = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x80), max_size=12) | (
    st.lists(st.sampled_from(["websocket", "WebSocket", "upgrade", "Upgrade", "13", " ", "\t", ",",
                              "keep-alive", "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=",
                              "+/+/+/+/+/+/+/+/+/+/+w==", "websockets", "1", "3"]), max_size=4)
    .map("".join))
request_lines = st.sampled_from(
    [LINE, LINE.replace(b"/ws ", b"/ws?q "), LINE.replace(b"1.1", b"1.0"), b"GET /r/x/ws HTTP/1.1"]
)


@settings(max_examples=600)
@given(
    st.lists(st.tuples(field_names, st.sampled_from([":", ": ", " :", ":\t"]), field_values),
             max_size=6),
    request_lines,
    st.sampled_from([b"\r\n", b"\n", b"\r"]),
)
def test_mutated_heads_give_the_same_result(
    fields: list[tuple[str, str, str]], line: bytes, eol: bytes
) -> None:
    # The first field follows a proper CR LF; the others are joined by ``eol``.
    lines = [line] + [(name + sep + value).encode("latin-1") for name, sep, value in fields]
    # Often a whole valid handshake first, so that one field more or less decides it.
    if fields and fields[0][0] == "Host":
        lines[1:1] = FIELDS[:5]
    head = b"\r\n".join(lines[:2])
    if len(lines) > 2:
        head += eol + eol.join(lines[2:])
    differential(head)
