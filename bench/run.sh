#!/usr/bin/env bash
# bench/run.sh: our gRPC server against grpc C++ (and grpc-go) on the same
# methods, the same client, the same pinning. Numbers, not pass/fail.
#
#   bench/run.sh                 full run (10 s per measurement, 3 rounds, 1,000 and 10,000
#                                idle connections); about 15 minutes
#   bench/run.sh --quick         3 s, 1 round, 1,000 idle connections; a smoke test
#   bench/run.sh --seconds N --rounds N --servers "ours cpp go" --idle "1000 10000"
#                --skip-build --no-idle --no-load
#
# Servers (each serves grpc.testing.TestService; ours and C++ also grpc.health.v1.Health):
#   ours  tests/interop/interop_server --workers 1     (lib/ runtime, Release build)
#   cpp   bench/cpp_server --workers 1 --mode callback (grpc C++ 1.51, Debian libgrpc++-dev;
#         CPP_MODE=sync for the synchronous API)
#   go    grpc-go's interop server, GOMAXPROCS=1       (tools/install-tools.sh; no Health)
#
# Pinning: the server process runs on CPU $SERVER_CPU (default 1) with `taskset -c`, the load
# generator on CPU $CLIENT_CPU (default 0). Every thread of either process is confined to its
# one CPU, whatever thread pool the implementation starts.
#
# Load (per server, per round, each for --seconds after a warm-up):
#   ghz    -c 50 --connections 4: Health/Check, UnaryCall 1 KiB echo (1 KiB payload in, 1 KiB out)
#   h2load -c 4 -m 100 -t 1: Health/Check, UnaryCall 1 KiB echo, EmptyCall, with pre-built
#          gRPC request bodies (5-byte prefix + serialized request, made with protoc --encode)
#   bench/stream_client: one FullDuplexCall stream, 1 KiB each way, window 1 (ping-pong) and 64
# Memory (fresh server per count): VmRSS before and after N idle connections that finished
# the preface and SETTINGS exchange (bench/idle_conns).
#
# The machine may be shared: before each measurement the script waits (up to
# $BENCH_QUIET_WAIT s, default 60) for a quiet second (at most $BENCH_QUIET_BUSY CPUs busy,
# default 0.3), and repeats a measurement during which other processes took more than
# $BENCH_MAX_OTHER CPUs (default 0.3), up to $BENCH_ATTEMPTS times (default 4).
#
# Output: $BENCH_OUT (default $BUILD_DIR/bench-results/<time>): results.tsv, memory.tsv, raw/
# (every tool's output), machine.txt, summary.md (medians over rounds; bench/summarize.py).
# Other settings: BUILD_DIR (default build-bench), SERVER_CPU, CLIENT_CPU, CPP_MODE,
# CHAT_TOOLS_DIR, GRPC_PROTO_DIR, BENCH_REV (commit to print when the source is no git tree).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
TOOLS_BIN=${CHAT_TOOLS_DIR:-$HOME/.cache/chat-backend/tools}/bin
PROTO=${GRPC_PROTO_DIR:-/usr/share/grpc-proto}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
CPP_MODE=${CPP_MODE:-callback}
SECS=10
ROUNDS=3
SERVERS="ours cpp go"
IDLE_COUNTS="1000 10000"
BUILD_STEP=1
DO_LOAD=1
DO_IDLE=1

while (($#)); do
    case "$1" in
    --quick)
        SECS=3 ROUNDS=1 IDLE_COUNTS=1000
        ;;
    --seconds)
        SECS=$2
        shift
        ;;
    --rounds)
        ROUNDS=$2
        shift
        ;;
    --servers)
        SERVERS=$2
        shift
        ;;
    --idle)
        IDLE_COUNTS=$2
        shift
        ;;
    --skip-build) BUILD_STEP=0 ;;
    --no-idle) DO_IDLE=0 ;;
    --no-load) DO_LOAD=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bench/run.sh: unknown argument $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

OUT=${BENCH_OUT:-$BUILD/bench-results/$(date +%Y%m%d-%H%M%S)}
RAW=$OUT/raw
mkdir -p "$RAW"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- build ----------------------------------------------------------------------------------

if ((BUILD_STEP)); then
    log "building ours (Release) in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$RAW/cmake.log"
    ninja -C "$BUILD" interop_server stream_client idle_conns >"$RAW/ninja.log"
    log "building the grpc C++ server in $BUILD/cpp"
    cmake -S "$ROOT/bench/cpp_server" -B "$BUILD/cpp" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        >>"$RAW/cmake.log"
    ninja -C "$BUILD/cpp" >>"$RAW/ninja.log"
