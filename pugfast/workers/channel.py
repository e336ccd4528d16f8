"""The control channel between the supervisor and each worker: its messages and their bytes.

Nothing here does I/O. The channel is one end each of a SOCK_SEQPACKET socket pair, so every
message arrives whole; ``encode`` gives a message's bytes and ``decode`` reads them back. The
first byte names the message; the fields follow, integers big-endian. A connection travels
beside its ``Connection`` message as a descriptor (SCM_RIGHTS), which the caller attaches.

    supervisor -> worker                          worker -> supervisor
    H Hello         JSON: settings, index,        R Ready          (no fields): serving
                    workers, token key, first     Q SpentQuestion  id(4) token: spent yet?
                    allowance of each cap         T TokenClaim     id(4) token: spend it?
    C Connection    n(1) key(n) prefix: a         A Acquire        id(4) kind(1) need(4):
                    connection (its fd attached)                   more slots of a cap
                    with its address key (n=0:    K GivenBack      kind(1) n(4): n slots
                    not counted) and the bytes                     given back
                    the supervisor read from it   M MetricsReport  id(4) JSON: the metrics
    s SpentAnswer   id(4) 1|0: it was spent       X Closed         key: a connection counted
    t TokenAnswer   id(4) 1|0: it was fresh                        under this key ended
    g Grant         id(4) n(4): n more slots
    k GiveBack      kind(1): give back the slots
                    you do not use
    m MetricsWanted id(4): send your metrics

A cap's kind is ``r`` (rooms) or ``c`` (connections), as pugfast.allowance names them. An id
pairs a question with its answer; each side numbers its own questions.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, ClassVar

import orjson

from ..errors import PugfastError

# A message larger than this is not one of ours; read with a buffer this large.
MAX_MESSAGE = 65536
_ID = struct.Struct(">I")
_ID_COUNT = struct.Struct(">II")


class ChannelError(PugfastError):
    """Bytes on the channel that are no message of it: the other side is not a pugfast
    supervisor or worker of this version."""


def decode(data: bytes) -> Any:
    """The message ``data`` holds. Raises ChannelError if it holds none."""
    if not data:
        raise ChannelError("an empty message")
    cls = _DECODERS.get(data[0])
    if cls is None:
        raise ChannelError(f"unknown message kind {data[:1]!r}")
    try:
        return cls.from_fields(data[1:])
    except (struct.error, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ChannelError(f"a malformed {cls.__name__} message ({len(data)} bytes)") from exc


def encode(message: Any) -> bytes:
    """The bytes of ``message``, kind byte first."""
    return message.KIND + message.fields()


def _id_and(body: bytes, length: int | None = None) -> tuple[int, bytes]:
    if len(body) < 4 or (length is not None and len(body) != 4 + length):
        raise ValueError("wrong length")
    return _ID.unpack_from(body)[0], body[4:]


def _flag(rest: bytes) -> bool:
    if rest not in (b"\x00", b"\x01"):
        raise ValueError("not a flag")
    return rest == b"\x01"


def _kind(byte: bytes) -> str:
    kind = byte.decode("ascii")
    if kind not in ("r", "c"):
        raise ValueError("not a cap")
    return kind


# -- supervisor -> worker ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """The supervisor's first message to a new worker: its settings (as a dict), its index and
    the number of workers, the key challenge tokens are signed with, and its first allowance
    of each cap."""

    KIND: ClassVar[bytes] = b"H"
    settings: dict[str, Any]
    worker: int
    workers: int
    token_key: bytes
    allowance: dict[str, int]

    def fields(self) -> bytes:
        return orjson.dumps({
            "settings": self.settings, "worker": self.worker, "workers": self.workers,
            "token_key": self.token_key.hex(), "allowance": self.allowance,
        })

    @classmethod
    def from_fields(cls, body: bytes) -> Hello:
        hello = orjson.loads(body)
        return cls(hello["settings"], hello["worker"], hello["workers"],
                   bytes.fromhex(hello["token_key"]), hello["allowance"])


@dataclasses.dataclass(frozen=True, slots=True)
class Connection:
    """A connection for the worker, its descriptor attached: its address key when the per-
    address cap counts it, and the bytes the supervisor read from it (its request line, at
    least)."""

    KIND: ClassVar[bytes] = b"C"
    address: bytes | None
    prefix: bytes

    def fields(self) -> bytes:
        key = self.address or b""
        return bytes((len(key),)) + key + self.prefix

    @classmethod
    def from_fields(cls, body: bytes) -> Connection:
        if not body or len(body) < 1 + body[0]:
            raise ValueError("short")
        n = body[0]
        return cls(body[1:1 + n] or None, body[1 + n:])


@dataclasses.dataclass(frozen=True, slots=True)
class _YesOrNo:
    """The answer to a question about a token: ``yes`` means spent (SpentAnswer) or fresh
    (TokenAnswer)."""

    request: int
    yes: bool

    def fields(self) -> bytes:
        return _ID.pack(self.request) + (b"\x01" if self.yes else b"\x00")

    @classmethod
    def from_fields(cls, body: bytes) -> Any:
        request, rest = _id_and(body, 1)
        return cls(request, _flag(rest))


@dataclasses.dataclass(frozen=True, slots=True)
class SpentAnswer(_YesOrNo):
    """Whether the token asked about was spent, at any worker."""

    KIND: ClassVar[bytes] = b"s"


@dataclasses.dataclass(frozen=True, slots=True)
class TokenAnswer(_YesOrNo):
    """Whether the token was fresh, and is now spent."""

    KIND: ClassVar[bytes] = b"t"


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """``count`` more slots of the cap the worker asked for in ``request`` (0: the relay is
    full)."""

    KIND: ClassVar[bytes] = b"g"
    request: int
    count: int

    def fields(self) -> bytes:
        return _ID_COUNT.pack(self.request, self.count)

    @classmethod
    def from_fields(cls, body: bytes) -> Grant:
        if len(body) != _ID_COUNT.size:
            raise ValueError("wrong length")
        return cls(*_ID_COUNT.unpack(body))


@dataclasses.dataclass(frozen=True, slots=True)
class GiveBack:
    """Give back the slots of cap ``kind`` that you hold and do not use."""

    KIND: ClassVar[bytes] = b"k"
    kind: str

    def fields(self) -> bytes:
        return self.kind.encode("ascii")

    @classmethod
    def from_fields(cls, body: bytes) -> GiveBack:
        if len(body) != 1:
            raise ValueError("wrong length")
        return cls(_kind(body))


@dataclasses.dataclass(frozen=True, slots=True)
class MetricsWanted:
    """Send your metrics, answering ``request``."""

    KIND: ClassVar[bytes] = b"m"
    request: int

    def fields(self) -> bytes:
        return _ID.pack(self.request)

    @classmethod
    def from_fields(cls, body: bytes) -> MetricsWanted:
        return cls(_id_and(body, 0)[0])


# -- worker -> supervisor ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """The worker serves."""

    KIND: ClassVar[bytes] = b"R"

    def fields(self) -> bytes:
        return b""

    @classmethod
    def from_fields(cls, body: bytes) -> Ready:
        if body:
            raise ValueError("wrong length")
        return cls()


@dataclasses.dataclass(frozen=True, slots=True)
class _AboutAToken:
    request: int
    token: str

    def fields(self) -> bytes:
        return _ID.pack(self.request) + self.token.encode("ascii")

    @classmethod
    def from_fields(cls, body: bytes) -> Any:
        request, rest = _id_and(body)
        return cls(request, rest.decode("ascii"))


@dataclasses.dataclass(frozen=True, slots=True)
class SpentQuestion(_AboutAToken):
    """Was this token spent, at any worker? Spends nothing."""

    KIND: ClassVar[bytes] = b"Q"


@dataclasses.dataclass(frozen=True, slots=True)
class TokenClaim(_AboutAToken):
    """Spend this token, if nobody has."""

    KIND: ClassVar[bytes] = b"T"


@dataclasses.dataclass(frozen=True, slots=True)
class Acquire:
    """More slots of cap ``kind``: ``need`` of them are waited for now."""

    KIND: ClassVar[bytes] = b"A"
    request: int
    kind: str
    need: int

    def fields(self) -> bytes:
        return _ID.pack(self.request) + self.kind.encode("ascii") + _ID.pack(self.need)

    @classmethod
    def from_fields(cls, body: bytes) -> Acquire:
        request, rest = _id_and(body, 5)
        return cls(request, _kind(rest[:1]), _ID.unpack_from(rest, 1)[0])


@dataclasses.dataclass(frozen=True, slots=True)
class GivenBack:
    """``count`` slots of cap ``kind`` given back."""

    KIND: ClassVar[bytes] = b"K"
    kind: str
    count: int

    def fields(self) -> bytes:
        return self.kind.encode("ascii") + _ID.pack(self.count)

    @classmethod
    def from_fields(cls, body: bytes) -> GivenBack:
        if len(body) != 5:
            raise ValueError("wrong length")
        return cls(_kind(body[:1]), _ID.unpack_from(body, 1)[0])


@dataclasses.dataclass(frozen=True, slots=True)
class MetricsReport:
    """The worker's metrics snapshot (pugfast.metrics), answering ``request``."""

    KIND: ClassVar[bytes] = b"M"
    request: int
    data: dict[str, Any]

    def fields(self) -> bytes:
        return _ID.pack(self.request) + orjson.dumps(self.data)

    @classmethod
    def from_fields(cls, body: bytes) -> MetricsReport:
        request, rest = _id_and(body)
        data = orjson.loads(rest)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return cls(request, data)


@dataclasses.dataclass(frozen=True, slots=True)
class Closed:
    """A connection counted under ``address`` ended."""

    KIND: ClassVar[bytes] = b"X"
    address: bytes

    def fields(self) -> bytes:
        return self.address

    @classmethod
    def from_fields(cls, body: bytes) -> Closed:
        if not body:
            raise ValueError("no key")
        return cls(body)


_DECODERS: dict[int, Any] = {
    cls.KIND[0]: cls
    for cls in (Hello, Connection, SpentAnswer, TokenAnswer, Grant, GiveBack, MetricsWanted,
                Ready, SpentQuestion, TokenClaim, Acquire, GivenBack, MetricsReport, Closed)
}
