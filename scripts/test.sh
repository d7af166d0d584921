#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the packages, builds, runs every test
# (unit tests in memory, and mount tests that run the built daemon under FUSE).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build
swift test "$@"
