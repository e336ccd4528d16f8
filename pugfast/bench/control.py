"""The controller: starts the workers, moves them through their phases together, samples the
server at the edges of the measured window, shows progress, and merges what they report.

Phases: every worker creates its rooms; then all join at once (the server's CPU per join is
taken over that phase); then all start at the same instant ``t0``, warm up until the window
opens, send until it closes, and drain. The server is sampled when the window opens and
closes, so its CPU time per delivery covers exactly the deliveries that arrived in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import resource
import sys
import threading
import time
from collections import Counter
from typing import Any, TextIO

from .histogram import Histogram, summary_us
from .procstat import ProcSample, sample
from .worker import Plan, run_worker

# Time allowed for the phases before the workers' own work starts; generous, but bounded.
CREATE_TIMEOUT = 600.0
JOIN_TIMEOUT = 600.0
START_DELAY_NS = 100_000_000


class BenchError(Exception):
    """The run could not be carried out (a worker failed, or the server went away)."""


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def split(total: int, parts: int) -> list[int]:
    """``total`` divided into ``parts`` near-equal whole shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Progress:
    """The live progress line, on a terminal rewritten in place, elsewhere a line now and then."""

    def __init__(self, out: TextIO, interval: float | None = None) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 5.0)
        self.last = 0.0
        self.started = time.monotonic()

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        line = f"[{now - self.started:6.1f}s] {text}"
        if self.tty:
            self.out.write("\r\x1b[2K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


class Controller:
    def __init__(self, plan: Plan, procs: int, server_pid: int | None,
                 progress: Progress | None) -> None:
        self.plan = plan
        self.procs = max(1, procs)
        self.server_pid = server_pid
        self.progress = progress
        self.chans: list[Any] = []
        self.workers: list[Any] = []
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.samples: dict[str, ProcSample] = {}
        self._pending_samples: list[tuple[int, str]] = []
        self.started_ns = 0

    # -- workers -------------------------------------------------------------------------

    def start_workers(self) -> None:
        plan = self.plan
        rooms = [n for n in split(plan.rooms, self.procs) if n]
        rate_share = plan.rate / len(rooms) if rooms else 0.0
        # fork when we may: nothing is running in this process yet, and it starts at once.
        methods = multiprocessing.get_all_start_methods()
        context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        for index, share in enumerate(rooms):
            mine, theirs = multiprocessing.Pipe()
            worker_plan = dataclasses.replace(plan, rooms=share, rate=rate_share)
            if len(rooms) == 1:
                worker: Any = threading.Thread(
                    target=run_worker, args=(worker_plan, index, theirs), daemon=True)
            else:
                worker = context.Process(
                    target=run_worker, args=(worker_plan, index, theirs), daemon=True)
            worker.start()
            self.chans.append(mine)
            self.workers.append(worker)

    def broadcast(self, *message: Any) -> None:
        for chan in self.chans:
            chan.send(message)

    def gather(self, kind: str, timeout: float, until_ns: int | None = None) -> list[Any]:
        """Wait for a ``kind`` message from every worker, handling progress as it comes.

        With ``until_ns``, also sample the server when the window opens and closes.
        """
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(self.chans):
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"workers did not report {kind!r} within {timeout:.0f} s")
            wait = min(deadline - now, 0.25)
            wait = min(wait, self._next_sample_in())
            ready = multiprocessing.connection.wait(
                [c for i, c in enumerate(self.chans) if i not in answers], max(wait, 0.0))
            self._take_samples()
            for ready_chan in ready:
                index = self.chans.index(ready_chan)
                chan = self.chans[index]
                try:
                    message: Any = chan.recv()
                except EOFError:
                    raise BenchError(f"worker {index} ended without a word") from None
                if message[0] == "error":
                    raise BenchError(message[1])
                if message[0] == "progress":
                    self.snapshots[index] = message[1]
                    self._show_progress()
                elif message[0] == kind:
                    answers[index] = message[1]
            self._show_progress(quiet_phase=kind)
        return [answers[i] for i in range(len(self.chans))]

    def stop_workers(self) -> None:
        for chan in self.chans:
            with contextlib.suppress(OSError):
                chan.send(("abort",))
        for worker in self.workers:
            worker.join(timeout=5)
            if hasattr(worker, "terminate") and worker.is_alive():
                worker.terminate()

    # -- the server ----------------------------------------------------------------------

    def sample(self, name: str) -> None:
        if self.server_pid is None:
            return
        try:
            self.samples[name] = sample(self.server_pid)
        except (OSError, ValueError, IndexError):
            raise BenchError(f"cannot read /proc/{self.server_pid}: is the server running "
                             "on this machine?") from None

    def _next_sample_in(self) -> float:
        if not self._pending_samples:
            return 1.0
        return max(0.0, (self._pending_samples[0][0] - time.monotonic_ns()) / 1e9)

    def _take_samples(self) -> None:
        now = time.monotonic_ns()
        while self._pending_samples and self._pending_samples[0][0] <= now:
            _, name = self._pending_samples.pop(0)
            self.sample(name)

    # -- progress ------------------------------------------------------------------------

    def _show_progress(self, quiet_phase: str = "") -> None:
        if self.progress is None or not self.snapshots:
            return
        snaps = list(self.snapshots.values())
        phase = snaps[0]["phase"]
        sent = sum(s["sent"] for s in snaps)
        received = sum(s["received"] for s in snaps)
        delivered = sum(s["delivered"] for s in snaps)
        errors = sum(s["errors"] for s in snaps)
        hist = Histogram()
        for s in snaps:
            hist.merge(Histogram.from_state(s["latency"]))
        elapsed = time.monotonic_ns() - self.started_ns if self.started_ns else 0
        rate = received / (elapsed / 1e9) if elapsed > 0 else 0.0
        self.progress.show(
            f"{phase:<5} sent {sent:,}  received {received:,} ({rate:,.0f}/s)  "
            f"measured {delivered:,}  p50 {hist.percentile(50) / 1000:,.0f} us  "
            f"p99 {hist.percentile(99) / 1000:,.0f} us  errors {errors:,}"
        )

    # -- the run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        plan = self.plan
        self.sample("begin")
        self.start_workers()
        try:
            created = self.gather("created", CREATE_TIMEOUT)
            if self.progress:
                self.progress.show(f"created {sum(created):,} rooms; joining", force=True)
            self.sample("created")
            join_started = time.monotonic_ns()
            self.broadcast("join")
            joined = self.gather("joined", JOIN_TIMEOUT)
            join_ns = time.monotonic_ns() - join_started
            self.sample("joined")
            t0 = time.monotonic_ns() + START_DELAY_NS
            window_start = t0 + int(plan.warmup * 1e9)
            window_end = window_start + int(plan.duration * 1e9)
            self._pending_samples = [(window_start, "window_start"), (window_end, "window_end")]
            self.started_ns = t0
            if self.progress:
                joins = sum(j["joins"] for j in joined)
                self.progress.show(f"{joins:,} members joined; running", force=True)
            self.broadcast("start", t0, window_start, window_end)
            results = self.gather(
                "result", plan.warmup + plan.duration + plan.drain + 60.0)
            self._take_samples()
        finally:
            self.stop_workers()
            if self.progress:
                self.progress.done()
        return self.report(created, joined, join_ns, results)

    def report(self, created: list[int], joined: list[dict[str, Any]], join_ns: int,
               results: list[dict[str, Any]]) -> dict[str, Any]:
        plan = self.plan
        latency = Histogram()
        errors: Counter[str] = Counter()
        for r in results:
            latency.merge(Histogram.from_state(r["latency"]))
            errors.update(r["errors"])
        join_latency = Histogram()
        for j in joined:
            join_latency.merge(Histogram.from_state(j["latency"]))

        def total(key: str) -> int:
            return sum(int(r[key]) for r in results)

        if total("out_of_order"):
            errors["out_of_order"] += total("out_of_order")
        if total("stalled_rooms"):
            errors["stalled_rooms"] += total("stalled_rooms")
        expected, delivered = total("expected"), total("delivered")
        received_in_window = total("received_in_window")
        generator_cpu = sum(r["cpu_s"] for r in results)
        connections = total("connections")
        report: dict[str, Any] = {
            "version": 1,
            "target": plan.url,
            "config": {
                "rooms": plan.rooms, "members": plan.members, "payload": plan.payload,
                "mode": plan.mode, "burst": plan.burst if plan.mode == "lockstep" else None,
                "rate": plan.rate if plan.mode == "open" else None,
                "duration": plan.duration, "warmup": plan.warmup, "drain": plan.drain,
                "procs": self.procs,
            },
            "rooms": sum(created),
            "connections": connections,
            "sent": total("sent"),
            "sent_total": total("sent_total"),
            "expected": expected,
            "delivered": delivered,
            "lost": max(0, expected - delivered),
            "loss_ratio": (expected - delivered) / expected if expected else 0.0,
            "received_in_window": received_in_window,
            "messages_per_s": total("sent") / plan.duration,
            "deliveries_per_s": received_in_window / plan.duration,
            "latency_us": summary_us(latency),
            "histogram": [[low, high, n] for low, high, n in latency.buckets()],
            "sequence_gaps": total("gaps"),
            "errors": {k: v for k, v in sorted(errors.items()) if v},
            "join": {
                "count": join_latency.count,
                "seconds": join_ns / 1e9,
                "per_s": join_latency.count / (join_ns / 1e9) if join_ns else 0.0,
                "latency_us": summary_us(join_latency),
            },
            "generator": {
                "cpu_s": round(generator_cpu, 3),
                # Per process: near 1.0 means the generator, not the relay, set the pace.
                "cpu_utilisation": round(generator_cpu / len(results) / plan.duration, 3)
                if plan.duration else None,
                # Comparable with the server's: a generator that costs less per delivery than
                # the relay measures the relay, not itself.
                "cpu_us_per_delivery": round(generator_cpu * 1e6 / received_in_window, 3)
                if received_in_window else None,
            },
            "server": None,
        }
        s = self.samples
        if self.server_pid is not None and "window_end" in s and "window_start" in s:
            cpu = s["window_end"].cpu_s - s["window_start"].cpu_s
            wall = (s["window_end"].at_ns - s["window_start"].at_ns) / 1e9
            join_cpu = s["joined"].cpu_s - s["created"].cpu_s
            report["server"] = {
                "pid": self.server_pid,
                "cpu_s": round(cpu, 3),
                "cpu_utilisation": round(cpu / wall, 3) if wall > 0 else None,
                "cpu_us_per_delivery": round(cpu * 1e6 / received_in_window, 3)
                if received_in_window else None,
                "deliveries_per_cpu_s": round(received_in_window / cpu) if cpu > 0 else None,
                "cpu_us_per_join": round(join_cpu * 1e6 / connections, 1)
                if connections else None,
                "rss_bytes": s["window_end"].rss_bytes,
                "rss_begin_bytes": s["begin"].rss_bytes,
                "rss_per_connection_bytes": round(
                    (s["window_end"].rss_bytes - s["begin"].rss_bytes) / connections)
                if connections else None,
                "processes": s["window_end"].processes,
            }
            if s["window_end"].processes > 1:
                # A supervisor with workers: its own share is the cost of routing connections.
                own = s["window_end"].own_cpu_s - s["window_start"].own_cpu_s
                own_join = s["joined"].own_cpu_s - s["created"].own_cpu_s
                report["server"].update({
                    "supervisor_cpu_s": round(own, 3),
                    "supervisor_cpu_us_per_join": round(own_join * 1e6 / connections, 1)
                    if connections else None,
                })
        return report


def run(plan: Plan, procs: int = 1, server_pid: int | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Carry out ``plan`` and return the report (see pugfast.bench for its keys).

    Raises BenchError when the run cannot be carried out.
    """
    raise_fd_limit()
    if server_pid is not None:
        try:
            sample(server_pid)
        except (OSError, ValueError, IndexError):
            raise BenchError(f"--server-pid {server_pid}: no such process here") from None
    return Controller(plan, procs, server_pid, progress).run()


def default_progress() -> Progress:
    return Progress(sys.stderr)
