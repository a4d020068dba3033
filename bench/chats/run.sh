#!/usr/bin/env bash
# bench/chats/run.sh: svc-chats numbers on the local machine (not pass/fail).
#
#   1. materializer throughput: EVENTS message_posted records (CHATS chats) are produced to
#      chat.events with kcat before svc-chats starts; the time from its first stored row to
#      the last gives events/s (one PostgreSQL transaction per batch, fsync on).
#   2. a 5M-message table loaded with generate_series straight in PostgreSQL (50 chats x 100,000
#      messages, h computed in SQL with sha256; Snowflake-shaped ids: bursts of 10 messages, two
#      per millisecond (seq 0/1), 1-800 ms apart, one burst every ~4.3 min over 30 days, so the
#      range-hash block aggregates see realistic ids), then with ghz:
#        GetHistory 50 messages, newest page (Redis cache) and a middle page (PostgreSQL);
#        GetRangeHash over one chat's 100,000 messages, without and with 16 and 256 buckets.
#
#   BUILD_DIR=build bench/chats/run.sh [materializer|reads|all]   (EVENTS=100000 CHATS=100
#                                                                   N=20000 C=8)
#   SPREAD_S=0: the materializer's message ids are consecutive within one millisecond (as
#   before); SPREAD_S=86400 spreads their timestamps evenly over that many seconds back from now,
#   so each message of a chat lands in other range-hash blocks (harder on the triggers).
#   N_RANGE=1000, RPS_RANGE: calls and rate of the GetRangeHash runs.  RPS=500: ghz offers that many calls/s (open loop) instead of keeping C in flight.
#   QUIET_LOAD=1.5: before each measurement wait (up to QUIET_WAIT s) until the 1-minute load
#   average is below it; every measurement prints the load average it started under.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
export CHAT_BUILD_DIR=${BUILD_DIR:-$SRC/build}
EVENTS=${EVENTS:-100000}
CHATS=${CHATS:-100}
N=${N:-20000}
C=${C:-8}
WHAT=${1:-all}
SPREAD_S=${SPREAD_S:-0}
source "$SRC/tools/stack-lib.sh"
# shellcheck source=../common.sh
source "$HERE/../common.sh"
PY=${CHAT_TOOLS_DIR:-$HOME/.cache/chat-backend/tools}/venv/bin/python3
GHZ=$(command -v ghz || echo "${CHAT_TOOLS_DIR:-$HOME/.cache/chat-backend/tools}/bin/ghz")
dir=$(mktemp -d /tmp/chats-bench.XXXXXX)
trap 'stack_cleanup "$dir"' EXIT
start_pg "$dir" "$(free_port)" >&2
start_redis "$dir" "$(free_port)" >&2
KAFKA_PARTITIONS=12 start_kafka "$dir" "$(free_port 2)" 1 >&2
psql=(psql -X -q -tA -h 127.0.0.1 -p "$PG_PORT" -U chat -d chat)


if [[ $WHAT == materializer || $WHAT == all ]]; then
echo "== generating $EVENTS events over $CHATS chats" >&2
gen=$dir/gen
mkdir -p "$gen/stubs"
"$PY" - "$SRC" "$gen" "$EVENTS" "$CHATS" "$SPREAD_S" <<'PYEOF'
import os, sys, time
src, out, n, chats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spread_ms = int(sys.argv[5]) * 1000
from grpc_tools import protoc
import grpc_tools
inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
for f in ("chat/v1/chats.proto", "chat/v1/events.proto"):
    protoc.main(["protoc", "-I" + src + "/proto", "-I" + inc, "--python_out=" + out + "/stubs", f])
sys.path.insert(0, out + "/stubs")
from chat.v1 import chats_pb2 as pb, events_pb2 as ev
now = int(time.time() * 1000)
base = (now - 1704067200000) << 22
for c in range(chats):
    d = os.path.join(out, "c%d" % c)
    os.makedirs(d)
