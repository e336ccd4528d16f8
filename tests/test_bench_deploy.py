"""deploy/bench-job.yaml: a Kubernetes Indexed Job running segments of one load, and a Job that
merges them. It has never run on a cluster (its comments say so); here it is validated against
the Kubernetes API schema with kubernetes-validate (a test requirement, installed by .ci/run),
and its pugfast commands are parsed by pugfast bench's own argument checks.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from bench_kit import ROOT

from pugfast.bench import add_arguments, check

JOB = ROOT / "deploy" / "bench-job.yaml"


def need_validator() -> str:
    path = shutil.which("kubernetes-validate")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("kubernetes-validate is missing: .ci/run installs it")
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    return path


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_validator(), "--strict", str(path)], capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_job_passes_the_kubernetes_schema(tmp_path: Path) -> None:
    done = validate(JOB)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == 3
    # The validator does reject a broken Job (so the pass above means something).
    broken = tmp_path / "broken.yaml"
    broken.write_text(JOB.read_text().replace("completionMode: Indexed",
                                              "completionMode: Indexed\n  completionsMode: 4"))
    assert validate(broken).returncode != 0


def test_the_job_says_it_was_not_run_on_a_cluster() -> None:
    assert "NOT RUN ON A CLUSTER" in JOB.read_text()


def commands() -> list[str]:
    """The shell commands the Job's containers run, folded as YAML folds them."""
    yaml = pytest.importorskip("yaml", reason="PyYAML (kubernetes-validate brings it)")
    found = []
    for doc in yaml.safe_load_all(JOB.read_text()):
        if doc["kind"] == "Job":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                found += container["args"]
    return found


def test_the_segments_and_the_merge_agree_and_parse() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML (kubernetes-validate brings it)")
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(JOB.read_text())}
    job = docs["pugfast-bench"]["spec"]
    assert job["completionMode"] == "Indexed"
    segments = job["completions"]
    assert job["parallelism"] == segments
    segment_command, merge_command = commands()
    assert f'--segment "$JOB_COMPLETION_INDEX/{segments}"' in segment_command
    assert re.search(rf"-lt {segments}\b", merge_command)
    # The segment's pugfast bench command line passes pugfast bench's own checks.
    line = segment_command.split(">")[0].replace('"$RELAY_URL"', "http://relay.example:3000")
    line = line.replace('"$JOB_COMPLETION_INDEX', '"0').replace('"$START_AT"', "1900000000")
    argv = shlex.split(line)
    assert argv[:2] == ["pugfast", "bench"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parsed = check(parser.parse_args(argv[2:]))
    assert parsed["mode"] == "open"
    merge = shlex.split(merge_command.split("done;", 1)[1])
    assert merge[:3] == ["pugfast", "bench", "merge"]
    args = parser.parse_args(merge[2:])
    assert args.url == "merge" and args.threshold
