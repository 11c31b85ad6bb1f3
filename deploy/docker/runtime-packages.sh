#!/usr/bin/env bash
# Prints the Debian packages that own the shared libraries the given binaries load (ldd), one a
# line: what the slim runtime image installs. Run in the build stage of deploy/Dockerfile, so
# the list always matches what was linked (no hand-kept list to go stale).
# Usage: runtime-packages.sh BINARY...
set -euo pipefail
ldd "$@" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  real=$(readlink -f "$lib")
  # Debian 12 has a merged /usr: a file may be registered under /lib or /usr/lib.
  dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null ||
    dpkg -S "$lib" 2>/dev/null || { echo "runtime-packages: no package owns $lib" >&2; exit 1; }
done | cut -d: -f1 | sort -u
