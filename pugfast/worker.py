"""One worker process of ``pugfast serve --workers N``, and its end of the control channel.

The supervisor (pugfast/supervisor.py) starts each worker with one end of a socket pair of
type SOCK_SEQPACKET, so every message arrives whole. Its first message is the hello: the
settings, this worker's index, the number of workers, the key challenge tokens are signed with,
and the worker's first allowance under the relay-wide caps (pugfast/allowance.py). After that
the supervisor sends each connection it accepted for this worker (the socket itself, as
SCM_RIGHTS) and answers the worker's questions. Message kinds, one byte each, then the fields:

    supervisor -> worker                    worker -> supervisor
    H  hello (JSON)                         R  ready: serving
    C  key(16)?: a connection (its fd       Q  id(4) token: was this token spent?
       attached), with its address key
       when the per-address cap is on
    Q  id(4) 1|0: it was spent              T  id(4) token: spend this token?
    T  id(4) 1|0: the token was fresh       A  id(4) kind(1): more of this cap, please
    A  id(4) n(4): n more slots             K  kind(1) n(4): n slots given back
    K  kind(1): give back the slots         M  id(4) JSON: the metrics asked for
       you do not use
    M  id(4): send your metrics             X  key(16): a connection with this
                                               address key ended

A cap's kind is ``r`` (rooms) or ``c`` (connections).

A worker owns the rooms whose ids it made (pugfast.registry.RoomIds). When the channel ends,
the supervisor is gone, and the worker shuts down as on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

import orjson

from .acceptor import EXHAUSTED, RETRY
from .config import Settings

log = logging.getLogger("pugfast.worker")

HELLO, READY, CONNECTION, METRICS = b"H", b"R", b"C", b"M"
SPENT, TOKEN, ACQUIRE, GIVE_BACK, CLOSED = b"Q", b"T", b"A", b"K", b"X"
REQUEST_ID = struct.Struct(">I")
COUNT = struct.Struct(">I")
# A seqpacket message larger than this is not one of ours.
MAX_MESSAGE = 65536
# How long a worker waits for the supervisor's answer to a question.
ANSWER_TIMEOUT = 5.0


class WorkerLink:
    """A worker's end of its control channel to the supervisor."""

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
        self._adopt: Callable[[socket.socket, bytes | None], None] = lambda conn, key: conn.close()
        self._metrics: Callable[[], Any] = dict
        self._give_back: Callable[[str], int] = lambda kind: 0
        self._on_lost: Callable[[], None] = lambda: None
        self._answers: dict[int, asyncio.Future[bytes]] = {}
        self._ids = itertools.count(1)

    @classmethod
    def from_fd(cls, fd: int) -> tuple[Settings, WorkerLink]:
        """Read the hello on the channel ``fd``; return the settings and the link."""
        sock = socket.socket(fileno=fd)
        sock.settimeout(10.0)
        message = sock.recv(MAX_MESSAGE)
        if message[:1] != HELLO:
            raise RuntimeError("the supervisor sent no hello")
        hello = orjson.loads(message[1:])
        sock.setblocking(False)
        link = cls(sock, hello["worker"], hello["workers"], bytes.fromhex(hello["token_key"]),
                   hello["allowance"])
        return Settings(**hello["settings"]), link

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        adopt: Callable[[socket.socket, bytes | None], None],
        metrics: Callable[[], Any],
        give_back: Callable[[str], int],
        on_lost: Callable[[], None],
    ) -> None:
        """Hand each connection to ``adopt`` (with its address key, if the supervisor counts
        addresses); answer metrics with ``metrics()`` and a request
        to give back unused slots of a cap with ``give_back(kind)``; call ``on_lost`` once the
        supervisor is gone."""
        self._loop = loop
        self._adopt, self._metrics, self._on_lost = adopt, metrics, on_lost
        self._give_back = give_back
        loop.add_reader(self.sock.fileno(), self._readable)
        self.sock.send(READY)

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
        with contextlib.suppress(OSError):  # a supervisor that is gone counts nothing
            self.sock.send(CLOSED + address)

    async def token_spent(self, token: str) -> bool:
        """Ask the supervisor whether ``token`` was spent, at any worker; spend nothing."""
        return await self._ask(SPENT, token.encode("ascii")) == b"\x01"

    async def claim_token(self, token: str) -> bool:
        """Ask the supervisor to spend ``token``: True if nobody had used it yet."""
        return await self._ask(TOKEN, token.encode("ascii")) == b"\x01"

    async def acquire(self, kind: str) -> int:
        """Ask the supervisor for more slots of the cap ``kind``; return how many it granted
        (0 when the relay is full)."""
        return int(COUNT.unpack(await self._ask(ACQUIRE, kind.encode("ascii")))[0])

    async def _ask(self, kind: bytes, question: bytes) -> bytes:
        assert self._loop is not None
        request = next(self._ids)
        answer = self._loop.create_future()
        self._answers[request] = answer
        try:
            self.sock.send(kind + REQUEST_ID.pack(request) + question)
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT)
        finally:
            del self._answers[request]

    def _readable(self) -> None:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(self.sock, MAX_MESSAGE, 16)
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
                message, fds = b"", []
            for fd in fds:
                self._adopt(socket.socket(fileno=fd), message[1:] or None)
            if message[:1] == CONNECTION and not fds:
                # The kernel dropped the descriptor it had no room for (MSG_CTRUNC).
                if len(message) > 1:
                    self.connection_closed(message[1:])
                continue
            if fds:
                continue
            kind = message[:1]
            if kind in (SPENT, TOKEN, ACQUIRE):
                answer = self._answers.get(REQUEST_ID.unpack_from(message, 1)[0])
                if answer is not None and not answer.done():
                    answer.set_result(message[5:])
            elif kind == GIVE_BACK:
                cap = message[1:2].decode("ascii")
                with contextlib.suppress(OSError):
                    self.sock.send(GIVE_BACK + message[1:2] + COUNT.pack(self._give_back(cap)))
            elif kind == METRICS:
                reply = METRICS + message[1:5] + orjson.dumps(self._metrics())
                # If the supervisor is gone or busy, it stops waiting on its own.
                with contextlib.suppress(OSError):
                    self.sock.send(reply)
            elif not message:
                self.close()
                self._on_lost()
                return


def main(argv: list[str]) -> int:
    """``python -m pugfast.worker FD``: run one worker; only the supervisor starts this."""
    from .privacy import configure_logging, disable_core_dumps
    from .server import STOP_SIGNALS, Relay, run_on_event_loop

    disable_core_dumps()
    sys.dont_write_bytecode = True
    settings, link = WorkerLink.from_fd(int(argv[1]))
    configure_logging(settings.log_level)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        relay = Relay(settings, link=link, on_link_lost=stop.set)
        await relay.start()
        await stop.wait()
        await relay.stop()

    # The supervisor already found the loop it was told to use.
    run_on_event_loop(settings.event_loop, run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
