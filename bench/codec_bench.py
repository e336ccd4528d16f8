"""Microbenchmark of the engine: the compiled extension against its pure-Python twin.

    python bench/codec_bench.py [--frames N] [--size BYTES] [--members N] [--repeat N] [--json]

Two measurements, each with both implementations in the same run:

- parse: a long stream of masked binary frames, as a server receives them, fed in socket-read
  sized chunks; the median frames/s of each and the ratio;
- fan-out: the same frames arriving in bursts of three at one member of a room, relayed to
  every other member and flushed once per burst (one loop iteration); the median CPU time per
  delivery. The transports are sinks that take every write whole, so this is the engine's own
  cost without the system calls (bench/run.py measures the whole relay over sockets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pugfast.engine._fanout as py_fanout
import pugfast.engine._frames as py_impl

try:
    import pugfast.engine._speedups as c_impl
except ImportError:  # a source checkout that was never built
    c_impl = None

READ_SIZE = 65536  # what one socket read hands the parser


def masked_stream(frames: int, size: int) -> bytes:
    """frames masked binary frames of size bytes each, every frame with its own mask."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    return b"".join(
        py_impl.encode_frame(py_impl.OP_BINARY, payload, mask=os.urandom(4)) for _ in range(frames)
    )


def median_rate(run: Callable[[], int], repeat: int) -> dict[str, Any]:
    """Runs run() repeat times; returns its median rate in items per CPU second, and every run's.

    CPU time, not wall time: the codec is single-threaded and never waits, and CPU time does
    not count the time other processes on a busy machine take the core away.
    """
    rates = []
    for _ in range(repeat):
        start = time.process_time()
        items = run()
        rates.append(items / (time.process_time() - start))
    return {"median": statistics.median(rates), "runs": rates}


def parse_frames(impl: Any, chunks: list[bytes], max_message_bytes: int) -> int:
    """Feeds every chunk and drains the events after each, as a connection does; returns how
    many events it got."""
    parser = impl.FrameParser(max_message_bytes)
    events = 0
    for chunk in chunks:
        parser.feed(chunk)
        while parser.next_event() is not None:
            events += 1
    return events


def measure_parse(frames: int, size: int, repeat: int) -> dict[str, Any]:
    """Frames/s parsed by each implementation, and how many times faster the extension is."""
    stream = masked_stream(frames, size)
    chunks = [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]
    implementations = {"python": py_impl, "cython": c_impl}
    result: dict[str, Any] = {"frames": frames, "payload_bytes": size, "read_bytes": READ_SIZE}
    for name, impl in implementations.items():
        if impl is None:
            continue
        assert parse_frames(impl, chunks, size) == frames
        result[name] = median_rate(partial(parse_frames, impl, chunks, size), repeat)
    if c_impl is not None:
        result["ratio"] = result["cython"]["median"] / result["python"]["median"]
    return result


def report_parse(result: dict[str, Any]) -> None:
    print(
        f"parse: {result['frames']} masked binary frames of {result['payload_bytes']} bytes, "
        f"fed {result['read_bytes']} bytes at a time"
    )
    for name in ("python", "cython"):
        if name in result:
            print(f"  {name:>7}: {result[name]['median']:>14,.0f} frames/s (median, CPU time)")
        else:
            print(f"  {name:>7}: not built")
    if "ratio" in result:
        print(f"  cython/python: {result['ratio']:.1f}x")


class SinkTransport:
    """Takes every write whole and keeps only the byte count."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class QuietSession:
    def on_text(self, conn: Any, payload: bytes) -> None:
        pass

    def on_closed(self, conn: Any) -> None:
        pass


def fan_out(impl: Any, bursts: list[bytes], members: int, size: int) -> int:
    """Relays every burst from member 1 to the others, one flush per burst; returns deliveries."""
    scheduled: list[Any] = []
    flusher = impl.Flusher(scheduled.append)
    group = impl.Group()
    session = QuietSession()
    conns = []
    for member_id in range(1, members + 1):
        conn = impl.Connection(
            SinkTransport(), session, flusher, max_message_bytes=size, max_buffered_bytes=1 << 30,
            rate=0.0, burst=1, clock=time.monotonic,
        )
        conn.member_id = member_id
        group.add(conn)
        conns.append(conn)
    sender = conns[0]
    for burst in bursts:
        sender.feed_data(burst)
        flusher.flush()
    assert sum(c.transport.written for c in conns[1:]) == len(bursts) * 3 * (members - 1) * (
        size + 4 + (2 if size + 4 < 126 else 4)
    )
    return flusher.frames


def measure_fan_out(frames: int, size: int, members: int, repeat: int) -> dict[str, Any]:
    """CPU ns per delivery for each implementation, bursts of three into a room of members."""
    stream = masked_stream(frames - frames % 3, size)
    frame_len = len(stream) // (frames - frames % 3)
    bursts = [stream[i : i + 3 * frame_len] for i in range(0, len(stream), 3 * frame_len)]
    result: dict[str, Any] = {"frames": len(bursts) * 3, "payload_bytes": size, "members": members}
    for name, impl in {"python": py_fanout, "cython": c_impl}.items():
        if impl is None:
            continue
        rate = median_rate(partial(fan_out, impl, bursts, members, size), repeat)
        result[name] = {"ns_per_delivery": 1e9 / rate["median"], "runs": rate["runs"]}
    if c_impl is not None:
        result["ratio"] = result["python"]["ns_per_delivery"] / result["cython"]["ns_per_delivery"]
    return result


def report_fan_out(result: dict[str, Any]) -> None:
    print(
        f"fan-out: {result['frames']} frames of {result['payload_bytes']} bytes in bursts of 3, "
        f"room of {result['members']}"
    )
    for name in ("python", "cython"):
        if name in result:
            print(f"  {name:>7}: {result[name]['ns_per_delivery']:>10,.0f} ns CPU per delivery (median)")
    if "ratio" in result:
        print(f"  python/cython: {result['ratio']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames per run")
    parser.add_argument("--size", type=int, default=256, help="payload bytes per frame")
    parser.add_argument("--members", type=int, default=10, help="room size for the fan-out")
    parser.add_argument("--repeat", type=int, default=7, help="runs per implementation (>= 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.repeat < 5:
        parser.error("--repeat must be at least 5: the median of fewer runs is noise")
    parse = measure_parse(args.frames, args.size, args.repeat)
    fan = measure_fan_out(args.frames // 10, args.size, args.members, args.repeat)
    if args.json:
        print(json.dumps({"parse": parse, "fan_out": fan}, indent=2))
    else:
        report_parse(parse)
        report_fan_out(fan)


if __name__ == "__main__":
    main()
