"""The regression guard: CPU instructions the relay spends per delivered message and per join,
under callgrind, against a committed baseline. A noisy machine cannot fool it: it counts
instructions, not time.

For each engine (the compiled extension and the pure-Python twin) a relay is started under
``valgrind --tool=callgrind --instr-atstart=no``, so start-up runs uninstrumented and fast.
This script then creates rooms, joins members over loopback (natively, outside valgrind),
warms up, and turns instrumentation on with ``callgrind_control``. The workload is scripted so
that the relay does the same work in the same loop iterations every time: one member at a time
sends a burst, in one write, and the next step starts once every other member of its room has
the whole burst. Counters are dumped after ``steps`` steps (phase A) and again after
``2 * steps`` more (phase B); (B - A) / (steps x deliveries per step) is the cost of one
delivery, with every fixed cost (the dump itself, waking the process) cancelled out.

Joins are measured the same way: ``joins`` members join one at a time into rooms of
``join_room`` (connect, upgrade, join, welcome, and the join notices to the members already
there), counters are dumped (phase C), then ``2 * joins`` more (phase D); (D - C) / joins is
the cost of one join, from the accepted connection to the last notice.

    python bench/guard.py              # measure, compare with bench/guard_baseline.json
    python bench/guard.py --update     # measure and write the baseline (commit it)

Exit status: 0 within tolerance, 1 on a regression, 2 when it could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from pugfast.bench.client import Member, Room, Stats, upgrade_request  # noqa: E402

BASELINE = Path(__file__).resolve().parent / "guard_baseline.json"
WORKLOAD = {"rooms": 2, "members": 10, "burst": 3, "payload": 256, "warmup_steps": 40,
            "steps": 200, "joins": 40, "join_room": 5}
TOLERANCE = 0.10
ENGINES = ("cython", "python")
START_TIMEOUT = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def callgrind_control(*args: str) -> None:
    done = subprocess.run(["callgrind_control", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    if "OK" not in done.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(args)} failed: {done.stdout}"
                           f"{done.stderr}")


def totals(path: Path) -> int:
    """The instruction count (Ir) of one callgrind dump."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


