"""What forward secrecy (protocol version 2) costs a member: the extra time from a join to
the first readable message, in Python and in Chromium, for rooms of 2, 10 and 64; and the
frames and bytes a join, a leave and a message add (docs/client.md, "What it costs").

    python bench/forward_secrecy_cost.py [--runs 5]

Python: a real relay on loopback (``pugfast serve`` in a child process), N-1 library members
in the room, then a newcomer joins; the time is from its welcome (``Room.join`` returning:
version 1 could read from there) to the moment it holds every present member's chain (it can
read whatever they send next). Chromium: the same key exchange between N key rings inside one
page (static/js/senderkeys.js, Web Crypto), without the network: from the newcomer's
announcement to its holding every chain; add the loopback round trip measured in Python for
the whole. Medians of ``--runs`` runs, taken in one run of this script.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pugfast.client import Room, create_room  # noqa: E402
from pugfast.client.senderkeys import ANNOUNCE_BYTES, ENTRY_BYTES, MESSAGE_OVERHEAD  # noqa: E402

SIZES = (2, 10, 64)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def python_join(base: str, size: int) -> float:
    link = await create_room(base, capacity=size)
    rooms = [await Room.join(link) for _ in range(size - 1)]
    for room in rooms:
        while room._ring is not None and room._ring.awaiting():
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)
    newcomer = await Room.join(link)
    started = time.perf_counter()
    ring = newcomer._ring
    assert ring is not None
    while any(ring._peers[m].chain is None for m in ring.present()):
        await asyncio.sleep(0.0005)
    took = time.perf_counter() - started
    for room in [newcomer, *rooms]:
        await room.leave()
    return took


CHROMIUM_JOIN = """async size => {
    const sk = await import('/static/js/senderkeys.js');
    const room = 'AAAAAAAAAAAAAAAAAAAAAA';
    const announce = await sk.announceCryptoKey(crypto.getRandomValues(new Uint8Array(32)), room);
    const rings = [];
    for (let id = 1; id < size; id++) {
        const ring = new sk.KeyRing(room);
        await ring.init(announce);
        rings.push(ring);
    }
    // The present members have exchanged keys already; only the newcomer's join is timed.
    const deliver = async (from, frames, to) => { for (const f of frames) await to.onFrame(from.me, f, 0); };
    for (const [i, ring] of rings.entries()) {
        await ring.start(i + 1, rings.map((_, j) => j + 1).filter(j => j !== i + 1));
    }
    for (let round = 0; round < 2; round++) {
        for (const ring of rings) {
            await ring.flush();
            const frames = ring.outbox.splice(0);
            for (const other of rings) if (other !== ring) await deliver(ring, frames, other);
        }
    }
    const newcomer = new sk.KeyRing(room);
    await newcomer.init(announce);
    for (const ring of rings) ring.onJoin(size);
    const started = performance.now();
    await newcomer.start(size, rings.map(r => r.me));
    const hello = newcomer.outbox.splice(0);
    const answers = [];
    for (const ring of rings) {
        await deliver(newcomer, hello, ring);
        await ring.flush();
        answers.push([ring, ring.outbox.splice(0)]);
    }
    for (const [ring, frames] of answers) await deliver(ring, frames, newcomer);
    await newcomer.flush();
    return performance.now() - started;
}"""


def chromium_join(base: str, sizes: tuple[int, ...], runs: int) -> dict[int, list[float]]:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"]
    results: dict[int, list[float]] = {size: [] for size in sizes}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             args=args)
        page = browser.new_page()
        page.goto(base + "/")
        for _ in range(runs):
            for size in sizes:
                results[size].append(float(page.evaluate(CHROMIUM_JOIN, size)))
        browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    port = free_port()
    relay = subprocess.Popen([sys.executable, "-m", "pugfast", "serve", "--host", "127.0.0.1", "--port",
                              str(port), "--pow-difficulty", "0", "--capacity-max", "64"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        time.sleep(2)
        python: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(options.runs):
            for size in SIZES:
                python[size].append(asyncio.run(python_join(base, size)) * 1000)
        chromium = chromium_join(base, SIZES, options.runs)
    finally:
        relay.terminate()
        relay.wait()
    print("extra time from join to first readable message, median ms "
          f"({options.runs} runs each, same run of this script):")
    print("| members | Python (relay on loopback) | Chromium (key exchange in the page) |")
    print("|---|---|---|")
    for size in SIZES:
        print(f"| {size} | {statistics.median(python[size]):.1f} | {statistics.median(chromium[size]):.1f} |")
    print()
    print(f"bytes per message: +{MESSAGE_OVERHEAD} (version 1: +29)")
    for size in SIZES:
        keys = 2 + ANNOUNCE_BYTES + 2 + ENTRY_BYTES * (size - 1)
        answer = 2 + ANNOUNCE_BYTES + 2 + ENTRY_BYTES
        print(f"room of {size}: a join: the newcomer sends 2-3 frames (the notice for older clients, its "
              f"announcement, one keys frame), each other member 1 keys frame ({answer} bytes); a leave: "
              f"each remaining member 1 keys frame of up to {keys:,} bytes")


if __name__ == "__main__":
    main()
