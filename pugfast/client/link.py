"""Room links, parsed and built without any I/O (docs/client.md, "The link").

A link is ``{origin}/r/{room}#k={b64u(32-byte key)}&s={secret}``. The key and the secret sit
in the fragment, which is never sent to the relay; this module checks them as strictly as the
browser does, and says what is wrong with a link in words, since a person pasted it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from ._b64u import b64u_decode, b64u_encode
from .errors import LinkError

KEY_BYTES = 32
ID_BYTES = 16
KEY_CHARS = 43
ID_CHARS = 22

# The relay serves plain HTTP(S); a ws:// or wss:// base names the same relay.
_HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_ROOM_PATH = re.compile(r"/r/([^/]*)/?")


@dataclass(frozen=True, slots=True)
class Link:
    """A parsed room link. ``origin`` is ``http(s)://host[:port]``; ``key`` is the raw AES key.

    The key and the secret are left out of ``repr`` so that a stray log line cannot leak them;
    ``str(link)`` gives the whole link back.
    """

    origin: str
    room: str
    key: bytes = field(repr=False)
    secret: str = field(repr=False)

    @property
    def key_text(self) -> str:
        return b64u_encode(self.key)

    @property
    def websocket_url(self) -> str:
        """``ws(s)://host[:port]/r/{room}/ws``: where members of the room connect."""
        scheme, rest = self.origin.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/r/{self.room}/ws"

    def __str__(self) -> str:
        return build_link(self.origin, self.room, self.key, self.secret)


def build_link(origin: str, room: str, key: bytes, secret: str) -> str:
    """The link text, in the form the browser's "Copy link" gives."""
    return f"{origin}/r/{room}#k={b64u_encode(key)}&s={secret}"


def parse_link(text: str) -> Link:
    """Parses a room link.

    Accepts an ``http``, ``https``, ``ws`` or ``wss`` base (the latter two name the same relay),
    the path ``/r/{room}`` and a fragment of exactly the fields ``k`` and ``s``, in either order,
    each the canonical base64url of 32 and 16 bytes.

    Raises LinkError, saying what is wrong, for anything else: a missing or truncated part, a
    stray character, an unknown or repeated field.
    """
    text = text.strip()
    if not text:
        raise LinkError("no link given")
    parts = _split(text, "room link")
    origin = _origin(parts, "room link")
    match = _ROOM_PATH.fullmatch(parts.path)
    if match is None:
        raise LinkError(
            f"a room link's path is /r/ and a room id, like /r/{'A' * ID_CHARS}; this one has "
            f"{parts.path or 'none'!r}"
        )
    room = _id_value(match.group(1), "room id")
    if parts.query:
        raise LinkError("a room link has no query (the part after '?'); copy the link exactly")
    if "#" not in text or not parts.fragment:
        raise LinkError(
            "the link has no key and secret (the part after '#', like #k=...&s=...): "
            "copy the whole link"
        )
    fields = _fragment_fields(parts.fragment)
    key = _key_value(fields["k"])
    secret = _id_value(fields["s"], "secret (s)")
    return Link(origin, room, key, secret)


def parse_relay_url(text: str) -> str:
    """The origin (``http(s)://host[:port]``) of a relay URL such as ``https://relay.example``.

    Raises LinkError when it is not an http, https, ws or wss URL naming only a host (a path
    other than ``/``, a query or a fragment is refused, so a room link is not taken for one).
    """
    text = text.strip()
    if not text:
        raise LinkError("no relay URL given")
    parts = _split(text, "relay URL")
    origin = _origin(parts, "relay URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "#" in text:
        raise LinkError(f"a relay URL names only the relay, like {origin}; got {text!r}")
    return origin


def _split(text: str, what: str) -> SplitResult:
    if any(ch.isspace() or ord(ch) < 0x21 for ch in text):
        raise LinkError(f"the {what} has a space or a control character in it")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise LinkError(f"the {what} is not a URL ({exc})") from None
    return parts


def _origin(parts: SplitResult, what: str) -> str:
    scheme = _HTTP_SCHEME.get(parts.scheme.lower())
    if scheme is None:
        got = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise LinkError(f"a {what} starts with https:// or http:// (or wss://, ws://); it has {got}")
    if not parts.hostname:
        raise LinkError(f"the {what} names no host")
    if "@" in parts.netloc:
        raise LinkError(f"the {what} must not carry a user name or password")
    return f"{scheme}://{parts.netloc}"


def _fragment_fields(fragment: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in fragment.split("&"):
        name, eq, value = part.partition("=")
        if not eq:
            raise LinkError(f"the link's fragment has {part!r}, which is not a name=value field")
        if name in fields:
            raise LinkError(f"the link's fragment has the field {name!r} twice")
        if name not in ("k", "s"):
            raise LinkError(f"the link's fragment has an unknown field {name!r}; it holds only k and s")
        fields[name] = value
    # A link cut short loses its end: say "truncated" before "missing" when a value is short.
    for name, expected, what in (("k", KEY_CHARS, "key (k)"), ("s", ID_CHARS, "secret (s)")):
        if name in fields:
            _check_length(fields[name], expected, what)
    for name, what in (("k", "key"), ("s", "secret")):
        if name not in fields:
            raise LinkError(f"the link has no {what} ({name}=...): copy the whole link")
    return fields


def _key_value(text: str) -> bytes:
    _check_length(text, KEY_CHARS, "key (k)")
    key = b64u_decode(text)
    if key is None or len(key) != KEY_BYTES:
        raise LinkError("the key (k) is not valid base64url: the link has been changed")
    return key


def _id_value(text: str, what: str) -> str:
    _check_length(text, ID_CHARS, what)
    value = b64u_decode(text)
    if value is None or len(value) != ID_BYTES:
        raise LinkError(f"the {what} is not valid base64url: the link has been changed")
    return text


def _check_length(text: str, expected: int, what: str) -> None:
    if len(text) < expected:
        raise LinkError(
            f"the {what} is {len(text)} characters long, not {expected}: the link is truncated; "
            "copy the whole link"
        )
    if len(text) > expected:
        raise LinkError(
            f"the {what} is {len(text)} characters long, not {expected}: the link has been changed"
        )