async def drive(port: int, pid: int, workload: dict[str, Any], dumps: Path) -> None:
    """Create the rooms, join, warm up, then run phases A and B with dumps after each."""
    base = f"http://127.0.0.1:{port}"
    stats = Stats()
    async with aiohttp.ClientSession() as session:

        async def create(capacity: int) -> Room:
            async with session.post(f"{base}/api/challenge") as response:
                token = (await response.json())["token"]
            body = {"token": token, "nonce": "0", "capacity": capacity}
            async with session.post(f"{base}/api/rooms", json=body) as response:
                answer = await response.json()
            return Room(answer["room"], answer["secret"], workload["payload"], stats)

        rooms = [await create(workload["members"]) for _ in range(workload["rooms"])]
        # Rooms for the join phases, made now so that only joins are counted there.
        join_rooms = [await create(workload["join_room"])
                      for _ in range(3 * workload["joins"] // workload["join_room"])]
    loop = asyncio.get_running_loop()

    async def join(room: Room) -> None:
        member = Member(room, stats, upgrade_request(f"127.0.0.1:{port}", room.room_id), 1 << 20)
        room.members.append(member)
        await loop.create_connection(lambda m=member: m, "127.0.0.1", port)  # type: ignore[misc]
        await asyncio.wait_for(member.joined, 60)

    for room in rooms:
        for _ in range(workload["members"]):
            await join(room)
    # Let the join notices settle before anything is counted.
    await asyncio.sleep(0.5)
    burst = workload["burst"]
    per_step = (workload["members"] - 1) * burst
    step = 0

    tally = stats.tally

    async def run(steps: int) -> None:
        nonlocal step
        for _ in range(steps):
            room = rooms[step % len(rooms)]
            sender = room.members[(step // len(rooms)) % len(room.members)]
            target = tally.received_total + per_step
            sender.write(sender.source.frames(burst, time.monotonic_ns()))
            # The members' sinks count what arrives; the relay under test only ever waits.
            deadline = time.monotonic() + 60
            while tally.received_total < target:
                if time.monotonic() > deadline:
                    raise RuntimeError("a step's deliveries did not all arrive within 60 s")
                await asyncio.sleep(0.0005)
            step += 1

    await run(workload["warmup_steps"])
    await asyncio.to_thread(callgrind_control, "-i", "on", str(pid))
    await run(workload["steps"])
    await asyncio.to_thread(callgrind_control, "-d", str(pid))
    await run(2 * workload["steps"])
    await asyncio.to_thread(callgrind_control, "-d", str(pid))

    # Each room is filled in turn, so both phases see the same mix of notices per join.
    unused = list(join_rooms)
    for phase in (1, 2):
        for _ in range(phase * workload["joins"] // workload["join_room"]):
            room = unused.pop(0)
            for _ in range(workload["join_room"]):
                await join(room)
            # The last member's join notices leave in the next loop iteration; let them.
            await asyncio.sleep(0.05)
        await asyncio.to_thread(callgrind_control, "-d", str(pid))
    stats.closing = True
    for room in rooms + join_rooms:
        for member in room.members:
            member.abort()
    if stats.errors or tally.gaps or tally.out_of_order:
        raise RuntimeError(f"the workload went wrong: {dict(stats.errors)}, gaps {tally.gaps}, "
                           f"out of order {tally.out_of_order}")


def measure(engine: str, workload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Instructions per delivery of one engine, from a relay run under callgrind."""
    port = free_port()
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PUGFAST_NO_EXTENSIONS", None)
    if engine == "python":
        env["PUGFAST_NO_EXTENSIONS"] = "1"
    out = workdir / engine
    out.mkdir(exist_ok=True)
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
        "--dump-line=no", f"--callgrind-out-file={out}/callgrind.%p",
        sys.executable, "-m", "pugfast", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--pow-difficulty", "0", "--rate-limit", "0", "--log-level", "warning",
        "--join-timeout", "600", "--ping-interval", "3600", "--idle-timeout", "7200",
        "--event-loop", "uvloop",
    ]
    started = time.monotonic()
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(out / "valgrind.log", "w"))  # noqa: SIM115
    try:
        wait_until_listening(port, server)
        asyncio.run(drive(port, server.pid, workload, out))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    phase_a = totals(out / f"callgrind.{server.pid}.1")
    phase_b = totals(out / f"callgrind.{server.pid}.2")
    phase_c = totals(out / f"callgrind.{server.pid}.3")
    phase_d = totals(out / f"callgrind.{server.pid}.4")
    deliveries = workload["steps"] * (workload["members"] - 1) * workload["burst"]
    return {
        "engine": engine,
        "ir_phase_a": phase_a,
        "ir_phase_b": phase_b,
        "deliveries_per_phase_a": deliveries,
        "ir_per_delivery": round((phase_b - phase_a) / deliveries, 1),
        "ir_phase_c": phase_c,
        "ir_phase_d": phase_d,
        "joins_per_phase_c": workload["joins"],
        "ir_per_join": round((phase_d - phase_c) / workload["joins"], 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def wait_until_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the relay exited with {server.returncode} under valgrind")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the relay did not listen within {START_TIMEOUT:.0f} s")


def environment() -> dict[str, str]:
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True,
                              check=False).stdout.strip()
    return {"python": platform.python_version(), "valgrind": valgrind,
            "machine": platform.machine()}


def compare(measured: dict[str, Any], baseline: dict[str, Any],
            tolerance: float = TOLERANCE) -> list[str]:
    """Regressions of ``measured`` against ``baseline``, as sentences; empty when none.

    The extension's instructions per delivery and per join may exceed the baseline's by
    ``tolerance`` (a fraction). The twin's costs are compared the same way: a pure-Python
    change shows there.
    """
    problems = []
    for engine in ENGINES:
        for unit in ("delivery", "join"):
            key = f"{engine}_ir_per_{unit}"
            if key not in measured or key not in baseline:
                continue
            now, then = measured[key], baseline[key]
            if now > then * (1 + tolerance):
                problems.append(
                    f"{engine} engine: {now:,.0f} instructions per {unit} against a baseline "
                    f"of {then:,.0f} (+{(now / then - 1) * 100:.1f}%, tolerance "
                    f"{tolerance * 100:.0f}%)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true",
                        help=f"write the measurement to {BASELINE.name} as the new baseline")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="allowed increase as a fraction (default: the baseline's, or "
                        f"{TOLERANCE})")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help="engines to measure (default: cython,python)")
    parser.add_argument("--steps", type=int, default=WORKLOAD["steps"],
                        help=f"steps in phase A; phase B has twice as many "
                        f"(default: {WORKLOAD['steps']})")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the callgrind dumps in DIR (for callgrind_annotate: "
                        "ENGINE/callgrind.PID.2 is phase B)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("guard: valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 2
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    workload = dict(WORKLOAD, steps=args.steps)
    started = time.monotonic()
    result: dict[str, Any] = {"workload": workload, "environment": environment()}
    try:
        with tempfile.TemporaryDirectory(prefix="pugfast-guard-") as tmp:
            workdir = Path(args.keep) if args.keep else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            for engine in engines:
                m = measure(engine, workload, workdir)
                result[f"{engine}_ir_per_delivery"] = m["ir_per_delivery"]
                result[f"{engine}_ir_per_join"] = m["ir_per_join"]
                result[f"{engine}_detail"] = m
                print(f"guard: {engine:<6} {m['ir_per_delivery']:>10,.0f} instructions per "
                      f"delivery, {m['ir_per_join']:>10,.0f} per join ({m['seconds']:.0f} s)",
                      file=sys.stderr)
    except (RuntimeError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
        print(f"guard: error: could not measure: {exc}", file=sys.stderr)
        return 2
    if "cython_ir_per_delivery" in result and "python_ir_per_delivery" in result:
        result["python_to_cython_ratio"] = round(
            result["python_ir_per_delivery"] / result["cython_ir_per_delivery"], 2)
        result["python_to_cython_join_ratio"] = round(
            result["python_ir_per_join"] / result["cython_ir_per_join"], 2)
        print(f"guard: the twin spends {result['python_to_cython_ratio']:.2f} times the "
              "extension's instructions per delivery and "
              f"{result['python_to_cython_join_ratio']:.2f} times per join (same run)",
              file=sys.stderr)
    result["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    if args.update:
        result["tolerance"] = args.tolerance if args.tolerance is not None else TOLERANCE
        result["recorded"] = time.strftime("%Y-%m-%d")
        BASELINE.write_text(json.dumps(result, indent=2) + "\n")
        print(f"guard: wrote {BASELINE}", file=sys.stderr)
        return 0
    if not BASELINE.exists():
        print(f"guard: no baseline at {BASELINE}; make one with --update", file=sys.stderr)
        return 2
    baseline = json.loads(BASELINE.read_text())
    if baseline.get("workload") != workload:
        print("guard: the workload differs from the baseline's; refresh it with --update",
              file=sys.stderr)
        return 2
    for key in ("python", "valgrind"):
        if baseline.get("environment", {}).get(key) != result["environment"][key]:
            print(f"guard: warning: {key} is {result['environment'][key]}, the baseline was "
                  f"recorded with {baseline['environment'].get(key)}", file=sys.stderr)
    tolerance = args.tolerance if args.tolerance is not None else baseline.get(
        "tolerance", TOLERANCE)
    problems = compare(result, baseline, tolerance)
    for problem in problems:
        print(f"guard: REGRESSION: {problem}", file=sys.stderr)
    if not problems:
        print(f"guard: ok, within {tolerance * 100:.0f}% of the baseline "
              f"({result['seconds']:.0f} s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