for i in range(n):
    c = i % chats
    chat_id = base + (1 << 21) + c
    mid = base + (1 << 20) + i
    if spread_ms:  # Snowflake: ms << 22 | instance 512 << 12 | seq
        ms = now - 1704067200000 - spread_ms + i * spread_ms // n
        mid = ms << 22 | 512 << 12 | (i % 4096)
    m = pb.Message(message_id=mid, chat_id=chat_id, sender_id="bench", client_message_id="c%d" % i,
                   body="benchmark message body number %d" % i, created_at_ms=now,
                   updated_at_ms=now, version=1)
    e = ev.ChatEvent(event_id=mid, chat_id=chat_id, produced_at_ms=now, message_posted=m)
    with open(os.path.join(out, "c%d" % c, "%09d" % i), "wb") as f:
        f.write(e.SerializeToString())
PYEOF
for d in "$gen"/c*; do
    key=$("$PY" -c "import sys; sys.path.insert(0,'$gen/stubs'); from chat.v1 import events_pb2 as e; m=e.ChatEvent(); m.ParseFromString(open(sys.argv[1],'rb').read()); print(m.chat_id)" "$(ls "$d" | head -n1 | sed "s|^|$d/|")")
    ls "$d" | sed "s|^|$d/|" | xargs -n 2000 kcat -P -b "$KAFKA_BROKERS" -t chat.events -k "$key" \
        -X topic.partitioner=murmur2_random -X enable.idempotence=true
done
echo "== materializer: $EVENTS records waiting in chat.events" >&2
port=$(free_port)
mport=$(free_port)
wait_quiet
start_service "$dir" svc-chats "$port" "$mport" --workers 2 >&2
t0=""
while :; do
    n=$("${psql[@]}" -c "SELECT count(*) FROM messages")
    now=$(date +%s.%N)
    if [[ -z $t0 && $n -gt 0 ]]; then t0=$now; n0=$n; fi
    [[ $n -ge $EVENTS ]] && break
    sleep 0.05
