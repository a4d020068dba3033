#!/usr/bin/env bash
# Our C interop client (tests/interop/interop_client.c) against our C interop
# server (tests/interop/interop_server.c) on a free loopback port.
#
#   tests/interop/run_c_client_vs_c_server.sh CLIENT SERVER [CASE...]
#
# Without cases it runs the four compression cases: grpc-go's interop server
# lacks the CompressedRequest/CompressedResponse features, so against it the C
# client skips them (run_c_client_vs_go_server.sh) and its compression code
# paths are exercised here instead. Here a skip (exit 77) is a failure: our
# server has both features. That the server side is right is checked
# independently by grpc-go (run_go_client_vs_c_server.sh) and Python grpcio
# (tests/integration/grpcio_test.py).
set -euo pipefail

[[ $# -ge 2 ]] || {
    echo "usage: $0 CLIENT SERVER [CASE...]" >&2
    exit 2
}
client=$1
server=$2
shift 2
CASES=("$@")
[[ ${#CASES[@]} -gt 0 ]] || CASES=(client_compressed_unary server_compressed_unary
    client_compressed_streaming server_compressed_streaming)
for b in "$client" "$server"; do
    [[ -x "$b" ]] || {
        echo "interop: binary not found: $b" >&2
        exit 1
    }
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

log=$(mktemp)
spid=
cleanup() {
    if [[ -n "$spid" ]]; then
        kill -TERM "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

# The port may be taken between picking and binding: retry a few times.
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    "$server" --host 127.0.0.1 --port "$port" --workers 2 >"$log" 2>&1 &
    spid=$!
    for _ in $(seq 1 100); do
        if grep -q "serving gRPC on 127.0.0.1:$port " "$log"; then
            break 2
        fi
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.05
    done
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    spid=
    echo "interop: server did not start on port $port (attempt $attempt)" >&2
done
[[ -n "$spid" ]] || {
    cat "$log" >&2
    exit 1
}

pass=0
fail=0
for c in "${CASES[@]}"; do
    set +e
    out=$(timeout 120 "$client" --server_host=127.0.0.1 --server_port="$port" \
        --test_case="$c" 2>&1)
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        printf '  PASS  %s\n' "$c"
        pass=$((pass + 1))
    else
        printf '  FAIL  %s (exit %d)\n' "$c" "$rc"
        printf '%s\n' "$out" | sed 's/^/        /'
        fail=$((fail + 1))
    fi
done
# The server must have survived the run and must shut down cleanly (exit 0: a drained stop,
# and no leak report under ASan).
if ! kill -0 "$spid" 2>/dev/null; then
    echo "interop: the server died during the run:" >&2
    cat "$log" >&2
    fail=$((fail + 1))
else
    kill -TERM "$spid"
    set +e
    wait "$spid"
    rc=$?
    set -e
    spid=
    if [[ $rc -ne 0 ]]; then
        echo "interop: the server exited $rc after SIGTERM, want 0:" >&2
        cat "$log" >&2
        fail=$((fail + 1))
    fi
fi
echo "C interop client vs C interop server: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
