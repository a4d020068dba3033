#!/usr/bin/env bash
# The full test suite: installs what is missing, builds, runs every CTest test
# (unit, integration, interop, ...) and ends with CTest's summary.
#
#   tools/test.sh                 # everything, in ./build
#   tools/test.sh -L unit         # extra arguments go to ctest
#   tools/test.sh -R redis -V
#
# Environment:
#   CHAT_BUILD_DIR [<repo>/build]   build folder (configured with Ninja if new)
#   CMAKE_ARGS                      extra cmake configure arguments, e.g.
#                                   "-DCHAT_WERROR=ON" or "-DCHAT_SANITIZE=ON"
#   SKIP_DEPS=1 SKIP_TOOLS=1        skip tools/install-deps.sh / install-tools.sh
#   CTEST_PARALLEL_LEVEL            ctest -j (default 1: integration tests start
#                                   real servers and share 2 cores)
# Tests see on PATH the pinned tools (grpcurl, ghz, buf, grpc-go interop,
# python3 with grpcio) and get BUILD_DIR/SOURCE_DIR from CTest; integration
# tests start servers with tools/stack-lib.sh.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CHAT_BUILD_DIR:-$SRC/build}

[[ ${SKIP_DEPS:-0} == 1 ]] || "$SRC/tools/install-deps.sh"
[[ ${SKIP_TOOLS:-0} == 1 ]] || "$SRC/tools/install-tools.sh"
eval "$("$SRC/tools/install-tools.sh" --env)"

# Kafka's jars, fetched once, so no test pays for (or races on) the download.
# shellcheck source=tools/stack-lib.sh
source "$SRC/tools/stack-lib.sh"
kafka_fetch

gen=()
[[ -f "$BUILD/CMakeCache.txt" ]] || gen=(-G Ninja)
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$BUILD" "${gen[@]}" ${CMAKE_ARGS:-}
cmake --build "$BUILD"

# --repeat until-pass:2: a failed test runs once more and both attempts are printed. Known
# flake: unit.kafka_test's consumer-group cases against librdkafka's in-process mock cluster
# sometimes wait 30 s for an assignment that never comes (about 1 run in 14 locally).
ctest --test-dir "$BUILD" --output-on-failure --repeat until-pass:2 "$@"
