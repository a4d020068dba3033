# shellcheck shell=bash
# stack-lib.sh: start and stop the backing servers (PostgreSQL, Redis, Kafka in
# KRaft mode) and the services on loopback, in one state directory. Sourced by
# tools/stack.sh (the dev stack) and by integration tests, which start the same
# pieces on per-test ports in temp dirs:
#
#   source "$SOURCE_DIR/tools/stack-lib.sh"
#   dir=$(mktemp -d); trap 'stack_cleanup "$dir"' EXIT
#   start_pg "$dir" "$(free_port)"          # exports PG_URL PG_PORT ...
#   start_redis "$dir" "$(free_port)"       # exports REDIS_URL REDIS_PORT
#   start_kafka "$dir" "$(free_port 6)" 3   # exports KAFKA_BROKERS; creates chat.events
#   start_service "$dir" svc-chats "$(free_port)" "$(free_port)"
#
# Functions (DIR is the per-test state folder):
#   free_port [N]                       a free port (N consecutive free ports)
#   start_pg DIR PORT / stop_pg DIR
#   start_redis DIR PORT / stop_redis DIR
#   start_kafka DIR PORT [NBROKERS] / stop_kafka DIR
#   kill_kafka_broker DIR I [SIGNAL]    crash (KILL, default) or stop broker I
#   start_kafka_broker DIR I            restart broker I, wait until it is up
#   kafka_leader DIR TOPIC PARTITION    node id of the partition's leader
#   kafka_create_topic NAME PARTITIONS [RF] [MIN_ISR]
#   kafka_tool CLASS ARGS...            run a Kafka CLI class from the jars
#   start_service DIR NAME PORT METRICS_PORT [ARGS...] / stop_service DIR NAME PORT [SIGNAL]
#   stack_jwt_secret DIR                JWT_SECRET for the services (made once per DIR)
#   grpc_health ADDR [SERVICE]          print SERVING / NOT_SERVING / ...
#   wait_grpc_health ADDR [TIMEOUT] [SERVICE]
#   stop_pid DIR NAME [SIGNAL] [TIMEOUT], pid_alive DIR NAME
#   stop_all DIR                        stop everything started in DIR
#   stack_cleanup DIR                   stop_all, then delete DIR
#   stack_status DIR
#
# Every start_* returns 0 once its server is ready, non-zero (after printing
# the tail of its log) if it is not; start_service returns 2 when the binary
# is not built. Processes run in their own session (setsid), so they outlive
# the caller: always pair with stop_all or stack_cleanup. Pid files live in
# DIR/pids (NAME.pid: redis, kafka-I, svc-x-PORT), logs in DIR/logs. Nothing
# here calls `exit`; nothing needs more than bash, coreutils, ss and the
# servers' own clients.
#
# Environment (read):
#   CHAT_SOURCE_DIR   repo root (default: the parent of this file's folder)
#   CHAT_BUILD_DIR    where service binaries are (default $CHAT_SOURCE_DIR/build;
#                     BUILD_DIR, as CTest sets it, is used when this is unset)
#   CHAT_CACHE        download cache (default ~/.cache/chat-backend): Kafka jars
#                     in $CHAT_CACHE/kafka-<version>/libs, tools in .../tools
#   PG_DB             database created by start_pg (default chat; user is chat)
#   PG_FSYNC          on|off (default on)
#   REDIS_NOTIFY_KEYSPACE_EVENTS  initial notify-keyspace-events (default "")
#   REDIS_EXTRA_CONFIG            extra redis.conf lines
#   KAFKA_PARTITIONS  partitions of chat.events (default 12; 0 = create no topic)
#   KAFKA_TOPIC       topic start_kafka creates (default chat.events)
#   KAFKA_HEAP_OPTS   JVM heap per broker (default -Xmx512m -Xms256m); every broker
#                     writes its GC and safepoint pauses to DIR/kafka/broker-I/gc.log
#   KAFKA_GC_OPTS     JVM collector flags (default -XX:+UseZGC: pauses under 1 ms; with G1
#                     (-XX:+UseG1GC -XX:MaxGCPauseMillis=20, Kafka's own script) young pauses
#                     of 6-12 ms every ~1 s were the send->ack tail, see bench/messaging)
#   KAFKA_EXTRA_CONFIG  extra server.properties lines for every broker
#   STACK_TIMEOUT     seconds to wait for any server to become ready (default 90)
#
# Environment (exported by the start_* functions):
#   PG_URL (libpq conninfo), PG_PORT, PG_SOCKET_DIR, PG_DATA
#   REDIS_URL (redis://127.0.0.1:PORT), REDIS_PORT
#   KAFKA_BROKERS (host:port,...), KAFKA_LIBS
#   JWT_SECRET (start_service / stack_jwt_secret: HS256 secret for bearer tokens)
#   CHAT_TOOLS_DIR and PATH (tools bin + Python venv first), when installed

