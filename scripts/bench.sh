#!/usr/bin/env bash
# Performance benchmarks of pcibackfs (on demand, not in CI; as root). See BENCHMARKS.md.
#
#   sudo scripts/bench.sh [--rounds N] [--secs S] [--only "B1 B2 ..."] [--markdown FILE] [--no-build]
#                         [--bin PATH] [--filterbench PATH]
# (--bin / --filterbench: use an already built pcibackfsd / filterbench instead of building.)
#
# Builds pcibackfsd in release, compiles the load generator and the C baseline (a minimal
# libfuse3 low-level daemon with the same FUSE policy, scripts/bench/baseline_fs.c), mounts both
# and measures, in rounds that interleave pcibackfs and the baseline (the kernel's own sysfs of
# this machine is measured too, for context):
#   B1  pread of 4 bytes at offset 4 on an open config fd (frontend view and dom0 view)
#   B2  open + read + close of `vendor`, and of a 4 KiB `config` (read 4096)
#   B3  open(O_WRONLY|O_TRUNC) + write "0000:03:00.0\n" + close of pciback/allow_interrupt_control
#   B4  two concurrent clients of B1 (frontend config) and of B2 (vendor): aggregate / one client
#   B5  4096 PCIe functions: daemon start until the mount answers, RSS, lspci -D over all of them
#   B6  in process (scripts/bench/filterbench): filtered guest reads/writes per second vs raw
#       ConfigSpace accesses
# Every ratio is the median of the per-round ratios. Environment: BENCH_ROUNDS, BENCH_SECS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-5}
SECS=${BENCH_SECS:-2}
ONLY="B1 B2 B3 B4 B5 B6"
MARKDOWN=""
BUILD=1
BIN_OVERRIDE=""
FILTERBENCH_OVERRIDE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --secs) SECS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --markdown) MARKDOWN=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --bin) BIN_OVERRIDE=$2; BUILD=0; shift 2 ;;
        --filterbench) FILTERBENCH_OVERRIDE=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ "$ROUNDS" -lt 5 ]; then
    echo "bench: at least 5 rounds (got $ROUNDS)" >&2
    exit 2
fi
wants() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if [ "$(id -u)" -ne 0 ]; then
    echo "bench: run as root (mounts, pciback writes, /sys config reads)" >&2
    exit 1
fi
scripts/setup.sh
for tool in gcc pkg-config fusermount3 lspci; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# Build

if [ "$BUILD" -eq 1 ]; then
    echo "== building pcibackfsd (release)"
    # A few attempts: a source edited during the build makes SwiftPM stop ("modified during the build").
    for attempt in 1 2 3; do
        swift build -c release && break
        [ "$attempt" -eq 3 ] && { echo "bench: release build failed" >&2; exit 1; }
        sleep 20
    done