fi
OURS=$BUILD/tests/interop/interop_server
CPP=$BUILD/cpp/cpp_server
STREAM=$BUILD/bench/stream_client
IDLE=$BUILD/bench/idle_conns
GHZ=$TOOLS_BIN/ghz
GOSRV=$TOOLS_BIN/grpc-interop-server
for f in "$OURS" "$CPP" "$STREAM" "$IDLE"; do
    [[ -x $f ]] || {
        echo "bench/run.sh: $f missing (drop --skip-build)" >&2
        exit 1
    }
done
if [[ ! -x $GHZ ]] || { [[ $SERVERS == *go* ]] && [[ ! -x $GOSRV ]]; }; then
    log "installing ghz / grpc-go interop server (tools/install-tools.sh)"
    bash "$ROOT/tools/install-tools.sh" >"$RAW/install-tools.log"
fi
for t in h2load nghttp protoc taskset python3; do
    command -v $t >/dev/null || {
        echo "bench/run.sh: $t not found (apt-get install nghttp2-client protobuf-compiler)" >&2
        exit 1
    }
done

# --- request bodies ---------------------------------------------------------------------------

# gRPC framing: compressed flag 0, big-endian length, message.
frame() { # frame <in> <out>
    python3 - "$1" "$2" <<'EOF'
import struct, sys
m = open(sys.argv[1], 'rb').read()
open(sys.argv[2], 'wb').write(b'\0' + struct.pack('>I', len(m)) + m)
EOF
}
REQ=$OUT/requests
mkdir -p "$REQ"
: >"$REQ/empty.pb"
frame "$REQ/empty.pb" "$REQ/health.bin" # HealthCheckRequest{} and Empty{} both serialize to 0 bytes
cp "$REQ/health.bin" "$REQ/empty.bin"
python3 -c 'print("response_size: 1024 payload { body: \"" + "\\000" * 1024 + "\" }")' |
    protoc -I "$PROTO" --encode=grpc.testing.SimpleRequest "$PROTO/grpc/testing/messages.proto" \
        >"$REQ/unary.pb"
frame "$REQ/unary.pb" "$REQ/unary.bin"
UNARY_JSON=$(python3 -c 'import base64, json
print(json.dumps({"response_size": 1024, "payload": {"body": base64.b64encode(bytes(1024)).decode()}}))')

# --- machine ------------------------------------------------------------------------------------

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "kernel: $(uname -sr)"
    echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "pinning: server taskset -c $SERVER_CPU, load generator taskset -c $CLIENT_CPU"
    echo "ours: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "${BENCH_REV:-unknown}") Release, --workers 1"
    echo "cpp: grpc $(pkg-config --modversion grpc++) $CPP_MODE API, protobuf $(pkg-config --modversion protobuf)"
    echo "go: grpc-go interop server $(bash "$ROOT/tools/install-tools.sh" --versions 2>/dev/null | awk '/grpc-go/{print $2}'), GOMAXPROCS=1"
    echo "ghz: $(bash "$ROOT/tools/install-tools.sh" --versions 2>/dev/null | awk '/^ghz/{print $2}')"
    echo "h2load: $(h2load --version | head -1)"
    echo "nghttp2 (ours): $(pkg-config --modversion libnghttp2), libevent $(pkg-config --modversion libevent)"
    echo "seconds per measurement: $SECS, rounds: $ROUNDS"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
log "machine: $(tr '\n' ';' <"$OUT/machine.txt")"

# --- servers ----------------------------------------------------------------------------------

SPID=
SPORT=
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # wait_port <port> <pid>
    for _ in $(seq 200); do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
start_server() { # start_server <name> <log>
    SPORT=$(free_port)
    case "$1" in
    ours) taskset -c "$SERVER_CPU" "$OURS" --host 127.0.0.1 --port "$SPORT" --workers 1 >"$2" 2>&1 & ;;
    cpp) taskset -c "$SERVER_CPU" "$CPP" --host 127.0.0.1 --port "$SPORT" --workers 1 \
        --mode "$CPP_MODE" >"$2" 2>&1 & ;;
    go) GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$GOSRV" --port "$SPORT" >"$2" 2>&1 & ;;
    *)
        echo "bench/run.sh: unknown server $1" >&2
        exit 2
        ;;
    esac
    SPID=$!
    if ! wait_port "$SPORT" "$SPID"; then
        echo "bench/run.sh: server $1 did not start (see $2)" >&2
        exit 1
    fi
}
stop_server() {
    [[ -n $SPID ]] || return 0
    kill -TERM "$SPID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=
}
IDLE_PID=
cleanup() {
    [[ -n $IDLE_PID ]] && kill "$IDLE_PID" 2>/dev/null
    stop_server
}
trap cleanup EXIT

