#!/usr/bin/env bash
# bench/profile.sh: a short CPU profile of our server under h2load load, to find hot spots in
# lib/. Uses perf (software cpu-clock event, DWARF call graphs) when it works here, otherwise
# valgrind --tool=callgrind (slower: the server runs ~50x slower, so fewer requests).
#
#   bench/profile.sh [unary|health|stream] [seconds]      default: unary 5
#
# Pinned like bench/run.sh (server CPU $SERVER_CPU, h2load CPU $CLIENT_CPU). Expects
# bench/run.sh to have built $BUILD_DIR (default build-bench). Writes $BUILD_DIR/profile/ and
# prints: time per shared object, top self symbols, and inclusive time of lib/ functions.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
PROTO=${GRPC_PROTO_DIR:-/usr/share/grpc-proto}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
WHAT=${1:-unary}
SECS=${2:-5}
OUT=$BUILD/profile
mkdir -p "$OUT"
OURS=$BUILD/tests/interop/interop_server
[[ -x $OURS ]] || {
    echo "bench/profile.sh: $OURS missing (run bench/run.sh first)" >&2
    exit 1
}

case "$WHAT" in
unary)
    python3 -c 'print("response_size: 1024 payload { body: \"" + "\\000" * 1024 + "\" }")' |
        protoc -I "$PROTO" --encode=grpc.testing.SimpleRequest \
            "$PROTO/grpc/testing/messages.proto" >"$OUT/req.pb"
    URLPATH=/grpc.testing.TestService/UnaryCall
    ;;
health)
    : >"$OUT/req.pb"
    URLPATH=/grpc.health.v1.Health/Check
    ;;
stream) URLPATH= ;;
*)
    echo "usage: $0 [unary|health|stream] [seconds]" >&2
    exit 2
    ;;
esac
if [[ -n $URLPATH ]]; then
    python3 - "$OUT/req.pb" "$OUT/req.bin" <<'EOF'
import struct, sys
m = open(sys.argv[1], 'rb').read()
open(sys.argv[2], 'wb').write(b'\0' + struct.pack('>I', len(m)) + m)
EOF
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SPID=
cleanup() {
    if [[ -n $SPID ]]; then
        kill -TERM "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

use_perf=0
if command -v perf >/dev/null && perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
    use_perf=1
fi
if ((use_perf)); then
    taskset -c "$SERVER_CPU" "$OURS" --host 127.0.0.1 --port "$PORT" --workers 1 \
        >"$OUT/server.log" 2>&1 &
else
    command -v valgrind >/dev/null || {
        echo "bench/profile.sh: neither perf nor valgrind works here" >&2
        exit 1
    }
    taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
        "$OURS" --host 127.0.0.1 --port "$PORT" --workers 1 >"$OUT/server.log" 2>&1 &
fi
SPID=$!
for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.05
done

load() { # load <seconds>
    if [[ -n $URLPATH ]]; then
        taskset -c "$CLIENT_CPU" h2load -d "$OUT/req.bin" -H 'content-type: application/grpc' \
            -H 'te: trailers' -m 100 -c 4 -t 1 -D "$1" "http://127.0.0.1:$PORT$URLPATH" \
            >"$OUT/load.txt" 2>&1
    else
        taskset -c "$CLIENT_CPU" "$BUILD/bench/stream_client" --target "127.0.0.1:$PORT" \
            --seconds "$1" --warmup 0 --window 64 >"$OUT/load.txt" 2>&1
    fi
}

if ((use_perf)); then
    load $((SECS + 2)) &
    LPID=$!
    sleep 1
    perf record -e cpu-clock -F 1000 --call-graph dwarf,16384 -p "$SPID" -o "$OUT/perf.data" \
        -- sleep "$SECS" >"$OUT/perf-record.log" 2>&1
    wait "$LPID"
    echo "== load: $(grep -E 'finished in|msgs_per_s' "$OUT/load.txt")"
    echo "== time per shared object"
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -8 || true # head closes the pipe early: not an error
    echo "== top self symbols"
    perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -25 || true
    echo "== inclusive time of our functions (interop_server binary: lib/ + the handler)"
    perf report -i "$OUT/perf.data" --children --sort dso,sym --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9].*interop_server' | head -30 || true
    echo "(call graphs: perf report -i $OUT/perf.data --no-children -G)"
else
    load "$SECS"
    cleanup
    SPID=
    echo "== load (under valgrind): $(grep -E 'finished in|msgs_per_s' "$OUT/load.txt")"
    callgrind_annotate --inclusive=no "$OUT/callgrind.out" 2>/dev/null | sed -n '1,45p' || true
    echo "== inclusive"
    callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null | grep -E 'lib/|rpc_|conn_|call_' |
        head -30 || true
fi
