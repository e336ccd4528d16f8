"""Both engines' ``Connection`` held to the same output behaviour, each on a real transport
(a socket pair served by the running event loop): the same frames queued give the same bytes
on the wire, the same counters and the same close, for a peer that reads and one that does
not. The relay-level tests in test_fanout.py run on whichever engine the suite selected."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from engines import IMPLEMENTATIONS, NOT_BUILT, c_impl, py_impl

from pugfast.engine._frames import OP_BINARY, OP_TEXT, encode_frame


class Session:
    def __init__(self) -> None:
        self.closed = 0
        self.lost = 0

    def on_text(self, conn: Any, payload: bytes) -> None:
        raise AssertionError("no text is sent in these tests")

    def on_closed(self, conn: Any) -> None:
        self.closed += 1

    def on_lost(self, conn: Any) -> None:
        self.lost += 1


class Host(asyncio.Protocol):
    """Hands the transport's bytes and end to the engine connection, as the relay does."""

    conn: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.feed_eof()


async def queue_and_read(impl: Any, *, bound: int, frames: list[bytes], reads: bool) -> dict[str, Any]:
    """Queue ``frames`` in one go on a connection whose peer reads everything, or nothing
    (small socket buffers on both ends); report what the peer got and what the engine did."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    if not reads:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport, host = await loop.connect_accepted_socket(Host, ours)
    session = Session()
    flusher = impl.Flusher(loop.call_soon)
    conn = impl.Connection(
        transport, session, flusher, max_message_bytes=1 << 20, max_buffered_bytes=bound,
        rate=0.0, burst=0, clock=loop.time,
    )
    host.conn = conn
    for frame in frames:
        conn.send_frame(frame)
    theirs.setblocking(False)
    received = bytearray()
    expected = sum(map(len, frames))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if reads:
            try:
                while chunk := theirs.recv(1 << 20):
                    received += chunk
            except BlockingIOError:
                pass
        if (reads and len(received) >= expected) or (not reads and session.lost):
            break
    result = {
        "received": bytes(received),
        "close_code": conn.close_code,
        "closed": session.closed,
        "frames": flusher.frames,
        "writes": flusher.writes,
        "slow_consumers": flusher.slow_consumers,
    }
    transport.abort()
    theirs.close()
    await asyncio.sleep(0)
    return result


BURST = [encode_frame(OP_BINARY, bytes([i]) * 32768) for i in range(4)]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_a_burst_past_the_bound_reaches_a_peer_that_reads(impl: Any) -> None:
    result = await queue_and_read(impl, bound=65536, frames=BURST, reads=True)
    assert result == {
        "received": b"".join(BURST),
        "close_code": 0,
        "closed": 0,
        "frames": 4,
        # The bound was passed at the third frame: the first three left early, the fourth
        # at the end of the iteration.
        "writes": 2,
        "slow_consumers": 0,
    }


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_a_peer_that_does_not_read_is_cut_off(impl: Any) -> None:
    frames = BURST * 8
    result = await queue_and_read(impl, bound=65536, frames=frames, reads=False)
    assert result["close_code"] == 4503
    assert result["slow_consumers"] == 1
    assert result["closed"] == 1


async def test_both_engines_write_and_cut_alike() -> None:
    if c_impl is None:
        pytest.skip(NOT_BUILT)
    for frames, reads in ((BURST, True), (BURST * 8, False), (BURST[:1], True)):
        py = await queue_and_read(py_impl, bound=65536, frames=frames, reads=reads)
        c = await queue_and_read(c_impl, bound=65536, frames=frames, reads=reads)
        if not reads:
            # How much a full socket took before the cut is the kernel's to decide.
            py.pop("received"), c.pop("received")
        assert py == c


def drain(sock: socket.socket) -> bytes:
    received = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except BlockingIOError:
        pass
    return bytes(received)


async def deferred_notices(impl: Any, deferral: float | None) -> dict[str, Any]:
    """Two members of a group: a deferred frame to both, then a message to the first, then a
    second deferred frame; what each peer has seen at each point, and the flusher's counts."""
    loop = asyncio.get_running_loop()
    if deferral is None:
        flusher = impl.Flusher(loop.call_soon)
    else:
        flusher = impl.Flusher(loop.call_soon, loop.call_later, deferral)
    group = impl.Group()
    peers, transports = [], []
    for _ in range(2):
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        transport, host = await loop.connect_accepted_socket(Host, ours)
        host.conn = impl.Connection(
            transport, Session(), flusher, max_message_bytes=1 << 20, max_buffered_bytes=1 << 20,
            rate=0.0, burst=0, clock=loop.time,
        )
        group.add(host.conn)
        peers.append(theirs)
        transports.append(transport)
    first = group.members[0]
    seen: list[tuple[bytes, bytes]] = []

    async def look() -> None:
        await asyncio.sleep(0.05)
        seen.append((drain(peers[0]), drain(peers[1])))

    group.broadcast_deferred(NOTICE_1)
    await look()
    first.send_frame(MESSAGE)
    await look()
    group.broadcast_deferred(NOTICE_2)
    await look()
    await asyncio.sleep(deferral or 0)
    await look()
    for transport in transports:
        transport.abort()
    for peer in peers:
        peer.close()
    await asyncio.sleep(0)
    return {"seen": seen, "frames": flusher.frames, "writes": flusher.writes}


