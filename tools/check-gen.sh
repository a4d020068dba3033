#!/usr/bin/env bash
# check-gen.sh: fails when gen/ is not exactly what tools/regen.sh produces
# from the current protos and the current protoc-gen-rpc-c.
#
#   tools/check-gen.sh [--plugin PATH]
#
# Without --plugin the plugin is built from source by regen.sh. CI runs this.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-gen.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

"$ROOT/tools/regen.sh" --out "$TMP/gen" "$@"

if ! diff -r "$ROOT/gen" "$TMP/gen" >"$TMP/diff"; then
    echo "check-gen.sh: gen/ is STALE: it differs from what tools/regen.sh generates." >&2
    grep -E '^(Only in|diff -r)' "$TMP/diff" | sed 's|'"$TMP"'/gen|<fresh>|; s/^/  /' >&2 || true
    echo "check-gen.sh: run tools/regen.sh (or 'ninja regen') and commit gen/." >&2
    exit 1
fi
echo "check-gen.sh: gen/ is up to date." >&2
