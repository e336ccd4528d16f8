"""RFC 6455 frame rules as a client sees them over a real socket (docs/protocol.md §6.9, §6.10): for each
broken rule, the close code that comes back, then the end of the TCP connection; and the
frames a well-behaved client may send (pings, fragments, closes) handled as the RFC says.

Each violation is tried on a fresh connection and on a joined member (whose room mate must
then hear that it left)."""

from __future__ import annotations

import struct

import orjson
import pytest
from engines import client_frame
from protocol_helpers import expect_close_next, expect_type, join_frame, members, recv_relayed
from support import running_relay

MAX = 1024  # max_message_bytes for these tests


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return client_frame(8, struct.pack("!H", code) + reason)


VIOLATIONS = [
    # masking, reserved bits, opcodes
    ("unmasked_text", client_frame(1, b"{}", mask=None), 1002),
    ("unmasked_binary", client_frame(2, b"x", mask=None), 1002),
    ("unmasked_ping", client_frame(9, b"", mask=None), 1002),
    ("unmasked_close", client_frame(8, b"\x03\xe8", mask=None), 1002),
    ("rsv1", client_frame(2, b"x", rsv=4), 1002),
    ("rsv2", client_frame(2, b"x", rsv=2), 1002),
    ("rsv3", client_frame(2, b"x", rsv=1), 1002),
    ("rsv_on_ping", client_frame(9, b"", rsv=4), 1002),
    *[(f"opcode_{op}", client_frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    # control frames
    ("fragmented_ping", client_frame(9, b"p", fin=False), 1002),
    ("fragmented_pong", client_frame(10, b"p", fin=False), 1002),
    ("fragmented_close", client_frame(8, b"\x03\xe8", fin=False), 1002),
    ("ping_126_bytes", client_frame(9, b"p" * 126), 1002),
    ("pong_126_bytes", client_frame(10, b"p" * 126), 1002),
    ("close_126_bytes", close_frame(1000, b"r" * 124), 1002),
    ("ping_header_only_126", client_frame(9, b"", length=126), 1002),
    # fragmentation
    ("continuation_without_start", client_frame(0, b"x"), 1002),
    ("unfinished_continuation_without_start", client_frame(0, b"x", fin=False), 1002),
    ("binary_inside_binary", client_frame(2, b"a", fin=False) + client_frame(2, b"b"), 1002),
    ("text_inside_binary", client_frame(2, b"a", fin=False) + client_frame(1, b"b"), 1002),
    ("binary_inside_text", client_frame(1, b"a", fin=False) + client_frame(2, b"b", fin=False), 1002),
    ("new_start_after_continuation",
     client_frame(2, b"a", fin=False) + client_frame(0, b"b", fin=False) + client_frame(2, b"c"), 1002),
    # lengths
    ("length_top_bit", client_frame(2, b"", length=1 << 63), 1002),
    ("length_all_ones", client_frame(2, b"", length=(1 << 64) - 1), 1002),
    ("length_top_bit_text", client_frame(1, b"", length=(1 << 63) + 5), 1002),
    ("oversized_binary", client_frame(2, b"x" * (MAX + 1)), 1009),
    ("oversized_text", client_frame(1, b"x" * (MAX + 1)), 1009),
    ("oversized_across_fragments",
     client_frame(2, b"x" * 600, fin=False) + client_frame(0, b"x" * 425), 1009),
    ("oversized_across_three_fragments",
     client_frame(1, b"x" * 400, fin=False) + client_frame(0, b"x" * 400, fin=False)
     + client_frame(0, b"x" * 225), 1009),
    ("oversized_header_only_16bit", client_frame(2, b"", length=MAX + 1)[:4], 1009),
    ("oversized_header_only_64bit", client_frame(2, b"", length=10**12)[:10], 1009),
    ("oversized_header_only_max_63bit", client_frame(2, b"", length=(1 << 63) - 1)[:10], 1009),
    ("oversized_continuation_header_only",
     client_frame(2, b"x" * 600, fin=False) + client_frame(0, b"", length=500)[:4], 1009),
    # where one header breaks several rules, the protocol error wins over the size
    ("unmasked_and_oversized", client_frame(2, b"", length=MAX + 1, mask=None)[:4], 1002),
    ("oversized_continuation_without_start", client_frame(0, b"", length=MAX + 1)[:4], 1002),
    ("oversized_ping_header_only", client_frame(9, b"", length=MAX + 1)[:4], 1002),
    # UTF-8
    ("invalid_utf8_ff", client_frame(1, b"\xff"), 1007),
    ("invalid_utf8_overlong", client_frame(1, b"\xc0\xaf"), 1007),
    ("invalid_utf8_surrogate", client_frame(1, b"\xed\xa0\x80"), 1007),
    ("invalid_utf8_beyond_unicode", client_frame(1, b"\xf4\x90\x80\x80"), 1007),
    ("invalid_utf8_truncated", client_frame(1, b'{"a":"\xe2\x82'), 1007),
    ("invalid_utf8_continuation_byte", client_frame(1, b"a\x80b"), 1007),
    ("invalid_utf8_split_across_fragments",
     client_frame(1, b"\xe2\x82", fin=False) + client_frame(0, b"\x28"), 1007),
    ("invalid_utf8_in_second_fragment",
     client_frame(1, b'{"type":', fin=False) + client_frame(0, b'"\xff"}'), 1007),
    ("invalid_utf8_in_unfinished_fragment",
     client_frame(1, b"ok", fin=False) + client_frame(0, b"\xff", fin=False), 1007),
    ("utf8_truncated_at_end_of_fragments",
     client_frame(1, b"ok", fin=False) + client_frame(0, b"\xe2\x82"), 1007),
    # close frames
    ("close_one_byte", client_frame(8, b"\x03"), 1002),
    *[(f"close_code_{code}", close_frame(code), 1002)
      for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)],
    ("close_invalid_utf8_reason", close_frame(1000, b"\xff\xfe"), 1007),
    ("close_truncated_utf8_reason", close_frame(1000, b"ok\xe2\x82"), 1007),
]


@pytest.mark.parametrize("joined", [False, True], ids=["fresh", "joined"])
@pytest.mark.parametrize(
    ("data", "code"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS]
)
async def test_violation_closes_with_its_code(data: bytes, code: int, joined: bool) -> None:
    async with running_relay(max_message_bytes=MAX) as r:
        room = await r.create_room()
        if joined:
            (client, welcome), (mate, _) = await members(r, room, 2)
        else:
            client = await r.raw(room["room"])
        client.send(data)
        await expect_close_next(client, code)  # nothing before it, and then the TCP end
        if joined:
            assert await mate.recv_json() == {"type": "leave", "member": welcome["you"]}
        else:
            _, welcome = await r.member(room)
            assert welcome["you"]["id"] == 1


VALID_CLOSES = [
    (close_frame(1000), 1000),
    (close_frame(1000, b"bye"), 1000),
    (close_frame(1001), 1001),
    (close_frame(1002), 1002),
    (close_frame(1003), 1003),
    (close_frame(1007), 1007),
    (close_frame(1008), 1008),
    (close_frame(1011), 1011),
    (close_frame(3000), 3000),
    (close_frame(3000, "r\u00e9sum\u00e9 \U0001f600".encode()), 3000),
    (close_frame(4000, b"r" * 123), 4000),
    (close_frame(4999), 4999),
    (client_frame(8, b""), 1000),
]


@pytest.mark.parametrize("joined", [False, True], ids=["fresh", "joined"])
@pytest.mark.parametrize(("data", "code"), VALID_CLOSES)
async def test_a_valid_close_is_echoed_then_the_connection_ends(data: bytes, code: int, joined: bool) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        if joined:
            (client, welcome), (mate, _) = await members(r, room, 2)
        else:
            client = await r.raw(room["room"])
        client.send(data)
        await expect_close_next(client, code)
        if joined:
            assert await mate.recv_json() == {"type": "leave", "member": welcome["you"]}


async def test_data_after_a_close_is_ignored() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(
            close_frame(1000)
            + client_frame(2, b"after close")
            + client_frame(9, b"no pong")
            + client_frame(1, b"{")
            + b"\x00junk"
        )
        await expect_close_next(a, 1000)
        # b hears a leave, and never the message sent after the close.
        assert await b.recv_json() == {"type": "leave", "member": wa["you"]}
        b.send(client_frame(9, b"next"))
        frame = await b.recv()
        assert (frame.opcode, frame.payload) == (10, b"next")


async def test_messages_before_a_violation_in_the_same_write_are_delivered() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(2, b"first") + client_frame(2, b"second") + client_frame(2, b"x", mask=None))
        await a.expect_closed_with(1002)
        assert await recv_relayed(b) == (wa["you"]["id"], b"first")
        assert await recv_relayed(b) == (wa["you"]["id"], b"second")
        assert await b.recv_json() == {"type": "leave", "member": wa["you"]}


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))], ids=["empty", "short", "125"])
async def test_ping_is_answered_with_a_pong_of_the_same_payload(payload: bytes) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        client = await r.raw(room["room"])
        client.send(client_frame(9, payload))  # before the join: still answered
        frame = await client.recv()
        assert (frame.opcode, frame.fin, frame.payload) == (10, True, payload)
        client.send(join_frame(room["secret"]))
        await expect_type(client, "welcome")
        client.send(client_frame(9, payload))
        frame = await client.recv()
        assert (frame.opcode, frame.payload) == (10, payload)


