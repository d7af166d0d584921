#!/usr/bin/env bash
# Crash test of `pcibackfsd --state` (on demand, not in CI; needs root, /dev/fuse, fusermount3).
#
# Runs a load of shell loops against the mount (dom0 config writes, frontend config writes
# through the pciback filter, pci_op writes, attribute stores, a bind/unbind/attach/detach
# cycle), SIGKILLs the daemon at a random moment, restarts it on the same (stale) mount point
# with the same --state file, and checks that the machine holds every acknowledged write:
# each worker logs the observable result of every write before ("attempt") and after it was
# acknowledged ("ack"); after the restart the observed value must be the last acknowledged one
# or that of the single write in flight when the daemon died. Reports restart times (daemon
# start to the mount answering) and any lost write.
#
#   scripts/crash-test.sh [KILLS] [MIN_MS] [MAX_MS]     (defaults 100, 50, 800)
#   FSYNC=1 scripts/crash-test.sh                        (the daemon runs with --fsync)
#   KEEP=1 ...                                           (keep the work directory)
set -uo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-100}
MIN_MS=${2:-50}
MAX_MS=${3:-800}
# The release build, as scripts/run.sh runs it (DAEMON=.build/debug/pcibackfsd for the debug one).
DAEMON=${DAEMON:-$PWD/.build/release/pcibackfsd}
[ "$(id -u)" = 0 ] || { echo "crash-test: needs root (FUSE mount)"; exit 2; }
command -v fusermount3 >/dev/null || { echo "crash-test: needs fusermount3 (package fuse3)"; exit 2; }
[ -x "$DAEMON" ] || swift build -c release >/dev/null || exit 2

WORK=$(mktemp -d /tmp/pcibackfs-crash.XXXXXX)
R=$WORK/mnt
STATE=$WORK/state
mkdir -p "$R" "$WORK/logs"
EXTRA=()
[ "${FSYNC:-0}" = 1 ] && EXTRA+=(--fsync)
DAEMON_PID=
WORKER_PIDS=()

cleanup() {
    for pid in "${WORKER_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
    fusermount3 -u -z "$R" 2>/dev/null
    fusermount3 -u -z "$R" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }

# Starts the daemon and waits (at most 10 s) until the mount answers; STARTUP_MS is the time.
STARTUP_MS=
start_daemon() {
    local round=$1 start end
    start=$(now_ms)
    "$DAEMON" "$R" --state "$STATE" "${EXTRA[@]}" >"$WORK/logs/daemon.$round.out" 2>"$WORK/logs/daemon.$round.err" &
    DAEMON_PID=$!
    for _ in $(seq 1 2000); do
        # A read, not a stat: a stale mount's dentries and attributes answer from the kernel's
        # caches, but opening and reading an attribute needs a live daemon.
        if cat "$R/bus/pci/drivers/pciback/slots" >/dev/null 2>&1; then
            end=$(now_ms)
            STARTUP_MS=$((end - start))
            return 0
        fi
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.005
    done
    echo "crash-test: the daemon did not come up (round $round):" >&2
    cat "$WORK/logs/daemon.$round.err" >&2
    return 1
}

# MARK: observations (what each worker's writes leave behind)

F5=$R/fs/pcibackfs/frontends/5
F6=$R/fs/pcibackfs/frontends/6
byte_at() { od -An -tx1 -j "$2" -N1 "$1" 2>/dev/null | tr -d ' \n'; }
observe() {
    case $1 in
        dom0) byte_at "$R/bus/pci/devices/0000:00:05.0/config" 60 ;;
        frontend) byte_at "$F5/bus/pci/devices/0000:00:00.0/config" 12 ;;
        pciop) byte_at "$F6/bus/pci/devices/0000:00:00.0/config" 12 ;;
        override) cat "$R/bus/pci/devices/0000:04:00.0/driver_override" 2>/dev/null ;;
        param) cat "$R/module/xen_pciback/parameters/permissive" 2>/dev/null ;;
        cycle)
            # Three reads; any failing (the daemon died in between) makes the whole unreadable.
            local driver slots slot fe
            [ -d "$R/bus/pci/devices/0000:02:00.0/" ] || { echo unreadable; return; }
            driver=$(basename "$(readlink "$R/bus/pci/devices/0000:02:00.0/driver" 2>/dev/null)" 2>/dev/null)
            [ -z "$driver" ] && driver=none
            slots=$(cat "$R/bus/pci/drivers/pciback/slots" 2>/dev/null) || { echo unreadable; return; }
            if echo "$slots" | grep -q '^0000:02:00.0$'; then slot=slot; else slot=noslot; fi
            if [ -d "$R/fs/pcibackfs/frontends/7" ]; then fe=fe7; else fe=nofe; fi
            [ -d "$R/fs/pcibackfs/frontends" ] || { echo unreadable; return; }
            echo "$driver/$slot/$fe" ;;
    esac
}

