#!/usr/bin/env bash
# A second server on a port another process is serving must refuse to start ("Address
# already in use", exit != 0) instead of joining the port through SO_REUSEPORT and taking
# part of its connections; the first one keeps serving every connection.
set -euo pipefail
server=${BUILD_DIR:-build}/tests/interop/interop_server
[[ -x $server ]] || { echo "missing $server" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log1=$(mktemp) log2=$(mktemp)
pid1=
trap '[[ -n $pid1 ]] && kill -TERM "$pid1" 2>/dev/null; wait 2>/dev/null; rm -f "$log1" "$log2"' EXIT
"$server" --host 127.0.0.1 --port "$port" --workers 2 >"$log1" 2>&1 &
pid1=$!
for _ in $(seq 1 200); do
    grep -q "serving gRPC on 127.0.0.1:$port" "$log1" && break
    sleep 0.05
done
grep -q "serving gRPC on 127.0.0.1:$port" "$log1" || { cat "$log1" >&2; exit 1; }

rc=0
timeout 10 "$server" --host 127.0.0.1 --port "$port" --workers 2 >"$log2" 2>&1 || rc=$?
cat "$log2"
if [[ $rc -eq 0 || $rc -eq 124 ]]; then
    echo "FAIL: the second server started on a port in use (exit $rc)" >&2
    exit 1
fi
grep -q "Address already in use" "$log2" || { echo "FAIL: no clear error" >&2; exit 1; }

# Every new connection still reaches the first server (its
# HTTP/2 SETTINGS answer on 50 fresh connections).
python3 - "$port" <<'PY'
import socket, sys
port = int(sys.argv[1])
# HTTP/2 preface + empty SETTINGS: the server must answer with its SETTINGS frame
ok = 0
for _ in range(50):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    hdr = s.recv(9)
    ok += len(hdr) == 9 and hdr[3] == 4
    s.close()
print("connections answered by the first server: %d/50" % ok)
sys.exit(0 if ok == 50 else 1)
PY
kill -0 "$pid1" || { echo "FAIL: the first server died" >&2; exit 1; }
echo "port in use: refused, first server intact"
