"""Forward secrecy for a room: sender keys over ephemeral X25519, byte for byte as
static/js/senderkeys.js does it (docs/client.md, "Forward secrecy (protocol version 2)").

The link's key only authenticates: each member announces an ephemeral X25519 public key
sealed under a key derived from the link's key and bound to the room and its member id, so
the relay cannot substitute one. Each pair of members derives a pairwise key from X25519
through HKDF-SHA-256; each member's own sender key (a hash-ratchet chain: a fresh message key
per message, the chain stepped forward and the old value forgotten) goes to each other member
under their pairwise key. A newcomer receives every present member's chain as it stands, so
it reads from its join on; when a member leaves, every remaining member starts a new chain.

``KeyRing`` is the state machine, sans-I/O: frames in (with the relay's sender id), frames
out, plaintexts and warnings out; time is an argument. Everything in it lives in memory only
and is dropped with it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import DecryptError, MissingDependency

VERSION = 0x02
KIND_KEYS = 0x01
KIND_MESSAGE = 0x02
KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
ANNOUNCE_BYTES = IV_BYTES + KEY_BYTES + TAG_BYTES
ENTRY_BYTES = 4 + IV_BYTES + 4 + 4 + KEY_BYTES + TAG_BYTES
MESSAGE_HEADER = 2 + 4 + 4
MESSAGE_OVERHEAD = MESSAGE_HEADER + TAG_BYTES
# How far one message may jump ahead in a chain (messages lost on the way): a bound on the
# work a forged iteration number can cause, not on anything a real sender does.
MAX_SKIP = 4096
# A message that arrives before its sender's keys waits this long, at most this many per
# sender, then is reported as unreadable.
PENDING_SECONDS = 5.0
MAX_PENDING = 64

LABEL_ANNOUNCE_KEY = b"pugfast/2 announce key"
LABEL_ANNOUNCE = b"pugfast/2 announce"
LABEL_PAIR = b"pugfast/2 pair"
LABEL_SENDER_KEY = b"pugfast/2 sender key"
LABEL_MESSAGE_KEY = b"pugfast/2 message key"
LABEL_MESSAGE = b"pugfast/2 message"


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        raise MissingDependency() from None
    return hashes, X25519PrivateKey, X25519PublicKey, AESGCM, HKDF


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA-256 (RFC 5869), as Web Crypto's ``deriveBits({name: "HKDF", ...})``."""
    hashes, _, _, _, HKDF = _crypto()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _seal(key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return _crypto()[3](key).encrypt(iv, plaintext, aad)


def _open(key: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        return _crypto()[3](key).decrypt(iv, sealed, aad)
    except InvalidTag:
        raise DecryptError("could not be decrypted: authentication failed") from None


def announce_key(link_key: bytes, room: str) -> bytes:
    """The key announcements are sealed with: HKDF(link key, salt = room id,
    info = "pugfast/2 announce key"). The link's key seals nothing else."""
    return hkdf(link_key, room.encode("ascii"), LABEL_ANNOUNCE_KEY)


def announce_aad(room: str, member: int) -> bytes:
    return LABEL_ANNOUNCE + room.encode("ascii") + _u32(member)


def pair_key(shared: bytes, room: str, a: int, a_public: bytes, b: int, b_public: bytes) -> bytes:
    """The pairwise key of members ``a`` and ``b``: HKDF(X25519 shared secret, salt = room id,
    info = "pugfast/2 pair" || lower id || higher id || lower's public key || higher's)."""
    (lo, lo_public), (hi, hi_public) = sorted(((a, a_public), (b, b_public)))
    info = LABEL_PAIR + _u32(lo) + _u32(hi) + lo_public + hi_public
    return hkdf(shared, room.encode("ascii"), info)


def sender_key_aad(room: str, sender: int, recipient: int) -> bytes:
    return LABEL_SENDER_KEY + room.encode("ascii") + _u32(sender) + _u32(recipient)


def message_aad(room: str, sender: int, chain: int, iteration: int) -> bytes:
    return LABEL_MESSAGE + room.encode("ascii") + _u32(sender) + _u32(chain) + _u32(iteration)


def step(chain_key: bytes) -> tuple[bytes, bytes]:
    """One turn of the hash ratchet: (message key, next chain key), as HMAC-SHA-256 of the
    chain key over the byte 0x01 and over 0x02."""
    return (hmac.new(chain_key, b"\x01", hashlib.sha256).digest(),
            hmac.new(chain_key, b"\x02", hashlib.sha256).digest())


def message_cipher(message_key: bytes) -> tuple[bytes, bytes]:
    """The AES-256-GCM key and IV of one message: HKDF(message key, no salt,
    info = "pugfast/2 message key"), 44 bytes cut 32 + 12."""
    both = hkdf(message_key, b"", LABEL_MESSAGE_KEY, KEY_BYTES + IV_BYTES)
    return both[:KEY_BYTES], both[KEY_BYTES:]


# -- frames ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One member's chain, sealed for one recipient."""

    recipient: int
    iv: bytes
    sealed: bytes


@dataclass(frozen=True, slots=True)
class KeysFrame:
    announce_iv: bytes
    announce: bytes
    entries: tuple[Entry, ...]

    def encode(self) -> bytes:
        head = [bytes([VERSION, KIND_KEYS]), self.announce_iv, self.announce]
        parts = [*head, struct.pack(">H", len(self.entries))]
        parts += [_u32(e.recipient) + e.iv + e.sealed for e in self.entries]
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class MessageFrame:
    chain: int
    iteration: int
    sealed: bytes

    def encode(self) -> bytes:
        return bytes([VERSION, KIND_MESSAGE]) + _u32(self.chain) + _u32(self.iteration) + self.sealed


def decode_frame(data: bytes) -> KeysFrame | MessageFrame:
    """Parses a version-2 frame. Raises DecryptError (malformed) for anything else."""
    if len(data) < 2 or data[0] != VERSION:
        raise DecryptError(f"could not be decrypted: unknown version {data[0] if data else None}")
    if data[1] == KIND_MESSAGE and len(data) >= MESSAGE_OVERHEAD:
        chain, iteration = struct.unpack_from(">II", data, 2)
        return MessageFrame(chain, iteration, data[MESSAGE_HEADER:])
    if data[1] == KIND_KEYS and len(data) >= 2 + ANNOUNCE_BYTES + 2:
        at = 2 + ANNOUNCE_BYTES
        (count,) = struct.unpack_from(">H", data, at)
        at += 2
        if len(data) == at + count * ENTRY_BYTES:
            entries = []
            for _ in range(count):
                (recipient,) = struct.unpack_from(">I", data, at)
                iv = data[at + 4 : at + 4 + IV_BYTES]
                entries.append(Entry(recipient, iv, data[at + 4 + IV_BYTES : at + ENTRY_BYTES]))
                at += ENTRY_BYTES
            return KeysFrame(data[2 : 2 + IV_BYTES], data[2 + IV_BYTES : 2 + ANNOUNCE_BYTES], tuple(entries))
    raise DecryptError("could not be decrypted: malformed frame")


# -- what the key ring reports ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Readable:
    """A message decrypted: its padded plaintext."""

    sender: int
    plaintext: bytes


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A message that cannot be read: ``why`` is "failed" (did not decrypt), "repeated"
    (its key was used or passed already), "no-keys" (its sender's keys never came) or
    "malformed"."""

    sender: int
    why: str


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """A member's announced key did not authenticate, or changed: its messages cannot be
    read. ``why`` is "unauthenticated" or "changed"."""

    member: int
    why: str


Outcome = Readable | Unreadable | KeyProblem


@dataclass
class _Chain:
    chain: int
    iteration: int
    key: bytes


@dataclass
class _Peer:
    public: bytes | None = None
    pair: bytes | None = None
    chain: _Chain | None = None
    problem: bool = False
    waiting: list[tuple[float, MessageFrame]] = field(default_factory=list)


class KeyRing:
    """One member's keys for one connection to one room.

    Call ``start`` after the welcome, then feed it the room's traffic: ``on_frame`` for each
    binary frame (with the relay's sender id), ``on_leave`` for each departure, ``tick`` now
    and then, and ``flush`` soon after frames arrive (and before sealing). ``outbox`` holds
    the frames to send, in order. ``seal`` makes a message; ``holders`` says who can read it.
    """

    def __init__(self, link_key: bytes, room: str, *, private: bytes | None = None,
                 chain_key: bytes | None = None) -> None:
        _, X25519PrivateKey, _, _, _ = _crypto()
        self.room = room
        self._announce_key = announce_key(link_key, room)
        self._private = (X25519PrivateKey.from_private_bytes(private) if private is not None
                         else X25519PrivateKey.generate())
        from cryptography.hazmat.primitives import serialization

        self.public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.me = 0
        self._own = _Chain(1, 0, chain_key if chain_key is not None else os.urandom(KEY_BYTES))
        self._peers: dict[int, _Peer] = {}
        self._holders: set[int] = set()  # who holds the current chain
        self._owed: set[int] = set()  # who should get it with the next keys frame
        self.outbox: list[bytes] = []

    # -- membership ------------------------------------------------------------------------

    def start(self, me: int, present: Iterable[int]) -> None:
        """Begins, as member ``me`` with ``present`` (the others) in the room: announces."""
        self.me = me
        for member in present:
            if member != me:
                self._peers.setdefault(member, _Peer())
        self._flush(force=True)

    def on_join(self, member: int) -> None:
        self._peers.setdefault(member, _Peer())

    def on_leave(self, member: int) -> None:
        """Forgets everything about ``member`` and starts a new chain, so that it cannot read
        what this member sends from now on."""
        if self._peers.pop(member, None) is None:
            return
        self.rekey()

    def rekey(self) -> None:
        """Starts a new chain and queues it for every member whose key is known."""
        self._own = _Chain(self._own.chain + 1, 0, os.urandom(KEY_BYTES))
        self._owed = {m for m, p in self._peers.items() if p.pair is not None}
        self._holders = set()
        self._flush()

    def present(self) -> set[int]:
        return set(self._peers)

    def awaiting(self) -> set[int]:
        """The members present whose keys have not come yet (and have not failed)."""
        return {m for m, p in self._peers.items() if p.pair is None and not p.problem}

    def holders(self) -> set[int]:
        """The members who hold this member's current chain (so can read its next message)."""
        return self._holders & set(self._peers)

    # -- sending ------------------------------------------------------------------------------

    def seal(self, padded: bytes) -> bytes:
        """A message frame for ``padded`` under this member's chain, which steps forward."""
        chain = self._own
        message_key, chain.key = step(chain.key)
        key, iv = message_cipher(message_key)
        aad = message_aad(self.room, self.me, chain.chain, chain.iteration)
        frame = MessageFrame(chain.chain, chain.iteration, _seal(key, iv, padded, aad))
        chain.iteration += 1
        return frame.encode()

    def owes(self) -> bool:
        """Whether some member is owed this member's chain (``flush`` would send a frame)."""
        return bool(self._owed)

    def flush(self) -> None:
        """Queues one keys frame with this member's chain for every member owed it (learnt of
        since the last one). The caller decides when: answering the keys frames that arrive
        together with one frame keeps a join in a room of 64 within the rate limit."""
        self._flush()

    def _flush(self, force: bool = False) -> None:
        """Queues one keys frame: the announcement, and this chain for everyone owed it."""
        if not self._owed and not force:
            return
        iv = os.urandom(IV_BYTES)
        announce = _seal(self._announce_key, iv, self.public, announce_aad(self.room, self.me))
        plain = _u32(self._own.chain) + _u32(self._own.iteration) + self._own.key
        entries = []
        for member in sorted(self._owed):
            peer = self._peers[member]
            assert peer.pair is not None
            entry_iv = os.urandom(IV_BYTES)
            entries.append(Entry(member, entry_iv, _seal(peer.pair, entry_iv, plain,
                                                         sender_key_aad(self.room, self.me, member))))
        self._holders |= self._owed
        self._owed = set()
        self.outbox.append(KeysFrame(iv, announce, tuple(entries)).encode())

    # -- receiving ----------------------------------------------------------------------------

    def on_frame(self, sender: int, data: bytes, now: float) -> list[Outcome]:
        """What one binary frame from ``sender`` means. May queue frames in ``outbox``."""
        try:
            frame = decode_frame(data)
        except DecryptError:
            return [Unreadable(sender, "malformed")]
        peer = self._peers.get(sender)
        if peer is None:  # not a member present: no state is kept for it
            return [Unreadable(sender, "failed")]
        if isinstance(frame, KeysFrame):
            return self._keys(sender, peer, frame, now)
        if peer.problem:
            return [Unreadable(sender, "failed")]
        if peer.chain is None or frame.chain != peer.chain.chain:
            if peer.chain is not None and frame.chain < peer.chain.chain:
                return [Unreadable(sender, "no-keys")]
            if len(peer.waiting) >= MAX_PENDING:
                return [Unreadable(sender, "no-keys")]
            peer.waiting.append((now + PENDING_SECONDS, frame))
            return []
        return [self._open_message(sender, peer, frame)]

    def _keys(self, sender: int, peer: _Peer, frame: KeysFrame, now: float) -> list[Outcome]:
        try:
            aad = announce_aad(self.room, sender)
            public = _open(self._announce_key, frame.announce_iv, frame.announce, aad)
        except DecryptError:
            if peer.problem:
                return []
            peer.problem = True
            # Announce once more, so that a member behind the same man in the middle sees
            # this member's key arrive changed too, and says so.
            self._flush(force=True)
            return [KeyProblem(sender, "unauthenticated")]
        if peer.public is None:
            _, _, X25519PublicKey, _, _ = _crypto()
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(public))
            peer.public = public
            peer.pair = pair_key(shared, self.room, self.me, self.public, sender, public)
            self._owed.add(sender)
        elif public != peer.public:
            peer.problem = True
            return [KeyProblem(sender, "changed")]
        out: list[Outcome] = []
        for entry in frame.entries:
            if entry.recipient != self.me or peer.pair is None:
                continue
            try:
                plain = _open(peer.pair, entry.iv, entry.sealed, sender_key_aad(self.room, sender, self.me))
            except DecryptError:
                out.append(KeyProblem(sender, "unauthenticated"))
                continue
            chain, iteration = struct.unpack_from(">II", plain)
            if peer.chain is None or chain > peer.chain.chain:
                peer.chain = _Chain(chain, iteration, plain[8:])
        out += self._retry(sender, peer, now)
        return out

    def _retry(self, sender: int, peer: _Peer, now: float) -> list[Outcome]:
        waiting, peer.waiting = peer.waiting, []
        out: list[Outcome] = []
        for deadline, frame in waiting:
            chain = peer.chain
            if chain is not None and frame.chain == chain.chain and frame.iteration >= chain.iteration:
                out.append(self._open_message(sender, peer, frame))
            elif chain is not None and (frame.chain, frame.iteration) < (chain.chain, chain.iteration):
                # Sent before this member's keys reached the sender: never meant to be read here.
                out.append(Unreadable(sender, "no-keys"))
            else:
                peer.waiting.append((deadline, frame))
        return out

    def _open_message(self, sender: int, peer: _Peer, frame: MessageFrame) -> Outcome:
        chain = peer.chain
        assert chain is not None
        if frame.iteration < chain.iteration:
            return Unreadable(sender, "repeated")
        if frame.iteration - chain.iteration > MAX_SKIP:
            return Unreadable(sender, "failed")
        key = chain.key
        for _ in range(frame.iteration - chain.iteration):
            _, key = step(key)
        message_key, following = step(key)
        aes_key, iv = message_cipher(message_key)
        try:
            aad = message_aad(self.room, sender, frame.chain, frame.iteration)
            padded = _open(aes_key, iv, frame.sealed, aad)
        except DecryptError:
            return Unreadable(sender, "failed")
        chain.key, chain.iteration = following, frame.iteration + 1
        return Readable(sender, padded)

    def tick(self, now: float) -> list[Outcome]:
        """Reports the messages that waited too long for their keys."""
        out: list[Outcome] = []
        for member, peer in self._peers.items():
            expired = [f for deadline, f in peer.waiting if deadline <= now]
            if expired:
                peer.waiting = [(d, f) for d, f in peer.waiting if d > now]
                out += [Unreadable(member, "no-keys") for _ in expired]
        return out
