#!/usr/bin/env bash
# libFuzzer harnesses (on demand, not in CI): builds scripts/fuzz with -sanitize=fuzzer,address in
# its own scratch path (.build-fuzz, so `swift build`/`swift test` of the main package are not
# disturbed) and runs one target.
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]
#   scripts/fuzz.sh all SECONDS              # each target in turn for SECONDS
#   scripts/fuzz.sh TARGET reproduce FILE... # run inputs once (a crash-* artifact, a corpus file)
#
# TARGET: filter (config filter vs. a reference model of the profile's rules), grammar (BDF,
# quirk and hide parsers vs. a reference sscanf), lspci (dump parser and importer), machinefile
# (machine file JSON and devices()). The corpus grows in scripts/fuzz/corpus/TARGET (git-ignored),
# seeded from scripts/fuzz/seeds/TARGET; crashes are written to scripts/fuzz/artifacts/TARGET.
# FUZZ_JOBS=N runs N fuzzing processes in parallel (-fork=N). The acceptance run of issue
# "Reliability" is 10 million executions or one hour per target, whichever comes first:
#   scripts/fuzz.sh TARGET 3600 -runs=10000000
# FUZZ_FILTER_TRACE=1 scripts/fuzz.sh filter reproduce FILE prints each guest write of the input
# with the implementation's error and the model's. The filter target starts every input from a
# verified deep copy of a world built once; FUZZ_FILTER_REBUILD=1 builds it afresh per input.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ=$ROOT/scripts/fuzz
TARGETS="filter grammar lspci machinefile"

usage() { sed -n '2,19p' "$0"; exit 2; }
[ $# -ge 2 ] || usage
TARGET=$1
SECONDS_ARG=$2
shift 2

if [ "$TARGET" = all ]; then
    for target in $TARGETS; do "$0" "$target" "$SECONDS_ARG" "$@"; done
    exit 0
fi
case " $TARGETS " in *" $TARGET "*) ;; *) echo "fuzz: unknown target $TARGET (one of: $TARGETS, all)" >&2; exit 2 ;; esac

# SwiftPM renames an executable's `main` to `<module>_main` and links with --defsym, so each
# harness's main.swift calls LLVMFuzzerRunDriver itself (the shared glue in scripts/fuzz/Sources/
# FuzzDriver); -sanitize=fuzzer instruments every module (coverage) and links libFuzzer,
# -sanitize=address adds ASan and LeakSanitizer.
echo "== building fuzz-$TARGET (release, -sanitize=fuzzer,address)"
mkdir -p "$ROOT/.build-fuzz"
for attempt in 1 2 3; do
    # (Retried: "input file ... was modified during the build" when sources change meanwhile.)
    if swift build -c release --package-path "$FUZZ" --scratch-path "$ROOT/.build-fuzz" \
        -Xswiftc -sanitize=fuzzer,address --product "fuzz-$TARGET" >"$ROOT/.build-fuzz/build.log" 2>&1; then
        break
    fi
    grep -v "Cannot export local symbol" "$ROOT/.build-fuzz/build.log" | tail -20
done
BIN="$(swift build -c release --package-path "$FUZZ" --scratch-path "$ROOT/.build-fuzz" --show-bin-path)/fuzz-$TARGET"
[ -x "$BIN" ] || { echo "fuzz: build of fuzz-$TARGET failed" >&2; exit 1; }

CORPUS=$FUZZ/corpus/$TARGET
ARTIFACTS=$FUZZ/artifacts/$TARGET
mkdir -p "$CORPUS" "$ARTIFACTS"
SEEDS=()
[ -d "$FUZZ/seeds/$TARGET" ] && SEEDS=("$FUZZ/seeds/$TARGET")
DICT=()
[ -f "$FUZZ/dicts/$TARGET.dict" ] && DICT=("-dict=$FUZZ/dicts/$TARGET.dict")

if [ "$SECONDS_ARG" = reproduce ]; then
    SWIFT_BACKTRACE=enable=no exec "$BIN" "$@"
fi

# A dump of one PCIe function (4096 config bytes as hex lines) is about 14 KB of text.
MAX_LEN=4096
[ "$TARGET" = lspci ] && MAX_LEN=20000
LOG=$ARTIFACTS/last-run.log
echo "== fuzzing $TARGET for ${SECONDS_ARG}s (corpus $CORPUS, log $LOG)"
FORK=()
[ -n "${FUZZ_JOBS:-}" ] && FORK=("-fork=$FUZZ_JOBS" "-ignore_crashes=0")
set +e
# Crashes are reported by libFuzzer and ASan (the Swift backtracer would race them); ASan keeps no
# allocation stacks (a large share of the time otherwise), leak detection stays on.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0:detect_leaks=1}
"$BIN" -max_total_time="$SECONDS_ARG" -print_final_stats=1 -artifact_prefix="$ARTIFACTS/" \
    -max_len=$MAX_LEN -timeout=10 -rss_limit_mb=4096 "${DICT[@]}" "${FORK[@]}" "$@" "$CORPUS" "${SEEDS[@]}" >"$LOG" 2>&1
STATUS=$?
set -e
RUNS=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOG" | grep -o '[0-9]*$' | tail -1)
[ -n "$RUNS" ] || RUNS=$(grep -oE '^#[0-9]+' "$LOG" | tail -1 | tr -d '#')
RATE=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$LOG" | grep -o '[0-9]*$' | tail -1)
[ -n "$RATE" ] || RATE=$(grep -oE 'exec/s: [0-9]+' "$LOG" | tail -1 | grep -oE '[0-9]+')
COVERAGE=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$LOG" | tail -1)
echo "target:      $TARGET"
echo "executions:  ${RUNS:-?} (${RATE:-?}/s)"
echo "coverage:    ${COVERAGE:-?}, corpus $(find "$CORPUS" -type f | wc -l) inputs"
if [ "$STATUS" -eq 0 ]; then
    echo "result:      OK (no crash, leak or invariant violation)"
else
    echo "result:      FAILED (exit $STATUS); see $LOG"
    grep -E "^(Fatal error|.*fatal error|==[0-9]+==ERROR|SUMMARY)|Test unit written|artifact_prefix" "$LOG" | head -8
    echo "reproduce:   scripts/fuzz.sh $TARGET reproduce $(ls -t "$ARTIFACTS"/crash-* "$ARTIFACTS"/leak-* "$ARTIFACTS"/timeout-* 2>/dev/null | head -1)"
fi
exit "$STATUS"
