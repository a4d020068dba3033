#!/usr/bin/env bash
# Real gRPC clients no one here wrote against our C interop server
# (tests/interop/interop_server.c), on a free loopback port:
#
#   - grpc-go's official interop client (google.golang.org/grpc/interop/client)
#     for every case it implements;
#   - tests/interop/compression, a small grpc-go program of ours, for the four
#     compression cases grpc-go's client answers with "Unsupported test case".
#     It follows grpc's interop-test-descriptions with grpc-go's generated
#     grpc.testing client and gzip compressor, and checks per message, through
#     a stats.Handler, that what was asked compressed went over the wire
#     compressed and what was not did not.
#
#   tests/interop/run_go_client_vs_c_server.sh [path/to/interop_server]
#
# The client binary is grpc-interop-client from tools/install-tools.sh, looked
# up in $CHAT_TOOLS_BIN, $CHAT_TOOLS_DIR/bin and ~/.cache/chat-backend/tools/bin;
# when missing it is installed with `go install` at the pinned version. The
# compression program is built with `go build` (pinned by its go.mod/go.sum)
# into $CHAT_CACHE/interop (default ~/.cache/chat-backend/interop).
set -euo pipefail

# Keep in step with tools/install-tools.sh and tests/interop/compression/go.mod.
GRPC_GO_VERSION=${GRPC_GO_VERSION:-v1.85.0}

# Cases run by grpc-go's interop client.
CASES=(empty_unary large_unary client_streaming server_streaming ping_pong empty_stream
    custom_metadata status_code_and_message special_status_message unimplemented_method
    unimplemented_service cancel_after_begin cancel_after_first_response
    timeout_on_sleeping_server)
# Cases run by tests/interop/compression.
COMPRESSION_CASES=(client_compressed_unary server_compressed_unary client_compressed_streaming
    server_compressed_streaming)

export GOTOOLCHAIN=local # only the module proxy is reachable: never fetch a toolchain

here=$(cd "$(dirname "$0")" && pwd)
server=${1:-${BUILD_DIR:-$here/../../build}/tests/interop/interop_server}
[[ -x "$server" ]] || {
    echo "interop: server binary not found: $server" >&2
    exit 1
}

find_client() {
    local d
    for d in "${CHAT_TOOLS_BIN:-}" "${CHAT_TOOLS_DIR:+$CHAT_TOOLS_DIR/bin}" \
        "$HOME/.cache/chat-backend/tools/bin"; do
        [[ -n "$d" && -x "$d/grpc-interop-client" ]] && {
            echo "$d/grpc-interop-client"
            return 0
        }
    done
    return 1
}

client_bin=$(find_client) || {
    dest=${CHAT_TOOLS_BIN:-$HOME/.cache/chat-backend/tools/bin}
    mkdir -p "$dest"
    tmp=$(mktemp -d)
    GOBIN=$tmp go install "google.golang.org/grpc/interop/client@$GRPC_GO_VERSION"
    mv "$tmp/client" "$dest/grpc-interop-client"
    rmdir "$tmp"
    client_bin=$dest/grpc-interop-client
}

cache=${CHAT_CACHE:-$HOME/.cache/chat-backend}/interop
mkdir -p "$cache"
compression_bin=$cache/interop-compression
(cd "$here/compression" && GOFLAGS="-mod=mod -buildvcs=false" go build -o "$compression_bin" .) || {
    echo "interop: cannot build tests/interop/compression" >&2
    exit 1
}
grep -q "google.golang.org/grpc.$GRPC_GO_VERSION\b" <(go version -m "$compression_bin") || {
    echo "interop: $compression_bin is not built with grpc-go $GRPC_GO_VERSION:" >&2
    go version -m "$compression_bin" | grep google.golang.org/grpc >&2
    exit 1
}

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
run_case() { # NAME COMMAND...
    local c=$1 out
    shift
    if out=$(timeout 60 "$@" --server_host=127.0.0.1 --server_port="$port" --use_tls=false \
        --test_case="$c" 2>&1); then
        printf '  PASS  %-30s (%s)\n' "$c" "$(basename "$1")"
        pass=$((pass + 1))
    else
        printf '  FAIL  %-30s (%s)\n' "$c" "$(basename "$1")"
        printf '%s\n' "$out" | sed 's/^/        /'
        fail=$((fail + 1))
    fi
}
for c in "${CASES[@]}"; do
    run_case "$c" "$client_bin"
done
for c in "${COMPRESSION_CASES[@]}"; do
    run_case "$c" "$compression_bin"
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
echo "grpc-go $GRPC_GO_VERSION interop client + tests/interop/compression vs our server:" \
    "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
