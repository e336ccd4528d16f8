"""``pugfast chat``: a room from a terminal or a script.

On a terminal (standard input is a tty) it is a line-based chat: received messages print as
``HH:MM name: text``, presence and the time left as ``-- `` notices, and ``/who``, ``/purge``,
``/quit`` and Ctrl-D are understood. Otherwise (pipes, files) every line of standard input is
one message, every received message is one line ``name: text`` on standard output, and notices
go to standard error. In both, ``\\n`` in a line stands for a line break and ``\\\\`` for a
backslash; received text is written the same way (docs/client.md lists every rule).

The exit status says how the session ended (EXIT_CODES below).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .create import create_room
from .errors import (
    ClientError,
    LinkError,
    MessageTooLarge,
    MissingDependency,
    NoSuchRoom,
    NotConnected,
    NotCreator,
    RelayUnreachable,
    RoomFull,
    WrongSecret,
)
from .events import Ended, Joined, KeyWarning, Left, Message, Overflow, RelayError, Replayed, Undecryptable
from .fingerprint import fingerprint, grouped
from .link import Link, parse_link, parse_relay_url
from .room import Room, now_ms
from .screen import CLEAR_ROW, LineEditor, message_rows, notice_rows, prompt_row
from .text import escape, unescape, visible

EXIT_LEFT = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PURGED = 3
EXIT_EXPIRED = 4
EXIT_WRONG_LINK = 5
EXIT_FULL = 6
EXIT_NO_SUCH_ROOM = 7
EXIT_UNREACHABLE = 8

EXIT_CODES = {
    EXIT_LEFT: "you left: /quit, Ctrl-D, end of standard input, SIGINT or SIGTERM",
    EXIT_ERROR: "connection lost, or another error (the client extra missing, a relay error)",
    EXIT_USAGE: "bad usage: an unknown option, a missing argument, a closed standard input",
    EXIT_PURGED: "the room was purged by its creator",
    EXIT_EXPIRED: "the room's time ran out",
    EXIT_WRONG_LINK: "wrong link: malformed or truncated, or its secret refused by the relay",
    EXIT_FULL: "the room is full",
    EXIT_NO_SUCH_ROOM: "no such room: it never existed, or it has ended",
    EXIT_UNREACHABLE: "the relay cannot be reached (refused, no such host, timeout, TLS)",
}

_ENDING_EXIT = {"left": EXIT_LEFT, "purged": EXIT_PURGED, "expired": EXIT_EXPIRED, "lost": EXIT_ERROR}
_ENDING_NOTICE = {
    "left": "You left the room.",
    "purged": "The room was purged by its creator. Nothing said in it is kept anywhere.",
    "expired": "The room's time ran out; the relay dropped it with everything that passed through it.",
}
# Sending is paced below the relay's default rate limit (30 messages a second, bursts of 60:
# docs/protocol.md §6.5), so that a script piping in a long file loses nothing to it.
SEND_RATE = 25.0
SEND_BURST = 50
# Remind people of the time left when this many seconds remain.
_REMINDERS = (600, 60)
_HELP = ("Type a message and press Enter (\\n makes a line break). /who lists who is here, "
         "/purge ends the room for everyone (creator only), /quit or Ctrl-D leaves.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Raw, so the exit-status table keeps its lines; the description is wrapped here instead.
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = textwrap.fill(parser.description or "", 90)
    parser.epilog = "exit status:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    parser.add_argument("target", metavar="LINK",
                        help="the room link (with --create: the relay's URL, e.g. https://relay.example)")
    parser.add_argument("--create", action="store_true",
                        help="create a room on the relay at the URL (solving its proof of work), "
                             "print its link, then chat")
    parser.add_argument("--ttl", type=int, metavar="S", help="with --create: the room's lifetime in seconds")
    parser.add_argument("--capacity", type=int, metavar="N", help="with --create: how many people it holds")
    parser.add_argument("--insecure", action="store_true",
                        help="do not check the relay's TLS certificate (self-signed test relays only)")


def main(args: argparse.Namespace) -> int:
    """Runs ``pugfast chat`` with parsed arguments; returns the exit status."""
    if not args.create and (args.ttl is not None or args.capacity is not None):
        return _fail("--ttl and --capacity go with --create", EXIT_USAGE)
    try:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    except ImportError:
        return _fail(str(MissingDependency()), EXIT_ERROR)
    try:
        os.fstat(0)
    except OSError:
        return _fail("standard input is closed; give messages on it, or a terminal", EXIT_USAGE)
    ui: Output = Terminal() if os.isatty(0) else Pipe()
    try:
        return asyncio.run(Chat(args, ui).run())
    except KeyboardInterrupt:
        return EXIT_LEFT


def _fail(message: str, code: int) -> int:
    print(f"pugfast chat: error: {message}", file=sys.stderr, flush=True)
    return code


# -- time --------------------------------------------------------------------------------------


def clock(ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ms / 1000))


def duration(seconds: float) -> str:
    """``45 seconds``, ``12 minutes``, ``2 hours 5 minutes``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} second{'s' * (seconds != 1)}"
    hours, minutes = divmod(seconds // 60, 60)
    parts = [f"{hours} hour{'s' * (hours != 1)}"] if hours else []
    if minutes or not hours:
        parts.append(f"{minutes} minute{'s' * (minutes != 1)}")
    return " ".join(parts)


# -- the two faces -------------------------------------------------------------------------


class Output:
    """Where a session's lines go, and what its standard input means."""

    # Whether a person types at it: lines starting with "/" are commands, a line sent is shown
    # back, and notices need no quoting of what they are about.
    interactive = False

    def signal_handlers(self) -> dict[int, Callable[[], None]]:
        """Signals this output answers while a session runs, and how."""
        return {}

    def message(self, name: str, text: str, ts: int, *, mine: bool = False) -> None:
        raise NotImplementedError

    def notice(self, text: str) -> None:
        raise NotImplementedError

    def error(self, text: str) -> None:
        print(f"pugfast chat: error: {visible(text)}", file=sys.stderr, flush=True)

    def link(self, text: str) -> None:
        """Shows a new room's link on a line of its own, to be copied whole."""
        sys.stderr.write(f"{text}\n")
        sys.stderr.flush()

    def typed(self, chunk: bytes) -> list[str | None]:
        """The lines ``chunk`` of standard input completes; None for its end (``chunk`` is
        b"" at the end of the input)."""
        raise NotImplementedError

    def progress(self, tries: int, difficulty: int) -> None:
        """Shows the proof-of-work search going on (only where a line can be redrawn)."""

    def progress_done(self) -> None:
        """Ends the progress line, if one was drawn."""

    def start(self) -> None:
        """Takes over the terminal, if there is one to take over."""

    def redraw(self) -> None:
        """Draws the line being typed again (the terminal was resized or resumed)."""

    def stop(self) -> None:
        """Gives the terminal back as it was."""


class LineSplitter:
    """Standard input cut into lines (``\n`` or ``\r\n``), each decoded as UTF-8 with
    invalid bytes replaced."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str | None]:
        if not chunk:
            last, self._pending = self._pending, b""
            return [*([_decode_line(last)] if last else []), None]
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        return [_decode_line(line) for line in complete]


def _decode_line(line: bytes) -> str:
    return line.removesuffix(b"\r").decode("utf-8", "replace")


class Terminal(Output):
    """A person at a terminal: received lines scroll above, the line being typed stays on the
    last row (screen.py), from ``start`` to ``stop``. Before, after, and where standard output
    is not a terminal, rows are written as they come and the terminal echoes what is typed."""

    interactive = True

    def signal_handlers(self) -> dict[int, Callable[[], None]]:
        # A resized terminal gets the typed line drawn to its new width; after Ctrl-Z and fg,
        # the shell has reset the terminal's mode, so it is set again.
        return {signal.SIGWINCH: self.redraw, signal.SIGCONT: self.resume}

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        # Received text is repaired and escaped before it gets here; an encoding that cannot
        # show a character shows "?" instead of ending the session.
        with contextlib.suppress(AttributeError, ValueError):
            out.reconfigure(errors="replace")  # type: ignore[attr-defined]
        self.editor = LineEditor()
        self._lines = LineSplitter()
        self._saved_mode: list[Any] | None = None
        self._progress_shown = False

    def columns(self) -> int:
        """The terminal's width: the real one, else $COLUMNS, else 80."""
        with contextlib.suppress(OSError):
            width = os.get_terminal_size(self.out.fileno()).columns
            if width > 0:
                return width
        return shutil.get_terminal_size((80, 24)).columns

    def _show(self, rows: list[str]) -> None:
        if self._saved_mode is None:  # not (yet, or no longer) drawing the typed line
            self.out.write("".join(f"{row}\n" for row in rows))
            self.out.flush()
            return
        # Clear the typed line's row, write the new rows where it was, draw it again below.
        text = "".join(f"{row}\n" for row in rows)  # the terminal adds the CR (ONLCR)
        self.out.write(f"{CLEAR_ROW}{text}{prompt_row(self.editor.typed, self.columns())}")
        self.out.flush()

    def message(self, name: str, text: str, ts: int, *, mine: bool = False) -> None:
        self._show(message_rows(clock(ts), name, text, self.columns(), mine=mine))

    def notice(self, text: str) -> None:
        self._show(notice_rows(text, self.columns()))

    def error(self, text: str) -> None:
        self._show(notice_rows(text, self.columns(), "pugfast chat: error: "))

    def link(self, text: str) -> None:
        self._show([text])

    def typed(self, chunk: bytes) -> list[str | None]:
        if self._saved_mode is None:
            return self._lines.feed(chunk)
        done: list[str | None] = self.editor.feed(chunk) if chunk else [None]
        self.redraw()
        return done

    def redraw(self) -> None:
        if self._saved_mode is not None:
            self.out.write(CLEAR_ROW + prompt_row(self.editor.typed, self.columns()))
            self.out.flush()

    def start(self) -> None:
        """Turns off the terminal's echo and line editing (signals stay: Ctrl-C leaves)."""
        if self._saved_mode is not None or not self.out.isatty():
            return
        with contextlib.suppress(termios.error):
            self._saved_mode = termios.tcgetattr(0)
            self.resume()

    def resume(self) -> None:
        """Applies the client's terminal mode again (after a stop with Ctrl-Z) and redraws."""
        if self._saved_mode is None:
            return
        mode = termios.tcgetattr(0)
        mode[3] &= ~(termios.ICANON | termios.ECHO)
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        termios.tcsetattr(0, termios.TCSANOW, mode)
        self.redraw()

    def stop(self) -> None:
        if self._saved_mode is None:
            return
        self.out.write(CLEAR_ROW)
        self.out.flush()
        with contextlib.suppress(termios.error):
            termios.tcsetattr(0, termios.TCSADRAIN, self._saved_mode)
        self._saved_mode = None

    def progress(self, tries: int, difficulty: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r-- Solving the proof of work (difficulty {difficulty}): {tries:,} tries")
            sys.stderr.flush()
            self._progress_shown = True

    def progress_done(self) -> None:
        if self._progress_shown:
            sys.stderr.write("\n")
            self._progress_shown = False


class Pipe(Output):
    """A script: one line per received message on standard output, notices on standard error.
    A message is one line for any line splitter (text.escape)."""

    def __init__(self) -> None:
        self._lines = LineSplitter()

    def message(self, name: str, text: str, ts: int, *, mine: bool = False) -> None:
        if mine:
            return
        sys.stdout.buffer.write(f"{escape(name)}: {escape(text)}\n".encode("utf-8", "replace"))
        sys.stdout.buffer.flush()

    def notice(self, text: str) -> None:
        sys.stderr.buffer.write(f"-- {visible(text)}\n".encode("utf-8", "replace"))
        sys.stderr.buffer.flush()

    def typed(self, chunk: bytes) -> list[str | None]:
        return self._lines.feed(chunk)


# -- standard input ------------------------------------------------------------------------


def start_reading_input(loop: asyncio.AbstractEventLoop, deliver: Callable[[bytes], None]) -> None:
    """Reads standard input in a thread and calls ``deliver(chunk)`` on the loop for each chunk
    read, then ``deliver(b"")`` at its end.

    A thread, because the same code must read a pipe, a file and a terminal, and an event loop
    cannot wait on a regular file. It reads the file descriptor itself, never sys.stdin, so it
    holds no lock the interpreter would need at exit while it waits.
    """

    def read() -> None:
        while True:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            try:
                loop.call_soon_threadsafe(deliver, chunk)
            except RuntimeError:  # the loop has closed: the session is over
                return
            if not chunk:
                return

    threading.Thread(target=read, name="pugfast-chat-stdin", daemon=True).start()


class Pace:
    """A token bucket: ``await pace.wait()`` before each message keeps to ``rate`` a second
    after a burst of ``burst``."""

    def __init__(self, rate: float = SEND_RATE, burst: int = SEND_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self.tokens, self.last = 1.0, time.monotonic()
        self.tokens -= 1


# -- the session ---------------------------------------------------------------------------


class Chat:
    """One run of ``pugfast chat``: create (maybe), join, then pass lines both ways."""

    def __init__(self, args: argparse.Namespace, ui: Output) -> None:
        self.args = args
        self.ui = ui

    async def run(self) -> int:
        try:
            if self.args.create:
                link = await self._create()
            else:
                link = parse_link(self.args.target)
            # Before connecting: an unusable word list is an installation fault, said at once.
            words = fingerprint(link.key, link.room)
            room = await Room.join(link, insecure=self.args.insecure)
        except LinkError as exc:
            self.ui.progress_done()
            return self._error(exc, EXIT_USAGE if self.args.create else EXIT_WRONG_LINK)
        except ClientError as exc:
            self.ui.progress_done()
            return self._error(exc, _error_exit(exc))
        try:
            self.ui.notice(f"Key fingerprint: {grouped(words)}")
            self.ui.notice("Compare these words with the others in the room, by phone or in person.")
            return await self._session(room)
        finally:
            await room.leave()

    def _error(self, exc: ClientError, code: int) -> int:
        self.ui.error(str(exc))
        return code

    async def _create(self) -> Link:
        origin = parse_relay_url(self.args.target)
        self.ui.notice(f"Creating a room on {origin}: solving its proof of work...")
        link = await create_room(
            origin, ttl=self.args.ttl, capacity=self.args.capacity, insecure=self.args.insecure,
            progress=self.ui.progress,
        )
        self.ui.progress_done()
        self.ui.notice("Room created. Anyone who has its link can join and read it; share it over a "
                       "channel you trust:")
        self.ui.link(str(link))
        return link

    async def _session(self, room: Room) -> int:
        ui = self.ui
        loop = asyncio.get_running_loop()
        # First, so that a signal from anyone who has seen the notices below leaves the room.
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, lambda: asyncio.ensure_future(room.leave()))
        ui.start()
        try:
            return await self._converse(room, ui, loop)
        finally:
            ui.stop()

    async def _converse(self, room: Room, ui: Output, loop: asyncio.AbstractEventLoop) -> int:
        for signum, handler in ui.signal_handlers().items():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, handler)
        here = ", ".join(
            f"{m.name}{' (you)' if m.id == room.me.id else ''}" for m in room.members.values()
        )
        ui.notice(f"You joined as {room.me.name}{' (creator)' if room.creator else ''}. "
                  f"In the room ({len(room.members)} of {room.capacity}): {here}.")
        ui.notice(self._time_left(room))
        if ui.interactive:
            ui.notice(_HELP)

        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def deliver(chunk: bytes) -> None:
            for line in ui.typed(chunk):
                lines.put_nowait(line)

        start_reading_input(loop, deliver)
        helpers = [asyncio.create_task(self._send_lines(room, lines)),
                   asyncio.create_task(self._remind(room))]
        try:
            await self._show_events(room)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        assert room.ended is not None
        return _ENDING_EXIT[room.ended.reason]

    async def _show_events(self, room: Room) -> None:
        ui = self.ui
        async for event in room:
            if isinstance(event, Message):
                try:
                    ui.message(event.sender.name, event.text, event.ts)
                except BrokenPipeError:
                    # Whoever read standard output has gone (`| head -1`): nothing more can be
                    # delivered, so leave. Later writes go nowhere instead of failing again.
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    await room.leave()
            elif isinstance(event, Joined):
                ui.notice(f"{event.member.name} joined.")
            elif isinstance(event, Left):
                ui.notice(f"{event.member.name} left.")
            elif isinstance(event, Undecryptable):
                ui.notice(f"A message from {event.sender.name} {event.reason}.")
            elif isinstance(event, KeyWarning):
                ui.notice(_key_warning(event))
            elif isinstance(event, Replayed):
                ui.notice(f"A repeated or out-of-order message from {event.sender.name} was ignored.")
            elif isinstance(event, RelayError):
                ui.notice(_relay_error(event.code))
            elif isinstance(event, Overflow):
                ui.notice(f"{event.dropped:,} events were dropped: this client could not keep up.")
            elif isinstance(event, Ended):
                ui.notice(_ENDING_NOTICE.get(event.reason) or (
                    f"{event.message[:1].upper()}{event.message[1:]}. The room may still be going on, "
                    "but messages sent while you are away will not reach you."))

    async def _send_lines(self, room: Room, lines: asyncio.Queue[str | None]) -> None:
        ui = self.ui
        pace = Pace()
        while True:
            line = await lines.get()
            if line is None:
                await room.leave()
                return
            if ui.interactive:
                if line.startswith("/") and not line.startswith("//"):
                    if await self._command(room, line.strip()):
                        return
                    continue
                line = line[1:] if line.startswith("//") else line
            text = unescape(line)
            if not text.strip():
                continue
            await pace.wait()
            try:
                delivery = await room.send(text)
            except MessageTooLarge as exc:
                ui.error(str(exc))
                continue
            except NotConnected:
                return
            if ui.interactive:
                ui.message(room.me.name, text, now_ms(), mine=True)
            if not delivery.reached and not delivery.waiting:
                ui.notice("Not delivered: nobody else is here yet. There is no history: whoever joins "
                          "later will not see it." + ("" if ui.interactive else f" ({text[:40]})"))
            elif delivery.waiting:
                names = ", ".join(m.name for m in delivery.waiting)
                present = len(delivery.reached) + len(delivery.waiting)
                ui.notice(f"Not read by {names}: their keys were still on the way. "
                          f"Read by {len(delivery.reached)} of {present}.")

    async def _command(self, room: Room, command: str) -> bool:
        """Runs a terminal command; True when the session is over."""
        ui = self.ui
        if command == "/quit":
            await room.leave()
            return True
        if command == "/who":
            for member in room.members.values():
                tags = [tag for tag, on in (("you", member.id == room.me.id),
                                            ("creator", room.is_creator(member))) if on]
                ui.notice(f"{member.name}{' (' + ', '.join(tags) + ')' if tags else ''}")
            ui.notice(f"{len(room.members)} of {room.capacity} here. {self._time_left(room)}")
        elif command == "/purge":
            try:
                await room.purge()
            except (NotCreator, NotConnected) as exc:
                ui.notice(f"Cannot purge: {exc}.")
        else:
            ui.notice(f"Unknown command {command.split()[0]}. {_HELP} To send a line that starts "
                      "with /, type // first.")
        return False

    async def _remind(self, room: Room) -> None:
        for mark in _REMINDERS:
            left = room.seconds_left()
            if left <= mark:
                continue
            await asyncio.sleep(left - mark)
            self.ui.notice(f"The room ends in {duration(mark)}.")

    @staticmethod
    def _time_left(room: Room) -> str:
        left = room.seconds_left()
        return f"The room ends in {duration(left)}, at {clock(now_ms() + int(left * 1000))}."


def _key_warning(event: KeyWarning) -> str:
    name = event.member.name
    if event.reason == "changed":
        return (f"Warning: {name}'s key changed during the visit; their messages cannot be read. "
                "Compare the key fingerprint with them by phone or in person.")
    return (f"Warning: the key {name} announced could not be authenticated (the relay or someone on "
            "the way may have changed it); their messages cannot be read. Compare the key fingerprint "
            "with them by phone or in person.")


def _relay_error(code: str) -> str:
    if code == "rate_limited":
        return "You are sending faster than the relay allows; some messages were not delivered."
    if code == "not_creator":
        return "Only the room's creator can purge it."
    return f"The relay reported an error ({code})."


def _error_exit(exc: ClientError) -> int:
    for kind, code in ((WrongSecret, EXIT_WRONG_LINK), (RoomFull, EXIT_FULL),
                       (NoSuchRoom, EXIT_NO_SUCH_ROOM), (RelayUnreachable, EXIT_UNREACHABLE)):
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR
