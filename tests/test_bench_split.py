"""One load split over several generators: ``--segment I/N`` and ``pugfast bench merge``.

On loopback, segments of a load merge into the totals one generator of the whole load counts,
merge refuses what is not one load, and a generator starts at the time written to its
``--start-at-file``. Across machines, simulated: the relay listens on a bridge in a network
namespace of its own, and two generators, each in a namespace of its own joined to that bridge
by a veth pair, run segments 0/2 and 1/2 at the same moment, which the test writes to their
``--start-at-file`` once both have joined (``--ready-file``), as a coordinator would; nothing
leaves the machine. The merged report has the totals of one generator running the whole load
from one of those namespaces, and its histogram is exactly the sum of the segments'.

The namespaces need root and iproute2; without them that test skips and says so, except under
CI (which .ci/run provisions), where that is a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench_kit import (
    ROOT,
    bench,
    bench_command,
    bench_here,
    relay_process,
    start_bench,
    thread_relay,
    wait_for_file,
)
from cluster_kit import binary, ip

from pugfast.bench.histogram import Histogram

TOTALS = ("rooms", "connections", "offered", "sent", "expected", "delivered", "lost")
LOAD = ["--rooms", "6", "--members", "3", "--rate", "300", "--warmup", "0.3", "--duration", "1"]


# Once every generator has joined, how far ahead the test sets their start: time enough for
# a generator that polls its --start-at-file to see it on a loaded machine.
START_AHEAD = 5.0


def write_start_at(path: Path) -> float:
    """Writes a start time START_AHEAD from now to ``path`` in one step (a reader never sees
    half of it), as a coordinator would; returns it."""
    start_at = round(time.time() + START_AHEAD, 3)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{start_at}\n")
    partial.rename(path)
    return start_at


def merge(*paths: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bench_command("merge", *map(str, paths), *extra), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def write(path: Path, report: dict[str, Any]) -> Path:
    path.write_text(json.dumps(report))
    return path


def assert_one_load(merged: dict[str, Any], whole: dict[str, Any],
                    parts: list[dict[str, Any]]) -> None:
    for key in TOTALS:
        assert merged[key] == whole[key], key
    assert merged["lost"] == 0 and merged["errors"] == {} and merged["error_count"] == 0
    assert merged["segments"] == [[0, 2], [1, 2]]
    # The merged histogram is the sum of the segments', bucket by bucket.
    total = Histogram()
    for part in parts:
        total.merge(Histogram.from_state(part["histograms"]["latency"]))
    assert merged["histograms"]["latency"] == total.to_state()
    assert merged["latency_us"]["count"] == merged["delivered"]
    # So its percentiles lie within the segments' (to the histogram's precision).
    p99s = [part["latency_us"]["p99"] for part in parts]
    assert min(p99s) <= merged["latency_us"]["p99"] <= max(p99s)
    assert merged["config"]["segment"] is None


def test_segments_merge_into_the_totals_of_the_whole_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with thread_relay() as url:
        _, whole = bench(capsys, url, *LOAD)
        parts = [bench(capsys, url, *LOAD, "--segment", f"{i}/2")[1] for i in range(2)]
    assert [p["rooms"] for p in parts] == [3, 3]
    assert [p["offered"] for p in parts] == [150, 150]
    done = merge(*(write(tmp_path / f"{i}.json", p) for i, p in enumerate(parts)),
                 extra=("--json", "--threshold", "loss<=0", "--threshold", "p99<1ns"))
    assert done.returncode == 99, done.stderr  # the thresholds are judged on the sum
    merged = json.loads(done.stdout)
    assert_one_load(merged, whole, parts)
    verdicts = {v["threshold"]: v["ok"] for v in merged["thresholds"]}
    assert verdicts == {"loss<=0": True, "p99<1ns": False}
    # The time series merges row by row.
    rows = [r for r in merged["intervals"] if r["phase"] == "measure"]
    assert sum(r["offered"] for r in rows) == 300


def test_merge_refuses_what_is_not_one_load(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with thread_relay() as url:
        _, a = bench(capsys, url, *LOAD, "--segment", "0/2")
    b = dict(a, config=dict(a["config"], rate=600.0))
    done = merge(write(tmp_path / "a.json", a), write(tmp_path / "b.json", b))
    assert done.returncode == 2 and "of another load: its rate differ" in done.stderr
    done = merge(tmp_path / "a.json", tmp_path / "a.json")
    assert done.returncode == 2 and "segment 0/2 comes twice" in done.stderr
    old = write(tmp_path / "old.json", dict(a, version=1))
    done = merge(old)
    assert done.returncode == 2 and "only version 2 reports" in done.stderr
    done = merge(tmp_path / "a.json")
    assert done.returncode == 0
    assert "segments 1/2 are missing" in done.stderr
    done = merge()
    assert done.returncode == 2 and "merge needs the --json reports" in done.stderr


def test_a_generator_starts_at_the_time_written_to_its_start_file(tmp_path: Path) -> None:
    ready, start_file = tmp_path / "ready", tmp_path / "start-at"
    with thread_relay() as url:
        run = start_bench(url, *LOAD, "--segment", "1/2", "--ready-file", str(ready),
                          "--start-at-file", str(start_file), "--json", "--quiet")
        wait_for_file(ready, run)
        # Every member has joined, and the generator waits, however long it takes to write.
        time.sleep(1.0)
        assert run.poll() is None
        start_at = write_start_at(start_file)
        out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    report = json.loads(out)
    # The window opens after the warm-up, from the time written.
    assert abs(report["started_epoch_s"] - start_at - 0.3) < 0.5
    assert report["offered"] == 150 and report["lost"] == 0


@pytest.mark.parametrize(("written", "message"), [
    ("soon\n", "'soon' is not a time in seconds since the epoch"),
    ("1000000000.0\n", "the start time 1000000000.000 in"),
])
def test_a_start_file_with_no_usable_time_ends_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str, message: str
) -> None:
    start_file = tmp_path / "start-at"
    start_file.write_text(written)
    with thread_relay() as url:
        status, _ = bench_here(capsys, url, *LOAD, "--start-at-file", str(start_file))
    assert status == 2
    assert message in capsys.readouterr().err


def test_a_start_time_that_has_passed_ends_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    with thread_relay() as url:
        status, _ = bench_here(capsys, url, *LOAD, "--start-at", f"{time.time() - 1:.3f}")
    assert status == 2
    assert "had passed by the time every member had joined" in capsys.readouterr().err


# -- two generators in two network namespaces -------------------------------------------------

_tags = itertools.count(1)


def refuse(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: .ci/run must provide it, and CI may not skip this", pytrace=False)
    pytest.skip(reason)


class Network:
    """A relay namespace with a bridge at 10.98.0.1/24, and generator namespaces on it."""

    RELAY_HOST = "10.98.0.1"

    def __init__(self) -> None:
        tag = f"{os.getpid()}x{next(_tags)}"
        self.relay = f"pfbench-{tag}-r"
        self.generators = [f"pfbench-{tag}-g{i}" for i in range(2)]
        self.made: list[str] = []

    def build(self) -> None:
        for ns in (self.relay, *self.generators):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.relay, "link", "add", "br0", "type", "bridge")
        ip("-n", self.relay, "addr", "add", f"{self.RELAY_HOST}/24", "dev", "br0")
        ip("-n", self.relay, "link", "set", "br0", "up")
        for i, ns in enumerate(self.generators):
            port = f"g{i}"
            ip("-n", self.relay, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            ip("-n", self.relay, "link", "set", port, "master", "br0")
            ip("-n", self.relay, "link", "set", port, "up")
            ip("-n", ns, "addr", "add", f"10.98.0.{2 + i}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    def exec_in(self, ns: str) -> list[str]:
        return [binary("ip") or "ip", "netns", "exec", ns]

    def teardown(self) -> None:
        for ns in self.made:
            for pid in ip("netns", "pids", ns).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            ip("netns", "del", ns)


@pytest.fixture
def network() -> Iterator[Network]:
    if os.geteuid() != 0:
        refuse("needs root (to create network namespaces)")
    if binary("ip") is None:
        refuse("needs the ip command (apt-get install iproute2)")
    net = Network()
    try:
        try:
            net.build()
        except RuntimeError as exc:
            refuse(f"cannot build the test network ({exc})")
        yield net
    finally:
        net.teardown()


def run_in(net: Network, ns: str, *argv: str) -> subprocess.Popen[str]:
    return start_bench(*argv, prefix=net.exec_in(ns))


def report_of(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out)


def test_two_generators_in_two_namespaces_merge_into_one_generators_totals(
    network: Network, tmp_path: Path
) -> None:
    relay_ns = network.exec_in(network.relay)
    with relay_process(prefix=relay_ns, host=network.RELAY_HOST, port=3001) as relay:
        # The relay answers inside its namespace only: ask from a generator's.
        probe = f"import urllib.request as u; u.urlopen('{relay.url}/healthz', timeout=1)"
        deadline = time.monotonic() + 30
        while subprocess.run([*network.exec_in(network.generators[0]), "python3", "-c", probe],
                             capture_output=True, check=False).returncode:
            assert time.monotonic() < deadline, "the relay did not start in its namespace"
            time.sleep(0.1)
        args = [relay.url, *LOAD, "--json", "--quiet"]
        whole = report_of(run_in(network, network.generators[0], *args))
        start_file = tmp_path / "start-at"
        runs, readies = [], []
        for i, ns in enumerate(network.generators):
            readies.append(tmp_path / f"ready-{i}")
            runs.append(run_in(network, ns, *args, "--segment", f"{i}/2", "--ready-file",
                               str(readies[i]), "--start-at-file", str(start_file)))
        for ready, run in zip(readies, runs, strict=True):
            wait_for_file(ready, run)
        start_at = write_start_at(start_file)
        parts = [report_of(r) for r in runs]
    # The segments measured the same window, from their own clocks.
    assert abs(parts[0]["started_epoch_s"] - parts[1]["started_epoch_s"]) < 0.5
    assert abs(parts[0]["started_epoch_s"] - start_at - 0.3) < 0.5
    done = merge(*(write(tmp_path / f"{i}.json", p) for i, p in enumerate(parts)),
                 extra=("--json",))
    assert done.returncode == 0, done.stderr
    assert_one_load(json.loads(done.stdout), whole, parts)
