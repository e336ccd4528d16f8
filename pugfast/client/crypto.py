"""The room's encryption, to the byte as the browser does it (docs/protocol.md §7.2, static/js/crypto.js):

    ciphertext = 0x01 || iv (12 random bytes) || AES-256-GCM(key, iv, padded plaintext,
                                                            aad = ASCII(room id))

The plaintext is padded with spaces to a size bucket (256, 512, 1024, ... bytes), so lengths
leak only the bucket. Pure functions, no I/O. PyCA ``cryptography`` is imported on first use,
so that importing this module (and ``pugfast serve``) never needs it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import DecryptError, MissingDependency

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 0x01
KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
OVERHEAD = 1 + IV_BYTES + TAG_BYTES
SMALLEST_BUCKET = 256
_SPACE = b" "


def cipher(key: bytes) -> AESGCM:
    """An AES-256-GCM cipher for the room key (32 bytes).

    Raises MissingDependency without the ``client`` extra, ValueError for a key of another size.
    """
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise MissingDependency() from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"a room key is {KEY_BYTES} bytes, not {len(key)}")
    return AESGCM(key)


def bucket_for(length: int) -> int:
    """The size a plaintext of ``length`` bytes is padded to: the smallest of 256, 512, 1024, ...
    that holds it."""
    bucket = SMALLEST_BUCKET
    while bucket < length:
        bucket *= 2
    return bucket


def largest_bucket(max_message_bytes: int, overhead: int = OVERHEAD) -> int:
    """The largest plaintext bucket whose ciphertext (``overhead`` bytes more) fits in
    ``max_message_bytes``, or 0 if none does: the most plaintext bytes one message can carry."""
    bucket = 0
    b = SMALLEST_BUCKET
    while b + overhead <= max_message_bytes:
        bucket = b
        b *= 2
    return bucket


def pad(plaintext: bytes) -> bytes:
    """``plaintext`` followed by spaces up to its bucket (JSON ignores trailing spaces)."""
    return plaintext.ljust(bucket_for(len(plaintext)), _SPACE)


def seal(aead: AESGCM, room: str, plaintext: bytes, iv: bytes | None = None) -> bytes:
    """Pads and encrypts ``plaintext`` for the room ``room`` (its id is the associated data).

    ``iv`` is for test vectors only: every real message must get fresh random bytes, which is
    what leaving it out does.
    """
    if iv is None:
        iv = os.urandom(IV_BYTES)
    elif len(iv) != IV_BYTES:
        raise ValueError(f"an IV is {IV_BYTES} bytes, not {len(iv)}")
    return bytes([VERSION]) + iv + aead.encrypt(iv, pad(plaintext), room.encode("ascii"))


def unseal(aead: AESGCM, room: str, message: bytes) -> bytes:
    """The padded plaintext inside ``message``.

    Raises DecryptError for a message too short to hold an IV and a tag, an unknown version,
    or one that fails authentication (wrong key, wrong room, altered bytes).
    """
    from cryptography.exceptions import InvalidTag

    if len(message) < OVERHEAD:
        raise DecryptError("could not be decrypted: too short")
    if message[0] != VERSION:
        raise DecryptError(f"could not be decrypted: unknown version {message[0]}")
    try:
        return aead.decrypt(message[1 : 1 + IV_BYTES], message[1 + IV_BYTES :], room.encode("ascii"))
    except InvalidTag:
        raise DecryptError("could not be decrypted: authentication failed") from None