STACK_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHAT_SOURCE_DIR=${CHAT_SOURCE_DIR:-$(dirname "$STACK_LIB_DIR")}
CHAT_CACHE=${CHAT_CACHE:-$HOME/.cache/chat-backend}
KAFKA_POM=$STACK_LIB_DIR/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_LIBS=${KAFKA_LIBS:-$CHAT_CACHE/kafka-$KAFKA_VERSION/libs}
STACK_TIMEOUT=${STACK_TIMEOUT:-90}
export KAFKA_LIBS

# Put the pinned tools (tools/install-tools.sh) first on PATH when present.
if [[ -x "${CHAT_TOOLS_DIR:-$CHAT_CACHE/tools}/bin/grpcurl" ]]; then
    CHAT_TOOLS_DIR=${CHAT_TOOLS_DIR:-$CHAT_CACHE/tools}
    export CHAT_TOOLS_DIR
    case ":$PATH:" in
    *":$CHAT_TOOLS_DIR/bin:"*) ;;
    *) PATH=$CHAT_TOOLS_DIR/bin:$CHAT_TOOLS_DIR/venv/bin:$PATH ;;
    esac
    export PATH
fi

stack_log() { echo "stack: $*" >&2; }
stack__fail() {
    echo "stack: error: $*" >&2
    return 1
}

# stack__tail FILE: the last lines of a log, for error messages.
stack__tail() {
    [[ -f "$1" ]] || return 0
    echo "---- last lines of $1 ----" >&2
    tail -n "${2:-25}" "$1" >&2
    echo "----" >&2
}

# free_port [N]: print a port P such that P..P+N-1 are all free on 127.0.0.1
# (N defaults to 1). Picked at random in 20000-32000, below Linux's ephemeral
# range. Each port handed out is reserved for 10 minutes (a folder in
# ${TMPDIR:-/tmp}/chat-ports), so back-to-back calls and parallel tests do not
# get the same port before anything listens on it.
free_port() {
    local n=${1:-1} p i busy tries res=${TMPDIR:-/tmp}/chat-ports
    mkdir -p "$res"
    find "$res" -mindepth 1 -maxdepth 1 -mmin +10 -exec rm -rf {} + 2>/dev/null || true
    for ((tries = 0; tries < 200; tries++)); do
        p=$((20000 + RANDOM % (12000 - n)))
        busy=0
        for ((i = 0; i < n; i++)); do
            if [[ -e "$res/$((p + i))" || -n $(ss -Htln "sport = :$((p + i))" 2>/dev/null) ]]; then
                busy=1
                break
            fi
        done
        ((busy == 0)) || continue
        for ((i = 0; i < n; i++)); do
            if ! mkdir "$res/$((p + i))" 2>/dev/null; then # lost a race: undo, retry
                while ((--i >= 0)); do rmdir "$res/$((p + i))"; done
                busy=1
                break
            fi
        done
        if ((busy == 0)); then
            echo "$p"
            return 0
        fi
    done
    stack__fail "no free port range of $n found"
}

# port_open PORT: true when something accepts TCP on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# stack__spawn DIR NAME LOG CMD...: run CMD detached (own session, stdin from
# /dev/null, output appended to LOG); its pid goes to DIR/pids/NAME.pid.
stack__spawn() {
    local dir=$1 name=$2 log=$3
    shift 3
    local pidf=$dir/pids/$name.pid
    mkdir -p "$dir/pids" "$(dirname "$log")"
    rm -f "$pidf"
    # The inner shell writes its own pid and then execs CMD, so the pid file
    # names the real process whether or not setsid had to fork.
    setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidf" "$@" \
        </dev/null >>"$log" 2>&1 &
    disown "$!" 2>/dev/null || true # no "Killed" job notices from the caller's shell
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s "$pidf" ]] && return 0
        sleep 0.05
    done
    stack__fail "$name did not start"
}

