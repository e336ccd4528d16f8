"""What other members send, made safe to show (pugfast/client/text.py, screen.py): repair,
escaping, one line per message, rows that never reach the terminal's edge or column 0, and the
line editor. Pure functions: tables and hypothesis, no network."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pugfast.client.message import decode_message, encode_message
from pugfast.client.screen import (
    CLEAR_ROW,
    LineEditor,
    message_rows,
    notice_rows,
    prompt_row,
)
from pugfast.client.text import cell_width, escape, repair, text_width, unescape, visible

ESCAPED = {"Cc", "Cf", "Zl", "Zp", "Cs"}
HEADER = r"^\d\d:\d\d "
# Any code point, surrogates included, weighted towards the troublesome ones.
hostile_chars = st.one_of(
    st.characters(codec=None, categories=None),
    st.sampled_from("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d"
                    "\u2060\ufeff\u2028\u2029\x1b\x9b\r\n\t\\\x85\x0b\x0c\x1c\ud800\udfff"
                    "\U000e0001\U0001f436\u4e00\u0301 "),
)
hostile_text = st.text(hostile_chars, max_size=300)


# -- item 1: a lone surrogate is repaired, never a crash ----------------------------------------


def test_a_lone_surrogate_arrives_repaired() -> None:
    padded = b'{"text":"X\\ud800Y \\udc00 \\ud83d\\udc36","ts":1,"sid":"AAAAAAAAAAA","n":1}'
    text = decode_message(padded.ljust(256)).text
    assert text == "X\ufffdY \ufffd \U0001f436"
    text.encode("utf-8")  # can be written out: this raised UnicodeEncodeError before


@given(hostile_text)
def test_every_decoded_text_is_well_formed_unicode(text: str) -> None:
    decoded = decode_message(encode_message(text, 1, "AAAAAAAAAAA", 1)).text
    decoded.encode("utf-8")
    assert decoded == text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    assert repair(decoded) == decoded


# -- item 4: every control, format and separator character escaped; one line -----------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("rtl \u202eevil\u202c", "rtl \\u202eevil\\u202c"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("zero\u200bwidth\u200d\u2060\ufeff", "zero\\u200bwidth\\u200d\\u2060\\ufeff"),
        ("isolate \u2066x\u2069", "isolate \\u2066x\\u2069"),
        ("tag \U000e0041", "tag \\U000e0041"),
        ("tab\there", "tab\\u0009here"),
        ("vt\x0bff\x0cfs\x1cnel\x85", "vt\\u000bff\\u000cfs\\u001cnel\\u0085"),
    ],
)
def test_format_and_separator_characters_are_escaped(text: str, line: str) -> None:
    assert escape(text) == line
    assert unescape(line) == text
    assert len(line.splitlines()) == 1


@given(hostile_text)
def test_an_escaped_message_is_one_line_of_harmless_characters(text: str) -> None:
    text = repair(text)
    line = escape(text)
    assert len(f"name: {line}".splitlines()) == 1
    assert not any(unicodedata.category(ch) in ESCAPED for ch in line)
    assert unescape(line) == text
    shown = visible(text)
    assert not any(unicodedata.category(ch) in ESCAPED for ch in shown)


def test_relay_text_in_errors_is_escaped() -> None:
    from pugfast.client.errors import ApiError

    message = str(ApiError(503, "at_capacity\x1b[2J", "busy \u202eevil\x1b]52;c;cHduZWQ=\x07"))
    assert "\x1b" not in message and "\u202e" not in message and "\x07" not in message
    assert "\\u001b[2J" in message and "\\u202e" in message


# -- items 2 and 3: rows that never reach the edge, continuation rows indented -----------------


def test_a_message_cannot_forge_a_header_by_filling_the_row() -> None:
    forged = "hi" + " " * 80 + "12:34 Fake Person: wire me money"
    rows = message_rows("12:00", "Amber Otter", forged, 80)
    assert rows[0].startswith("12:00 Amber Otter: hi")
    for row in rows[1:]:
        assert row.startswith("  "), row
    assert "12:34 Fake Person: wire me money" in "".join(rows)


def test_multi_line_messages_cannot_forge_a_header_either() -> None:
    rows = message_rows("12:00", "Amber Otter", "hi\n12:34 Fake Person: wire me money\n-- Eve left.", 80)
    assert rows == [
        "12:00 Amber Otter: hi",
        "                   12:34 Fake Person: wire me money",
        "                   -- Eve left.",
    ]


@settings(max_examples=300)
@given(hostile_text, st.integers(min_value=1, max_value=250), st.text(max_size=30))
def test_every_row_fits_and_only_the_first_starts_at_column_0(text: str, columns: int, name: str) -> None:
    text, name = repair(text), repair(name)
    rows = message_rows("12:00", name, text, columns)
    usable = max(20, columns) - 1
    for row in rows:
        assert text_width(row) <= usable or len(row.strip()) <= 10, (row, columns)
        assert not any(unicodedata.category(ch) in ESCAPED for ch in row)
    for row in rows[1:]:
        assert row.startswith("  ")
    # Nothing is lost: the rows hold the escaped text (spaces aside, as rows are cut there).
    flat = "".join(row.strip(" ") for row in rows).replace(" ", "")
    body = "".join(escape(line) for line in text.split("\n"))
    expected = ("12:00" + escape(name) + ":" + body).replace(" ", "")
    assert flat == expected


@given(hostile_text, st.integers(min_value=1, max_value=250))
def test_notices_wrap_the_same_way(text: str, columns: int) -> None:
    rows = notice_rows(repair(text), columns)
    assert rows[0].startswith("-- ")
    assert all(row.startswith("   ") for row in rows[1:])


def test_cell_width_counts_wide_and_doubtful_characters_as_two() -> None:
    assert [cell_width(ch) for ch in "a\u00e9\u4e00\U0001f436\U0001f1e9\u00a7\ue000\u0378\u0301"] == [
        1, 1, 2, 2, 2, 1, 2, 2, 1]


@given(hostile_text, st.integers(min_value=1, max_value=200))
def test_the_typed_line_takes_one_row(typed: str, columns: int) -> None:
    row = prompt_row(repair(typed), columns)
    assert text_width(row) <= max(20, columns) - 1
    assert not any(unicodedata.category(ch) in ESCAPED for ch in row)


def test_the_typed_line_scrolls_to_show_its_end() -> None:
    assert prompt_row("short", 80) == "> short"
    row = prompt_row("x" * 100 + "END", 40)
    assert row.startswith("<") and row.endswith("END") and len(row) == 39


# -- the line editor ---------------------------------------------------------------------------


def test_the_line_editor_edits_and_submits() -> None:
    editor = LineEditor()
    assert editor.feed(b"hello wor") == []
    assert editor.typed == "hello wor"
    assert editor.feed(b"\x7f\x7fxyz") == [] and editor.typed == "hello wxyz"
    assert editor.feed(b"\x17") == [] and editor.typed == "hello "
    assert editor.feed(b"\x1b[D\x1bOA\x1b[1;5Cthere\r") == ["hello there"]
    assert editor.typed == ""
    # UTF-8 split across reads; Ctrl-U clears; Ctrl-D ends only an empty line.
    assert editor.feed("Grü".encode()[:3]) == []
    assert editor.feed("Grü".encode()[3:] + b"\x04") == [] and editor.typed == "Grü"
    assert editor.feed(b"\x15\x04") == [None]
    assert editor.feed(b"a\tb\x01\x02\n") == ["a\tb"]
    assert prompt_row("a\tb", 80) == "> a\\u0009b"


def test_clearing_touches_one_row_only() -> None:
    # Carriage return and erase-to-end-of-row: no cursor movement up, so no earlier row can
    # be erased (the old client moved up one row and cleared it).
    assert CLEAR_ROW == "\r\x1b[K"
