"""What idle members cost a relay (docs/engine.md, "Liveness").

    python bench/idle_cost.py [--members 19800] [--settle 25] [--window 60] [--runs 3]
                              [serve flags...]

A relay on core 0 (``pugfast serve``, compiled engine unless PUGFAST_NO_EXTENSIONS is set),
``pugfast bench --idle`` on core 1 holding ``--members`` joined in rooms of 10 and answering
the relay's pings. Once every member has joined and ``--settle`` seconds have passed (so that
pings are going out at their steady rate: the default --ping-interval is 20 s), the relay's
CPU time is read from /proc over ``--window`` seconds, and at the end the event loop's lag
from its own metric (``pugfast_event_loop_lag_seconds``, p99 and max over the last minute).

Each run prints one line; the last line is the median. Extra flags go to ``pugfast serve``:
``--ping-interval 300 --idle-timeout 900`` shows what the members cost without their pings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from worst_case import free_port, pinned  # bench/, beside this script

# As bench/run.py runs the relay for its scenarios: no proof of work or rate limit, room for
# every member.
SERVE_FLAGS = ["--pow-difficulty", "0", "--rate-limit", "0", "--log-level", "warning",
               "--capacity-max", "1000", "--max-connections", "1000000", "--max-rooms", "1000000",
               "--join-timeout", "120", "--join-window", "600"]
JOIN_TIMEOUT = 300.0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """A process's user and system CPU time so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def loop_lag(metrics_port: int) -> dict[str, float]:
    """The relay's event loop lag, p99 and max, from its metrics (seconds)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    lag = {}
    for line in text.decode().splitlines():
        if line.startswith("pugfast_event_loop_lag_seconds{"):
            quantile = line.split('quantile="', 1)[1].split('"', 1)[0]
            lag["max" if quantile == "1" else f"p{float(quantile) * 100:g}"] = float(line.split()[-1])
    return lag


def one_run(members: int, settle: float, window: float, flags: list[str]) -> dict[str, float]:
    port, metrics_port = free_port(), free_port()
    relay = subprocess.Popen(
        [*pinned(0), sys.executable, "-m", "pugfast", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--metrics-listen", f"127.0.0.1:{metrics_port}", *SERVE_FLAGS, *flags],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    crowd = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if relay.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the relay did not start") from None
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as tmp:
            ready = Path(tmp) / "joined"
            crowd = subprocess.Popen(
                [*pinned(1), sys.executable, "-m", "pugfast", "bench", f"http://127.0.0.1:{port}",
                 "--idle", "--rooms", str(max(1, members // 10)), "--members", str(min(10, members)),
                 "--warmup", "0", "--duration", "86400", "--concurrency", "200",
                 "--ready-file", str(ready), "--quiet"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + JOIN_TIMEOUT
            while not ready.exists():
                if crowd.poll() is not None or time.monotonic() > deadline:
                    err = crowd.stderr.read().decode() if crowd.stderr else ""
                    raise SystemExit(f"the idle members did not all join: {err[-2000:]}")
                time.sleep(0.2)
            joined = int(ready.read_text().split()[0])
        time.sleep(settle)
        (user0, system0), at0 = cpu_seconds(relay.pid), time.monotonic()
        time.sleep(window)
        (user1, system1), at1 = cpu_seconds(relay.pid), time.monotonic()
        per = 1e6 / joined / (at1 - at0)  # seconds of CPU to microseconds per member-second
        lag = loop_lag(metrics_port)
        return {"joined": joined, "user": (user1 - user0) * per, "system": (system1 - system0) * per,
                "lag_p99_ms": lag.get("p99", float("nan")) * 1e3,
                "lag_max_ms": lag.get("max", float("nan")) * 1e3}
    finally:
        if crowd is not None:
            crowd.kill()
            crowd.wait()
        relay.terminate()
        relay.wait()


def show(result: dict[str, float], label: str) -> str:
    total = result["user"] + result["system"]
    return (f"{label}: {result['joined']:,.0f} idle members: relay CPU {total:.3f} us per member "
            f"per second (user {result['user']:.3f}, system {result['system']:.3f}); event loop "
            f"lag p99 {result['lag_p99_ms']:.1f} ms, max {result['lag_max_ms']:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=19_800)
    parser.add_argument("--settle", type=float, default=25.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    args, flags = parser.parse_known_args()
    results = []
    for run in range(args.runs):
        results.append(one_run(args.members, args.settle, args.window, flags))
        print(show(results[-1], f"run {run + 1}"), flush=True)
    median = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(show(median, f"median of {args.runs}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
