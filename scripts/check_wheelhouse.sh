#!/usr/bin/env bash
# The air-gapped install, tried: a wheelhouse made by scripts/wheelhouse.sh for this machine's
# python3 installs, and the relay serves and chats, inside a network namespace with no route.
#
#   scripts/check_wheelhouse.sh DIST
#
# 1. scripts/wheelhouse.sh makes the wheelhouse (this needs PyPI) for python3's version on
#    manylinux_2_17_x86_64, taking pugfast's wheel from DIST.
# 2. A network namespace of its own (`ip netns add`): its loopback up, and nothing else; the
#    check fails if it has any other link or any route in its main table, so nothing in it can
#    reach another machine.
# 3. In it: a fresh venv, `pip install --no-index --find-links WH --require-hashes -r
#    WH/requirements.txt` (the machine's pip configuration out of the way), and the relay serves
#    and chats (scripts/relay_chat.sh).
# Needs root and iproute2. Prints PASS or FAIL; exits non-zero on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
unset PUGFAST_NO_EXTENSIONS PYTHONPATH
[ $# -eq 1 ] || { echo "usage: $0 DIST" >&2; exit 2; }
DIST="$(cd "$1" && pwd)"
NS="pugfast-airgap-$$"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pugfast-airgap.XXXXXX")"
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  ip netns delete "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

version="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"$ROOT/scripts/wheelhouse.sh" --python "$version" --platform manylinux_2_17_x86_64 --dist "$DIST" "$WORK/wheelhouse" ||
  fail "could not make the wheelhouse"
grep -q '^pugfast==.* --hash=sha256:' "$WORK/wheelhouse/requirements.txt" || fail "requirements.txt pins no pugfast"
pass "wheelhouse for CPython $version: $(grep -c -- '--hash=sha256:' "$WORK/wheelhouse/requirements.txt") packages pinned by hash"

command -v ip >/dev/null || fail "ip is missing: apt-get install iproute2"
ip netns add "$NS" || fail "could not make a network namespace (root needed)"
ip -n "$NS" link set lo up
links="$(ip -n "$NS" -o link show | awk -F': ' '{print $2}' | paste -sd' ')"
routes="$(ip -n "$NS" route show table main; ip -n "$NS" -6 route show table main | grep -v '^::1 dev lo' || true)"
[ "$links" = lo ] && [ -z "$routes" ] || fail "the namespace is not cut off: links '$links', routes '$routes'"
pass "namespace $NS: loopback only, no route"

IN=(ip netns exec "$NS" env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS=)
"${IN[@]}" "$(python3 -c 'import sys; print(sys.executable)')" -m venv "$WORK/venv" || fail "no venv in the namespace"
cd "$WORK"  # never the source tree, whose pugfast/ would shadow the installed one
"${IN[@]}" "$WORK/venv/bin/python" -m pip install -q --no-index --find-links "$WORK/wheelhouse" --require-hashes \
  -r "$WORK/wheelhouse/requirements.txt" || fail "the wheelhouse did not install with the network off"
pass "pip install --no-index --require-hashes from the wheelhouse, with no network"
"$ROOT/scripts/relay_chat.sh" cython "${IN[@]}" "$WORK/venv/bin/python" || fail "the air-gapped relay did not chat"
pass "scripts/check_wheelhouse.sh: the air-gapped relay serves and chats"
