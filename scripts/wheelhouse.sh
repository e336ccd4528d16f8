#!/usr/bin/env bash
# Make a wheelhouse for an air-gapped site: pugfast's wheel for one Python and platform, every
# wheel of its runtime closure (aiohttp, uvloop, orjson and what they need), and a
# requirements.txt pinning each by version and sha256.
#
#   scripts/wheelhouse.sh --python 3.12 --platform manylinux_2_28_x86_64 [--dist DIST] OUTDIR
#
# --platform is the platform tag of the machine that will run the relay: manylinux_2_X_<arch>
# for glibc 2.X (pip also takes older manylinux wheels for it), or musllinux_1_2_<arch>; give
# it more than once to accept more tags. DIST (default dist/) holds pugfast's wheels, as
# scripts/build_wheels.sh --all writes them; pip takes pugfast from there and nowhere else.
# Needs PyPI, once. Carry OUTDIR to the site, and there, with no network:
#
#   python3.12 -m venv /opt/pugfast
#   /opt/pugfast/bin/pip install --no-index --find-links OUTDIR --require-hashes \
#       -r OUTDIR/requirements.txt
#
# Binary packages only: nothing in the wheelhouse needs a compiler at the site.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
say() { printf 'wheelhouse: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

python=""
tags=()
dist="$ROOT/dist"
outdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --platform) tags+=("$2"); shift 2 ;;
    --dist) dist="$2"; shift 2 ;;
    -*) die "unknown option $1" ;;
    *) outdir="$1"; shift ;;
  esac
done
[ -n "$python" ] && [ ${#tags[@]} -gt 0 ] && [ -n "$outdir" ] ||
  die "usage: $0 --python 3.X --platform TAG [--platform TAG]... [--dist DIST] OUTDIR"
[[ "$python" =~ ^3\.[0-9]+$ ]] || die "--python takes a version like 3.12, not $python"
cp="cp${python/./}"
DIST="$(cd "$dist" && pwd)" || die "no $dist: build it with scripts/build_wheels.sh --all"
version="$(python3 -c 'import re, sys; print(re.search(r"__version__ = \"([^\"]+)\"", open(sys.argv[1]).read()).group(1))' "$ROOT/pugfast/__init__.py")"

# pip takes --platform literally: every older tag the site's platform also runs, too.
mapfile -t platforms < <(python3 "$ROOT/scripts/wheel_targets.py" platforms "${tags[@]}" | tr ' ' '\n')

mkdir -p "$outdir"
OUT="$(cd "$outdir" && pwd)"
rm -f "$OUT"/*.whl "$OUT/requirements.txt"
say "pugfast $version and its runtime closure for CPython $python on ${tags[*]} and older"
# The machine's own pip configuration (extra indexes, find-links) stays out of it.
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" python3 -m pip download -q --dest "$OUT" \
  --only-binary :all: "${platforms[@]}" --python-version "$python" --implementation cp --abi "$cp" \
  --find-links "$DIST" "pugfast==$version" ||
  die "pip could not gather the wheels (no pugfast wheel for $cp in $DIST, or no binary wheel of a dependency for that platform, or PyPI unreachable)"

shopt -s nullglob
pugfast=("$OUT"/pugfast-*.whl)
[ ${#pugfast[@]} -eq 1 ] || die "expected one pugfast wheel, got ${#pugfast[@]}"
cmp -s "${pugfast[0]}" "$DIST/$(basename "${pugfast[0]}")" || die "pip took pugfast from somewhere other than $DIST"

python3 - "$OUT" >"$OUT/requirements.txt" <<'PY'
import hashlib, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("# Every package of the relay's runtime closure, pinned by version and sha256:")
print("#   pip install --no-index --find-links . --require-hashes -r requirements.txt")
for wheel in sorted(out.glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    print(f"{name}=={version} --hash=sha256:{digest}")
PY
say "wrote $OUT: $(ls "$OUT"/*.whl | wc -l) wheels and requirements.txt"
