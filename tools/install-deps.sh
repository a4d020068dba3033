#!/usr/bin/env bash
# Installs the Debian packages this project needs to build, test and run its
# local stack, on Debian bookworm. Idempotent: when every package is already
# installed it does nothing (no apt-get update), so repeated runs are fast.
#
#   tools/install-deps.sh            # install what is missing
#   tools/install-deps.sh --check    # only report what is missing (exit 1 if any)
#   tools/install-deps.sh --list     # print the package list
#
# Third-party test tools (grpcurl, ghz, grpc-go interop, buf, Python grpcio)
# are installed by tools/install-tools.sh into a per-user cache, not here.
set -euo pipefail

PACKAGES=(
    # toolchain
    build-essential g++ cmake ninja-build pkg-config git ca-certificates
    clang-14 clang-format-14 libclang-rt-14-dev
    # libraries the C code links
    libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    libnghttp2-dev libevent-dev librdkafka-dev libhiredis-dev libpq-dev
    libjwt-dev zlib1g-dev libssl-dev libcmocka-dev
    # standard protos (health, reflection, grpc.testing) and the C++ reference
    # server for benchmarks
    grpc-proto libgrpc++-dev protobuf-compiler-grpc
    # wire tools: nghttp, h2load
    nghttp2-client
    # backing servers for the stack and integration tests
    redis-server postgresql
    # Kafka runs from jars fetched by Maven (tools/kafka/pom.xml)
    openjdk-17-jre-headless maven
    # test drivers and helpers
    python3 python3-pip python3-venv curl jq iproute2 procps util-linux
    # librdkafka-based Kafka CLI (produce, consume, metadata) for debugging and tests
    kcat
)

# Commands that may come from outside Debian on a given machine (the image may
# ship its own Go or Node.js); the Debian package is installed only when the
# command is missing.
declare -A IF_COMMAND_MISSING=(
    [go]="golang-go"
    [node]="nodejs"
    [npm]="npm"
)

mode=install
case "${1:-}" in
--check) mode=check ;;
--list)
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
    ;;
"") ;;
*)
    echo "usage: $0 [--check|--list]" >&2
    exit 2
    ;;
esac

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
for cmd in "${!IF_COMMAND_MISSING[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${IF_COMMAND_MISSING[$cmd]}")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "install-deps: missing: ${missing[*]}"
[[ $mode == check ]] && exit 1

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-deps: not root and no sudo; install the packages above by hand" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${#missing[@]} package(s)"
