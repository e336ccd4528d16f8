"""What ships, and how it is deployed: the sdist, the cibuildwheel configuration, the systemd
unit, the container recipe, the proxy examples and the Render Blueprint.

A test that needs a tool (Cython, systemd-analyze, nginx, caddy) skips when it is missing and
says so; under CI, where .ci/run installs them all, a missing tool fails instead. The wheel
itself (reproducible, installable without a compiler, chatting) is scripts/check_wheel.sh's job.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support import self_signed_certificate

from pugfast.config import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "pugfast.service"

GENERATED = (".c", ".so", ".pyd", ".pyc", ".o")


def need(tool: str, why: str) -> str:
    """The path of ``tool``; skip without it, or fail under CI, where .ci/run installs it."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: .ci/run installs it ({why})")
        pytest.skip(f"{tool} is not installed ({why}; .ci/run installs it)")
    return path


def checkout_files() -> list[str]:
    """The files a commit of this work tree would hold: tracked, plus untracked and not ignored."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the sdist is checked against one")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    return sorted(path for path in listed if path and (ROOT / path).is_file())


def unit_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


# -- the sdist ------------------------------------------------------------------------------


def test_sdist_holds_the_whole_checkout_and_nothing_generated(tmp_path: Path) -> None:
    files = checkout_files()
    if importlib.util.find_spec("Cython") is None:
        if os.environ.get("CI"):
            pytest.fail("Cython is missing: .ci/run installs it (setup.py needs it to make an sdist)")
        pytest.skip("Cython is not installed: setup.py needs it to make an sdist")
    # A copy, so that building (Cython writes the .c beside the .pyx, setuptools an egg-info)
    # leaves the work tree alone; and so that the generated .c exists and must be kept out.
    source = tmp_path / "src"
    for path in files:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, source / path)
    out = tmp_path / "out"
    build = subprocess.run(
        [sys.executable, "-c",
         "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))",
         str(out)],
        cwd=source, capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert (source / "_ext" / "pugfast" / "_speedups.c").exists(), "Cython did not run"
    (sdist,) = out.glob("pugfast-*.tar.gz")
    with tarfile.open(sdist) as archive:
        prefix = sdist.name.removesuffix(".tar.gz") + "/"
        members = {m.name.removeprefix(prefix) for m in archive.getmembers() if m.isfile()}

    # Only CI plumbing and git's own files (.ci/, .gitignore: dot-names) stay out.
    missing = sorted(path for path in set(files) - members if not path.startswith("."))
    assert not missing, f"the sdist lacks these files of the checkout: {missing}"
    generated = sorted(m for m in members if m.endswith(GENERATED) or "__pycache__" in m)
    assert not generated, f"the sdist holds generated or compiled files: {generated}"
    for source_file in ("_speedups.pyx", "_speedups.pxd", "_frames.pxi", "_fanout.pxi"):
        assert f"_ext/pugfast/{source_file}" in members


# -- cibuildwheel ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_cibuildwheel_builds_every_supported_python_and_tests_the_wheel(pyproject: dict) -> None:
    config = pyproject["tool"]["cibuildwheel"]
    assert config["build"].split() == ["cp310-*", "cp311-*", "cp312-*", "cp313-*"]
    assert pyproject["project"]["requires-python"] == ">=3.10"
    assert config["test-extras"] == ["test"]
    assert "test" in pyproject["project"]["optional-dependencies"]
    command = " && ".join(config["test-command"])
    assert "IMPLEMENTATION == 'cython'" in command
    assert "pytest {project}/tests" in command and '-m "not browser"' in command
    assert set(config["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert set(config["macos"]["archs"]) == {"x86_64", "arm64"}


def test_cibuildwheel_musllinux_test_requirements_are_the_test_extra_without_playwright(
    pyproject: dict,
) -> None:
    (musl,) = [o for o in pyproject["tool"]["cibuildwheel"]["overrides"] if "musllinux" in o["select"]]
    extra = [r for r in pyproject["project"]["optional-dependencies"]["test"]
             if not r.startswith("playwright")]
    assert musl["test-extras"] == []
    assert musl["test-requires"] == extra


def test_cibuildwheel_macos_deselects_only_tests_that_exist(pyproject: dict) -> None:
    (macos,) = [o for o in pyproject["tool"]["cibuildwheel"]["overrides"] if "macosx" in o["select"]]
    command = " && ".join(macos["test-command"])
    deselected = re.findall(r"--deselect (\S+)", command)
    assert deselected
    for node in deselected:
        path, _, name = node.partition("::")
        assert re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.M), (
            f"{node} is deselected on macOS but no longer exists"
        )


# -- systemd --------------------------------------------------------------------------------


def test_unit_has_the_promised_hardening() -> None:
    d = unit_directives()
    expected = {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "LimitCORE": "0",
        "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], f"{key}={value} expected, found {d.get(key)}"
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # One descriptor per WebSocket: --max-connections' default, with room to spare.
    max_connections = next(o.default for o in OPTIONS if o.name == "max-connections")
    assert int(d["LimitNOFILE"][0]) >= max_connections + 10000
    assert d["ExecStart"][0].split()[1:] == ["serve"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need("systemd-analyze", "to check the systemd unit")
    # verify insists that ExecStart's program exists: stand one in for the installed relay.
    program = tmp_path / "pugfast"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "pugfast.service"
    unit.write_text(UNIT.read_text().replace("/opt/pugfast/bin/pugfast", str(program)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even for an unknown directive or a bad value, and only says so.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_unit_exposure_stays_at_most_1_0() -> None:
    analyze = need("systemd-analyze", "to score the systemd unit")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=10", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert result.returncode == 0, overall.group(0) if overall else result.stdout + result.stderr


# -- container, proxies, Blueprint ----------------------------------------------------------


def test_container_recipe_runs_the_wheel_as_a_non_root_user() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2, "a build stage and a runtime stage"
    runtime = stages[1].replace("\\\n", " ")
    assert "gcc" not in runtime and "pip install" not in runtime, "the runtime stage installs nothing"
    user = re.search(r"^USER (\S+)", runtime, re.M)
    assert user and user.group(1).split(":")[0] not in ("0", "root")
    assert re.search(r"^EXPOSE 3000$", runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*/healthz", runtime, re.M)
    assert re.search(r'^ENTRYPOINT \["pugfast"\]', runtime, re.M)


def test_deploy_files_name_only_real_settings() -> None:
    known = {o.env for o in OPTIONS} | {name for o in OPTIONS for name in o.bare_env}
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        text = path.read_text()
        for name in set(re.findall(r"\bPUGFAST_[A-Z_]+\b", text)):
            assert name in known, f"{path.name} sets {name}, which pugfast serve does not read"


def test_nginx_example_logs_nothing_and_passes_nginx_t(tmp_path: Path) -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    servers = text.split("server {")[1:]
    assert len(servers) == 2
    for server in servers:
        assert "access_log off;" in server and "error_log stderr emerg;" in server
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text

    nginx = need("nginx", "to check deploy/nginx.conf")
    cert, key = self_signed_certificate(tmp_path, "chat.example.org")
    config = tmp_path / "nginx.conf"
    config.write_text(
        text.replace("/etc/letsencrypt/live/chat.example.org/fullchain.pem", str(cert))
        .replace("/etc/letsencrypt/live/chat.example.org/privkey.pem", str(key))
    )
    result = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_caddy_example_logs_nothing_and_validates(tmp_path: Path) -> None:
    text = (DEPLOY / "Caddyfile").read_text()
    assert not re.search(r"^\s*log\s*\{?\s*$", text, re.M), "a site-level log directive logs every request"
    assert "exclude http.log.error" in text

    caddy = need("caddy", "to check deploy/Caddyfile")
    home = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = subprocess.run(
        [caddy, "validate", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **home},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_render_blueprint_runs_one_instance_of_the_relay() -> None:
    text = (DEPLOY / "render.yaml").read_text()
    try:
        import yaml
    except ImportError:
        # No YAML parser here: check the fields line by line instead.
        fields = dict(re.findall(r"^[ \t]*-?[ \t]*(\w+):[ \t]*(\S.*?)[ \t]*$", text, re.M))
        assert re.search(r"^services:\s*$", text, re.M)
        service = {k: v.strip('"') for k, v in fields.items()}
        keys = re.findall(r"^[ \t]*- key: (\S+)", text, re.M)
    else:
        (service,) = yaml.safe_load(text)["services"]
        keys = [v["key"] for v in service["envVars"]]
        service = {k: str(v) for k, v in service.items()}
    assert service["type"] == "web" and service["runtime"] == "python"
    assert service["numInstances"] == "1"
    assert service["buildCommand"] == "pip install ."
    assert service["startCommand"].startswith("pugfast serve")
    assert service["healthCheckPath"] == "/healthz"
    assert "PUGFAST_ALLOWED_ORIGIN" in keys