fi
if [ -n "$BIN_OVERRIDE" ]; then BIN=$BIN_OVERRIDE; else BIN="$(swift build -c release --show-bin-path)/pcibackfsd"; fi
[ -x "$BIN" ] || { echo "bench: $BIN not built" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pcibackfs-bench.XXXXXX)
MOUNTS=()
PIDS=()
cleanup() {
    local status=$?
    for mount in "${MOUNTS[@]}"; do
        fusermount3 -u -z "$mount" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    for mount in "${MOUNTS[@]}"; do rmdir "$mount" 2>/dev/null || true; done
    rm -f "$WORK"/*.json "$WORK"/*.log "$WORK"/loadgen "$WORK"/baseline_fs "$WORK"/raw.tsv 2>/dev/null || true
    rmdir "$WORK" 2>/dev/null || true
    exit $status
}
trap cleanup EXIT INT TERM

echo "== compiling the load generator and the C baseline"
gcc -O2 -Wall -Wextra -o "$WORK/loadgen" scripts/bench/loadgen.c
# shellcheck disable=SC2046
gcc -O2 -Wall -Wextra $(pkg-config --cflags fuse3) -o "$WORK/baseline_fs" scripts/bench/baseline_fs.c \
    $(pkg-config --libs fuse3) -lpthread
LOADGEN=$WORK/loadgen

# ---------------------------------------------------------------------------------------------
# Helpers

RAW=$WORK/raw.tsv
: > "$RAW"

# record BENCH SYSTEM ROUND VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RAW"; }

# values BENCH SYSTEM: the per-round values, one per line
values() { awk -F'\t' -v b="$1" -v s="$2" '$1 == b && $2 == s { print $4 }' "$RAW"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ratios BENCH SYS_A BENCH_B SYS_B: per round, A / B
ratios() {
    awk -F'\t' -v ba="$1" -v sa="$2" -v bb="$3" -v sb="$4" '
        $1 == ba && $2 == sa { a[$3] = $4 }
        $1 == bb && $2 == sb { b[$3] = $4 }
        END { for (r in a) if ((r in b) && b[r] > 0) print a[r] / b[r] }' "$RAW"
}

# rate LOADGEN-ARGS...: prints ops/s
rate() {
    local out
    out=$("$LOADGEN" "$@" --secs "$SECS") || { echo "bench: loadgen $* failed" >&2; return 1; }
    sed -n 's/^ops_per_sec=\([0-9.]*\).*/\1/p' <<< "$out"
}

