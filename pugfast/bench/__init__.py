"""``pugfast bench``: a load generator for any pugfast relay (also ``python -m pugfast.bench``).

It creates rooms through the API (solving the proof of work), joins every member over a raw
WebSocket, and sends timestamped binary messages, either in lockstep bursts (closed loop: every
member of a room sends ``--burst`` messages, then waits until all of them are delivered; the
relay is kept saturated) or open loop at ``--rate`` messages per second in total (or ramped
through ``--stages``), each message stamped with the time it was due, so that latency counts
from the schedule (coordinated omission). It reports deliveries per second, expected against
delivered (loss), latency percentiles (HdrHistogram's layout, under 1% error), the open loop's
lag, errors by kind, how fast members joined and, given ``--server-pid`` of a local relay, the
server's CPU time per delivery and its memory; ``--out`` and ``--hdr-log`` write the time
series, ``--threshold`` judges the run, ``--segment`` runs one share of a load split over
several generators, and ``pugfast bench merge`` adds their reports up.

``--json`` prints one JSON object (version 2) with these keys:

- ``version`` (2), ``target``, ``config`` (rooms of the whole load, members, payload, mode
  ``lockstep``/``open``/``idle``, loop ``closed``/``open``/null, burst, rate, stages as
  ``[[rate, seconds], ...]``, duration, warmup, drain, interval, procs, segment ``[I, N]``,
  tick_ms, answer_pings), ``segments`` (the ``[I, N]`` this report holds);
- ``rooms`` and ``connections``: what was created and joined; ``measured_s`` (the window, or
  less if a threshold ended it: ``aborted``), ``started_epoch_s`` (when the window opened);
- ``offered`` (open loop: messages due in the window), ``sent``: messages sent (open loop:
  due) in the window; ``expected``: their deliveries, sent x (room size - 1); ``delivered``:
  how many of those arrived (during the window or the drain); ``lost`` and ``loss_ratio``;
  ``sent_total`` counts the warm-up too; all null in an idle run;
- ``received_in_window``: deliveries that arrived in the window, whenever sent;
  ``deliveries_per_s`` is that over the window's length, ``messages_per_s`` is ``sent`` over it;
- ``latency_us``: ``count``, ``p50``, ``p90``, ``p99``, ``p99.9``, ``p99.99``, ``max``,
  ``min``, ``mean`` in microseconds at three significant digits (null without samples),
  from each message's scheduled send (open loop) or its round's write (lockstep) to its
  arrival; ``lag_us`` (open loop, else null): the same for how late each message was written,
  with ``late`` (over 1 ms), ``unsent``, ``late_ratio`` and ``kept_schedule``;
- ``sequence_gaps``; ``errors``: ``{kind: count}`` (e.g. ``rate_limited``, ``close_4409``,
  ``http_503``, ``connect_ConnectionRefusedError``, ``out_of_order``, ``stalled_rooms``,
  ``unexpected_binary``); ``error_count``;
- ``join``: ``count``, ``seconds``, ``per_s``, ``latency_us``;
- ``generator``: ``cpu_s`` of its processes in the window, ``processes``,
  ``cpu_utilisation`` per process (near 1.0: the generator, not the relay, set the pace),
  ``cpu_us_per_delivery``, ``precise_ticks`` (open loop: a timerfd kept the schedule);
- ``server``: null without ``--server-pid``, else ``pid``, ``cpu_clock`` (``schedstat``:
  nanoseconds, or ``stat``: clock ticks) and ``cpu_resolution_us``, ``cpu_s`` and
  ``cpu_utilisation`` over the window, ``cpu_us_per_delivery``, ``deliveries_per_cpu_s``,
  ``cpu_us_per_join``, ``cpu_us_per_connection_s``, ``rss_bytes`` at the window's end,
  ``rss_begin_bytes`` before any room was made, ``rss_per_connection_bytes``, and
  ``processes`` (a relay with ``--workers`` is measured with its workers; then
  ``supervisor_cpu_s`` and ``supervisor_cpu_us_per_join`` are the supervisor's own share);
  ``server_raw``: the samples these come from;
- ``stages`` (with ``--stages``): per stage, the rates it ramps between, offered, sent and
  delivered per second, ``latency_us`` and ``lag_us``;
- ``intervals``: the time series, one row per ``--interval`` (and where a stage starts):
  ``start_s``, ``end_s`` (from the window's start), ``phase`` (``measure`` or ``drain``),
  ``stage``, ``offered`` (due in the row), ``sent`` (the window's messages written in the
  row), ``delivered`` (arrived in the row), ``delivered_per_s``,
  ``errors``, ``measured``, ``p50_us``, ``p99_us``, ``p99.9_us``, ``max_us``,
  ``lag_p50_us``, ``lag_p99_us``, ``lag_max_us``, ``server_cpu`` (cores), ``server_rss_bytes``,
  and the row's ``latency`` and ``lag`` histograms;
- ``histograms``: the whole window's ``latency``, ``lag`` and ``join`` histograms, exact
  (bucket counts in HdrHistogram's layout, with count, sum, minimum and maximum);
- ``thresholds``: each ``--threshold`` with its ``value`` and ``ok``; ``warnings``: sentences
  about what limits the figures (the generator falling behind, a closed loop's low tails).

The exit status is 0 after a run with no loss and no error, 1 after one with either, 99 when a
threshold was broken, and 2 when the run could not be carried out (bad arguments, an
unreachable relay), before any load starts.
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

from .outcome import UsageError, finish

__all__ = ["DESCRIPTION", "add_arguments", "main"]

DESCRIPTION = (
    "Load-test a pugfast relay: create rooms, join members, send timestamped messages in "
    "lockstep bursts (closed loop) or at an open-loop rate, and report deliveries per second, "
    "loss, latency percentiles from each message's scheduled time, errors and, with "
    "--server-pid, the relay's CPU per delivery and memory. `pugfast bench merge A.json "
    "B.json ...` adds up the reports of a load split with --segment."
)
# How long the relay has to answer before the run is refused (the bound is 2 s).
REACH_TIMEOUT = 1.5


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("must be a number of seconds, 0 or more")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a finite number of messages per second (e.g. 5000)")
    return value


def _segment(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"{text!r}: must be I/N with 0 <= I < N, e.g. 0/2")
    return int(match.group(1)), int(match.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``pugfast bench``'s arguments to ``parser``."""
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:3000",
                        help="the relay (http://, https://, ws:// or wss://; "
                        "default: http://127.0.0.1:3000); or `merge`, followed by reports")
    parser.add_argument("reports", nargs="*", metavar="REPORT.json",
                        help="with `merge`: the --json reports to add up")
    parser.add_argument("--rooms", type=_positive_int, default=10,
                        help="rooms to create (default: 10)")
    parser.add_argument("--members", type=_positive_int, default=2,
                        help="members joined to each room (default: 2)")
    parser.add_argument("--payload", type=int, default=256, metavar="BYTES",
                        help="bytes per message, at least 12 (default: 256)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--burst", type=_positive_int, metavar="K",
                      help="lockstep (closed loop): every member sends K messages, then waits "
                      "until the room has all of them (the default, with K=1)")
    load.add_argument("--rate", type=_rate, metavar="MSG_PER_S",
                      help="open loop: this many messages per second in total, spread over "
                      "every member, whatever comes back; with --stages, the rate they start "
                      "from (default 0)")
    load.add_argument("--idle", action="store_true",
                      help="send nothing: hold the members joined (for memory per connection)")
    parser.add_argument("--stages", metavar="RATE:DURATION,...",
                        help="open loop, ramping (k6's ramping-arrival-rate): each stage goes "
                        "linearly to RATE over DURATION, e.g. 1000:10s,5000:30s,0:5s; they "
                        "make the window (instead of --duration)")
    parser.add_argument("--duration", type=_seconds, default=10.0,
                        help="measured seconds (default: 10)")
    parser.add_argument("--warmup", type=_seconds, default=2.0,
                        help="seconds of load before the measurement starts (default: 2)")
    parser.add_argument("--drain", type=_seconds, default=5.0,
                        help="seconds to wait after the window for messages still in flight "
                        "(default: 5)")
    parser.add_argument("--interval", type=_seconds, default=1.0,
                        help="seconds per row of the time series (default: 1)")
    parser.add_argument("--out", metavar="FILE.csv|FILE.jsonl",
                        help="write the time series: one row per interval")
    parser.add_argument("--hdr-log", metavar="FILE",
                        help="write the latencies per interval in HdrHistogram's interval log "
                        "format (its tools read it)")
    parser.add_argument("--threshold", action="append", default=[], metavar="EXPR",
                        help="fail the run (exit 99) unless EXPR holds, e.g. 'p99<2ms', "
                        "'p99.9<10ms', 'loss<=0', 'errors==0', 'cpu_per_delivery<1us', "
                        "'lag_p99<1ms'; repeatable")
    parser.add_argument("--abort-on-fail", action="store_true",
                        help="stop the load as soon as a threshold is broken (judged after "
                        "each interval on the window so far)")
    parser.add_argument("--procs", type=_positive_int, default=1,
                        help="generator processes to spread the rooms over (default: 1)")
    parser.add_argument("--segment", type=_segment, metavar="I/N",
                        help="run the I-th of N disjoint shares of the rooms (and of the rate), "
                        "for a load split over N generators; merge their --json reports with "
                        "`pugfast bench merge`")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--start-at", type=float, metavar="EPOCH_SECONDS",
                       help="start the load at this wall-clock time, once every member has "
                       "joined, so that generators on several machines share one window "
                       "(their clocks must agree)")
    start.add_argument("--start-at-file", metavar="FILE",
                       help="as --start-at, with the time read from FILE once every member has "
                       "joined: a coordinator writes it (one line, seconds since the epoch) "
                       "once every generator is ready (their --ready-file), so no time has to "
                       "be guessed before they start")
    parser.add_argument("--server-pid", type=int, metavar="PID",
                        help="a local relay's process id: report its CPU per delivery and RSS")
    parser.add_argument("--concurrency", type=_positive_int, default=100,
                        help="connections being opened at once while joining; keep it below "
                        "the relay's listen backlog (default: 100)")
    parser.add_argument("--source-addresses", type=_positive_int, default=1, metavar="N",
                        help="spread connections over 127.0.0.1..127.0.0.N, for more than "
                        "about 28,000 connections to a loopback relay (default: 1)")
    parser.add_argument("--ignore-pings", action="store_true",
                        help="members do not answer the relay's pings (an idle crowd that "
                        "costs the generator nothing; the relay closes it after its idle "
                        "timeout)")
    parser.add_argument("--ready-file", metavar="FILE",
                        help="write a line to FILE once every member has joined")
    parser.add_argument("--ttl", type=_positive_int, default=3600,
                        help="room lifetime to ask for, seconds (default: 3600)")
    parser.add_argument("--insecure", action="store_true",
                        help="accept any TLS certificate (self-signed test relays)")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the generator's event loop (default: uvloop)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _mode(args: argparse.Namespace) -> str:
    if args.rate is not None or args.stages is not None:
        return "open"
    return "idle" if args.idle else "lockstep"


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that can be known wrong before a process starts. Returns the parsed pieces
    (mode, stages, thresholds, endpoint); raises UsageError."""
    from .schedule import parse_stages
    from .series import check_out
    from .thresholds import check_applicable, parse
    from .worker import Endpoint

    if args.reports:
        raise UsageError(f"unexpected arguments {' '.join(args.reports)!r} (only `merge` "
                         "takes reports)")
    try:
        endpoint = Endpoint(args.url, args.insecure)
        endpoint.source_addresses(args.source_addresses)
        stages = parse_stages(args.stages) if args.stages is not None else None
        thresholds = [parse(t) for t in args.threshold]
        mode = _mode(args)
        check_applicable(thresholds, mode, args.server_pid is not None)
        if args.out:
            check_out(args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.payload < 12:
        raise UsageError("--payload must be at least 12 bytes (time and sequence number)")
    if stages is not None and (args.burst or args.idle):
        raise UsageError("--stages ramps the open loop: it goes with --rate, not --burst or "
                         "--idle")
    if mode == "open" and stages is None and not args.rate > 0:
        raise UsageError("--rate must be more than 0")
    if mode != "idle" and args.members < 2:
        raise UsageError(f"--members {args.members}: a room needs two members for a message "
                         "to be delivered (--idle holds single members)")
    if args.interval < 0.001:
        raise UsageError("--interval must be at least 0.001 s")
    if args.segment and args.segment[1] > args.rooms:
        raise UsageError(f"--segment {args.segment[0]}/{args.segment[1]}: there are only "
                         f"{args.rooms} rooms to share out")
    return {"mode": mode, "stages": stages, "thresholds": thresholds, "endpoint": endpoint}


def reach(endpoint: Any, timeout: float = REACH_TIMEOUT) -> None:
    """Ask the relay for its limits; raises UsageError naming what went wrong."""
    url = f"{endpoint.api}/api/limits"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=endpoint.ssl) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise UsageError(f"{url} answered HTTP {exc.code}: is this a pugfast relay?") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach the relay at {endpoint.api}: "
                         f"{type(reason).__name__}: {reason}") from None


def main(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` describe (or merge reports) and print its report; return
    the exit status."""
    if args.url == "merge":
        from .merge import merge_main

        return merge_main(args)
    try:
        parsed = check(args)
        reach(parsed["endpoint"])
    except UsageError as exc:
        print(f"pugfast bench: error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        return _run(args, parsed)
    except KeyboardInterrupt:
        print("pugfast bench: interrupted", file=sys.stderr)
        return 130


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, parsed: dict[str, Any]) -> int:
    from .control import BenchError, Options, default_progress, run
    from .worker import Plan

    mode = parsed["mode"]
    stages = parsed["stages"]
    plan = Plan(
        url=args.url, rooms=args.rooms, members=args.members, payload=args.payload,
        mode=mode, burst=args.burst or 1, duration=args.duration, warmup=args.warmup,
        drain=args.drain, interval=args.interval, concurrency=args.concurrency,
        source_addresses=args.source_addresses, insecure=args.insecure,
        event_loop=args.event_loop, ttl=args.ttl, answer_pings=not args.ignore_pings,
    )
    options = Options(
        procs=args.procs, server_pid=args.server_pid,
        thresholds=tuple(parsed["thresholds"]), abort_on_fail=args.abort_on_fail,
        segment=args.segment or (0, 1), start_at=args.start_at,
        start_at_file=args.start_at_file, ready_file=args.ready_file,
        stages=tuple(stages) if stages else None, rate=args.rate or 0.0,
    )
    try:
        totals, broken_early = run(plan, options,
                                   progress=None if args.quiet else default_progress())
    except BenchError as exc:
        print(f"pugfast bench: error: {exc}", file=sys.stderr)
        return 2
    config = {
        "rooms": args.rooms, "members": args.members, "payload": args.payload, "mode": mode,
        "loop": {"lockstep": "closed", "open": "open"}.get(mode),
        "burst": plan.burst if mode == "lockstep" else None,
        "rate": args.rate if mode == "open" else None,
        "stages": [[s.target, s.seconds] for s in stages] if stages else None,
        "duration": round(sum(s.seconds for s in stages), 3) if stages else args.duration,
        "warmup": args.warmup, "drain": args.drain, "interval": args.interval,
        "procs": args.procs, "segment": list(args.segment) if args.segment else None,
        "tick_ms": 1 if mode == "open" else None, "answer_pings": not args.ignore_pings,
    }
    return finish(args, totals, args.url, config, list(parsed["thresholds"]), broken_early)
