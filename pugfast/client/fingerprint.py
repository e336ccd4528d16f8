"""The key fingerprint, version 2: nine words that people compare out of band, the same words
the browser shows for the same link (docs/client.md, "Key fingerprint").

    bits = PBKDF2-HMAC-SHA256(password = raw 32-byte key,
                              salt = "pugfast-fingerprint-v2:" + room id (ASCII),
                              iterations = 65536, length = 16 bytes)

The first 99 bits, most significant bit of the first byte first, are read as nine big-endian
11-bit numbers; each picks a word of the 2048-word list in static/js/words.js. The list is
read from that file, so the two clients cannot drift apart. Pure functions apart from reading
the list once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ._static import static_dir
from .errors import WordListError

SALT_PREFIX = b"pugfast-fingerprint-v2:"
ITERATIONS = 65536
WORD_COUNT = 2048
WORD_BITS = 11
WORDS_SHOWN = 9


def load_words(path: Path | None = None) -> tuple[str, ...]:
    """The fingerprint word list from static/js/words.js (or ``path``).

    Takes the text between the file's first ``[`` and last ``]`` as a JSON array. Raises
    WordListError when the file cannot be read or parsed, or does not hold exactly 2048
    distinct strings.
    """
    if path is None:
        return _packaged_words()
    return _read_words(path)


@functools.lru_cache(maxsize=1)
def _packaged_words() -> tuple[str, ...]:
    return _read_words(static_dir() / "js" / "words.js")


def _read_words(path: Path) -> tuple[str, ...]:
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WordListError(f"cannot read the fingerprint word list {path}: {exc.strerror}") from None
    start, end = source.find("["), source.rfind("]")
    try:
        words = json.loads(source[start : end + 1]) if 0 <= start < end else None
    except ValueError:
        words = None
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise WordListError(f"{path} does not hold a JSON array of words between its brackets")
    if len(words) != WORD_COUNT or len(set(words)) != WORD_COUNT:
        raise WordListError(
            f"{path} holds {len(words)} words ({len(set(words))} distinct); the version 2 "
            f"fingerprint needs exactly {WORD_COUNT} distinct words"
        )
    return tuple(words)


def fingerprint(key: bytes, room: str, words: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The nine fingerprint words for the raw room key ``key`` and the room id ``room``.

    Raises WordListError when the word list is unusable (see load_words).
    """
    if words is None:
        words = load_words()
    elif len(words) != WORD_COUNT:
        raise WordListError(f"the fingerprint needs {WORD_COUNT} words, not {len(words)}")
    salt = SALT_PREFIX + room.encode("ascii")
    bits = int.from_bytes(hashlib.pbkdf2_hmac("sha256", key, salt, ITERATIONS, 16), "big")
    total = 16 * 8
    return tuple(
        words[(bits >> (total - WORD_BITS * (i + 1))) & (WORD_COUNT - 1)] for i in range(WORDS_SHOWN)
    )


def grouped(words: tuple[str, ...] | list[str]) -> str:
    """The words in groups of three, as people read them aloud: ``a b c   d e f   g h i``."""
    return "   ".join(" ".join(words[i : i + 3]) for i in range(0, len(words), 3))
