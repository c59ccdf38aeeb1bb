#!/usr/bin/env bash
# Regenerates mesh-ffi/include/mesh.h with the pinned cbindgen, installing it if it is
# missing or of another version.
#   bash mesh-ffi/scripts/gen-header.sh           # write the header
#   bash mesh-ffi/scripts/gen-header.sh --check   # fail if the checked-in header differs
set -euo pipefail
CBINDGEN_VERSION=0.29.0
cd "$(dirname "$0")/.."

if ! command -v cbindgen >/dev/null || [ "$(cbindgen --version)" != "cbindgen $CBINDGEN_VERSION" ]; then
    echo "installing cbindgen $CBINDGEN_VERSION" >&2
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
fi

out=include/mesh.h
if [ "${1:-}" = "--check" ]; then
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    cbindgen --config cbindgen.toml --crate mesh-ffi --quiet --output "$tmp" .
    if ! diff -u "$out" "$tmp"; then
        echo "error: $out is stale; run mesh-ffi/scripts/gen-header.sh and commit it" >&2
        exit 1
    fi
    echo "$out is up to date"
else
    cbindgen --config cbindgen.toml --crate mesh-ffi --quiet --output "$out" .
    echo "wrote $out"
fi
