"""The opening handshake's checks, without a network (RFC 6455 §4.2)."""

from __future__ import annotations

import pytest

from pugfast.handshake import HandshakeError, accept_key, check_upgrade, origin_allowed

# check_upgrade reads fields by lower-case name, as the engine's head parser gives them.
GOOD = {
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def test_rfc_6455_sample_key() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert check_upgrade(GOOD) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    "change",
    [
        {"upgrade": "WebSocket"},
        {"upgrade": "websocket, h2c"},
        {"connection": "Upgrade"},
        {"connection": "UPGRADE,keep-alive"},
        {"sec-websocket-key": "  dGhlIHNhbXBsZSBub25jZQ==  "},
        {"sec-websocket-version": " 13 "},
    ],
)
def test_good_upgrades_in_other_spellings(change: dict[str, str]) -> None:
    assert check_upgrade({**GOOD, **change}) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"upgrade": "h2c"}, 400),
        ({"upgrade": "websockets"}, 400),
        ({"connection": "keep-alive"}, 400),
        ({"connection": "upgrades"}, 400),
        ({"sec-websocket-version": "8"}, 426),
        ({"sec-websocket-version": ""}, 426),
        ({"sec-websocket-key": ""}, 400),
        ({"sec-websocket-key": "c2hvcnQ="}, 400),
        ({"sec-websocket-key": "not base64!!"}, 400),
        ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ"}, 400),
        ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ="}, 400),
        ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25j ZQ=="}, 400),
        ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==="}, 400),
        ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ-_"}, 400),
    ],
)
def test_bad_upgrades_are_refused(change: dict[str, str], status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade({**GOOD, **change})
    assert info.value.status == status
    if status == 426:
        assert info.value.headers == {"Sec-WebSocket-Version": "13"}


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, None, True),
        ("http://relay.test:3000", None, True),
        ("http://evil.test", None, False),
        ("https://relay.test:3000", None, False),
        ("https://chat.example.org", "https://chat.example.org", True),
        ("http://relay.test:3000", "https://chat.example.org", False),
        ("null", None, False),
        ("", None, False),
        ("http://relay.test:3000/", None, False),
        ("http://relay.test", None, False),
        ("ws://relay.test:3000", None, False),
        ("http://relay.test:30000", None, False),
        ("http://relay.test:3000.evil.example", None, False),
        (" http://relay.test:3000", None, False),
        ("HTTP://Relay.Test:3000", None, True),
        ("HTTPS://CHAT.example.org", "https://chat.example.org", True),
        ("https://chat.example.org/", "https://chat.example.org", False),
    ],
)
def test_origin_must_match_the_configured_or_own_origin(origin, allowed, ok) -> None:
    assert origin_allowed(origin, allowed, "http", "relay.test:3000") is ok
