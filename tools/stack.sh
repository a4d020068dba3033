#!/usr/bin/env bash
# The local stack: real PostgreSQL, Redis and Kafka (KRaft, from jars) plus
# the four services, all on 127.0.0.1, state and logs in one folder.
#
#   tools/stack.sh up [--brokers N] [--partitions N] [--no-build] [--no-services]
#   tools/stack.sh status
#   tools/stack.sh env          # export lines: eval "$(tools/stack.sh env)"
#   tools/stack.sh down [--wipe]
#
# `up` installs what is missing (tools/install-deps.sh, tools/install-tools.sh),
# builds (cmake + ninja), starts everything, waits until each piece is ready,
# prints the endpoints and returns, leaving the stack running. Running `up`
# again starts only what is not running. `down` stops everything and keeps the
# data; `down --wipe` also deletes the state folder.
#
# Environment (defaults in brackets):
#   STATE_DIR [<repo>/.state]     CHAT_BUILD_DIR [<repo>/build]
#   PG_PORT [25432]  REDIS_PORT [26379]   (backing servers sit below Linux's
#   ephemeral port range 32768-60999: Kafka binds its listener late, after its
#   own outgoing connections, which could otherwise take the port)
#   KAFKA_PORT [29092]  (broker I on KAFKA_PORT+2(I-1), its controller on the next port)
#   KAFKA_NBROKERS [1]  KAFKA_PARTITIONS [12]
#   CHATS_PORT [50051] MESSAGING_PORT [50052] PRESENCE_PORT [50053] SYNC_PORT [50054]
#   CHATS_METRICS_PORT [9101] MESSAGING_METRICS_PORT [9102]
#   PRESENCE_METRICS_PORT [9103] SYNC_METRICS_PORT [9104]
#   SKIP_DEPS=1 SKIP_TOOLS=1 SKIP_BUILD=1   skip those steps of `up`
# plus the knobs of tools/stack-lib.sh (PG_FSYNC, REDIS_EXTRA_CONFIG, ...).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/stack-lib.sh
source "$SRC/tools/stack-lib.sh"

STATE_DIR=${STATE_DIR:-$SRC/.state}
BUILD=${CHAT_BUILD_DIR:-$SRC/build}
export CHAT_BUILD_DIR=$BUILD
PG_PORT=${PG_PORT:-25432}
REDIS_PORT=${REDIS_PORT:-26379}
KAFKA_PORT=${KAFKA_PORT:-29092}
KAFKA_NBROKERS=${KAFKA_NBROKERS:-1}
export KAFKA_PARTITIONS=${KAFKA_PARTITIONS:-12}

SERVICES=(svc-chats svc-messaging svc-presence svc-sync)
declare -A SVC_PORT=(
    [svc-chats]=${CHATS_PORT:-50051} [svc-messaging]=${MESSAGING_PORT:-50052}
    [svc-presence]=${PRESENCE_PORT:-50053} [svc-sync]=${SYNC_PORT:-50054})
declare -A SVC_METRICS=(
    [svc-chats]=${CHATS_METRICS_PORT:-9101} [svc-messaging]=${MESSAGING_METRICS_PORT:-9102}
    [svc-presence]=${PRESENCE_METRICS_PORT:-9103} [svc-sync]=${SYNC_METRICS_PORT:-9104})

die() {
    echo "stack: error: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
}

# require_free PORT WHAT: fail clearly if something else listens on PORT.
require_free() {
    # Any socket on the port but TIME-WAIT ones (a listener binds over those).
    [[ -z $(ss -Htan "sport = :$1" 2>/dev/null | grep -v TIME-WAIT) ]] ||
        die "port $1 ($2) is in use by another process; set a different port (see tools/stack.sh --help)"
}

write_env() {
    {
        echo "# written by tools/stack.sh up; use: eval \"\$(tools/stack.sh env)\""
        printf 'export STATE_DIR=%q\n' "$STATE_DIR"
        printf 'export PG_URL=%q\n' "host=127.0.0.1 port=$PG_PORT dbname=${PG_DB:-chat} user=chat"
        printf 'export REDIS_URL=%q\n' "redis://127.0.0.1:$REDIS_PORT"
        printf 'export KAFKA_BROKERS=%q\n' "$KAFKA_BROKERS"
        printf 'export KAFKA_LIBS=%q\n' "$KAFKA_LIBS"
        printf 'export CHAT_BUILD_DIR=%q\n' "$BUILD"
        printf 'export CHATS_ADDR=127.0.0.1:%s\n' "${SVC_PORT[svc-chats]}"
        printf 'export MESSAGING_ADDR=127.0.0.1:%s\n' "${SVC_PORT[svc-messaging]}"
        printf 'export PRESENCE_ADDR=127.0.0.1:%s\n' "${SVC_PORT[svc-presence]}"
        printf 'export SYNC_ADDR=127.0.0.1:%s\n' "${SVC_PORT[svc-sync]}"
        printf 'export JWT_SECRET=%q\n' "$(stack_jwt_secret "$STATE_DIR")"
        [[ -x "$SRC/tools/install-tools.sh" ]] && "$SRC/tools/install-tools.sh" --env
    } >"$STATE_DIR/env"
}

