"""The HTTP side of the relay (docs/protocol.md §2): pages, assets, the API and the upgrade.

aiohttp serves every plain HTTP request. A WebSocket upgrade is nearly always answered by the
front door before aiohttp sees it (pugfast/frontdoor.py); the ones that reach aiohttp are the
front door's refusals, answered here with the relay's JSON errors, and upgrades on a
connection that already carried a request. Those it accepts are answered here with a 101,
and the connection is handed to the engine through aiohttp's payload-parser hook
(``request.protocol.set_parser``), the same hook aiohttp's own WebSocketResponse uses; see
docs/engine.md for why that is safe and which aiohttp versions it relies on.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .allowance import CONNECTIONS, ROOMS
from .frontdoor import FrontDoor
from .gateway import Gateway
from .handshake import HandshakeError, check_upgrade, origin_allowed
from .headers import HSTS, SECURITY_HEADERS, content_security_policy
from .pow import ChallengeError, valid_nonce, valid_token_text
from .privacy import quiet_client_faults

MAX_BODY = 4096
ROOM_ID = "[A-Za-z0-9_-]{22}"

GATEWAY = web.AppKey("gateway", Gateway)
# The loop time by which a request's body must have arrived (set by ``request_arrived``).
BODY_BY = web.RequestKey("body_by", float)

_STATUS_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    417: "expectation_failed",
    426: "upgrade_required",
    429: "rate_limited",
    503: "at_capacity",
}


def static_dir() -> Path:
    """The client's files: inside the installed package, or static/ of a source checkout."""
    packaged = Path(__file__).parent / "static"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "static"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    response = json_response({"error": code, "message": message}, status)
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error response is ``{"error": CODE, "message": TEXT}`` (docs/protocol.md §2.3)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = {
            404: "nothing here",
            405: f"{request.method} is not allowed here",
            408: "the request did not arrive in time",
            413: f"request bodies are limited to {MAX_BODY} bytes",
        }.get(exc.status, exc.reason)
        response = json_error(exc.status, _STATUS_CODES.get(exc.status, "error"), message, headers)
        if exc.status == 408:
            response.force_close()
        return response
    except (HttpProcessingError, web.RequestPayloadError):
        # The body broke off or would not decode (a bad chunk, a Content-Encoding that is not
        # what it says): aiohttp raises that from request.read(), and left alone it would be
        # a 500 and an ERROR line for what is a malformed request.
        return json_error(400, "bad_request", "the request body could not be read")


@web.middleware
async def request_arrived(request: web.Request, handler: Any) -> web.StreamResponse:
    """Tell the connection's front door that a request head arrived whole, so that its first
    request deadline now covers only the body (pugfast/frontdoor.py)."""
    transport = request.transport
    door = transport.get_protocol() if transport is not None else None
    if isinstance(door, FrontDoor):
        request[BODY_BY] = door.request_arrived()
    return await handler(request)


async def read_body(request: web.Request) -> bytes:
    """The request's body, which must arrive by the request deadline (docs/protocol.md §2.6);
    raises web.HTTPRequestTimeout (408) when it does not."""
    body_by = request.get(BODY_BY)
    if body_by is None:
        return await request.read()
    try:
        return await asyncio.wait_for(request.read(), body_by - asyncio.get_running_loop().time())
    except asyncio.TimeoutError:
        gateway = request.app[GATEWAY]
        if gateway.entrance is not None:
            gateway.entrance.deadline_closes += 1
        raise web.HTTPRequestTimeout() from None