# MARK: workers: each logs "start OBS", then per write "attempt OBS" and "ack OBS", and stops
# at its first failed write ("fail ERR").

put_byte() { printf "\\x$2" | dd of="$1" bs=1 seek="$3" count=1 conv=notrunc status=none 2>&1; }

worker() {
    local name=$1 log=$WORK/logs/$1 i=0 value err
    echo "start $(observe "$name")" >"$log"
    while :; do
        i=$((i + 1))
        case $name in
            dom0)
                value=$(printf %02x $(((RANDOM + i) % 256)))
                echo "attempt $value" >>"$log"
                err=$(put_byte "$R/bus/pci/devices/0000:00:05.0/config" "$value" 60) ;;
            frontend)
                value=$(printf %02x $(((RANDOM + i) % 256)))
                echo "attempt $value" >>"$log"
                err=$(put_byte "$F5/bus/pci/devices/0000:00:00.0/config" "$value" 12) ;;
            pciop)
                value=$(printf %02x $(((RANDOM + i) % 256)))
                echo "attempt $value" >>"$log"
                err=$( { echo "conf_write 00:00.0 0x0c 1 0x$value" >"$F6/pci_op"; } 2>&1) ;;
            override)
                value="w$RANDOM.$i"
                echo "attempt $value" >>"$log"
                err=$( { echo -n "$value" >"$R/bus/pci/devices/0000:04:00.0/driver_override"; } 2>&1) ;;
            param)
                if [ $((i % 2)) = 0 ]; then value=Y; else value=N; fi
                echo "attempt $value" >>"$log"
                err=$( { echo "$value" >"$R/module/xen_pciback/parameters/permissive"; } 2>&1) ;;
            cycle)
                local state target file text
                state=$(observe cycle)
                case $state in
                    xhci_hcd/noslot/nofe) file=bus/pci/drivers/xhci_hcd/unbind; text=0000:02:00.0; value=none/noslot/nofe ;;
                    none/noslot/nofe)
                        if [ $((RANDOM % 2)) = 0 ]; then file=bus/pci/drivers/pciback/new_slot; text=0000:02:00.0; value=none/slot/nofe
                        else file=bus/pci/drivers/xhci_hcd/bind; text=0000:02:00.0; value=xhci_hcd/noslot/nofe; fi ;;
                    none/slot/nofe)
                        if [ $((RANDOM % 2)) = 0 ]; then file=bus/pci/drivers/pciback/bind; text=0000:02:00.0; value=pciback/slot/nofe
                        else file=bus/pci/drivers/pciback/remove_slot; text=0000:02:00.0; value=none/noslot/nofe; fi ;;
                    pciback/slot/nofe)
                        if [ $((RANDOM % 2)) = 0 ]; then file=fs/pcibackfs/attach; text="7 0000:02:00.0"; value=pciback/slot/fe7
                        else file=bus/pci/drivers/pciback/unbind; text=0000:02:00.0; value=none/slot/nofe; fi ;;
                    pciback/slot/fe7) file=fs/pcibackfs/detach; text="7 0000:02:00.0"; value=pciback/slot/nofe ;;
                    *) echo "fail unexpected state $state" >>"$log"; return ;;
                esac
                echo "attempt $value" >>"$log"
                err=$( { echo -n "$text" >"$R/$file"; } 2>&1) ;;
        esac
        if [ -z "$err" ]; then echo "ack $value" >>"$log"; else echo "fail $err" >>"$log"; return; fi
    done
}
WORKERS=(dom0 frontend pciop override param cycle)

