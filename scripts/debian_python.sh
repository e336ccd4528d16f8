#!/usr/bin/env bash
# Fetch one of Debian's builds of CPython, with its headers and everything it needs to run,
# and unpack it into a private root, never into the system.
#
#   scripts/debian_python.sh SUITE ARCH VERSION DEST
#   e.g. scripts/debian_python.sh sid amd64 3.14 /tmp/roots/sid-amd64-3.14
#
# apt runs with a configuration of its own under DEST/apt (sources list, package lists, cache,
# an empty package status), so the system's apt state is never read or changed: it resolves
# pythonVERSION, libpythonVERSION-dev and pythonVERSION-venv with their dependencies as if
# nothing were installed, `apt-get download`s them, and dpkg-deb unpacks each into DEST/root.
# Nothing is installed and no maintainer script runs.
#
# The interpreter is DEST/root/usr/bin/pythonVERSION. For the machine's own architecture it is
# given the root's loader (patchelf --set-interpreter) and the root's libraries (DT_RPATH), so it
# runs with its own glibc, newer than the host's, and so does every venv made from it, without
# LD_LIBRARY_PATH leaking into the programs it starts. For another architecture, run it under
# qemu-user-static: `qemu-aarch64-static -L DEST/root DEST/root/usr/bin/pythonVERSION`.
# DEST/packages lists the packages and versions used. A DEST that holds the same request is
# reused. PATCHELF names patchelf (default: the one on PATH).
set -euo pipefail

[ $# -eq 4 ] || { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
SUITE="$1" ARCH="$2" VERSION="$3" DEST="$4"
say() { printf 'debian_python: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

REQUEST="$SUITE $ARCH python$VERSION"
if [ -f "$DEST/request" ] && [ "$(cat "$DEST/request")" = "$REQUEST" ] && [ -x "$DEST/root/usr/bin/python$VERSION" ]; then
  say "reusing $DEST ($REQUEST)"
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST/apt/lists/partial" "$DEST/apt/archives/partial" "$DEST/debs" "$DEST/root"
: >"$DEST/apt/status"
printf 'deb [arch=%s signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n' \
  "$ARCH" "$SUITE" >"$DEST/apt/sources.list"
APT=(
  -q
  -o "Dir::Etc::SourceList=$DEST/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
  -o "Dir::State::Lists=$DEST/apt/lists" -o "Dir::State::status=$DEST/apt/status"
  -o "Dir::Cache=$DEST/apt" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  -o "APT::Architecture=$ARCH" -o "APT::Architectures::=$ARCH"
  -o APT::Install-Recommends=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root
  -o Acquire::Retries=3
)
PACKAGES=("python$VERSION" "libpython$VERSION-dev" "python$VERSION-venv")

say "$SUITE/$ARCH: package lists"
apt-get "${APT[@]}" update >"$DEST/apt.log" 2>&1 ||
  { cat "$DEST/apt.log" >&2; die "could not fetch Debian's $SUITE package lists for $ARCH (see above)"; }
grep -q '^W: .*\(signature\|NO_PUBKEY\)' "$DEST/apt.log" &&
  { cat "$DEST/apt.log" >&2; die "Debian's $SUITE lists did not verify against the system's keyring"; }
# A simulated install against the empty status resolves the whole closure of dependencies.
apt-get "${APT[@]}" -s install "${PACKAGES[@]}" >"$DEST/resolve.log" 2>&1 ||
  { cat "$DEST/resolve.log" >&2; die "Debian $SUITE has no installable ${PACKAGES[*]} for $ARCH"; }
mapfile -t closure < <(awk '/^Inst /{print $2}' "$DEST/resolve.log")
[ ${#closure[@]} -gt 0 ] || die "resolving ${PACKAGES[*]} in $SUITE gave no packages"
say "$SUITE/$ARCH: downloading ${#closure[@]} packages for python$VERSION"
(cd "$DEST/debs" && apt-get "${APT[@]}" download "${closure[@]}") >"$DEST/download.log" 2>&1 ||
  { tail -20 "$DEST/download.log" >&2; die "downloading Debian's python$VERSION ($SUITE, $ARCH) failed (see above)"; }
for deb in "$DEST"/debs/*.deb; do
  dpkg-deb -x "$deb" "$DEST/root"
  dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >>"$DEST/packages"
done
PYTHON="$DEST/root/usr/bin/python$VERSION"
[ -x "$PYTHON" ] || die "the packages held no $PYTHON"
# From Debian 13 on, packages install into /usr only, and base-files (not fetched) makes /lib
# and the rest links into it: the loader's path, /lib/ld-linux-*.so.1, needs them.
for merged in bin sbin lib lib64; do
  if [ -d "$DEST/root/usr/$merged" ] && [ ! -e "$DEST/root/$merged" ]; then
    ln -s "usr/$merged" "$DEST/root/$merged"
  fi
done

if [ "$(dpkg --print-architecture)" = "$ARCH" ]; then
  multiarch="$(dpkg-architecture -a "$ARCH" -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")"
  libs="$DEST/root/usr/lib/$multiarch"
  loader="$(find "$libs" -maxdepth 1 -name 'ld-linux*.so.*' | head -1)"
  [ -n "$loader" ] || die "no loader in $libs"
  # DT_RPATH, not DT_RUNPATH: it applies to the libraries' own dependencies too.
  "${PATCHELF:-patchelf}" --set-interpreter "$loader" --force-rpath --set-rpath "$libs" "$PYTHON" ||
    die "patchelf could not point $PYTHON at its own loader"
  "$PYTHON" -c 'import ssl, sqlite3, ctypes' || die "$PYTHON does not run with its own loader"
fi
rm -rf "$DEST/apt/archives" "$DEST/apt/lists" "$DEST/debs"
printf '%s\n' "$REQUEST" >"$DEST/request"
say "$SUITE/$ARCH: $(grep "^python$VERSION " "$DEST/packages") in $DEST/root"
