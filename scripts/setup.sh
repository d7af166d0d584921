#!/usr/bin/env bash
# Installs what pcibackfs needs on a fresh Debian/Ubuntu machine (as root): libfuse3 and the
# FUSE tools, plus the real clients the tests drive, unmodified (pciutils, driverctl, dpdk's
# dpdk-devbind.py, lshw, hwloc's lstopo, hwinfo) and what `pcibackfsd run` uses (iproute2,
# util-linux's unshare and setpriv).
set -euo pipefail
packages=(libfuse3-dev fuse3 pkg-config pciutils driverctl dpdk lshw hwloc hwinfo iproute2 util-linux)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
