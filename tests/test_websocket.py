"""The WebSocket side of the relay over real sockets (docs/protocol.md §6.1-§6.8): the opening
handshake, join, relay, control messages and limits; and full chats with two independent
client libraries (websockets, aiohttp) to show the relay is no friend of one client only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import os
import ssl
import struct
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
from engines import client_frame
from protocol_helpers import (
    NAME,
    assert_security_headers,
    expect_close_next,
    expect_type,
    join_frame,
    members,
    random_room_id,
    recv_relayed,
    wait_until,
)
from support import RawClient, running_relay

# -- join (docs/protocol.md §6.2) ------------------------------------------------------------

FIRST_MESSAGES = [
    ("other_type", 1, b'{"type":"hello"}'),
    ("purge_first", 1, b'{"type":"purge"}'),
    ("upper_case_type", 1, b'{"type":"JOIN","secret":"SECRET"}'),
    ("no_type", 1, b'{"secret":"SECRET"}'),
    ("binary", 2, b"\x01ciphertext"),
    ("empty_binary", 2, b""),
    ("missing_secret", 1, b'{"type":"join"}'),
    ("null_secret", 1, b'{"type":"join","secret":null}'),
    ("number_secret", 1, b'{"type":"join","secret":123}'),
    ("list_secret", 1, b'{"type":"join","secret":["SECRET"]}'),
    ("object_secret", 1, b'{"type":"join","secret":{"s":"SECRET"}}'),
    ("invalid_json", 1, b'{"type":"join",'),
    ("empty_text", 1, b""),
    ("json_array", 1, b'["join","SECRET"]'),
    ("json_string", 1, b'"join"'),
    ("json_number", 1, b"1"),
]


@pytest.mark.parametrize(
    ("opcode", "payload"), [c[1:] for c in FIRST_MESSAGES], ids=[c[0] for c in FIRST_MESSAGES]
)
async def test_a_first_message_that_is_not_a_join_is_4400(opcode: int, payload: bytes) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        client = await r.raw(room["room"])
        client.send(client_frame(opcode, payload.replace(b"SECRET", room["secret"].encode())))
        await expect_close_next(client, 4400)
        # Nobody joined: the room is untouched and still joinable.
        _, welcome = await r.member(room)
        assert welcome["you"]["id"] == 1


def wrong_secrets(secret: str) -> list[str]:
    last = "A" if secret[-1] != "A" else "B"
    first = "A" if secret[0] != "A" else "B"
    return [
        secret[:-1] + last,
        first + secret[1:],
        "",
        secret[:-1],
        secret + "A",
        secret + "=",
        " " + secret,
        secret.lower() if secret.lower() != secret else secret.upper(),
        "x" * 10000,
        base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()).decode(),
        hashlib.sha256(secret.encode()).hexdigest(),
    ]


async def test_wrong_secrets_are_4403_and_change_nothing() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        other = await r.create_room()
        for secret in [*wrong_secrets(room["secret"]), other["secret"]]:
            client = await r.raw(room["room"])
            client.send(join_frame(secret))
            await expect_close_next(client, 4403)
        _, welcome = await r.member(room)
        assert welcome["you"]["id"] == 1 and welcome["creator"] is True


async def test_join_order_no_room_is_4404_whatever_the_secret() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        for secret in (room["secret"], "wrong"):
            client = await r.raw(random_room_id())
            client.send(join_frame(secret))
            await client.expect_closed_with(4404)


async def test_join_order_full_comes_before_the_secret() -> None:
    async with running_relay() as r:
        room = await r.create_room(capacity=2)
        joined = await members(r, room, 2)
        for secret in (room["secret"], "wrong", ""):
            client = await r.raw(room["room"])
            client.send(join_frame(secret))
            await client.expect_closed_with(4409)
        assert len(joined) == 2


async def test_the_upgrade_succeeds_for_any_well_formed_room_id() -> None:
    async with running_relay() as r:
        client = await r.raw(random_room_id())
        # The 101 says nothing; only the join is answered with 4404.
        await client.send_json({"type": "join", "secret": "x"})
        await client.expect_closed_with(4404)


async def test_join_timeout_is_4408_and_pings_or_a_partial_frame_do_not_delay_it() -> None:
    async with running_relay(join_timeout=0.3) as r:
        room = await r.create_room()
        started = asyncio.get_running_loop().time()
        quiet, partial = await r.raw(room["room"]), await r.raw(room["room"])
        partial.send(join_frame(room["secret"])[:5])
        before = set(r.gateway.connections)
        pinging = await r.raw(room["room"])
        (conn,) = set(r.gateway.connections) - before

        async def keep_pinging() -> None:
            # Like a client that keeps the socket busy but never joins (and never hangs up,
            # so the server's side of this connection is checked).
            with contextlib.suppress(OSError):
                while True:
                    pinging.send(client_frame(9, b"p"))
                    await asyncio.sleep(0.03)

        pinger = asyncio.ensure_future(keep_pinging())
        try:
            await expect_close_next(quiet, 4408)
            await expect_close_next(partial, 4408)
            await wait_until(lambda: conn.closing, timeout=1.5)
            assert conn.close_code == 4408
        finally:
            pinger.cancel()
        assert asyncio.get_running_loop().time() - started >= 0.25
        # A member that joined in time is not touched by the join timeout.
        member, _ = await r.member(room)
        await asyncio.sleep(0.5)
        member.send(client_frame(9, b"alive"))
        assert (await member.recv()).payload == b"alive"


async def test_welcome_shape_and_join_events() -> None:
    async with running_relay() as r:
        room = await r.create_room(capacity=5)
        a, wa = await r.member(room)
        assert set(wa) == {"type", "you", "creator", "members", "expires", "capacity"}
        assert set(wa["you"]) == {"id", "name"}
        assert wa["you"]["id"] == 1 and NAME.fullmatch(wa["you"]["name"])
        assert wa["creator"] is True
        assert wa["members"] == [wa["you"]]
        assert (wa["expires"], wa["capacity"]) == (room["expires"], 5)
        b, wb = await r.member(room)
        assert wb["you"]["id"] == 2 and wb["creator"] is False
        assert sorted(wb["members"], key=lambda m: m["id"]) == [wa["you"], wb["you"]]
        assert (wb["expires"], wb["capacity"]) == (room["expires"], 5)
        assert await a.recv_json() == {"type": "join", "member": wb["you"]}
        _c, wc = await r.member(room)
        for client in (a, b):
            assert await client.recv_json() == {"type": "join", "member": wc["you"]}
        assert len(wc["members"]) == 3


async def test_member_ids_count_up_and_are_never_reused() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, _wa), (b, wb) = await members(r, room, 2)
        await b.close()
        assert await a.recv_json() == {"type": "leave", "member": wb["you"]}
        ids = []
        for _ in range(3):
            client, welcome = await r.member(room)
            assert await a.recv_json() == {"type": "join", "member": welcome["you"]}
            ids.append(welcome["you"]["id"])
            await client.close()
            assert (await a.recv_json())["type"] == "leave"
        assert ids == [3, 4, 5]
        _, rejoined = await r.member(room)
        assert rejoined["you"]["id"] == 6
        assert [m["id"] for m in rejoined["members"]] == [1, 6]


async def test_display_names_are_unique_in_a_full_room() -> None:
    async with running_relay(capacity_max=64, rate_limit=0) as r:
        room = await r.create_room(capacity=64)
        clients = []
        for _ in range(64):
            client, welcome = await r.member(room)
            clients.append(client)
        names = [m["name"] for m in welcome["members"]]
        assert len(names) == 64 == len(set(names))
        assert all(NAME.fullmatch(name) for name in names)


async def test_leave_events_reach_everyone_left_at_once() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, _), (b, wb), (c, _) = await members(r, room, 3)
        b.send(client_frame(8, struct.pack("!H", 1000)))
        await b.expect_closed_with(1000)
        for client in (a, c):
            assert await client.recv_json(timeout=1) == {"type": "leave", "member": wb["you"]}


# -- relay and control messages (docs/protocol.md §6.3, §6.4) --------------------------------


async def test_binary_goes_to_every_other_member_with_the_sender_id_and_no_echo() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, wb), (c, _wc) = await members(r, room, 3)
        payload = os.urandom(300)
        await a.send_binary(payload)
        for client in (b, c):
            frame = await client.recv()
            assert (frame.opcode, frame.fin) == (2, True)
            assert frame.payload == struct.pack("!I", wa["you"]["id"]) + payload
        # No echo: the next thing a receives is b's message, not its own.
        await b.send_binary(b"from b")
        assert await recv_relayed(a) == (wb["you"]["id"], b"from b")
        assert await recv_relayed(c) == (wb["you"]["id"], b"from b")


async def test_zero_length_binary_is_ignored() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(2, b"") * 3)
        await a.send_binary(b"x")
        assert await recv_relayed(b) == (wa["you"]["id"], b"x")
        a.send(client_frame(9, b"open?"))
        assert (await a.recv()).payload == b"open?"


@pytest.mark.parametrize("size", [1, 125, 126, 1000, 1024])
async def test_messages_up_to_the_limit_are_relayed_unchanged(size: int) -> None:
    async with running_relay(max_message_bytes=1024) as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        payload = os.urandom(size)
        await a.send_binary(payload)
        assert await recv_relayed(b) == (wa["you"]["id"], payload)


async def test_a_message_over_the_limit_closes_the_sender_with_1009() -> None:
    async with running_relay(max_message_bytes=1024) as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        await a.send_binary(os.urandom(1025))
        await a.expect_closed_with(1009)
        assert await b.recv_json() == {"type": "leave", "member": wa["you"]}


BAD_AFTER_JOIN = [
    ("unknown_type", b'{"type":"hello"}'),
    ("second_join", b'{"type":"join","secret":"SECRET"}'),
    ("no_type", b'{"text":"hi"}'),
    ("invalid_json", b"{"),
    ("plain_text", b"hello"),
    ("json_array", b'[{"type":"purge"}]'),
    ("json_null", b"null"),
    ("type_not_string", b'{"type":1}'),
]


@pytest.mark.parametrize("payload", [p for _, p in BAD_AFTER_JOIN], ids=[i for i, _ in BAD_AFTER_JOIN])
async def test_bad_text_after_join_is_4400(payload: bytes) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(1, payload.replace(b"SECRET", room["secret"].encode())))
        await expect_close_next(a, 4400)
        assert await b.recv_json() == {"type": "leave", "member": wa["you"]}
        assert room["room"] in r.gateway.registry.rooms


async def test_unknown_fields_are_ignored() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        a = await r.raw(room["room"])
        await a.send_json({"type": "join", "secret": room["secret"], "name": "Mallory", "id": 99})
        welcome = await expect_type(a, "welcome")
        assert welcome["you"]["id"] == 1 and welcome["you"]["name"] != "Mallory"
        b, _ = await r.member(room)
        await expect_type(a, "join")
        await b.send_json({"type": "purge", "extra": [1, 2]})
        assert await b.recv_json() == {"type": "error", "code": "not_creator"}


# -- limits and liveness (docs/protocol.md §6.5-§6.8) ----------------------------------------


async def test_rate_limit_drops_the_excess_and_says_so_once() -> None:
    async with running_relay(rate_limit=5, rate_burst=5) as r:
        room = await r.create_room()
        (a, wa), (b, _), (c, wc) = await members(r, room, 3)
        a.send(b"".join(client_frame(2, b"%d" % i) for i in range(20)))
        assert await a.recv_json(timeout=1) == {"type": "error", "code": "rate_limited"}
        # More over the limit within the second: dropped, and no second notice.
        a.send(b"".join(client_frame(2, b"late") for _ in range(10)))
        a.send(client_frame(9, b"mark"))
        frame = await a.recv()
        assert (frame.opcode, frame.payload) == (10, b"mark")
        # c marks the end of what a managed to send; b counts what got through before it.
        await c.send_binary(b"end")
        got = []
        while (message := await recv_relayed(b)) != (wc["you"]["id"], b"end"):
            got.append(message)
        assert 5 <= len(got) <= 6, got
        assert got[:5] == [(wa["you"]["id"], b"%d" % i) for i in range(5)]


async def test_rate_limit_refills_over_time() -> None:
    async with running_relay(rate_limit=20, rate_burst=2) as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(2, b"1") + client_frame(2, b"2") + client_frame(2, b"3"))
        assert await a.recv_json() == {"type": "error", "code": "rate_limited"}
        await asyncio.sleep(0.15)  # 3 tokens' worth at 20/s
        await a.send_binary(b"4")
        assert [await recv_relayed(b) for _ in range(3)] == [(wa["you"]["id"], p) for p in (b"1", b"2", b"4")]


async def test_rate_limit_zero_turns_it_off() -> None:
    async with running_relay(rate_limit=0, rate_burst=1) as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(b"".join(client_frame(2, b"%d" % i) for i in range(300)))
        for i in range(300):
            assert await recv_relayed(b) == (wa["you"]["id"], b"%d" % i)
        a.send(client_frame(9, b"no notice"))
        assert (await a.recv()).opcode == 10


async def test_an_idle_member_is_pinged_kept_by_pongs_and_closed_1001_when_silent() -> None:
    async with running_relay(ping_interval=0.2, idle_timeout=0.6) as r:
        room = await r.create_room()
        (a, _), (b, wb) = await members(r, room, 2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        pings, texts = 0, []
        while loop.time() - started < 1.2:  # twice the idle timeout
            frame = await a.recv(timeout=0.6)
            if frame.opcode == 9:
                pings += 1
                a.send(client_frame(10, frame.payload))
            else:
                texts.append(orjson.loads(frame.payload))
        assert pings >= 3
        # b said nothing all along: it was closed for silence, and a heard it leave.
        await b.expect_closed_with(1001, timeout=1)
        assert texts == [{"type": "leave", "member": wb["you"]}]
        # a is alive; now it falls silent too.
        await a.expect_closed_with(1001, timeout=1.5)


async def test_the_first_ping_comes_after_the_ping_interval() -> None:
    async with running_relay(ping_interval=0.2, idle_timeout=5) as r:
        room = await r.create_room()
        a, _ = await r.member(room)
        started = asyncio.get_running_loop().time()
        frame = await a.recv(timeout=1)
        assert frame.opcode == 9
        assert asyncio.get_running_loop().time() - started >= 0.15


async def test_any_frame_counts_as_activity() -> None:
    async with running_relay(ping_interval=0.2, idle_timeout=0.4) as r:
        room = await r.create_room()
        (_a, _), (b, _wb) = await members(r, room, 2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < 0.9:
            b.send(client_frame(10, b"unsolicited"))  # never answers pings, only volunteers
            await asyncio.sleep(0.05)
        b.send(client_frame(9, b"still open"))
        frame = await b.recv()
        while frame.opcode != 10:  # pings, and the leave of a, which fell silent
            assert frame.opcode in (1, 9), frame
            frame = await b.recv()
        assert frame.payload == b"still open"


async def test_max_connections_refuses_the_upgrade_with_503_json() -> None:
    async with running_relay(max_connections=2) as r:
        room = await r.create_room()
        _first, _ = await r.member(room)
        second = await r.raw(room["room"])  # not joined: counts all the same
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(upgrade_request(r.port, room["room"]))
        status, headers, body = await read_response(reader)
        writer.close()
        assert status == 503
        assert orjson.loads(body)["error"] == "at_capacity"
        assert_security_headers(headers, r.port)
        await second.close()
        await wait_until(lambda: len(r.gateway.connections) == 1)
        _third, _ = await r.member(room)


# -- the opening handshake (docs/protocol.md §6.1) -------------------------------------------


def upgrade_request(port: int, room_id: str, **fields: str | None) -> bytes:
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    for name, value in fields.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    head = f"GET /r/{room_id}/ws HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(lines[0].split()[1]), headers, body


async def handshake(r, room_id: str, **fields: str | None) -> tuple[int, dict[str, str], bytes, RawClient]:
    client = RawClient()
    client.reader, client.writer = await asyncio.open_connection("127.0.0.1", r.port)
    client.writer.write(upgrade_request(r.port, room_id, **fields))
    status, headers, body = await read_response(client.reader)
    return status, headers, body, client


REFUSED = [
    ("version_12", {"Sec-WebSocket-Version": "12"}, 426, "upgrade_required"),
    ("version_8", {"Sec-WebSocket-Version": "8"}, 426, "upgrade_required"),
    ("version_14", {"Sec-WebSocket-Version": "14"}, 426, "upgrade_required"),
    ("no_key", {"Sec-WebSocket-Key": None}, 400, "bad_request"),
    ("short_key", {"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}, 400, "bad_request"),
    ("long_key", {"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()}, 400, "bad_request"),
    ("not_base64_key", {"Sec-WebSocket-Key": "!" * 24}, 400, "bad_request"),
    ("no_upgrade", {"Upgrade": None}, 400, "bad_request"),
    ("upgrade_h2c", {"Upgrade": "h2c"}, 400, "bad_request"),
    ("connection_keep_alive", {"Connection": "keep-alive"}, 400, "bad_request"),
    ("no_connection", {"Connection": None}, 400, "bad_request"),
    ("foreign_origin", {"Origin": "http://evil.example"}, 403, "origin_not_allowed"),
    ("other_port_origin", {"Origin": "http://127.0.0.1:1"}, 403, "origin_not_allowed"),
    ("https_origin", {"Origin": "https://127.0.0.1:PORT"}, 403, "origin_not_allowed"),
    ("null_origin", {"Origin": "null"}, 403, "origin_not_allowed"),
    ("suffix_origin", {"Origin": "http://127.0.0.1:PORT.evil.example"}, 403, "origin_not_allowed"),
    ("trailing_slash_origin", {"Origin": "http://127.0.0.1:PORT/"}, 403, "origin_not_allowed"),
    ("empty_origin", {"Origin": ""}, 403, "origin_not_allowed"),
    ("portless_origin", {"Origin": "http://127.0.0.1"}, 403, "origin_not_allowed"),
    ("ws_scheme_origin", {"Origin": "ws://127.0.0.1:PORT"}, 403, "origin_not_allowed"),
    ("path_origin", {"Origin": "http://127.0.0.1:PORT/r"}, 403, "origin_not_allowed"),
]


@pytest.mark.parametrize(
    ("fields", "status", "code"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
async def test_refused_upgrades(fields: dict[str, str | None], status: int, code: str) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        fields = {k: v.replace("PORT", str(r.port)) if v else v for k, v in fields.items()}
        got, headers, body, client = await handshake(r, room["room"], **fields)
        await client.close()
        assert got == status, body
        assert orjson.loads(body)["error"] == code
        assert_security_headers(headers, r.port)
        if status == 426:
            assert headers["sec-websocket-version"] == "13"
        assert len(r.gateway.connections) == 0


def accept_for(key: str) -> str:
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


async def test_the_101_answers_the_key_and_agrees_no_extension_or_subprotocol() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        key = base64.b64encode(os.urandom(16)).decode()
        status, headers, _, client = await handshake(
            r, room["room"],
            Sec_WebSocket_Key=key,
            Sec_WebSocket_Extensions="permessage-deflate; client_max_window_bits",
            Sec_WebSocket_Protocol="chat, superchat",
            Origin=f"http://127.0.0.1:{r.port}",
        )
        assert status == 101
        assert headers["upgrade"].lower() == "websocket"
        assert "upgrade" in headers["connection"].lower()
        assert headers["sec-websocket-accept"] == accept_for(key)
        assert "sec-websocket-extensions" not in headers
        assert "sec-websocket-protocol" not in headers
        assert "transfer-encoding" not in headers  # a 1xx never has a body
        assert_security_headers(headers, r.port)
        # The connection speaks plain frames; a compressed one (RSV1) is a protocol error.
        client.send(join_frame(room["secret"]))
        assert (await client.recv_json())["type"] == "welcome"
        client.send(client_frame(2, b"deflated?", rsv=4))
        await client.expect_closed_with(1002)


async def test_allowed_origin_setting_is_enforced() -> None:
    async with running_relay(allowed_origin="https://chat.example.org") as r:
        room = await r.create_room()
        for origin, status in (
            ("https://chat.example.org", 101),
            ("HTTPS://Chat.Example.ORG", 101),
            ("https://chat.example.org/", 403),
            (f"http://127.0.0.1:{r.port}", 403),
            ("http://chat.example.org", 403),
            ("https://chat.example.org:8443", 403),
            (None, 101),
        ):
            got, _, _, client = await handshake(r, room["room"], Origin=origin)
            await client.close()
            assert got == status, origin


async def test_a_dribbled_handshake_does_not_hold_up_anyone_else() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        request = upgrade_request(r.port, room["room"])
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        delay = 1.2 / len(request)

        async def dribble() -> None:
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(delay)

        slow = asyncio.ensure_future(dribble())
        # Meanwhile a whole chat happens.
        other = await r.create_room()
        (a, wa), (b, wb) = await members(r, other, 2)
        await a.send_binary(b"ping")
        assert await recv_relayed(b) == (wa["you"]["id"], b"ping")
        await b.send_binary(b"pong")
        assert await recv_relayed(a) == (wb["you"]["id"], b"pong")
        assert not slow.done()
        await slow
        status, _, _ = await read_response(reader)
        assert status == 101
        writer.close()


# -- independent clients ---------------------------------------------------------------------


async def test_a_full_chat_with_the_websockets_library() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        url = f"ws://127.0.0.1:{r.port}/r/{room['room']}/ws"
        async with websockets.connect(url, origin=r.base) as a, websockets.connect(url) as b:
            await a.send(orjson.dumps({"type": "join", "secret": room["secret"]}).decode())
            wa = orjson.loads(await a.recv())
            await b.send(orjson.dumps({"type": "join", "secret": room["secret"]}).decode())
            wb = orjson.loads(await b.recv())
            assert orjson.loads(await a.recv()) == {"type": "join", "member": wb["you"]}
            big = os.urandom(65536)  # the largest allowed; relayed with a 64-bit length
            await a.send(big)
            assert await b.recv() == struct.pack("!I", wa["you"]["id"]) + big
            await b.send(b"\x01reply")
            assert await a.recv() == struct.pack("!I", wb["you"]["id"]) + b"\x01reply"
            await b.send([b"frag", b"mented"])  # a fragmented message
            assert await a.recv() == struct.pack("!I", wb["you"]["id"]) + b"fragmented"
            await a.ping(b"are you there")  # waits for the pong
            await b.close()
            assert b.close_code == 1000
            assert orjson.loads(await a.recv()) == {"type": "leave", "member": wb["you"]}
            await a.send(orjson.dumps({"type": "purge"}).decode())
            assert orjson.loads(await a.recv()) == {"type": "purged"}
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await a.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4410, "purged")


async def test_a_full_chat_with_aiohttp_clients() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        url = f"{r.base}/r/{room['room']}/ws"
        async with r.session.ws_connect(url, compress=15, origin=r.base) as a, r.session.ws_connect(url) as b:
            assert a.compress == 0  # permessage-deflate was declined
            await a.send_json({"type": "join", "secret": room["secret"]})
            wa = await a.receive_json()
            await b.send_json({"type": "join", "secret": room["secret"]})
            wb = await b.receive_json()
            assert await a.receive_json() == {"type": "join", "member": wb["you"]}
            await a.send_bytes(b"\x01hello")
            assert await b.receive_bytes() == struct.pack("!I", wa["you"]["id"]) + b"\x01hello"
            await b.send_bytes(b"\x01hi")
            assert await a.receive_bytes() == struct.pack("!I", wb["you"]["id"]) + b"\x01hi"
            await b.send_json({"type": "purge"})
            assert await b.receive_json() == {"type": "error", "code": "not_creator"}
            await a.send_json({"type": "purge"})
            for client in (a, b):
                assert await client.receive_json() == {"type": "purged"}
                message = await client.receive()
                assert message.type == aiohttp.WSMsgType.CLOSE
                assert (message.data, message.extra) == (4410, "purged")


async def test_websockets_and_aiohttp_clients_in_one_room() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        path = f"/r/{room['room']}/ws"
        join = orjson.dumps({"type": "join", "secret": room["secret"]}).decode()
        async with websockets.connect(f"ws://127.0.0.1:{r.port}{path}") as a, \
                r.session.ws_connect(r.base + path) as b:
            await a.send(join)
            wa = orjson.loads(await a.recv())
            await b.send_str(join)
            wb = await b.receive_json()
            assert orjson.loads(await a.recv())["member"] == wb["you"]
            for i in range(50):
                await a.send(b"a%d" % i)
                await b.send_bytes(b"b%d" % i)
            for i in range(50):
                assert await b.receive_bytes() == struct.pack("!I", wa["you"]["id"]) + b"a%d" % i
                assert await a.recv() == struct.pack("!I", wb["you"]["id"]) + b"b%d" % i
            await b.close()
            assert b.close_code == 1000
            assert orjson.loads(await a.recv()) == {"type": "leave", "member": wb["you"]}


async def test_a_join_sent_in_the_same_write_as_the_upgrade_request_is_not_lost() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        first, _ = await r.member(room)
        client = RawClient()
        client.reader, client.writer = await asyncio.open_connection("127.0.0.1", r.port)
        client.writer.write(
            upgrade_request(r.port, room["room"])
            + join_frame(room["secret"])
            + client_frame(2, b"pipelined")
            + client_frame(9, b"too")
        )
        status, _, _ = await read_response(client.reader)
        assert status == 101
        welcome = await expect_type(client, "welcome")
        assert (await client.recv()).payload == b"too"
        assert (await expect_type(first, "join"))["member"] == welcome["you"]
        assert await recv_relayed(first) == (welcome["you"]["id"], b"pipelined")


async def test_an_upgrade_on_a_kept_alive_connection_after_a_plain_request() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        client = RawClient()
        client.reader, client.writer = await asyncio.open_connection("127.0.0.1", r.port)
        client.writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n\r\n".encode())
        status, _, body = await read_response(client.reader)
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        client.writer.write(upgrade_request(r.port, room["room"]))
        status, _, _ = await read_response(client.reader)
        assert status == 101
        client.send(join_frame(room["secret"]))
        await expect_type(client, "welcome")


BROWSER_STYLE = [
    ("firefox_connection", {"Connection": "keep-alive, Upgrade"}),
    ("capitalised_upgrade", {"Upgrade": "WebSocket"}),
    ("lower_case_connection", {"Connection": "upgrade"}),
    ("origin_matches", {"Origin": "http://127.0.0.1:PORT"}),
]


@pytest.mark.parametrize("fields", [f for _, f in BROWSER_STYLE], ids=[i for i, _ in BROWSER_STYLE])
async def test_upgrades_as_browsers_send_them_are_accepted(fields: dict[str, str]) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        fields = {k: v.replace("PORT", str(r.port)) for k, v in fields.items()}
        status, _, _, client = await handshake(r, room["room"], **fields)
        assert status == 101
        client.send(join_frame(room["secret"]))
        await expect_type(client, "welcome")


async def test_max_connections_holds_for_a_burst_of_simultaneous_upgrades() -> None:
    async with running_relay(max_connections=3) as r:
        room = await r.create_room()
        results = await asyncio.gather(*(handshake(r, room["room"]) for _ in range(12)))
        statuses = sorted(status for status, _, _, _ in results)
        assert statuses == [101] * 3 + [503] * 9
        assert len(r.gateway.connections) == 3


async def test_server_shutdown_closes_every_member_with_1001() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        joined = await members(r, room, 2)
        unjoined = await r.raw(room["room"])
        stopping = asyncio.ensure_future(r.relay.stop())
        for client in (*(c for c, _ in joined), unjoined):
            await expect_close_next(client, 1001)
        await stopping
        assert len(r.gateway.registry) == 0 and len(r.gateway.connections) == 0


async def test_rate_limit_counts_text_after_the_join_but_not_the_join_or_empty_binary() -> None:
    async with running_relay(rate_limit=0.01, rate_burst=3) as r:
        room = await r.create_room()
        (a, _), (b, _wb) = await members(r, room, 2)
        # Empty messages are ignored and cost nothing: b still has its 3 tokens after the join.
        b.send(client_frame(2, b"") * 5 + b"".join(client_frame(1, b'{"type":"purge"}') for _ in range(6)))
        for _ in range(3):
            assert await b.recv_json() == {"type": "error", "code": "not_creator"}
        assert await b.recv_json() == {"type": "error", "code": "rate_limited"}
        b.send(client_frame(9, b"mark"))
        assert (await b.recv()).payload == b"mark"
        await b.send_binary(b"dropped")
        await a.send_binary(b"a is not limited by b")
        assert (await recv_relayed(b))[1] == b"a is not limited by b"


REQUEST_LINES = [
    ("head", "HEAD /r/{room}/ws HTTP/1.1"),  # RFC 6455 §4.1: the method MUST be GET
    ("http_1_0", "GET /r/{room}/ws HTTP/1.0"),  # ... and the version at least HTTP/1.1
]


@pytest.mark.parametrize("line", [x for _, x in REQUEST_LINES], ids=[i for i, _ in REQUEST_LINES])
async def test_only_an_http_1_1_get_is_upgraded(line: str) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        request = upgrade_request(r.port, room["room"]).split(b"\r\n", 1)[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(line.format(room=room["room"]).encode() + b"\r\n" + request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert int(head.split()[1]) != 101, head
        assert len(r.gateway.connections) == 0


async def test_a_message_sent_just_before_hanging_up_arrives_before_the_leave() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(2, b"last words"))
        await a.close()
        assert await recv_relayed(b) == (wa["you"]["id"], b"last words")
        assert await b.recv_json() == {"type": "leave", "member": wa["you"]}


def self_signed_cert(directory: Path) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([address]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def test_over_tls_the_own_origin_is_https_and_hsts_is_sent(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(cafile=cert)
    async with running_relay(tls_cert=cert, tls_key=key) as r:
        base = f"https://127.0.0.1:{r.port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/", ssl=context) as response:
                assert response.status == 200
                assert response.headers["Strict-Transport-Security"].startswith("max-age=")
                assert_security_headers(response.headers, r.port)
            async with session.post(base + "/api/challenge", ssl=context) as response:
                token = (await response.json())["token"]
            async with session.post(
                base + "/api/rooms", json={"token": token, "nonce": "0"}, ssl=context
            ) as response:
                room = await response.json()
        url = f"wss://127.0.0.1:{r.port}/r/{room['room']}/ws"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, ssl=context, origin=f"http://127.0.0.1:{r.port}")
        assert refused.value.response.status_code == 403
        async with websockets.connect(url, ssl=context, origin=base) as client:
            await client.send(orjson.dumps({"type": "join", "secret": room["secret"]}).decode())
            assert orjson.loads(await client.recv())["type"] == "welcome"
