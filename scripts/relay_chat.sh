#!/usr/bin/env bash
# Start an installed relay, hold a short chat with it, stop it.
#
#   scripts/relay_chat.sh ENGINE COMMAND...
#   e.g. scripts/relay_chat.sh cython /opt/pugfast/bin/python
#        scripts/relay_chat.sh cython ip netns exec airgap /opt/pugfast/bin/python
#
# COMMAND runs a Python that has pugfast installed (through qemu, in a network namespace, ...).
# It starts `COMMAND -m pugfast serve` on 127.0.0.1 with any free port and no proof of work,
# checks that the relay says `engine: ENGINE` at start, runs scripts/chat_smoke.py with COMMAND
# against it, then sends SIGTERM and expects exit status 0. Run it from outside the source
# tree, whose pugfast/ would shadow the installed one. Exits non-zero, saying why, on failure.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 ENGINE COMMAND..." >&2; exit 2; }
ENGINE="$1"
shift
SMOKE="$(cd "$(dirname "$0")" && pwd)/chat_smoke.py"
LOG="$(mktemp "${TMPDIR:-/tmp}/pugfast-serve.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT
fail() { cat "$LOG" >&2; printf 'FAIL: %s\n' "$*"; exit 1; }

"$@" -m pugfast serve --host 127.0.0.1 --port 0 --pow-difficulty 0 2>"$LOG" &
SERVER_PID=$!
port=""
# Generous: under qemu, on a busy machine, the relay can take minutes to start (every module it
# imports is compiled to bytecode there first).
for _ in $(seq 3000); do
  port="$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$LOG")"
  [ -n "$port" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || fail "pugfast serve did not start"
grep -q "engine: $ENGINE;" "$LOG" || fail "the relay did not start on the $ENGINE engine"
"$@" "$SMOKE" "http://127.0.0.1:$port" || fail "the chat against the relay failed"
# Through `ip netns exec` or qemu, the signal reaches the relay: both pass it on or exec.
kill -TERM "$SERVER_PID"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
[ "$status" -eq 0 ] || fail "pugfast serve exited $status after SIGTERM, not 0"
printf 'PASS: the relay (engine: %s) chatted, and exited 0 on SIGTERM\n' "$ENGINE"
