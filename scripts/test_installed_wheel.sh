#!/usr/bin/env bash
# Test a built wheel as an operator gets it: installed from binary packages alone into a fresh
# virtual environment of its own interpreter, outside the source tree, with no compiler.
#
#   scripts/test_installed_wheel.sh [--debian ROOT] [--qemu] [--tests SET] [--engine python] PYTHON DIST
#
# PYTHON is the interpreter (a pyenv one, or ROOT/usr/bin/python3.X from
# scripts/debian_python.sh, then named with --debian ROOT so that pip comes from that root's own
# wheel); --qemu runs it, and everything started from its environment, under
# qemu-aarch64-static -L ROOT. DIST holds the wheels; pip picks the one that fits.
#
# 1. A fresh venv; pugfast from DIST alone (--no-index, --only-binary :all:, CC=false), then
#    the test requirements (the test extra's, binary packages only; with --tests full also
#    tests/crosscheck-requirements.txt) from PyPI. Under qemu the
#    host's pip installs them, for the emulated CPython's tags.
# 2. From a scratch directory: pugfast imports from the venv, not from any source tree, and
#    its engine is the compiled one, loaded from the file name this CPython looks for.
# 3. SET of the suite, run from a copy of the checkout without pugfast/, _ext/ or setup.py, so
#    the installed package is the one every test and every relay the tests start imports:
#      full    the whole suite but tests/test_packaging.py (which checks the checkout, not the
#              wheel); browser tests included where Chromium is
#      engine  the tests of the engine and of what relays through it: tests/test_frames.py,
#              test_frames_differential.py, test_head.py, test_fanout.py, test_fanout_twins.py,
#              test_bench_sink.py and test_websocket.py (browser tests aside); `pugfast serve`
#              itself is step 4's (test_serve.py's stop-signal matrix alone takes over a
#              minute a version, and runs in the full suite)
#      twins   the engine's own tests, each inside one process (under qemu a test cannot start
#              another interpreter): test_frames.py, test_frames_differential.py,
#              test_head.py, test_fanout_twins.py, test_bench_sink.py
#      quick   what CI runs under qemu: test_frames.py on the compiled engine (its cases on
#              the pure twin, the same Python code on every platform, left out)
#      none    no pytest
#    Default: engine.
# 4. `pugfast serve` from the venv, and a relayed chat with it (scripts/relay_chat.sh).
# Under qemu, Hypothesis's timing checks are off (scripts/emulated_hypothesis.py).
# --engine python runs steps 3 and 4 on the pure-Python twin (PUGFAST_NO_EXTENSIONS=1) of the
# same installed package, after step 2 has shown the compiled engine loads.
# Prints PASS or FAIL for each step; exits non-zero on the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# The installed package, and nothing else, is under test.
unset PUGFAST_NO_EXTENSIONS PYTHONPATH PYTHONHOME

debian_root=""
qemu=""
tests="engine"
engine="cython"
while [ $# -gt 2 ]; do
  case "$1" in
    --debian) debian_root="$2"; shift 2 ;;
    --qemu) qemu=1; shift ;;
    --tests) tests="$2"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    *) echo "usage: $0 [--debian ROOT] [--qemu] [--tests full|engine|twins|quick|none] [--engine cython|python] PYTHON DIST" >&2; exit 2 ;;
  esac
done
[ $# -eq 2 ] || { echo "usage: $0 [--debian ROOT] [--qemu] [--tests SET] PYTHON DIST" >&2; exit 2; }
PYTHON="$1"
DIST="$(cd "$2" && pwd)"
RUN=()
if [ -n "$qemu" ]; then
  [ -n "$debian_root" ] || { echo "--qemu needs --debian ROOT" >&2; exit 2; }
  command -v qemu-aarch64-static >/dev/null || { echo "qemu-aarch64-static is missing: apt-get install qemu-user-static" >&2; exit 1; }
  RUN=(qemu-aarch64-static -L "$debian_root")
fi
[ "$engine" = cython ] || [ "$engine" = python ] || { echo "--engine: cython or python, not $engine" >&2; exit 2; }
case "$tests" in
  full) selection=(tests --ignore=tests/test_packaging.py) ;;
  engine) selection=(-m "not browser" tests/test_frames.py tests/test_frames_differential.py tests/test_head.py
                     tests/test_fanout.py tests/test_fanout_twins.py tests/test_bench_sink.py
                     tests/test_websocket.py) ;;
  twins) selection=(-m "not browser" tests/test_frames.py tests/test_frames_differential.py tests/test_head.py
                    tests/test_fanout_twins.py tests/test_bench_sink.py) ;;
  quick) selection=(-m "not browser" -k "[c-" tests/test_frames.py) ;;
  none) selection=() ;;
  *) echo "--tests: full, engine, twins, quick or none, not $tests" >&2; exit 2 ;;
esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pugfast-installed.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
step() { printf '\n== %s\n' "$*"; }

VENV="$WORK/venv"
VPY=("${RUN[@]}" "$VENV/bin/python")
version="$("${RUN[@]}" "$PYTHON" -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine())')" ||
  fail "$PYTHON does not run"