@web.middleware
async def one_request_per_connection(request: web.Request, handler: Any) -> web.StreamResponse:
    """With ``--workers``, every connection carries one request.

    The acceptor picks a connection's worker from its first request (a WebSocket upgrade goes
    to the worker owning its room), so a later request on the same connection, such as an
    upgrade into a room of another worker, could reach the wrong one. Browsers open a new
    connection for every WebSocket anyway; other clients now must too.
    """
    response = await handler(request)
    response.force_close()
    return response


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Strict headers on every response, errors and the 101 included; never a cookie."""
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(request.host or "")
    headers.update(SECURITY_HEADERS)
    if request.app[GATEWAY].settings.tls:
        headers[HSTS[0]] = HSTS[1]
    if "Cache-Control" not in headers:
        # Assets may be kept if revalidated; pages, API answers and errors never are.
        asset = request.path.startswith("/static/") and response.status < 400
        headers["Cache-Control"] = "no-cache" if asset else "no-store"
    headers.popall("Set-Cookie", None)


async def home(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(static_dir() / "index.html")


async def room_page(request: web.Request) -> web.StreamResponse:
    # The same shell for every well-formed id, so the page is no oracle for which rooms exist.
    return web.FileResponse(static_dir() / "room.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    """A file of the client, from static/ and nowhere else; anything else is a JSON 404."""
    root = static_dir().resolve()
    try:
        path = (root / request.match_info["path"]).resolve()
        found = path.is_relative_to(root) and path.is_file()
    except (OSError, ValueError):
        # A name the file system cannot even look up (too long, a NUL byte from %00) names
        # no asset: the client's error, not the relay's.
        found = False
    if not found:
        raise web.HTTPNotFound()
    return web.FileResponse(path)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def limits(request: web.Request) -> web.Response:
    s = request.app[GATEWAY].settings
    return json_response(
        {
            "ttl": {"min": s.ttl_min, "max": s.ttl_max, "default": s.ttl_default},
            "capacity": {"min": s.capacity_min, "max": s.capacity_max, "default": s.capacity_default},
            "maxMessageBytes": s.max_message_bytes,
            "powDifficulty": s.pow_difficulty,
        }
    )


async def challenge(request: web.Request) -> web.Response:
    await read_body(request)  # ignored, but held to the body limit and deadline like any other
    gateway = request.app[GATEWAY]
    token, deadline = gateway.issuer.issue(gateway.clock())
    expires = int((time.time() + deadline - gateway.clock()) * 1000)
    return json_response(
        {"token": token, "difficulty": gateway.issuer.difficulty, "expires": expires}
    )


def _optional_int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if type(value) is not int:  # bool is an int subclass, and not a number here
        raise web.HTTPBadRequest(reason=f"{name} must be an integer")
    return min(max(value, low), high)


async def create_room(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    s = gateway.settings
    raw = await read_body(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json_error(400, "bad_request", "the body must be JSON")
    if not isinstance(body, dict):
        return json_error(400, "bad_request", "the body must be a JSON object")
    token, nonce = body.get("token"), body.get("nonce")
    if not valid_token_text(token):
        return json_error(400, "bad_request", "token must be the string /api/challenge gave")
    if not valid_nonce(nonce):
        return json_error(400, "bad_request", "nonce must be a decimal string of 1-20 digits")
    if any(type(body.get(name)) is float for name in ("ttl", "capacity")):
        # orjson reads an integer past 64 bits as a float; the standard library's parser
        # keeps it an integer, which is then clamped like any other.
        try:
            body = json.loads(raw.decode("utf-8"))
        except RecursionError:
            return json_error(400, "bad_request", "the body is nested too deeply")
    ttl = _optional_int(body, "ttl", s.ttl_default, s.ttl_min, s.ttl_max)
    capacity = _optional_int(body, "capacity", s.capacity_default, s.capacity_min, s.capacity_max)
    try:
        await gateway.check_challenge(token, nonce)
    except ChallengeError as exc:
        gateway.pow_failures[exc.code] += 1
        return json_error(exc.status, exc.code, exc.message)
    if not await gateway.reserve(ROOMS):
        return json_error(503, "at_capacity", "this relay has as many rooms as it can hold")
    try:
        if not await gateway.claim_token(token):
            gateway.pow_failures["challenge_used"] += 1
            return json_error(409, "challenge_used", "this challenge was already used")
        room, secret = gateway.create_room(ttl, capacity)
    finally:
        gateway.unreserve(ROOMS)
    return json_response(
        {
            "room": room.id,
            "secret": secret,
            "expires": room.expires_ms,
            "ttl": room.ttl,
            "capacity": room.capacity,
        },
        201,
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    s = gateway.settings
    if request.version < (1, 1):
        return json_error(400, "bad_request", "a WebSocket upgrade needs HTTP/1.1")
    try:
        accept = check_upgrade(request.headers)
    except HandshakeError as exc:
        return json_error(exc.status, exc.code, exc.message, exc.headers)
    if not origin_allowed(request.headers.get("Origin"), s.allowed_origin, request.scheme, request.host):
        return json_error(403, "origin_not_allowed", "this origin may not open a WebSocket here")
    if not await gateway.reserve(CONNECTIONS):
        return json_error(503, "at_capacity", "this relay has as many connections as it can hold")
    try:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost before the upgrade")
        response = web.StreamResponse(
            status=101,
            headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept},
        )
        response.force_close()
        await response.prepare(request)
        conn, session = gateway.open_connection(transport, request.match_info["room"])
    finally:
        gateway.unreserve(CONNECTIONS)
    door = transport.get_protocol()
    if isinstance(door, FrontDoor):
        door.became_websocket()
    # From here on aiohttp passes every byte of this connection to the engine, starting with
    # any it had already read past the request head.
    request.protocol.set_parser(conn)
    request.protocol.keep_alive(False)
    if request.protocol.transport is None:
        # The client left while the 101 was being sent, before aiohttp had a parser to tell.
        conn.feed_eof()
    # aiohttp closes the transport when this handler returns, so it returns only once the
    # connection is gone (the gateway drops a client that does not hang up after the close).
    await session.wait_lost(conn)
    return response


def make_app(gateway: Gateway) -> web.Application:
    """The relay's aiohttp application, serving ``gateway``."""
    # Here as well as in configure_logging, so that a relay run in-process (tests, an
    # embedding program) also logs a client's malformed request at debug only, scrubbed.
    quiet_client_faults()
    middlewares = [request_arrived, errors_as_json]
    if gateway.settings.workers > 1:
        middlewares.insert(0, one_request_per_connection)
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[GATEWAY] = gateway
    app.on_response_prepare.append(add_security_headers)
    router = app.router
    for method, path, handler in (
        ("GET", "/", home),
        ("GET", "/healthz", healthz),
        ("GET", "/api/limits", limits),
        ("POST", "/api/challenge", challenge),
        ("POST", "/api/rooms", create_room),
        ("GET", f"/r/{{room:{ROOM_ID}}}", room_page),
        ("GET", f"/r/{{room:{ROOM_ID}}}/ws", websocket),
        ("GET", "/static/{path:.*}", static_file),
        # Last: everything no route above takes, so that its Expect header is answered here too.
        ("*", "/{path:.*}", no_route),
    ):
        if method == "GET" and handler is not websocket:
            router.add_route("HEAD", path, handler, expect_handler=answer_expect)
        router.add_route(method, path, handler, expect_handler=answer_expect)
    return app


async def answer_expect(request: web.Request) -> web.StreamResponse | None:
    """The answer to an ``Expect`` header, on every path: ``100-continue`` gets its interim
    100; any other expectation the relay's JSON 417. aiohttp's own answer to the latter echoes
    the header into a plain-text body, and when the header is not UTF-8 it fails with a 500
    and an ERROR line: anyone could fill the log at will."""
    if request.version < (1, 1):
        return None  # HTTP/1.0 has no Expect (RFC 9110, section 10.1.1)
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None
    response = json_error(417, "expectation_failed", "the only expectation understood is 100-continue")
    response.force_close()
    return response


async def no_route(request: web.Request) -> web.StreamResponse:
    """A path no route takes (404), or a method its route does not (405, with Allow)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _match, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
