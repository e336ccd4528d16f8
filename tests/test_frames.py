"""The frame codec, table-driven, on both implementations (docs/protocol.md §6.9, RFC 6455).

Every case is parsed from one feed() and again fed one byte at a time; both must give exactly
the listed events, then the listed (close code, reason) or no error.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from engines import IMPLEMENTATIONS, mask_payload
from engines import client_frame as frame

from pugfast.errors import ProtocolError

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
MASK = bytes.fromhex("37fa213d")
LIMIT = 1 << 20
# ``frame`` (engines.client_frame) builds the cases' frames as a client sends them: masked,
# unless a case says mask=None.


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def blob(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


class Case(NamedTuple):
    id: str
    data: bytes
    events: list[tuple[Any, ...]]
    error: tuple[int, str] | None = None
    max_message_bytes: int = LIMIT
    require_mask: bool = True


def error(code: int, reason: str) -> tuple[int, str]:
    return code, reason


BAD_UTF8 = {
    "invalid-byte": b"\xff",
    "lone-continuation": b"ok\x80",
    "overlong-2": b"\xc0\xaf",
    "overlong-3": b"\xe0\x80\xaf",
    "overlong-4": b"\xf0\x80\x80\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5-lead": b"\xf5\x80\x80\x80",
    "truncated": b"ok\xe2\x82",
}
REFUSED_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
ACCEPTED_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4410, 4999]

CASES = [
    # Valid input.
    Case("binary", frame(BINARY, b"hello"), [(BINARY, b"hello")]),
    Case("binary-empty", frame(BINARY), [(BINARY, b"")]),
    Case("text", frame(TEXT, "héllo €😀".encode()), [(TEXT, "héllo €😀".encode())]),
    Case("text-empty", frame(TEXT), [(TEXT, b"")]),
    *(
        Case(f"binary-{n}", frame(BINARY, blob(n)), [(BINARY, blob(n))])
        for n in (125, 126, 65535, 65536)
    ),
    Case("rfc6455-masked-hello", bytes.fromhex("818537fa213d7f9f4d5158"), [(TEXT, b"Hello")]),
    Case("ping", frame(PING, b"are you there"), [(PING, b"are you there")]),
    Case("ping-125", frame(PING, blob(125)), [(PING, blob(125))]),
    Case("pong-unsolicited", frame(PONG, b"x"), [(PONG, b"x")]),
    Case(
        "fragmented-text-with-control-frames",
        frame(TEXT, b"Hel", fin=False)
        + frame(PING, b"1")
        + frame(CONT, b"lo, ", fin=False)
        + frame(PONG, b"2")
        + frame(CONT, b"world"),
        [(PING, b"1"), (PONG, b"2"), (TEXT, b"Hello, world")],
    ),
    Case(
        "fragmented-binary-with-ping",
        frame(BINARY, blob(200), fin=False) + frame(PING) + frame(CONT, blob(300)),
        [(PING, b""), (BINARY, blob(200) + blob(300))],
    ),
    Case("fragmented-empty", frame(BINARY, fin=False) + frame(CONT), [(BINARY, b"")]),
    Case(
        "utf8-3-bytes-split-across-fragments",
        frame(TEXT, b"\xe2", fin=False) + frame(CONT, b"\x82", fin=False) + frame(CONT, b"\xac"),
        [(TEXT, "€".encode())],
    ),
    Case(
        "utf8-4-bytes-split-around-a-ping",
        frame(TEXT, b"a\xf0\x9f", fin=False) + frame(PING) + frame(CONT, b"\x98\x80b"),
        [(PING, b""), (TEXT, "a😀b".encode())],
    ),
    Case(
        "messages-after-a-fragmented-one",
        frame(TEXT, b"a", fin=False) + frame(CONT, b"b") + frame(BINARY, b"c") + frame(TEXT),
        [(TEXT, b"ab"), (BINARY, b"c"), (TEXT, b"")],
    ),
    Case("close-empty", frame(CLOSE), [(CLOSE, None, "")]),
    *(
        Case(f"close-{code}", frame(CLOSE, close_payload(code)), [(CLOSE, code, "")])
        for code in ACCEPTED_CLOSE_CODES
    ),
    Case(
        "close-with-reason",
        frame(CLOSE, close_payload(4410, "expired ✓")),
        [(CLOSE, 4410, "expired ✓")],
    ),
    Case(
        "data-after-close-is-ignored",
        frame(CLOSE, close_payload(1000)) + frame(BINARY, b"late") + b"\xff\xff",
        [(CLOSE, 1000, "")],
    ),
    Case(
        "size-at-the-limit", frame(BINARY, blob(100)), [(BINARY, blob(100))], max_message_bytes=100
    ),
    Case(
        "size-at-the-limit-fragmented",
        frame(BINARY, blob(60), fin=False) + frame(PING) + frame(CONT, blob(40)),
        [(PING, b""), (BINARY, blob(60) + blob(40))],
        max_message_bytes=100,
    ),
    Case(
        "control-frames-do-not-count-against-the-limit",
        frame(PING, blob(125)) + frame(BINARY),
        [(PING, blob(125)), (BINARY, b"")],
        max_message_bytes=0,
    ),
    Case(
        "client-side-unmasked",
        frame(TEXT, b"hi", mask=None) + frame(CLOSE, close_payload(1001), mask=None),
        [(TEXT, b"hi"), (CLOSE, 1001, "")],
        require_mask=False,
    ),
    Case(
        "client-side-rfc6455-fragmented",
        bytes.fromhex("010348656c80026c6f"),
        [(TEXT, b"Hello")],
        require_mask=False,
    ),
    # Frame header rules, in the order they are checked.
    *(
        Case(f"rsv-{rsv}", frame(BINARY, b"x", rsv=rsv), [], error(1002, "reserved bits set"))
        for rsv in (1, 2, 4, 7)
    ),
    Case("rsv-on-the-first-byte-alone", b"\xc2", [], error(1002, "reserved bits set")),
    *(
        Case(f"opcode-{opcode}", frame(opcode), [], error(1002, "unknown opcode"))
        for opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
    ),
    Case("rsv-before-opcode", frame(3, rsv=4), [], error(1002, "reserved bits set")),
    Case("opcode-before-fin", frame(11, fin=False), [], error(1002, "unknown opcode")),
    *(
        Case(
            f"fragmented-{name}", frame(op, fin=False), [], error(1002, "fragmented control frame")
        )
        for name, op in (("close", CLOSE), ("ping", PING), ("pong", PONG))
    ),
    Case(
        "fragmented-control-before-length",
        frame(PING, blob(126), fin=False),
        [],
        error(1002, "fragmented control frame"),
    ),
    Case("ping-126", frame(PING, blob(126)), [], error(1002, "control frame too long")),
    Case(
        "close-126-header-only",
        frame(CLOSE, length=126)[:2],
        [],
        error(1002, "control frame too long"),
    ),
    Case(
        "control-length-before-mask",
        frame(PONG, blob(126), mask=None),
        [],
        error(1002, "control frame too long"),
    ),
    Case("unmasked", frame(BINARY, b"x", mask=None), [], error(1002, "unmasked frame")),
    Case(
        "masked-on-the-client-side",
        frame(BINARY, b"x"),
        [],
        error(1002, "masked frame"),
        require_mask=False,
    ),
    Case(
        "mask-before-continuation",
        frame(CONT, b"x", mask=None),
        [],
        error(1002, "unmasked frame"),
    ),
    Case(
        "continuation-without-start",
        frame(CONT, b"x"),
        [],
        error(1002, "continuation without a start"),
    ),
    Case(
        "continuation-after-a-whole-message",
        frame(TEXT, b"a") + frame(CONT, b"b"),
        [(TEXT, b"a")],
        error(1002, "continuation without a start"),
    ),
    Case(
        "text-inside-fragmented-binary",
        frame(BINARY, b"a", fin=False) + frame(PING) + frame(TEXT, b"b"),
        [(PING, b"")],
        error(1002, "data frame inside a fragmented message"),
    ),
    Case(
        "binary-inside-fragmented-text",
        frame(TEXT, b"a", fin=False) + frame(BINARY, b"b", fin=False),
        [],
        error(1002, "data frame inside a fragmented message"),
    ),
    Case(
        "length-top-bit",
        frame(BINARY, length=1 << 63)[:10],
        [],
        error(1002, "length with the top bit set"),
    ),
    Case(
        "length-top-bit-before-size",
        frame(BINARY, length=(1 << 64) - 1)[:10],
        [],
        error(1002, "length with the top bit set"),
        max_message_bytes=10,
    ),
    Case(
        "over-the-limit-by-one-header-only",
        frame(BINARY, length=101)[:6],
        [],
        error(1009, "message too big"),
        max_message_bytes=100,
    ),
    Case(
        "over-the-limit-before-the-mask-key",
        frame(BINARY, length=101)[:2],
        [],
        error(1009, "message too big"),
        max_message_bytes=100,
    ),
    Case(
        "over-the-limit-16-bit-length",
        frame(TEXT, length=65535)[:4],
        [],
        error(1009, "message too big"),
        max_message_bytes=65534,
    ),
    Case(
        "over-the-limit-64-bit-length",
        frame(BINARY, length=1 << 40)[:10],
        [],
        error(1009, "message too big"),
    ),
    Case(
        "over-the-limit-across-fragments",
        frame(BINARY, blob(60), fin=False) + frame(PING) + frame(CONT, length=41)[:6],
        [(PING, b"")],
        error(1009, "message too big"),
        max_message_bytes=100,
    ),
    Case(
        "over-a-zero-limit",
        frame(BINARY, b"x"),
        [],
        error(1009, "message too big"),
        max_message_bytes=0,
    ),
    Case(
        "events-before-an-error",
        frame(BINARY, b"ok") + frame(BINARY, rsv=4),
        [(BINARY, b"ok")],
        error(1002, "reserved bits set"),
    ),
    # UTF-8 in text messages.
    *(
        Case(f"text-{name}", frame(TEXT, bad), [], error(1007, "invalid UTF-8"))
        for name, bad in BAD_UTF8.items()
    ),
    *(
        Case(
            f"text-fragmented-{name}",
            frame(TEXT, b"ok", fin=False) + frame(CONT, bad),
            [],
            error(1007, "invalid UTF-8"),
        )
        for name, bad in BAD_UTF8.items()
    ),
    Case(
        "text-invalid-first-fragment-fails-before-the-next-frame",
        frame(TEXT, b"\xff", fin=False) + frame(PING),
        [],
        error(1007, "invalid UTF-8"),
    ),
    Case(
        "text-surrogate-prefix-ending-a-fragment",
        frame(TEXT, b"a\xed\xa0", fin=False) + frame(PING) + frame(CONT, b"\x80"),
        [],
        error(1007, "invalid UTF-8"),
    ),
    Case(
        "text-invalid-across-fragments",
        frame(TEXT, b"\xe2", fin=False) + frame(PING) + frame(CONT, b"\x28\xa1"),
        [(PING, b"")],
        error(1007, "invalid UTF-8"),
    ),
    Case(
        "text-final-fragment-ends-mid-character",
        frame(TEXT, b"\xe2\x82", fin=False) + frame(PING) + frame(CONT),
        [(PING, b"")],
        error(1007, "invalid UTF-8"),
    ),
    Case(
        "binary-is-not-utf8-checked",
        frame(BINARY, b"\xff\xed\xa0\x80"),
        [(BINARY, b"\xff\xed\xa0\x80")],
    ),
    # Close frames.
    Case("close-1-byte", frame(CLOSE, b"\x03"), [], error(1002, "close payload of 1 byte")),
    *(
        Case(
            f"close-{code}-refused",
            frame(CLOSE, close_payload(code)),
            [],
            error(1002, "invalid close code"),
        )
        for code in REFUSED_CLOSE_CODES
    ),
    Case(
        "close-reason-invalid-utf8",
        frame(CLOSE, b"\x03\xe8ok\xff"),
        [],
        error(1007, "invalid UTF-8 in close reason"),
    ),
    Case(
        "close-code-before-reason",
        frame(CLOSE, b"\x03\xed\xff"),
        [],
        error(1002, "invalid close code"),
    ),
]


def parse(impl: Any, chunks: list[bytes], case: Case) -> tuple[list[Any], Any]:
    """Feeds the chunks, draining events after each; returns (events, (code, reason) or None)."""
    parser = impl.FrameParser(case.max_message_bytes, require_mask=case.require_mask)
    events: list[Any] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (event := parser.next_event()) is not None:
                events.append(event)
    except ProtocolError as exc:
        assert type(exc) is ProtocolError
        assert parser.finished
        return events, (exc.code, exc.reason)
    return events, None


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_case(impl: Any, case: Case) -> None:
    assert parse(impl, [case.data], case) == (case.events, case.error)
    assert parse(impl, byte_by_byte(case.data), case) == (case.events, case.error)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "header",
    [frame(BINARY, length=101)[:6], frame(BINARY, length=1 << 16)[:14]],
    ids=["7-bit", "64-bit"],
)
def test_oversized_message_fails_from_its_header_alone(impl: Any, header: bytes) -> None:
    parser = impl.FrameParser(100)
    parser.feed(header)
    with pytest.raises(ProtocolError) as caught:
        parser.next_event()
    assert caught.value.code == 1009


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_finished_parser_ignores_everything(impl: Any) -> None:
    parser = impl.FrameParser(LIMIT)
    parser.feed(frame(BINARY, b"held", fin=False) + frame(BINARY, rsv=1))
    with pytest.raises(ProtocolError):
        parser.next_event()
    assert parser.finished
    assert parser.buffered == 0
    parser.feed(frame(BINARY, b"late"))
    assert parser.next_event() is None
    assert parser.buffered == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_close_finishes_the_parser(impl: Any) -> None:
    parser = impl.FrameParser(LIMIT)
    parser.feed(frame(PING) + frame(CLOSE, close_payload(1000, "bye")) + frame(PING))
    assert parser.next_event() == (PING, b"")
    assert not parser.finished
    assert parser.next_event() == (CLOSE, 1000, "bye")
    assert parser.finished
    assert parser.buffered == 0
    parser.feed(frame(PING))
    assert parser.next_event() is None


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_buffered_counts_partial_frames_and_fragments(impl: Any) -> None:
    parser = impl.FrameParser(LIMIT)
    first = frame(TEXT, b"abc", fin=False)
    last = frame(CONT, b"de")
    parser.feed(first + last[:3])
    assert parser.buffered == len(first) + 3
    assert parser.next_event() is None
    assert parser.buffered == 3 + 3  # the first fragment's payload, the last frame's start
    parser.feed(last[3:])
    assert parser.next_event() == (TEXT, b"abcde")
    assert parser.buffered == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_big_message_does_not_disturb_the_next(impl: Any) -> None:
    parser = impl.FrameParser(LIMIT)
    parser.feed(frame(BINARY, blob(70000), fin=False) + frame(CONT, blob(70000)))
    assert parser.next_event() == (BINARY, blob(70000) * 2)
    parser.feed(frame(BINARY, b"small")[:4])
    assert parser.next_event() is None
    parser.feed(frame(BINARY, b"small")[4:])
    assert parser.next_event() == (BINARY, b"small")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_takes_any_bytes_like(impl: Any, kind: type) -> None:
    parser = impl.FrameParser(LIMIT)
    parser.feed(kind(frame(BINARY, b"x")))
    assert parser.next_event() == (BINARY, b"x")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_feed_refuses_text(impl: Any) -> None:
    with pytest.raises(TypeError):
        impl.FrameParser(LIMIT).feed("text")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_negative_limit_is_refused(impl: Any) -> None:
    with pytest.raises(ValueError):
        impl.FrameParser(-1)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_opcode_names(impl: Any) -> None:
    assert (impl.OP_CONT, impl.OP_TEXT, impl.OP_BINARY) == (CONT, TEXT, BINARY)
    assert (impl.OP_CLOSE, impl.OP_PING, impl.OP_PONG) == (CLOSE, PING, PONG)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 125, 126, 65535, 65536])
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_round_trip_masked(impl: Any, n: int, opcode: int) -> None:
    payload = b"a" * n
    parser = impl.FrameParser(LIMIT)
    parser.feed(impl.encode_frame(opcode, payload, mask=b"\x01\x80\xff\x7e"))
    assert parser.next_event() == (opcode, payload)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("n", [0, 125, 126, 65536])
def test_round_trip_unmasked_on_the_client_side(impl: Any, n: int) -> None:
    parser = impl.FrameParser(LIMIT, require_mask=False)
    parser.feed(impl.encode_frame(BINARY, blob(n)) + impl.encode_frame(PING, b"p"))
    assert parser.next_event() == (BINARY, blob(n))
    assert parser.next_event() == (PING, b"p")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_encode_frame_matches_rfc6455_examples(impl: Any) -> None:
    assert impl.encode_frame(TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert impl.encode_frame(TEXT, b"Hello", mask=MASK) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert impl.encode_frame(PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert impl.encode_frame(BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert impl.encode_frame(BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("n", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_encode_frame_header_sizes(impl: Any, n: int, header: int) -> None:
    assert len(impl.encode_frame(BINARY, bytes(n))) == header + n
    assert len(impl.encode_frame(BINARY, bytes(n), mask=MASK)) == header + 4 + n


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("opcode", "payload", "mask"),
    [(3, b"", None), (PING, bytes(126), None), (BINARY, b"", b"abc"), (TEXT, b"", b"abcde")],
    ids=["unknown-opcode", "control-too-long", "short-mask", "long-mask"],
)
def test_encode_frame_refuses(impl: Any, opcode: int, payload: bytes, mask: bytes | None) -> None:
    with pytest.raises(ValueError):
        impl.encode_frame(opcode, payload, mask=mask)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("reason", "sent"),
    [
        ("", ""),
        ("expired", "expired"),
        ("a" * 123, "a" * 123),
        ("a" * 124, "a" * 123),
        ("a" * 121 + "€", "a" * 121),  # the euro sign's 3 bytes would end at byte 124
        ("a" * 120 + "€", "a" * 120 + "€"),
        ("😀" * 40, "😀" * 30),
    ],
    ids=["empty", "short", "123-bytes", "124-bytes", "cut-mid-character", "fits", "4-byte"],
)
def test_encode_close(impl: Any, reason: str, sent: str) -> None:
    data = impl.encode_close(4410, reason)
    assert data == impl.encode_frame(CLOSE, close_payload(4410, sent))
    parser = impl.FrameParser(LIMIT, require_mask=False)
    parser.feed(data)
    assert parser.next_event() == (CLOSE, 4410, sent)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("code", REFUSED_CLOSE_CODES)
def test_encode_close_refuses_codes_not_allowed_on_the_wire(impl: Any, code: int) -> None:
    with pytest.raises(ValueError):
        impl.encode_close(code)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_apply_mask(impl: Any) -> None:
    assert impl.apply_mask(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")
    for n in range(20):
        data = blob(n)
        assert impl.apply_mask(data, MASK) == mask_payload(data, MASK)
        assert impl.apply_mask(impl.apply_mask(data, MASK), MASK) == data
    kept = bytearray(b"unchanged")
    impl.apply_mask(kept, MASK)
    assert kept == b"unchanged"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_apply_mask_refuses_a_mask_not_4_bytes_long(impl: Any) -> None:
    with pytest.raises(ValueError):
        impl.apply_mask(b"data", b"abc")
