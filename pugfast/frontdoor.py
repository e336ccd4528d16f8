"""Where every connection starts: a room's WebSocket upgrade is answered here, and
everything else is handed to aiohttp untouched, bytes and all; and the guards that keep slow,
idle and flooding clients from holding the relay's connections (docs/protocol.md §2.6).

**The upgrade.** A chat relay's connections are WebSockets that sit idle for hours, and they
arrive in storms (a restart, a network blip). So the upgrade does not go through aiohttp's
request machinery (a task, a request and a response object, middlewares and signals) and
nothing of aiohttp stays alive beside the connection. Every accepted connection's protocol is
the engine's ``Connection`` (``Entrance`` makes it), which passes its events to a
``FrontDoor`` until the upgrade. The front door reads the request head, and when it is
``GET /r/{room}/ws HTTP/1.1`` with a valid handshake, an allowed Origin and room under
``--max-connections``, it writes a prebuilt 101 and gives the connection its session
(``Connection.begin``); bytes that came behind the head are fed to it at once. From then on
the event loop calls the engine directly, and the transport's protocol never changed.

Any other request, and any upgrade the front door would refuse, goes to aiohttp as if aiohttp
had accepted the connection, once its head is whole: the front door becomes the transport's
protocol, and a new ``RequestHandler`` is given the transport and the bytes read so far (until
then a slow client holds a front door, not an HTTP handler and its task). aiohttp then parses
and answers it exactly as before, refusals of upgrades included (pugfast.app.websocket), so
every error response comes from one place. The front door passes every later event on to that
handler, so that it sees the connection end. See docs/engine.md, "The front door".

**The guards** (docs/operations.md, "Abuse"), for connections that are not WebSockets:

- *The request deadline.* A connection's first request must arrive whole within
  ``--request-timeout`` of its start: the front door's timer answers 408 and closes it
  otherwise. A body has the same deadline (``request_arrived`` gives it to the handlers that
  read one). The deadlines are kept in order of arrival, all the same length, so a sweep a few
  times a second finds the expired ones at the front without looking at the others, and a
  connection costs no timer of its own. Later requests on a keep-alive connection are
  aiohttp's: its keep-alive timer (``--keepalive-timeout``) closes a connection whose next
  request has not arrived whole.
- *The pending cap.* At most ``--max-pending-connections`` of them at once; past it the
  one that has waited longest for its first request head is closed to make room. A
  legitimate client sends its request at once and is gone or upgraded within moments, so it
  is almost never the oldest; a flood must keep winning to hold its places, and each place
  lasts at most a deadline. Only a connection that has had its chance to speak is closed
  (``Settings.eviction_grace``, a second at most): a burst of clients arriving at once is let
  in over the cap, and the sweep brings the count back under it once their grace has
  passed. A connection whose request is being answered is never closed for the cap (a
  burst of upgrades waiting for a worker's share of --max-connections, say), nor one kept
  alive between requests, which its keep-alive timer closes.
- *The per-address cap* (``--max-connections-per-address``, off by default; pugfast/addresses.py):
  a connection past it is closed at once. WebSockets count too, until they end. With
  ``--workers`` the supervisor counts for the whole relay.

The counts of what the guards did (``deadline_closes``, ``evictions``, ``address_refusals``)
are totals, for ``--metrics-listen``; no guard keeps or logs an address.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .addresses import AddressCounts
from .allowance import CONNECTIONS
from .engine import Connection, parse_upgrade_head
from .gateway import Gateway
from .handshake import origin_allowed
from .headers import TIMED_OUT, error_response, switching_protocols

# The only request the front door answers itself starts so; any other goes to aiohttp as soon
# as its head is whole (a head whose lines end in a bare LF, which aiohttp may accept, too).
_PREFIX = b"GET /r/"
_END_OF_HEAD = b"\r\n\r\n"
_NOT_IN_A_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A head longer than this is no upgrade a client of ours sends: aiohttp answers it (431).
MAX_HEAD = 8192


def _nothing() -> None:
    pass


class Entrance:
    """What every front door of one relay shares; calling it makes one (a protocol factory)."""

    def __init__(self, gateway: Gateway, http: web.Server, *, tls: bool) -> None:
        s = gateway.settings
        self.gateway = gateway
        self.http = http
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.request_timeout = s.request_timeout
        self.max_pending = s.max_pending_connections
        self.eviction_grace = s.eviction_grace
        # Connections that are not WebSockets, oldest first (dicts keep insertion order), with
        # the loop time each was admitted at.
        self.pending: dict[FrontDoor, float] = {}
        # Those whose first request has not arrived whole, with their deadlines: oldest first,
        # which is also soonest deadline first.
        self.awaiting: dict[FrontDoor, float] = {}
        self.clock: Callable[[], float] = gateway.clock
        self._sweeper: asyncio.TimerHandle | None = None
        self.addresses = AddressCounts(s.max_connections_per_address)
        # Called when a connection counted under an address key ends (a front door's or a
        # WebSocket Session's end). As a worker, the supervisor counts addresses for the whole
        # relay: a connection's key comes with it, and this reports its end back.
        self.release_address: Callable[[bytes], None] = self.addresses.release
        self.deadline_closes = 0
        self.evictions = 0
        # Called when a connection ends, for an acceptor that waits for free descriptors.
        self.descriptor_freed: Callable[[], None] = _nothing
        gateway.entrance = self

    def __call__(self, address: bytes | None = None, head: bytes = b"") -> Connection:
        """A new connection's protocol: an engine connection whose front door reads the
        request. A supervisor that accepted the connection gives its ``address`` key, when it
        counts addresses, and the ``head`` of the request it read to route it."""
        conn = self.gateway.new_connection(None, None)
        conn.door = door = FrontDoor(self, address)
        if head:
            door.read_already = (conn, head)
        return conn

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start sweeping for requests past their deadline."""
        self._sweeper = loop.call_later(self._tick(), self._sweep, loop)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _tick(self) -> float:
        # A deadline is noticed at most this late.
        return min(0.25, self.request_timeout / 8)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self.clock()
        awaiting = self.awaiting
        while awaiting:
            door, deadline = next(iter(awaiting.items()))
            if deadline > now:
                break
            del awaiting[door]
            door.timed_out()
        self._make_room(now)
        self._sweeper = loop.call_later(self._tick(), self._sweep, loop)

    def _make_room(self, now: float) -> None:
        """Past the pending cap, close the connections that have waited longest for their
        first request head, once they have had their chance to send it. A connection whose
        request is being answered is never closed for the cap, nor one kept alive between
        requests (aiohttp's keep-alive timer closes that)."""
        awaiting = self.awaiting
        spoken_by = now - self.eviction_grace + self.request_timeout  # as a deadline
        while len(self.pending) > self.max_pending and awaiting:
            door, deadline = next(iter(awaiting.items()))
            if deadline > spoken_by:
                return  # they all just arrived: the sweep looks again
            self.evictions += 1
            door.evict()

    @property
    def address_refusals(self) -> int:
        return self.addresses.refusals

    def admit(self, door: FrontDoor, transport: Any) -> bool:
        """Take a new connection in, making room past the pending cap; False to refuse it."""
        if self.addresses.cap and door.address is None:
            # The address is only ever hashed under the start-up key (pugfast/addresses.py):
            # neither it nor its text is kept, logged or counted anywhere else.
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and peer:
                door.address = self.addresses.admit(str(peer[0]))
                if door.address is None:
                    return False
        now = self.clock()
        self.pending[door] = now
        self.awaiting[door] = now + self.request_timeout
        self._make_room(now)
        return True

    def close_pending(self) -> None:
        """Shutting down: close every connection that is not a WebSocket and that aiohttp does
        not serve (aiohttp's own shutdown closes those it does)."""
        for door in list(self.pending):
            if door._handler is None:
                door.evict()


