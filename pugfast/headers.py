"""The relay's response headers: strict on every response, and one 101 built without aiohttp.

aiohttp adds them to what it answers (``pugfast.app.add_security_headers``); the front door
(pugfast/frontdoor.py) answers a WebSocket upgrade itself with the same headers, from bytes
built once per host rather than per response.
"""

from __future__ import annotations

import functools
import re

_SAFE_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

# Every response carries these, beside the Content-Security-Policy made for its host.
SECURITY_HEADERS = (
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    ("Server", "pugfast"),
)
HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")


@functools.lru_cache(maxsize=64)
def content_security_policy(host: str) -> str:
    """The policy for pages served as ``host``: a WebSocket may go only to that host.

    Cached, since a relay answers under one or two names: every response then shares one
    string.
    """
    connect = f"'self' ws://{host} wss://{host}" if _SAFE_HOST.fullmatch(host) else "'self'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


@functools.lru_cache(maxsize=64)
def _switching_tail(host: str, tls: bool) -> bytes:
    fields = [("Content-Security-Policy", content_security_policy(host)), *SECURITY_HEADERS]
    if tls:
        fields.append(HSTS)
    fields.append(("Cache-Control", "no-store"))
    return "".join(f"{name}: {value}\r\n" for name, value in fields).encode("latin-1") + b"\r\n"


def switching_protocols(accept: str, host: str, tls: bool) -> bytes:
    """The whole head of the 101 that answers an upgrade with ``Sec-WebSocket-Accept: accept``.

    A 1xx carries no body and needs no Date (RFC 9110 §6.6.1); everything but the accept
    value is built once per host.
    """
    return b"".join(
        (_SWITCHING, b"Sec-WebSocket-Accept: ", accept.encode("ascii"), b"\r\n",
         _switching_tail(host, tls))
    )


_REASONS = {408: "Request Timeout"}
# The error a connection gets when its request did not arrive within --request-timeout.
TIMED_OUT = ("request_timeout", "the request did not arrive in time")


@functools.lru_cache(maxsize=8)
def error_response(status: int, code: str, message: str, tls: bool) -> bytes:
    """A whole ``{"error": code, "message": message}`` response that closes its connection,
    for the front door, which answers before any request (and its Host) is known."""
    body = b'{"error":"%s","message":"%s"}' % (code.encode("ascii"), message.encode("ascii"))
    fields = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("Content-Security-Policy", content_security_policy("")),
        *SECURITY_HEADERS,
    ]
    if tls:
        fields.append(HSTS)
    fields.append(("Cache-Control", "no-store"))
    head = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields
    )
    return head.encode("latin-1") + b"\r\n" + body