async def test_an_unsolicited_pong_is_ignored() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(10, b"unsolicited") + client_frame(10, b""))
        a.send(client_frame(9, b"after"))
        frame = await a.recv()
        assert (frame.opcode, frame.payload) == (10, b"after")
        await a.send_binary(b"still joined")
        assert await recv_relayed(b) == (wa["you"]["id"], b"still joined")


async def test_fragmented_binary_with_interleaved_pings_is_relayed_as_one_message() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(
            client_frame(2, b"frag", fin=False)
            + client_frame(9, b"p1")
            + client_frame(0, b"", fin=False)
            + client_frame(0, b"men", fin=False)
            + client_frame(9, b"p2")
            + client_frame(10, b"unsolicited")
            + client_frame(0, b"ted")
        )
        assert [(f.opcode, f.payload) for f in (await a.recv(), await a.recv())] == [
            (10, b"p1"), (10, b"p2")
        ]
        frame = await b.recv()
        assert (frame.opcode, frame.fin) == (2, True)
        assert frame.payload == struct.pack("!I", wa["you"]["id"]) + b"fragmented"


async def test_a_fragmented_join_with_a_multibyte_character_split_across_fragments() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        client = await r.raw(room["room"])
        text = orjson.dumps({"type": "join", "secret": room["secret"], "note": "\u20ac\U0001f600"})
        cut = text.index("\u20ac".encode()) + 1  # inside the euro sign
        cut2 = text.index("\U0001f600".encode()) + 2  # inside the emoji
        client.send(
            client_frame(1, text[:cut], fin=False)
            + client_frame(9, b"mid")
            + client_frame(0, text[cut:cut2], fin=False)
            + client_frame(0, text[cut2:])
        )
        frame = await client.recv()
        assert (frame.opcode, frame.payload) == (10, b"mid")
        assert (await client.recv_json())["type"] == "welcome"


