#!/usr/bin/env bash
# The release checks CI runs on what scripts/build_wheels.sh --all wrote, beyond the checks that
# script makes of each wheel itself (auditwheel show, no RPATH or RUNPATH, twine check).
#
#   scripts/check_wheel.sh [--rebuild sample|all] DIST
#
# 1. DIST/SHA256SUMS holds, and DIST holds the sdist and the 20 wheels of the matrix.
# 2. Every wheel holds every module of the package, the client, the licence and the compiled
#    engine named for its tag, and nothing generated or compiled besides; its metadata says
#    MIT (PEP 639), Python >= 3.10 and 3.14.
# 3. Reproducible: a second build, in a fresh scratch directory with fresh caches and the same
#    SOURCE_DATE_EPOCH (the last commit's time unless set), gives byte-identical artifacts:
#    the sdist and four wheels (sample: CPython 3.11 and 3.14 on manylinux_2_17_x86_64 and
#    musllinux_1_2_aarch64; the C, the headers and zig's output vary across those), or all of
#    them. On a difference it names the members that differ.
# 4. No compiler, no failure: the sdist installs with pip into a fresh venv with CC=false,
#    printing the fallback warning once, and the relay starts on the pure-Python engine and
#    chats; with PUGFAST_REQUIRE_EXTENSIONS=1 the same install fails, saying why.
# PUGFAST_TOOLS_VENV and PUGFAST_DEBIAN_ROOTS, when set, are passed on to the rebuild.
# Prints PASS or FAIL for each; exits non-zero on the first failure. Needs PyPI (step 4).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
unset PUGFAST_NO_EXTENSIONS PUGFAST_REQUIRE_EXTENSIONS PYTHONPATH