has_health() { [[ $1 != go ]]; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

# results.tsv: one line per measurement. server_cpu_s and client_cpu_s are the user+system CPU
# time of the server and of the load tool during the measurement's wall_s (tool start-up
# included), machine_busy_s the non-idle time of all CPUs (/proc/stat) in that interval: what
# is neither server nor client there is other work on the machine.
RESULTS=$OUT/results.tsv
[[ -f $RESULTS ]] ||
    printf 'round\tserver\ttest\tqps\tp50_ms\tp99_ms\terrors\tserver_cpu_s\tclient_cpu_s\tmachine_busy_s\twall_s\tattempts\n' \
        >"$RESULTS"
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
CHILD_CPU=
children_cpu() { # CHILD_CPU = user+system seconds of this shell's finished children
    times >"$OUT/.times" # not in a $(...) subshell: that would count its own children
    CHILD_CPU=$(tail -1 "$OUT/.times" | awk '{
        n = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] }
        printf "%.3f", n }')
}
# Waits (up to $BENCH_QUIET_WAIT s, default 60) for a second in which the machine is at most
# $BENCH_QUIET_BUSY (default 0.3) CPUs busy, so that other work disturbs less.
wait_quiet() {
    local max=${BENCH_QUIET_WAIT:-60} limit=${BENCH_QUIET_BUSY:-0.3} a b i
    for ((i = 0; i < max; i++)); do
        a=$(machine_busy)
        sleep 1
        b=$(machine_busy)
        awk -v a="$a" -v b="$b" -v hz="$CLK_TCK" -v l="$limit" 'BEGIN{exit !((b - a) / hz <= l)}' &&
            return 0
    done
    log "  machine still busy after ${max}s ($(cut -d' ' -f1-3 /proc/loadavg)); measuring anyway"
}
T0_TICKS=
T0_WALL=
T0_BUSY=
T0_CHILD=
mark() { # before a measurement
    wait_quiet
    T0_TICKS=$(cpu_ticks "$SPID")
    T0_BUSY=$(machine_busy)
    children_cpu
    T0_CHILD=$CHILD_CPU
    T0_WALL=$(date +%s.%N)
}
T1_TICKS=
T1_WALL=
T1_BUSY=
T1_CHILD=
endmark() { # right after a measurement, before parsing its output
    T1_WALL=$(date +%s.%N)
    T1_TICKS=$(cpu_ticks "$SPID")
    T1_BUSY=$(machine_busy)
    children_cpu
    T1_CHILD=$CHILD_CPU
}
ATTEMPTS=1
record() { # record <round> <server> <test> "<qps p50 p99 errors>"
    local cpu wall busy client
    cpu=$(awk -v a="$T0_TICKS" -v b="$T1_TICKS" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (b - a) / hz}')
    busy=$(awk -v a="$T0_BUSY" -v b="$T1_BUSY" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (b - a) / hz}')
    client=$(awk -v a="$T0_CHILD" -v b="$T1_CHILD" 'BEGIN{printf "%.2f", b - a}')
    wall=$(awk -v a="$T0_WALL" -v b="$T1_WALL" 'BEGIN{printf "%.2f", b - a}')
    read -r qps p50 p99 errs <<<"$4"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$qps" "$p50" \
        "$p99" "$errs" "$cpu" "$client" "$busy" "$wall" "$ATTEMPTS" >>"$RESULTS"
    log "  $2 $3: qps=$qps p50=${p50}ms p99=${p99}ms errors=$errs cpu server=${cpu}s client=${client}s machine=${busy}s in ${wall}s"
}

