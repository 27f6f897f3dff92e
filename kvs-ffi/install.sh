#!/usr/bin/env bash
# Builds libkvs and installs it for C programs:
#
#   PREFIX/include/kvs.h
#   PREFIX/lib/libkvs.so.X.Y.Z, libkvs.so.X -> it (the SONAME), libkvs.so -> libkvs.so.X
#   PREFIX/lib/libkvs.a
#   PREFIX/lib/pkgconfig/kvs.pc          cc app.c $(pkg-config --cflags --libs kvs)
#   PREFIX/lib/pkgconfig/kvs-static.pc   cc app.c $(pkg-config --cflags --libs kvs-static)
#
# usage: bash kvs-ffi/install.sh [--debug] [PREFIX]     (PREFIX defaults to /usr/local)
#   --debug   install the debug build (faster to build; what the tests use; keeps debug info,
#             which a release install strips)
#   DESTDIR   if set, files go under $DESTDIR$PREFIX (for packaging); kvs.pc still says PREFIX
#
# Cargo builds the static library libkvs_ffi.a (the name `kvs` belongs to the core Rust
# crate); this script installs it under the name C users link with, -lkvs, and links the
# shared libkvs.so from it with the C compiler ($CC, default cc): with the SONAME
# libkvs.so.X and the symbol versions of kvs-ffi/libkvs.map, which a library that rustc
# links itself cannot get. See kvs-ffi/README.md.
set -euo pipefail

profile=release
if [[ "${1:-}" == "--debug" ]]; then
    profile=debug
    shift
fi
prefix="${1:-/usr/local}"
if [[ $# -gt 1 || "$prefix" == -* ]]; then
    echo "usage: bash kvs-ffi/install.sh [--debug] [PREFIX]" >&2
    exit 2
fi
if [[ "$prefix" != /* ]]; then
    echo "install.sh: PREFIX must be an absolute path, not '$prefix'" >&2
    exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

cargo_flags=(-p kvs-ffi --message-format=json-render-diagnostics)
[[ "$profile" == release ]] && cargo_flags+=(--release)
build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT
cargo build "${cargo_flags[@]}" >"$build_log"
# The artifacts' paths, from cargo's own report (this respects CARGO_TARGET_DIR).
static_lib="$(grep -o '"[^"]*/libkvs_ffi\.a"' "$build_log" | tail -n 1 | tr -d '"')"
if [[ ! -f "$static_lib" ]]; then
    echo "install.sh: cargo did not report libkvs_ffi.a" >&2
    exit 1
fi

version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
major="${version%%.*}"
dest="${DESTDIR:-}$prefix"
libdir="$dest/lib"
mkdir -p "$dest/include" "$libdir/pkgconfig"

# What libkvs needs besides itself: the Rust standard library's system dependencies, as
# `rustc --print native-static-libs` lists them for Linux.
native_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

# libkvs.so, linked from the static library rather than by rustc: rustc always hands the
# linker a version script of its own that lists every exported function without a version,
# and the linker keeps the first script's entry for a name, so a second script passed from
# build.rs would define KVS_0.2 but version nothing. Here libkvs.map is the only script:
#   --whole-archive      every object of libkvs_ffi.a, so that each exported function is there;
#   --gc-sections        then drops whatever the exported functions cannot reach;
#   --version-script     exports exactly the functions of kvs.h, versioned; the rest is local;
#   -z defs              fails the link on any symbol left undefined;
#   -z relro -z now, -z noexecstack: the hardening rustc applies to its own shared libraries.
shared_lib="$(mktemp "${TMPDIR:-/tmp}/libkvs.so.XXXXXX")"
trap 'rm -f "$build_log" "$shared_lib"' EXIT
# shellcheck disable=SC2086 # native_libs is a list of flags
"${CC:-cc}" -shared -o "$shared_lib" \
    -Wl,-soname,"libkvs.so.$major" \
    -Wl,--version-script="$repo/kvs-ffi/libkvs.map" \
    -Wl,--whole-archive "$static_lib" -Wl,--no-whole-archive \
    -Wl,--gc-sections -Wl,-z,defs -Wl,-z,relro,-z,now -Wl,-z,noexecstack \
    -Wl,--as-needed $native_libs

install -m 0644 include/kvs.h "$dest/include/kvs.h"
install -m 0755 "$shared_lib" "$libdir/libkvs.so.$version"
ln -sfn "libkvs.so.$version" "$libdir/libkvs.so.$major"
ln -sfn "libkvs.so.$major" "$libdir/libkvs.so"
install -m 0644 "$static_lib" "$libdir/libkvs.a"
if [[ "$profile" == release ]]; then
    # The workspace's release profile keeps line tables (debug = 1) for profiling and
    # backtraces; an installed library does not need them (12 MB of libkvs.so otherwise).
    # Symbol names stay, so backtraces still name functions.
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug "$libdir/libkvs.so.$version" "$libdir/libkvs.a"
    else
        echo "install.sh: no 'strip' on PATH; installing libkvs with its debug info" >&2
    fi
fi

pc_head="prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: kvs
Version: $version
Cflags: -I\${includedir}"
cat >"$libdir/pkgconfig/kvs.pc" <<PC
$pc_head
Description: kvs embeddable key/value store (shared libkvs.so)
Libs: -L\${libdir} -lkvs
Libs.private: $native_libs
PC
cat >"$libdir/pkgconfig/kvs-static.pc" <<PC
$pc_head
Description: kvs embeddable key/value store (static libkvs.a)
Libs: \${libdir}/libkvs.a $native_libs
PC

echo "installed libkvs $version ($profile) into $dest"
case ":${PKG_CONFIG_PATH:-}:" in
    *":$prefix/lib/pkgconfig:"*) ;;
    *) echo "  for pkg-config: export PKG_CONFIG_PATH=\"$prefix/lib/pkgconfig:\$PKG_CONFIG_PATH\"" ;;
esac