rebuild="sample"
if [ "${1:-}" = "--rebuild" ]; then rebuild="$2"; shift 2; fi
[ $# -eq 1 ] && [ "$rebuild" = sample -o "$rebuild" = all ] || { echo "usage: $0 [--rebuild sample|all] DIST" >&2; exit 2; }
DIST="$(cd "$1" && pwd)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pugfast-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
step() { printf '\n== %s\n' "$*"; }

step "the artifacts in $DIST"
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not hold"
shopt -s nullglob
wheels=("$DIST"/pugfast-*.whl)
sdists=("$DIST"/pugfast-*.tar.gz)
[ ${#sdists[@]} -eq 1 ] || fail "expected one sdist in $DIST"
[ ${#wheels[@]} -eq 20 ] || fail "expected 20 wheels in $DIST, found ${#wheels[@]}"
pass "SHA256SUMS holds for the sdist and 20 wheels"

step "contents and metadata of every wheel"
python3 - "$ROOT" "${wheels[@]}" <<'PY' || fail "a wheel lacks part of the package or has the wrong metadata"
import email, pathlib, re, sys, zipfile
root = pathlib.Path(sys.argv[1])
expected = {p.relative_to(root).as_posix() for p in (root / "pugfast").rglob("*.py")}
expected |= {"pugfast/static/" + p.relative_to(root / "static").as_posix()
             for p in (root / "static").rglob("*") if p.is_file()}
bad = False
for path in sys.argv[2:]:
    wheel = zipfile.ZipFile(path)
    names = set(wheel.namelist())
    python, _, platform = re.match(r"pugfast-[^-]+-(cp3\d+)-(cp3\d+)-(.+)\.whl", pathlib.Path(path).name).groups()
    arch = "aarch64" if platform.endswith("aarch64") else "x86_64"
    libc = "musl" if platform.startswith("musllinux") else "gnu"
    engine = f"pugfast/engine/_speedups.cpython-{python[2:]}-{arch}-linux-{libc}.so"
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    metadata = email.message_from_bytes(wheel.read(f"{dist_info}/METADATA"))
    problems = [f"missing {n}" for n in sorted((expected | {engine, f"{dist_info}/licenses/LICENSE"}) - names)]
    problems += [f"should not be there: {n}" for n in sorted(names)
                 if n.endswith((".c", ".pyx", ".pxd", ".pxi", ".pyc", ".o")) or (n.endswith(".so") and n != engine)]
    if metadata["License-Expression"] != "MIT" or metadata["License-File"] != "LICENSE":
        problems.append(f"licence metadata: {metadata['License-Expression']!r}, {metadata['License-File']!r}")
    if metadata["Requires-Python"] != ">=3.10":
        problems.append(f"Requires-Python: {metadata['Requires-Python']!r}")
    if "Programming Language :: Python :: 3.14" not in metadata.get_all("Classifier"):
        problems.append("no Python 3.14 classifier")
    for problem in problems:
        bad = True
        print(f"  {pathlib.Path(path).name}: {problem}")
sys.exit(1 if bad else 0)
PY
pass "every wheel holds the package, the client, LICENSE and its engine; MIT, Python >= 3.10, 3.14"

step "reproducible: a second build ($rebuild) with SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-(the last commit time)}"
selection=(--all)
[ "$rebuild" = sample ] && selection=(--python 3.11 --python 3.14 --platform manylinux_2_17_x86_64 --platform musllinux_1_2_aarch64)
"$ROOT/scripts/build_wheels.sh" "${selection[@]}" "$WORK/again" || fail "the second build failed"
different=()
for artifact in "$WORK"/again/pugfast-*; do
  name="$(basename "$artifact")"
  [ -f "$DIST/$name" ] || fail "the second build made $name, which $DIST lacks"
  cmp -s "$artifact" "$DIST/$name" || different+=("$name")
done
if [ ${#different[@]} -gt 0 ]; then
  for name in "${different[@]}"; do
    python3 - "$DIST/$name" "$WORK/again/$name" <<'PY'
import hashlib, sys, tarfile, zipfile
def members(path):
    if path.endswith(".whl"):
        archive = zipfile.ZipFile(path)
        return {i.filename: (hashlib.sha256(archive.read(i)).hexdigest(), i.date_time, i.external_attr)
                for i in archive.infolist()}
    archive = tarfile.open(path)
    return {m.name: (m.mtime, m.mode, m.uid, m.gid) for m in archive.getmembers()}
one, two = (members(path) for path in sys.argv[1:])
print(f"  {sys.argv[1]}: differs in " + ", ".join(sorted(n for n in one.keys() | two.keys() if one.get(n) != two.get(n)))
      or "  (same members: the archive's own headers or order differ)")
PY
  done
  fail "the second build gave different bytes: ${different[*]}"
fi
pass "the second build gave byte-identical artifacts ($(ls "$WORK"/again/pugfast-* | wc -l) compared)"

step "the sdist with no compiler"
python3 -m venv "$WORK/venv"
cd "$WORK"  # never the source tree, whose pugfast/ would shadow the installed one
CC=false CXX=false "$WORK/venv/bin/python" -m pip install -v --no-cache-dir "${sdists[0]}" >"$WORK/install.log" 2>&1 ||
  { tail -40 "$WORK/install.log"; fail "the sdist did not install without a compiler"; }
warnings="$(grep -c "WARNING: pugfast's compiled engine was not built" "$WORK/install.log" || true)"
[ "$warnings" -eq 1 ] || { tail -40 "$WORK/install.log"; fail "expected the fallback warning once in pip's output, saw it $warnings times"; }
"$ROOT/scripts/relay_chat.sh" python "$WORK/venv/bin/python" || fail "the sdist's relay did not chat on the pure-Python engine"
pass "the sdist installed without a compiler, warned once, and the relay chats on engine: python"
python3 -m venv "$WORK/strict"
if PUGFAST_REQUIRE_EXTENSIONS=1 CC=false CXX=false "$WORK/strict/bin/python" -m pip install --no-cache-dir \
    "${sdists[0]}" >"$WORK/strict.log" 2>&1; then
  fail "PUGFAST_REQUIRE_EXTENSIONS=1 let the sdist install without its compiled engine"
fi
grep -q "PUGFAST_REQUIRE_EXTENSIONS is set: install a C compiler" "$WORK/strict.log" ||
  { tail -40 "$WORK/strict.log"; fail "the failed install does not say why"; }
pass "with PUGFAST_REQUIRE_EXTENSIONS=1 the same install fails, saying why"

printf '\nPASS: scripts/check_wheel.sh\n'