# Other work during the last measurement, in CPUs (machine busy minus server minus client).
other_cpus() {
    awk -v b="$T1_BUSY" -v b0="$T0_BUSY" -v s1="$T1_TICKS" -v s0="$T0_TICKS" -v c1="$T1_CHILD" \
        -v c0="$T0_CHILD" -v w1="$T1_WALL" -v w0="$T0_WALL" -v hz="$CLK_TCK" \
        'BEGIN{printf "%.2f", ((b - b0) / hz - (s1 - s0) / hz - (c1 - c0)) / (w1 - w0)}'
}
# measure <round> <server> <test> <parser> <raw> <command...>: runs the command between marks
# and records it. When other work took more than $BENCH_MAX_OTHER CPUs (default 0.3) meanwhile
# the measurement is repeated, up to $BENCH_ATTEMPTS times (default 4); the last one counts
# (results.tsv says how many it took; summarize.py prefers undisturbed rounds).
measure() {
    local r=$1 s=$2 test=$3 parser=$4 raw=$5 other
    shift 5
    for ((ATTEMPTS = 1; ; ATTEMPTS++)); do
        mark
        "$@"
        endmark
        other=$(other_cpus)
        awk -v o="$other" -v m="${BENCH_MAX_OTHER:-0.3}" 'BEGIN{exit !(o > m)}' || break
        ((ATTEMPTS < ${BENCH_ATTEMPTS:-4})) || break
        log "  $s $test: other work took $other CPUs meanwhile; measuring again"
    done
    record "$r" "$s" "$test" "$("$parser" "$raw")"
}
stream_run() { # stream_run <raw> <window>
    taskset -c "$CLIENT_CPU" "$STREAM" --target "127.0.0.1:$SPORT" --seconds "$SECS" \
        --warmup 1 --window "$2" --size 1024 >"$1" 2>&1 || true
}

ghz_run() { # ghz_run <raw> <seconds> <proto> <call> <data>
    taskset -c "$CLIENT_CPU" "$GHZ" --insecure --proto "$PROTO/$3" -i "$PROTO" --call "$4" \
        -d "$5" -c 50 --connections 4 -z "$2s" --duration-stop ignore -O json \
        "127.0.0.1:$SPORT" >"$1" 2>"$1.err" || true
}
ghz_parse() {
    python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
p = {x['percentage']: x['latency'] / 1e6 for x in d.get('latencyDistribution') or []}
codes = d.get('statusCodeDistribution') or {}
errs = sum(v for k, v in codes.items() if k != 'OK')
print('%.0f %.3f %.3f %d' % (d['rps'] if codes.get('OK') else 0, p.get(50, 0), p.get(99, 0), errs))
EOF
}
h2load_run() { # h2load_run <raw> <seconds|-n N> <body> <path>
    local dur=(-D "$2")
    [[ $2 == -n* ]] && dur=(-n "${2#-n}")
    taskset -c "$CLIENT_CPU" h2load -d "$3" -H 'content-type: application/grpc' -H 'te: trailers' \
        -m 100 -c 4 -t 1 "${dur[@]}" --log-file "$1.log" "http://127.0.0.1:$SPORT$4" \
        >"$1" 2>&1 || true
}
h2load_parse() {
    python3 - "$1" <<'EOF'
import re, sys
txt = open(sys.argv[1]).read()
m = re.search(r'finished in [0-9.]+s, ([0-9.]+) req/s', txt)
qps = float(m.group(1)) if m else 0.0
m = re.search(r'requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout', txt)
errs = sum(int(x) for x in m.groups()[1:]) if m else -1
lat = []
for line in open(sys.argv[1] + '.log'):
    f = line.split()
    if len(f) == 3 and f[1].startswith('2'):
        lat.append(int(f[2]))
lat.sort()
pct = lambda q: lat[min(len(lat) - 1, int(q * (len(lat) - 1) + 0.5))] / 1000 if lat else 0
print('%.0f %.3f %.3f %d' % (qps, pct(0.50), pct(0.99), errs))
EOF
}
stream_parse() {
    python3 - "$1" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r'msgs_per_s=(\d+) p50_us=(\d+) p99_us=(\d+)', t)
print('%s %.3f %.3f 0' % (m.group(1), int(m.group(2)) / 1000, int(m.group(3)) / 1000) if m else '0 0 0 1')
EOF
}
# gRPC status of one request with the h2load body, to be sure 2xx means grpc-status 0.
check_body() { # check_body <body> <path>
    nghttp -v -d "$1" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$SPORT$2" 2>&1 | grep -a -q 'grpc-status: 0' || {
        echo "bench/run.sh: $2 with $1 did not return grpc-status 0" >&2
        exit 1
    }
}

HEALTH_PATH=/grpc.health.v1.Health/Check
UNARY_PATH=/grpc.testing.TestService/UnaryCall
EMPTY_PATH=/grpc.testing.TestService/EmptyCall

