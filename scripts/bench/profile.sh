#!/usr/bin/env bash
# Where the daemon's time goes, per benchmark operation: runs the release pcibackfsd and the C
# baseline under valgrind's callgrind and prints user-space instructions per operation of the
# B1-B3 workloads for both (daemon side, libfuse included), then pcibackfsd's top functions per
# workload, then B6's filter loop. Run as root; it uses the release build (or PROFILE_BIN) and
# compiles the C helpers itself.
#
#   sudo scripts/bench/profile.sh [OUTDIR]      (default /tmp/pcibackfs-profile)
#   PROFILE_BIN=/path/to/pcibackfsd PROFILE_FILTERBENCH=/path/to/filterbench  (optional overrides)
#
# Method: for each workload a fresh daemon runs under callgrind for N operations; the cost of one
# operation is the inclusive instruction count of the daemon's request handlers (pcibackfsd's
# FUSE operation thunks, the baseline's op_* functions: everything from the handler's entry to
# its reply, libfuse's reply path included) summed over every request, divided by N. Start-up,
# the idle loop and unmounting are outside the handlers, so no second run is subtracted.
# No runtime control (callgrind_control/vgdb) is involved: it can hang when threads sit in
# read(2) on /dev/fuse. Instruction counts are deterministic, so this works on a busy machine
# where wall-clock figures are noisy. (perf is the other option when `perf stat -e
# instructions true` works; on this VM it does not.)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:-/tmp/pcibackfs-profile}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "profile: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
BIN=${PROFILE_BIN:-"$(swift build -c release --show-bin-path)/pcibackfsd"}
FILTERBENCH=${PROFILE_FILTERBENCH:-"$ROOT/.build-bench/release/filterbench"}
[ -x "$BIN" ] || { echo "profile: build first (swift build -c release)" >&2; exit 1; }
gcc -O2 -o "$OUT/loadgen" scripts/bench/loadgen.c
# shellcheck disable=SC2046
gcc -O2 -g $(pkg-config --cflags fuse3) -o "$OUT/baseline_fs" scripts/bench/baseline_fs.c $(pkg-config --libs fuse3) -lpthread

MOUNT=""
PID=""
cleanup() {
    [ -n "$MOUNT" ] && fusermount3 -u -z "$MOUNT" 2>/dev/null || true
    [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

NIC=0000:03:00.0
FRONT=fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:00.0
DOM0=bus/pci/devices/$NIC
AIC=bus/pci/drivers/pciback/allow_interrupt_control
OPS_FAST=${PROFILE_OPS_FAST:-20000}
OPS_SLOW=${PROFILE_OPS_SLOW:-10000}

# once SYSTEM LABEL OPS LOADGEN-ARGS...: one daemon under callgrind, OPS operations; prints the file
once() {
    local system=$1 label=$2 ops=$3; shift 3
    local file=$OUT/$system.$label.$ops.cg
    MOUNT=$OUT/$system.mnt
    mkdir -p "$MOUNT"
    local daemon=("$BIN")
    [ "$system" = baseline ] && daemon=("$OUT/baseline_fs")
    # The baseline copies pcibackfsd's policy for dynamic nodes (3600 s unless told otherwise).
    local extra=()
    [ "$system" = baseline ] && extra=(--dynamic-timeout "${PROFILE_DYNAMIC_TIMEOUT:-3600}")
    valgrind --tool=callgrind --callgrind-out-file="$file" "${daemon[@]}" "$MOUNT" "${extra[@]}" > "$OUT/$system.$label.log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do [ -e "$MOUNT/bus/pci/drivers/pciback" ] && break; sleep 0.1; done
    if [ "$system" = pcibackfs ]; then
        echo -n $NIC > "$MOUNT/$DOM0/driver/unbind"
        echo -n $NIC > "$MOUNT/bus/pci/drivers/pciback/new_slot"
        echo -n $NIC > "$MOUNT/bus/pci/drivers/pciback/bind"
        echo "1 $NIC" > "$MOUNT/fs/pcibackfs/attach"
    fi
    local args=("$@")
    args=("${args[@]//@/$MOUNT}")
    "$OUT/loadgen" "${args[@]}" --ops "$ops" > /dev/null
    fusermount3 -u -z "$MOUNT"
    for _ in $(seq 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    PID=""
    echo "$file"
}

# handlers FILE SYSTEM: the summed inclusive instructions of the request handlers in FILE
handlers() {
    local pattern='fuse_lowlevel_ops.*To \['
    [ "$2" = baseline ] && pattern='baseline_fs\.c:op_[a-z]+ \['
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null \
        | grep -E "$pattern" | awk '{ gsub(",", "", $1); sum += $1 } END { printf "%.0f", sum }'
}

# measure LABEL OPS LOADGEN-ARGS (with @ for the mount point)
declare -A PER_OP
measure() {
    local label=$1 ops=$2; shift 2
    for system in pcibackfs baseline; do
        local file
        file=$(once "$system" "$label" "$ops" "$@")
        PER_OP[$system.$label]=$(awk -v a="$(handlers "$file" "$system")" -v n="$ops" 'BEGIN { printf "%.0f", a / n }')
        echo "$system $label $file" >> "$OUT/files.txt"
    done
    printf '%-10s pcibackfs %9s  baseline %8s instructions/op  (%.2fx)\n' "$label" "${PER_OP[pcibackfs.$label]}" \
        "${PER_OP[baseline.$label]}" "$(awk -v a="${PER_OP[pcibackfs.$label]}" -v b="${PER_OP[baseline.$label]}" 'BEGIN { print a / b }')"
}

: > "$OUT/files.txt"
echo "== daemon instructions per operation in the request handlers (callgrind; libfuse's reply path included)"
measure B1-front "$OPS_FAST" pread "@/$FRONT/config"
measure B1-dom0 "$OPS_FAST" pread "@/$DOM0/config"
measure B2-vendor "$OPS_SLOW" openread "@/$DOM0/vendor" 4096
measure B2-config "$OPS_SLOW" openread "@/$DOM0/config" 4096
measure B3 "$OPS_SLOW" openwrite "@/$AIC" "$NIC\\n"

echo
echo "== pcibackfsd: top functions per workload (inclusive)"
while read -r system label file; do
    [ "$system" = pcibackfs ] || continue
    echo "--- $label ($file)"
    callgrind_annotate --inclusive=yes "$file" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,30p' | cut -c1-200
done < "$OUT/files.txt"

if [ -x "$FILTERBENCH" ]; then
    echo
    echo "== B6 filterbench under callgrind (one short round)"
    valgrind --tool=callgrind --callgrind-out-file="$OUT/filterbench.cg" "$FILTERBENCH" --secs 0.3 --rounds 1 2>/dev/null
    callgrind_annotate --inclusive=yes "$OUT/filterbench.cg" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,40p' | cut -c1-200
fi
echo
echo "(callgrind files in $OUT; callgrind_annotate --tree=calling FILE shows callers and callees)"
