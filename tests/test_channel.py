"""The supervisor-worker channel's codec (pugfast/workers/channel.py): every message survives
a round trip, and bytes that are no message raise ChannelError, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pugfast.workers import channel
from pugfast.workers.channel import ChannelError, decode, encode

ids = st.integers(0, 2**32 - 1)
counts = st.integers(0, 2**32 - 1)
caps = st.sampled_from(["r", "c"])
tokens = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=256)
keys = st.binary(min_size=16, max_size=16)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)

messages = st.one_of(
    st.builds(channel.Hello, st.dictionaries(st.text(max_size=12), json_values, max_size=6),
              st.integers(0, 1000), st.integers(1, 1000), st.binary(min_size=32, max_size=32),
              st.fixed_dictionaries({"r": counts, "c": counts})),
    st.builds(channel.Connection, st.none() | keys, st.binary(max_size=2048)),
    st.builds(channel.SpentAnswer, ids, st.booleans()),
    st.builds(channel.TokenAnswer, ids, st.booleans()),
    st.builds(channel.Grant, ids, counts),
    st.builds(channel.GiveBack, caps),
    st.builds(channel.MetricsWanted, ids),
    st.builds(channel.Ready),
    st.builds(channel.SpentQuestion, ids, tokens),
    st.builds(channel.TokenClaim, ids, tokens),
    st.builds(channel.Acquire, ids, caps, counts),
    st.builds(channel.GivenBack, caps, counts),
    st.builds(channel.MetricsReport, ids, st.dictionaries(st.text(max_size=12), json_values, max_size=6)),
    st.builds(channel.Closed, keys),
)


@given(messages)
def test_every_message_survives_a_round_trip(message: object) -> None:
    data = encode(message)
    assert len(data) <= channel.MAX_MESSAGE
    assert decode(data) == message


@given(st.binary(max_size=64))
def test_bytes_that_are_no_message_raise_channel_error_only(data: bytes) -> None:
    try:
        message = decode(data)
    except ChannelError:
        return
    assert decode(encode(message)) == message


@pytest.mark.parametrize("data", [b"", b"Z", b"s\x00\x00\x00\x01\x02", b"A\x00\x00\x00\x01x\x00\x00\x00\x01",
                                  b"g\x00", b"C\x10abc", b"M\x00\x00\x00\x01[]", b"X", b"R!"])
def test_malformed_messages_are_named(data: bytes) -> None:
    with pytest.raises(ChannelError):
        decode(data)


def test_kinds_are_one_byte_each_and_distinct() -> None:
    kinds = [cls.KIND for cls in channel._DECODERS.values()]
    assert all(len(kind) == 1 for kind in kinds) and len(set(kinds)) == len(kinds) == 14
