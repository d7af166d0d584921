#!/usr/bin/env bash
# Runs the daemon on the built-in emulated machine: installs the packages, builds, mounts at
# the given directory (default /run/pcibackfs) and serves until Ctrl-C or `fusermount3 -u`.
# Extra arguments go to pcibackfsd (see `pcibackfsd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release
mountpoint=${1:-/run/pcibackfs}
[ $# -gt 0 ] && shift
mkdir -p "$mountpoint"
echo "pcibackfs: mounting the built-in machine on $mountpoint (Ctrl-C to stop)"
exec "$(swift build -c release --show-bin-path)/pcibackfsd" "$mountpoint" "$@"
