#!/usr/bin/env bash
# The kvs_get benchmark: a 100-byte get through the C API (benches/get.c, linked with the
# release libkvs.so and libkvs.a) and through the Rust API (benches/get.rs), same store shape
# and loop, three rounds each. Release builds; not part of the tests. usage: bash kvs-ffi/benches/run.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
work="$(mktemp -d "${TMPDIR:-/tmp}/kvs-ffi-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

bash kvs-ffi/install.sh "$work/prefix" >/dev/null
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # pkg-config output is a list of flags
cc -O2 kvs-ffi/benches/get.c -o "$work/get_shared" $(pkg-config --cflags --libs kvs) \
    -Wl,-rpath,"$(pkg-config --variable=libdir kvs)"
# shellcheck disable=SC2046
cc -O2 kvs-ffi/benches/get.c -o "$work/get_static" $(pkg-config --cflags --libs kvs-static)
cargo bench -p kvs-ffi --bench get --no-run

# Alternate the three a few times: on a busy machine the best figure of each is the fairest.
for round in 1 2 3; do
    echo "-- round $round"
    cargo bench -q -p kvs-ffi --bench get 2>/dev/null
    echo -n "libkvs.so: " && "$work/get_shared" "$work/store-shared-$round"
    echo -n "libkvs.a:  " && "$work/get_static" "$work/store-static-$round"
done