step "CPython $version ($PYTHON${qemu:+, under qemu}): a fresh venv, pugfast from $DIST"
if [ -n "$qemu" ]; then
  # pip itself would take many minutes under emulation to resolve and unpack the test
  # requirements: the host's pip installs into the venv instead, for the target's own tags (its
  # CPython version, and the manylinux tags its glibc runs). The next step checks that the
  # emulated interpreter then imports the compiled engine under the name it looks for.
  "${RUN[@]}" "$PYTHON" -m venv --without-pip "$VENV" || fail "no venv"
  IFS=' ' read -r pyversion glibc arch < <("${VPY[@]}" -c \
    'import os, platform, sys; print("%d.%d" % sys.version_info[:2], os.confstr("CS_GNU_LIBC_VERSION").split()[1].replace(".", "_"), platform.machine())')
  site="$("${VPY[@]}" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  mapfile -t tags < <(python3 "$ROOT/scripts/wheel_targets.py" platforms "manylinux_${glibc}_$arch" | tr ' ' '\n')
  INSTALL=(python3 -m pip install --target "$site" "${tags[@]}" --python-version "$pyversion"
           --implementation cp --abi "cp${pyversion/./}")
elif [ -n "$debian_root" ]; then
  # Debian's ensurepip looks for pip in the system's /usr/share/python-wheels, not the root's.
  "${RUN[@]}" "$PYTHON" -m venv --without-pip "$VENV" || fail "no venv"
  pip_wheels=("$debian_root"/usr/share/python-wheels/pip-*.whl)
  [ -f "${pip_wheels[0]}" ] || fail "no pip wheel in $debian_root/usr/share/python-wheels"
  "${VPY[@]}" "${pip_wheels[0]}/pip" install -q --no-compile --no-index "${pip_wheels[0]}" || fail "could not install pip"
  INSTALL=("${VPY[@]}" -m pip install)
else
  "$PYTHON" -m venv "$VENV" || fail "no venv"
  INSTALL=("${VPY[@]}" -m pip install)
fi
cd "$WORK"  # never the source tree, whose pugfast/ would shadow the installed one
CC=false CXX=false "${INSTALL[@]}" -q --no-compile --no-index --only-binary :all: --find-links "$DIST" \
  --no-deps pugfast || fail "no wheel in $DIST installs on CPython $version"
# The test extra's requirements, from pyproject.toml: Playwright only for the full suite outside
# qemu (the only selection with browser tests), and never Cython or setuptools (only
# tests/test_packaging.py needs them).
browser=""
if [ "$tests" = full ] && [ -z "$qemu" ]; then browser=yes; fi
mapfile -t requirements < <(python3 - "$ROOT/pyproject.toml" "$browser" <<'PY'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
skip = {"cython", "setuptools"} | (set() if sys.argv[2] else {"playwright"})
for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    if re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() not in skip:
        print(requirement)
PY
)
if [ "$tests" = full ]; then
  # The whole suite's cross-checks of pugfast bench's output, which fail rather than skip under CI.
  mapfile -t -O "${#requirements[@]}" requirements < <(grep -v '^#' "$ROOT/tests/crosscheck-requirements.txt")
fi
CC=false CXX=false "${INSTALL[@]}" -q --no-compile --only-binary :all: "${requirements[@]}" ||
  fail "the runtime and test requirements do not install from binary packages on CPython $version"
pass "pugfast and its requirements installed from binary packages alone"

step "the installed package, and its compiled engine"
"${VPY[@]}" - <<'PY' || fail "the installed wheel does not run its compiled engine"
import importlib.machinery, importlib.metadata, importlib.util, sys
import pugfast, pugfast.engine, pugfast.engine._speedups, pugfast.speedups
assert importlib.util.find_spec("Cython") is None, "Cython is installed in the fresh environment"
assert pugfast.__file__.startswith(sys.prefix), f"pugfast came from {pugfast.__file__}"
assert pugfast.engine.IMPLEMENTATION == "cython", pugfast.engine.IMPLEMENTATION
assert pugfast.speedups.IMPLEMENTATION == "cython", "pugfast.speedups is not pugfast.engine's alias"
suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
compiled = pugfast.engine._speedups.__file__
assert compiled.endswith(suffix), (compiled, suffix)
tags = [line[5:] for line in importlib.metadata.distribution("pugfast").read_text("WHEEL").splitlines()
        if line.startswith("Tag: ")]
print(f"  wheel: {', '.join(tags)}; engine: {pugfast.engine.IMPLEMENTATION} ({compiled})")
PY
pass "pugfast imports from the venv; engine: cython"

if [ ${#selection[@]} -gt 0 ]; then
  step "the suite ($tests) against the installed package, engine: $engine"
  mkdir "$WORK/checkout"
  (
    cd "$ROOT"
    git ls-files -z --cached --others --exclude-standard -- . ':(exclude)pugfast' ':(exclude)_ext' ':(exclude)setup.py' |
      while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done |
      xargs -0 cp --parents -t "$WORK/checkout"
  )
  if [ "$engine" = python ]; then export PUGFAST_NO_EXTENSIONS=1; fi
  plugins=()
  if [ -n "$qemu" ]; then
    # Hypothesis's timing checks measure the emulator there: scripts/emulated_hypothesis.py.
    export PYTHONPATH="$ROOT/scripts"
    plugins=(-p emulated_hypothesis)
  fi
  (cd "$WORK/checkout" && "${VPY[@]}" -m pytest -q -p no:cacheprovider --durations=5 "${plugins[@]}" "${selection[@]}") ||
    fail "the suite ($tests) failed against the wheel installed on CPython $version"
  pass "the suite ($tests) passed against the wheel installed on CPython $version"
fi

step "pugfast serve from the venv, and a relayed chat"
if [ "$engine" = python ]; then export PUGFAST_NO_EXTENSIONS=1; fi
"$ROOT/scripts/relay_chat.sh" "$engine" "${VPY[@]}" || fail "the installed relay ($version) did not chat"
pass "the installed relay ($version) chatted"
