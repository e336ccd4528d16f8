"""The controller: starts the workers, moves them through their phases together, samples the
server at the cuts of the time series, shows progress, judges thresholds, and sums what the
workers report into the run's results (results.py).

Phases: every worker creates its rooms; then all join at once (the server's CPU per join is
taken over that phase); then all start at the same instant ``t0`` (or at ``--start-at``, or at
the time a coordinator writes to ``--start-at-file`` once every generator has joined, so that
generators on several machines share a window), warm up until the window opens, send until it
closes, and drain. The server is sampled at every cut of the time series (every
``--interval`` from the window's start, and the window's end), so its CPU time per delivery
covers exactly the deliveries that arrived in the window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import resource
import sys
import threading
import time
from collections import Counter
from typing import Any, TextIO, cast

from .histogram import Histogram, format_us, summary_us
from .procstat import CpuClock, ProcSample, clock, sample
from .results import Interval, Totals
from .schedule import Schedule, Stage, whole_ticks
from .thresholds import Threshold, evaluate
from .worker import Plan, run_worker

# Time allowed for the phases before the workers' own work starts; generous, but bounded.
CREATE_TIMEOUT = 600.0
JOIN_TIMEOUT = 600.0
START_AT_FILE_TIMEOUT = 600.0
START_DELAY_NS = 100_000_000


class BenchError(Exception):
    """The run could not be carried out (a worker failed, or the server went away)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How to run a Plan: the generator's processes, the relay's pid for its CPU and memory,
    thresholds, this generator's segment of a split load (``(index, count)``), a wall-clock
    start for the load (``--start-at``, seconds since the epoch, or ``--start-at-file``, a file
    to read it from once every member has joined), a file to write once every member has
    joined, and the ramp (``--stages``) with the rate it starts from."""

    procs: int = 1
    server_pid: int | None = None
    thresholds: tuple[Threshold, ...] = ()
    abort_on_fail: bool = False
    segment: tuple[int, int] = (0, 1)
    start_at: float | None = None
    start_at_file: str | None = None
    ready_file: str | None = None
    stages: tuple[Stage, ...] | None = None
    rate: float = 0.0


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


def segment_rooms(rooms: int, segment: tuple[int, int]) -> int:
    """The rooms of segment ``(index, count)`` of a load of ``rooms``."""
    return split(rooms, segment[1])[segment[0]]


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
    def __init__(self, plan: Plan, options: Options, progress: Progress | None) -> None:
        self.plan = plan
        self.options = options
        self.procs = max(1, options.procs)
        self.server_pid = options.server_pid
        self.cpu_clock: CpuClock | None = clock(self.server_pid) if self.server_pid else None
        self.progress = progress
        self.chans: list[Any] = []
        self.workers: list[Any] = []
        self.samples: dict[str, ProcSample] = {}
        self.cut_samples: dict[int, ProcSample] = {}
        self._pending_samples: list[tuple[int, str]] = []
        # Each worker's rows of the time series, and how many of them are in the figures so far.
        self.slices: list[list[Interval]] = []
        self.folded: list[int] = []
        self.so_far = Totals()
        self.last_row: Interval | None = None
        self.window = (0, 0)
        self.t0 = 0
        self.aborted = False
        self.broken: list[dict[str, Any]] = []
        self.warmup_ns = whole_ticks(plan.warmup)
        self.duration_ns = (sum(whole_ticks(s.seconds) for s in options.stages)
                            if options.stages else whole_ticks(plan.duration))

    # -- workers -------------------------------------------------------------------------

    def start_workers(self) -> None:
        plan, options = self.plan, self.options
        mine = segment_rooms(plan.rooms, options.segment)
        rooms = [n for n in split(mine, self.procs) if n]
        schedule = None
        if plan.mode == "open":
            schedule = Schedule(options.rate, self.warmup_ns,
                                list(options.stages) if options.stages else None,
                                self.duration_ns)
        # fork when we may: nothing is running in this process yet, and it starts at once.
        methods = multiprocessing.get_all_start_methods()
        context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        for index, share in enumerate(rooms):
            mine_chan, theirs = multiprocessing.Pipe()
            worker_plan = dataclasses.replace(
                plan, rooms=share, warmup=self.warmup_ns / 1e9,
                schedule=Schedule.scaled(schedule, share / plan.rooms) if schedule else None)
            if len(rooms) == 1:
                worker: Any = threading.Thread(
                    target=run_worker, args=(worker_plan, index, theirs), daemon=True)
            else:
                worker = context.Process(
                    target=run_worker, args=(worker_plan, index, theirs), daemon=True)
            worker.start()
            self.chans.append(mine_chan)
            self.workers.append(worker)
            self.slices.append([])
            self.folded.append(0)

    def broadcast(self, *message: Any) -> None:
        for chan in self.chans:
            with contextlib.suppress(OSError):
                chan.send(message)

    def gather(self, kind: str, timeout: float) -> list[Any]:
        """Wait for a ``kind`` message from every worker, taking slices and samples as they
        come; with ``kind`` "result", also judge thresholds at each cut."""
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(self.chans):
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"workers did not report {kind!r} within {timeout:.0f} s")
            wait = min(deadline - now, 0.25, self._next_sample_in())
            ready = multiprocessing.connection.wait(
                [c for i, c in enumerate(self.chans) if i not in answers], max(wait, 0.0))
            self._take_samples()
            for ready_chan in cast("list[multiprocessing.connection.Connection]", ready):
                index = self.chans.index(ready_chan)
                try:
                    message: Any = ready_chan.recv()
                except EOFError:
                    raise BenchError(f"worker {index} ended without a word") from None
                if message[0] == "error":
                    raise BenchError(message[1])
                if message[0] == "slice":
                    self.slices[index].append(_interval(message[1]))
                    self._on_slice()
                elif message[0] == kind:
                    answers[index] = message[1:] if len(message) > 2 else message[1]
            self._show_progress()
        return [answers[i] for i in range(len(self.chans))]

    def stop_workers(self) -> None:
        self.broadcast("abort")
        for worker in self.workers:
            worker.join(timeout=5)
            if hasattr(worker, "terminate") and worker.is_alive():
                worker.terminate()

    # -- the server ----------------------------------------------------------------------

    def sample(self, name: str) -> ProcSample | None:
        if self.server_pid is None or self.cpu_clock is None:
            return None
        try:
            self.samples[name] = sample(self.server_pid, self.cpu_clock)
        except (OSError, ValueError, IndexError):
            raise BenchError(f"cannot read /proc/{self.server_pid}: is the server running "
                             "on this machine?") from None
        return self.samples[name]

    def _next_sample_in(self) -> float:
        if not self._pending_samples:
            return 1.0
        return max(0.0, (self._pending_samples[0][0] - time.monotonic_ns()) / 1e9)

    def _take_samples(self) -> None:
        now = time.monotonic_ns()
        while self._pending_samples and self._pending_samples[0][0] <= now:
            at, name = self._pending_samples.pop(0)
            taken = self.sample(name)
            if taken is not None:
                self.cut_samples[round((at - self.window[0]) / 1e6)] = taken

    def _plan_samples(self) -> None:
        """Sample the server at every cut of the time series, through the longest drain."""
        start, end = self.window
        step = max(1, round(self.plan.interval * 1e9))
        cuts = {end}
        at = start
        while at <= end + round(self.plan.drain * 1e9):
            cuts.add(at)
            at += step
        if self.options.stages:
            at = start
            for stage in self.options.stages:
                at += whole_ticks(stage.seconds)
                cuts.add(at)
        names = {start: "window_start", end: "window_end"}
        self._pending_samples = [(t, names.get(t, f"cut_{t}")) for t in sorted(cuts)]

    # -- progress and early verdicts -----------------------------------------------------

    def _on_slice(self) -> None:
        """Folds the rows every worker has now reported into the figures so far, and, with
        ``--abort-on-fail``, judges the thresholds on them."""
        if not all(self.slices):
            return
        upto = min(rows[-1].end_s for rows in self.slices)
        newest: Interval | None = None
        for index, rows in enumerate(self.slices):
            while self.folded[index] < len(rows) and rows[self.folded[index]].end_s <= upto:
                row = rows[self.folded[index]]
                self.folded[index] += 1
                self.so_far.add_interval(row)
                self.so_far.latency.merge(row.latency)
                self.so_far.lag.merge(row.lag)
                self.so_far.counts["errors"] += row.errors
                newest = self.so_far.intervals[row.key]
        if newest is None:
            return
        self.last_row = newest
        if not (self.options.abort_on_fail and self.options.thresholds) or self.aborted:
            return
        so_far = {"latency_us": summary_us(self.so_far.latency),
                  "lag_us": summary_us(self.so_far.lag),
                  "error_count": self.so_far.counts["errors"]}
        # Before the end only what has been measured is judged.
        broken = [r for r in evaluate(list(self.options.thresholds), so_far, final=False)
                  if r["value"] is not None and not r["ok"]]
        if broken:
            self.aborted = True
            self.broken = broken
            self.broadcast("stop")

    def _show_progress(self) -> None:
        if self.progress is None or not self.t0:
            return
        self.progress.show(self.progress_text(time.monotonic_ns()))

    def progress_text(self, now: int) -> str:
        """The progress line at ``now`` (monotonic ns), once the load has a start: the phase,
        the last interval's figures and the time left."""
        start, end = self.window
        drain = self.plan.drain
        if now < start:
            phase = (f"warm-up {(now - self.t0) / 1e9:.0f} of {self.warmup_ns / 1e9:g} s"
                     if now >= self.t0 else "starting")
            left = f"{(end - now) / 1e9:.0f} s left, then up to {drain:g} s drain"
        elif now < end and not self.aborted:
            phase = f"measuring {(now - start) / 1e9:.0f} of {self.duration_ns / 1e9:g} s"
            left = f"{(end - now) / 1e9:.0f} s left, then up to {drain:g} s drain"
        else:
            phase = "drain" if not self.aborted else "stopping (threshold broken)"
            left = f"up to {max(0.0, (end - now) / 1e9 + drain):.0f} s left"
        last = self.last_row
        if last is not None and last.end_s > last.start_s:
            rate = last.delivered / (last.end_s - last.start_s)
            figures = (f"last {last.end_s - last.start_s:g} s: {rate:,.0f} deliveries/s, "
                       f"p99 {format_us(summary_us(last.latency)['p99'])}, "
                       f"errors {last.errors:,}")
        else:
            figures = "no interval measured yet"
        return f"{phase} | {figures} | {left}"

    # -- the run -------------------------------------------------------------------------

    def run(self) -> Totals:
        plan = self.plan
        self.sample("begin")
        self.start_workers()
        try:
            created = self.gather("created", CREATE_TIMEOUT)
            rooms = sum(n for n, _ in created)
            if not rooms:
                errors: Counter[str] = Counter()
                for _, e in created:
                    errors.update(e)
                raise BenchError("no room could be created: " + ", ".join(
                    f"{k} {v:,}" for k, v in errors.items()))
            if self.progress:
                self.progress.show(f"created {rooms:,} rooms; joining", force=True)
            self.sample("created")
            join_started = time.monotonic_ns()
            self.broadcast("join")
            joined = self.gather("joined", JOIN_TIMEOUT)
            join_ns = time.monotonic_ns() - join_started
            self.sample("joined")
            joins = sum(j["joins"] for j in joined)
            if self.options.ready_file:
                with open(self.options.ready_file, "w") as f:
                    f.write(f"{joins} members joined\n")
            self.t0 = self._start_time()
            self.window = (self.t0 + self.warmup_ns, self.t0 + self.warmup_ns + self.duration_ns)
            self._plan_samples()
            if self.progress:
                self.progress.show(f"{joins:,} members joined; warm-up", force=True)
            stage_starts = []
            if self.options.stages:
                at = self.window[0]
                for stage in self.options.stages:
                    stage_starts.append(at)
                    at += whole_ticks(stage.seconds)
            self.broadcast("start", self.t0, *self.window, stage_starts)
            results = self.gather("result", (self.window[1] - time.monotonic_ns()) / 1e9
                                  + plan.drain + 60.0)
            self._take_samples()
            if "window_end" not in self.samples:  # stopped early
                self.sample("window_end")
        finally:
            self.stop_workers()
            if self.progress:
                self.progress.done()
        return self.totals(joined, join_ns, results)

    def _start_time(self) -> int:
        start_at, path = self.options.start_at, self.options.start_at_file
        if path is not None:
            if self.progress:
                self.progress.show(f"waiting for a start time in {path}", force=True)
            start_at = read_start_at(path)
        now = time.monotonic_ns()
        if start_at is None:
            return now + START_DELAY_NS
        at = now + round((start_at - time.time()) * 1e9)
        if at < now + START_DELAY_NS:
            if path is None:
                raise BenchError(f"--start-at {start_at:.3f} had passed by the time every "
                                 "member had joined: give a later time")
            raise BenchError(f"the start time {start_at:.3f} in {path} had passed by the time "
                             "it was read: write a later one")
        return at

    def totals(self, joined: list[dict[str, Any]], join_ns: int,
               results: list[dict[str, Any]]) -> Totals:
        """What the workers counted, summed (see results.Totals)."""
        total = Totals(segments=[list(self.options.segment)], aborted=self.aborted)
        total.started_epoch_s = time.time() - (time.monotonic_ns() - self.window[0]) / 1e9
        for j in joined:
            total.join.merge(Histogram.from_state(j["latency"]))
        total.join_seconds = join_ns / 1e9
        for result in results:
            total.counts.update(result["counts"])
            total.errors.update(result["errors"])
            total.generator_cpu_s += result["cpu_s"]
            total.processes += 1
            total.measured_s = max(total.measured_s, result["measured_s"])
            total.precise_ticks = total.precise_ticks and result["precise_ticks"]
        for rows in self.slices:
            for row in rows:
                total.latency.merge(row.latency)
                total.lag.merge(row.lag)
                total.add_interval(row)
        self._server_rows(total)
        total.server = self._server_raw()
        return total

    def _server_rows(self, total: Totals) -> None:
        for row in total.intervals.values():
            a = self.cut_samples.get(round(row.start_s * 1000))
            b = self.cut_samples.get(round(row.end_s * 1000))
            if a is not None and b is not None and b.at_ns > a.at_ns:
                row.server_cpu = round((b.cpu_s - a.cpu_s) / ((b.at_ns - a.at_ns) / 1e9), 4)
                row.server_rss_bytes = b.rss_bytes

    def _server_raw(self) -> dict[str, Any] | None:
        s = self.samples
        if self.server_pid is None or self.cpu_clock is None or not {
                "window_start", "window_end", "joined", "created", "begin"} <= set(s):
            return None
        return {
            "pid": self.server_pid,
            "cpu_clock": self.cpu_clock.name,
            "cpu_resolution_us": self.cpu_clock.resolution_s * 1e6,
            "cpu_s": s["window_end"].cpu_s - s["window_start"].cpu_s,
            "window_s": (s["window_end"].at_ns - s["window_start"].at_ns) / 1e9,
            "join_cpu_s": s["joined"].cpu_s - s["created"].cpu_s,
            "rss_bytes": s["window_end"].rss_bytes,
            "rss_begin_bytes": s["begin"].rss_bytes,
            "processes": s["window_end"].processes,
            "supervisor_cpu_s": s["window_end"].own_cpu_s - s["window_start"].own_cpu_s,
            "supervisor_join_cpu_s": s["joined"].own_cpu_s - s["created"].own_cpu_s,
        }