class FrontDoor(asyncio.Protocol):
    """One connection until it is a WebSocket or gone. See the module docstring.

    The transport's protocol is the engine's ``Connection`` from the accept on; until the
    upgrade it passes every event here (``connection_made``, ``head_received`` with itself,
    ``eof_received``, ``connection_lost``). Handed to aiohttp, the front door becomes the
    transport's protocol itself and passes the events on to aiohttp's handler.
    """

    __slots__ = ("_entrance", "_handler", "_head", "_transport", "address", "read_already")

    def __init__(self, entrance: Entrance, address: bytes | None = None) -> None:
        self._entrance = entrance
        self._head = b""
        self._transport: Any = None
        # aiohttp's handler, once the connection is aiohttp's to serve.
        self._handler: Any = None
        # The keyed hash of the client's address, when the per-address cap counts it (as a
        # worker's, counted by the supervisor already).
        self.address = address
        # The engine connection and the bytes a supervisor read from it before handing it
        # over: they are the connection's first bytes, taken in as soon as it is made.
        self.read_already: tuple[Connection, bytes] | None = None

    # -- the connection's events -------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        read_already, self.read_already = self.read_already, None
        if not self._entrance.admit(self, transport):
            transport.abort()
        elif read_already is not None:
            # Before the loop reads the socket: these bytes came first.
            conn, head = read_already
            conn.data_received(head)

    def head_received(self, conn: Connection, data: bytes) -> None:
        """Bytes of the request, before it is known what the connection is."""
        if self._transport is None:
            return  # refused or evicted: the transport is closing
        head = self._head + data if self._head else data
        end = head.find(_END_OF_HEAD)
        if end < 0 and b"\n\n" not in head:
            # Every request waits here until its head is whole: a client that sends it slowly
            # holds under 2 KiB of the relay's until its deadline, not an HTTP handler. What
            # cannot become a head (too long, or bytes no head has, such as a TLS hello) is
            # aiohttp's to refuse at once.
            if len(head) > MAX_HEAD or _NOT_IN_A_HEAD.search(head):
                self._to_http(head)
            else:
                self._head = head
            return
        if end < 0 or not head.startswith(_PREFIX) or not self._upgrade(conn, head, end):
            self._to_http(head)

    def data_received(self, data: bytes) -> None:
        # Only once the front door is the protocol: the connection is aiohttp's.
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self._handler is not None:
            return self._handler.eof_received()
        return None  # the transport closes; nothing was asked, so nothing is answered

    def connection_lost(self, exc: BaseException | None) -> None:
        self._leave()
        entrance = self._entrance
        if self.address is not None:
            entrance.release_address(self.address)
            self.address = None
        entrance.descriptor_freed()
        self._transport = None
        if self._handler is not None:
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    # -- what aiohttp's side tells the front door ------------------------------------------

    def request_arrived(self) -> float:
        """A request head arrived whole (aiohttp's middleware says so); return the loop time by
        which its body must be in. For the first request that is the connection's deadline;
        for a later one, a request deadline from now (aiohttp's keep-alive timer gave its head
        at most ``--keepalive-timeout`` from the previous response)."""
        entrance = self._entrance
        deadline = entrance.awaiting.pop(self, None)
        return deadline if deadline is not None else entrance.clock() + entrance.request_timeout

    def became_websocket(self) -> None:
        """aiohttp answered an upgrade on this connection: it is no longer pending."""
        self._leave()

    # -- the guards --------------------------------------------------------------------------

    def evict(self) -> None:
        """Close this connection to make room for a newer one."""
        self._leave()
        if self._transport is not None:
            self._transport.abort()

    def _leave(self) -> None:
        entrance = self._entrance
        entrance.pending.pop(self, None)
        entrance.awaiting.pop(self, None)

    def timed_out(self) -> None:
        """The first request did not arrive whole in time (the entrance's sweep found it)."""
        transport = self._transport
        if transport is None:
            return
        entrance = self._entrance
        entrance.deadline_closes += 1
        self._leave()
        # The deadline runs only until the first request arrives whole, so nothing has been
        # answered on this connection yet: say why it ends.
        transport.write(error_response(408, *TIMED_OUT, entrance.tls))
        transport.close()

    # -- the two ways on ---------------------------------------------------------------------

    def _upgrade(self, conn: Connection, head: bytes, end: int) -> bool:
        """Answer the upgrade if nothing in it needs an error response; False otherwise."""
        request = parse_upgrade_head(head[:end])
        if request is None:
            return False
        room_id, headers, accept = request
        if accept is None:
            return False  # not a valid upgrade: aiohttp's handler answers why
        entrance = self._entrance
        gateway = entrance.gateway
        host = headers["host"]
        if not origin_allowed(headers.get("origin"), gateway.settings.allowed_origin, entrance.scheme, host):
            return False
        # A worker whose allowance is used up asks its supervisor for more; that takes a round
        # trip, so aiohttp's handler does it (and answers 503 if the relay is full).
        if not gateway.allowances[CONNECTIONS].available():
            return False
        transport = self._transport
        self._leave()
        transport.write(switching_protocols(accept, host, entrance.tls))
        session = gateway.begin_connection(conn, room_id)
        # The address stays counted until the WebSocket ends.
        session.address, self.address = self.address, None
        self._transport = None
        rest = head[end + len(_END_OF_HEAD):]
        if rest:
            conn.data_received(rest)
        return True

    def _to_http(self, data: bytes) -> None:
        """Hand the connection to aiohttp as if it had accepted it, with what was read."""
        transport = self._transport
        # The front door takes the engine connection's place as the protocol.
        transport.set_protocol(self)
        handler = self._handler = self._entrance.http()
        handler.connection_made(transport)
        # aiohttp starts its keep-alive timer when a connection is made; until the first
        # request has arrived, the front door's request deadline is the one that counts.
        handler.keep_alive(True)
        handler.data_received(data)
