"""The engine's fan-out, with real clients over loopback: order, no echo, coalescing, and a
member that never reads being cut off without slowing anyone else."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
from engines import client_frame
from protocol_helpers import wait_until
from support import RawClient, running_relay


async def read_binary(client: RawClient, count: int) -> list[tuple[int, bytes]]:
    """Read ``count`` relayed binary messages as (sender id, ciphertext)."""
    out = []
    while len(out) < count:
        frame = await client.recv(timeout=10)
        assert frame.opcode == 2, frame
        out.append((struct.unpack("!I", frame.payload[:4])[0], frame.payload[4:]))
    return out


async def test_per_sender_order_over_thousands_of_messages_and_no_echo() -> None:
    async with running_relay(rate_limit=0) as r:
        room = await r.create_room(capacity=4)
        (a, wa), (b, wb), (c, _) = [await r.member(room) for _ in range(3)]
        for client, later_joins in ((a, 2), (b, 1)):
            for _ in range(later_joins):
                assert (await client.recv_json())["type"] == "join"
        count = 3000
        # a and b send interleaved in big writes; c only listens.
        a.send(b"".join(client_frame(2, b"a%05d" % i) for i in range(count)))
        b.send(b"".join(client_frame(2, b"b%05d" % i) for i in range(count)))
        got_c = await read_binary(c, 2 * count)
        got_a = await read_binary(a, count)
        got_b = await read_binary(b, count)
        a_id, b_id = wa["you"]["id"], wb["you"]["id"]
        assert [p for s, p in got_c if s == a_id] == [b"a%05d" % i for i in range(count)]
        assert [p for s, p in got_c if s == b_id] == [b"b%05d" % i for i in range(count)]
        # No echo: each sender received only the other's messages.
        assert {s for s, _ in got_a} == {b_id}
        assert {s for s, _ in got_b} == {a_id}
        assert [p for _, p in got_a] == [b"b%05d" % i for i in range(count)]


async def test_a_burst_leaves_in_fewer_writes_than_frames() -> None:
    async with running_relay(rate_limit=0) as r:
        room = await r.create_room(capacity=10)
        members = [await r.member(room) for _ in range(6)]
        await asyncio.sleep(0.05)
        flusher = r.gateway.flusher
        frames_before, writes_before = flusher.frames, flusher.writes
        burst = b"".join(client_frame(2, b"x" * 100) for _ in range(50))
        for client, _ in members:
            client.send(burst)
        for client, _ in members:
            await read_binary_skipping_text(client, 50 * 5)
        frames = flusher.frames - frames_before
        writes = flusher.writes - writes_before
        assert frames == 50 * 5 * 6
        # Each recipient's frames of one loop iteration leave in one write.
        assert writes * 5 <= frames, (writes, frames)


async def read_binary_skipping_text(client: RawClient, count: int) -> list[bytes]:
    """Read until ``count`` binary messages have arrived; return the text messages among them."""
    seen, texts = 0, []
    while seen < count:
        frame = await client.recv(timeout=10)
        if frame.opcode == 2:
            seen += 1
        else:
            texts.append(frame.payload)
    return texts


def stall(r: Any, client: RawClient, member_id: int, size: int) -> Any:
    """Nothing will read from ``client``: its stream stops taking bytes once its buffer is
    full, then the kernel's buffers fill, then the relay's own pending output grows. Small
    socket buffers on both ends (which also turn off autotuning) keep that quick. Returns the
    relay's connection for the member."""
    client.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    conn = next(c for c in r.gateway.connections if c.member_id == member_id)
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    return conn


