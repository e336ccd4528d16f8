"""What ships, and how it is deployed: the sdist, the build without a compiler, the licence, the
release matrix and the cibuildwheel configuration, the systemd unit, the container recipe, the
proxy examples and the Render Blueprint.

A test that needs a tool (Cython, systemd-analyze, nginx, caddy) skips when it is missing and
says so; under CI, where .ci/run installs them all, a missing tool fails instead. The release
itself (20 wheels, reproducible, each installed and tested) is the job of scripts/build_wheels.sh,
scripts/check_wheel.sh and scripts/test_installed_wheel.sh, which .ci/run runs.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
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


def need_cython() -> None:
    """Skip without Cython, or fail under CI: setup.py imports it."""
    if importlib.util.find_spec("Cython") is None:
        if os.environ.get("CI"):
            pytest.fail("Cython is missing: .ci/run installs it (setup.py needs it)")
        pytest.skip("Cython is not installed: setup.py needs it")


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


def copy_of_checkout(tmp_path: Path) -> Path:
    """A copy of the checkout, so that building (Cython writes the .c beside the .pyx,
    setuptools an egg-info and build/) leaves the work tree alone."""
    files = checkout_files()
    source = tmp_path / "src"
    for path in files:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, source / path)
    return source


def build_in_process(source: Path, hook: str, out: Path, **env: str) -> subprocess.CompletedProcess:
    """Runs setuptools' PEP 517 hook (build_sdist or build_wheel) on ``source``, as pip would."""
    environment = {k: v for k, v in os.environ.items() if k != "PUGFAST_REQUIRE_EXTENSIONS"}
    return subprocess.run(
        [sys.executable, "-c",
         f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))", str(out)],
        cwd=source, capture_output=True, text=True, timeout=300, env={**environment, **env},
    )


def test_sdist_holds_the_whole_checkout_and_nothing_generated(tmp_path: Path) -> None:
    files = checkout_files()
    need_cython()
    # The generated .c then exists in the copy, and must be kept out.
    source = copy_of_checkout(tmp_path)
    out = tmp_path / "out"
    build = build_in_process(source, "build_sdist", out)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert (source / "_ext" / "pugfast" / "engine" / "_speedups.c").exists(), "Cython did not run"
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
        assert f"_ext/pugfast/engine/{source_file}" in members
    assert "LICENSE" in members


def test_normalized_sdists_of_the_same_files_are_byte_identical(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("normalize_sdist", ROOT / "scripts" / "normalize_sdist.py")
    normalize_sdist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(normalize_sdist)
    files = {"pkg-1/PKG-INFO": b"Name: pkg\n", "pkg-1/setup.py": b"print()\n", "pkg-1/a/b.py": b"x = 1\n"}

    def sdist(name: str, order: list[str], mtime: int, owner: str) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as archive:
            for member in order:
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.uname, info.uid = len(files[member]), mtime, owner, 1000
                info.mode = 0o664
                archive.addfile(info, io.BytesIO(files[member]))
        return path

    one = sdist("one.tar.gz", sorted(files), 1_700_000_000, "alice")
    two = sdist("two.tar.gz", sorted(files, reverse=True), 1_800_000_000, "bob")
    assert one.read_bytes() != two.read_bytes()
    for path in (one, two):
        normalize_sdist.normalize(path, 1_796_000_000)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == sorted(files)
        assert {archive.extractfile(m).read() for m in members} == set(files.values())
        assert {(m.mtime, m.uid, m.uname, m.mode) for m in members} == {(1_796_000_000, 0, "", 0o644)}


# -- no compiler, no failure ------------------------------------------------------------------


WARNING = "WARNING: pugfast's compiled engine was not built"


def test_without_a_compiler_the_wheel_builds_with_one_warning_and_runs_the_pure_engine(
    tmp_path: Path,
) -> None:
    need_cython()
    out = tmp_path / "out"
    # CC=false: the compiler fails at once, as a missing gcc does.
    build = build_in_process(copy_of_checkout(tmp_path), "build_wheel", out, CC="false")
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-3000:]
    assert log.count(WARNING) == 1, log[-3000:]
    assert "PUGFAST_REQUIRE_EXTENSIONS=1 makes this an error" in log
    (wheel,) = out.glob("pugfast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pugfast/engine/_fanout.py" in names
    assert not [name for name in names if name.endswith(".so")], names

    # Installed into a fresh environment, the relay starts on the pure-Python engine and says
    # so. Its dependencies come from this environment, through a path file placed after the
    # wheel's own directory (a listed directory's own .pth files do not run, so no editable
    # pugfast comes in with them).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    import aiohttp
    import orjson
    import uvloop
    dependencies = sorted({str(Path(module.__file__).parent.parent) for module in (aiohttp, orjson, uvloop)})
    (Path(site) / "zz-dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    environment = {k: v for k, v in os.environ.items() if k not in ("PUGFAST_NO_EXTENSIONS", "PYTHONPATH")}
    server = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "pugfast", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path, env=environment, stderr=subprocess.PIPE, text=True,
    )
    try:
        started = ""
        while "listening on port" not in started:
            line = server.stderr.readline()
            assert line, f"pugfast serve exited before listening: {started}"
            started += line
        assert "engine: python" in started, started
        assert str(venv) in subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import pugfast; print(pugfast.__file__)"],
            cwd=tmp_path, env=environment, capture_output=True, text=True, check=True,
        ).stdout
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_pugfast_require_extensions_makes_a_build_without_a_compiler_fail(tmp_path: Path) -> None:
    need_cython()
    out = tmp_path / "out"
    build = build_in_process(copy_of_checkout(tmp_path), "build_wheel", out, CC="false",
                             PUGFAST_REQUIRE_EXTENSIONS="1")
    log = build.stdout + build.stderr
    assert build.returncode != 0, log[-3000:]
    assert "PUGFAST_REQUIRE_EXTENSIONS is set: install a C compiler" in log, log[-3000:]
    assert WARNING not in log
    assert not list(out.glob("*.whl"))