cmd_up() {
    local build=1 services=1
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --brokers)
            KAFKA_NBROKERS=${2:?--brokers needs a number}
            shift
            ;;
        --partitions)
            KAFKA_PARTITIONS=${2:?--partitions needs a number}
            shift
            ;;
        --no-build) build=0 ;;
        --no-services) services=0 ;;
        -h | --help) usage ;;
        *) die "unknown option $1 (see tools/stack.sh --help)" ;;
        esac
        shift
    done
    [[ ${SKIP_BUILD:-0} == 1 ]] && build=0
    if [[ -s "$STATE_DIR/kafka/nbrokers" && $(cat "$STATE_DIR/kafka/nbrokers") != "$KAFKA_NBROKERS" ]]; then
        die "$STATE_DIR holds a $(cat "$STATE_DIR/kafka/nbrokers")-broker Kafka; to change to $KAFKA_NBROKERS: tools/stack.sh down --wipe, then up again"
    fi
    mkdir -p "$STATE_DIR/logs" "$STATE_DIR/pids"

    if [[ ${SKIP_DEPS:-0} != 1 ]]; then
        "$SRC/tools/install-deps.sh"
    fi
    if [[ ${SKIP_TOOLS:-0} != 1 ]]; then
        "$SRC/tools/install-tools.sh"
        eval "$("$SRC/tools/install-tools.sh" --env)"
    fi
    if ((build)); then
        stack_log "building in $BUILD"
        if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
            cmake -S "$SRC" -B "$BUILD" -G Ninja >"$STATE_DIR/logs/build.log" 2>&1 || {
                tail -n 30 "$STATE_DIR/logs/build.log" >&2
                die "cmake configure failed (full log: $STATE_DIR/logs/build.log; --no-build skips the build)"
            }
        fi
        cmake --build "$BUILD" >>"$STATE_DIR/logs/build.log" 2>&1 || {
            tail -n 30 "$STATE_DIR/logs/build.log" >&2
            die "build failed (full log: $STATE_DIR/logs/build.log; --no-build skips the build)"
        }
    fi

    # Backing servers.
    kafka_fetch
    if [[ ! -s "$STATE_DIR/pg.data" ]] || ! pg_running; then
        require_free "$PG_PORT" PostgreSQL
    fi
    start_pg "$STATE_DIR" "$PG_PORT"
    pid_alive "$STATE_DIR" redis || require_free "$REDIS_PORT" Redis
    start_redis "$STATE_DIR" "$REDIS_PORT"
    local i
    for ((i = 1; i <= KAFKA_NBROKERS; i++)); do
        pid_alive "$STATE_DIR" "kafka-$i" && continue
        require_free $((KAFKA_PORT + 2 * (i - 1))) "Kafka broker $i"
        require_free $((KAFKA_PORT + 2 * (i - 1) + 1)) "Kafka controller $i"
    done
    start_kafka "$STATE_DIR" "$KAFKA_PORT" "$KAFKA_NBROKERS"
    write_env

    # Services, in dependency order.
    export CHATS_ADDR=127.0.0.1:${SVC_PORT[svc-chats]}
    export MESSAGING_ADDR=127.0.0.1:${SVC_PORT[svc-messaging]}
    export PRESENCE_ADDR=127.0.0.1:${SVC_PORT[svc-presence]}
    export SYNC_ADDR=127.0.0.1:${SVC_PORT[svc-sync]}
    declare -A state
    local s rc
    for s in "${SERVICES[@]}"; do
        if ((services == 0)); then
            state[$s]="not started (--no-services)"
            continue
        fi
        if ! pid_alive "$STATE_DIR" "$s-${SVC_PORT[$s]}"; then
            require_free "${SVC_PORT[$s]}" "$s"
            require_free "${SVC_METRICS[$s]}" "$s metrics"
        fi
        rc=0
        start_service "$STATE_DIR" "$s" "${SVC_PORT[$s]}" "${SVC_METRICS[$s]}" || rc=$?
        case $rc in
        0) state[$s]=SERVING ;;
        2) state[$s]="not built yet ($(service_binary "$s") missing): skipped" ;;
        *) die "$s did not become healthy (log: $STATE_DIR/logs/$s-${SVC_PORT[$s]}.log); the rest is still running: tools/stack.sh down" ;;
        esac
    done

    echo
    echo "stack is up (state: $STATE_DIR, logs: $STATE_DIR/logs)"
    printf '  %-14s %s\n' postgres "$PG_URL"
    printf '  %-14s %s\n' redis "$REDIS_URL"
    printf '  %-14s %s  (%s broker(s); topic %s, %s partitions)\n' kafka "$KAFKA_BROKERS" \
        "$KAFKA_NBROKERS" "${KAFKA_TOPIC:-chat.events}" "$KAFKA_PARTITIONS"
    local first=""
    for s in "${SERVICES[@]}"; do
        if [[ ${state[$s]} == SERVING ]]; then
            local m="metrics http://127.0.0.1:${SVC_METRICS[$s]}/metrics"
            port_open "${SVC_METRICS[$s]}" || m="metrics port ${SVC_METRICS[$s]}: not open"
            printf '  %-14s 127.0.0.1:%s  SERVING  %s\n' "$s" "${SVC_PORT[$s]}" "$m"
            first=${first:-${SVC_PORT[$s]}}
        else
            printf '  %-14s %s\n' "$s" "${state[$s]}"
        fi
    done
    echo
    echo "Environment for clients and tools (PG_URL, KAFKA_BROKERS, buf and grpcurl on PATH):"
    echo "  eval \"\$(tools/stack.sh env)\""
    if [[ -n "$first" ]]; then
        echo "Call a service through reflection:"
        echo "  buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:$first/grpc.health.v1.Health/Check"
        echo "  grpcurl -plaintext 127.0.0.1:$first list"
    fi
    echo "Stop: tools/stack.sh down"
}

