#!/usr/bin/env bash
# bench/messaging/run.sh: svc-messaging benchmarks on a local Redis + one Kafka broker
# (tools/stack-lib.sh, temp dir, free ports). Prints numbers; nothing is pass/fail.
#
#   BUILD_DIR=build bench/messaging/run.sh [send|fanout|conns|all]
#
# Needs svc-messaging and msg_bench built: ninja -C build svc-messaging msg_bench
# QUIET_LOAD=1.5: before each benchmark wait (up to QUIET_WAIT s) until the 1-minute load
# average is below it; each prints the load average it started under.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
export CHAT_BUILD_DIR=${BUILD_DIR:-$SRC/build}
BENCH=$CHAT_BUILD_DIR/bench/messaging/msg_bench
what=${1:-all}
# shellcheck source=../common.sh
source "$HERE/../common.sh"
# shellcheck source=../../tools/stack-lib.sh
source "$SRC/tools/stack-lib.sh"
dir=$(mktemp -d /tmp/chat-msg-bench.XXXXXX)
trap 'stack_cleanup "$dir"' EXIT
export KAFKA_PARTITIONS=${KAFKA_PARTITIONS:-12}
start_redis "$dir" "$(free_port)"
start_kafka "$dir" "$(free_port 2)" 1
stack_jwt_secret "$dir" >/dev/null
port=$(free_port)
mport=$(free_port)
start_service "$dir" svc-messaging "$port" "$mport" --workers "${WORKERS:-2}" \
    --max-concurrent-streams 1000 ${MSG_ARGS:-}
pid=$(cat "$dir/pids/svc-messaging-$port.pid")
sleep 3 # consumer assignment and offset reset before the chat is created
common=(--addr "127.0.0.1:$port" --brokers "$KAFKA_BROKERS" --secret "$JWT_SECRET")
# WARMUP_SECONDS (default 30): the broker JVM compiles its produce/fetch paths during
# the first tens of seconds of load; a long-running broker has done so, so the
# measurement starts after a discarded warm-up run at the same rate (0: no warm-up)
if [[ $what != conns ]] && ((${WARMUP_SECONDS:-30} > 0)); then
    echo "== warm-up: ${WARMUP_SECONDS:-30} s at ${RATE:-2000} msg/s (not measured)"
    "$BENCH" send "${common[@]}" --rate "${RATE:-2000}" --seconds "${WARMUP_SECONDS:-30}" \
        --senders 8 >/dev/null
fi
# The broker's GC log (tools/stack-lib.sh): pauses while measuring, printed after each run.
gclog=$dir/kafka/broker-1/gc.log
gc_mark() { gc_from=$(($(wc -l <"$gclog" 2>/dev/null || echo 0) + 1)); }
# CPU seconds of each process and the machine's steal share while measuring.
kpid=$(cat "$dir/pids/kafka-1.pid") rpid=$(cat "$dir/pids/redis.pid")
cpu_all() { echo "$(cpu_s "$kpid") $(cpu_s "$pid") $(cpu_s "$rpid")"; }
cpu_mark() { read -r -a c0 <<<"$(cpu_all)" && t0=$(cpu_ticks); }
cpu_summary() {
    local t1 c1
    t1=$(cpu_ticks)
    read -r -a c1 <<<"$(cpu_all)"
    echo "cpu s while measuring: broker $(echo "${c1[0]} - ${c0[0]}" | bc), svc-messaging" \
        "$(echo "${c1[1]} - ${c0[1]}" | bc), redis $(echo "${c1[2]} - ${c0[2]}" | bc);" \
        "machine $(machine_share "$t0" "$t1" | sed 's/.*steal/steal/')"
}
gc_summary() {
    tail -n +"$gc_from" "$gclog" 2>/dev/null | awk '
        / Pause / && /ms$/ { v = $NF; sub(/ms$/, "", v); n++; s += v; if (v > m) m = v }
        /Safepoint "/ { for (i = 1; i <= NF; i++) if ($i == "Total:") { t = $(i+1) / 1e6;
            sn++; ss += t; if (t > sm) sm = t
            if (t > 5) { w = $0; sub(/.*Safepoint /, "", w); long = long sprintf("\n  %s", w) } } }
        END { printf "broker JVM while measuring: %d GC pauses, %.1f ms total, max %.2f ms; " \
              "%d safepoints, %.1f ms total, max %.2f ms%s\n", n, s, m, sn, ss, sm,
              long == "" ? "" : "; over 5 ms:" long }'
}
if [[ $what == send || $what == all ]]; then
    # SEND_REPEAT=N: N measured runs on the same service and broker
    for ((r = 0; r < ${SEND_REPEAT:-1}; r++)); do
        wait_quiet
        gc_mark
        cpu_mark
        "$BENCH" send "${common[@]}" --rate "${RATE:-2000}" --seconds "${SECONDS_RUN:-15}" \
            --senders 8
        cpu_summary
        gc_summary
    done
fi
if [[ $what == fanout || $what == all ]]; then
    wait_quiet
    gc_mark
    cpu_mark
    "$BENCH" fanout "${common[@]}" --members 100 --rate "${FANOUT_RATE:-20}" \
        --seconds "${SECONDS_RUN:-15}"
    cpu_summary
    gc_summary
fi
if [[ $what == conns || $what == all ]]; then
    ulimit -n 65536 2>/dev/null || true
    wait_quiet
    "$BENCH" conns "${common[@]}" --streams "${STREAMS:-20000}" --pid "$pid" --hold 5
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
# GC_LOG_COPY=FILE keeps the broker's whole GC log (the stack's dir is removed on exit)
[[ -z ${GC_LOG_COPY:-} ]] || cp "$gclog" "$GC_LOG_COPY"
# per-stage histograms (cumulative buckets, seconds): where the send time goes
curl -s "127.0.0.1:$mport/metrics" | grep -E "^messaging_(sends_total|delivery_drops|sessions |(send|dedupe|produce)_seconds_(count|sum|bucket))" || true
