#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan, in build-fuzz/) and runs each for a
# while. Fails when any target crashes, leaks, trips a sanitizer, times out or aborts on one
# of its own checks; the reproducer is then in build-fuzz/fuzz-artifacts/<target>/.
#
#   tests/fuzz/run.sh [seconds]     # seconds per target, default 30 (CI: 20)
#
# Env: FUZZ_BUILD_DIR (default <repo>/build-fuzz), FUZZ_TARGETS (space-separated subset),
#      FUZZ_JOBS (parallel fuzzing processes per target, default 1).
# Working corpora grow in $FUZZ_BUILD_DIR/fuzz-corpus/<target>/ (kept between runs); the
# checked-in seeds in tests/fuzz/corpus/<target>/ are read, never written.
set -euo pipefail

SECS=${1:-30}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${FUZZ_BUILD_DIR:-$SRC/build-fuzz}
TARGETS=${FUZZ_TARGETS:-fuzz_deframer fuzz_server_session fuzz_percent_timeout_base64}
JOBS=${FUZZ_JOBS:-1}

command -v clang-14 >/dev/null 2>&1 ||
    { echo "run.sh: clang-14 not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 1; }

gen=()
[[ -f "$BUILD/CMakeCache.txt" ]] || gen=(-G Ninja)
CC=clang-14 cmake -S "$SRC" -B "$BUILD" "${gen[@]}" -DCHAT_FUZZ=ON -DCHAT_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" --target fuzz

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0
failed=0
summary=()
for t in $TARGETS; do
    bin="$BUILD/tests/fuzz/$t"
    work="$BUILD/fuzz-corpus/$t"
    art="$BUILD/fuzz-artifacts/$t"
    log="$BUILD/fuzz-logs/$t.log"
    mkdir -p "$work" "$art" "$(dirname "$log")"
    args=(-max_total_time="$SECS" -timeout=25 -max_len=8192 -print_final_stats=1
        -artifact_prefix="$art/")
    [[ -f "$SRC/tests/fuzz/$t.dict" ]] && args+=(-dict="$SRC/tests/fuzz/$t.dict")
    ((JOBS > 1)) && args+=(-fork="$JOBS")
    echo "==== $t: ${SECS}s (log: $log)"
    rc=0
    "$bin" "${args[@]}" "$work" "$SRC/tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    execs=$(awk '/stat::number_of_executed_units/ { n = $2 } END { print n + 0 }' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    if ((rc == 0)); then
        passed=$((passed + 1))
        summary+=("$t: ok, $execs execs, ${cov:-cov: ?}, corpus $(find "$work" -type f | wc -l) files")
    else
        failed=$((failed + 1))
        summary+=("$t: FAILED (exit $rc), $execs execs; reproducer(s): $(ls "$art" | tr '\n' ' ')")
        grep -E -A30 'ERROR: |runtime error|deadly signal|Timeout' "$log" | head -60 || tail -40 "$log"
    fi
done
printf '%s\n' "${summary[@]}"
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
