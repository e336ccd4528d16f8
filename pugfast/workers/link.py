"""A worker's end of its control channel to the supervisor (the messages: channel.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

from ..acceptor import EXHAUSTED, RETRY
from ..config import Settings
from . import channel
from .channel import MAX_MESSAGE, ChannelError

log = logging.getLogger("pugfast.worker")

# How long a worker waits for the supervisor's answer to a question.
ANSWER_TIMEOUT = 5.0
# Descriptors one message may carry: one connection each, and room to spare.
MAX_DESCRIPTORS = 16

# adopt(sock, address key or None, the bytes the supervisor read from it)
Adopt = Callable[[socket.socket, "bytes | None", bytes], None]


class WorkerLink:
    """A worker's end of its control channel: connections come in on it, questions about
    tokens and the caps go out, and the supervisor's questions are answered."""

    def __init__(
        self,
        sock: socket.socket,
        index: int,
        workers: int,
        token_key: bytes,
        allowance: dict[str, int] | None = None,
    ) -> None:
        self.sock = sock
        self.index = index
        self.workers = workers
        self.token_key = token_key
        # The first slots granted under each relay-wide cap, by kind (pugfast.allowance).
        self.allowance = allowance or {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._adopt: Adopt = lambda conn, address, head: conn.close()
        self._metrics: Callable[[], Any] = dict
        self._give_back: Callable[[str], int] = lambda kind: 0
        self._on_lost: Callable[[], None] = lambda: None
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    @classmethod
    def from_fd(cls, fd: int) -> tuple[Settings, WorkerLink]:
        """Read the hello on the channel ``fd``; return the settings and the link.

        Raises ChannelError if the first message is not a hello."""
        sock = socket.socket(fileno=fd)
        sock.settimeout(10.0)
        hello = channel.decode(sock.recv(MAX_MESSAGE))
        if not isinstance(hello, channel.Hello):
            raise ChannelError("the supervisor sent no hello")
        sock.setblocking(False)
        link = cls(sock, hello.worker, hello.workers, hello.token_key, hello.allowance)
        return Settings(**hello.settings), link

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        adopt: Adopt,
        metrics: Callable[[], Any],
        give_back: Callable[[str], int],
        on_lost: Callable[[], None],
    ) -> None:
        """Hand each connection to ``adopt``; answer metrics with ``metrics()`` and a request to
        give back unused slots of a cap with ``give_back(kind)``; call ``on_lost`` once the
        supervisor is gone."""
        self._loop = loop
        self._adopt, self._metrics, self._on_lost = adopt, metrics, on_lost
        self._give_back = give_back
        loop.add_reader(self.sock.fileno(), self._readable)
        self._tell(channel.Ready())

    def close(self) -> None:
        """Take no more connections. The channel itself stays open until the process ends, so
        the supervisor sees this worker end only when it has."""
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        for answer in self._answers.values():
            if not answer.done():
                answer.cancel()

    def connection_closed(self, address: bytes) -> None:
        """Tell the supervisor a connection it counted under ``address`` ended."""
        self._tell(channel.Closed(address))

    async def token_spent(self, token: str) -> bool:
        """Ask the supervisor whether ``token`` was spent, at any worker; spend nothing."""
        return bool((await self._ask(channel.SpentQuestion(next(self._ids), token))).yes)

    async def claim_token(self, token: str) -> bool:
        """Ask the supervisor to spend ``token``: True if nobody had used it yet."""
        return bool((await self._ask(channel.TokenClaim(next(self._ids), token))).yes)

    async def acquire(self, kind: str, need: int) -> int:
        """Ask the supervisor for ``need`` more slots of the cap ``kind`` (it may grant a block
        more); return how many it granted, 0 when the relay is full. Raises TimeoutError when
        it does not answer."""
        return int((await self._ask(channel.Acquire(next(self._ids), kind, need))).count)

    def _tell(self, message: Any) -> None:
        with contextlib.suppress(OSError):  # a supervisor that is gone hears nothing
            self.sock.send(channel.encode(message))

    async def _ask(self, question: Any) -> Any:
        assert self._loop is not None
        answer = self._answers[question.request] = self._loop.create_future()
        try:
            self.sock.send(channel.encode(question))
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT)
        finally:
            del self._answers[question.request]

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_DESCRIPTORS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in EXHAUSTED and self._loop is not None:
                    # Out of descriptors: the channel is fine, this process is full. Read on
                    # once connections have ended, rather than spin or give up.
                    fd = self.sock.fileno()
                    self._loop.remove_reader(fd)
                    self._loop.call_later(RETRY, self._loop.add_reader, fd, self._readable)
                    return
                data, fds = b"", []
            if not data:
                self.close()
                self._on_lost()
                return
            try:
                message = channel.decode(data)
            except ChannelError as exc:
                log.error("the supervisor sent what this worker cannot read (%s)", exc)
                for fd in fds:
                    socket.close(fd)
                continue
            self._received(message, fds)

    def _received(self, message: Any, fds: list[int]) -> None:
        if isinstance(message, channel.Connection):
            if fds:
                self._adopt(socket.socket(fileno=fds[0]), message.address, message.prefix)
                for extra in fds[1:]:
                    socket.close(extra)
            elif message.address is not None:
                # The kernel dropped the descriptor it had no room for (MSG_CTRUNC).
                self.connection_closed(message.address)
            return
        for fd in fds:
            socket.close(fd)
        if isinstance(message, (channel.SpentAnswer, channel.TokenAnswer, channel.Grant)):
            answer = self._answers.get(message.request)
            if answer is not None and not answer.done():
                answer.set_result(message)
        elif isinstance(message, channel.GiveBack):
            self._tell(channel.GivenBack(message.kind, self._give_back(message.kind)))
        elif isinstance(message, channel.MetricsWanted):
            # If the supervisor is gone or busy, it stops waiting on its own.
            self._tell(channel.MetricsReport(message.request, self._metrics()))