# Checks each worker's log against the restarted machine. Prints one line per lost write.
verify() {
    local round=$1 bad=0 name log base last_attempt obs
    for name in "${WORKERS[@]}"; do
        log=$WORK/logs/$name
        [ -f "$log" ] || continue
        base=$(grep -E '^(start|ack) ' "$log" | tail -1 | cut -d' ' -f2-)
        last_attempt=$(grep -E '^attempt ' "$log" | tail -1 | cut -d' ' -f2-)
        # Only an attempt after the last acknowledgement may or may not have landed.
        if [ "$(grep -E '^(attempt|ack|start) ' "$log" | tail -1 | cut -d' ' -f1)" != attempt ]; then last_attempt=$base; fi
        obs=$(observe "$name")
        # A worker that could not even read its start state (killed that early) acknowledged nothing.
        [ "$base" = unreadable ] && { cp "$log" "$WORK/logs/$name.round$round"; continue; }
        if [ "$obs" != "$base" ] && [ "$obs" != "$last_attempt" ]; then
            echo "LOST round $round worker $name: observed '$obs', acknowledged '$base', in flight '$last_attempt'"
            bad=1
        fi
        grep -E '^fail ' "$log" | grep -vqiE 'not connected|connection abort|Input/output|No such device|unreadable' \
            && echo "round $round worker $name: unexpected failure: $(grep '^fail ' "$log" | tail -1)"
        cp "$log" "$WORK/logs/$name.round$round"
    done
    # The setup survives too.
    [ -d "$F5" ] && [ -d "$F6" ] || { echo "LOST round $round: frontends 5/6 are gone"; bad=1; }
    grep -q 'ended differently' "$WORK/logs/daemon.$round.err" && { echo "round $round: replay diverged:"; cat "$WORK/logs/daemon.$round.err"; bad=1; }
    return $bad
}

# MARK: run

TIMES=()
LOST=0
TORN=0
echo "crash-test: $KILLS kills, load for ${MIN_MS}-${MAX_MS} ms each, work directory $WORK${EXTRA[*]:+, ${EXTRA[*]}}"
start_daemon 0 || exit 1
echo "first start: ${STARTUP_MS} ms"
# Setup: two devices seized and exported (frontends 5 and 6).
for bdf in 0000:03:00.0 0000:01:00.0; do
    echo -n $bdf >"$R/bus/pci/devices/$bdf/driver/unbind"
    echo -n $bdf >"$R/bus/pci/drivers/pciback/new_slot"
    echo -n $bdf >"$R/bus/pci/drivers/pciback/bind"
done
echo "5 0000:03:00.0" >"$R/fs/pcibackfs/attach"
echo "6 0000:01:00.0" >"$R/fs/pcibackfs/attach"

for round in $(seq 1 "$KILLS"); do
    WORKER_PIDS=()
    for name in "${WORKERS[@]}"; do worker "$name" & WORKER_PIDS+=($!); done
    sleep "$(awk -v a="$MIN_MS" -v b="$MAX_MS" -v r="$RANDOM" 'BEGIN { printf "%.3f", (a + (b - a) * r / 32767) / 1000 }')"
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    # Workers stop at their first failed write; give them a moment, then make sure.
    for _ in $(seq 1 100); do
        alive=0
        for pid in "${WORKER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.02
    done
    for pid in "${WORKER_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    stale=$(stat "$R" 2>&1 | grep -c 'not connected')
    start_daemon "$round" || { LOST=$((LOST + 1)); break; }
    t=$STARTUP_MS
    TIMES+=("$t")
    grep -q 'torn tail' "$WORK/logs/daemon.$round.err" && TORN=$((TORN + 1))
    if ! verify "$round"; then LOST=$((LOST + 1)); fi
    if [ $((round % 10)) = 0 ]; then
        echo "round $round: restart ${t} ms (stale mount: $stale), journal $(stat -c %s "$STATE") bytes; $(grep -o 'replayed.*' "$WORK/logs/daemon.$round.err")"
    fi
done

sorted=$(printf '%s\n' "${TIMES[@]}" | sort -n)
count=${#TIMES[@]}
if [ "$count" -gt 0 ]; then
    p50=$(echo "$sorted" | sed -n "$(((count + 1) / 2))p")
    p95=$(echo "$sorted" | sed -n "$(((count * 95 + 99) / 100))p")
    max=$(echo "$sorted" | tail -1)
    min=$(echo "$sorted" | head -1)
    over=$(echo "$sorted" | awk '$1 > 1000' | wc -l)
    echo "restarts: $count; restart to mount answering: min ${min} ms, median ${p50} ms, p95 ${p95} ms, max ${max} ms; over 1 s: $over"
fi
acks=$(cat "$WORK"/logs/*.round* 2>/dev/null | grep -c '^ack ')
echo "acknowledged writes checked: $acks; rounds with a torn tail dropped: $TORN; rounds with a lost write: $LOST"
echo "final journal: $(stat -c %s "$STATE") bytes; $(grep -o 'replayed.*' "$WORK/logs/daemon.$round.err" 2>/dev/null)"
[ "$LOST" = 0 ]