# -- licence and build inputs -----------------------------------------------------------------


def test_license_is_mit_in_a_file_and_in_the_metadata(pyproject: dict) -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text
    project = pyproject["project"]
    # PEP 639: an SPDX expression and the files, not the deprecated table form.
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_build_inputs_are_pinned_exactly_and_the_test_extra_uses_the_same(pyproject: dict) -> None:
    def pins(requirements: list[str]) -> dict[str, str]:
        found = {}
        for requirement in requirements:
            name, _, version = requirement.partition("==")
            if name.lower() in ("cython", "setuptools"):
                found[name.lower()] = version
        return found

    build = pyproject["build-system"]["requires"]
    assert all(re.fullmatch(r"[A-Za-z]+==\d+(\.\d+)+", r) for r in build), build
    assert set(pins(build)) == {"cython", "setuptools"}
    assert pins(pyproject["project"]["optional-dependencies"]["test"]) == pins(build)
    (musl,) = [o for o in pyproject["tool"]["cibuildwheel"]["overrides"] if "musllinux" in o["select"]]
    assert pins(musl["test-requires"]) == pins(build)
    tools = (ROOT / "scripts" / "release-tools.txt").read_text().split("\n")
    assert all("==" in line for line in tools if line and not line.startswith("#"))


# -- cibuildwheel ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel_targets():
    spec = importlib.util.spec_from_file_location("wheel_targets", ROOT / "scripts" / "wheel_targets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["wheel_targets"] = module
    spec.loader.exec_module(module)
    return module


def test_every_python_of_the_matrix_is_claimed_and_none_other(pyproject: dict, wheel_targets) -> None:
    project = pyproject["project"]
    assert wheel_targets.PYTHONS[-1] == "3.14"
    assert project["requires-python"] == f">={wheel_targets.PYTHONS[0]}"
    claimed = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"]
               if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert claimed == list(wheel_targets.PYTHONS)


def test_cibuildwheel_names_the_same_linux_targets_as_the_docker_free_build(
    pyproject: dict, wheel_targets,
) -> None:
    config = pyproject["tool"]["cibuildwheel"]
    linux = config["linux"]
    # cibuildwheel's image names, as the platform tags their wheels get.
    image_tags = {"manylinux2014": "manylinux_2_17", "manylinux_2_28": "manylinux_2_28",
                  "musllinux_1_2": "musllinux_1_2", "musllinux_1_1": "musllinux_1_1"}
    cibuildwheel = {
        (f"cp{selector[2:].split('-')[0]}", f"{image_tags[linux[f'{libc}-{arch}-image']]}_{arch}")
        for selector in config["build"].split()
        for arch in linux["archs"]
        for libc in ("manylinux", "musllinux")
    }
    docker_free = {(target.cp, target.platform.tag) for target in wheel_targets.targets()}
    assert len(docker_free) == 20
    assert cibuildwheel == docker_free


def test_the_matrix_refuses_what_it_does_not_build(wheel_targets) -> None:
    assert [t.platform.tag for t in wheel_targets.targets(["3.14"], ["musllinux_1_2_aarch64"])] == [
        "musllinux_1_2_aarch64"
    ]
    with pytest.raises(ValueError, match=r"3\.9 is not in the matrix"):
        wheel_targets.targets(["3.9"])
    with pytest.raises(ValueError, match="manylinux_2_28_x86_64 is not in the matrix"):
        wheel_targets.targets(None, ["manylinux_2_28_x86_64"])
    # Every runnable wheel is one the matrix builds.
    assert {(t.python, t.platform.tag) for t in wheel_targets.targets()} >= wheel_targets.RUNNABLE


def test_cibuildwheel_builds_every_supported_python_and_tests_the_wheel(pyproject: dict) -> None:
    config = pyproject["tool"]["cibuildwheel"]
    assert config["build"].split() == ["cp310-*", "cp311-*", "cp312-*", "cp313-*", "cp314-*"]
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