# pid_alive DIR NAME: true when DIR/pids/NAME.pid names a live process.
pid_alive() {
    local pidf=$1/pids/$2.pid
    [[ -s "$pidf" ]] && kill -0 "$(cat "$pidf")" 2>/dev/null
}

# stop_pid DIR NAME [SIGNAL] [TIMEOUT]: signal the process (default TERM), wait
# up to TIMEOUT seconds (default 30) for it to exit, then SIGKILL it. Removes
# the pid file. SIGNAL KILL stops at once (a crash, for failover tests).
stop_pid() {
    local dir=$1 name=$2 sig=${3:-TERM} timeout=${4:-30}
    local pidf=$dir/pids/$name.pid pid i
    [[ -s "$pidf" ]] || return 0
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        kill -s "$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < timeout * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            stack_log "$name (pid $pid) still running after ${timeout}s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidf"
}

# --- PostgreSQL -------------------------------------------------------------

pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$d" ]] || d=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")
    [[ -x "$d/pg_ctl" ]] || {
        stack__fail "PostgreSQL server binaries not found (apt-get install postgresql)"
        return 1
    }
    echo "$d"
}

# PostgreSQL refuses to run as root: as root, its commands run as the
# `postgres` user (created by Debian's postgresql package).
as_pg_user() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# stack__pg_home DIR: the folder PostgreSQL's files live in. Normally DIR/pg;
# when DIR is not reachable by the postgres user (e.g. under /root or in a
# mode-700 mktemp dir that we may not widen), a folder in /tmp recorded in
# DIR/pg.home.
stack__pg_home() {
    local dir=$1
    if [[ -s "$dir/pg.home" ]]; then
        cat "$dir/pg.home"
        return 0
    fi
    local home=$dir/pg
    mkdir -p "$home"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres:postgres "$home"
        chmod 700 "$home"
        # A mktemp -d folder is mode 700: let others traverse it (not list it).
        runuser -u postgres -- test -w "$home" 2>/dev/null || chmod go+x "$dir"
        if ! runuser -u postgres -- test -w "$home" 2>/dev/null; then
            rmdir "$home" 2>/dev/null || true
            home=$(mktemp -d /tmp/chat-pg.XXXXXX)
            chown postgres:postgres "$home"
            echo "$home" >"$dir/pg.home"
        fi
    fi
    echo "$home"
}

# start_pg DIR PORT: initialize (once) and start a PostgreSQL server listening
# on 127.0.0.1:PORT with its unix socket in its own folder, trust auth,
# superuser `chat`, and create database $PG_DB (default chat). Exports PG_URL,
# PG_PORT, PG_SOCKET_DIR, PG_DATA.
start_pg() {
    local dir=$1 port=$2 bindir home data sock db=${PG_DB:-chat}
    mkdir -p "$dir/logs" "$dir/pids"
    bindir=$(pg_bindir) || return 1
    home=$(stack__pg_home "$dir") || return 1
    data=$home/data
    sock=$home/run
    if [[ ! -s "$data/PG_VERSION" ]]; then
        as_pg_user mkdir -p "$sock"
        as_pg_user "$bindir/initdb" -D "$data" -U chat --auth=trust -E UTF8 \
            --locale=C.UTF-8 --no-sync >"$dir/logs/initdb.log" 2>&1 || {
            stack__tail "$dir/logs/initdb.log"
            stack__fail "initdb failed"
            return 1
        }
        echo "include_if_exists = 'chat.conf'" | as_pg_user tee -a "$data/postgresql.conf" >/dev/null
    fi
    as_pg_user tee "$data/chat.conf" >/dev/null <<EOF
# written by tools/stack-lib.sh at every start
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
fsync = ${PG_FSYNC:-on}
max_connections = 200
shared_buffers = 128MB
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF
    echo "$data" >"$dir/pg.data"
    ln -sf "$home/postgres.log" "$dir/logs/postgres.log"
    if as_pg_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        stack_log "postgres already running ($data)"
    else
        as_pg_user "$bindir/pg_ctl" -D "$data" -l "$home/postgres.log" -w -t "$STACK_TIMEOUT" \
            start >/dev/null || {
            stack__tail "$home/postgres.log"
            stack__fail "PostgreSQL did not start on port $port"
            return 1
        }
    fi
    local psql=("$bindir/psql" -X -q -h 127.0.0.1 -p "$port" -U chat)
    if [[ $("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") != 1 ]]; then
        "${psql[@]}" -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null || {
            stack__fail "could not create database $db"
            return 1
        }
    fi
    export PG_PORT=$port PG_SOCKET_DIR=$sock PG_DATA=$data
    export PG_URL="host=127.0.0.1 port=$port dbname=$db user=chat"
    stack_log "postgres ready: $PG_URL"
}

