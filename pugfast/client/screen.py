"""The terminal's screen for ``pugfast chat``: what others said above, the line being typed on
the last row. Sans-I/O: keystrokes in, rows and drawing commands out; chat.py moves the bytes.

The layout keeps three promises (docs/client.md, "On a terminal"):

- **Nothing received is ever erased or overwritten.** The terminal does not echo; the client
  draws the line being typed itself, on the last row, as irssi, weechat and prompt_toolkit do.
  To show something, it clears that one row (``CLEAR_ROW``: carriage return, erase to the end
  of the row), writes the new rows, and draws the typed line again below them. Since the typed
  line never takes more than one row (it scrolls sideways), the erase touches nothing else.
- **No message can draw a line that looks like another's header.** Every row is cut to fit
  (text.wrap, by an upper bound of each character's width, one column short of the edge), so
  the terminal never wraps a row itself; a message's later rows, from its own line breaks or
  from cutting, are indented under its text. Only a header (``HH:MM name: ``) or a notice
  (``-- ``) starts at column 0.
- **Nothing received drives the terminal.** Text is escaped (text.escape and text.visible)
  before it is laid out.
"""

from __future__ import annotations

import codecs

from .text import cell_width, escape, text_width, visible, wrap

CLEAR_ROW = "\r\x1b[K"
PROMPT = "> "
SCROLLED = "<"
# Narrower terminals are laid out as if they had this many columns (and may wrap).
MIN_COLUMNS = 20
# Continuation rows are indented under the text, or by this much when the header is wider
# than half the row.
SMALL_INDENT = 2
NOTICE = "-- "


def _usable(columns: int) -> int:
    # One column short of the edge: a row that fills the last column leaves some terminals
    # waiting to wrap, and the next character would start a row at column 0.
    return max(MIN_COLUMNS, columns) - 1


def block(head: str, lines: list[str], columns: int) -> list[str]:
    """Rows for ``head`` followed by ``lines`` (already escaped): the first line after the
    head, each later line on rows of its own, every row after the first indented under the
    text, every row within the usable width."""
    width = _usable(columns)
    head_width = text_width(head)
    indent = head_width if head_width * 2 <= width else SMALL_INDENT
    pad = " " * indent
    first, *rest = wrap(head + lines[0], width, width - indent)
    rows = [first, *(pad + row for row in rest)]
    for line in lines[1:]:
        rows.extend(pad + row for row in wrap(line, width - indent, width - indent))
    return rows


def message_rows(clock: str, name: str, text: str, columns: int, *, mine: bool = False) -> list[str]:
    """A message as rows: ``HH:MM name: text``, its lines under each other."""
    head = f"{clock} {escape(name)}{' (you)' if mine else ''}: "
    return block(head, [escape(line) for line in text.split("\n")], columns)


def notice_rows(text: str, columns: int, head: str = NOTICE) -> list[str]:
    """A notice (presence, time left, errors) as rows, after ``head``."""
    return block(head, [visible(text)], columns)


def prompt_row(typed: str, columns: int) -> str:
    """The row showing the line being typed: the prompt and as much of the line's end as fits
    (control characters shown escaped), marked when its start has scrolled out of view."""
    shown = visible(typed)
    room = _usable(columns) - len(PROMPT)
    if text_width(shown) <= room:
        return PROMPT + shown
    width = 0
    start = len(shown)
    while start > 0 and width + cell_width(shown[start - 1]) <= room:
        start -= 1
        width += cell_width(shown[start])
    return SCROLLED + PROMPT[len(SCROLLED):] + shown[start:]


class LineEditor:
    """The line being typed, from raw keystrokes (the terminal in non-canonical mode, without
    echo). ``feed`` returns what the keys completed: a line (Enter), or None for the end of
    input (Ctrl-D on an empty line).

    Keys understood: printable text and tab (inserted), Enter, Backspace, Ctrl-U (clear the
    line), Ctrl-W (delete a word), Ctrl-D. Escape sequences (arrow keys, function keys) and
    other control keys are ignored. Ctrl-C and Ctrl-Z stay with the terminal (signals).
    """

    def __init__(self) -> None:
        self.typed = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""  # an escape sequence being skipped: "", "\x1b", "\x1b[" or "\x1bO"

    def feed(self, data: bytes) -> list[str | None]:
        done: list[str | None] = []
        for ch in self._decoder.decode(data):
            if self._escape:
                self._skip(ch)
            elif ch in "\r\n":
                done.append(self.typed)
                self.typed = ""
            elif ch in "\x7f\x08":
                self.typed = self.typed[:-1]
            elif ch == "\x15":
                self.typed = ""
            elif ch == "\x17":
                self.typed = self.typed.rstrip(" ")
                self.typed = self.typed[: self.typed.rfind(" ") + 1]
            elif ch == "\x04":
                if not self.typed:
                    done.append(None)
            elif ch == "\x1b":
                self._escape = ch
            elif ch == "\t" or (ch >= " " and ch != "\x7f"):
                self.typed += ch
        return done

    def _skip(self, ch: str) -> None:
        if self._escape == "\x1b":
            # ESC [ starts a CSI sequence, ESC O an SS3 key; ESC and anything else is Alt+key.
            self._escape = "\x1b" + ch if ch in "[O" else ""
        elif self._escape == "\x1bO" or "\x40" <= ch <= "\x7e":
            self._escape = ""
