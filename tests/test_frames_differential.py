"""The frame codec on generated input: both implementations, however the input is split.

The pure twin fed everything at once is the reference. Each implementation, fed the same bytes
at once, one byte at a time and split at random offsets (or at every offset, for short input),
must give the same events, the same final (close code, reason) or none, and end in the same
state. Valid streams are also checked against the messages they were built from.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, NamedTuple

import pytest
from engines import IMPLEMENTATIONS, frame, py_impl
from hypothesis import given, settings
from hypothesis import strategies as st

from pugfast.errors import ProtocolError

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
# Beyond 64 bytes, splitting at every offset costs more than it finds.
SPLIT_EVERYWHERE_UP_TO = 64


class Stream(NamedTuple):
    data: bytes
    events: list[tuple[Any, ...]]
    closed: bool
    max_message_bytes: int
    require_mask: bool


CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1014, 3000, 4410, 4999]
control_payloads = st.binary(max_size=125)
data_payloads = st.one_of(
    st.tuples(st.just(TEXT), st.text(max_size=80).map(str.encode)),
    st.tuples(st.just(BINARY), st.binary(max_size=300)),
)


@st.composite
def valid_streams(draw: st.DrawFn) -> Stream:
    """A valid client or server frame stream: messages split into fragments at arbitrary byte
    offsets (so UTF-8 characters too), control frames between fragments, maybe a close and
    data after it."""
    require_mask = draw(st.booleans())

    def build(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        mask = draw(st.binary(min_size=4, max_size=4)) if require_mask else None
        wide = draw(st.sampled_from([0, 0, 0, 16, 64])) if opcode < CLOSE else 0
        return frame(opcode, payload, fin=fin, mask=mask, wide=wide)

    data = b""
    events: list[tuple[Any, ...]] = []
    largest = 0
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            opcode = draw(st.sampled_from([PING, PONG]))
            payload = draw(control_payloads)
            data += build(opcode, payload)
            events.append((opcode, payload))
            continue
        opcode, payload = draw(data_payloads)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in pairwise([0, *cuts, len(payload)])]
        for i, piece in enumerate(pieces):
            if i:
                for _ in range(draw(st.integers(0, 2))):
                    control = draw(st.sampled_from([PING, PONG])), draw(control_payloads)
                    data += build(*control)
                    events.append(control)
            data += build(CONT if i else opcode, piece, fin=i == len(pieces) - 1)
        events.append((opcode, payload))
        largest = max(largest, len(payload))
    closed = draw(st.booleans())
    if closed:
        if draw(st.booleans()):
            code = draw(st.sampled_from(CLOSE_CODES))
            reason = draw(st.text(max_size=30))  # at most 120 bytes of UTF-8
            data += build(CLOSE, code.to_bytes(2, "big") + reason.encode())
            events.append((CLOSE, code, reason))
        else:
            data += build(CLOSE, b"")
            events.append((CLOSE, None, ""))
        data += draw(st.binary(max_size=20))  # ignored
    max_message_bytes = largest + draw(st.integers(0, 3))  # at the limit, or nearly
    return Stream(data, events, closed, max_message_bytes, require_mask)


@st.composite
def mutated_streams(draw: st.DrawFn) -> Stream:
    """A valid stream broken in a few places: flipped bits, inserted, deleted or cut bytes."""
    stream = draw(valid_streams())
    data = bytearray(stream.data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if how == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif how == "truncate":
            del data[at:]
    limit = draw(st.sampled_from([0, 8, 100, stream.max_message_bytes, 1 << 20]))
    return stream._replace(data=bytes(data), max_message_bytes=limit)


random_streams = st.builds(
    Stream,
    data=st.binary(max_size=200),
    events=st.just([]),
    closed=st.just(False),
    max_message_bytes=st.sampled_from([0, 100, 1 << 20]),
    require_mask=st.booleans(),
)


class Outcome(NamedTuple):
    events: list[tuple[Any, ...]]
    error: tuple[int, str] | None
    finished: bool
    buffered: int


def run(impl: Any, stream: Stream, chunks: list[bytes]) -> Outcome:
    parser = impl.FrameParser(stream.max_message_bytes, require_mask=stream.require_mask)
    events: list[tuple[Any, ...]] = []
    error = None
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (event := parser.next_event()) is not None:
                events.append(event)
    except ProtocolError as exc:
        error = exc.code, exc.reason
    return Outcome(events, error, parser.finished, parser.buffered)


def splits(data: bytes, draw: st.DataObject) -> list[list[bytes]]:
    """The ways to cut data that every test tries: at once, byte by byte, at random offsets,
    and, for short data, in two at every offset."""
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=8), label="cuts"))
    ways = [
        [data],
        [data[i : i + 1] for i in range(len(data))],
        [data[a:b] for a, b in pairwise([0, *cuts, len(data)])],
    ]
    if len(data) <= SPLIT_EVERYWHERE_UP_TO:
        ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    return ways


def check_against_reference(impl: Any, stream: Stream, draw: st.DataObject) -> Outcome:
    reference = run(py_impl, stream, [stream.data])
    for chunks in splits(stream.data, draw):
        assert run(impl, stream, chunks) == reference, chunks
    return reference


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None)
@given(stream=valid_streams(), draw=st.data())
def test_valid_streams(impl: Any, stream: Stream, draw: st.DataObject) -> None:
    outcome = check_against_reference(impl, stream, draw)
    assert outcome == Outcome(stream.events, None, stream.closed, 0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=500, deadline=None)
@given(stream=mutated_streams(), draw=st.data())
def test_mutated_streams(impl: Any, stream: Stream, draw: st.DataObject) -> None:
    check_against_reference(impl, stream, draw)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None)
@given(stream=random_streams, draw=st.data())
def test_random_bytes(impl: Any, stream: Stream, draw: st.DataObject) -> None:
    check_against_reference(impl, stream, draw)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=70000), mask=st.binary(min_size=4, max_size=4))
def test_encoded_frames_round_trip(impl: Any, payload: bytes, mask: bytes) -> None:
    assert impl.apply_mask(impl.apply_mask(payload, mask), mask) == payload
    server = impl.FrameParser(len(payload))
    server.feed(impl.encode_frame(BINARY, payload, mask=mask))
    assert server.next_event() == (BINARY, payload)
    client = impl.FrameParser(len(payload), require_mask=False)
    client.feed(impl.encode_frame(BINARY, payload))
    assert client.next_event() == (BINARY, payload)
