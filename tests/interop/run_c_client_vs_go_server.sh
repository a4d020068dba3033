#!/usr/bin/env bash
# Our C interop client (tests/interop/interop_client.c) against grpc-go's
# official interop server, every case, on a free loopback port.
#
#   tests/interop/run_c_client_vs_go_server.sh [path/to/interop_client]
#
# The server binary is looked up as grpc-interop-server (tools/install-tools.sh)
# or server (a plain `go install`) in: $CHAT_TOOLS_BIN, $CHAT_TOOLS_DIR/bin,
# ~/.cache/chat-backend/tools/bin, ~/.cache/chat-tools/bin. When none is there it
# is installed with `go install google.golang.org/grpc/interop/server@$GRPC_GO_VERSION`
# into ~/.cache/chat-backend/tools/bin (the layout install-tools.sh uses).
#
# grpc-go's interop server implements neither the CompressedRequest nor the
# CompressedResponse feature (it ignores expect_compressed / response_compressed
# and registers no gzip codec; grpc's own run_interop_tests.py skips the
# compression cases for Go servers). The client detects that and reports those
# four cases as SKIP (exit 77) rather than PASS; any other outcome of them, and
# any non-pass of the other cases, fails this test.
set -euo pipefail

GRPC_GO_VERSION=${GRPC_GO_VERSION:-v1.85.0} # keep in step with tools/install-tools.sh

CASES=(empty_unary large_unary client_streaming server_streaming ping_pong empty_stream
    custom_metadata status_code_and_message special_status_message unimplemented_method
    unimplemented_service cancel_after_begin cancel_after_first_response
    timeout_on_sleeping_server client_compressed_unary server_compressed_unary
    client_compressed_streaming server_compressed_streaming)
# Cases the Go server cannot pass because it lacks the feature (see above).
GO_SERVER_LACKS="client_compressed_unary server_compressed_unary client_compressed_streaming server_compressed_streaming"

here=$(cd "$(dirname "$0")" && pwd)
client=${1:-${BUILD_DIR:-$here/../../build}/tests/interop/interop_client}
[[ -x "$client" ]] || {
    echo "interop: client binary not found: $client" >&2
    exit 1
}

find_server() {
    local d n
    for d in "${CHAT_TOOLS_BIN:-}" "${CHAT_TOOLS_DIR:+$CHAT_TOOLS_DIR/bin}" \
        "$HOME/.cache/chat-backend/tools/bin" "$HOME/.cache/chat-tools/bin"; do
        [[ -n "$d" ]] || continue
        for n in grpc-interop-server server; do
            if [[ -x "$d/$n" ]]; then
                echo "$d/$n"
                return 0
            fi
        done
    done
    return 1
}

server_bin=$(find_server) || {
    command -v go >/dev/null 2>&1 || {
        echo "interop: grpc-go interop server missing and go not found" >&2
        exit 1
    }
    dest=${CHAT_TOOLS_BIN:-$HOME/.cache/chat-backend/tools/bin}
    mkdir -p "$dest"
    tmp=$(mktemp -d)
    echo "interop: go install google.golang.org/grpc/interop/server@$GRPC_GO_VERSION" >&2
    GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false" GOBIN="$tmp" \
        go install "google.golang.org/grpc/interop/server@$GRPC_GO_VERSION"
    mv -f "$tmp/server" "$dest/grpc-interop-server"
    rmdir "$tmp"
    server_bin=$dest/grpc-interop-server
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

workdir=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

# The port may be taken between picking and binding: retry a few times.
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    "$server_bin" --port="$port" >"$workdir/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            break 2
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    echo "interop: server did not start on port $port (attempt $attempt)" >&2
done
[[ -n "$server_pid" ]] || {
    cat "$workdir/server.log" >&2
    exit 1
}
echo "interop: grpc-go interop server $GRPC_GO_VERSION" \
    "($server_bin) on 127.0.0.1:$port"

failed=0
declare -A result
for c in "${CASES[@]}"; do
    set +e
    timeout 120 "$client" --server_host=127.0.0.1 --server_port="$port" --test_case="$c" \
        --skip_if_server_lacks_feature=true >"$workdir/$c.log" 2>&1
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        result[$c]=PASS
    elif [[ $rc -eq 77 && " $GO_SERVER_LACKS " == *" $c "* ]]; then
        result[$c]="SKIP (server lacks the feature)"
    else
        result[$c]="FAIL (exit $rc)"
        failed=$((failed + 1))
        sed 's/^/    /' "$workdir/$c.log" >&2
    fi
done

printf '\n%-30s %s\n' "case" "C client vs grpc-go $GRPC_GO_VERSION server"
printf '%-30s %s\n' "----" "------"
for c in "${CASES[@]}"; do
    printf '%-30s %s\n' "$c" "${result[$c]}"
done
if [[ $failed -gt 0 ]]; then
    echo "interop: $failed case(s) failed; server log:" >&2
    tail -n 50 "$workdir/server.log" >&2
    exit 1
fi
echo "interop: all cases passed (compression cases skipped where the server lacks the feature)"
