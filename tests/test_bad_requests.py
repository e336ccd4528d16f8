"""Bad requests over real sockets: each ends in a 4xx, never a 500, and none writes a line at
ERROR; what is logged of them (at debug) names no address, path or room.

Two kinds: those aiohttp's parser refuses before the relay sees a request (a 400 from the HTTP
layer, docs/protocol.md §2.3), and those that reach the relay's handlers, which answer with
the relay's JSON error and headers. A fault of the relay itself still logs at ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import logging
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict
from protocol_helpers import assert_json_error, assert_security_headers, http
from support import running_relay

from pugfast.privacy import (
    AIOHTTP_SERVER,
    ClientFaultFilter,
    client_fault,
    configure_logging,
    quiet_client_faults,
)

# A well-formed room id, so a request line that quotes it is one a log must not repeat.
ROOM = "RoomIdThatMustNotLeak0"
assert len(ROOM) == 22


@contextlib.contextmanager
def captured_log() -> Iterator[list[logging.LogRecord]]:
    """Every record any logger emits meanwhile, debug included."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler, level = Keep(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def assert_nothing_leaked(records: list[logging.LogRecord], *secrets: str) -> None:
    """No record at ERROR or above, and none that names the client's address or a secret."""
    errors = [(r.name, r.getMessage()) for r in records if r.levelno >= logging.ERROR]
    assert errors == [], errors
    for record in records:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        for secret in ("127.0.0.1", *secrets):
            assert secret not in text, (record.name, record.levelname, text[:200])


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` and read until the relay closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def parse(answer: bytes) -> tuple[int, CIMultiDict[str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = CIMultiDict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


H = b"Host: 127.0.0.1\r\n"
R = ROOM.encode()
POST = b"POST /api/rooms HTTP/1.1\r\n" + H

# Requests aiohttp's parser refuses: a 400 (or 414/431) from the HTTP layer, and the end of the
# connection.
PARSER_REFUSALS = [
    ("request line over the limit", b"GET /r/" + R + b"/ws?" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    ("header over the limit", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n"),
    ("too many headers", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n" * 200 + b"\r\n"),
    ("header without a colon", b"GET / HTTP/1.1\r\n" + H + b"No colon\r\n\r\n"),
    ("space before the colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("no Host in HTTP/1.1", b"GET /r/" + R + b" HTTP/1.1\r\n\r\n"),
    ("two Content-Lengths", POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    ("Content-Length and chunked", POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"),
    ("Content-Length overflow", POST + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n"),
    ("bad chunk size", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("unknown HTTP version", b"GET /r/" + R + b" HTTP/9.9\r\n" + H + b"\r\n"),
    ("NUL in the path", b"GET /r/" + R + b"\x00 HTTP/1.1\r\n" + H + b"\r\n"),
    ("non-ASCII path", "GET /static/é HTTP/1.1\r\n".encode() + H + b"\r\n"),
    ("bad method", b"G@T / HTTP/1.1\r\n" + H + b"\r\n"),
    ("TLS on the HTTP port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
    # aiohttp logs a malformed request at ERROR when it is not a connection's first.
    ("garbage after a good request", b"GET /healthz HTTP/1.1\r\n" + H + b"\r\nGARBAGE /r/" + R + b"\r\n\r\n"),
]


@pytest.mark.parametrize(
    "request_bytes", [b for _, b in PARSER_REFUSALS], ids=[i for i, _ in PARSER_REFUSALS]
)
async def test_a_request_the_parser_refuses_is_a_4xx_logged_at_debug_only(request_bytes: bytes) -> None:
    async with running_relay() as r:
        with captured_log() as records:
            answer = await exchange(r.port, request_bytes)
            await asyncio.sleep(0.05)  # whatever aiohttp logs after closing
        # A good request ahead of the bad one is answered first.
        statuses = [int(line.split()[1]) for line in answer.split(b"\r\n")
                    if line.startswith(b"HTTP/1.")]
        assert statuses and statuses[-1] in (400, 414, 431), answer[:300]
        assert_nothing_leaked(records, ROOM)
        refused = [
            rec for rec in records
            if rec.name == AIOHTTP_SERVER and rec.levelno == logging.DEBUG
            and rec.getMessage().startswith("refused a bad request (")
        ]
        assert refused, [(rec.name, rec.levelname, rec.getMessage()) for rec in records]
        assert all(rec.exc_info is None and rec.args is None for rec in refused)


STATIC_NOT_FOUND = [
    ("a name over 5,000 characters", "/static/" + "a" * 5000),
    ("a name over NAME_MAX", "/static/" + "a" * 300),
    ("a path over PATH_MAX", "/static/" + "a/" * 2100),
    ("a long name in a directory", "/static/js/" + "b" * 1000 + ".js"),
    ("%00 in a name", "/static/app%00.css"),
    ("%00 alone", "/static/%00"),
]


@pytest.mark.parametrize("path", [p for _, p in STATIC_NOT_FOUND], ids=[i for i, _ in STATIC_NOT_FOUND])
async def test_a_static_name_the_file_system_cannot_look_up_is_a_json_404(path: str) -> None:
    # It used to be a 500: stat() raised "File name too long" (or ValueError for a NUL).
    async with running_relay() as r:
        with captured_log() as records:
            head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\nConnection: close\r\n\r\n"
            answer = await exchange(r.port, head.encode())
        status, headers, body = parse(answer)
        assert_json_error(status, headers, body, 404, "not_found")
        assert_security_headers(headers, r.port)
        assert_nothing_leaked(records)


# Content-Encoding, body, and the status for /api/rooms and /api/challenge.
ENCODED_BODIES = [
    ("gzip", b"this is not gzip", 400, 400),
    ("deflate", b"this is not deflate", 400, 400),
    ("br", b"this is not brotli", 400, 400),  # undecodable, or no Brotli installed: 400 either way
    # A gzip stream cut short decodes as far as it goes: not JSON, and a challenge ignores it.
    ("gzip", gzip.compress(b'{"token": "x", "nonce": "0"}')[:-9], 400, 200),
    # An encoding aiohttp does not know is passed through as it came.
    ("x-unknown", b"opaque", 400, 200),
]


@pytest.mark.parametrize("path", ["/api/rooms", "/api/challenge"])
@pytest.mark.parametrize(("encoding", "body", "rooms", "challenge"), ENCODED_BODIES,
                         ids=["gzip", "deflate", "br", "gzip-cut-short", "unknown"])
async def test_a_body_that_does_not_decode_is_a_400(
    path: str, encoding: str, body: bytes, rooms: int, challenge: int
) -> None:
    # Whether aiohttp's parser or the handler's read meets the bad body first depends on how
    # the bytes arrive: either way a 400, and JSON when the relay's handler answers.
    async with running_relay() as r:
        with captured_log() as records:
            answer = await exchange(
                r.port,
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\nContent-Encoding: {encoding}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body,
            )
            await asyncio.sleep(0.05)
        status, headers, answer_body = parse(answer)
        assert status == (rooms if path == "/api/rooms" else challenge), answer[:300]
        if status == 400 and headers.get("Content-Type", "").startswith("application/json"):
            assert orjson.loads(answer_body)["error"] == "bad_request"
        assert_nothing_leaked(records)


async def test_a_chunked_body_cut_short_is_a_400_and_no_error_line() -> None:
    async with running_relay() as r:
        with captured_log() as records:
            reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
            writer.write(POST + b"Transfer-Encoding: chunked\r\n\r\n10\r\n{\"tok")
            await writer.drain()
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await asyncio.sleep(0.05)
        if answer:  # the relay may answer before it closes, or just close
            assert parse(answer)[0] == 400, answer[:300]
        assert_nothing_leaked(records)


async def test_a_client_that_leaves_mid_body_is_no_error() -> None:
    async with running_relay() as r:
        with captured_log() as records:
            _, writer = await asyncio.open_connection("127.0.0.1", r.port)
            writer.write(POST + b"Content-Length: 100\r\n\r\n{")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()
            await asyncio.sleep(0.1)
        assert_nothing_leaked(records)
        status, _, _ = await http(r, "GET", "/healthz")
        assert status == 200


async def test_a_fault_of_the_relay_is_still_a_500_logged_at_error() -> None:
    async with running_relay() as r:
        def broken(now: float) -> tuple[str, float]:
            raise RuntimeError("a bug in the relay")

        r.gateway.issuer.issue = broken
        with captured_log() as records:
            status, _, _ = await http(r, "POST", "/api/challenge")
        assert status == 500
        errors = [rec for rec in records if rec.levelno >= logging.ERROR]
        assert errors and all(rec.exc_info and isinstance(rec.exc_info[1], RuntimeError) for rec in errors)


def record_with(exc: BaseException, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(AIOHTTP_SERVER, level, "web_protocol.py", 1, "Error handling request from %s",
                             ("203.0.113.9",), (type(exc), exc, None))


def test_the_filter_scrubs_and_lowers_a_client_fault() -> None:
    from aiohttp.http_exceptions import LineTooLong

    logger = logging.getLogger("test.client-faults")
    logger.setLevel(logging.DEBUG)
    record = record_with(LineTooLong(f"GET /r/{ROOM}/ws?aaaa", 8190))
    assert ClientFaultFilter(logger).filter(record)
    assert (record.levelno, record.levelname) == (logging.DEBUG, "DEBUG")
    assert record.getMessage() == "refused a bad request (LineTooLong)"
    assert record.args is None and record.exc_info is None and record.exc_text is None
    # Below debug the record is dropped: the logger's level was checked at ERROR already.
    logger.setLevel(logging.INFO)
    assert not ClientFaultFilter(logger).filter(record_with(ConnectionResetError()))


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("a bug"),
        # The system's own errors, on a socket of the relay's (a worker's link to its
        # supervisor), are the relay's problem, not a client's.
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    ],
    ids=["bug", "broken-pipe", "reset-by-the-system"],
)
def test_the_filter_leaves_a_fault_of_the_relay_alone(exc: BaseException) -> None:
    record = record_with(exc)
    assert ClientFaultFilter(logging.getLogger("test.client-faults")).filter(record)
    assert record.levelno == logging.ERROR and record.args == ("203.0.113.9",)
    assert record.exc_info is not None


def test_what_counts_as_the_clients_fault() -> None:
    from aiohttp.client_exceptions import ClientConnectionResetError
    from aiohttp.http_exceptions import BadStatusLine, ContentLengthError

    for exc in (BadStatusLine("GARBAGE"), ContentLengthError("short"), web.RequestPayloadError(),
                ConnectionResetError("Connection lost"),
                ClientConnectionResetError("Cannot write to closing transport")):
        assert client_fault(exc), exc
    for exc in (None, ValueError(), OSError(errno.ENAMETOOLONG, "File name too long"),
                ConnectionResetError(errno.ECONNRESET, "reset"), BrokenPipeError()):
        assert not client_fault(exc), exc


def test_the_filter_is_installed_once_by_configure_logging() -> None:
    root, server = logging.getLogger(), logging.getLogger(AIOHTTP_SERVER)
    saved = root.handlers[:], root.level, server.filters[:], logging.getLogger("aiohttp.access").disabled
    try:
        server.filters[:] = []
        configure_logging("info")
        quiet_client_faults()
        assert sum(isinstance(f, ClientFaultFilter) for f in server.filters) == 1
    finally:
        root.handlers[:], server.filters[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        logging.getLogger("aiohttp.access").disabled = saved[3]


EXPECTATIONS = [
    ("not UTF-8, on a page", b"GET / HTTP/1.1\r\n" + H + b"Expect: \xff\xfe\r\n\r\n"),
    ("not UTF-8, on no route", b"GET /nope HTTP/1.1\r\n" + H + b"Expect: \xc3(\r\n\r\n"),
    ("unknown, on a room page", b"GET /r/" + R + b" HTTP/1.1\r\n" + H + b"Expect: magic\r\n\r\n"),
    ("unknown, on the API", POST + b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}"),
    ("unknown, on a wrong method", b"DELETE /api/limits HTTP/1.1\r\n" + H + b"Expect: x\r\n\r\n"),
]


@pytest.mark.parametrize("request_bytes", [b for _, b in EXPECTATIONS], ids=[i for i, _ in EXPECTATIONS])
async def test_any_expectation_but_100_continue_is_a_json_417_on_every_path(request_bytes: bytes) -> None:
    # aiohttp's own answer echoed the header into a text body, and for one that is not UTF-8
    # failed with a 500 and an ERROR line: anyone could fill the log at will.
    async with running_relay() as r:
        with captured_log() as records:
            status, headers, body = parse(await exchange(r.port, request_bytes))
            await asyncio.sleep(0.05)
        assert_json_error(status, headers, body, 417, "expectation_failed")
        # The relay's headers (the CSP is for the Host sent, here without a port).
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
        assert "Content-Security-Policy" in headers and headers["Connection"] == "close"
        assert_nothing_leaked(records, ROOM)


async def test_expect_100_continue_gets_its_100_and_then_the_answer() -> None:
    async with running_relay() as r:
        answer = await exchange(r.port, b"POST /api/challenge HTTP/1.1\r\n" + H
                                + b"Expect: 100-continue\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
        status, _, body = parse(answer.split(b"\r\n\r\n", 1)[1])
        assert status == 200 and "token" in orjson.loads(body)


async def test_no_route_is_404_and_a_wrong_method_405_with_allow() -> None:
    async with running_relay() as r:
        status, headers, body = parse(await exchange(r.port, b"PUT /api/limits HTTP/1.1\r\n" + H
                                                     + b"Connection: close\r\n\r\n"))
        assert_json_error(status, headers, body, 405, "method_not_allowed")
        assert set(headers["Allow"].split(",")) >= {"GET", "HEAD"}
        status, headers, body = parse(await exchange(r.port, b"PUT /no/such/path HTTP/1.1\r\n" + H
                                                     + b"Connection: close\r\n\r\n"))
        assert_json_error(status, headers, body, 404, "not_found")
