"""Reading the one request head the relay answers without aiohttp: the pure-Python twin of
_ext/pugfast/engine/_head.pxi.

The front door (pugfast/frontdoor.py) answers ``GET /r/{room}/ws HTTP/1.1`` itself, and hands
any other request to aiohttp. ``parse_upgrade_head`` decides which: it accepts only a plain
upgrade request in its strictest form and returns None for anything else, malformed or merely
unusual (another path, HTTP/1.0, an absolute URI, a field with a byte aiohttp would refuse, a
body). None is never an error: aiohttp then parses the same bytes and answers as it answers
every other request, so a refusal always comes from one place.

The rules, on ``head`` (the request line and its fields, without the blank line's CRLF CRLF):

- every byte is visible ASCII, a space or a tab, except CR LF pairs that end lines (a bare CR
  or LF, a NUL or a byte above 0x7E is not accepted);
- the request line is ``GET /r/`` + 22 characters of ``[A-Za-z0-9_-]`` + ``/ws``, optionally
  ``?`` and a query of visible ASCII, then `` HTTP/1.1``;
- every other line is a field: a name of RFC 9110 token characters, ``:``, and a value (no
  obs-fold, no empty line), stripped of spaces and tabs at both ends;
- of the fields the relay reads (``READ``), the first of each name counts, as aiohttp's
  ``headers.get`` gives it; a second Host is not accepted; there must be a Host, and no
  Content-Length or Transfer-Encoding (an upgrade has no body).

The result is ``(room_id, fields, accept)``, ``fields`` mapping lower-case names of ``READ`` to
their values, or None. ``accept`` is the Sec-WebSocket-Accept value when the fields make a valid
version-13 upgrade (pugfast.handshake.check_upgrade passes them), else None: the front door then
lets aiohttp answer with check_upgrade's refusal. A differential test holds the two
implementations to the same result for any bytes (the compiled one checks the handshake and
computes SHA-1 in C: _ext/pugfast/engine/_handshake.pxi).
"""

from __future__ import annotations

import re

from ..handshake import HandshakeError, check_upgrade

__all__ = ["READ", "parse_upgrade_head"]

# The fields the relay reads; the others are only checked for form.
READ = (
    "host", "upgrade", "connection", "sec-websocket-version", "sec-websocket-key", "origin",
    "content-length", "transfer-encoding",
)
_READ = frozenset(name.encode("ascii") for name in READ)
_REQUEST_LINE = re.compile(rb"GET /r/([A-Za-z0-9_-]{22})/ws(?:\?[!-~]*)? HTTP/1\.1")
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEAD = bytes(range(0x20, 0x7F)) + b"\t\r\n"


def parse_upgrade_head(head: bytes) -> tuple[str, dict[str, str], str | None] | None:
    """``(room_id, fields, accept)`` for a plain room upgrade request head, else None (see
    above)."""
    # Each check deletes the allowed bytes and looks at what is left: one C loop each.
    if head.translate(None, _HEAD) or not head.count(b"\n") == head.count(b"\r") == head.count(b"\r\n"):
        return None
    lines = head.split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return None
    fields: dict[str, str] = {}
    for raw in lines[1:]:
        name, colon, value = raw.partition(b":")
        if not colon or not name or name.translate(None, _TOKEN):
            return None
        key = name.lower()
        if key in _READ:
            text = key.decode("ascii")
            if text not in fields:
                fields[text] = value.strip(b" \t").decode("ascii")
            elif text == "host":
                return None
    if "host" not in fields or "content-length" in fields or "transfer-encoding" in fields:
        return None
    try:
        accept: str | None = check_upgrade(fields)
    except HandshakeError:
        accept = None
    return line.group(1).decode("ascii"), fields, accept
