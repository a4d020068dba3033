#!/usr/bin/env bash
# Installs the third-party gRPC tools the tests and the README use, pinned,
# into a per-user cache (default ~/.cache/chat-backend/tools), never system-wide:
#
#   bin/grpcurl                 go install github.com/fullstorydev/grpcurl/cmd/grpcurl
#   bin/ghz                     go install github.com/bojand/ghz/cmd/ghz
#   bin/grpc-interop-client     go install google.golang.org/grpc/interop/client
#   bin/grpc-interop-server     go install google.golang.org/grpc/interop/server
#   bin/buf                     npm @bufbuild/buf
#   venv/                       pip grpcio, grpcio-tools, grpcio-health-checking, h2,
#                               grpcio-reflection (venv/bin/python3)
#
# Idempotent: a tool whose pinned version is already installed is skipped.
#
#   tools/install-tools.sh          install what is missing, verify, write VERSIONS
#   tools/install-tools.sh --env    print `export ...` lines that put the tools
#                                   first on PATH:  eval "$(tools/install-tools.sh --env)"
#   tools/install-tools.sh --versions   print the pins
#
# Env: CHAT_CACHE (default ~/.cache/chat-backend), CHAT_TOOLS_DIR (default
# $CHAT_CACHE/tools). Go, npm and pip keep their own download caches in $HOME.
set -euo pipefail

GRPCURL_VERSION=v1.9.3
GHZ_VERSION=v0.120.0
GRPC_GO_VERSION=v1.85.0 # grpc-go interop client and server
BUF_VERSION=1.75.0
GRPCIO_VERSION=1.85.1 # grpcio, grpcio-tools, grpcio-health-checking, grpcio-reflection
PROTOBUF_PY_VERSION=7.36.2
H2_VERSION=4.4.1 # h2 + hpack: raw HTTP/2 frames in tests/integration/bad_input_test.py

CHAT_CACHE=${CHAT_CACHE:-$HOME/.cache/chat-backend}
TOOLS_DIR=${CHAT_TOOLS_DIR:-$CHAT_CACHE/tools}
BIN=$TOOLS_DIR/bin
STAMPS=$TOOLS_DIR/stamps

print_env() {
    printf 'export CHAT_TOOLS_DIR=%q\n' "$TOOLS_DIR"
    printf 'export PATH=%q:%q:"$PATH"\n' "$BIN" "$TOOLS_DIR/venv/bin"
}

case "${1:-}" in
--env)
    print_env
    exit 0
    ;;
--versions)
    cat <<EOF
grpcurl $GRPCURL_VERSION
ghz $GHZ_VERSION
grpc-go-interop $GRPC_GO_VERSION
buf $BUF_VERSION
grpcio $GRPCIO_VERSION
protobuf-python $PROTOBUF_PY_VERSION
h2 $H2_VERSION
EOF
    exit 0
    ;;
"") ;;
*)
    echo "usage: $0 [--env|--versions]" >&2
    exit 2
    ;;
esac

mkdir -p "$BIN" "$STAMPS"
log() { echo "install-tools: $*"; }
die() {
    echo "install-tools: $*" >&2
    exit 1
}

stamped() { [[ -f "$STAMPS/$1" ]]; }
stamp() { touch "$STAMPS/$1"; }

