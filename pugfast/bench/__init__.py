"""``pugfast bench``: a load generator for any pugfast relay (also ``python -m pugfast.bench``).

It creates rooms through the API (solving the proof of work), joins every member over a raw
WebSocket, and sends timestamped binary messages, either in lockstep bursts (every member of a
room sends ``--burst`` messages, then waits until all of them are delivered: the relay is kept
saturated) or open loop at ``--rate`` messages per second in total. It reports deliveries per
second, expected against delivered (loss), latency percentiles from a log-bucket histogram,
errors by kind, how fast members joined and, given ``--server-pid`` of a local relay, the
server's CPU time per delivery and its memory.

``--json`` prints one JSON object with these keys:

- ``version`` (1), ``target``, ``config`` (rooms, members, payload, mode, burst, rate,
  duration, warmup, drain, procs);
- ``rooms`` and ``connections``: what was created and joined;
- ``sent``: messages sent in the measured window; ``expected``: their deliveries, sent x
  (room size - 1); ``delivered``: how many of those arrived (during the window or the drain);
  ``lost`` and ``loss_ratio``; ``sent_total`` counts the warm-up too;
- ``received_in_window``: deliveries that arrived in the window, whenever sent;
  ``deliveries_per_s`` is that over the window's length, ``messages_per_s`` is ``sent`` over it;
- ``latency_us``: ``count``, ``p50``, ``p90``, ``p99``, ``p99.9``, ``max``, ``min``, ``mean``
  in microseconds (sender's write to receiver's read), ``histogram``: ``[low_ns, high_ns,
  count]`` per non-empty bucket;
- ``sequence_gaps``: messages skipped in a sender's sequence; ``errors``: ``{kind: count}``
  (e.g. ``rate_limited``, ``close_4409``, ``http_503``, ``connect_ConnectionRefusedError``,
  ``out_of_order``, ``stalled_rooms``, ``unexpected_binary`` for a binary message that is not
  one of the generator's);
- ``join``: ``count``, ``seconds``, ``per_s``, ``latency_us``;
- ``generator``: ``cpu_s`` the generator's processes spent in the window,
  ``cpu_utilisation`` per process (near 1.0: the generator, not the relay, set the pace) and
  ``cpu_us_per_delivery`` (``cpu_s`` over ``received_in_window``, as the server's);
- ``server``: null without ``--server-pid``, else ``pid``, ``cpu_s`` and ``cpu_utilisation``
  over the window, ``cpu_us_per_delivery``, ``deliveries_per_cpu_s``, ``cpu_us_per_join``,
  ``rss_bytes`` at the window's end, ``rss_begin_bytes`` before any room was made,
  ``rss_per_connection_bytes`` (the growth over the joined connections), and ``processes``:
  the pid and its descendants are measured together (a relay with ``--workers`` is a
  supervisor and its workers). With more than one, ``supervisor_cpu_s`` and
  ``supervisor_cpu_us_per_join`` are the pid's own share: the cost of routing connections.

The exit status is 0 after a run with no loss and no error, 1 after one with either, and 2
when the run could not be carried out.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["DESCRIPTION", "add_arguments", "main"]

DESCRIPTION = (
    "Load-test a pugfast relay: create rooms, join members, send timestamped messages in "
    "lockstep bursts or at an open-loop rate, and report deliveries per second, loss, latency "
    "percentiles, errors and, with --server-pid, the relay's CPU per delivery and memory."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``pugfast bench``'s arguments to ``parser``."""
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:3000",
                        help="the relay (http://, https://, ws:// or wss://; "
                        "default: http://127.0.0.1:3000)")
    parser.add_argument("--rooms", type=_positive_int, default=10,
                        help="rooms to create (default: 10)")
    parser.add_argument("--members", type=_positive_int, default=2,
                        help="members joined to each room (default: 2)")
    parser.add_argument("--payload", type=int, default=256, metavar="BYTES",
                        help="bytes per message, at least 12 (default: 256)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--burst", type=_positive_int, metavar="K",
                      help="lockstep: every member sends K messages, then waits until the "
                      "room has all of them (the default, with K=1)")
    load.add_argument("--rate", type=float, metavar="MSG_PER_S",
                      help="open loop: send this many messages per second in total, "
                      "spread over every member, whatever comes back")
    load.add_argument("--idle", action="store_true",
                      help="send nothing: hold the members joined (for memory per connection)")
    parser.add_argument("--duration", type=_seconds, default=10.0,
                        help="measured seconds (default: 10)")
    parser.add_argument("--warmup", type=_seconds, default=2.0,
                        help="seconds of load before the measurement starts (default: 2)")
    parser.add_argument("--drain", type=_seconds, default=5.0,
                        help="seconds to wait after the window for messages still in flight "
                        "(default: 5)")
    parser.add_argument("--procs", type=_positive_int, default=1,
                        help="generator processes to spread the rooms over (default: 1)")
    parser.add_argument("--server-pid", type=int, metavar="PID",
                        help="a local relay's process id: report its CPU per delivery and RSS")
    parser.add_argument("--concurrency", type=_positive_int, default=100,
                        help="connections being opened at once while joining; keep it below "
                        "the relay's listen backlog (default: 100)")
    parser.add_argument("--source-addresses", type=_positive_int, default=1, metavar="N",
                        help="spread connections over 127.0.0.1..127.0.0.N, for more than "
                        "about 28,000 connections to a loopback relay (default: 1)")
    parser.add_argument("--ttl", type=_positive_int, default=3600,
                        help="room lifetime to ask for, seconds (default: 3600)")
    parser.add_argument("--insecure", action="store_true",
                        help="accept any TLS certificate (self-signed test relays)")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the generator's event loop (default: uvloop)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` describe and print its report; return the exit status."""
    import orjson

    from .control import BenchError, default_progress, run
    from .report import format_text
    from .worker import Plan

    if args.payload < 12:
        print("pugfast bench: error: --payload must be at least 12 bytes (time and sequence "
              "number)", file=sys.stderr)
        return 2
    mode = "open" if args.rate is not None else "idle" if args.idle else "lockstep"
    if mode == "open" and not args.rate > 0:
        print("pugfast bench: error: --rate must be more than 0", file=sys.stderr)
        return 2
    plan = Plan(
        url=args.url, rooms=args.rooms, members=args.members, payload=args.payload,
        mode=mode, burst=args.burst or 1, rate=args.rate or 0.0, duration=args.duration,
        warmup=args.warmup, drain=args.drain, concurrency=args.concurrency,
        source_addresses=args.source_addresses, insecure=args.insecure,
        event_loop=args.event_loop, ttl=args.ttl,
    )
    try:
        report = run(plan, procs=args.procs, server_pid=args.server_pid,
                     progress=None if args.quiet else default_progress())
    except (BenchError, ValueError) as exc:
        print(f"pugfast bench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_text(report))
    return 1 if report["lost"] or report["errors"] else 0