# stop_pg DIR: fast shutdown (rolls back open transactions, like a restart).
stop_pg() {
    local dir=$1 bindir data
    [[ -s "$dir/pg.data" ]] || return 0
    data=$(cat "$dir/pg.data")
    bindir=$(pg_bindir) || return 1
    if as_pg_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_pg_user "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null ||
            stack_log "pg_ctl stop failed for $data"
    fi
}

# --- Redis ------------------------------------------------------------------

# start_redis DIR PORT: a Redis server on 127.0.0.1:PORT with its data (AOF,
# fsync every second) in DIR/redis. Exports REDIS_URL, REDIS_PORT.
start_redis() {
    local dir=$1 port=$2 rdir=$1/redis i
    mkdir -p "$rdir" "$dir/logs"
    if pid_alive "$dir" redis; then
        stack_log "redis already running"
    else
        cat >"$rdir/redis.conf" <<EOF
# written by tools/stack-lib.sh
bind 127.0.0.1
port $port
dir $rdir
daemonize no
logfile ""
appendonly yes
appendfsync everysec
save ""
notify-keyspace-events "${REDIS_NOTIFY_KEYSPACE_EVENTS:-}"
${REDIS_EXTRA_CONFIG:-}
EOF
        stack__spawn "$dir" redis "$dir/logs/redis.log" redis-server "$rdir/redis.conf" || return 1
    fi
    for ((i = 0; i < STACK_TIMEOUT * 10; i++)); do
        [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] && break
        if ! pid_alive "$dir" redis; then
            stack__tail "$dir/logs/redis.log"
            stack__fail "redis exited"
            return 1
        fi
        sleep 0.1
    done
    [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] || {
        stack__tail "$dir/logs/redis.log"
        stack__fail "redis not answering on port $port"
        return 1
    }
    export REDIS_PORT=$port REDIS_URL=redis://127.0.0.1:$port
    stack_log "redis ready: $REDIS_URL"
}

stop_redis() {
    stop_pid "$1" redis TERM 30
}

# --- Kafka (KRaft, from jars) -----------------------------------------------

# kafka_fetch: download the pinned Kafka jars (tools/kafka/pom.xml) into
# $KAFKA_LIBS once. Safe to call concurrently.
kafka_fetch() {
    [[ -f "$KAFKA_LIBS/.complete" ]] && return 0
    command -v mvn >/dev/null || {
        stack__fail "mvn not found (tools/install-deps.sh installs maven)"
        return 1
    }
    mkdir -p "$(dirname "$KAFKA_LIBS")"
    (
        flock 9
        [[ -f "$KAFKA_LIBS/.complete" ]] && exit 0
        stack_log "fetching Kafka $KAFKA_VERSION jars into $KAFKA_LIBS"
        rm -rf "$KAFKA_LIBS.tmp"
        mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
            -DoutputDirectory="$KAFKA_LIBS.tmp" </dev/null >"$KAFKA_LIBS.log" 2>&1 || {
            cat "$KAFKA_LIBS.log" >&2
            exit 1
        }
        rm -rf "$KAFKA_LIBS"
        mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
        touch "$KAFKA_LIBS/.complete"
    ) 9>"$(dirname "$KAFKA_LIBS")/.fetch.lock" || {
        stack__fail "could not fetch Kafka jars"
        return 1
    }
}

