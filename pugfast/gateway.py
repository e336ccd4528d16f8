"""The room protocol over the engine's connections: join, presence, purge, endings, liveness.

The engine (pugfast.engine) relays binary messages by itself; what reaches this module is
text messages and the end of each connection, which is the slow, rare part of the protocol.
This is also where rooms get their timers, on the loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import time
from collections import Counter
from typing import Any, Protocol

import orjson

from .allowance import CONNECTIONS, ROOMS, Allowance
from .config import Settings
from .engine import OP_TEXT, Connection, Flusher, Group, encode_frame
from .liveness import Liveness
from .pow import ChallengeError, ChallengeIssuer
from .registry import Member, Registry, Room, RoomIds, secret_digest

log = logging.getLogger("pugfast.gateway")

CLOSE_GOING_AWAY = 1001
CLOSE_BAD_MESSAGE = 4400
CLOSE_WRONG_SECRET = 4403
CLOSE_NO_SUCH_ROOM = 4404
CLOSE_JOIN_TIMEOUT = 4408
CLOSE_ROOM_FULL = 4409
CLOSE_ROOM_ENDED = 4410

_ENDED_FRAMES = {
    reason: encode_frame(OP_TEXT, orjson.dumps({"type": reason})) for reason in ("expired", "purged")
}
_REFUSAL_LABELS = {
    CLOSE_BAD_MESSAGE: "bad_message",
    CLOSE_NO_SUCH_ROOM: "no_such_room",
    CLOSE_ROOM_FULL: "room_full",
    CLOSE_WRONG_SECRET: "wrong_secret",
}
_NOT_CREATOR = orjson.dumps({"type": "error", "code": "not_creator"})
# The messages of a join and a leave (docs/protocol.md §6.2, §6.4), filled with byte strings that
# are JSON already (Member.describe) and integers.
_WELCOME = b'{"type":"welcome","you":%b,"creator":%b,"members":[%b],"expires":%d,"capacity":%d}'
_JOINED = b'{"type":"join","member":%b}'
_LEFT = b'{"type":"leave","member":%b}'


# How long a connection the relay is closing may take to hang up after the close frame
# before it is dropped (the relay half-closes and keeps reading until then; see _end_output
# in pugfast/engine/_fanout.py).
CLOSE_LINGER = 3.0

# A 503 for want of capacity is the relay's limit, not a client's fault: the operator is told,
# at most this often (seconds).
CAPACITY_WARNING_INTERVAL = 60.0

# A join notice waits up to this long (seconds) for company: it leaves with the member's next
# write, or alone once this has passed. When a room's members come back together (a restart,
# a network blip), each member then gets one write for their notices instead of one per
# joiner. Order is kept: a message never overtakes the notices queued before it
# (docs/protocol.md §6.2).
PRESENCE_DEFERRAL = 0.010


class Session:
    """What the gateway knows of one connection: the room it asked for and, once joined, its
    membership. The engine calls ``on_text``, ``on_closed`` and ``on_lost``.

    It holds no future: an idle connection costs what it must and no more. ``wait_lost`` makes
    one for the rare caller that must wait for the end (an upgrade aiohttp answered).
    """

    __slots__ = ("_lost", "address", "due_slot", "gateway", "linger", "member", "pinged_at", "room",
                 "room_id")

    def __init__(self, gateway: Gateway, room_id: str) -> None:
        self.gateway = gateway
        self.room_id = room_id
        self.room: Room | None = None
        self.member: Member | None = None
        self.pinged_at = 0.0
        # Where pugfast.liveness filed the connection (-1: nowhere).
        self.due_slot = -1
        self.linger: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] | None = None
        # The keyed hash of the client's address, while the per-address cap counts it.
        self.address: bytes | None = None

    def on_text(self, conn: Connection, payload: bytes) -> None:
        self.gateway.handle_text(self, conn, payload)

    def on_closed(self, conn: Connection) -> None:
        self.gateway.handle_closed(self, conn)

    def on_lost(self, conn: Connection) -> None:
        self.gateway.connections.discard(conn)
        self.gateway.liveness.remove(conn)
        entrance = self.gateway.entrance
        if self.address is not None:
            entrance.release_address(self.address)
            self.address = None
        if entrance is not None:
            entrance.descriptor_freed()
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def wait_lost(self, conn: Connection) -> asyncio.Future[None]:
        """A future done once the connection's TCP connection is gone."""
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
            if conn not in self.gateway.connections:
                self._lost.set_result(None)
        return self._lost


