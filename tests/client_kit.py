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
import os
import pty
import queue
import re
import subprocess
import sys
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

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first match of ``pattern`` in everything the terminal showed."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                if match := re.search(pattern, self.output, re.M):
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
