#!/usr/bin/env bash
# Installs what pcibackfs needs on a fresh Debian/Ubuntu machine (as root): libfuse3 and the
# FUSE tools, plus the real clients the tests drive, unmodified (pciutils, driverctl, dpdk's
# dpdk-devbind.py, lshw, hwloc's lstopo, hwinfo) and what `pcibackfsd run` uses (iproute2,
# util-linux's unshare and setpriv).
set -euo pipefail

# The Swift 6 toolchain is not a Debian package: it must be there already.
if ! command -v swift >/dev/null 2>&1; then
    echo "setup: the Swift 6 toolchain is missing (no 'swift' in PATH). Install it from https://www.swift.org/install/linux/ (for Debian 12: the tarball or swiftly), then run this again." >&2
    exit 1
fi
swift_major=$(swift --version 2>/dev/null | sed -n 's/.*Swift version \([0-9][0-9]*\)\..*/\1/p' | head -1)
if [ -z "$swift_major" ] || [ "$swift_major" -lt 6 ]; then
    echo "setup: pcibackfs needs Swift 6 or newer; 'swift --version' says: $(swift --version 2>&1 | head -1)" >&2
    exit 1
fi

packages=(libfuse3-dev fuse3 pkg-config pciutils driverctl dpdk lshw hwloc hwinfo iproute2 util-linux kmod man-db)
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
