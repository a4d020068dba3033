#!/usr/bin/env bash
# svc-presence benchmarks (numbers, not pass/fail): starts redis-server and two svc-presence
# instances on free loopback ports in a temp dir, runs presence_bench, prints one line per run.
#
#   bench/presence/run.sh [BUILD_DIR]          # default <repo>/build
#
# Environment: SECONDS_PER_RUN (10), WORKERS (svc-presence workers, 2), USERS (10000),
# HB_THREADS (2), HB_INFLIGHT (256 per thread), RATE (watch changes/s, 500).
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
SECRET=presence-bench-secret-0123456789abcdef

[[ -x $SVC && -x $BENCH ]] || { echo "build first: ninja -C $BUILD svc-presence presence_bench" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

TMP=$(mktemp -d /tmp/chat-presence-bench-XXXXXX)
PIDS=()
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

start_presence() { # name -> port
    local port mport
    port=$(free_port)
    mport=$(free_port)
    JWT_SECRET=$SECRET REDIS_URL=127.0.0.1:$RPORT LOG_LEVEL=warn "$SVC" --host 127.0.0.1 \
        --port "$port" --metrics-port "$mport" --workers "$WORKERS" >"$TMP/$1.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    echo "$port"
}
A=$(start_presence presence-a)
B=$(start_presence presence-b)

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(redis-server --version | cut -d' ' -f3), svc-presence workers=$WORKERS"
# heartbeats: the first pass brings USERS online, then steady-state refreshes
"$BENCH" heartbeat --target 127.0.0.1:"$A" --secret "$SECRET" --users "$USERS" \
    --threads "$HB_THREADS" --conns 4 --inflight "$HB_INFLIGHT" --seconds "$SECS" --warmup 3
# GetPresence of 500 users: latency at one call in flight, then throughput at 8
"$BENCH" get --target 127.0.0.1:"$A" --secret "$SECRET" --users "$USERS" --batch 500 \
    --conns 1 --inflight 1 --seconds "$SECS" --warmup 2
"$BENCH" get --target 127.0.0.1:"$A" --secret "$SECRET" --users "$USERS" --batch 500 \
    --conns 2 --inflight 8 --seconds "$SECS" --warmup 2
# change-to-watcher: USERS watched on A, changes made through B
"$BENCH" watch --target 127.0.0.1:"$B" --watch-target 127.0.0.1:"$A" --secret "$SECRET" \
    --users "$USERS" --rate "$RATE" --conns 4 --seconds "$SECS"
