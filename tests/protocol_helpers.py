"""Helpers for the black-box protocol tests (test_http, test_challenge, test_rooms,
test_websocket, test_frame_rules_socket): HTTP calls, header checks and small waits.

Everything here talks to the relay over its sockets; the only look inside it is through
``RunningRelay.gateway``, and only to check what a client cannot see (a room really gone).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
from collections.abc import Callable
from typing import Any

import orjson
from engines import client_frame
from support import RawClient, RunningRelay

B64U_22 = re.compile(r"[A-Za-z0-9_-]{22}")
NAME = re.compile(r"[A-Z][a-z]+ [A-Z][a-z]+( [0-9]+)?")


def random_room_id() -> str:
    """A well-formed room id that no relay made."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def csp_directives(value: str) -> dict[str, set[str]]:
    """A Content-Security-Policy header as {directive: {source, ...}}."""
    directives: dict[str, set[str]] = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            assert words[0] not in directives, f"directive {words[0]} given twice"
            directives[words[0]] = set(words[1:])
    return directives


def expected_csp(port: int) -> dict[str, set[str]]:
    host = f"127.0.0.1:{port}"
    return {
        "default-src": {"'none'"},
        "script-src": {"'self'"},
        "style-src": {"'self'"},
        "img-src": {"'self'"},
        "connect-src": {"'self'", f"ws://{host}", f"wss://{host}"},
        "base-uri": {"'none'"},
        "form-action": {"'none'"},
        "frame-ancestors": {"'none'"},
    }


def assert_security_headers(headers: Any, port: int, *, no_store: bool = True) -> None:
    """The headers every response carries (docs/protocol.md §2.4); ``headers`` is case-insensitive
    (aiohttp's) or a dict with lower-case names (RawClient's)."""
    def get(name: str) -> str | None:
        return headers.get(name, headers.get(name.lower()))

    csp = get("Content-Security-Policy")
    assert csp is not None, "no Content-Security-Policy"
    assert csp_directives(csp) == expected_csp(port)
    assert get("Referrer-Policy") == "no-referrer"
    assert get("X-Content-Type-Options") == "nosniff"
    assert get("Set-Cookie") is None
    if no_store:
        assert get("Cache-Control") == "no-store"


async def http(
    r: RunningRelay,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request."""
    data = orjson.dumps(json) if json is not None else body
    async with r.session.request(method, r.base + path, data=data, headers=headers) as response:
        return response.status, response.headers, await response.read()


def assert_json_error(status: int, headers: Any, body: bytes, expected_status: int, code: str) -> None:
    assert (status, headers.get("Content-Type", "").split(";")[0]) == (
        expected_status,
        "application/json",
    ), body
    error = orjson.loads(body)
    assert set(error) == {"error", "message"}, error
    assert error["error"] == code, error
    assert isinstance(error["message"], str) and error["message"]


async def raw_request(port: int, head: str) -> tuple[int, bytes]:
    """Send a request head exactly as written (no client-side path normalisation) and read
    the whole answer: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode("latin-1"))
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), body


async def challenge(r: RunningRelay) -> dict[str, Any]:
    status, _, body = await http(r, "POST", "/api/challenge")
    assert status == 200, body
    return orjson.loads(body)


async def create(r: RunningRelay, body: Any) -> tuple[int, dict[str, Any]]:
    """POST /api/rooms with ``body`` (JSON-encoded unless bytes): (status, decoded answer)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    status, _, answer = await http(
        r, "POST", "/api/rooms", body=raw, headers={"Content-Type": "application/json"}
    )
    return status, orjson.loads(answer)


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll server state that no event announces (a room dropped, a count changed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def join_frame(secret: Any) -> bytes:
    return client_frame(1, orjson.dumps({"type": "join", "secret": secret}))


async def expect_type(client: RawClient, kind: str) -> dict[str, Any]:
    message = await client.recv_json()
    assert message.get("type") == kind, message
    return message


async def members(
    r: RunningRelay, room: dict[str, Any], count: int
) -> list[tuple[RawClient, dict[str, Any]]]:
    """``count`` joined members; each has read the join events of the ones after it."""
    joined = []
    for _ in range(count):
        joined.append(await r.member(room))
    for i, (client, _) in enumerate(joined):
        for _ in range(count - 1 - i):
            await expect_type(client, "join")
    return joined


async def recv_relayed(client: RawClient, timeout: float = 5.0) -> tuple[int, bytes]:
    """The next frame, which must be a relayed binary message: (sender id, ciphertext)."""
    frame = await client.recv(timeout)
    assert frame.opcode == 2, frame
    return struct.unpack("!I", frame.payload[:4])[0], frame.payload[4:]


async def expect_close_next(client: RawClient, code: int, reason: str | None = None) -> None:
    """The very next frame is the server's close with ``code`` (nothing before it), and the
    TCP connection then ends with nothing after it."""
    frame = await client.recv()
    assert (frame.opcode, frame.close_code) == (8, code), frame
    if reason is not None:
        assert frame.close_reason == reason
    rest = await asyncio.wait_for(client.reader.read(), 5)
    assert rest == b"", "data after the server's close frame"