def read_start_at(path: str, timeout: float = START_AT_FILE_TIMEOUT) -> float:
    """The wall-clock time to start at (seconds since the epoch) that a coordinator writes to
    ``path`` as one line, once every generator is ready; waits for the whole line to be there.

    Raises BenchError if no line is there within ``timeout`` seconds, or if it is not a time.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        # A line is whole once its newline is there: a coordinator may be writing it still.
        if text.endswith("\n"):
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise BenchError(f"--start-at-file {path}: {text.strip()!r} is not a time in "
                                 "seconds since the epoch (write one line, e.g. 1767225600.5)")
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"--start-at-file {path}: no start time was written to it within "
                             f"{timeout:.0f} s of every member joining")
        time.sleep(0.01)


def _interval(piece: dict[str, Any]) -> Interval:
    return Interval(
        phase=piece["phase"], start_s=piece["start_s"], end_s=piece["end_s"],
        stage=piece["stage"], offered=piece["offered"], sent=piece["sent"],
        delivered=piece["delivered"], errors=piece["errors"],
        latency=Histogram.from_state(piece["latency"]), lag=Histogram.from_state(piece["lag"]),
    )


def run(plan: Plan, options: Options, progress: Progress | None = None) -> tuple[Totals, list[
        dict[str, Any]]]:
    """Carry out ``plan`` and return what it counted, and the thresholds an early verdict
    broke (``--abort-on-fail``).

    Raises BenchError when the run cannot be carried out.
    """
    raise_fd_limit()
    if options.server_pid is not None:
        try:
            sample(options.server_pid)
        except (OSError, ValueError, IndexError):
            raise BenchError(f"--server-pid {options.server_pid}: no such process here") from None
    controller = Controller(plan, options, progress)
    return controller.run(), controller.broken


def default_progress() -> Progress:
    return Progress(sys.stderr)