pg_running() {
    local bindir data
    [[ -s "$STATE_DIR/pg.data" ]] || return 1
    bindir=$(pg_bindir) || return 1
    data=$(cat "$STATE_DIR/pg.data")
    as_pg_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

cmd_down() {
    local wipe=0
    [[ ${1:-} == --wipe ]] && wipe=1
    if [[ ! -d "$STATE_DIR" ]]; then
        echo "stack: nothing to stop ($STATE_DIR does not exist)"
        return 0
    fi
    stop_all "$STATE_DIR"
    if ((wipe)); then
        stack_cleanup "$STATE_DIR"
        echo "stack: stopped; removed $STATE_DIR"
    else
        echo "stack: stopped (data kept in $STATE_DIR; down --wipe removes it)"
    fi
}

cmd_status() {
    if [[ ! -d "$STATE_DIR/pids" ]]; then
        echo "stack: not started ($STATE_DIR)"
        return 1
    fi
    echo "processes ($STATE_DIR):"
    stack_status "$STATE_DIR"
    local bad=0 s st
    if [[ -f "$STATE_DIR/env" ]]; then
        echo "endpoints:"
        # shellcheck disable=SC1091
        source "$STATE_DIR/env"
        if pg_running && psql "$PG_URL" -XtAc 'SELECT 1' >/dev/null 2>&1; then
            st=ready
        else
            st=down
            bad=1
        fi
        printf '  %-14s %-50s %s\n' postgres "$PG_URL" "$st"
        if [[ $(redis-cli -u "$REDIS_URL" ping 2>/dev/null) == PONG ]]; then st=ready; else
            st=down
            bad=1
        fi
        printf '  %-14s %-50s %s\n' redis "$REDIS_URL" "$st"
        st=ready
        local b
        for b in ${KAFKA_BROKERS//,/ }; do port_open "${b##*:}" || {
            st="down ($b)"
            bad=1
        }; done
        printf '  %-14s %-50s %s\n' kafka "$KAFKA_BROKERS" "$st"
    fi
    for s in "${SERVICES[@]}"; do
        if [[ ! -x $(service_binary "$s") ]]; then
            st="not built"
        elif pid_alive "$STATE_DIR" "$s-${SVC_PORT[$s]}"; then
            st=$(grpc_health "127.0.0.1:${SVC_PORT[$s]}" 2>/dev/null) || st="no health answer"
            [[ $st == SERVING ]] || bad=1
        else
            st="not running"
            bad=1
        fi
        printf '  %-14s %-50s %s\n' "$s" "127.0.0.1:${SVC_PORT[$s]}" "$st"
    done
    return $bad
}

case "${1:-}" in
up)
    shift
    cmd_up "$@"
    ;;
down)
    shift
    cmd_down "$@"
    ;;
status) cmd_status ;;
env)
    [[ -f "$STATE_DIR/env" ]] || die "no $STATE_DIR/env: run tools/stack.sh up first"
    cat "$STATE_DIR/env"
    ;;
-h | --help | help | "") usage ;;
*) die "unknown command $1 (up, down, status, env)" ;;
esac
