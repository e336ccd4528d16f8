"""Microbenchmark of the frame codec: the compiled extension against its pure-Python twin.

    python bench/codec_bench.py [--frames N] [--size BYTES] [--repeat N] [--json]

Parses a long stream of masked binary frames, as a server receives them, fed in socket-read
sized chunks, with each implementation in turn; prints the median frames/s of each and the
ratio. One function per measurement.
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

import pugfast._frames as py_impl

try:
    import pugfast._speedups as c_impl
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames per run")
    parser.add_argument("--size", type=int, default=256, help="payload bytes per frame")
    parser.add_argument("--repeat", type=int, default=7, help="runs per implementation (>= 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.repeat < 5:
        parser.error("--repeat must be at least 5: the median of fewer runs is noise")
    parse = measure_parse(args.frames, args.size, args.repeat)
    if args.json:
        print(json.dumps({"parse": parse}, indent=2))
    else:
        report_parse(parse)


if __name__ == "__main__":
    main()
