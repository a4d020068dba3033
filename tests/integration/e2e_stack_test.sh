#!/usr/bin/env bash
# The README's dev stack, end to end: `tools/stack.sh up` with its state in a temp dir and every
# port moved off the defaults (so it does not clash with a developer's stack or other tests)
# brings up PostgreSQL, Redis, Kafka and all four services SERVING; `status` agrees; svc-messaging
# was given CHATS_ADDR; a chat made on svc-chats and a message sent through svc-messaging (chatctl,
# with the environment of `tools/stack.sh env`) land in svc-chats' history exactly once; then
# `tools/stack.sh down` stops every process it started.
#
# Needs BUILD_DIR and SOURCE_DIR (CTest sets them). `up` runs with --no-build: the binaries are
# the ones CTest built, and a test must not rebuild a build dir other tests are running from.
set -euo pipefail

SOURCE_DIR=${SOURCE_DIR:?SOURCE_DIR must be set}
BUILD_DIR=${BUILD_DIR:?BUILD_DIR must be set}
# shellcheck source=tools/stack-lib.sh
source "$SOURCE_DIR/tools/stack-lib.sh"

STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/e2e_stack_test.XXXXXX")
export STATE_DIR CHAT_BUILD_DIR=$BUILD_DIR
export PG_PORT REDIS_PORT KAFKA_PORT CHATS_PORT MESSAGING_PORT PRESENCE_PORT SYNC_PORT
export CHATS_METRICS_PORT MESSAGING_METRICS_PORT PRESENCE_METRICS_PORT SYNC_METRICS_PORT
PG_PORT=$(free_port)
REDIS_PORT=$(free_port)
KAFKA_PORT=$(free_port 2)
CHATS_PORT=$(free_port)
MESSAGING_PORT=$(free_port)
PRESENCE_PORT=$(free_port)
SYNC_PORT=$(free_port)
CHATS_METRICS_PORT=$(free_port)
MESSAGING_METRICS_PORT=$(free_port)
PRESENCE_METRICS_PORT=$(free_port)
SYNC_METRICS_PORT=$(free_port)
export KAFKA_PARTITIONS=4 PG_FSYNC=off
unset JWT_SECRET CHATS_ADDR MESSAGING_ADDR

STACK=$SOURCE_DIR/tools/stack.sh
CTL=$BUILD_DIR/tools/chatctl/chatctl

fail() {
    echo "FAIL: $*" >&2
    local log
    for log in "$STATE_DIR"/logs/svc-*.log; do
        [[ -f $log ]] || continue
        echo "--- last lines of $log" >&2
        tail -n 20 "$log" >&2
    done
    exit 1
}
pass() {
    echo "ok - $*"
}
cleanup() {
    "$STACK" down >/dev/null 2>&1 || true
    stack_cleanup "$STATE_DIR"
}
trap cleanup EXIT

out=$STATE_DIR/up.out
"$STACK" up --no-build >"$out" 2>&1 || {
    tail -n 40 "$out" >&2
    fail "tools/stack.sh up failed"
}
for s in svc-chats svc-messaging svc-presence svc-sync; do
    grep -Eq "^  $s +127\.0\.0\.1:[0-9]+  SERVING" "$out" || {
        cat "$out" >&2
        fail "$s is not SERVING after up"
    }
done
pass "stack.sh up: all four services SERVING on non-default ports"

"$STACK" status >"$STATE_DIR/status.out" 2>&1 || {
    cat "$STATE_DIR/status.out" >&2
    fail "stack.sh status reports a problem"
}
pass "stack.sh status: every piece answers"

eval "$("$STACK" env)"
[[ $CHATS_ADDR == "127.0.0.1:$CHATS_PORT" && $MESSAGING_ADDR == "127.0.0.1:$MESSAGING_PORT" ]] ||
    fail "stack.sh env: CHATS_ADDR=$CHATS_ADDR MESSAGING_ADDR=$MESSAGING_ADDR"
grep -q "chats-addr=127.0.0.1:$CHATS_PORT" "$STATE_DIR/logs/svc-messaging-$MESSAGING_PORT.log" ||
    fail "svc-messaging was not given CHATS_ADDR"
pass "svc-messaging runs with CHATS_ADDR=$CHATS_ADDR"

# Through reflection, with no .proto files (the README's grpcurl line).
grpcurl -plaintext "127.0.0.1:$MESSAGING_PORT" list 2>&1 | grep -q '^chat.v1.MessagingService$' ||
    fail "grpcurl list on svc-messaging"
pass "grpcurl lists chat.v1.MessagingService through reflection"

chat=$("$CTL" --as alice create-chat --group --title stack bob carol) ||
    fail "create-chat: $chat"
chat=$(grep -Eo '[0-9]{6,}' <<<"$chat" | head -n 1)
[[ -n $chat ]] || fail "create-chat printed no chat id"
send=$("$CTL" --as bob send "$chat" "hello through the stack" --client-id stack-test-1) ||
    fail "send: $send"
grep -q OK <<<"$send" || fail "send did not answer OK: $send"
mid=$(grep -Eo '[0-9]{6,}' <<<"$send" | tail -n 1)
again=$("$CTL" --as bob send "$chat" "hello through the stack" --client-id stack-test-1) ||
    fail "resend: $again"
grep -q DUPLICATE <<<"$again" || fail "resend did not answer DUPLICATE: $again"
pass "chat $chat made on svc-chats; bob sent message $mid through svc-messaging"

hist=""
for _ in $(seq 1 100); do
    hist=$("$CTL" --as carol history "$chat" 2>&1) || true
    grep -q "hello through the stack" <<<"$hist" && break
    sleep 0.2
done
[[ $(grep -c "hello through the stack" <<<"$hist") == 1 ]] ||
    fail "history does not hold the message exactly once: $hist"
grep -q "$mid" <<<"$hist" || fail "history holds another message id than $mid: $hist"
pass "svc-chats history holds message $mid once"

pids=$(cat "$STATE_DIR"/pids/*.pid)
"$STACK" down >"$STATE_DIR/down.out" 2>&1 || fail "stack.sh down: $(cat "$STATE_DIR/down.out")"
for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then
        fail "process $p still runs after down"
    fi
done
for port in "$CHATS_PORT" "$MESSAGING_PORT" "$PRESENCE_PORT" "$SYNC_PORT" "$REDIS_PORT" \
    "$PG_PORT" "$KAFKA_PORT"; do
    if port_open "$port"; then
        fail "port $port still open after down"
    fi
done
pass "stack.sh down stopped every process"