# kafka_tool CLASS ARGS...: run a Kafka command-line class from the jars
# (logging at WARN to stderr), e.g.
#   kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" --list
kafka_tool() {
    local cls=$1
    shift
    local l4j=$CHAT_CACHE/kafka-tools-log4j.properties
    [[ -f "$l4j" ]] || {
        mkdir -p "$CHAT_CACHE"
        cat >"$l4j.tmp" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
        mv -f "$l4j.tmp" "$l4j"
    }
    java -Xmx256m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$l4j" -cp "$KAFKA_LIBS/*" "$cls" "$@"
}

# Ports: broker I (1-based) listens on BASE+2(I-1), its controller on BASE+2(I-1)+1.
kafka__port() { echo $(($1 + 2 * ($2 - 1))); }

# kafka__spawn_broker DIR I: start broker I from its existing config.
kafka__spawn_broker() {
    local dir=$1 i=$2 bdir=$1/kafka/broker-$2
    # shellcheck disable=SC2086
    stack__spawn "$dir" "kafka-$i" "$dir/logs/kafka-$i.log" \
        java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} ${KAFKA_GC_OPTS:--XX:+UseZGC} \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        "-Xlog:gc*=info,safepoint=info:file=$bdir/gc.log:time,uptime:filecount=2,filesize=20m" \
        -Dlog4j.configuration="file:$dir/kafka/log4j.properties" \
        -Dkafka.logs.dir="$bdir" -cp "$KAFKA_LIBS/*" kafka.Kafka "$bdir/server.properties"
}

# kafka__wait_broker DIR I: wait until broker I logs that it has started and
# accepts connections.
kafka__wait_broker() {
    local dir=$1 i=$2 port t log=$1/logs/kafka-$2.log
    port=$(cat "$dir/kafka/broker-$i/port")
    for ((t = 0; t < STACK_TIMEOUT * 10; t++)); do
        if ! pid_alive "$dir" "kafka-$i"; then
            stack__tail "$log" 40
            stack__fail "Kafka broker $i exited"
            return 1
        fi
        # Only the lines written since this start count (the log is appended).
        if tail -n +"$(cat "$dir/kafka/broker-$i/logline" 2>/dev/null || echo 1)" "$log" |
            grep -q 'Kafka Server started' && port_open "$port"; then
            return 0
        fi
        sleep 0.1
    done
    stack__tail "$log" 40
    stack__fail "Kafka broker $i not ready on port $port after ${STACK_TIMEOUT}s"
}

# start_kafka_broker DIR I: (re)start broker I of a cluster made by start_kafka
# (e.g. after kill_kafka_broker) and wait until it is up.
start_kafka_broker() {
    local dir=$1 i=$2 log=$1/logs/kafka-$2.log
    if pid_alive "$dir" "kafka-$i"; then
        return 0
    fi
    mkdir -p "$dir/logs"
    touch "$log"
    echo $(($(wc -l <"$log") + 1)) >"$dir/kafka/broker-$i/logline"
    kafka__spawn_broker "$dir" "$i" || return 1
    kafka__wait_broker "$dir" "$i"
}

# kill_kafka_broker DIR I [SIGNAL]: stop broker I; SIGNAL KILL (default) is a
# crash, TERM a controlled shutdown.
kill_kafka_broker() {
    stop_pid "$1" "kafka-$2" "${3:-KILL}" 60
}

# kafka_leader DIR TOPIC PARTITION: print the node id (= broker index) of the
# partition's current leader (-1 if none).
kafka_leader() {
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
        --describe --topic "$2" 2>/dev/null |
        awk -v p="$3" '{ for (i = 1; i < NF; i++) if ($i == "Partition:" && $(i+1) == p) {
                           for (j = i; j < NF; j++) if ($j == "Leader:") { print $(j+1); exit } } }'
}

# kafka_create_topic NAME PARTITIONS [RF] [MIN_ISR]: create NAME (if missing)
# on $KAFKA_BROKERS and wait until every partition has a leader. RF defaults
# to min(3, brokers); MIN_ISR to 2 when RF >= 3, else 1.
kafka_create_topic() {
    local name=$1 parts=$2 nb rf min_isr t out err
    nb=$(tr ',' '\n' <<<"$KAFKA_BROKERS" | grep -c .)
    rf=${3:-$((nb < 3 ? nb : 3))}
    min_isr=${4:-$((rf >= 3 ? 2 : 1))}
    err=$(mktemp)
    for ((t = 0; t < 30; t++)); do
        if kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
            --create --if-not-exists --topic "$name" --partitions "$parts" \
            --replication-factor "$rf" --config "min.insync.replicas=$min_isr" \
            >/dev/null 2>"$err"; then
            break
        fi
        sleep 1 # brokers may still be registering with the controller
    done
    if ((t >= 30)); then
        cat "$err" >&2
        rm -f "$err"
        stack__fail "could not create topic $name"
        return 1
    fi
    rm -f "$err"
    for ((t = 0; t < STACK_TIMEOUT; t++)); do
        out=$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
            --describe --topic "$name" 2>/dev/null) || true
        if [[ $(grep -c 'Partition:.*Leader: [0-9]' <<<"$out") -eq $parts ]]; then
            stack_log "topic $name ready: $parts partitions, RF $rf, min.insync.replicas $min_isr"
            return 0
        fi
        sleep 1
    done
    echo "$out" >&2
    stack__fail "topic $name has partitions without a leader"
}

# start_kafka DIR PORT [NBROKERS]: a KRaft cluster of NBROKERS (default 1)
# combined broker+controller nodes on 127.0.0.1, using ports PORT ..
# PORT+2*NBROKERS-1 (broker I: PORT+2(I-1), its controller the next port).
# Storage is formatted once (DIR/kafka). With 3+ brokers the defaults are
# RF 3 and min.insync.replicas 2 (also for internal topics). Then creates
# $KAFKA_TOPIC (chat.events) with $KAFKA_PARTITIONS (12) partitions unless
# KAFKA_PARTITIONS=0. Exports KAFKA_BROKERS.
start_kafka() {
    local dir=$1 base=$2 n=${3:-1} kdir=$1/kafka i voters="" brokers="" cid rf min_isr
    kafka_fetch || return 1
    command -v java >/dev/null || {
        stack__fail "java not found (tools/install-deps.sh installs it)"
        return 1
    }
    mkdir -p "$kdir" "$dir/logs"
    if [[ -s "$kdir/nbrokers" && $(cat "$kdir/nbrokers") != "$n" ]]; then
        stack__fail "$kdir holds a $(cat "$kdir/nbrokers")-broker cluster, not $n (remove it first)"
        return 1
    fi
    echo "$n" >"$kdir/nbrokers"
    rf=$((n < 3 ? n : 3))
    min_isr=$((rf >= 3 ? 2 : 1))
    for ((i = 1; i <= n; i++)); do
        voters+="${voters:+,}$i@127.0.0.1:$(($(kafka__port "$base" "$i") + 1))"
        brokers+="${brokers:+,}127.0.0.1:$(kafka__port "$base" "$i")"
    done
    [[ -s "$kdir/cluster.id" ]] || {
        # A Kafka Uuid: 16 random bytes, base64url without padding, not
        # starting with '-' (it would read as a command-line flag).
        cid=-
        while [[ $cid == -* ]]; do
            cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
        done
        echo "$cid" >"$kdir/cluster.id"
    }
    cid=$(cat "$kdir/cluster.id")
    cat >"$kdir/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
EOF
    for ((i = 1; i <= n; i++)); do
        local bdir=$kdir/broker-$i port
        port=$(kafka__port "$base" "$i")
        mkdir -p "$bdir"
        echo "$port" >"$bdir/port"
        cat >"$bdir/server.properties" <<EOF
# written by tools/stack-lib.sh
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$bdir/data
num.partitions=${KAFKA_PARTITIONS:-12}
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=10
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
${KAFKA_EXTRA_CONFIG:-}
EOF
        if [[ ! -s "$bdir/data/meta.properties" ]]; then
            kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$bdir/server.properties" \
                --ignore-formatted >"$dir/logs/kafka-format-$i.log" 2>&1 || {
                stack__tail "$dir/logs/kafka-format-$i.log"
                stack__fail "formatting Kafka storage for broker $i failed"
                return 1
            }
        fi
    done
    # Start all nodes first (a multi-node quorum needs a majority to elect a
    # controller), then wait for each.
    for ((i = 1; i <= n; i++)); do
        if ! pid_alive "$dir" "kafka-$i"; then
            touch "$dir/logs/kafka-$i.log"
            echo $(($(wc -l <"$dir/logs/kafka-$i.log") + 1)) >"$kdir/broker-$i/logline"
            kafka__spawn_broker "$dir" "$i" || return 1
        fi
    done
    for ((i = 1; i <= n; i++)); do
        kafka__wait_broker "$dir" "$i" || return 1
    done
    export KAFKA_BROKERS=$brokers
    stack_log "kafka ready: $n broker(s) at $KAFKA_BROKERS"
    if [[ ${KAFKA_PARTITIONS:-12} != 0 ]]; then
        kafka_create_topic "${KAFKA_TOPIC:-chat.events}" "${KAFKA_PARTITIONS:-12}" || return 1
    fi
}

# stop_kafka DIR: controlled shutdown of all brokers at once (one at a time
# would leave the last ones without a controller quorum).
stop_kafka() {
    local dir=$1 f name
    for f in "$dir"/pids/kafka-*.pid; do
        [[ -e "$f" ]] || continue
        kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$dir"/pids/kafka-*.pid; do
        [[ -e "$f" ]] || continue
        name=$(basename "$f" .pid)
        stop_pid "$dir" "$name" TERM 60
    done
}

# --- services -----------------------------------------------------------------

# stack_jwt_secret DIR: the HS256 secret services verify bearer tokens with:
# $JWT_SECRET if set, else a random one made once in DIR/jwt-secret. Exports
# JWT_SECRET (so a test can mint tokens with it) and prints it.
stack_jwt_secret() {
    local dir=$1
    if [[ -z ${JWT_SECRET:-} ]]; then
        if [[ ! -s "$dir/jwt-secret" ]]; then
            mkdir -p "$dir"
            (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n' >"$dir/jwt-secret")
        fi
        JWT_SECRET=$(cat "$dir/jwt-secret")
    fi
    export JWT_SECRET
    echo "$JWT_SECRET"
}

# service_binary NAME: path of a service binary (build/NAME/NAME).
service_binary() {
    local b=${CHAT_BUILD_DIR:-${BUILD_DIR:-$CHAT_SOURCE_DIR/build}}
    echo "$b/$1/$1"
}

# start_service DIR NAME PORT METRICS_PORT [ARGS...]: start service NAME
# (svc-chats, svc-messaging, ...) with `--port PORT --metrics-port METRICS_PORT
# ARGS...` and the current environment plus PORT, METRICS_PORT and HOST
# (listen address: $SERVICE_HOST, default 127.0.0.1), JWT_SECRET
# (stack_jwt_secret), and PG_URL, REDIS_URL,
# KAFKA_BROKERS as exported by the start_* functions. Its pid name
# and log are NAME-PORT (so several instances can run), its log
# DIR/logs/NAME-PORT.log. Waits for grpc.health.v1 SERVING (wait_grpc_health).
# Returns 2 without starting anything when the binary is not built.
start_service() {
    local dir=$1 name=$2 port=$3 mport=$4 bin
    shift 4
    bin=$(service_binary "$name")
    if [[ ! -x "$bin" ]]; then
        stack_log "$name: $bin is not built; skipped"
        return 2
    fi
    stack_jwt_secret "$dir" >/dev/null
    if pid_alive "$dir" "$name-$port"; then
        stack_log "$name already running on port $port"
    else
        HOST=${SERVICE_HOST:-127.0.0.1} PORT=$port METRICS_PORT=$mport stack__spawn "$dir" "$name-$port" \
            "$dir/logs/$name-$port.log" "$bin" --port "$port" --metrics-port "$mport" "$@" ||
            return 1
    fi
    wait_grpc_health "127.0.0.1:$port" "${SERVICE_TIMEOUT:-$STACK_TIMEOUT}" "" "$dir" "$name-$port"
}

# stop_service DIR NAME PORT [SIGNAL]: SIGTERM (graceful drain) by default.
stop_service() {
    stop_pid "$1" "$2-$3" "${4:-TERM}" 30
}

# grpc_health ADDR [SERVICE]: print the grpc.health.v1 status of ADDR
# (SERVING, NOT_SERVING, ...) or fail. Uses grpcurl with Debian's
# health.proto (so it does not depend on reflection); without grpcurl, nghttp
# with a hand-framed request.
grpc_health() {
    local addr=$1 svc=${2:-} out
    if command -v grpcurl >/dev/null 2>&1 && [[ -f /usr/share/grpc-proto/grpc/health/v1/health.proto ]]; then
        out=$(grpcurl -plaintext -max-time 3 -import-path /usr/share/grpc-proto \
            -proto grpc/health/v1/health.proto -d "{\"service\":\"$svc\"}" \
            "$addr" grpc.health.v1.Health/Check 2>&1) || return 1
        sed -n 's/.*"status": *"\([A-Z_]*\)".*/\1/p' <<<"$out" | head -n 1
        return 0
    fi
    # HealthCheckRequest{service}: field 1 (tag 0x0a), length, bytes; framed
    # with the 5-byte gRPC prefix. Response status is field 1 (tag 0x08).
    local req
    req=$(mktemp)
    if [[ -n "$svc" ]]; then
        printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $((${#svc} + 2)))\\x0a\\x$(printf %02x ${#svc})%s" \
            "$svc" >"$req"
    else
        printf '\x00\x00\x00\x00\x00' >"$req"
    fi
    out=$(timeout 5 nghttp -t 3 -d "$req" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://$addr/grpc.health.v1.Health/Check" 2>/dev/null | od -An -tx1 | tr -d ' \n')
    rm -f "$req"
    case "$out" in
    00000000020801) echo SERVING ;;
    00000000020802) echo NOT_SERVING ;;
    00000000020803) echo SERVICE_UNKNOWN ;;
    *) return 1 ;; # no answer, or an empty message (an error status in trailers)
    esac
}

