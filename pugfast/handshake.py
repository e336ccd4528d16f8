"""The server side of the WebSocket opening handshake (RFC 6455 §4.2), without I/O."""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Mapping

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    """The upgrade request is refused with an HTTP error; ``headers`` go with the response."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# A 16-byte key in base64 is exactly 22 characters of the alphabet and "==".
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


def _has_token(value: str, token: str) -> bool:
    """Whether the comma-separated list ``value`` holds ``token`` (any case)."""
    value = value.lower()
    # The usual value is the token alone; only a list needs splitting.
    return value == token or token in {item.strip() for item in value.split(",")}


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value that answers ``key``."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


def check_upgrade(headers: Mapping[str, str]) -> str:
    """Check an upgrade request's headers and return the Sec-WebSocket-Accept value.

    ``headers`` is looked up by lower-case names: aiohttp's case-insensitive headers, or the
    fields the engine's ``parse_upgrade_head`` read.
    No subprotocol and no extension is ever agreed, so those headers are not read.
    Raises HandshakeError: 400 for a request that is not a WebSocket upgrade or has a bad key,
    426 (with ``Sec-WebSocket-Version: 13``) for any version other than 13.
    """
    if not _has_token(headers.get("upgrade", ""), "websocket"):
        raise HandshakeError(400, "bad_request", "expected a WebSocket upgrade (Upgrade: websocket)")
    if not _has_token(headers.get("connection", ""), "upgrade"):
        raise HandshakeError(400, "bad_request", "expected Connection: Upgrade")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(
            426, "upgrade_required", "only WebSocket version 13 is spoken here",
            {"Sec-WebSocket-Version": "13"},
        )
    key = headers.get("sec-websocket-key", "").strip()
    if _KEY.fullmatch(key) is None:
        raise HandshakeError(400, "bad_request", "Sec-WebSocket-Key must be 16 bytes in base64")
    return accept_key(key)


def origin_allowed(origin: str | None, allowed: str | None, scheme: str, host: str) -> bool:
    """Whether a request's Origin header may open a WebSocket (docs/protocol.md §6.1).

    A request without Origin (not from a browser) is allowed. Otherwise it must equal the
    configured origin, or, when none is configured, the request's own scheme and host. The
    comparison is exact but for case, which scheme and host ignore (the port is digits). A
    serialized origin has no path (RFC 6454 §6.2), so ``http://host:port/`` is not one: it
    is refused, as are ``null`` and an empty value.
    """
    if origin is None:
        return True
    expected = allowed if allowed is not None else f"{scheme}://{host}"
    return origin.lower() == expected.lower()

