"""What the relay leaves for the cyclic garbage collector (pugfast/collector.py).

A relay process freezes what survives a full collection, so an object frozen live must not
later end in a reference cycle, or it would be kept forever. These tests run members through
a relay with the collector off and count what is left once they are gone: nothing of theirs
may be waiting for a collection.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import sys

from support import running_relay

from pugfast.collector import FreezeSurvivors

# The objects of one member's connection, the relay's and its event loop's.
PER_CONNECTION = ("Connection", "Session", "Member", "FrontDoor", "RequestHandler", "TCPTransport",
                  "_SelectorSocketTransport")

# Members and page loads from another process, so that every object counted is the relay's.
CLIENT = """
import asyncio, json, sys, aiohttp, websockets
async def main(port):
    base = f"http://127.0.0.1:{port}"
    for _ in range(3):
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/api/challenge") as answer:
                token = (await answer.json())["token"]
            body = {"token": token, "nonce": "0", "capacity": 20}
            async with http.post(base + "/api/rooms", json=body) as answer:
                room = await answer.json()
            async with http.get(base + "/r/" + room["room"]) as answer:
                await answer.read()
        members = []
        for _ in range(20):
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/r/{room['room']}/ws")
            await ws.send(json.dumps({"type": "join", "secret": room["secret"]}))
            while json.loads(await ws.recv())["type"] != "welcome":
                pass
            members.append(ws)
        await members[1].send(b"ciphertext")
        never = await websockets.connect(f"ws://127.0.0.1:{port}/r/{room['room']}/ws")
        await never.close()
        for ws in members[10:]:
            await ws.close()
        await members[0].send(json.dumps({"type": "purge"}))
        for ws in members[:10]:
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                pass
asyncio.run(main(int(sys.argv[1])))
"""


def counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__name__ for o in gc.get_objects()
                               if type(o).__name__ in PER_CONNECTION)


async def test_on_uvloop_connections_that_ended_leave_nothing_for_the_collector() -> None:
    loop = asyncio.get_running_loop()
    if not FreezeSurvivors.suits(loop):
        # The standard library's transports end in reference cycles: a relay on this loop
        # freezes nothing, and what is checked below would not hold.
        assert type(loop).__module__.startswith("asyncio")
        return
    gc.collect()
    gc.disable()
    try:
        async with running_relay() as r:
            baseline = counts()
            client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, str(r.port))
            assert await client.wait() == 0
            for _ in range(250):
                if not r.gateway.connections and not r.gateway.entrance.pending:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            left = counts() - baseline
            assert not left, left
            assert gc.collect() == 0  # and nothing else of theirs was garbage either
    finally:
        gc.enable()


async def test_survivors_of_a_full_collection_are_frozen_only_when_no_task_runs() -> None:
    loop = asyncio.get_running_loop()
    policy = FreezeSurvivors(loop)  # the tasks running now are this test's own
    policy.start()
    frozen = gc.get_freeze_count()
    try:
        busy = asyncio.ensure_future(asyncio.sleep(10))
        gc.collect(1)
        assert policy.freezes == 0  # not a full collection
        gc.collect()
        assert policy.freezes == 0  # a task other than the main one runs
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
        gc.collect()
        assert policy.freezes == 1 and gc.get_freeze_count() > frozen
    finally:
        policy.stop()
        gc.unfreeze()
    gc.collect()
    assert policy.freezes == 1  # stopped: no more


async def test_a_growing_heap_is_collected_in_steps_that_walk_only_what_is_new() -> None:
    """Objects that pile up (members joining) are collected in steps: after each
    middle-generation collection the policy asks for a full one, which walks only what came
    since the last freeze, never the whole heap."""
    loop = asyncio.get_running_loop()
    gc.collect()
    gc.freeze()  # what the test process holds already, as the relay freezes its start-up
    walked: list[int] = []  # the objects each full collection walks

    def measure(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            walked.append(sum(len(gc.get_objects(generation)) for generation in range(3)))

    policy = FreezeSurvivors(loop)
    gc.callbacks.append(measure)
    policy.start()
    held: list[list[int]] = []
    try:
        for _ in range(100):
            held.extend([] for _ in range(1_000))  # 100,000 tracked objects, all kept
            await asyncio.sleep(0)  # a loop iteration: a step asked for runs here
        assert policy.steps >= 3, (policy.steps, walked)
        assert policy.freezes >= policy.steps
        # A middle-generation collection moves at most some 7,700 survivors into the old one
        # (CPython 3.14's, some 24,000); one full collection would walk all 100,000.
        assert walked and max(walked) <= 30_000, walked
    finally:
        policy.stop()
        gc.callbacks.remove(measure)
        gc.unfreeze()
    steps = policy.steps
    held.extend([] for _ in range(30_000))
    await asyncio.sleep(0)
    assert policy.steps == steps  # stopped: no more
