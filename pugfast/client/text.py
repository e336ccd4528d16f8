"""What other members (and the relay) write, made safe to show: pure functions, no I/O.

Everything a client shows that it did not type itself is hostile input. Three rules keep it
from crashing a client, driving a terminal or forging a line (docs/client.md, "Text that
others send"):

- **Repair.** JSON can carry a lone surrogate (``"\\ud800"``), which is not Unicode and
  cannot be written as UTF-8. ``repair`` turns each into U+FFFD, as the browser's
  ``toWellFormed`` does, so both clients show the same text.
- **Escape.** Every control character (category Cc), every format character (Cf: the bidi
  overrides and isolates, zero-width spaces and joiners, the BOM, ...), the line and paragraph
  separators (Zl, Zp) and any surrogate left over are shown as ``\\u202e`` (``\\U000e0001``
  past U+FFFF), a tab as ``\\u0009``. ``escape`` also writes a line break as ``\\n`` and a
  backslash as ``\\\\``, so that a message is one line for any line splitter and the
  escapes are unambiguous; ``unescape`` reads the same forms back from a typed line.
- **Measure.** ``cell_width`` is an upper bound of the columns a terminal gives a character,
  so that rows wrapped by it never reach the terminal's edge, where the terminal would wrap
  them again at column 0 (``wrap``).
"""

from __future__ import annotations

import re
import unicodedata

REPLACEMENT = "\ufffd"
# Categories shown escaped: controls, format characters, line and paragraph separators, and
# surrogates (none survive repair; listed so that escape is safe on its own).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Candidates for escaping: every ASCII control, the backslash, and anything past ASCII (whose
# category is then looked up). Plain ASCII text never calls back.
_CANDIDATE = re.compile(r"[\x00-\x1f\x7f\\]|[^\x00-\x7f]")
_TYPED_ESCAPE = re.compile(r"\\(\\|n|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8})")
_NAMED = {"\\": "\\\\", "\n": "\\n"}


def repair(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (a Python ``str`` holds a
    surrogate only when it is lone: a valid pair decodes to one character)."""
    return _LONE_SURROGATE.sub(REPLACEMENT, text)


def is_escaped(ch: str) -> bool:
    """True for a character never shown raw: a control, format, line or paragraph separator,
    or surrogate."""
    return unicodedata.category(ch) in _ESCAPED_CATEGORIES


def code_escape(ch: str) -> str:
    """``\\u202e`` for a character in the Basic Multilingual Plane, ``\\U000e0001`` past it."""
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _one_line(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    return code_escape(ch) if is_escaped(ch) else ch


def _shown(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return ch
    return code_escape(ch) if is_escaped(ch) else ch


def escape(text: str) -> str:
    """``text`` on one line, every character shown as itself or escaped: a backslash as
    ``\\\\``, a line break as ``\\n``, and every other control (tab included), format,
    line- or paragraph-separator character as ``\\uXXXX`` (or ``\\UXXXXXXXX``).

    The result holds no character that ``str.splitlines`` splits on, and nothing a terminal
    obeys; ``unescape(escape(text)) == text`` for any well-formed text.
    """
    return _CANDIDATE.sub(_one_line, text)


def visible(text: str) -> str:
    """``text`` with the characters ``escape`` escapes shown escaped, but backslashes as they
    are: for notices and errors, which quote names the relay chose and answers it gave, and
    must not drive the terminal either."""
    return _CANDIDATE.sub(_shown, text)


def unescape(line: str) -> str:
    """The message a typed line stands for: ``\\n`` is a line break, ``\\\\`` a backslash,
    ``\\uXXXX`` and ``\\UXXXXXXXX`` that character; any other backslash, and an escape of a
    surrogate or past U+10FFFF, stands for itself."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in ("\\", "n"):
            return "\\" if code == "\\" else "\n"
        value = int(code[1:], 16)
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            return match.group()
        return chr(value)

    return _TYPED_ESCAPE.sub(one, line)


def cell_width(ch: str) -> int:
    """At most how many columns a terminal gives ``ch``: 2 for wide and fullwidth characters,
    unassigned and private-use code points, and everything from U+1F000 on (emoji, whose
    width terminals disagree on); 1 for the rest, combining marks included. Over-counting
    only wraps a row early; under-counting would let it reach the edge. East Asian
    "ambiguous" characters (é, §, ...) count 1, as in every UTF-8 locale but the legacy CJK
    ones. Call it on characters ``escape`` leaves as they are."""
    if ch < "\x80":
        return 1
    if ch >= "\U0001f000" or unicodedata.east_asian_width(ch) in ("W", "F"):
        return 2
    return 2 if unicodedata.category(ch) in ("Cn", "Co") else 1


def text_width(text: str) -> int:
    """The sum of ``cell_width`` over ``text``."""
    if text.isascii():
        return len(text)
    return sum(cell_width(ch) for ch in text)


# An escape written by escape() or visible(), kept whole when a row is cut.
_UNIT = re.compile(r"\\(?:u[0-9a-f]{4}|U[0-9a-f]{8}|[\\n])|.", re.S)


def wrap(text: str, first: int, rest: int) -> list[str]:
    """Cuts already-escaped ``text`` into rows of at most ``first`` columns (the first row)
    and ``rest`` columns (the others), by ``cell_width``. An escape is never cut; a row ends
    after a space when one falls in its second half, so words mostly stay whole. Returns at
    least one row (empty for empty text)."""
    rows: list[str] = []
    row: list[tuple[str, int]] = []
    width = 0
    limit = max(1, first)
    for unit in _UNIT.findall(text):
        w = len(unit) if len(unit) > 1 else cell_width(unit)
        while row and width + w > limit:
            cut = _cut_at(row, limit)
            rows.append("".join(u for u, _ in row[:cut]))
            row = row[cut:]
            width = sum(uw for _, uw in row)
            limit = max(1, rest)
        row.append((unit, w))
        width += w
    rows.append("".join(u for u, _ in row))
    return rows


def _cut_at(row: list[tuple[str, int]], limit: int) -> int:
    """Where to end a full row: after its last space if that is past half the limit, else
    before the unit that does not fit (never at 0: a row holds at least one unit)."""
    width = 0
    cut = len(row)
    fits = 0
    for i, (unit, w) in enumerate(row):
        width += w
        if width > limit:
            break
        fits = i + 1
        if unit == " " and width * 2 > limit:
            cut = i + 1
    if cut == len(row) or cut > fits:
        cut = fits
    return max(1, cut)
