"""The pugfast protocol written the way a user would with plain aiohttp: the bench baseline.

One file, aiohttp's ``WebSocketResponse`` and nothing else: proof-of-work challenges (HMAC
tokens), room creation, the join with its secret digest check, welcome/join/leave notices,
binary relay with the sender's id in front, purge, TTL and the join window, close codes. Fan-out
is the obvious loop, one ``await ws.send_bytes`` per recipient. It speaks docs/protocol.md closely
enough for ``pugfast bench`` to drive it exactly as it drives pugfast; it leaves out what a
benchmark never touches (static pages, security headers, rate limits, Origin checks).

    python bench/baselines/aiohttp_plain.py --host 127.0.0.1 --port 3999 --pow-difficulty 0
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time

from aiohttp import WSMsgType, web


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Room:
    def __init__(self, room_id: str, digest: bytes, ttl: int, capacity: int) -> None:
        self.id = room_id
        self.digest = digest
        self.ttl = ttl
        self.capacity = capacity
        self.expires_ms = int(time.time() * 1000) + ttl * 1000
        self.members: dict[int, tuple[web.WebSocketResponse, str]] = {}
        self.next_id = 1
        self.creator: int | None = None
        self.joined_once = False
        self.timer: asyncio.TimerHandle | None = None


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.key = secrets.token_bytes(32)
        self.spent: dict[str, float] = {}
        self.rooms: dict[str, Room] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    # -- HTTP API ------------------------------------------------------------------------

    def mac(self, body: str) -> str:
        return b64u(hmac.new(self.key, body.encode(), hashlib.sha256).digest()[:18])

    async def challenge(self, request: web.Request) -> web.Response:
        body = f"{int((time.time() + 120) * 1000)}.{b64u(secrets.token_bytes(12))}"
        return web.json_response({"token": f"{body}.{self.mac(body)}",
                                  "difficulty": self.args.pow_difficulty,
                                  "expires": int((time.time() + 120) * 1000)})

    async def create(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            token, nonce = str(data["token"]), str(data["nonce"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad_request", "message": "bad body"}, status=400)
        body, _, mac = token.rpartition(".")
        if not hmac.compare_digest(mac, self.mac(body)):
            return web.json_response({"error": "bad_proof", "message": "bad token"}, status=403)
        if time.time() * 1000 > int(body.partition(".")[0]):
            return web.json_response({"error": "challenge_expired", "message": "expired"},
                                     status=410)
        if token in self.spent:
            return web.json_response({"error": "challenge_used", "message": "used"}, status=409)
        digest = hashlib.sha256(f"{token}:{nonce}".encode()).digest()
        if int.from_bytes(digest, "big") >> (256 - self.args.pow_difficulty) if \
                self.args.pow_difficulty else 0:
            return web.json_response({"error": "bad_proof", "message": "bad nonce"}, status=403)
        self.spent[token] = time.time() + 120
        ttl = min(max(int(data.get("ttl") or 3600), 60), 86400)
        capacity = min(max(int(data.get("capacity") or 8), 2), self.args.capacity_max)
        room_id, secret = b64u(secrets.token_bytes(16)), b64u(secrets.token_bytes(16))
        room = Room(room_id, hashlib.sha256(secret.encode()).digest(), ttl, capacity)
        self.rooms[room_id] = room
        loop = asyncio.get_running_loop()
        room.timer = loop.call_later(min(ttl, 300), self.on_timer, room)
        return web.json_response({"room": room_id, "secret": secret, "expires": room.expires_ms,
                                  "ttl": ttl, "capacity": capacity}, status=201)

    def on_timer(self, room: Room) -> None:
        if not room.joined_once:
            self.rooms.pop(room.id, None)  # nobody came within the join window
        else:
            task = asyncio.ensure_future(self.end_room(room, "expired"))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def end_room(self, room: Room, reason: str) -> None:
        self.rooms.pop(room.id, None)
        if room.timer is not None:
            room.timer.cancel()
        members = list(room.members.values())
        room.members.clear()
        for ws, _ in members:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_str(json.dumps({"type": reason}))
                await ws.close(code=4410, message=reason.encode())

    # -- WebSocket -----------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.args.max_message_bytes, heartbeat=20)
        await ws.prepare(request)
        room: Room | None = None
        member_id = 0
        try:
            msg = await ws.receive(timeout=10)
        except asyncio.TimeoutError:
            await ws.close(code=4408, message=b"no join in time")
            return ws
        if msg.type != WSMsgType.TEXT:
            await ws.close(code=4400, message=b"expected a join message")
            return ws
        try:
            join = json.loads(msg.data)
            secret = join["secret"] if join.get("type") == "join" else None
        except (ValueError, KeyError, AttributeError):
            secret = None
        if not isinstance(secret, str):
            await ws.close(code=4400, message=b"expected a join message")
            return ws
        room = self.rooms.get(request.match_info["room"])
        if room is None:
            await ws.close(code=4404, message=b"no such room")
            return ws
        if len(room.members) >= room.capacity:
            await ws.close(code=4409, message=b"room full")
            return ws
        if not hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), room.digest):
            await ws.close(code=4403, message=b"wrong room secret")
            return ws
        member_id = room.next_id
        room.next_id += 1
        name = f"Member {member_id}"
        if not room.joined_once:
            room.joined_once = True
            room.creator = member_id
            if room.timer is not None:
                room.timer.cancel()
            room.timer = asyncio.get_running_loop().call_later(room.ttl, self.on_timer, room)
        room.members[member_id] = (ws, name)
        me = {"id": member_id, "name": name}
        await ws.send_str(json.dumps({
            "type": "welcome", "you": me, "creator": room.creator == member_id,
            "members": [{"id": i, "name": n} for i, (_, n) in room.members.items()],
            "expires": room.expires_ms, "capacity": room.capacity,
        }))
        notice = json.dumps({"type": "join", "member": me})
        for other, (peer, _) in list(room.members.items()):
            if other != member_id:
                with contextlib.suppress(ConnectionResetError):
                    await peer.send_str(notice)
        prefix = member_id.to_bytes(4, "big")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    if not msg.data:
                        continue
                    data = prefix + msg.data
                    for other, (peer, _) in list(room.members.items()):
                        if other != member_id:
                            # A peer that is leaving is cleaned up by its own handler.
                            with contextlib.suppress(ConnectionResetError):
                                await peer.send_bytes(data)
                elif msg.type == WSMsgType.TEXT:
                    try:
                        kind = json.loads(msg.data).get("type")
                    except (ValueError, AttributeError):
                        kind = None
                    if kind != "purge":
                        await ws.close(code=4400, message=b"unexpected message")
                    elif room.creator != member_id:
                        await ws.send_str(json.dumps({"type": "error", "code": "not_creator"}))
                    else:
                        await self.end_room(room, "purged")
                else:
                    break
        finally:
            if room.members.pop(member_id, None) is not None:
                if room.creator == member_id:
                    room.creator = None
                if room.members:
                    notice = json.dumps({"type": "leave", "member": me})
                    for peer, _ in list(room.members.values()):
                        with contextlib.suppress(ConnectionResetError):
                            await peer.send_str(notice)
                else:
                    self.rooms.pop(room.id, None)
                    if room.timer is not None:
                        room.timer.cancel()
        return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--pow-difficulty", type=int, default=18)
    parser.add_argument("--capacity-max", type=int, default=64)
    parser.add_argument("--max-message-bytes", type=int, default=65536)
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    relay = Relay(args)
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/challenge", relay.challenge)
    app.router.add_post("/api/rooms", relay.create)
    app.router.add_get("/r/{room:[A-Za-z0-9_-]{22}}/ws", relay.websocket)
    if args.event_loop == "uvloop":
        import uvloop

        uvloop.install()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None,
                backlog=4096)


if __name__ == "__main__":
    main()