# --- Go tools -------------------------------------------------------------
command -v go >/dev/null 2>&1 || die "go not found (tools/install-deps.sh installs it)"
# Never let go fetch a toolchain of its own: only the module proxy is reachable.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# go_tool NAME PACKAGE VERSION [OUTNAME]: go install PACKAGE@VERSION into bin/
# as OUTNAME (default: the package's last path element).
go_tool() {
    local name=$1 pkg=$2 ver=$3 out=${4:-${2##*/}}
    if stamped "$name@$ver" && [[ -x "$BIN/$out" ]]; then
        return 0
    fi
    log "go install $pkg@$ver"
    local tmp
    tmp=$(mktemp -d "$TOOLS_DIR/.gobin.XXXXXX")
    GOBIN="$tmp" go install "$pkg@$ver"
    mv -f "$tmp/${pkg##*/}" "$BIN/$out"
    rmdir "$tmp"
    stamp "$name@$ver"
}

go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
go_tool grpc-interop-client google.golang.org/grpc/interop/client "$GRPC_GO_VERSION" \
    grpc-interop-client
go_tool grpc-interop-server google.golang.org/grpc/interop/server "$GRPC_GO_VERSION" \
    grpc-interop-server

# --- buf (npm) ------------------------------------------------------------
command -v npm >/dev/null 2>&1 || die "npm not found (tools/install-deps.sh installs it)"
if ! stamped "buf@$BUF_VERSION" || [[ ! -x "$BIN/buf" ]]; then
    log "npm install @bufbuild/buf@$BUF_VERSION"
    mkdir -p "$TOOLS_DIR/npm"
    npm install --prefix "$TOOLS_DIR/npm" --no-audit --no-fund --loglevel=error \
        "@bufbuild/buf@$BUF_VERSION"
    ln -sf "$TOOLS_DIR/npm/node_modules/.bin/buf" "$BIN/buf"
    stamp "buf@$BUF_VERSION"
fi

# --- Python grpcio (venv) -------------------------------------------------
if ! stamped "grpcio@$GRPCIO_VERSION" || [[ ! -x "$TOOLS_DIR/venv/bin/python3" ]]; then
    [[ -x "$TOOLS_DIR/venv/bin/python3" ]] || {
        log "python3 -m venv $TOOLS_DIR/venv"
        python3 -m venv "$TOOLS_DIR/venv"
    }
    log "pip install grpcio*==$GRPCIO_VERSION"
    "$TOOLS_DIR/venv/bin/python3" -m pip install -q --disable-pip-version-check \
        "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION" \
        "grpcio-health-checking==$GRPCIO_VERSION" "grpcio-reflection==$GRPCIO_VERSION" \
        "protobuf==$PROTOBUF_PY_VERSION"
    stamp "grpcio@$GRPCIO_VERSION"
fi
if ! stamped "h2@$H2_VERSION"; then
    log "pip install h2==$H2_VERSION"
    "$TOOLS_DIR/venv/bin/python3" -m pip install -q --disable-pip-version-check "h2==$H2_VERSION"
    stamp "h2@$H2_VERSION"
fi

# --- verify: every tool runs and is the pinned version ---------------------
check_go_mod() { # BINARY MODULE VERSION
    local got
    got=$(go version -m "$BIN/$1" | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }')
    [[ "$got" == "$3" ]] || die "$1: built from $2 $got, expected $3"
    echo "$1 $2@$got"
}
{
    check_go_mod grpcurl github.com/fullstorydev/grpcurl "$GRPCURL_VERSION"
    check_go_mod ghz github.com/bojand/ghz "$GHZ_VERSION"
    check_go_mod grpc-interop-client google.golang.org/grpc "$GRPC_GO_VERSION"
    check_go_mod grpc-interop-server google.golang.org/grpc "$GRPC_GO_VERSION"
    "$BIN/grpcurl" -help >/dev/null 2>&1 || die "grpcurl does not run"
    "$BIN/ghz" --version >/dev/null 2>&1 || die "ghz does not run"
    got=$("$BIN/buf" --version) || die "buf does not run"
    [[ "$got" == "$BUF_VERSION" ]] || die "buf is $got, expected $BUF_VERSION"
    echo "buf $got"
    "$TOOLS_DIR/venv/bin/python3" - <<'EOF' || die "python grpc modules do not import"
import grpc, grpc_tools, google.protobuf, h2, hpack
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
print("python-grpcio", grpc.__version__, "protobuf", google.protobuf.__version__)
EOF
    echo "go $(go env GOVERSION)"
} >"$TOOLS_DIR/VERSIONS.tmp"
mv -f "$TOOLS_DIR/VERSIONS.tmp" "$TOOLS_DIR/VERSIONS"
log "ready in $TOOLS_DIR ($(tr '\n' ';' <"$TOOLS_DIR/VERSIONS" | sed 's/;$//; s/;/, /g'))"