# wait_grpc_health ADDR [TIMEOUT] [SERVICE] [DIR NAME]: wait until ADDR reports
# SERVING. With DIR and NAME, fail early (showing its log) if that process
# exits.
wait_grpc_health() {
    local addr=$1 timeout=${2:-$STACK_TIMEOUT} svc=${3:-} dir=${4:-} name=${5:-} t st=""
    for ((t = 0; t < timeout * 4; t++)); do
        st=$(grpc_health "$addr" "$svc" 2>/dev/null) || st=""
        [[ "$st" == SERVING ]] && return 0
        if [[ -n "$name" ]] && ! pid_alive "$dir" "$name"; then
            stack__tail "$dir/logs/$name.log"
            stack__fail "$name exited before serving on $addr"
            return 1
        fi
        sleep 0.25
    done
    [[ -n "$name" ]] && stack__tail "$dir/logs/$name.log"
    stack__fail "$addr not SERVING after ${timeout}s (last: ${st:-no answer})"
}

# --- all ------------------------------------------------------------------------

# stop_all DIR: stop everything started in DIR: services (SIGTERM), then Kafka,
# Redis, PostgreSQL. Data stays in DIR.
stop_all() {
    local dir=$1 f name
    [[ -d "$dir" ]] || return 0
    for f in "$dir"/pids/*.pid; do
        [[ -e "$f" ]] || continue
        name=$(basename "$f" .pid)
        case "$name" in
        kafka-* | redis) ;;
        *) stop_pid "$dir" "$name" TERM 30 ;;
        esac
    done
    stop_kafka "$dir"
    stop_redis "$dir"
    stop_pg "$dir"
    return 0
}

# stack_cleanup DIR: stop_all, then remove DIR (and PostgreSQL's folder when
# it had to live outside DIR). For tests' EXIT traps.
stack_cleanup() {
    local dir=$1
    [[ -d "$dir" ]] || return 0
    stop_all "$dir"
    [[ -s "$dir/pg.home" ]] && rm -rf "$(cat "$dir/pg.home")"
    rm -rf "$dir"
}

# stack_status DIR: one line per process started in DIR.
stack_status() {
    local dir=$1 f name pid st any=0
    for f in "$dir"/pids/*.pid; do
        [[ -e "$f" ]] || continue
        any=1
        name=$(basename "$f" .pid)
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then st=running; else st="dead (stale pid file)"; fi
        printf '  %-22s pid %-8s %s\n' "$name" "$pid" "$st"
    done
    if [[ -s "$dir/pg.data" ]]; then
        any=1
        local bindir data
        bindir=$(pg_bindir) && data=$(cat "$dir/pg.data")
        if as_pg_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
            printf '  %-22s pid %-8s %s\n' postgres "$(head -n 1 "$data/postmaster.pid" 2>/dev/null)" running
        else
            printf '  %-22s %-12s %s\n' postgres "" stopped
        fi
    fi
    ((any)) || echo "  nothing started in $dir"
}