NOTICE_1 = encode_frame(OP_TEXT, b'{"type":"join","member":{"id":2,"name":"Amber Otter"}}')
NOTICE_2 = encode_frame(OP_TEXT, b'{"type":"join","member":{"id":3,"name":"Bold Fox"}}')
MESSAGE = encode_frame(OP_BINARY, b"\x00\x00\x00\x02ciphertext")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_a_deferred_frame_waits_for_the_next_write_or_the_deferral(impl: Any) -> None:
    result = await deferred_notices(impl, deferral=1.0)
    assert result["seen"] == [
        (b"", b""),  # the notice waits
        (NOTICE_1 + MESSAGE, b""),  # it leaves with the first member's next frame, before it
        (b"", b""),  # the second notice waits too
        (NOTICE_2, NOTICE_1 + NOTICE_2),  # the deferral passed: each member's in one write
    ]
    assert (result["frames"], result["writes"]) == (5, 3)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_without_a_timer_a_deferred_frame_is_an_ordinary_one(impl: Any) -> None:
    result = await deferred_notices(impl, deferral=None)
    assert result["seen"] == [(NOTICE_1, NOTICE_1), (MESSAGE, b""), (NOTICE_2, NOTICE_2), (b"", b"")]
    assert (result["frames"], result["writes"]) == (5, 5)


async def test_both_engines_defer_alike() -> None:
    if c_impl is None:
        pytest.skip(NOT_BUILT)
    for deferral in (1.0, None):
        assert await deferred_notices(py_impl, deferral) == await deferred_notices(c_impl, deferral)


class Recording:
    """A real transport, with the size of every buffer handed to it written down."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.sizes: list[int] = []

    def write(self, data: Any) -> None:
        self.sizes.append(len(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def large_flush(impl: Any) -> dict[str, Any]:
    """1.25 MiB queued in one iteration for a peer that reads it all."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, host = await loop.connect_accepted_socket(Host, ours)
    recording = Recording(transport)
    flusher = impl.Flusher(loop.call_soon)
    host.conn = impl.Connection(
        recording, Session(), flusher, max_message_bytes=1 << 20, max_buffered_bytes=8 << 20,
        rate=0.0, burst=0, clock=loop.time,
    )
    frames = [encode_frame(OP_BINARY, bytes([i]) * 65536) for i in range(20)]
    for frame in frames:
        host.conn.send_frame(frame)
    received = bytearray()
    for _ in range(400):
        await asyncio.sleep(0.005)
        received += drain(theirs)
        if len(received) >= sum(map(len, frames)):
            break
    transport.abort()
    theirs.close()
    await asyncio.sleep(0)
    assert bytes(received) == b"".join(frames)
    return {"sizes": recording.sizes, "writes": flusher.writes}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
async def test_a_flush_larger_than_a_piece_is_written_in_pieces(impl: Any) -> None:
    """An event loop keeps a buffer it was given until all of it is sent, so a member that
    stops reading would hold the sent part of one huge write besides its unsent bytes: a
    flush is offered in pieces of WRITE_CHUNK at most."""
    assert impl.WRITE_CHUNK == py_impl.WRITE_CHUNK == 262144
    result = await large_flush(impl)
    total = 20 * (65536 + 10)
    whole, rest = divmod(total, impl.WRITE_CHUNK)
    assert result["sizes"] == [impl.WRITE_CHUNK] * whole + [rest]
    assert result["writes"] == 1


async def test_both_engines_write_large_flushes_alike() -> None:
    if c_impl is None:
        pytest.skip(NOT_BUILT)
    assert await large_flush(py_impl) == await large_flush(c_impl)
