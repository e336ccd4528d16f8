"""How long the room page takes to compute the key fingerprint, in headless Chromium.

    python bench/fingerprint_time.py [--runs N] [--warmup N] [--chromium PATH] [--json]

The fingerprint (docs/client.md, "Key fingerprint") is one PBKDF2-HMAC-SHA-256 derivation of
65,536 iterations, made once when a room opens; its budget is about 100 ms on a mid-range
phone. This serves static/ from a throwaway local HTTP server (127.0.0.1 is a secure context,
so Web Crypto is there), imports the page's own crypto.js, and times `fingerprint()` with
performance.now() for a fresh random key and room id each run, after a few warm-up runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parents[1] / "static"

TIME_IN_PAGE = """async ([runs, warmup]) => {
    const { fingerprint } = await import('/js/crypto.js');
    const { b64uEncode } = await import('/js/encoding.js');
    const random = n => crypto.getRandomValues(new Uint8Array(n));
    const times = [];
    for (let i = 0; i < warmup + runs; i++) {
        const key = random(32);
        const room = b64uEncode(random(16));
        const start = performance.now();
        const words = await fingerprint(key, room);
        const elapsed = performance.now() - start;
        if (words.length !== 9) throw new Error(`expected 9 words, got ${words.length}`);
        if (i >= warmup) times.push(elapsed);
    }
    return times;
}"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_static() -> Iterator[str]:
    """static/ over HTTP on a free loopback port, for as long as the block runs."""
    handler = functools.partial(QuietHandler, directory=str(STATIC))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def cpu_model() -> str:
    """The processor's name where Linux tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def measure(runs: int, warmup: int, chromium: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with serve_static() as origin, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(origin + "/")
            times: list[float] = page.evaluate(TIME_IN_PAGE, [runs, warmup])
            version = browser.version
        finally:
            browser.close()
    quartiles = statistics.quantiles(times, n=4)
    return {
        "runs": runs,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "q1_ms": quartiles[0],
        "q3_ms": quartiles[2],
        "chromium": version,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="timed runs (default 21)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument(
        "--chromium",
        default=shutil.which("chromium") or "/usr/bin/chromium",
        help="the Chromium to drive (default: chromium on PATH, else /usr/bin/chromium)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    result = measure(args.runs, args.warmup, args.chromium)
    if args.json:
        print(json.dumps(result))
        return
    print(f"fingerprint() in Chromium {result['chromium']} on {result['machine']}")
    print(
        f"median {result['median_ms']:.1f} ms over {result['runs']} runs; "
        f"quartiles {result['q1_ms']:.1f}-{result['q3_ms']:.1f} ms; "
        f"min {result['min_ms']:.1f} ms, max {result['max_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
