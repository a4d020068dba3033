#!/usr/bin/env bash
# SIGTERM sent the moment the port accepts must still drain and exit 0 (regression: the
# signal handlers used to be installed only after the workers were already serving).
set -euo pipefail
server=${BUILD_DIR:-build}/tests/interop/interop_server
[[ -x $server ]] || { echo "missing $server" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
trap 'rm -f "$log"' EXIT
runs=30 bad=0
for _ in $(seq 1 $runs); do
    "$server" --host 127.0.0.1 --port "$port" --workers 2 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.005
    done
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    if [[ $rc -ne 0 ]] || ! grep -q "stopped cleanly" "$log"; then
        bad=$((bad + 1))
        echo "run ended with exit $rc:" >&2
        cat "$log" >&2
    fi
done
echo "sigterm race: $((runs - bad)) passed, $bad failed"
[[ $bad -eq 0 ]]