# wait_for PATH PID: until PATH exists (the mount answers) or PID dies
wait_for() {
    for _ in $(seq 600); do
        [ -e "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { echo "bench: daemon $2 died" >&2; return 1; }
        sleep 0.05
    done
    echo "bench: $1 did not appear" >&2
    return 1
}

# kib_of PID FIELD: a /proc/PID/status field in KiB
kib_of() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

fmt() { awk -v v="$1" 'BEGIN { if (v == "n/a") print v; else if (v >= 100) printf "%.0f", v; else printf "%.2f", v }'; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { if (v == "n/a") print "n/a"; else if ((op == ">=" && v >= t) || (op == "<=" && v <= t)) print "met"; else print "MISSED" }'; }

# The daemon's cache policy for dynamic nodes, so the baseline copies it exactly: walk the same
# path twice on a --debug daemon; a second walk without LOOKUPs means dynamic entries are cached
# (entry/attr timeout 3600 s, pcibackfsd invalidating what a store changes), otherwise 0 s.
probe_policy() {
    local probe=$WORK/probe log=$WORK/probe.log pid first second
    # Sets DYNAMIC_TIMEOUT.
    mkdir -p "$probe"
    "$BIN" "$probe" --debug > "$log" 2>&1 &
    pid=$!
    PIDS+=("$pid"); MOUNTS+=("$probe")
    wait_for "$probe/bus/pci/drivers/pciback" "$pid"
    stat "$probe/bus/pci/devices/0000:03:00.0/vendor" > /dev/null
    sleep 0.3
    first=$(grep -c "opcode: LOOKUP" "$log" || true)
    stat "$probe/bus/pci/devices/0000:03:00.0/vendor" > /dev/null
    sleep 0.3
    second=$(grep -c "opcode: LOOKUP" "$log" || true)
    fusermount3 -u -z "$probe" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    unset 'PIDS[-1]' 'MOUNTS[-1]'
    rmdir "$probe" 2>/dev/null || true
    rm -f "$log"
    if [ "$second" -gt "$first" ]; then DYNAMIC_TIMEOUT=0; else DYNAMIC_TIMEOUT=3600; fi
}
if [ -n "${BENCH_DYNAMIC_TIMEOUT:-}" ]; then DYNAMIC_TIMEOUT=$BENCH_DYNAMIC_TIMEOUT; else probe_policy; fi
echo "== pcibackfsd's entry/attr timeout for dynamic nodes: ${DYNAMIC_TIMEOUT} s (the baseline copies it)"

NIC=0000:03:00.0
FRONT_DEV=fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:00.0
DOM0_DEV=bus/pci/devices/$NIC
AIC=bus/pci/drivers/pciback/allow_interrupt_control

# The kernel's own sysfs: a function with a 4 KiB config if there is one.
SYSDEV=""
for dev in /sys/bus/pci/devices/*; do
    [ -r "$dev/config" ] || continue
    [ -z "$SYSDEV" ] && SYSDEV=$dev
    if [ "$(stat -c %s "$dev/config")" -ge 4096 ]; then SYSDEV=$dev; break; fi
done

# ---------------------------------------------------------------------------------------------
# B1 - B4: pcibackfs and the C baseline mounted side by side

if wants B1 || wants B2 || wants B3 || wants B4; then
    PCIB=$WORK/pcibackfs
    BASE=$WORK/baseline
    mkdir -p "$PCIB" "$BASE"
    "$BIN" "$PCIB" > "$WORK/pcibackfs.log" 2>&1 &
    PIDS+=($!); MOUNTS+=("$PCIB")
    wait_for "$PCIB/bus/pci/drivers/pciback" "${PIDS[-1]}"
    "$WORK/baseline_fs" "$BASE" --dynamic-timeout "$DYNAMIC_TIMEOUT" > "$WORK/baseline.log" 2>&1 &
    PIDS+=($!); MOUNTS+=("$BASE")
    wait_for "$BASE/bus/pci/drivers/pciback" "${PIDS[-1]}"

    # Seize the NIC for passthrough and give it to frontend 1 (libxl's order).
    echo -n $NIC > "$PCIB/bus/pci/devices/$NIC/driver/unbind"
    echo -n $NIC > "$PCIB/bus/pci/drivers/pciback/new_slot"
    echo -n $NIC > "$PCIB/bus/pci/drivers/pciback/bind"
    echo "1 $NIC" > "$PCIB/fs/pcibackfs/attach"
    [ -e "$PCIB/$FRONT_DEV/config" ] || { echo "bench: frontend config missing" >&2; exit 1; }

    echo "== B1-B4: $ROUNDS rounds of ${SECS}s per figure (pcibackfs and the C baseline alternate)"
    for round in $(seq "$ROUNDS"); do
        if [ $((round % 2)) -eq 1 ]; then order="pcibackfs baseline"; else order="baseline pcibackfs"; fi
        for system in $order; do
            if [ "$system" = pcibackfs ]; then M=$PCIB; else M=$BASE; fi
            if wants B1 || wants B4; then
                record B1-front "$system" "$round" "$(rate pread "$M/$FRONT_DEV/config")"
            fi
            if wants B1; then
                record B1-dom0 "$system" "$round" "$(rate pread "$M/$DOM0_DEV/config")"
            fi
            if wants B2 || wants B4; then
                record B2-vendor "$system" "$round" "$(rate openread "$M/$DOM0_DEV/vendor" 4096)"
            fi
            if wants B2; then
                record B2-config "$system" "$round" "$(rate openread "$M/$DOM0_DEV/config" 4096)"
            fi
            if wants B3; then
                record B3-aic "$system" "$round" "$(rate openwrite "$M/$AIC" "$NIC\\n")"
            fi
            if wants B4; then
                record B4-front "$system" "$round" "$(rate pread "$M/$FRONT_DEV/config" --clients 2)"
                record B4-vendor "$system" "$round" "$(rate openread "$M/$DOM0_DEV/vendor" 4096 --clients 2)"
            fi
        done
        if [ -n "$SYSDEV" ] && { wants B1 || wants B2; }; then
            if wants B1; then
                # One figure for both B1 rows: the kernel has one view.
                value=$(rate pread "$SYSDEV/config")
                record B1-front sysfs "$round" "$value"
                record B1-dom0 sysfs "$round" "$value"
            fi
            if wants B2; then
                record B2-vendor sysfs "$round" "$(rate openread "$SYSDEV/vendor" 4096)"
                record B2-config sysfs "$round" "$(rate openread "$SYSDEV/config" 4096)"
            fi
        fi
        echo "   round $round done"
    done

    # Correctness after the load: the frontend still reads the NIC, the flag is set.
    [ "$(cat "$PCIB/$FRONT_DEV/vendor")" = 0x8086 ] || { echo "bench: frontend vendor wrong after the run" >&2; exit 1; }
    grep -qx $NIC "$PCIB/$AIC" || { echo "bench: allow_interrupt_control lost $NIC" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------------------------
# B5: 4096 PCI Express functions

if wants B5; then
    MACHINE=$WORK/scale.json
    {
        printf '{ "name": "scale-4096", "devices": [\n'
        printf '  { "address": "0000:00:00.0", "template": "host-bridge" }'
        for port in $(seq 1 16); do
            printf ',\n  { "address": "0000:00:%02x.0", "template": "root-port", "secondaryBus": %d }' "$port" "$port"
        done
        for bus in $(seq 1 16); do
            for slot in $(seq 0 31); do
                for function in 0 1 2 3 4 5 6 7; do
                    printf ',\n  { "address": "0000:%02x:%02x.%d", "template": "nic-82576" }' "$bus" "$slot" "$function"
                done
            done
        done
        printf '\n] }\n'
    } > "$MACHINE"
    EXPECTED=$((1 + 16 + 4096))
    SCALE=$WORK/scale
    mkdir -p "$SCALE"
    B5_TIMEOUT_MS=${BENCH_B5_TIMEOUT_MS:-300000}
    echo "== B5: $EXPECTED functions ($ROUNDS rounds; start-up given at most $B5_TIMEOUT_MS ms)"
    for round in $(seq "$ROUNDS"); do
        line=$("$LOADGEN" spawnwait "$SCALE/bus/pci/drivers/pciback" "$B5_TIMEOUT_MS" "$WORK/scale.log" -- \
            "$BIN" "$SCALE" --machine "$MACHINE") || true
        pid=$(sed -n 's/^pid=\([0-9]*\).*/\1/p' <<< "$line")
        ready=$(sed -n 's/.*ready_ms=\([0-9.]*\)$/\1/p' <<< "$line")
        [ -n "$pid" ] || { echo "bench: B5: the daemon did not start: $line" >&2; exit 1; }
        PIDS+=("$pid"); MOUNTS+=("$SCALE")
        if [ -z "$ready" ]; then
            # Not answering within the limit: record it and stop B5 (every round would be the same).
            echo "   round $round: the mount did not answer within $B5_TIMEOUT_MS ms; RSS so far $(( $(kib_of "$pid" VmRSS) / 1024 )) MiB"
            B5_TIMED_OUT=$B5_TIMEOUT_MS
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
            kill -9 "$pid" 2>/dev/null || true
            fusermount3 -u -z "$SCALE" 2>/dev/null || true
            unset 'PIDS[-1]' 'MOUNTS[-1]'
            break
        fi
        rss_ready=$(kib_of "$pid" VmRSS)
        start=$(date +%s%N)
        count=$(lspci -A linux-sysfs -O sysfs.path="$SCALE/bus/pci" -D | wc -l)
        finish=$(date +%s%N)
        [ "$count" -eq "$EXPECTED" ] || { echo "bench: lspci listed $count functions, expected $EXPECTED" >&2; exit 1; }
        rss_after=$(kib_of "$pid" VmRSS)
        hwm=$(kib_of "$pid" VmHWM)
        record B5-ready pcibackfs "$round" "$ready"
        record B5-rss-ready pcibackfs "$round" "$(awk -v k="$rss_ready" 'BEGIN { print k / 1024 }')"
        record B5-rss-after pcibackfs "$round" "$(awk -v k="$rss_after" 'BEGIN { print k / 1024 }')"
        record B5-hwm pcibackfs "$round" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')"
        record B5-lspci pcibackfs "$round" "$(awk -v a="$start" -v b="$finish" 'BEGIN { print (b - a) / 1e6 }')"
        fusermount3 -u -z "$SCALE"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        unset 'PIDS[-1]' 'MOUNTS[-1]'
        echo "   round $round: ready ${ready} ms, RSS $((rss_ready / 1024)) MiB -> $((rss_after / 1024)) MiB, lspci $(( (finish - start) / 1000000 )) ms"
        if awk -v r="$ready" 'BEGIN { exit !(r > 10000) }'; then
            echo "   (start-up over 10 s: one round is enough to show it)"
            break
        fi
    done
fi

# ---------------------------------------------------------------------------------------------
# B6: the filter in process

B6_OUT=""
if wants B6; then
    FILTERBENCH=$FILTERBENCH_OVERRIDE
    if [ -z "$FILTERBENCH" ]; then
        echo "== B6: building scripts/bench/filterbench (release, --scratch-path .build-bench)"
        for attempt in 1 2 3; do
            swift build -c release --package-path scripts/bench/filterbench --scratch-path "$ROOT/.build-bench" \
                > "$WORK/filterbench-build.log" 2>&1 && break
            [ "$attempt" -eq 3 ] && { tail -20 "$WORK/filterbench-build.log" >&2; exit 1; }
            sleep 20
        done
        FILTERBENCH=$ROOT/.build-bench/release/filterbench
    fi
    echo "== B6: $FILTERBENCH, $ROUNDS rounds"
    pin=()
    command -v taskset >/dev/null && pin=(taskset -c 0)
    B6_OUT=$("${pin[@]}" "$FILTERBENCH" --secs 1 --rounds "$ROUNDS")
    for name in filtered_reads raw_reads filtered_writes raw_writes; do
        sed -n "s/^$name=[0-9]* rounds=//p" <<< "$B6_OUT" | tr ',' '\n' | awk -v n="$name" '{ printf "%s\tfilterbench\t%d\t%s\n", n, NR, $1 }' >> "$RAW"
    done
fi

# ---------------------------------------------------------------------------------------------
# Report

{
    echo "### Run of $(date -u +%Y-%m-%d) ($ROUNDS rounds, ${SECS} s per figure)"
    echo
    echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)," \
         "libfuse $(pkg-config --modversion fuse3), $(swift --version 2>/dev/null | head -1 | sed 's/ (.*//')."
    echo "FUSE policy of both daemons: direct_io, max_threads 8, clone_fd, entry/attr timeout 3600 s for static" \
         "directories and ${DYNAMIC_TIMEOUT} s for dynamic nodes (probed from pcibackfsd)."
    [ -n "$SYSDEV" ] && echo "Kernel sysfs figures: $SYSDEV (config $(stat -c %s "$SYSDEV/config") bytes)."
    echo
    echo "| Figure | pcibackfs | C baseline | kernel sysfs | pcibackfs / baseline | pcibackfs / sysfs | Target |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    row() { # BENCH LABEL (ops/s, ratio target >= 1.0 vs baseline)
        local p b s r k
        p=$(values "$1" pcibackfs | median); b=$(values "$1" baseline | median); s=$(values "$1" sysfs | median)
        r=$(ratios "$1" pcibackfs "$1" baseline | median); k=$(ratios "$1" pcibackfs "$1" sysfs | median)
        echo "| $2 | $(fmt "$p") /s | $(fmt "$b") /s | $(fmt "$s") /s | $(fmt "$r") | $(fmt "$k") | ≥ 1.0× baseline: $(verdict "$r" 1.0 ">=") |"
    }
    if wants B1; then
        row B1-front "B1 pread 4 B, frontend config"
        row B1-dom0 "B1 pread 4 B, dom0 config"
    fi
    if wants B2; then
        row B2-vendor "B2 open+read+close vendor"
        row B2-config "B2 open+read 4096+close config"
    fi
    if wants B3; then
        row B3-aic "B3 open(O_TRUNC)+write+close allow_interrupt_control"
    fi
    if wants B4; then
        echo
        echo "| B4: two clients | pcibackfs 2 clients | aggregate / 1 client | C baseline 2 clients | baseline aggregate / 1 client | Target |"
        echo "|---|---:|---:|---:|---:|---|"
        for pair in "B4-front B1-front B1 frontend config pread" "B4-vendor B2-vendor B2 vendor open+read+close"; do
            set -- $pair
            two=$1; one=$2; shift 2
            p=$(values "$two" pcibackfs | median); rp=$(ratios "$two" pcibackfs "$one" pcibackfs | median)
            b=$(values "$two" baseline | median); rb=$(ratios "$two" baseline "$one" baseline | median)
            echo "| $* | $(fmt "$p") /s | $(fmt "$rp") | $(fmt "$b") /s | $(fmt "$rb") | ≥ 1.6×: $(verdict "$rp" 1.6 ">=") |"
        done
    fi
    if wants B5; then
        echo
        echo "| B5: 4096 PCIe functions (+17 bridges) | median | rounds | Target |"
        echo "|---|---:|---|---|"
        if [ -n "${B5_TIMED_OUT:-}" ]; then
            echo "| start until the mount answers | > $B5_TIMED_OUT ms | (gave up) | ≤ 1000 ms: MISSED |"
        fi
        v=$(values B5-ready pcibackfs | median)
        [ "$v" = n/a ] || echo "| start until the mount answers | $(fmt "$v") ms | $(values B5-ready pcibackfs | tr '\n' ' ') | ≤ 1000 ms: $(verdict "$v" 1000 "<=") |"
        v=$(values B5-rss-ready pcibackfs | median)
        echo "| RSS when answering | $(fmt "$v") MiB | $(values B5-rss-ready pcibackfs | tr '\n' ' ') | ≤ 64 MiB: $(verdict "$v" 64 "<=") |"
        v=$(values B5-rss-after pcibackfs | median)
        echo "| RSS after lspci | $(fmt "$v") MiB | $(values B5-rss-after pcibackfs | tr '\n' ' ') | ≤ 64 MiB: $(verdict "$v" 64 "<=") |"
        v=$(values B5-hwm pcibackfs | median)
        echo "| peak RSS (VmHWM) | $(fmt "$v") MiB | $(values B5-hwm pcibackfs | tr '\n' ' ') | |"
        v=$(values B5-lspci pcibackfs | median)
        echo "| lspci -A linux-sysfs -D over all | $(fmt "$v") ms | $(values B5-lspci pcibackfs | tr '\n' ' ') | ≤ 3000 ms: $(verdict "$v" 3000 "<=") |"
    fi
    if wants B6; then
        echo
        echo "| B6: in process, one core | filtered | raw ConfigSpace | filtered / raw | Target |"
        echo "|---|---:|---:|---:|---|"
        fr=$(sed -n 's/^filtered_reads=\([0-9]*\).*/\1/p' <<< "$B6_OUT"); rr=$(sed -n 's/^raw_reads=\([0-9]*\).*/\1/p' <<< "$B6_OUT")
        fw=$(sed -n 's/^filtered_writes=\([0-9]*\).*/\1/p' <<< "$B6_OUT"); rw=$(sed -n 's/^raw_writes=\([0-9]*\).*/\1/p' <<< "$B6_OUT")
        echo "| guest reads (4 B at 4) | $(fmt "$fr") /s | $(fmt "$rr") /s | $(fmt "$(sed -n 's/^read_ratio=//p' <<< "$B6_OUT")") | ≥ 5 M/s: $(verdict "$fr" 5000000 ">=") |"
        echo "| guest writes (COMMAND, same value) | $(fmt "$fw") /s | $(fmt "$rw") /s | $(fmt "$(sed -n 's/^write_ratio=//p' <<< "$B6_OUT")") | |"
    fi
    echo
    echo "Per-round values (ops/s, ms or MiB):"
    echo
    echo '```'
    awk -F'\t' '{ k = $1 " " $2; v[k] = v[k] " " $4; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
        END { for (i = 1; i <= n; i++) printf "%-28s%s\n", order[i], v[order[i]] }' "$RAW"
    echo '```'
} > "$WORK/report.md"

echo
cat "$WORK/report.md"
if [ -n "$MARKDOWN" ]; then
    cp "$WORK/report.md" "$MARKDOWN"
    echo "(report written to $MARKDOWN)"
fi
rm -f "$WORK/report.md"
