"""Driving ``pugfast chat`` and the pugfast.client library from synchronous tests.

``ChatProcess`` runs ``python -m pugfast chat`` with pipes (its pipe mode); ``TerminalChat``
runs it on a pseudo-terminal (its terminal mode); ``Peer`` is a library Room on its own event
loop in a thread, the other end of a conversation. All of them are real: real processes, real
sockets, a real relay. The processes run in the current directory, as support.ServerProcess
does, so that a test run against an installed wheel runs the installed client.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import queue
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any, TypeVar

from pugfast.client import Ended, Event, Link, Room, create_room

REPO = Path(__file__).resolve().parent.parent
WAIT = 15.0
T = TypeVar("T")


def chat_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pugfast", "chat", *args]


class Lines:
    """Lines read from a stream by a thread, waited for with a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.seen: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._new:
                self.seen.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._new.notify_all()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first line (from the start) matching the regular expression ``pattern``."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for line in self.seen:
                    if match := re.search(pattern, line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matches {pattern!r} in {self.seen!r}")
                self._new.wait(left)

    def text(self) -> str:
        with self._new:
            return "\n".join(self.seen)


class ChatProcess:
    """``pugfast chat ARGS`` with standard input, output and error as pipes."""

    def __init__(self, *args: str, stdin: Any = subprocess.PIPE, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            chat_command(*args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.stdout = Lines(self.process.stdout)
        self.stderr = Lines(self.process.stderr)

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def close_input(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"pugfast chat did not exit; stderr: {self.stderr.text()}") from None

    def joined(self) -> str:
        """Waits for the join; returns this client's display name."""
        return self.stderr.wait_for(r"^-- You joined as (.+?)( \(creator\))?\. In the room").group(1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class TerminalChat:
    """``pugfast chat ARGS`` on a pseudo-terminal, as a person would run it."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.process = subprocess.Popen(
            chat_command(*args), stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            env={**os.environ, "COLUMNS": "200", "LINES": "50"},
        )
        os.close(slave)
        self.output = ""
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the other side closed
                return
            if not data:
                return
            with self._new:
                self.output += data.decode("utf-8", "replace")
                self._new.notify_all()

    def shown(self) -> str:
        """What the terminal kept: the output without the rows the client erased (the line
        being typed, which it clears with CR and erase-to-end before writing above it)."""
        with self._new:
            return re.sub(r"[^\n]*\r\x1b\[K", "", self.output)

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first match of ``pattern`` in everything the terminal kept (``shown``)."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                if match := re.search(pattern, re.sub(r"[^\n]*\r\x1b\[K", "", self.output), re.M):
                    return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the terminal never showed {pattern!r}:\n{self.output}")
                self._new.wait(left)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"pugfast chat did not exit:\n{self.output}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


class TmuxChat:
    """``pugfast chat ARGS`` in a tmux window of ``columns`` x ``rows``: a real terminal
    emulator keeps the screen and its scrollback, so a test reads what a person would see
    (``screen``), not the bytes written. Each instance has its own tmux server."""

    def __init__(self, *args: str, columns: int = 80, rows: int = 24) -> None:
        if shutil.which("tmux") is None:
            raise AssertionError("these tests need tmux (apt-get install tmux; .ci/run installs it)")
        self.socket = f"pugfast-test-{os.getpid()}-{id(self)}"
        self.done = Path(tempfile.mkdtemp(prefix="pugfast-tmux-")) / "status"
        command = " ".join(shlex.quote(part) for part in chat_command(*args))
        # The window stays after the client exits (remain-on-exit), so its last screen can be
        # read; the exit status goes to a file.
        script = f"{command}; echo $? > {shlex.quote(str(self.done))}"
        environment = [f"-e{name}={os.environ[name]}" for name in ("PYTHONPATH", "PUGFAST_NO_EXTENSIONS")
                       if name in os.environ]
        # The scrollback's size is fixed when a window is made: set it in the configuration.
        config = self.done.parent / "tmux.conf"
        config.write_text("set -g history-limit 100000\nset -g remain-on-exit on\n")
        self._tmux("-f", str(config), "new-session", "-d", "-x", str(columns), "-y", str(rows),
                   "-e", "LANG=C.UTF-8", "-e", "TERM=screen", *environment, "sh", "-c", script)

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-u", "-L", self.socket, *args], capture_output=True, timeout=WAIT)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode("utf-8", "replace")

    def screen(self) -> list[str]:
        """Every row the terminal has shown, scrollback first, trailing blank rows dropped."""
        rows = self._tmux("capture-pane", "-p", "-S", "-", "-E", "-").split("\n")
        while rows and not rows[-1].strip():
            rows.pop()
        return rows

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first row matching ``pattern``, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for row in self.screen():
                if match := re.search(pattern, row):
                    return match
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal never showed {pattern!r}:\n" + "\n".join(self.screen()))
            time.sleep(0.05)

    def type(self, text: str) -> None:
        """Types ``text`` literally (send Enter as a separate ``type("\r")``)."""
        self._tmux("send-keys", "-l", text)

    def wait(self, timeout: float = WAIT) -> int:
        deadline = time.monotonic() + timeout
        while not self.done.exists() or not self.done.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError("pugfast chat did not exit:\n" + "\n".join(self.screen()))
            time.sleep(0.05)
        return int(self.done.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=WAIT)
        shutil.rmtree(self.done.parent, ignore_errors=True)


class Peer:
    """A pugfast.client Room on an event loop of its own, in a thread."""

    def __init__(self, link: Link | str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.events: queue.Queue[Event] = queue.Queue()
        self.room: Room = self.run(Room.join(link, **options).__aenter__())
        self._pump = asyncio.run_coroutine_threadsafe(self._read(), self.loop)

    @classmethod
    def creating(cls, relay: str, *, insecure: bool = False, **fields: Any) -> Peer:
        """Creates a room on ``relay`` (its proof of work included), then joins it."""
        return cls(asyncio.run(create_room(relay, insecure=insecure, **fields)), insecure=insecure)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    async def _read(self) -> None:
        async for event in self.room:
            self.events.put(event)

    def next(self, kind: type | tuple[type, ...] = object, timeout: float = WAIT) -> Event:
        """The next event of ``kind``, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind} arrived in {timeout} s") from None
            if isinstance(event, kind):
                return event
            if isinstance(event, Ended):
                raise AssertionError(f"the room ended ({event}) before a {kind}")

    def call(self, method: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return self.run(method(*args))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.room.leave())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()
