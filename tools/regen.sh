#!/usr/bin/env bash
# regen.sh: regenerates all of gen/ from scratch.
#
#   tools/regen.sh [--plugin PATH] [--out DIR]
#
# Runs protoc once with protoc-c (--c_out) and our protoc-gen-rpc-c
# (--rpc-c_out) over the standard protos the services serve (health,
# reflection v1 and v1alpha, grpc.testing), protobuf's descriptor.proto, our
# plugin.proto, every proto/**/*.proto of the repo, and everything those
# import (the transitive closure, e.g. google/protobuf/timestamp.proto), then
# replaces the contents of gen/ (or DIR) with the result.
#
# --plugin PATH  use this protoc-gen-rpc-c (the CMake targets pass the built
#                one); without it the plugin is compiled into a temp dir from
#                tools/protoc-gen-rpc-c with ${CC:-cc}, which needs nothing
#                from gen/ (so a missing or broken gen/ can be rebuilt).
# --out DIR      write there instead of gen/ (check-gen.sh uses a temp dir).
#
# Needs: protoc, protoc-gen-c (Debian protobuf-c-compiler), libprotobuf-c-dev,
# /usr/share/grpc-proto (Debian grpc-proto), pkg-config.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PLUGIN_SRC=$ROOT/tools/protoc-gen-rpc-c
GRPC_PROTO=${GRPC_PROTO:-/usr/share/grpc-proto}
PROTOBUF_INCLUDE=${PROTOBUF_INCLUDE:-/usr/include}
OUT=$ROOT/gen
PLUGIN=

die() {
    echo "regen.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --plugin) PLUGIN=${2:?--plugin needs a path}; shift 2 ;;
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done

command -v protoc >/dev/null || die "protoc not found (apt-get install protobuf-compiler)"
PROTOC_GEN_C=$(command -v protoc-gen-c) || die "protoc-gen-c not found (apt-get install protobuf-c-compiler)"
[ -f "$GRPC_PROTO/grpc/health/v1/health.proto" ] || die "$GRPC_PROTO: no grpc protos (apt-get install grpc-proto)"
[ -f "$PROTOBUF_INCLUDE/google/protobuf/descriptor.proto" ] || die "$PROTOBUF_INCLUDE: no descriptor.proto (apt-get install libprotobuf-dev)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/regen.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Debian ships no plugin.proto; ours is staged under its canonical name so the output is
# gen/google/protobuf/compiler/plugin.pb-c.{c,h}.
mkdir -p "$TMP/stage/google/protobuf/compiler"
cp "$PLUGIN_SRC/plugin.proto" "$TMP/stage/google/protobuf/compiler/plugin.proto"

INCLUDES=(-I "$TMP/stage")
[ -d "$ROOT/proto" ] && INCLUDES+=(-I "$ROOT/proto")
INCLUDES+=(-I "$GRPC_PROTO" -I "$PROTOBUF_INCLUDE")

if [ -z "$PLUGIN" ]; then
    # Bootstrap: protoc-c output for the two protos the plugin reads, then the plugin itself.
    mkdir -p "$TMP/boot"
    protoc "${INCLUDES[@]}" --plugin=protoc-gen-c="$PROTOC_GEN_C" --c_out="$TMP/boot" \
        google/protobuf/descriptor.proto google/protobuf/compiler/plugin.proto
    # shellcheck disable=SC2046
    ${CC:-cc} -std=c11 -O1 -D_GNU_SOURCE -I "$TMP/boot" -I "$PLUGIN_SRC" -I "$ROOT/lib" \
        -o "$TMP/protoc-gen-rpc-c" "$PLUGIN_SRC"/*.c "$ROOT/lib/mem.c" \
        "$TMP/boot/google/protobuf/descriptor.pb-c.c" \
        "$TMP/boot/google/protobuf/compiler/plugin.pb-c.c" \
        $(pkg-config --cflags --libs libprotobuf-c)
    PLUGIN=$TMP/protoc-gen-rpc-c
fi
[ -x "$PLUGIN" ] || die "$PLUGIN: not an executable plugin"
PLUGIN=$(cd "$(dirname "$PLUGIN")" && pwd)/$(basename "$PLUGIN")

# The roots, by name relative to their include dir.
ROOTS=(
    google/protobuf/descriptor.proto
    google/protobuf/compiler/plugin.proto
    grpc/health/v1/health.proto
    grpc/reflection/v1/reflection.proto
    grpc/reflection/v1alpha/reflection.proto
    grpc/testing/empty.proto
    grpc/testing/messages.proto
    grpc/testing/test.proto
)
if [ -d "$ROOT/proto" ]; then
    while IFS= read -r f; do
        ROOTS+=("$f")
    done < <(cd "$ROOT/proto" && find . -name '*.proto' -type f | sed 's|^\./||' | LC_ALL=C sort)
fi

# protoc runs in an empty directory so that a name like chat/v1/x.proto is only ever looked up
# on the include path.
mkdir -p "$TMP/cwd" "$TMP/gen"
cd "$TMP/cwd"

# The transitive import closure: protoc lists every file it loaded in a descriptor set; its
# text form has one top-level `  name: "..."` per file.
protoc "${INCLUDES[@]}" --include_imports --descriptor_set_out="$TMP/closure.pb" "${ROOTS[@]}"
FILES=()
while IFS= read -r f; do
    FILES+=("$f")
done < <(protoc -I "$PROTOBUF_INCLUDE" --decode=google.protobuf.FileDescriptorSet \
    google/protobuf/descriptor.proto <"$TMP/closure.pb" |
    sed -n 's/^  name: "\(.*\)"$/\1/p' | LC_ALL=C sort -u)
[ ${#FILES[@]} -ge ${#ROOTS[@]} ] || die "import closure is smaller than the roots"

protoc "${INCLUDES[@]}" \
    --plugin=protoc-gen-c="$PROTOC_GEN_C" --c_out="$TMP/gen" \
    --plugin=protoc-gen-rpc-c="$PLUGIN" --rpc-c_out="$TMP/gen" \
    "${FILES[@]}"

# gen/ is never formatted by hand or by CI.
printf 'DisableFormat: true\nSortIncludes: false\n' >"$TMP/gen/.clang-format"

mkdir -p "$OUT"
find "$OUT" -mindepth 1 -delete
cp -R "$TMP/gen/." "$OUT/"
echo "regen.sh: wrote ${#FILES[@]} protos into $OUT" >&2
