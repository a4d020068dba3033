#!/usr/bin/env bash
# Health and reflection as third-party tools see them: grpcurl and `buf curl`
# (both pinned by tools/install-tools.sh) against svc-sync (the one service that needs no backing servers yet) and against the
# interop server, each started here on a free loopback port and stopped on
# exit. Every step asserts on the tool's output and exit status; the first
# failing step ends the test with a message naming it and the server logs.
#
#   BUILD_DIR=build SOURCE_DIR=. bash tests/integration/reflection_tools_test.sh
#
# Finally svc-sync gets SIGTERM and must exit 0 having logged its stop line.
set -euo pipefail

SOURCE_DIR=${SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD_DIR=${BUILD_DIR:-$SOURCE_DIR/build}
SVC=$BUILD_DIR/svc-sync/svc-sync
INTEROP=$BUILD_DIR/tests/interop/interop_server

me=reflection_tools_test
work=$(mktemp -d)
pids=()
logs=()

fail() {
    echo "$me: FAIL: $*" >&2
    local l
    for l in "${logs[@]}"; do
        echo "--- $l" >&2
        tail -n 20 "$l" >&2 || true
    done
    exit 1
}
ok() { echo "ok - $*"; }

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

for b in "$SVC" "$INTEROP"; do
    [[ -x "$b" ]] || fail "binary not found: $b (build first; BUILD_DIR=$BUILD_DIR)"
done

# --- tools --------------------------------------------------------------------------------------
eval "$("$SOURCE_DIR/tools/install-tools.sh" --env)"
GRPCURL=$CHAT_TOOLS_DIR/bin/grpcurl
BUF=$CHAT_TOOLS_DIR/bin/buf
if [[ ! -x "$GRPCURL" || ! -x "$BUF" ]]; then
    "$SOURCE_DIR/tools/install-tools.sh" >&2 || fail "tools/install-tools.sh failed"
fi

# --- servers ------------------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_server NAME BINARY: starts BINARY on a free loopback port (retrying if the port is taken
# meanwhile); sets $started_pid, $started_port and $started_log.
start_server() {
    local name=$1 bin=$2 attempt port pid log=$work/$1.log
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        "$bin" --host 127.0.0.1 --port "$port" --workers 2 >"$log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
            if grep -q "serving gRPC on 127.0.0.1:$port " "$log"; then
                pids+=("$pid")
                logs+=("$log")
                started_pid=$pid started_port=$port started_log=$log
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "$me: $name did not start on port $port (attempt $attempt)" >&2
    done
    logs+=("$log")
    fail "$name would not start"
}

# run DESC EXPECTED_RC CMD...: runs CMD, stores its stdout+stderr in $out, fails unless it exits
# with EXPECTED_RC.
run() {
    local desc=$1 want=$2 rc
    shift 2
    set +e
    out=$(timeout 30 "$@" 2>&1)
    rc=$?
    set -e
    [[ $rc -eq $want ]] || fail "$desc: exit $rc, want $want; output:
$out"
}

# has DESC NEEDLE: $out must contain the fixed string NEEDLE.
has() {
    grep -qF -- "$2" <<<"$out" || fail "$1: output lacks '$2'; output:
$out"
}

# has_line DESC LINE: $out must contain LINE as a whole line.
has_line() {
    grep -qxF -- "$2" <<<"$out" || fail "$1: no line '$2' in output:
$out"
}

start_server svc-sync "$SVC"
svc_pid=$started_pid svc_log=$started_log
svc=127.0.0.1:$started_port
start_server interop_server "$INTEROP"
interop_pid=$started_pid interop_log=$started_log
interop=127.0.0.1:$started_port

# --- grpcurl against svc-sync ------------------------------------------------------------------
run "grpcurl list" 0 "$GRPCURL" -plaintext "$svc" list
for s in grpc.health.v1.Health grpc.reflection.v1.ServerReflection \
    grpc.reflection.v1alpha.ServerReflection; do
    has_line "grpcurl list" "$s"
done
ok "grpcurl list: health and both reflection versions"

run "grpcurl describe Health" 0 "$GRPCURL" -plaintext "$svc" describe grpc.health.v1.Health
has "grpcurl describe Health" "grpc.health.v1.Health is a service:"
has "grpcurl describe Health" \
    "rpc Check ( .grpc.health.v1.HealthCheckRequest ) returns ( .grpc.health.v1.HealthCheckResponse );"
has "grpcurl describe Health" \
    "rpc Watch ( .grpc.health.v1.HealthCheckRequest ) returns ( stream .grpc.health.v1.HealthCheckResponse );"
ok "grpcurl describe grpc.health.v1.Health"

run "grpcurl Health/Check" 0 "$GRPCURL" -plaintext "$svc" grpc.health.v1.Health/Check
has "grpcurl Health/Check" '"status": "SERVING"'
ok "grpcurl grpc.health.v1.Health/Check: SERVING"

# grpcurl exits 64 + the status code: NOT_FOUND (5) for a service health does not know.
run "grpcurl Health/Check unknown service" 69 "$GRPCURL" -plaintext -d '{"service": "no.such.Service"}' \
    "$svc" grpc.health.v1.Health/Check
has "grpcurl Health/Check unknown service" "Code: NotFound"
ok "grpcurl grpc.health.v1.Health/Check of an unknown service: NotFound"

# --- buf curl against svc-sync -----------------------------------------------------------------
bufcurl=("$BUF" curl --protocol grpc --http2-prior-knowledge)
run "buf curl --list-services" 0 "${bufcurl[@]}" --list-services "http://$svc"
for s in grpc.health.v1.Health grpc.reflection.v1.ServerReflection \
    grpc.reflection.v1alpha.ServerReflection; do
    has_line "buf curl --list-services" "$s"
done
ok "buf curl --list-services"

run "buf curl --list-methods" 0 "${bufcurl[@]}" --list-methods "http://$svc"
for m in grpc.health.v1.Health/Check grpc.health.v1.Health/Watch \
    grpc.reflection.v1.ServerReflection/ServerReflectionInfo; do
    has_line "buf curl --list-methods" "$m"
done
ok "buf curl --list-methods"

run "buf curl Health/Check" 0 "${bufcurl[@]}" -d '{}' "http://$svc/grpc.health.v1.Health/Check"
has "buf curl Health/Check" '"status": "SERVING"'
ok "buf curl grpc.health.v1.Health/Check (schema from reflection): SERVING"

# --- grpcurl against the interop server ---------------------------------------------------------
run "grpcurl describe TestService" 0 "$GRPCURL" -plaintext "$interop" describe \
    grpc.testing.TestService
has "grpcurl describe TestService" "grpc.testing.TestService is a service:"
for m in "rpc UnaryCall ( .grpc.testing.SimpleRequest ) returns ( .grpc.testing.SimpleResponse );" \
    "rpc FullDuplexCall ( stream .grpc.testing.StreamingOutputCallRequest ) returns ( stream .grpc.testing.StreamingOutputCallResponse );"; do
    has "grpcurl describe TestService" "$m"
done
ok "grpcurl describe grpc.testing.TestService"

run "grpcurl UnaryCall" 0 "$GRPCURL" -plaintext -d '{"response_size": 10}' "$interop" \
    grpc.testing.TestService/UnaryCall
python3 -c '
import base64, json, sys
body = base64.b64decode(json.loads(sys.stdin.read())["payload"]["body"])
sys.exit(0 if body == bytes(10) else 1)' <<<"$out" ||
    fail "grpcurl UnaryCall: want a payload of 10 zero bytes; output:
$out"
ok "grpcurl grpc.testing.TestService/UnaryCall {\"response_size\": 10}: 10 zero bytes"

# In the schema but not served: the server answers UNIMPLEMENTED (grpcurl: 64 + 12).
run "grpcurl UnimplementedCall" 76 "$GRPCURL" -plaintext "$interop" \
    grpc.testing.TestService/UnimplementedCall
has "grpcurl UnimplementedCall" "Code: Unimplemented"
ok "grpcurl grpc.testing.TestService/UnimplementedCall: Unimplemented"

# Unknown even to reflection: describe it locally so that the call reaches the server.
cat >"$work/unknown.proto" <<'EOF'
syntax = "proto3";
package grpc.testing;
message Nothing {}
service TestService {
  rpc NoSuchMethod(Nothing) returns (Nothing);
}
EOF
run "grpcurl unknown method" 76 "$GRPCURL" -plaintext -import-path "$work" -proto unknown.proto \
    "$interop" grpc.testing.TestService/NoSuchMethod
has "grpcurl unknown method" "Code: Unimplemented"
ok "grpcurl grpc.testing.TestService/NoSuchMethod: Unimplemented"

# --- SIGTERM: both servers drain and exit 0 -----------------------------------------------------
# stop_server NAME PID LOG: SIGTERM, then the server must exit 0 within 15 s having logged its
# stop line.
stop_server() {
    local name=$1 pid=$2 log=$3 rc p left=()
    kill -TERM "$pid"
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && fail "$name still running 15 s after SIGTERM"
    set +e
    wait "$pid"
    rc=$?
    set -e
    for p in "${pids[@]}"; do
        [[ $p == "$pid" ]] || left+=("$p")
    done
    pids=("${left[@]}")
    [[ $rc -eq 0 ]] || fail "$name exited $rc after SIGTERM, want 0"
    grep -qE "$name: .*stopped" "$log" || fail "$name logged no stop line"
    ok "$name: SIGTERM -> exit 0, logged '$(grep -E "$name: .*stopped" "$log" | tail -n 1 |
        sed 's/^[^ ]* [A-Z]* //')'"
}
stop_server svc-sync "$svc_pid" "$svc_log"
stop_server interop_server "$interop_pid" "$interop_log"

echo "$me: all steps passed"
