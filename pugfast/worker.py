"""One worker process of ``pugfast serve --workers N``, and its end of the control channel.

The supervisor (pugfast/supervisor.py) starts each worker with one end of a socket pair of
type SOCK_SEQPACKET, so every message arrives whole. Its first message is the hello: the
settings, this worker's index, the number of workers and the key challenge tokens are signed
with. After that the supervisor sends each connection it accepted for this worker (the socket
itself, as SCM_RIGHTS) and answers the worker's questions. Message kinds, one byte each:

    supervisor -> worker                    worker -> supervisor
    H  hello (JSON)                         R  ready: serving
    C  a connection (its fd attached)       T  id(4) token: spend this token?
    T  id(4) 1|0: the token was fresh       M  id(4) JSON: the metrics asked for
    M  id(4): send your metrics

A worker owns the rooms whose ids it made (pugfast.registry.RoomIds). When the channel ends,
the supervisor is gone, and the worker shuts down as on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

import orjson

from .config import Settings

log = logging.getLogger("pugfast.worker")

HELLO, READY, CONNECTION, TOKEN, METRICS = b"H", b"R", b"C", b"T", b"M"
REQUEST_ID = struct.Struct(">I")
# A seqpacket message larger than this is not one of ours.
MAX_MESSAGE = 65536
# How long a worker waits for the supervisor's answer about a token.
TOKEN_ANSWER_TIMEOUT = 5.0


class WorkerLink:
    """A worker's end of its control channel to the supervisor."""

    def __init__(self, sock: socket.socket, index: int, workers: int, token_key: bytes) -> None:
        self.sock = sock
        self.index = index
        self.workers = workers
        self.token_key = token_key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._adopt: Callable[[socket.socket], None] = lambda conn: conn.close()
        self._metrics: Callable[[], Any] = dict
        self._on_lost: Callable[[], None] = lambda: None
        self._answers: dict[int, asyncio.Future[bool]] = {}
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
        link = cls(sock, hello["worker"], hello["workers"], bytes.fromhex(hello["token_key"]))
        return Settings(**hello["settings"]), link

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        adopt: Callable[[socket.socket], None],
        metrics: Callable[[], Any],
        on_lost: Callable[[], None],
    ) -> None:
        """Hand each connection to ``adopt``; answer metrics with ``metrics()``; call
        ``on_lost`` once the supervisor is gone."""
        self._loop = loop
        self._adopt, self._metrics, self._on_lost = adopt, metrics, on_lost
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

    async def claim_token(self, token: str) -> bool:
        """Ask the supervisor to spend ``token``: True if nobody had used it yet."""
        assert self._loop is not None
        request = next(self._ids)
        answer = self._loop.create_future()
        self._answers[request] = answer
        try:
            self.sock.send(TOKEN + REQUEST_ID.pack(request) + token.encode("ascii"))
            return await asyncio.wait_for(answer, TOKEN_ANSWER_TIMEOUT)
        finally:
            del self._answers[request]

    def _readable(self) -> None:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(self.sock, MAX_MESSAGE, 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            for fd in fds:
                self._adopt(socket.socket(fileno=fd))
            if fds:
                continue
            kind = message[:1]
            if kind == TOKEN:
                answer = self._answers.get(REQUEST_ID.unpack_from(message, 1)[0])
                if answer is not None and not answer.done():
                    answer.set_result(message[5:6] == b"\x01")
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
    from .server import Relay, run_on_event_loop

    disable_core_dumps()
    sys.dont_write_bytecode = True
    settings, link = WorkerLink.from_fd(int(argv[1]))
    configure_logging(settings.log_level)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
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