done
t1=$now
rate=$(awk -v n="$((EVENTS - n0))" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
echo "materializer: $EVENTS events in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s = $rate events/s"
curl -s "http://127.0.0.1:$mport/metrics" | grep -E '^chats_materializer_(batch_events|apply_seconds)_(sum|count)' || true
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
[[ $WHAT == reads || $WHAT == all ]] || exit 0
if [[ -z ${port:-} ]]; then
    port=$(free_port)
    mport=$(free_port)
    start_service "$dir" svc-chats "$port" "$mport" --workers 2 >&2
fi

echo "== loading 5,000,000 messages (50 chats x 100,000) with generate_series" >&2
BIG=9000000000000000000
# Snowflake-shaped ids (ms since 2024-01-01 << 22 | instance << 12 | seq) from 2026-10-01 on:
# chat c, burst b (0..9999) starts at b x 259.2 s + a pseudo-random 0..200 s; its 10 messages
# come in pairs sharing a millisecond (seq 0, 1), pairs 1..800 ms apart (pseudo-random per
# burst); the instance is pseudo-random per burst. Bursts of a chat never overlap, so ids are
# unique per chat; 30 days in all. hashint8extended() is the deterministic randomness.
echo "load average at the start of the load: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s.%N)
"${psql[@]}" <<SQL >&2
INSERT INTO chats (chat_id, kind, title, creator_id, created_at_ms, member_count)
  SELECT $BIG + c, 2, 'bench', 'bench', 0, 1 FROM generate_series(1, 50) c;
INSERT INTO chat_members SELECT $BIG + c, 'bench', true, 0, 0 FROM generate_series(1, 50) c;
INSERT INTO messages (chat_id, message_id, sender_id, client_message_id, body, created_at_ms,
                      updated_at_ms, version, deleted, h)
  SELECT $BIG + c, id, 'bench', 'c' || id, 'benchmark message body ' || id, 0, 0, 1, false,
         ('x' || substr(encode(sha256(int8send(id) || int4send(1) || '\x00'::bytea), 'hex'), 1, 16))::bit(64)::bigint
  FROM generate_series(1, 50) c, generate_series(0::bigint, 9999) b,
       LATERAL (SELECT hashint8extended(c * 100000 + b, 1) AS r) r,
       generate_series(0::bigint, 9) j,
       LATERAL (SELECT ((86745600000 + b * 259200 + abs(r.r % 200000)
                         + (j / 2) * (1 + abs((r.r >> 20) % 800))) << 22)
                       | (abs((r.r >> 40) % 1024) << 12) | (j % 2) AS id) i;
SQL
echo "load: 5,000,000 rows in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (one INSERT, range-hash triggers included when the schema has them)"
"${psql[@]}" -c "VACUUM ANALYZE" >&2
echo "messages in table: $("${psql[@]}" -c "SELECT count(*) FROM messages")"
if [[ $("${psql[@]}" -c "SELECT to_regclass('message_hash_blocks') IS NOT NULL") == t ]]; then
    echo "message_hash_blocks rows per level (bits: rows): $("${psql[@]}" -c "SELECT string_agg(bits || ': ' || c, ', ' ORDER BY bits) FROM (SELECT bits, count(*) c FROM message_hash_blocks GROUP BY bits) x")"
fi
# The member sets svc-chats' cache read checks are written by the materializer after a
# membership change commits; these rows bypassed it, so write the sets here (without them
# every "cached" read is a miss that goes to PostgreSQL and refills the cache).
for c in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" SADD "chat:$((BIG + c)):members" bench >/dev/null
done
chat=$((BIG + 7))
tok=$("$PY" -c "
import base64,hashlib,hmac,json,time,sys
b=lambda d: base64.urlsafe_b64encode(d).rstrip(b'=').decode()
h=b(json.dumps({'alg':'HS256','typ':'JWT'}).encode()); n=int(time.time())
p=b(json.dumps({'sub':'bench','iat':n,'exp':n+3600}).encode())
print(h+'.'+p+'.'+b(hmac.new(sys.argv[1].encode(),(h+'.'+p).encode(),hashlib.sha256).digest()))" "$JWT_SECRET")
ghz_run() { # NAME METHOD JSON
    echo "== $1" >&2
    wait_quiet
    # RPS set: open loop at that rate (latency below saturation); else closed loop, C in flight
    "$GHZ" --insecure --proto "$SRC/proto/chat/v1/chats.proto" --import-paths "$SRC/proto" \
        --call "chat.v1.ChatsService/$2" -d "$3" -m "{\"authorization\":\"Bearer $tok\"}" \
        -n "$N" -c "$C" ${RPS:+--rps "$RPS"} --connections 2 -O json "127.0.0.1:$port" \
        >"$dir/ghz.json"
    "$PY" - "$1${RPS:+ @ $RPS/s}" "$dir/ghz.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[2]))
lat = {d["percentage"]: d["latency"] / 1e6 for d in r["latencyDistribution"]}
codes = r.get("statusCodeDistribution", {})
print("%-44s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  %s" % (sys.argv[1], r["rps"], lat[50], lat[99], codes))
PYEOF
}
# h2load_run NAME CHAT_ID PAGE_SIZE [ANCHOR]: GetHistory from nghttp2's h2load, open loop at RPS (default
# 200) on one connection, N calls; a far lighter client than ghz, whose own overhead on these
# 2 cores (p50 ~0.2 / p99 ~1.2 ms for a Health/Check at 200/s) is most of a cached page's
# latency. The request's protobuf bytes are built below (no codegen needed). h2load cannot
# read grpc-status (trailers), so the data bytes per call are checked instead: a page of 50
# messages is several KB, an error answer has no DATA at all.
h2load_run() { # NAME FIELDS: chat_id page_size [anchor]
    echo "== $1 (h2load)" >&2
    wait_quiet
    "$PY" - "$dir/h2body" "${@:2}" <<'PYEOF'
import struct, sys
def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
chat, page = int(sys.argv[2]), int(sys.argv[3])
msg = b"\x08" + varint(chat) + b"\x20" + varint(page)  # chat_id = 1, page_size = 4
if len(sys.argv) > 4:
    msg += b"\x10" + varint(int(sys.argv[4]))  # anchor_message_id = 2
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PYEOF
    rm -f "$dir/h2load.log" # h2load appends to it
    h2load -n "$N" -c 1 --rps "${RPS:-200}" --log-file="$dir/h2load.log" -d "$dir/h2body" \
        -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $tok" \
        "http://127.0.0.1:$port/chat.v1.ChatsService/GetHistory" >"$dir/h2load.out" 2>&1
    grep -E "^requests:" "$dir/h2load.out" >&2
    local data
    data=$(sed -n 's/^traffic: .*, [0-9.]*[KMG]*B (\([0-9]*\)) data$/\1/p' "$dir/h2load.out" | tail -1)
    if [[ -z $data ]] || ((data / N < 1000)); then
        echo "h2load: ${data:-?} data bytes for $N calls: not pages of messages (errors?)" >&2
        cat "$dir/h2load.out" >&2
        return 1
    fi
    "$PY" - "$1 @ ${RPS:-200}/s (h2load)" "$dir/h2load.log" <<'PYEOF'
import sys
v = sorted(int(l.split()[2]) for l in open(sys.argv[2]) if l.strip())
st = [l.split()[1] for l in open(sys.argv[2]) if l.strip()]
n = len(v)
print("%-44s %6d calls  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  http %s" % (
    sys.argv[1], n, v[n // 2] / 1e3, v[int(n * 0.9)] / 1e3, v[int(n * 0.99)] / 1e3, v[-1] / 1e3,
    sorted(set(st))))
PYEOF
}
# the chat's first id, its 50,001st (a middle page) and one past its last: [lo, hi) holds all
# 100,000 messages, and both ends fall inside blocks of every level
read -r lo mid hi < <("${psql[@]}" -F' ' -c "SELECT min(message_id), (SELECT message_id FROM messages WHERE chat_id = $chat ORDER BY message_id OFFSET 50000 LIMIT 1), max(message_id) + 1 FROM messages WHERE chat_id = $chat")
echo "GetRangeHash range [$lo, $hi): $("${psql[@]}" -c "SELECT count(*) FROM messages WHERE chat_id = $chat AND message_id >= $lo AND message_id < $hi") messages"
ghz_run "GetHistory 50, newest page (cache)" GetHistory "{\"chat_id\":\"$chat\",\"page_size\":50}"
ghz_run "GetHistory 50, middle page (PostgreSQL)" GetHistory \
    "{\"chat_id\":\"$chat\",\"page_size\":50,\"anchor_message_id\":\"$mid\"}"
h2load_run "GetHistory 50, newest page (cache)" "$chat" 50
h2load_run "GetHistory 50, middle page (PostgreSQL)" "$chat" 50 "$mid"
# fewer calls for range hashes (reading 100,000 index entries took ~10-30 ms of a core)
N=${N_RANGE:-1000}
RPS=${RPS_RANGE:-${RPS:-}}
ghz_run "GetRangeHash 100,000 messages" GetRangeHash \
    "{\"chat_id\":\"$chat\",\"from_message_id\":\"$lo\",\"to_message_id\":\"$hi\"}"
ghz_run "GetRangeHash 100,000 messages, 16 buckets" GetRangeHash \
    "{\"chat_id\":\"$chat\",\"from_message_id\":\"$lo\",\"to_message_id\":\"$hi\",\"bucket_count\":16}"
ghz_run "GetRangeHash 100,000 messages, 256 buckets" GetRangeHash \
    "{\"chat_id\":\"$chat\",\"from_message_id\":\"$lo\",\"to_message_id\":\"$hi\",\"bucket_count\":256}"
curl -s "http://127.0.0.1:$mport/metrics" | grep -E '^chats_history_cache_total' || true