class Shared(Protocol):
    """What the workers of ``--workers N`` share through their supervisor (pugfast.workers.link)."""

    async def token_spent(self, token: str) -> bool: ...
    async def claim_token(self, token: str) -> bool: ...
    async def acquire(self, kind: str, need: int) -> int: ...


class Gateway:
    """Owns the registry, the challenge issuer and every open connection of one relay."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        *,
        ids: RoomIds | None = None,
        token_key: bytes | None = None,
        shared: Shared | None = None,
        allowance: dict[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = Registry(ids)
        self.issuer = ChallengeIssuer(settings.pow_difficulty, key=token_key)
        # With --workers, the supervisor keeps the one set of spent tokens and the caps.
        self._shared = shared
        # The front door's shared state (pugfast.frontdoor.Entrance), once the relay listens.
        self.entrance: Any = None
        self.flusher = Flusher(loop.call_soon, loop.call_later, PRESENCE_DEFERRAL)
        # Every WebSocket connection until its TCP connection is gone, closing ones included.
        self.connections: set[Connection] = set()
        # What this relay may hold under --max-rooms and --max-connections: all of it, or, as
        # a worker, what the supervisor granted (``allowance``), and more when it asks.
        limits = allowance or {ROOMS: settings.max_rooms, CONNECTIONS: settings.max_connections}
        self.allowances = {
            ROOMS: Allowance(ROOMS, limits[ROOMS], self.registry.__len__),
            CONNECTIONS: Allowance(CONNECTIONS, limits[CONNECTIONS], self.connections.__len__),
        }
        # Per cap, the admissions waiting for the supervisor's answer to the one request for
        # more that is in flight (pugfast/allowance.py).
        self._short: dict[str, collections.deque[asyncio.Future[bool]]] = {
            ROOMS: collections.deque(), CONNECTIONS: collections.deque()
        }
        self._next_capacity_warning = {ROOMS: 0.0, CONNECTIONS: 0.0}
        self.clock = loop.time
        self._loop = loop
        # The join timeout, pings and the idle timeout, by deadline (pugfast/liveness.py).
        self.liveness = Liveness(settings.join_timeout, settings.ping_interval,
                                 settings.idle_timeout, loop.time())
        self._sweep_at = 0.0
        self._sweeper: asyncio.Handle | None = None
        # Aggregates for --metrics-listen: counts by reason, never by room or address.
        self.rooms_created = 0
        self.rooms_ended: Counter[str] = Counter()
        self.joins = 0
        self.joins_refused: Counter[str] = Counter()
        self.pow_failures: Counter[str] = Counter()
        self.capacity_refusals: Counter[str] = Counter()

    # -- rooms ---------------------------------------------------------------------------

    async def check_challenge(self, token: str, nonce: str) -> None:
        """Check a challenge answer in docs/protocol.md §4.1's order, across workers too: token
        authentic and unexpired, unspent (here or at another worker), then the proof.

        Raises ChallengeError (see ChallengeIssuer.check).
        """
        self.issuer.check_token(token, self.clock())
        if self._shared is not None and await self._shared.token_spent(token):
            raise ChallengeError(409, "challenge_used", "this challenge was already used")
        self.issuer.check_proof(token, nonce)

    async def claim_token(self, token: str) -> bool:
        """Spend a checked challenge token: False if it was used already, here or at another
        worker."""
        if self._shared is not None and not await self._shared.claim_token(token):
            return False
        self.issuer.spend(token, self.clock())
        return True

    async def reserve(self, kind: str) -> bool:
        """Hold one slot under the relay-wide cap ``kind`` (ROOMS or CONNECTIONS) for something
        about to be made; False when the relay is full (counted, and said to the operator).
        ``unreserve`` once it exists or failed.

        A worker whose own allowance is used up asks its supervisor for more, once for every
        admission waiting at that moment: the admissions share one request in flight, and
        take the slots it brings in the order they came."""
        allowance = self.allowances[kind]
        if allowance.available():
            allowance.reserved += 1
            return True
        admitted = False
        if self._shared is not None:
            waiting = self._short[kind]
            ticket = self._loop.create_future()
            waiting.append(ticket)
            if len(waiting) == 1:
                self._loop.create_task(self._replenish(kind))
            try:
                admitted = await ticket
            except asyncio.CancelledError:
                if ticket.done() and not ticket.cancelled() and ticket.result():
                    allowance.reserved -= 1  # granted, but its admission will not happen
                raise
        if not admitted:
            self._refused_at_capacity(kind)
        return admitted

    async def _replenish(self, kind: str) -> None:
        """Ask the supervisor for slots until every waiting admission has one, or none is
        left to grant."""
        assert self._shared is not None
        allowance = self.allowances[kind]
        waiting = self._short[kind]
        while waiting:
            try:
                granted = await self._shared.acquire(kind, len(waiting))
            except (asyncio.TimeoutError, OSError):
                granted = 0  # no supervisor to answer: refuse rather than wait on
            allowance.limit += granted
            while waiting and allowance.available():
                ticket = waiting.popleft()
                if not ticket.done():  # its client may have gone meanwhile
                    allowance.reserved += 1
                    ticket.set_result(True)
            if not granted:
                while waiting:
                    ticket = waiting.popleft()
                    if not ticket.done():
                        ticket.set_result(False)

    def _refused_at_capacity(self, kind: str) -> None:
        self.capacity_refusals[kind] += 1
        now = self.clock()
        if now >= self._next_capacity_warning[kind]:
            self._next_capacity_warning[kind] = now + CAPACITY_WARNING_INTERVAL
            s = self.settings
            flag, cap, what = (
                ("--max-rooms", s.max_rooms, "rooms") if kind == ROOMS
                else ("--max-connections", s.max_connections, "connections")
            )
            log.warning(
                "at capacity: %s (%d) is reached, so new %s are refused with 503; "
                "pugfast_capacity_refusals_total counts them (said at most once a minute)",
                flag, cap, what,
            )

    def unreserve(self, kind: str) -> None:
        self.allowances[kind].reserved -= 1

    def give_back(self, kind: str) -> int:
        """The supervisor ran out of slots of ``kind``: give up the ones not in use."""
        return self.allowances[kind].give_back()

    def create_room(self, ttl: int, capacity: int) -> tuple[Room, str]:
        """Make a room with its timer; return it and its secret (which is not kept)."""
        room, secret = self.registry.create(
            ttl=ttl,
            capacity=capacity,
            join_window=self.settings.join_window,
            group=Group(),
            now=self.clock(),
            wall_ms=int(time.time() * 1000),
        )
        self._arm(room)
        self.rooms_created += 1
        log.debug("room created (ttl %d s, capacity %d); %d rooms", ttl, capacity, len(self.registry))
        return room, secret

    def _arm(self, room: Room) -> None:
        # One timer per room: the join window until someone joins, then the TTL.
        at = room.expires_at if room.joined_once else min(room.join_deadline, room.expires_at)
        room.timer = self._loop.call_at(at, self._on_room_timer, room)

    def _on_room_timer(self, room: Room) -> None:
        room.timer = None
        if self.registry.get(room.id) is not room:
            return
        now = self.clock()
        if now >= room.expires_at:
            self.end_room(room, "expired")
        elif not room.joined_once and now >= room.join_deadline:
            self.end_room(room, None)
        else:  # the loop may wake a hair early
            self._arm(room)

    def end_room(self, room: Room, reason: str | None) -> None:
        """End a room at once: tell its members why (``expired``/``purged``), close them with
        4410, and drop every reference to it. ``reason`` is None when nobody is left to tell."""
        self.registry.remove(room)
        if room.timer is not None:
            room.timer.cancel()
            room.timer = None
        for member in room.members.values():
            conn = member.conn
            conn.session.room = None
            conn.session.member = None
            conn.member_id = 0
            if reason is not None:
                conn.send_frame(_ENDED_FRAMES[reason])
                conn.close(CLOSE_ROOM_ENDED, reason)
        room.members.clear()
        room.group.clear()
        why = reason or ("empty" if room.joined_once else "unused")
        self.rooms_ended[why] += 1
        log.debug("room ended (%s); %d rooms", why, len(self.registry))

    # -- connections ---------------------------------------------------------------------

    def new_connection(self, transport: Any, session: Session | None) -> Connection:
        """An engine connection on ``transport`` (None until the loop gives it one)."""
        s = self.settings
        return Connection(
            transport,
            session,
            self.flusher,
            max_message_bytes=s.max_message_bytes,
            max_buffered_bytes=s.max_buffered_bytes,
            rate=s.rate_limit,
            burst=s.rate_burst,
            clock=self.clock,
        )

    def begin_connection(self, conn: Connection, room_id: str) -> Session:
        """The front door answered ``conn``'s upgrade: it is a WebSocket for the room
        ``room_id`` from now on."""
        session = Session(self, room_id)
        conn.begin(session)
        self.connections.add(conn)
        self.liveness.add(conn)
        return session

    def open_connection(self, transport: Any, room_id: str) -> tuple[Connection, Session]:
        """Wrap a transport aiohttp upgraded in an engine connection for the room ``room_id``."""
        session = Session(self, room_id)
        conn = self.new_connection(transport, session)
        self.connections.add(conn)
        self.liveness.add(conn)
        return conn, session

    def handle_text(self, session: Session, conn: Connection, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            conn.close(CLOSE_BAD_MESSAGE, "invalid JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if session.member is None:
            if kind == "join":
                self._join(session, conn, message)
            else:
                conn.close(CLOSE_BAD_MESSAGE, "expected a join message")
        elif kind == "purge":
            self._purge(session, conn)
        else:
            conn.close(CLOSE_BAD_MESSAGE, "unexpected message")

    def _join(self, session: Session, conn: Connection, message: dict[str, Any]) -> None:
        secret = message.get("secret")
        if not isinstance(secret, str):
            self._refuse(conn, CLOSE_BAD_MESSAGE, "join needs a secret string")
            return
        room = self.registry.get(session.room_id)
        if room is None or self.clock() >= room.expires_at:
            self._refuse(conn, CLOSE_NO_SUCH_ROOM, "no such room")
            return
        if len(room.members) >= room.capacity:
            self._refuse(conn, CLOSE_ROOM_FULL, "room full")
            return
        # Digests of equal length, compared in constant time: neither a wrong value nor a
        # wrong length returns early.
        if not hmac.compare_digest(secret_digest(secret), room.secret_digest):
            self._refuse(conn, CLOSE_WRONG_SECRET, "wrong room secret")
            return
        self.joins += 1
        member = room.add_member(conn)
        # The room's own id from now on: the copy read from the request goes.
        session.room, session.member, session.room_id = room, member, room.id
        conn.member_id = member.id
        you = member.describe()
        conn.send_text(
            _WELCOME
            % (
                you,
                b"true" if room.creator_id == member.id else b"false",
                room.roster,
                room.expires_ms,
                room.capacity,
            )
        )
        room.group.broadcast_deferred(encode_frame(OP_TEXT, _JOINED % you))
        room.group.add(conn)

    def _refuse(self, conn: Connection, code: int, reason: str) -> None:
        self.joins_refused[_REFUSAL_LABELS[code]] += 1
        conn.close(code, reason)

    def _purge(self, session: Session, conn: Connection) -> None:
        room, member = session.room, session.member
        if room is None or member is None or room.creator_id != member.id:
            conn.send_text(_NOT_CREATOR)
            return
        self.end_room(room, "purged")

    def handle_closed(self, session: Session, conn: Connection) -> None:
        room, member = session.room, session.member
        session.room = session.member = None
        if room is not None and member is not None:
            room.remove_member(member)
            room.group.remove(conn)
            if room.members:
                room.group.broadcast(encode_frame(OP_TEXT, _LEFT % member.describe()))
            else:
                self.end_room(room, None)
        if conn in self.connections:
            # A client that never hangs up after the close is dropped after a while.
            session.linger = self._loop.call_later(CLOSE_LINGER, conn.transport.abort)

    # -- liveness ------------------------------------------------------------------------

    def start_liveness(self) -> None:
        """Sweep the liveness wheel at every tick from now on (``stop_liveness`` ends it)."""
        self._sweep_at = self.liveness.next_sweep(self.clock())
        self._sweeper = self._loop.call_at(self._sweep_at, self._sweep_liveness)

    def stop_liveness(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep_liveness(self) -> None:
        # A timer may fire a hair early: the tick it was set for has come all the same.
        now = max(self.clock(), self._sweep_at)
        if self.liveness.sweep(now):
            # More are due: the next slice in the next loop iteration, after its I/O.
            self._sweeper = self._loop.call_soon(self._sweep_liveness)
        else:
            self._sweep_at = self.liveness.next_sweep(now)
            self._sweeper = self._loop.call_at(self._sweep_at, self._sweep_liveness)

    async def close_all(self, timeout: float = 2.0) -> None:
        """Close every connection with 1001, give the clients ``timeout`` seconds to hang up,
        then drop the ones that have not."""
        connections = list(self.connections)
        for conn in connections:
            conn.close(CLOSE_GOING_AWAY, "server shutdown")
        for room in list(self.registry.rooms.values()):
            self.end_room(room, None)
        deadline = self.clock() + timeout
        while self.connections and self.clock() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.transport.abort()
        # An aborted transport reports its end on a later loop iteration; once every one has,
        # aiohttp's own shutdown finds no handler still running.
        while self.connections:
            await asyncio.sleep(0.01)
