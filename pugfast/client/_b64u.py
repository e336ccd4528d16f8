"""Base64url without padding (RFC 4648 §5), decoded strictly, as static/js/encoding.js does."""

from __future__ import annotations

import base64
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes | None:
    """The bytes ``text`` is the canonical encoding of, or None: for a foreign character,
    padding, an impossible length, or unused low bits set in the last character. Being strict
    means a link altered in transit is refused rather than silently "repaired"."""
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Re-encoding catches the stray low bits that the decoder ignores.
    return data if b64u_encode(data) == text else None
