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
SVC=$CHAT_BUILD_DIR/svc-messaging/svc-messaging
what=${1:-all}
QUIET_LOAD=${QUIET_LOAD:-1.5}
QUIET_WAIT=${QUIET_WAIT:-1800}
load1() { cut -d' ' -f1 /proc/loadavg; }
wait_quiet() {
    local t
    for ((t = 0; t < QUIET_WAIT; t += 10)); do
        awk -v l="$(load1)" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }' && break
        ((t % 60 == 0)) && echo "== waiting for a quiet machine (load $(load1))" >&2
        sleep 10
    done
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}
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
gc_summary() {
    tail -n +"$gc_from" "$gclog" 2>/dev/null | awk '
        / Pause / && /ms$/ { v = $NF; sub(/ms$/, "", v); n++; s += v; if (v > m) m = v }
        /Safepoint "/ { for (i = 1; i <= NF; i++) if ($i == "Total:") { t = $(i+1) / 1e6;
            sn++; ss += t; if (t > sm) sm = t } }
        END { printf "broker JVM while measuring: %d GC pauses, %.1f ms total, max %.2f ms; " \
              "%d safepoints, %.1f ms total, max %.2f ms\n", n, s, m, sn, ss, sm }'
}
if [[ $what == send || $what == all ]]; then
    # SEND_REPEAT=N: N measured runs on the same service and broker
    for ((r = 0; r < ${SEND_REPEAT:-1}; r++)); do
        wait_quiet
        gc_mark
        "$BENCH" send "${common[@]}" --rate "${RATE:-2000}" --seconds "${SECONDS_RUN:-15}" \
            --senders 8
        gc_summary
    done
fi
if [[ $what == fanout || $what == all ]]; then
    wait_quiet
    gc_mark
    "$BENCH" fanout "${common[@]}" --members 100 --rate "${FANOUT_RATE:-20}" \
        --seconds "${SECONDS_RUN:-15}"
    gc_summary
fi
if [[ $what == conns || $what == all ]]; then
    ulimit -n 65536 2>/dev/null || true
    wait_quiet
    "$BENCH" conns "${common[@]}" --streams "${STREAMS:-20000}" --pid "$pid" --hold 5
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
# per-stage histograms (cumulative buckets, seconds): where the send time goes
curl -s "127.0.0.1:$mport/metrics" | grep -E "^messaging_(sends_total|delivery_drops|sessions |(send|dedupe|produce)_seconds_(count|sum|bucket))" || true
