"""Room links and relay URLs, parsed as strictly as the browser parses them (docs/client.md,
"The link"), with an error that says what is wrong."""

from __future__ import annotations

import pytest

from pugfast.client import Link, LinkError, parse_link, parse_relay_url
from pugfast.client._b64u import b64u_decode, b64u_encode

ROOM = "C" * 21 + "A"
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
SECRET = "B" * 21 + "A"
GOOD = f"https://relay.example/r/{ROOM}#k={KEY}&s={SECRET}"


@pytest.mark.parametrize(
    ("text", "origin", "ws"),
    [
        (GOOD, "https://relay.example", f"wss://relay.example/r/{ROOM}/ws"),
        (f"http://127.0.0.1:3000/r/{ROOM}#k={KEY}&s={SECRET}", "http://127.0.0.1:3000",
         f"ws://127.0.0.1:3000/r/{ROOM}/ws"),
        (f"wss://relay.example/r/{ROOM}#k={KEY}&s={SECRET}", "https://relay.example",
         f"wss://relay.example/r/{ROOM}/ws"),
        (f"ws://[::1]:8080/r/{ROOM}#k={KEY}&s={SECRET}", "http://[::1]:8080", f"ws://[::1]:8080/r/{ROOM}/ws"),
        (f"HTTPS://relay.example/r/{ROOM}/#s={SECRET}&k={KEY}", "https://relay.example",
         f"wss://relay.example/r/{ROOM}/ws"),
        (f"  {GOOD}\n", "https://relay.example", f"wss://relay.example/r/{ROOM}/ws"),
    ],
)
def test_good_links_parse(text: str, origin: str, ws: str) -> None:
    link = parse_link(text)
    assert link.origin == origin
    assert link.room == ROOM
    assert link.key == bytes(range(32))
    assert link.secret == SECRET
    assert link.websocket_url == ws
    assert str(link) == f"{origin}/r/{ROOM}#k={KEY}&s={SECRET}"
    assert parse_link(str(link)) == link


def test_repr_never_shows_the_key_or_the_secret() -> None:
    text = repr(parse_link(GOOD))
    assert KEY not in text and SECRET not in text and "key" not in text


# (link, words the error must contain)
BAD = [
    ("", "no link"),
    ("relay.example/r/x", "https://"),
    (f"ftp://relay.example/r/{ROOM}#k={KEY}&s={SECRET}", "ftp://"),
    (f"https:///r/{ROOM}#k={KEY}&s={SECRET}", "no host"),
    (f"https://user:pw@relay.example/r/{ROOM}#k={KEY}&s={SECRET}", "user name"),
    (f"https://relay.example:99999/r/{ROOM}#k={KEY}&s={SECRET}", "not a URL"),
    (f"https://relay.example/room/{ROOM}#k={KEY}&s={SECRET}", "path"),
    (f"https://relay.example/#k={KEY}&s={SECRET}", "path"),
    (f"https://relay.example/r/{ROOM}/ws#k={KEY}&s={SECRET}", "path"),
    (f"https://relay.example/r/{ROOM[:-3]}#k={KEY}&s={SECRET}", "truncated"),
    (f"https://relay.example/r/{ROOM}x#k={KEY}&s={SECRET}", "23 characters"),
    (f"https://relay.example/r/{'C' * 22}#k={KEY}&s={SECRET}", "changed"),  # stray low bits
    (f"https://relay.example/r/{ROOM}?x=1#k={KEY}&s={SECRET}", "query"),
    (f"https://relay.example/r/{ROOM}", "copy the whole link"),
    (f"https://relay.example/r/{ROOM}#", "copy the whole link"),
    (f"https://relay.example/r/{ROOM}#k={KEY}", "no secret"),
    (f"https://relay.example/r/{ROOM}#s={SECRET}", "no key"),
    (f"https://relay.example/r/{ROOM}#k={KEY}&s={SECRET}&k={KEY}", "twice"),
    (f"https://relay.example/r/{ROOM}#k={KEY}&s={SECRET}&x=1", "unknown field 'x'"),
    (f"https://relay.example/r/{ROOM}#k={KEY}&s={SECRET}&", "not a name=value"),
    (f"https://relay.example/r/{ROOM}#k={KEY}=&s={SECRET}", "44 characters"),
    (f"https://relay.example/r/{ROOM}#k={KEY[:30]}", "truncated"),
    (f"https://relay.example/r/{ROOM}#k={KEY[:30]}&s={SECRET}", "truncated"),
    (f"https://relay.example/r/{ROOM}#k={KEY}&s={SECRET[:10]}", "truncated"),
    (f"https://relay.example/r/{ROOM}#k={'A' * 42}B&s={SECRET}", "changed"),  # stray low bits
    (f"https://relay.example/r/{ROOM}#k={'A' * 42}+&s={SECRET}", "changed"),  # not base64url
    (f"https://relay.example/r/{ROOM}#k={KEY}&s={'B' * 22}", "changed"),
    (f"https://relay.example/r/{ROOM}#k={KEY}&s={SECRET}%20", "25 characters"),
    (f"https://relay example/r/{ROOM}#k={KEY}&s={SECRET}", "space"),
]


@pytest.mark.parametrize(("text", "says"), BAD)
def test_bad_links_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(LinkError) as caught:
        parse_link(text)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("https://relay.example", "https://relay.example"),
        ("https://relay.example/", "https://relay.example"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("wss://relay.example:8443/", "https://relay.example:8443"),
    ],
)
def test_relay_urls(text: str, origin: str) -> None:
    assert parse_relay_url(text) == origin


@pytest.mark.parametrize("text", ["", "relay.example", "https://relay.example/app", GOOD,
                                  "https://relay.example/?x", "https://relay.example#", "mailto:x@y"])
def test_bad_relay_urls(text: str) -> None:
    with pytest.raises(LinkError):
        parse_relay_url(text)


@pytest.mark.parametrize("size", range(0, 20))
def test_b64u_round_trips_and_refuses_non_canonical_text(size: int) -> None:
    data = bytes(range(size))
    text = b64u_encode(data)
    assert "=" not in text
    assert b64u_decode(text) == data
    assert b64u_decode(text + "=") is None
    if text:
        assert b64u_decode(text[:-1] + "/") is None
    assert b64u_decode("A" * (4 * size + 1)) is None


def test_link_is_a_frozen_value() -> None:
    link = parse_link(GOOD)
    with pytest.raises(AttributeError):
        link.room = "x"  # type: ignore[misc]
    assert isinstance(link, Link)
