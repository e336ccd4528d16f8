"""The benchmark scenarios bench/run.py runs against each server kind.

Each one is a ``pugfast bench`` command line (less the URL and the flags the runner adds),
with what it is for. Room counts are chosen so that one generator core keeps enough rounds in
flight to queue frames at the relay without the rounds falling into one convoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    args: list[str]
    # The open-loop rate, as a fraction of another scenario's sustained message rate for the
    # same server kind in the same run (so it must come after that one).
    rate_of: tuple[str, float] | None = None
    # Server flags beyond the runner's defaults.
    server_args: list[str] = field(default_factory=list)
    # Lockstep throughput scenarios are compared with the baseline in the closing checks;
    # "shared" and "idle-tail" run only when named.
    kind: str = "lockstep"


LOCKSTEP = ["--burst", "3", "--payload", "256", "--warmup", "2", "--duration", "6"]

SCENARIOS: list[Scenario] = [
    Scenario("room2", "rooms of 2, 256-byte payloads, lockstep bursts of 3 (saturation)",
             ["--rooms", "300", "--members", "2", *LOCKSTEP]),
    Scenario("room10", "rooms of 10, 256-byte payloads, lockstep bursts of 3 (saturation)",
             ["--rooms", "60", "--members", "10", *LOCKSTEP]),
    Scenario("room50", "rooms of 50, 256-byte payloads, lockstep bursts of 3 (saturation)",
             ["--rooms", "12", "--members", "50", *LOCKSTEP]),
    Scenario("room10-4k", "rooms of 10, 4 KiB payloads, lockstep bursts of 3",
             ["--rooms", "60", "--members", "10", "--burst", "3", "--payload", "4096",
              "--warmup", "2", "--duration", "6"]),
    Scenario("room10-sweep", "rooms of 10, 256-byte payloads, open loop at rising rates (tenths "
             "of room10's lockstep rate, 2 s each) up to the highest one sustained: no loss, "
             "97% of the offered deliveries arriving in time, p99 under 10 ms",
             ["--rooms", "60", "--members", "10", "--payload", "256", "--warmup", "1",
              "--duration", "2"], rate_of=("room10", 1.0), kind="sweep"),
    Scenario("room10-open", "rooms of 10, 256-byte payloads, open loop at half the highest "
             "sustained rate (room10-sweep): latency and CPU per delivery at moderate load",
             ["--rooms", "60", "--members", "10", "--payload", "256", "--warmup", "2",
              "--duration", "6"], rate_of=("room10-sweep", 0.5), kind="open"),
    Scenario("idle10k", "10,000 idle joined connections (rooms of 10): RSS per connection",
             ["--rooms", "1000", "--members", "10", "--idle", "--warmup", "1", "--duration", "2",
              "--source-addresses", "2", "--concurrency", "100"], kind="idle"),
    # 50,000 would need RLIMIT_NOFILE above 50,000 for the relay; the runner caps the count at
    # what the machine allows (see README.md) and says so.
    Scenario("idle50k", "50,000 idle joined connections (rooms of 10): RSS per connection",
             ["--rooms", "5000", "--members", "10", "--idle", "--warmup", "1", "--duration",
              "2", "--source-addresses", "4", "--concurrency", "100"], kind="idle"),
    Scenario("join-storm", "5,000 members joining 1,000 rooms at once, 100 connects in flight",
             ["--rooms", "1000", "--members", "5", "--idle", "--warmup", "0", "--duration", "1",
              "--concurrency", "100"], kind="join"),
    # For --workers: the relay and a two-process generator share both cores (run it with
    # --server-core 0,1 --generator-core 0,1 and the kinds pugfast-cython,pugfast-workers2).
    Scenario("room10-shared", "rooms of 10, lockstep bursts of 3, relay and a two-process "
             "generator sharing every core: deliveries per second by worker count",
             ["--rooms", "120", "--members", "10", *LOCKSTEP, "--procs", "2"], kind="shared"),
]

# Issue 24's scenario: the open-loop chat alone, then beside N idle joined members held by a
# second `pugfast bench --idle` process (bench/run.py --idle-members, --idle-ignore-pings).
IDLE_TAIL = Scenario(
    "idle-tail", "the open-loop chat (100 rooms x 10, 8,000 msg/s, 30 s) alone, then beside N "
    "idle joined members held by a second pugfast bench --idle process: the chat's p99, p99.9 "
    "and max side by side, and the relay's CPU and RSS per idle member",
    ["--rooms", "100", "--members", "10", "--payload", "256", "--rate", "8000", "--warmup", "2",
     "--duration", "30"], kind="idle-tail")
SCENARIOS.append(IDLE_TAIL)
# Scenarios that run only when named with --scenarios.
ON_REQUEST = ("shared", "idle-tail")
