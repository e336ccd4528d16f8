"""The front door (pugfast/frontdoor.py): a room upgrade is answered without aiohttp and the
engine's connection becomes the transport's protocol; every other request reaches aiohttp
with every byte, as if aiohttp had accepted the connection."""

from __future__ import annotations

import asyncio
import gc

import orjson
from engines import client_frame
from protocol_helpers import join_frame, wait_until
from support import RawClient, running_relay
from test_websocket import read_response, upgrade_request

from pugfast.frontdoor import MAX_HEAD, FrontDoor


async def test_the_engine_connection_becomes_the_transports_protocol() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        client, _ = await r.member(room)
        (conn,) = r.gateway.connections
        assert conn.transport.get_protocol() is conn
        # Nothing of aiohttp's request machinery is kept for it: no handler, no request (the
        # handlers aiohttp has serve the test's own keep-alive HTTP connection).
        assert all(h.transport is not conn.transport for h in r.relay._runner.server.connections)
        await client.close()


async def test_bytes_behind_the_head_reach_the_engine() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        # The head, the join and a ping in one segment.
        writer.write(upgrade_request(r.port, room["room"]) + join_frame(room["secret"])
                     + client_frame(9, b"hi"))
        status, _, _ = await read_response(reader)
        assert status == 101
        client = RawClient()
        client.reader, client.writer = reader, writer
        assert (await client.recv_json())["type"] == "welcome"
        pong = await client.recv()
        assert (pong.opcode, pong.payload) == (10, b"hi")
        await client.close()


async def test_a_head_in_pieces_is_answered_once_whole() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        request = upgrade_request(r.port, room["room"])
        for piece in (request[:3], request[3:9], request[9:-3], request[-3:-1]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        assert not r.gateway.connections
        writer.write(request[-1:])
        status, _, _ = await read_response(reader)
        assert status == 101
        writer.close()


async def test_an_upgrade_after_a_request_on_the_same_connection_still_works() -> None:
    # The front door reads only a connection's first request; aiohttp answers the rest, and
    # upgrades among them, through the same rules.
    async with running_relay() as r:
        room = await r.create_room()
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n\r\n".encode())
        status, _, body = await read_response(reader)
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        writer.write(upgrade_request(r.port, room["room"], Origin="http://127.0.0.1:1"))
        status, _, body = await read_response(reader)
        assert (status, orjson.loads(body)["error"]) == (403, "origin_not_allowed")
        writer.write(upgrade_request(r.port, room["room"]))
        status, _, _ = await read_response(reader)
        assert status == 101
        client = RawClient()
        client.reader, client.writer = reader, writer
        client.send(join_frame(room["secret"]))
        assert (await client.recv_json())["type"] == "welcome"
        other, _ = await r.member(room)
        assert (await client.recv_json())["type"] == "join"
        await other.send_binary(b"x")
        frame = await client.recv()
        assert (frame.opcode, frame.payload) == (2, b"\x00\x00\x00\x02x")
        await client.close()
        await other.close()
        await wait_until(lambda: not r.gateway.connections)


async def test_a_room_page_request_goes_to_aiohttp() -> None:
    async with running_relay() as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(f"GET /r/{'A' * 22} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n\r\n".encode())
        status, headers, body = await read_response(reader)
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert b"<html" in body.lower()
        writer.close()


async def test_an_overlong_head_is_aiohttps_to_refuse() -> None:
    async with running_relay() as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(f"GET /r/{'A' * 22}/ws HTTP/1.1\r\nX-Long: {'a' * (2 * MAX_HEAD)}\r\n".encode())
        status, _, _ = await read_response(reader)
        assert status in (400, 431)
        assert not r.gateway.connections
        writer.close()


async def test_a_client_that_leaves_mid_head_leaves_nothing_behind() -> None:
    async with running_relay() as r:
        for _ in range(20):
            _, writer = await asyncio.open_connection("127.0.0.1", r.port)
            writer.write(f"GET /r/{'A' * 22}/ws HTTP/1.1\r\nHost: x".encode())
            await writer.drain()
            writer.close()
        await asyncio.sleep(0.1)
        gc.collect()
        assert not [o for o in gc.get_objects() if isinstance(o, FrontDoor)]
        assert not r.gateway.connections


async def test_a_slow_head_holds_no_aiohttp_handler_until_it_is_whole() -> None:
    async with running_relay() as r:
        handlers = r.relay._runner.server.connections
        before = len(handlers)
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.1)
        assert len(handlers) == before
        assert len(r.gateway.entrance.pending) == 1
        writer.write(b"\r\n")
        status, _, body = await read_response(reader)
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        writer.close()


async def test_bytes_no_head_has_go_to_aiohttp_at_once() -> None:
    async with running_relay() as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS hello
        status, _, _ = await asyncio.wait_for(read_response(reader), 2)
        assert status == 400
        writer.close()
