"""How a WebSocket ends: the close handshake of RFC 6455 §7 as the relay carries it out."""

from __future__ import annotations

import asyncio

import pytest
from engines import client_frame
from support import RawClient, running_relay

from pugfast import gateway


async def test_a_close_of_the_relays_own_half_closes_and_waits_for_the_client() -> None:
    async with running_relay() as r:
        client = await r.raw("A" * 22)
        await client.send_json({"type": "join", "secret": "x"})
        frame = await client.recv()
        assert (frame.opcode, frame.close_code) == (8, 4404)
        # The relay sent FIN after its close frame ...
        assert await asyncio.wait_for(client.reader.read(), 5) == b""
        (conn,) = r.gateway.connections
        # ... but keeps reading, so the client's answer arrives without provoking a reset.
        client.send(client_frame(8, b"\x0f\xa4"))
        await client.writer.drain()
        await asyncio.sleep(0.05)
        assert conn in r.gateway.connections
        await client.close()
        for _ in range(100):
            if not r.gateway.connections:
                break
            await asyncio.sleep(0.01)
        assert not r.gateway.connections


async def test_a_client_that_never_hangs_up_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "CLOSE_LINGER", 0.2)
    async with running_relay() as r:
        client = await r.raw("A" * 22)
        await client.send_json({"type": "join", "secret": "x"})
        assert (await client.recv()).close_code == 4404
        assert len(r.gateway.connections) == 1
        await asyncio.sleep(0.5)
        assert not r.gateway.connections
        await client.close()


async def test_after_echoing_the_clients_close_the_relay_hangs_up_first() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        client, _ = await r.member(room)
        client.send(client_frame(8, b"\x03\xe8bye"))
        frame = await client.recv()
        assert (frame.opcode, frame.close_code) == (8, 1000)
        # No waiting for the client: the TCP connection ends on the relay's side.
        assert await asyncio.wait_for(client.reader.read(), 5) == b""
        for _ in range(100):
            if not r.gateway.connections:
                break
            await asyncio.sleep(0.01)
        assert not r.gateway.connections
        await client.close()


async def test_a_client_gone_before_the_hand_over_leaves_nothing_behind() -> None:
    async with running_relay() as r:
        for _ in range(20):
            client = RawClient()
            status, _ = await client.handshake(r.port, f"/r/{'A' * 22}/ws")
            assert status == 101
            client.writer.transport.abort()
        # Clients that vanish around the upgrade do not stay counted as connections.
        for _ in range(100):
            if not r.gateway.connections:
                break
            await asyncio.sleep(0.01)
        assert not r.gateway.connections