async def test_a_member_that_never_reads_is_cut_off_and_the_others_get_everything() -> None:
    bound = 256 * 1024
    async with running_relay(rate_limit=0, max_buffered_bytes=bound) as r:
        room = await r.create_room(capacity=4)
        sender, _ = await r.member(room)
        reader, _ = await r.member(room)
        stalled, welcome = await r.member(room)
        names = {m["id"]: m["name"] for m in welcome["members"]}
        stall(r, stalled, 3, 8192)
        assert (await reader.recv_json())["type"] == "join"
        payload = b"p" * 8192
        # 3.2 MiB in lockstep steps of 128 KiB that the reader keeps up with, so only the
        # stalled member falls behind: far past the bound plus what the kernel buffers.
        texts = []
        for _ in range(25):
            for _ in range(16):
                sender.send(client_frame(2, payload))
            await sender.writer.drain()
            texts += await asyncio.wait_for(read_binary_skipping_text(reader, 16), 10)
        # The stalled member was closed as a slow consumer, and it is gone from the room.
        gateway = r.gateway
        for _ in range(100):
            if len(gateway.connections) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(gateway.connections) == 2
        assert gateway.flusher.slow_consumers == 1
        live = next(iter(gateway.registry.rooms.values()))
        assert len(live.members) == 2
        # The reader was told the stalled member left.
        assert texts == [b'{"type":"leave","member":{"id":3,"name":"%s"}}' % names[3].encode()]

async def test_a_prompt_reader_is_not_cut_off_for_the_size_of_one_burst() -> None:
    # Four 32 KiB messages relayed from one read queue 128 KiB for each recipient within one
    # loop iteration, twice the bound; only the member whose socket stops taking bytes is a
    # slow consumer (docs/protocol.md §6.6).
    bound = 64 * 1024
    async with running_relay(rate_limit=0, max_buffered_bytes=bound) as r:
        room = await r.create_room(capacity=3)
        stalled, _ = await r.member(room)
        sender, _ = await r.member(room)
        reader, _ = await r.member(room)
        stalled_conn = stall(r, stalled, 1, 4096)
        assert (await sender.recv_json())["type"] == "join"
        payloads = [bytes([i]) * (32 * 1024) for i in range(4)]
        sender.send(b"".join(client_frame(2, p) for p in payloads))
        await sender.writer.drain()
        got = await asyncio.wait_for(read_binary(reader, 4), 10)
        assert got == [(2, p) for p in payloads]
        # The member that never read is gone: closed with 4503, or its connection dropped.
        await wait_until(lambda: len(r.gateway.connections) == 2, timeout=5)
        assert r.gateway.flusher.slow_consumers == 1
        assert stalled_conn.close_code == 4503
        assert len(r.gateway.registry.get(room["room"]).members) == 2


async def test_twenty_simultaneous_64_kib_messages_reach_every_reader() -> None:
    # Twenty members sending 64 KiB each at once queue 1.25 MiB for every recipient within
    # one iteration, past the default 1 MiB bound; readers that keep up get all of it.
    async with running_relay(rate_limit=0) as r:
        room = await r.create_room(capacity=21)
        members = [(await r.member(room))[0] for _ in range(21)]
        for i, client in enumerate(members):
            for _ in range(20 - i):  # the joins after this member's own
                assert (await client.recv_json())["type"] == "join"
        payloads = [bytes([i]) * 65536 for i in range(20)]
        frames = [client_frame(2, p) for p in payloads]
        for client, frame in zip(members[:20], frames, strict=True):
            client.send(frame)
        got = await asyncio.gather(
            *(asyncio.wait_for(read_binary(c, 19 if i < 20 else 20), 20) for i, c in enumerate(members))
        )
        for i, received in enumerate(got):
            expected = {(j + 1, payloads[j]) for j in range(20) if j != i}
            assert set(received) == expected, i
        assert r.gateway.flusher.slow_consumers == 0
        assert len(r.gateway.connections) == 21


@pytest.mark.parametrize("size", [1, 121, 122, 65531, 65532, 70000])
async def test_relay_frame_lengths_at_the_header_boundaries(size: int) -> None:
    async with running_relay(rate_limit=0, max_message_bytes=70000) as r:
        room = await r.create_room()
        a, _ = await r.member(room)
        b, _ = await r.member(room)
        await a.recv_json()  # b's join
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        await a.send_binary(payload)
        sender, got = (await read_binary(b, 1))[0]
        assert sender == 1
        assert got == payload
