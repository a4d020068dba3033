#!/usr/bin/env bash
# svc-presence benchmarks (numbers, not pass/fail): starts redis-server and two svc-presence
# instances on free loopback ports in a temp dir, runs presence_bench, prints one line per run.
#
#   bench/presence/run.sh [BUILD_DIR]          # default <repo>/build
#
# Environment: SECONDS_PER_RUN (10), WORKERS (svc-presence workers, 2), USERS (10000),
# HB_THREADS (2), HB_INFLIGHT (256 per thread), RATE (watch changes/s, 500),
# RUNS ("heartbeat get watch": which of the runs below), PERF_DIR (set: `perf record -g` Redis,
# instance A and the client during the heartbeat run into PERF_DIR/{redis,a,client}.data; the
# profiler's own CPU then counts against the numbers, so use it for profiles only), PERF_ARGS
# (perf record options, default "-g"; e.g. "--call-graph dwarf" to see through -O2 frames).
# Everything shares this machine's cores: Redis, the service and the load client.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-${BUILD_DIR:-$SRC/build}}
SVC=$BUILD/svc-presence/svc-presence
BENCH=$BUILD/bench/presence/presence_bench
SECS=${SECONDS_PER_RUN:-10}
WORKERS=${WORKERS:-2}
USERS=${USERS:-10000}
HB_THREADS=${HB_THREADS:-2}
HB_INFLIGHT=${HB_INFLIGHT:-256}
RATE=${RATE:-500}
RUNS=${RUNS:-heartbeat get watch}
PERF_DIR=${PERF_DIR:-}
read -r -a PERF_ARGS <<<"${PERF_ARGS:--g}"
SECRET=presence-bench-secret-0123456789abcdef

[[ -x $SVC && -x $BENCH ]] || { echo "build first: ninja -C $BUILD svc-presence presence_bench" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

TMP=$(mktemp -d /tmp/chat-presence-bench-XXXXXX)
PIDS=()
BENCH_PREFIX=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    --loglevel warning >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$RPORT"

RPID=${PIDS[0]}

start_presence() { # name -> port (pid in $TMP/name.pid)
    local port mport
    port=$(free_port)
    mport=$(free_port)
    JWT_SECRET=$SECRET REDIS_URL=127.0.0.1:$RPORT LOG_LEVEL=warn "$SVC" --host 127.0.0.1 \
        --port "$port" --metrics-port "$mport" --workers "$WORKERS" >"$TMP/$1.log" 2>&1 &
    echo $! >"$TMP/$1.pid"
    echo "$mport" >"$TMP/$1.mport"
    wait_port "$port"
    echo "$port"
}
A=$(start_presence presence-a)
B=$(start_presence presence-b)
PIDS+=("$(cat "$TMP/presence-a.pid")" "$(cat "$TMP/presence-b.pid")")
APID=${PIDS[1]}
BPID=${PIDS[2]}

# shellcheck source=../common.sh
source "$SRC/bench/common.sh"
# Runs presence_bench and adds the CPU each process used during the run: "cpu_s=redis/a/b/client",
# and the machine's shares during it: "machine=busy/idle/steal" in % of its cores' time.
run() {
    local r0 a0 b0 out t0 t1
    r0=$(cpu_s "$RPID") a0=$(cpu_s "$APID") b0=$(cpu_s "$BPID") t0=$(cpu_ticks)
    out=$(/usr/bin/time -f "%U %S" -o "$TMP/time" "${BENCH_PREFIX[@]}" "$BENCH" "$@") || true
    t1=$(cpu_ticks)
    printf '%s cpu_s=redis:%.2f,a:%.2f,b:%.2f,client:%.2f machine=%s\n' "$out" \
        "$(echo "$(cpu_s "$RPID") - $r0" | bc)" "$(echo "$(cpu_s "$APID") - $a0" | bc)" \
        "$(echo "$(cpu_s "$BPID") - $b0" | bc)" "$(awk 'END {print $1 + $2}' "$TMP/time")" \
        "$(machine_share "$t0" "$t1")"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "$(redis-server --version | cut -d' ' -f3), svc-presence workers=$WORKERS"
# heartbeats: the first pass brings USERS online, then steady-state refreshes
if [[ " $RUNS " == *" heartbeat "* ]]; then
    PERF_PIDS=()
    if [[ -n $PERF_DIR ]]; then
        mkdir -p "$PERF_DIR"
        for x in redis:"$RPID" a:"$APID"; do
            perf record "${PERF_ARGS[@]}" -o "$PERF_DIR/${x%%:*}.data" -p "${x#*:}" -- sleep $((SECS + 3)) \
                >/dev/null 2>&1 &
            PERF_PIDS+=($!)
        done
        BENCH_PREFIX=(perf record "${PERF_ARGS[@]}" -o "$PERF_DIR/client.data" --)
    fi
    run heartbeat --target 127.0.0.1:"$A" --secret "$SECRET" \
        --users "$USERS" --threads "$HB_THREADS" --conns 4 --inflight "$HB_INFLIGHT" \
        --seconds "$SECS" --warmup 3
    for p in "${PERF_PIDS[@]}"; do wait "$p" || true; done
    BENCH_PREFIX=()
    # heartbeats per Redis script call on instance A (warm-up included)
    python3 - "$(cat "$TMP/presence-a.mport")" <<'EOF2' || true
import sys, urllib.request
m = {}
for line in urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode().splitlines():
    if line.startswith("presence_heartbeat_batch_size_"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
n, total = m.get("presence_heartbeat_batch_size_count", 0), m.get("presence_heartbeat_batch_size_sum", 0)
print("# instance A: %d heartbeat script calls, %.1f heartbeats per call" % (n, total / n if n else 0))
EOF2

fi
# GetPresence of 500 users: latency at one call in flight, then throughput at 8
if [[ " $RUNS " == *" get "* ]]; then
    run get --target 127.0.0.1:"$A" --secret "$SECRET" --users "$USERS" --batch 500 \
        --conns 1 --inflight 1 --seconds "$SECS" --warmup 2
    run get --target 127.0.0.1:"$A" --secret "$SECRET" --users "$USERS" --batch 500 \
        --conns 2 --inflight 8 --seconds "$SECS" --warmup 2
fi
# change-to-watcher: USERS watched on A, changes made through B (then 4x the rate)
if [[ " $RUNS " == *" watch "* ]]; then
    run watch --target 127.0.0.1:"$B" --watch-target 127.0.0.1:"$A" --secret "$SECRET" \
        --users "$USERS" --rate "$RATE" --conns 4 --seconds "$SECS"
    run watch --target 127.0.0.1:"$B" --watch-target 127.0.0.1:"$A" --secret "$SECRET" \
        --users "$USERS" --rate $((RATE * 4)) --conns 4 --seconds "$SECS"
fi
