"""The relay's HTTP surface over real sockets (docs/protocol.md §2): routes, errors as JSON, and
the security headers on every response, the 101 included."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from protocol_helpers import (
    assert_json_error,
    assert_security_headers,
    challenge,
    create,
    csp_directives,
    expected_csp,
    http,
    random_room_id,
    raw_request,
)
from support import RawClient, running_relay

ROOM = "A" * 22

# method, path, status, content type, Cache-Control must be no-store
ROUTES = [
    ("GET", "/", 200, "text/html", True),
    ("GET", f"/r/{ROOM}", 200, "text/html", True),
    ("GET", "/static/app.css", 200, "text/css", False),
    ("GET", "/static/js/room.js", 200, "text/javascript", False),
    ("GET", "/api/limits", 200, "application/json", True),
    ("POST", "/api/challenge", 200, "application/json", True),
    ("GET", "/healthz", 200, "application/json", True),
]


@pytest.mark.parametrize(("method", "path", "status", "content_type", "no_store"), ROUTES)
async def test_route_status_type_and_headers(
    method: str, path: str, status: int, content_type: str, no_store: bool
) -> None:
    async with running_relay() as r:
        got, headers, body = await http(r, method, path)
        assert got == status, body
        # JavaScript modules are served under either registered type.
        allowed = {content_type, "application/javascript"} if "javascript" in content_type else {content_type}
        assert headers["Content-Type"].split(";")[0] in allowed
        assert body
        assert_security_headers(headers, r.port, no_store=no_store)


async def test_create_answers_201_json_with_the_security_headers() -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        status, headers, body = await http(r, "POST", "/api/rooms", json={"token": token, "nonce": "0"})
        assert status == 201, body
        assert headers["Content-Type"].split(";")[0] == "application/json"
        assert_security_headers(headers, r.port)


async def test_room_page_is_the_same_shell_for_existing_and_missing_rooms() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        pages = [await http(r, "GET", f"/r/{room_id}") for room_id in (room["room"], random_room_id())]
        for status, headers, _ in pages:
            assert status == 200
            assert headers["Cache-Control"] == "no-store"
            assert headers["Content-Type"].split(";")[0] == "text/html"
        assert pages[0][2] == pages[1][2]
        assert b"<html" in pages[0][2]


async def test_healthz_says_ok_and_nothing_else() -> None:
    async with running_relay() as r:
        await r.create_room()
        status, _, body = await http(r, "GET", "/healthz")
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})


async def test_limits_reflect_the_settings() -> None:
    settings = dict(
        ttl_min=5, ttl_max=500, ttl_default=50, capacity_min=3, capacity_max=30,
        capacity_default=7, max_message_bytes=1234, pow_difficulty=4,
    )
    async with running_relay(**settings) as r:
        status, _, body = await http(r, "GET", "/api/limits")
        assert status == 200
        assert orjson.loads(body) == {
            "ttl": {"min": 5, "max": 500, "default": 50},
            "capacity": {"min": 3, "max": 30, "default": 7},
            "maxMessageBytes": 1234,
            "powDifficulty": 4,
        }


BAD_IDS = [
    "A" * 21,
    "A" * 23,
    "A" * 21 + "!",
    "A" * 21 + ".",
    "A" * 21 + "+",
    "A" * 21 + "=",
    "A" * 21 + "~",
    "A" * 21 + "%C3%A9",  # é
    "",
]


@pytest.mark.parametrize("room_id", BAD_IDS)
async def test_malformed_room_ids_are_404_json_for_page_and_websocket(room_id: str) -> None:
    async with running_relay() as r:
        for path in (f"/r/{room_id}", f"/r/{room_id}/ws"):
            status, headers, body = await http(r, "GET", path)
            assert_json_error(status, headers, body, 404, "not_found")
            assert_security_headers(headers, r.port)
        # A real upgrade request for the malformed id is refused the same way.
        client = RawClient()
        status, headers = await client.handshake(r.port, f"/r/{room_id}/ws")
        await client.close()
        assert status == 404


BAD_BODIES = [
    b"",
    b"{",
    b"not json",
    b"[]",
    b'"token"',
    b"null",
    b"{}",
    b'{"nonce": "0"}',
    b'{"token": "TOKEN"}',
    b'{"token": 5, "nonce": "0"}',
    b'{"token": "TOKEN", "nonce": 0}',
    b'{"token": "TOKEN", "nonce": "0", "ttl": "600"}',
    b'{"token": "TOKEN", "nonce": "0", "ttl": 600.0}',
    b'{"token": "TOKEN", "nonce": "0", "ttl": true}',
    b'{"token": "TOKEN", "nonce": "0", "ttl": false}',
    b'{"token": "TOKEN", "nonce": "0", "ttl": [600]}',
    b'{"token": "TOKEN", "nonce": "0", "capacity": "4"}',
    b'{"token": "TOKEN", "nonce": "0", "capacity": 4.5}',
    b'{"token": "TOKEN", "nonce": "0", "capacity": true}',
    b'{"token": "TOKEN", "nonce": "0", "capacity": {}}',
    b"\xff\xfe",
    b'{"token": "TOKEN", "nonce": "0", "ttl": NaN}',
    b'{"token": "TOKEN", "nonce": "0", "capacity": Infinity}',
    b'{"token": "TOKEN", "nonce": "0", "ttl": -Infinity}',
    b"[" * 2000 + b"]" * 2000,  # deep nesting must not crash the parser into a 500
    b'{"token": "TOKEN", "nonce": "0", "ttl": ' + b"[" * 1900 + b"]" * 1900 + b"}",
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=[repr(b[:48])[2:-1] for b in BAD_BODIES])
async def test_malformed_create_bodies_are_400_json(body: bytes) -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        status, headers, answer = await http(
            r, "POST", "/api/rooms", body=body.replace(b"TOKEN", token.encode())
        )
        assert_json_error(status, headers, answer, 400, "bad_request")
        assert_security_headers(headers, r.port)
        assert len(r.gateway.registry) == 0


@pytest.mark.parametrize("field", ["ttl", "capacity"])
async def test_null_ttl_or_capacity_means_the_default(field: str) -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        status, room = await create(r, {"token": token, "nonce": "0", field: None})
        assert status == 201, room
        assert (room["ttl"], room["capacity"]) == (3600, 8)


@pytest.mark.parametrize("path", ["/api/rooms", "/api/challenge"])
async def test_bodies_over_4_kib_are_413_and_4_kib_is_not(path: str) -> None:
    async with running_relay() as r:
        status, headers, body = await http(r, "POST", path, body=b" " * 4097)
        assert_json_error(status, headers, body, 413, "too_large")
        assert_security_headers(headers, r.port)
        # Exactly 4 KiB is within the limit: a JSON body padded with spaces.
        token = (await challenge(r))["token"]
        padded = orjson.dumps({"token": token, "nonce": "0"})
        padded += b" " * (4096 - len(padded))
        status, _, body = await http(r, "POST", path, body=padded)
        assert status in (200, 201), body


NOT_FOUND = ["/nope", "/api", "/api/nope", "/r", "/r/", "/static/nope.js", "/healthz/x", "/static/"]


@pytest.mark.parametrize("path", NOT_FOUND)
async def test_unknown_paths_are_404_json(path: str) -> None:
    async with running_relay() as r:
        status, headers, body = await http(r, "GET", path)
        assert_json_error(status, headers, body, 404, "not_found")
        assert_security_headers(headers, r.port)


TRAVERSALS = [
    "/static/../pyproject.toml",
    "/static/..%2fpyproject.toml",
    "/static/%2e%2e/pyproject.toml",
    "/static/%2e%2e%2fpyproject.toml",
    "/static/js/../../pyproject.toml",
    "/static/..%5cpyproject.toml",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_static_never_serves_a_file_outside_static(path: str) -> None:
    async with running_relay() as r:
        status, body = await raw_request(
            r.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\nConnection: close\r\n\r\n"
        )
        assert status in (400, 403, 404), (status, body[:200])
        assert b"[project]" not in body and b"root:" not in body


METHODS = [
    ("POST", "/", {"GET", "HEAD"}),
    ("GET", "/api/rooms", {"POST"}),
    ("GET", "/api/challenge", {"POST"}),
    ("PUT", "/api/rooms", {"POST"}),
    ("POST", "/healthz", {"GET", "HEAD"}),
    ("DELETE", "/api/limits", {"GET", "HEAD"}),
    ("POST", f"/r/{ROOM}", {"GET", "HEAD"}),
    ("POST", f"/r/{ROOM}/ws", {"GET"}),
    ("PUT", f"/r/{ROOM}/ws", {"GET"}),
]


@pytest.mark.parametrize(("method", "path", "allow"), METHODS)
async def test_wrong_method_is_405_json_with_allow(method: str, path: str, allow: set[str]) -> None:
    async with running_relay() as r:
        status, headers, body = await http(r, method, path)
        assert_json_error(status, headers, body, 405, "method_not_allowed")
        assert {m.strip() for m in headers["Allow"].split(",")} == allow
        assert_security_headers(headers, r.port)


async def test_the_101_carries_the_security_headers_and_no_cookie() -> None:
    async with running_relay() as r:
        client = await r.raw(random_room_id())
        assert_security_headers(client.response_headers, r.port)
        await client.close()


async def test_no_response_sets_a_cookie_even_when_the_request_sends_one() -> None:
    async with running_relay() as r:
        for method, path, _, _, _ in ROUTES:
            async with r.session.request(method, r.base + path, headers={"Cookie": "a=b"}) as response:
                assert "Set-Cookie" not in response.headers
        assert len(r.session.cookie_jar) == 0


HTTP_LAYER_ERRORS = [
    ("oversized_head", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"),
    ("garbage_request_line", b"GARBAGE\r\n\r\n"),
    ("bad_version", b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n"),
]


@pytest.mark.parametrize(
    "request_bytes", [b for _, b in HTTP_LAYER_ERRORS], ids=[i for i, _ in HTTP_LAYER_ERRORS]
)
async def test_http_layer_errors_are_plain_and_end_the_connection(request_bytes: bytes) -> None:
    # docs/protocol.md §2.3: aiohttp answers these before the application sees the request,
    # in plain text without the relay's headers; no HTML, no cookie, and the connection ends.
    async with running_relay() as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(request_bytes)
        answer = await asyncio.wait_for(reader.read(), 5)  # returns only once the server closes
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert int(lines[0].split()[1]) in (400, 431), lines[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        assert "set-cookie" not in headers
        assert headers["content-type"].split(";")[0] != "text/html"
        assert b"<" not in body


async def test_a_chunked_body_over_4_kib_is_413() -> None:
    async with running_relay() as r:
        chunk = b"a" * 5000
        status, body = await raw_request(
            r.port,
            f"POST /api/rooms HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\nTransfer-Encoding: chunked\r\n"
            f"Connection: close\r\n\r\n{len(chunk):x}\r\n{chunk.decode()}\r\n0\r\n\r\n",
        )
        assert status == 413
        assert orjson.loads(body)["error"] == "too_large"


async def test_the_websocket_path_without_an_upgrade_is_400_json() -> None:
    async with running_relay() as r:
        status, headers, body = await http(r, "GET", f"/r/{random_room_id()}/ws")
        assert_json_error(status, headers, body, 400, "bad_request")
        assert_security_headers(headers, r.port)


async def test_options_is_405_json() -> None:
    async with running_relay() as r:
        status, headers, body = await http(r, "OPTIONS", "/api/rooms")
        assert_json_error(status, headers, body, 405, "method_not_allowed")


HOSTILE_HOSTS = [
    "evil.example; script-src *",
    "evil.example 'unsafe-inline'",
    "evil.example/x",
    "evil.example:80,'unsafe-eval'",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
async def test_a_hostile_host_header_cannot_widen_the_csp(host: str) -> None:
    async with running_relay() as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        csp = csp_directives(headers["content-security-policy"])
        expected = expected_csp(r.port)
        for directive, sources in csp.items():
            if directive == "connect-src":
                assert sources <= {"'self'", "ws://evil.example", "wss://evil.example"}, sources
            else:
                assert sources == expected[directive], (directive, sources)
        assert set(csp) == set(expected)


async def test_a_not_modified_page_still_carries_the_security_headers() -> None:
    async with running_relay() as r:
        _, first, _ = await http(r, "GET", f"/r/{ROOM}")
        validators = (("If-None-Match", "ETag"), ("If-Modified-Since", "Last-Modified"))
        conditions = {ask: first[given] for ask, given in validators if given in first}
        status, headers, _ = await http(r, "GET", f"/r/{random_room_id()}", headers=conditions)
        assert status in (200, 304)
        assert_security_headers(headers, r.port)


async def test_a_create_body_that_is_not_utf8_is_400() -> None:
    # docs/protocol.md §1.1: every JSON text is UTF-8 (a parser that sniffs UTF-16 must not accept this).
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        body = orjson.dumps({"token": token, "nonce": "0"}).decode().encode("utf-16")
        status, headers, answer = await http(r, "POST", "/api/rooms", body=body)
        assert_json_error(status, headers, answer, 400, "bad_request")


@pytest.mark.parametrize("depth", [500, 1010, 1023])
async def test_deeply_nested_unknown_fields_never_crash_the_create(depth: int) -> None:
    # A huge ttl makes the relay re-read the body with a second parser; neither may fail
    # with anything but a JSON answer (201, the field ignored, or 400).
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        nested = b"[" * depth + b"]" * depth
        for ttl in (b"600", b"1" + b"0" * 30):
            body = b'{"token":"%s","nonce":"0","ttl":%s,"x":%s}' % (token.encode(), ttl, nested)
            status, headers, answer = await http(r, "POST", "/api/rooms", body=body)
            assert status in (201, 400), (status, answer[:100])
            assert headers["Content-Type"].split(";")[0] == "application/json"
            if status == 201:
                token = (await challenge(r))["token"]


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    async with running_relay(keepalive_timeout=0.3) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        loop = asyncio.get_running_loop()
        for _ in range(2):  # a kept-alive connection serves a second request before it idles
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            await reader.readexactly(length)
        answered = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the relay hung up
        assert 0.2 < loop.time() - answered < 2.0
        writer.close()
