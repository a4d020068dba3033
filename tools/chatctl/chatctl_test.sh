#!/usr/bin/env bash
# chatctl against the real stack on per-test ports: PostgreSQL, Redis, one Kafka broker,
# svc-chats and two svc-messaging instances (the second with a 2-frame queue, a long ack timeout
# and 1 s pings, to make a session_seq gap). Every command of the README's "Try it" section,
# with its output checked, plus the error paths (status name on stderr, exit codes).
#
# Needs BUILD_DIR and SOURCE_DIR (CTest sets them).
set -euo pipefail

SOURCE_DIR=${SOURCE_DIR:?SOURCE_DIR must be set}
BUILD_DIR=${BUILD_DIR:?BUILD_DIR must be set}
export CHAT_BUILD_DIR=$BUILD_DIR
CTL=$BUILD_DIR/tools/chatctl/chatctl
# shellcheck source=tools/stack-lib.sh
source "$SOURCE_DIR/tools/stack-lib.sh"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
pass() {
    echo "ok - $*"
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/chatctl_test.XXXXXX")
bg_pids=()
cleanup() {
    local rc=$? p log
    if ((rc != 0)); then
        # set -e stops at a failing chatctl too: show what the services said.
        for log in "$dir"/logs/svc-*.log; do
            [[ -f $log ]] || continue
            if grep -q "ERROR: .*Sanitizer" "$log"; then
                echo "--- sanitizer report in $log" >&2
                grep -A 40 "ERROR: .*Sanitizer" "$log" >&2
            else
                echo "--- last lines of $log" >&2
                tail -n 30 "$log" >&2
            fi
        done
    fi
    for p in "${bg_pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    stack_cleanup "$dir"
}
trap cleanup EXIT

start_pg "$dir" "$(free_port)"
start_redis "$dir" "$(free_port)"
KAFKA_PARTITIONS=3 start_kafka "$dir" "$(free_port 2)" 1
JWT_SECRET=$(stack_jwt_secret "$dir")
export JWT_SECRET
chats_port=$(free_port)
start_service "$dir" svc-chats "$chats_port" "$(free_port)"
export CHATS_ADDR=127.0.0.1:$chats_port
m1=$(free_port)
m2=$(free_port)
start_service "$dir" svc-messaging "$m1" "$(free_port)"
start_service "$dir" svc-messaging "$m2" "$(free_port)" --queue-size 2 --ack-timeout-ms 60000 \
    --ping-interval-ms 1000
export MESSAGING_ADDR=127.0.0.1:$m1

# Delivery starts once the consumer has its partitions; a tail opened earlier would miss posts.
for port in "$m1" "$m2"; do
    for _ in $(seq 1 300); do
        grep -q "delivery: assigned" "$dir/logs/svc-messaging-$port.log" 2>/dev/null && break
        sleep 0.2
    done
    grep -q "delivery: assigned" "$dir/logs/svc-messaging-$port.log" ||
        fail "svc-messaging on $port never got its partitions"
done

out=$dir/out
mkdir -p "$out"

# ---- token ------------------------------------------------------------------------------------
tok=$("$CTL" token alice --ttl 2h)
[[ $tok =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || fail "token: not a JWT: $tok"
payload=$(cut -d. -f2 <<<"$tok" | tr '_-' '/+')
while (($(printf %s "$payload" | wc -c) % 4)); do payload+="="; done
printf %s "$payload" | base64 -d | grep -q '"sub":"alice"' || fail "token: sub is not alice"
pass "token mints an HS256 JWT for alice"

# ---- chats ------------------------------------------------------------------------------------
"$CTL" --as alice create-chat --group --title demo bob carol >"$out/create" ||
    fail "create-chat: $(cat "$out/create")"
chat=$(awk '$1 == "created" {print $2}' "$out/create")
[[ $chat =~ ^[0-9]+$ ]] || fail "create-chat printed no chat id: $(cat "$out/create")"
grep -q "3 members: alice bob carol" "$out/create" || fail "create-chat members: $(cat "$out/create")"
pass "create-chat --group -> chat $chat"

rc=0
"$CTL" --as alice create-chat --direct bob --title nope 2>"$out/err" || rc=$?
[[ $rc == 2 ]] || fail "create-chat --direct with a title: exit $rc, want 2"
pass "usage errors exit 2"

"$CTL" --as alice create-chat --direct bob >"$out/direct1"
"$CTL" --as alice create-chat --direct bob >"$out/direct2"
d1=$(awk '{print $2}' "$out/direct1")
grep -q "^existing $d1 " "$out/direct2" || fail "second direct chat: $(cat "$out/direct2")"
pass "create-chat --direct twice returns the existing chat"

"$CTL" --as bob chats >"$out/chats"
grep -q "^$chat  group  \"demo\"" "$out/chats" || fail "chats: $(cat "$out/chats")"
grep -q "^$d1  direct" "$out/chats" || fail "chats misses the direct chat: $(cat "$out/chats")"
pass "chats lists both of bob's chats"

# ---- live sessions ----------------------------------------------------------------------------
"$CTL" --as bob tail --device bob-desk --for 15s >"$out/tail_bob" 2>&1 &
bg_pids+=($!)
bob_pid=$!
# carol on the 2-frame-queue instance, never acking: frames 1 and 2 fill her queue, the rest
# are dropped, and the 1 s pong reveals the dropped tail.
"$CTL" --as carol --messaging "127.0.0.1:$m2" tail --device carol-phone --no-ack --for 15s \
    >"$out/tail_carol" 2>&1 &
bg_pids+=($!)
carol_pid=$!
for f in tail_bob tail_carol; do
    for _ in $(seq 1 100); do
        grep -q "^connected as" "$out/$f" && break
        sleep 0.1
    done
    grep -q "^connected as" "$out/$f" || fail "$f did not connect: $(cat "$out/$f")"
done
pass "tail connects (Hello/Welcome) on both instances"

# ---- send -------------------------------------------------------------------------------------
ids=()
for i in 1 2 3; do
    line=$("$CTL" --as alice send "$chat" "hello $i")
    [[ $line =~ ^OK\ message_id=([0-9]+)\  ]] || fail "send: $line"
    ids+=("${BASH_REMATCH[1]}")
done
pass "send x3: OK with message ids"

first=$("$CTL" --as alice send "$chat" "once" --client-id fixed-id-1)
again=$("$CTL" --as alice send "$chat" "once" --client-id fixed-id-1)
[[ $first =~ ^OK\ message_id=([0-9]+) ]] || fail "send: $first"
once_id=${BASH_REMATCH[1]}
[[ $again =~ ^DUPLICATE\ message_id=$once_id\  ]] || fail "resend: $again (first: $first)"
ids+=("$once_id")
pass "send with the same --client-id: DUPLICATE, same message_id"

rc=0
"$CTL" --as mallory send "$chat" "let me in" 2>"$out/err" || rc=$?
[[ $rc == 1 ]] && grep -q "Send: PERMISSION_DENIED" "$out/err" ||
    fail "non-member send: exit $rc, $(cat "$out/err")"
rc=0
"$CTL" --token not.a.jwt send "$chat" "x" 2>"$out/err" || rc=$?
[[ $rc == 1 ]] && grep -q "Send: UNAUTHENTICATED" "$out/err" ||
    fail "bad token: exit $rc, $(cat "$out/err")"
rc=0
"$CTL" --as alice --chats 127.0.0.1:1 chats 2>"$out/err" || rc=$?
[[ $rc == 1 ]] && grep -q "ListChats: UNAVAILABLE" "$out/err" ||
    fail "unreachable svc-chats: exit $rc, $(cat "$out/err")"
pass "errors print the status name and exit 1 (PERMISSION_DENIED, UNAUTHENTICATED, UNAVAILABLE)"

# Twenty lines on alice's own stream.
seq 1 20 | sed 's/^/line /' | "$CTL" --as alice tail --device alice-laptop --send "$chat" \
    --for 5s >"$out/tail_alice" 2>&1
n_ok=$(grep -c "^sent     OK message_id=" "$out/tail_alice" || true)
[[ $n_ok == 20 ]] || fail "tail --send: $n_ok of 20 OK: $(cat "$out/tail_alice")"
grep -q "^#[0-9]* *posted .*alice: line 20$" "$out/tail_alice" ||
    fail "alice's own stream did not deliver her line 20"
pass "tail --send: 20 lines sent on the stream, each OK, delivered back"

wait "$bob_pid" || fail "bob's tail exited non-zero: $(cat "$out/tail_bob")"
wait "$carol_pid" || fail "carol's tail exited non-zero: $(cat "$out/tail_carol")"
bg_pids=()
n_bob=$(grep -c "^#[0-9]* *posted " "$out/tail_bob" || true)
[[ $n_bob == 24 ]] || fail "bob saw $n_bob posts, want 24: $(cat "$out/tail_bob")"
seqs=$(awk '/^#[0-9]+ +posted/ {sub("#", "", $1); printf "%s ", $1}' "$out/tail_bob")
[[ $seqs == "$(seq -s ' ' 1 24) " ]] || fail "bob's session_seqs: $seqs"
! grep -q "^GAP" "$out/tail_bob" || fail "bob saw a gap: $(cat "$out/tail_bob")"
! grep -q "resend of" "$out/tail_bob" || fail "bob got resends although he acks"
pass "bob's tail: 24 posts, session_seq 1..24, no gap, no resend (acks arrive)"

grep -q "^#1 .*alice: hello 1$" "$out/tail_carol" || fail "carol: $(cat "$out/tail_carol")"
grep -q "^#2 .*alice: hello 2$" "$out/tail_carol" || fail "carol: $(cat "$out/tail_carol")"
# One GAP line or several (a pong may come while the posts are still arriving), 22 dropped in all.
grep -Eq "^GAP: session_seq 3( |\.\.)" "$out/tail_carol" && grep -q "with 22 dropped" "$out/tail_carol" ||
    fail "carol's gap not reported: $(cat "$out/tail_carol")"
! grep -q "^#3 " "$out/tail_carol" || fail "carol got frame 3 with a full queue"
pass "carol's tail (2-frame queue, no acks): frames 1-2, then GAP 3..24 reported"

# ---- history, pull ----------------------------------------------------------------------------
"$CTL" --as carol history "$chat" --limit 100 >"$out/history"
[[ $(wc -l <"$out/history") == 24 ]] || fail "history: $(cat "$out/history")"
sort -n -c "$out/history" || fail "history not ascending"
[[ $(head -1 "$out/history" | cut -d' ' -f1) == "${ids[0]}" ]] || fail "history starts wrong"
"$CTL" --as carol history "$chat" --limit 5 >"$out/h5" 2>"$out/h5err"
[[ $(wc -l <"$out/h5") == 5 ]] && tail -1 "$out/history" | cmp -s - <(tail -1 "$out/h5") ||
    fail "history --limit 5 is not the newest 5"
grep -q "older messages exist" "$out/h5err" || fail "history --limit 5 gives no hint"
before=$(head -1 "$out/h5" | cut -d' ' -f1)
"$CTL" --as carol history "$chat" --before "$before" --limit 300 >"$out/hb"
[[ $(wc -l <"$out/hb") == 19 ]] || fail "history --before: $(wc -l <"$out/hb") lines, want 19"
pass "history: 24 ascending, --limit newest page, --before pages back"

"$CTL" --as carol pull --device carol-phone --page-size 7 >"$out/pull1" 2>"$out/pull1err"
[[ $(wc -l <"$out/pull1") == 24 ]] || fail "pull: $(cat "$out/pull1" "$out/pull1err")"
grep -q "position acknowledged" "$out/pull1err" || fail "pull: $(cat "$out/pull1err")"
"$CTL" --as carol pull --device carol-phone >"$out/pull2" 2>/dev/null
[[ ! -s "$out/pull2" ]] || fail "second pull repeats: $(cat "$out/pull2")"
pass "pull: 24 messages over pages of 7, then nothing new"

# ---- edits, deletes, verify -------------------------------------------------------------------
"$CTL" --as alice edit "$chat" "${ids[1]}" "hello 2, edited" | grep -q "(edited, v2)" ||
    fail "edit"
"$CTL" --as alice delete "$chat" "${ids[2]}" | grep -q "(deleted, v2)" || fail "delete"
rc=0
"$CTL" --as bob delete "$chat" "${ids[0]}" 2>"$out/err" || rc=$?
[[ $rc == 1 ]] && grep -q "DeleteMessage: PERMISSION_DENIED" "$out/err" ||
    fail "bob deleting alice's message: exit $rc"
pass "edit and delete by the sender; others get PERMISSION_DENIED"

"$CTL" --as bob verify "$chat" 0 max >"$out/v1" || fail "verify: $(cat "$out/v1")"
grep -q "^MATCH$" "$out/v1" && grep -q "local    count 24 " "$out/v1" || fail "verify: $(cat "$out/v1")"
"$CTL" --as bob verify "$chat" "${ids[0]}" "$((${ids[3]} + 1))" --buckets 4 >"$out/v2" ||
    fail "verify buckets: $(cat "$out/v2")"
grep -q "0 of 4 buckets differ" "$out/v2" && grep -q "local    count 4 " "$out/v2" ||
    fail "verify buckets: $(cat "$out/v2")"
pass "verify: local hash (with an edit and a tombstone) equals the server's, whole and bucketed"

rc=0
"$CTL" --as bob verify "$chat" "${ids[0]}" "$((${ids[3]} + 1))" --buckets 4 --skip "${ids[2]}" \
    >"$out/v3" 2>/dev/null || rc=$?
[[ $rc == 3 ]] || fail "verify --skip: exit $rc, want 3: $(cat "$out/v3")"
grep -q "^MISMATCH$" "$out/v3" && grep -q "1 of 4 buckets differ" "$out/v3" ||
    fail "verify --skip: $(cat "$out/v3")"
pass "verify --skip: MISMATCH, exit 3, exactly one bucket differs"

# ---- members ----------------------------------------------------------------------------------
"$CTL" --as alice add-members "$chat" dave | grep -q "added 1 to chat $chat: dave  (4 members now)" ||
    fail "add-members"
"$CTL" --as alice remove-members "$chat" dave |
    grep -q "removed 1 from chat $chat: dave  (3 members now)" || fail "remove-members"
pass "add-members / remove-members"

# More lines than max_inflight_sends (64), from a regular file (not pollable): all go, none is
# REJECTED for exceeding the in-flight limit.
seq 1 100 | sed 's/^/file line /' >"$out/lines.txt"
"$CTL" --as alice tail --device alice-laptop --send "$chat" --for 6s <"$out/lines.txt" \
    >"$out/tail_file" 2>&1
n_ok=$(grep -c "^sent     OK message_id=" "$out/tail_file" || true)
[[ $n_ok == 100 ]] || fail "tail --send from a file: $n_ok of 100 OK: $(tail -5 "$out/tail_file")"
pass "tail --send < file: 100 lines, paced under the in-flight limit, all OK"

echo "all chatctl checks passed"