async def test_frames_dribbled_one_byte_per_write_are_parsed_the_same() -> None:
    async with running_relay(max_message_bytes=MAX) as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        stream = (
            client_frame(2, b"x" * 200)
            + client_frame(9, b"ping")
            + client_frame(2, b"fr", fin=False)
            + client_frame(0, b"ag")
            + client_frame(2, b"z" * MAX)
        )
        for byte in stream:
            a.send(bytes([byte]))
            await a.writer.drain()
        assert await recv_relayed(b) == (wa["you"]["id"], b"x" * 200)
        assert await recv_relayed(b) == (wa["you"]["id"], b"frag")
        assert await recv_relayed(b) == (wa["you"]["id"], b"z" * MAX)
        frame = await a.recv()
        assert (frame.opcode, frame.payload) == (10, b"ping")
        # An oversized frame's header, dribbled too, is refused before its payload.
        for byte in client_frame(2, b"", length=MAX + 1)[:4]:
            a.send(bytes([byte]))
            await a.writer.drain()
        await a.expect_closed_with(1009)


async def test_a_message_of_exactly_the_limit_in_fragments_is_relayed() -> None:
    async with running_relay(max_message_bytes=MAX) as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(2, b"a" * 1000, fin=False) + client_frame(0, b"b" * (MAX - 1000)))
        assert await recv_relayed(b) == (wa["you"]["id"], b"a" * 1000 + b"b" * (MAX - 1000))


async def test_a_message_in_many_tiny_fragments_is_relayed_as_one() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        payload = bytes(range(200))
        a.send(
            client_frame(2, b"", fin=False)
            + b"".join(client_frame(0, payload[i : i + 1], fin=False) for i in range(200))
            + client_frame(0, b"")
        )
        assert await recv_relayed(b) == (wa["you"]["id"], payload)


async def test_an_empty_fragmented_binary_message_is_ignored() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        a.send(client_frame(2, b"", fin=False) + client_frame(0, b"", fin=False) + client_frame(0, b""))
        await a.send_binary(b"next")
        assert await recv_relayed(b) == (wa["you"]["id"], b"next")


@pytest.mark.parametrize("length_field", [16, 64])
async def test_a_length_in_a_longer_field_than_needed_is_accepted(length_field: int) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, _) = await members(r, room, 2)
        mask = b"\x01\x02\x03\x04"
        payload = b"abc"
        head = bytes([0x82, 0x80 | (126 if length_field == 16 else 127)])
        head += len(payload).to_bytes(length_field // 8, "big")
        a.send(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
        assert await recv_relayed(b) == (wa["you"]["id"], payload)
