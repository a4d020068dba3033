#!/usr/bin/env bash
# grpc-go's official interop client against our C interop server
# (tests/interop/interop_server.c), every case, on a free loopback port.
#
#   tests/interop/run_go_client_vs_c_server.sh [path/to/interop_server]
#
# The client binary is grpc-interop-client from tools/install-tools.sh, looked
# up in $CHAT_TOOLS_BIN, $CHAT_TOOLS_DIR/bin and ~/.cache/chat-backend/tools/bin;
# when missing it is installed with `go install` at the pinned version.
set -euo pipefail

GRPC_GO_VERSION=${GRPC_GO_VERSION:-v1.85.0} # keep in step with tools/install-tools.sh

CASES=(empty_unary large_unary client_streaming server_streaming ping_pong empty_stream
    custom_metadata status_code_and_message special_status_message unimplemented_method
    unimplemented_service cancel_after_begin cancel_after_first_response
    timeout_on_sleeping_server client_compressed_unary server_compressed_unary
    client_compressed_streaming server_compressed_streaming)

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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
"$server" --host 127.0.0.1 --port "$port" --workers 2 >"$log" 2>&1 &
spid=$!
cleanup() {
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.05
done

pass=0
fail=0
for c in "${CASES[@]}"; do
    if out=$(timeout 60 "$client_bin" --server_host=127.0.0.1 --server_port="$port" \
        --use_tls=false --test_case="$c" 2>&1); then
        printf '  PASS  %s\n' "$c"
        pass=$((pass + 1))
    else
        printf '  FAIL  %s\n%s\n' "$c" "$out" | sed 's/^/        /'
        fail=$((fail + 1))
    fi
done
if ! kill -0 "$spid" 2>/dev/null; then
    echo "interop: the server died during the run:" >&2
    cat "$log" >&2
    fail=$((fail + 1))
fi
echo "grpc-go interop client $GRPC_GO_VERSION vs our server: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
