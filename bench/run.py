"""The comparison runner: every scenario against every server kind, medians of several runs.

    python bench/run.py                      # all scenarios, 3 runs each, all kinds
    python bench/run.py --scenarios room10 --kinds pugfast-cython,aiohttp-plain --runs 5
    python bench/run.py --quick              # one short run of each, to try the runner

Server kinds: ``pugfast-cython`` (``pugfast serve`` with the compiled engine),
``pugfast-python`` (the same with ``PUGFAST_NO_EXTENSIONS=1``) and ``aiohttp-plain``
(bench/baselines/aiohttp_plain.py); on request, ``pugfast-workers2`` (``serve --workers 2``,
measured as the supervisor and its workers together). Each run starts a fresh server pinned to one core
(``taskset -c 0``) and ``pugfast bench --json --server-pid`` pinned to another (``taskset
-c 1``); the server's CPU time per delivery comes from /proc over the measured window only.
The machine's load average is recorded with every run, since other work on the server's core
shows up as latency (not as CPU time, which is the server's own).

It prints a table of medians and the checks against the targets, and writes
bench/results/results.json and a self-contained bench/results/report.html.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from html_report import write_report  # noqa: E402
from scenarios import ON_REQUEST, SCENARIOS, Scenario  # noqa: E402

from pugfast.bench.histogram import Histogram  # noqa: E402
from pugfast.bench.procstat import clock, sample  # noqa: E402

KINDS = ("pugfast-cython", "pugfast-python", "aiohttp-plain")
# Not run by default: ``serve --workers 2`` (compiled engine). Give it the cores to use, e.g.
# --server-core 0,1 --generator-core 0,1 (docs/scaling.md).
EXTRA_KINDS = ("pugfast-workers2",)
PUGFAST_FLAGS = [
    "--pow-difficulty", "0", "--rate-limit", "0", "--log-level", "warning",
    "--capacity-max", "1000", "--max-connections", "1000000", "--max-rooms", "1000000",
    "--join-timeout", "120", "--join-window", "600",
]
# Descriptors a server keeps besides its connections (listening socket, loop, files).
FD_MARGIN = 200


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: str | None, command: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", core, *command]


class Server:
    """One server of a kind, started fresh and stopped after each run."""

    def __init__(self, kind: str, core: str | None, extra: list[str]) -> None:
        self.kind = kind
        self.port = free_port()
        env = dict(os.environ)
        env.pop("PUGFAST_NO_EXTENSIONS", None)
        if kind == "aiohttp-plain":
            command = [sys.executable, str(BENCH / "baselines" / "aiohttp_plain.py"),
                       "--host", "127.0.0.1", "--port", str(self.port), "--pow-difficulty",
                       "0", "--capacity-max", "1000"]
        else:
            command = [sys.executable, "-m", "pugfast", "serve", "--host", "127.0.0.1",
                       "--port", str(self.port), *PUGFAST_FLAGS, *extra]
            if kind == "pugfast-workers2":
                command += ["--workers", "2"]
            if kind == "pugfast-python":
                env["PUGFAST_NO_EXTENSIONS"] = "1"
        self.process = subprocess.Popen(pinned(core, command), cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    @property
    def pid(self) -> int:
        # taskset execs the server, so the pid is the server's own.
        return self.process.pid

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"{self.kind} exited at start: {err[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer /healthz within 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def scenario_args(scenario: Scenario, fd_limit: int, quick: bool) -> tuple[list[str], str]:
    """The generator's arguments, adjusted to this machine; and a note when adjusted."""
    args = list(scenario.args)
    note = ""

    def value(flag: str) -> int:
        return int(args[args.index(flag) + 1])

    def set_value(flag: str, new: object) -> None:
        args[args.index(flag) + 1] = str(new)

    rooms, members = value("--rooms"), value("--members")
    if quick:
        for flag, short in (("--duration", "2"), ("--warmup", "1")):
            if flag in args and float(args[args.index(flag) + 1]) > float(short):
                set_value(flag, short)
        if scenario.kind in ("idle", "join"):
            rooms = max(1, rooms // 10)
            set_value("--rooms", rooms)
        if scenario.kind == "idle-tail":
            # A fifth of the chat, at the same rate per room.
            rooms = max(2, rooms // 5)
            set_value("--rooms", rooms)
            set_value("--rate", f"{float(args[args.index('--rate') + 1]) / 5:g}")
            set_value("--duration", "3")
    # The relay holds one descriptor per connection, the generator too (same limit).
    most = (fd_limit - FD_MARGIN) // members
    if rooms > most:
        set_value("--rooms", most)
        note = (f"capped at {most * members:,} connections: RLIMIT_NOFILE is {fd_limit:,} "
                f"here (asked {rooms * members:,})")
    return args, note


def run_once(kind: str, scenario: Scenario, args: list[str], cores: tuple[str, str],
             rate: float | None) -> dict[str, Any]:
    server = Server(kind, cores[0], scenario.server_args)
    try:
        return run_bench(server, args, cores, rate)
    finally:
        server.stop()


def run_bench(server: Server, args: list[str], cores: tuple[str, str],
              rate: float | None = None) -> dict[str, Any]:
    """``pugfast bench --json`` against a running server; its report, with the load average."""
    load = load_average()
    command = [sys.executable, "-m", "pugfast.bench", server.url, *args, "--json",
               "--quiet", "--server-pid", str(server.pid)]
    if rate is not None:
        command += ["--rate", f"{rate:.0f}"]
    done = subprocess.run(pinned(cores[1], command), cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"pugfast bench failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    report["load_before"] = load
    report["load_after"] = load_average()
    return report


# -- idle-tail: an open-loop chat alone, then beside idle members -------------------------------

# Connections one generator process holds at most (the open-file limit is per process).
IDLE_PER_PROCESS = 18_000
# Connections one source address may open to one port: the ephemeral ports.
PER_SOURCE_ADDRESS = 20_000
IDLE_READY_TIMEOUT = 900


def idle_capacity(kind: str, fd_limit: int, chat_connections: int) -> int:
    """Idle members the relay of ``kind`` can hold beside the chat, within its open-file
    limit (per process: a relay with two workers holds about twice as many)."""
    processes = 2 if kind == "pugfast-workers2" else 1
    return processes * (fd_limit - FD_MARGIN) - chat_connections


def idle_crowd(server: Server, members: int, cores: tuple[str, str], ready: Path,
               ignore_pings: bool) -> subprocess.Popen[bytes]:
    """``pugfast bench --idle`` holding ``members`` joined (in rooms of 10) until killed: a
    process group of its own, started on the generator's core(s)."""
    rooms = max(1, members // 10)
    procs = -(-members // IDLE_PER_PROCESS)
    command = [sys.executable, "-m", "pugfast.bench", server.url, "--idle", "--rooms",
               str(rooms), "--members", str(min(10, members)), "--warmup", "0", "--duration",
               "86400", "--procs", str(procs), "--concurrency", "200", "--source-addresses",
               str(2 + members // PER_SOURCE_ADDRESS), "--ready-file", str(ready), "--quiet",
               "--json"]
    if ignore_pings:
        command.append("--ignore-pings")
    # The crowd stands for thousands of clients on other machines: at the lowest priority it
    # yields its core to the chat's generator at once (its pongs wait a moment, which the
    # relay does not mind), so its own pauses (a collection over 19,000 members, a burst of
    # pings to answer) are not counted as the relay's latency.
    return subprocess.Popen(pinned(cores[1], ["nice", "-n", "19", *command]), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def idle_tail(kind: str, scenario: Scenario, args: list[str], cores: tuple[str, str],
              members: int, ignore_pings: bool, settle: float) -> dict[str, Any]:
    """One fresh relay: the chat alone, then ``members`` idle members join (another bench
    process), the relay's CPU per idle member is measured over ``settle`` seconds, and the
    chat runs again beside them."""
    server = Server(kind, cores[0], scenario.server_args)
    crowd = None
    try:
        alone = run_bench(server, args, cores)
        cpu_clock = clock(server.pid)
        before = sample(server.pid, cpu_clock)
        with tempfile.TemporaryDirectory() as tmp:
            ready = Path(tmp) / "joined"
            crowd = idle_crowd(server, members, cores, ready, ignore_pings)
            deadline = time.monotonic() + IDLE_READY_TIMEOUT
            while not ready.exists():
                if crowd.poll() is not None or time.monotonic() > deadline:
                    err = crowd.stderr.read().decode() if crowd.stderr else ""
                    raise RuntimeError(f"the idle members did not all join: {err[-2000:]}")
                time.sleep(0.2)
            joined = int(ready.read_text().split()[0])
        start = sample(server.pid, cpu_clock)
        time.sleep(settle)
        end = sample(server.pid, cpu_clock)
        beside = run_bench(server, args, cores)
    finally:
        if crowd is not None:
            stop_group(crowd)
        server.stop()
    return {
        "idle": joined, "asked": members, "rate": alone["config"]["rate"],
        "alone": alone, "beside": beside,
        "idle_cpu_us_per_member_s": (end.cpu_s - start.cpu_s) * 1e6 / joined / (
            (end.at_ns - start.at_ns) / 1e9) if joined else None,
        "idle_rss_per_member": (start.rss_bytes - before.rss_bytes) / joined if joined else None,
    }


def idle_tail_point(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (and min-max) of idle-tail runs at one number of idle members."""
    point: dict[str, Any] = {"idle": int(statistics.median(r["idle"] for r in runs)),
                             "rate": runs[0]["rate"]}
    for side in ("alone", "beside"):
        reports = [r[side] for r in runs]
        point[side] = {}
        for p in ("p50", "p99", "p99.9", "max"):
            point[side][p] = median_of(reports, f"latency_us/{p}")
            point[side][f"{p}_range"] = spread(reports, f"latency_us/{p}")
        point[side]["lag_kept"] = all(r["lag_us"]["kept_schedule"] for r in reports)
    for key in ("idle_cpu_us_per_member_s", "idle_rss_per_member"):
        point[key] = median_of(runs, key)
    return point


SWEEP_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SWEEP_P99_US = 10_000
SWEEP_ARRIVED = 0.97


def kept_up(report: dict[str, Any], rate: float, fanout: int) -> bool:
    """Whether an open-loop run kept up with its offered rate: nothing lost, p99 under the
    bound, nearly every offered delivery arriving in the window."""
    p99 = report["latency_us"]["p99"]
    return (not report["lost"] and p99 is not None and p99 <= SWEEP_P99_US
            and report["deliveries_per_s"] >= SWEEP_ARRIVED * rate * fanout)


def generator_fell_behind(report: dict[str, Any]) -> bool:
    lag = report.get("lag_us")
    return bool(lag) and not lag["kept_schedule"]


def sweep(kind: str, scenario: Scenario, args: list[str], cores: tuple[str, str],
          ceiling: float, notes: dict[str, str]) -> tuple[dict[str, Any] | None,
                                                          list[dict[str, Any]]]:
    """Open-loop runs at rising fractions of ``ceiling``: the highest rate whose p99 stays
    under the bound (the knee). A step that fails is run once more before the sweep stops
    (one noisy step on a shared machine is not the knee); a step where the generator, not
    the relay, fell behind fails too, with a note. Returns the last step that kept up,
    and every step (each marked ``kept_up``)."""
    fanout = int(args[args.index("--members") + 1]) - 1
    best = None
    steps = []
    for fraction in SWEEP_FRACTIONS:
        rate = ceiling * fraction
        ok = False
        for attempt in ("", " (confirming a failed step)"):
            print(f"{scenario.name} / {kind}: {rate:,.0f} msg/s{attempt}", file=sys.stderr,
                  flush=True)
            try:
                report = run_once(kind, scenario, args, cores, rate)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                print(f"  failed: {exc}", file=sys.stderr)
                return best, steps
            ok = kept_up(report, rate, fanout) and not generator_fell_behind(report)
            report["kept_up"], report["confirming"] = ok, bool(attempt)
            steps.append(report)
            if ok:
                break
        if not ok:
            if generator_fell_behind(report):
                notes[f"{scenario.name} / {kind}"] = (
                    f"the generator fell behind its schedule at {rate:,.0f} msg/s (twice): "
                    "the sweep stopped at the generator's limit, not the relay's")
            break
        best = report
    return best, steps


def values_of(runs: list[dict[str, Any]], path: str) -> list[float]:
    """A figure of every run that has it; ``path`` is its keys joined by ``/``."""
    values = []
    for run in runs:
        node: Any = run
        for key in path.split("/"):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            values.append(float(node))
    return values


def median_of(runs: list[dict[str, Any]], path: str) -> float | None:
    values = values_of(runs, path)
    return statistics.median(values) if values else None


def spread(runs: list[dict[str, Any]], path: str) -> list[float] | None:
    """[min, max] of a figure across runs (None when no run has it)."""
    values = values_of(runs, path)
    return [min(values), max(values)] if values else None


METRICS = {
    "deliveries_per_s": "deliveries_per_s",
    "messages_per_s": "messages_per_s",
    "cpu_us_per_delivery": "server/cpu_us_per_delivery",
    "deliveries_per_cpu_s": "server/deliveries_per_cpu_s",
    "cpu_utilisation": "server/cpu_utilisation",
    "p50_us": "latency_us/p50",
    "p99_us": "latency_us/p99",
    "lost": "lost",
    "rss_per_connection": "server/rss_per_connection_bytes",
    "rss_bytes": "server/rss_bytes",
    "joins_per_s": "join/per_s",
    "cpu_us_per_join": "server/cpu_us_per_join",
    "supervisor_cpu_us_per_join": "server/supervisor_cpu_us_per_join",
    "generator_cpu_s": "generator/cpu_s",
    "generator_cpu_us_per_delivery": "generator/cpu_us_per_delivery",
    "server_cpu_s": "server/cpu_s",
    "connections": "connections",
    "load": "load_before",
}


def buckets(report: dict[str, Any]) -> list[list[int]]:
    """The latency histogram as [low_ns, high_ns, count] per non-empty bucket."""
    hist = Histogram.from_state(report["histograms"]["latency"])
    return [list(b) for b in hist.buckets()]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {name: median_of(runs, path) for name, path in METRICS.items()}
    out["p999_us"] = median_of(runs, "latency_us/p99.9")
    errors: dict[str, int] = {}
    for run in runs:
        for k, v in run.get("errors", {}).items():
            errors[k] = errors.get(k, 0) + v
    out["errors"] = errors
    config = runs[0]["config"]
    out["loop"] = config.get("loop") or "idle"
    out["offered_rate"] = config.get("rate")
    # The run whose delivery rate is the median stands for the scenario in the charts.
    ranked = sorted(runs, key=lambda r: r.get("deliveries_per_s") or 0)
    middle = ranked[len(ranked) // 2]
    out["histogram"] = buckets(middle) if middle["latency_us"]["count"] else []
    out["intervals"] = middle.get("intervals", [])
    out["runs"] = len(runs)
    # The spread of the runs, so that a noisy machine shows.
    out["cpu_us_per_delivery_range"] = spread(runs, "server/cpu_us_per_delivery")
    out["deliveries_per_cpu_s_range"] = spread(runs, "server/deliveries_per_cpu_s")
    out["p99_us_range"] = spread(runs, "latency_us/p99")
    out["load_range"] = spread(runs, "load_before")
    return out


def checks(results: dict[str, dict[str, dict[str, Any]]],
           extras: dict[str, Any] | None = None) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every figure of the issues that these results cover."""
    out: list[tuple[str, str, bool | None]] = []
    # Issue 24: idle members cost the chat nothing.
    for kind, points in (extras or {}).get("idle_tail", {}).items():
        for point in points:
            alone, beside = point["alone"], point["beside"]
            where = f"idle-tail / {kind}, {point['idle']:,} idle"
            for p in ("p99", "p99.9"):
                if alone[p] and beside[p]:
                    out.append((f"{where}: {p} within 1.5x of the chat alone",
                                f"{beside[p]:,.0f} us beside, {alone[p]:,.0f} us alone",
                                beside[p] <= 1.5 * alone[p]))
            if beside["max"] is not None:
                out.append((f"{where}: max <= 20 ms", f"{beside['max']:,.0f} us",
                            beside["max"] <= 20_000))
            if not (alone["lag_kept"] and beside["lag_kept"]):
                out.append((f"{where}: the generator kept its schedule", "it fell behind: "
                            "the latencies include its own delay", False))

    def get(scenario: str, kind: str, metric: str) -> float | None:
        value = results.get(scenario, {}).get(kind, {}).get(metric)
        return float(value) if isinstance(value, (int, float)) else None

    for scenario, limit in (("room10", 2.0), ("room2", 5.0)):
        v = get(scenario, "pugfast-cython", "cpu_us_per_delivery")
        if v is not None:
            out.append((f"{scenario}: server CPU <= {limit} us per delivery", f"{v:.3f} us",
                        v <= limit))
    for scenario in ("room10", "room2"):
        # The generator measures the relay only while it costs less per delivery.
        gen = get(scenario, "pugfast-cython", "generator_cpu_us_per_delivery")
        v = get(scenario, "pugfast-cython", "cpu_us_per_delivery")
        if gen is not None and v is not None:
            out.append((f"{scenario}: generator CPU per delivery below the server's",
                        f"{gen:.3f} us against {v:.3f} us", gen < v))
    for scenario in ("room2", "room10", "room50", "room10-4k"):
        fast = get(scenario, "pugfast-cython", "deliveries_per_cpu_s")
        plain = get(scenario, "aiohttp-plain", "deliveries_per_cpu_s")
        # The target covers the room sizes (256-byte payloads); 4 KiB is shown beside.
        extra = " (beyond the targets)" if scenario == "room10-4k" else ""
        if fast and plain:
            out.append((f"{scenario}: >= 3x plain aiohttp's deliveries per CPU-second{extra}",
                        f"{fast / plain:.2f}x ({fast:,.0f} vs {plain:,.0f})", fast >= 3 * plain))
    p99 = get("room10-open", "pugfast-cython", "p99_us")
    top = get("room10-sweep", "pugfast-cython", "messages_per_s")
    if p99 is not None:
        p50 = get("room10-open", "pugfast-cython", "p50_us") or 0
        cpu = get("room10-open", "pugfast-cython", "cpu_us_per_delivery") or 0
        out.append(("room10-open: p99 <= 2 ms at half the highest sustained rate",
                    f"p99 {p99:,.0f} us, p50 {p50:,.0f} us, {cpu:.3f} us CPU per delivery at "
                    f"{(top or 0) / 2:,.0f} msg/s", p99 <= 2000))
    for scenario in ("idle50k", "idle10k"):
        rss = get(scenario, "pugfast-cython", "rss_per_connection")
        conns = get(scenario, "pugfast-cython", "connections")
        if rss is not None:
            out.append((f"{scenario}: <= 4 KiB RSS per idle joined connection",
                        f"{rss / 1024:.2f} KiB at {conns or 0:,.0f} connections", rss <= 4096))
    join_cpu = get("join-storm", "pugfast-cython", "cpu_us_per_join")
    if join_cpu is not None:
        plain = get("join-storm", "aiohttp-plain", "cpu_us_per_join")
        against = f" (plain aiohttp: {plain:,.0f} us)" if plain else ""
        out.append(("join-storm: <= 100 us of relay CPU per join",
                    f"{join_cpu:,.0f} us{against}", join_cpu <= 100))
    for scenario, kinds in results.items():
        for kind, summary in kinds.items():
            if summary.get("lost"):
                out.append((f"{scenario} / {kind}: no loss", f"{summary['lost']:,.0f} lost",
                            False))
    return out


def fmt(value: float | None, digits: int = 0, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value / scale:,.{digits}f}"


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    header = (f"{'scenario':<12} {'server':<15} {'deliv/s':>10} {'us CPU/d':>9} "
              f"{'(min-max)':>13} {'gen us/d':>9} "
              f"{'d/CPU-s':>11} {'x plain':>7} {'util':>5} {'p50 us':>9} {'p99 us':>9} "
              f"{'lost':>5} {'RSS/conn':>9} {'joins/s':>8} {'load':>5}")
    print(header)
    print("-" * len(header))
    for scenario, kinds in results.items():
        plain = kinds.get("aiohttp-plain", {}).get("deliveries_per_cpu_s")
        for kind, s in kinds.items():
            ratio = (f"{s['deliveries_per_cpu_s'] / plain:.2f}"
                     if plain and s.get("deliveries_per_cpu_s") else "-")
            rss = s.get("rss_per_connection")
            spread = s.get("cpu_us_per_delivery_range")
            spread_text = f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else "-"
            print(f"{scenario:<12} {kind:<15} {fmt(s['deliveries_per_s']):>10} "
                  f"{fmt(s['cpu_us_per_delivery'], 3):>9} {spread_text:>13} "
                  f"{fmt(s['generator_cpu_us_per_delivery'], 3):>9} "
                  f"{fmt(s['deliveries_per_cpu_s']):>11} "
                  f"{ratio:>7} {fmt(s['cpu_utilisation'], 2):>5} {fmt(s['p50_us']):>9} "
                  f"{fmt(s['p99_us']):>9} {fmt(s['lost']):>5} "
                  f"{(fmt(rss / 1024, 1) + 'K') if rss is not None else '-':>9} "
                  f"{fmt(s['joins_per_s']):>8} {fmt(s['load'], 1):>5}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario and kind "
                        "(default: 3; medians are reported)")
    parser.add_argument("--scenarios", help="comma-separated names (default: all but "
                        f"{', '.join(s.name for s in SCENARIOS if s.kind in ON_REQUEST)}, which "
                        "run only when named): " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated server kinds (default: {','.join(KINDS)}; "
                        f"also: {','.join(EXTRA_KINDS)})")
    parser.add_argument("--server-core", default="0", help="core for the server (default: 0)")
    parser.add_argument("--generator-core", default="1",
                        help="core(s) for the generator (default: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs and small idle scenarios, to try the runner")
    parser.add_argument("--idle-members", default="5000,10000,19800",
                        help="idle-tail: idle members to hold beside the chat, comma-separated "
                        "(default: 5000,10000,19800; --quick: 1000); capped at what the "
                        "relay's open-file limit allows, with a note")
    parser.add_argument("--idle-ignore-pings", action="store_true",
                        help="idle-tail: the idle members do not answer the relay's pings")
    parser.add_argument("--max-load", type=float, default=None,
                        help="before each run, wait (up to 2 minutes) for the 1-minute load "
                        "average to fall below this")
    parser.add_argument("--out", default=str(BENCH / "results"),
                        help="where results.json and report.html go (default: bench/results)")
    args = parser.parse_args(argv)

    fd_limit = raise_fd_limit()
    wanted = set(args.scenarios.split(",")) if args.scenarios else None
    scenarios = [s for s in SCENARIOS
                 if (s.name in wanted if wanted is not None else s.kind not in ON_REQUEST)]
    kinds = [k for k in args.kinds.split(",") if k]
    for kind in kinds:
        if kind not in KINDS + EXTRA_KINDS:
            parser.error(f"unknown server kind {kind!r}")
    try:
        idle_counts = [int(n) for n in ("1000" if args.quick and args.idle_members ==
                                        parser.get_default("idle_members")
                                        else args.idle_members).split(",")]
    except ValueError:
        parser.error(f"--idle-members {args.idle_members!r}: whole numbers, comma-separated")
    cores = (args.server_core, args.generator_core)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    notes: dict[str, str] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    extras: dict[str, Any] = {"sweeps": {}, "series": [], "idle_tail": {}}
    started = time.time()

    def wait_for_quiet() -> None:
        if args.max_load is not None:
            deadline = time.monotonic() + 120
            while load_average() >= args.max_load and time.monotonic() < deadline:
                time.sleep(5)

    for scenario in scenarios:
        gen_args, note = scenario_args(scenario, fd_limit, args.quick)
        if note:
            notes[scenario.name] = note
        for kind in kinds:
            if scenario.kind == "idle-tail":
                run_idle_tail(kind, scenario, gen_args, cores, idle_counts, args, fd_limit,
                              results, raw, notes, extras, wait_for_quiet)
                continue
            rate = None
            if scenario.rate_of is not None:
                source, fraction = scenario.rate_of
                sustained = results.get(source, {}).get(kind, {}).get("messages_per_s")
                if not sustained:
                    print(f"skip {scenario.name} / {kind}: needs {source} first", file=sys.stderr)
                    continue
                rate = sustained * fraction
            if scenario.kind == "sweep":
                assert rate is not None
                best, steps = sweep(kind, scenario, gen_args, cores, rate, notes)
                if best is None:
                    notes.setdefault(f"{scenario.name} / {kind}", (
                        f"no rate kept up, not even {SWEEP_FRACTIONS[0]:.0%} of {rate:,.0f} "
                        "msg/s: was the machine busy? (see the load column)"))
                else:
                    results.setdefault(scenario.name, {})[kind] = dict(
                        summarise([best]), messages_per_s=best["config"]["rate"])
                raw.setdefault(scenario.name, {})[kind] = steps
                extras["sweeps"].setdefault(scenario.name, {})[kind] = [
                    {"rate": step["config"]["rate"], "latency_us": step["latency_us"],
                     "kept_up": step["kept_up"], "confirming": step["confirming"]}
                    for step in steps]
                continue
            runs = []
            for i in range(args.runs):
                wait_for_quiet()
                print(f"{scenario.name} / {kind}: run {i + 1} of {args.runs}"
                      + (f" at {rate:,.0f} msg/s" if rate else ""), file=sys.stderr, flush=True)
                try:
                    runs.append(run_once(kind, scenario, gen_args, cores, rate))
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                    print(f"  failed: {exc}", file=sys.stderr)
            if runs:
                raw.setdefault(scenario.name, {})[kind] = runs
                summary = results.setdefault(scenario.name, {})[kind] = summarise(runs)
                if summary["loop"] == "open":
                    extras["series"].append((
                        f"{scenario.name} / {kind}: latency per interval, open loop at "
                        f"{summary['offered_rate']:,.0f} msg/s offered", summary["intervals"]))
    verdicts = checks(results, extras)
    print()
    print_table(results)
    print()
    for target, measured, met in verdicts:
        mark = "met   " if met else "MISSED"
        print(f"  [{mark}] {target}: {measured}")
    for name, note in notes.items():
        print(f"  note: {name}: {note}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loads = [r["load_before"] for kinds_ in raw.values() for runs in kinds_.values()
             for r in runs if isinstance(r, dict) and "load_before" in r]
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started), "quick": args.quick,
        "runs": args.runs, "cores": {"server": cores[0], "generator": cores[1]},
        "cpu": cpu_model(), "nproc": os.cpu_count(), "python": sys.version.split()[0],
        "kernel": f"{platform.system()} {platform.release()}",
        "load_range": [min(loads), max(loads)] if loads else None,
        "fd_limit": fd_limit, "notes": notes,
        "scenarios": {s.name: s.what for s in scenarios},
    }
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "results": results, "raw": raw, "extras": extras,
         "checks": [list(c) for c in verdicts]}, indent=1))
    write_report(out / "report.html", meta, results, verdicts, extras)
    print(f"\nwrote {out / 'results.json'} and {out / 'report.html'}")
    missed = [target for target, _, met in verdicts if met is False]
    if missed:
        print(f"{len(missed)} target(s) missed", file=sys.stderr)
        return 1
    return 0


def run_idle_tail(kind: str, scenario: Scenario, gen_args: list[str], cores: tuple[str, str],
                  counts: list[int], args: argparse.Namespace, fd_limit: int,
                  results: dict[str, Any], raw: dict[str, Any], notes: dict[str, str],
                  extras: dict[str, Any], wait_for_quiet: Any) -> None:
    chat = int(gen_args[gen_args.index("--rooms") + 1]) * int(
        gen_args[gen_args.index("--members") + 1])
    most = idle_capacity(kind, fd_limit, chat)
    points = []
    for asked in counts:
        members = min(asked, most)
        if members < asked:
            notes[f"idle-tail / {kind} / {asked:,}"] = (
                f"capped at {members:,} idle members: the relay's RLIMIT_NOFILE is "
                f"{fd_limit:,} per process, and the chat holds {chat:,} connections")
        runs = []
        for i in range(args.runs):
            wait_for_quiet()
            print(f"idle-tail / {kind}: {members:,} idle members, run {i + 1} of {args.runs}",
                  file=sys.stderr, flush=True)
            try:
                runs.append(idle_tail(kind, scenario, gen_args, cores, members,
                                      args.idle_ignore_pings, 2.0 if args.quick else 5.0))
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                print(f"  failed: {exc}", file=sys.stderr)
        if not runs:
            continue
        point = idle_tail_point(runs)
        points.append(point)
        for side in ("alone", "beside"):
            name = f"idle-tail {point['idle']:,}: {side}"
            reports = [r[side] for r in runs]
            raw.setdefault(name, {})[kind] = reports
            summary = results.setdefault(name, {})[kind] = summarise(reports)
            extras["series"].append((
                f"{name} / {kind}: latency per interval, open loop at "
                f"{summary['offered_rate']:,.0f} msg/s offered", summary["intervals"]))
    extras["idle_tail"][kind] = points


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