load_round() { # load_round <round> <server>
    local r=$1 s=$2
    start_server "$s" "$RAW/$s.r$r.server.log"
    log "round $r: $s (pid $SPID, port $SPORT)"
    check_body "$REQ/unary.bin" "$UNARY_PATH"
    check_body "$REQ/empty.bin" "$EMPTY_PATH"
    has_health "$s" && check_body "$REQ/health.bin" "$HEALTH_PATH"
    # Warm-up: connections, allocator, code paths.
    h2load_run "$RAW/warm.$s.r$r" -n20000 "$REQ/unary.bin" "$UNARY_PATH"
    ghz_run "$RAW/warm.$s.r$r.json" 1 grpc/testing/test.proto grpc.testing.TestService/UnaryCall \
        "$UNARY_JSON"

    local p=$RAW/$s.r$r
    has_health "$s" && measure "$r" "$s" ghz-health ghz_parse "$p.ghz-health.json" \
        ghz_run "$p.ghz-health.json" "$SECS" grpc/health/v1/health.proto \
        grpc.health.v1.Health/Check '{}'
    measure "$r" "$s" ghz-unary1k ghz_parse "$p.ghz-unary1k.json" \
        ghz_run "$p.ghz-unary1k.json" "$SECS" grpc/testing/test.proto \
        grpc.testing.TestService/UnaryCall "$UNARY_JSON"
    has_health "$s" && measure "$r" "$s" h2load-health h2load_parse "$p.h2load-health.txt" \
        h2load_run "$p.h2load-health.txt" "$SECS" "$REQ/health.bin" "$HEALTH_PATH"
    measure "$r" "$s" h2load-unary1k h2load_parse "$p.h2load-unary1k.txt" \
        h2load_run "$p.h2load-unary1k.txt" "$SECS" "$REQ/unary.bin" "$UNARY_PATH"
    measure "$r" "$s" h2load-empty h2load_parse "$p.h2load-empty.txt" \
        h2load_run "$p.h2load-empty.txt" "$SECS" "$REQ/empty.bin" "$EMPTY_PATH"
    for w in 1 64; do
        measure "$r" "$s" "stream-w$w" stream_parse "$p.stream-w$w.txt" \
            stream_run "$p.stream-w$w.txt" "$w"
    done
    stop_server
}

if ((DO_LOAD)); then
    for r in $(seq "$ROUNDS"); do
        # Alternate the order so neither server always runs first in a round.
        order=$SERVERS
        ((r % 2 == 0)) && order=$(tr ' ' '\n' <<<"$SERVERS" | tac | tr '\n' ' ')
        for s in $order; do
            load_round "$r" "$s"
        done
    done
fi

# --- idle connections ---------------------------------------------------------------------------

MEMORY=$OUT/memory.tsv
if ((DO_IDLE)); then
    printf 'server\tconns\trss_before_kib\trss_after_kib\tbytes_per_conn\tready\n' >"$MEMORY"
    for n in $IDLE_COUNTS; do
        # Both ends hold n sockets (separate processes); the hard limit must allow it.
        want=$((n + 1024))
        if (($(ulimit -Hn) < want)); then
            log "skipping $n idle connections: ulimit -Hn $(ulimit -Hn) < $want"
            continue
        fi
        ulimit -Sn "$want" # the soft limit only: lowering the hard one could not be undone
        for s in $SERVERS; do
            start_server "$s" "$RAW/$s.idle$n.server.log"
            sleep 1
            before=$(rss_kib "$SPID")
            taskset -c "$CLIENT_CPU" "$IDLE" --target "127.0.0.1:$SPORT" --count "$n" --hold 300 \
                >"$RAW/$s.idle$n.txt" 2>&1 &
            IDLE_PID=$!
            for _ in $(seq 1200); do
                grep -q '^ready' "$RAW/$s.idle$n.txt" && break
                kill -0 "$IDLE_PID" 2>/dev/null || break
                sleep 0.1
            done
            sleep 2 # let the server settle (deferred frees, lazy allocations)
            after=$(rss_kib "$SPID")
            ready=$(awk '/^ready/{print $2}' "$RAW/$s.idle$n.txt")
            kill "$IDLE_PID" 2>/dev/null || true
            wait "$IDLE_PID" 2>/dev/null || true
            IDLE_PID=
            per=$(((after - before) * 1024 / n))
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$n" "$before" "$after" "$per" "${ready:-0}" \
                >>"$MEMORY"
            log "  $s: $n idle connections (${ready:-0} ready): RSS ${before} -> ${after} KiB, $per B each"
            stop_server
        done
    done
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
python3 "$ROOT/bench/summarize.py" "$OUT" >"$OUT/summary.md"
cat "$OUT/summary.md"
log "results in $OUT"
