"""The plaintext inside each ciphertext (docs/client.md, "Plaintext"), as static/js/message.js
writes and reads it:

    {"text": string, "ts": ms, "sid": b64u(8 random bytes), "n": counter from 1}

Written as ``JSON.stringify`` writes it (no spaces, non-ASCII as UTF-8), so that a message
measures the same bytes here as in the browser. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from ._b64u import b64u_decode, b64u_encode
from .errors import MessageFormatError
from .text import repair

SID_BYTES = 8
# Number.isSafeInteger's bound: the browser refuses integers it cannot represent exactly.
MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Plaintext:
    text: str
    ts: int
    sid: str
    n: int
    upgrade: bool = False


def new_sid() -> str:
    """A fresh sender id: base64url of 8 random bytes, one per connection (each join)."""
    return b64u_encode(secrets.token_bytes(SID_BYTES))


def encode_text(text: str, ts: int) -> bytes:
    """The plaintext of a protocol-version-2 message, ``{"text": ..., "ts": ...}``, written as
    ``JSON.stringify`` writes it (the browser's ``encodeText``)."""
    body = json.dumps({"text": text, "ts": ts}, ensure_ascii=False, separators=(",", ":"))
    return body.encode("utf-8", "backslashreplace")


def decode_text(padded: bytes) -> tuple[str, int]:
    """The text (lone surrogates repaired) and ``ts`` of a decrypted version-2 plaintext.

    Raises MessageFormatError when it is not UTF-8 JSON, not an object, or ``text`` is not a
    string or ``ts`` not a non-negative integer.
    """
    value = _object(padded)
    text, ts = value.get("text"), _safe_integer(value.get("ts"))
    if not isinstance(text, str):
        raise MessageFormatError("malformed message: text")
    if ts is None or ts < 0:
        raise MessageFormatError("malformed message: ts")
    return repair(text), ts


def _object(padded: bytes) -> dict[str, Any]:
    try:
        value = json.loads(padded.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError):
        raise MessageFormatError("malformed message: not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise MessageFormatError("malformed message: not an object")
    return value


def encode_message(text: str, ts: int, sid: str, n: int, *, upgrade: int | None = None) -> bytes:
    """The UTF-8 JSON for one version-1 message, byte for byte what the browser's
    ``encodeMessage`` makes; ``upgrade`` marks the notice new clients send to older ones."""
    fields: dict[str, Any] = {"text": text, "ts": ts, "sid": sid, "n": n}
    if upgrade is not None:
        fields["upgrade"] = upgrade
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate cannot be UTF-8; JSON.stringify writes it as the escape \udXXX, and so
    # does "backslashreplace" (it can only occur inside the text string).
    return body.encode("utf-8", "backslashreplace")


def decode_message(padded: bytes) -> Plaintext:
    """Parses a decrypted, padded plaintext; unknown fields are ignored. A lone surrogate in
    ``text`` (JSON can escape one; it is not Unicode) is repaired to U+FFFD, as the browser
    does, so the text can always be written out.

    Raises MessageFormatError when it is not UTF-8 JSON, not an object, or a field is missing
    or of the wrong kind (``text`` a string, ``ts`` a non-negative integer, ``sid`` 8 bytes of
    base64url, ``n`` a positive integer).
    """
    value = _object(padded)
    text, ts, sid, n = (value.get(name) for name in ("text", "ts", "sid", "n"))
    if not isinstance(text, str):
        raise MessageFormatError("malformed message: text")
    ts = _safe_integer(ts)
    if ts is None or ts < 0:
        raise MessageFormatError("malformed message: ts")
    if not isinstance(sid, str) or (raw := b64u_decode(sid)) is None or len(raw) != SID_BYTES:
        raise MessageFormatError("malformed message: sid")
    n = _safe_integer(n)
    if n is None or n < 1:
        raise MessageFormatError("malformed message: n")
    return Plaintext(repair(text), ts, sid, n, value.get("upgrade") is not None)


def _safe_integer(value: Any) -> int | None:
    # JSON has one number type: the browser takes 5.0 as the integer 5, so this does too.
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    return None


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; the browser's JSON.parse refuses them.
    raise ValueError(name)
