#!/usr/bin/env bash
# The C tests of libkvs (`make test-c`). From a fresh clone this:
#   1. builds kvs-ffi (debug) and checks that the committed include/kvs.h equals the header
#      cbindgen generates now (`--update-header` copies the fresh one over it instead);
#   2. installs header, libkvs.so, libkvs.a and kvs.pc into a temporary prefix (`make install
#      PREFIX=... PROFILE=debug`), and checks that libkvs.so exports exactly the functions of
#      kvs.h, each with a symbol version of libkvs.map, and has its SONAME;
#   3. compiles the header alone as C99 and as C++, and links it;
#   4. compiles tests/c/test_kvs.c with cc against the installed header, links it once with
#      libkvs.so and once with libkvs.a (through pkg-config), and runs both, then both again
#      under valgrind (installed with apt-get if missing): any error or definite leak fails;
#   5. builds and runs the example exactly as kvs-ffi/README.md says;
#   6. extracts the C example of the top-level README.md, builds it with pkg-config as the
#      README says, and runs it (and its error path).
# Exits non-zero on any failure. The last line counts the checks: "N passed, M failed".
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo" || exit 1
ffi="$repo/kvs-ffi"

update_header=0
if [[ "${1:-}" == "--update-header" ]]; then
    update_header=1
elif [[ $# -gt 0 ]]; then
    echo "usage: bash kvs-ffi/tests/run.sh [--update-header]" >&2
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kvs-ffi-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

passed=0
failed=0
failures=()
pass() {
    passed=$((passed + 1))
    echo "ok   $1"
}
fail() {
    failed=$((failed + 1))
    failures+=("$1")
    echo "FAIL $1"
}
finish() {
    if [[ $failed -gt 0 ]]; then
        echo "failed: ${failures[*]}"
    fi
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
    exit
}
# Runs a command quietly; on failure shows its output.
quiet() {
    local log="$work/last.log"
    if "$@" >"$log" 2>&1; then
        return 0
    fi
    cat "$log"
    return 1
}

# ---- 1. build and header freshness ---------------------------------------------------------
echo "== building kvs-ffi"
build_log="$work/build.json"
if ! cargo build -p kvs-ffi --message-format=json-render-diagnostics >"$build_log"; then
    fail "cargo build -p kvs-ffi"
    finish
fi
out_dir="$(grep '"reason":"build-script-executed"' "$build_log" | grep '/kvs-ffi' |
    grep -o '"out_dir":"[^"]*"' | tail -n 1 | sed 's/^"out_dir":"//; s/"$//')"
fresh_header="$out_dir/kvs.h"
if [[ ! -f "$fresh_header" ]]; then
    fail "header generation (no kvs.h in build script output '$out_dir')"
    finish
fi
if [[ $update_header -eq 1 ]]; then
    cp "$fresh_header" include/kvs.h
    echo "include/kvs.h updated from $fresh_header"
fi
if diff -u include/kvs.h "$fresh_header" >"$work/header.diff"; then
    pass "committed include/kvs.h equals the generated header"
else
    cat "$work/header.diff"
    echo "include/kvs.h is stale: run 'bash kvs-ffi/tests/run.sh --update-header' and commit it"
    fail "committed include/kvs.h equals the generated header"
fi

# ---- 2. install ----------------------------------------------------------------------------
echo "== make install PREFIX=<temporary prefix> PROFILE=debug"
if ! quiet make --no-print-directory install PREFIX="$prefix" PROFILE=debug; then
    fail "make install"
    finish
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
libdir="$(pkg-config --variable=libdir kvs)"
if [[ -f "$prefix/include/kvs.h" && -f "$libdir/libkvs.a" && -L "$libdir/libkvs.so" ]] &&
    readelf -d "$libdir/libkvs.so" | grep -q 'SONAME.*\[libkvs\.so\.[0-9]*\]'; then
    pass "install.sh installs kvs.h, libkvs.so (with its SONAME), libkvs.a and kvs.pc"
else
    fail "install.sh installs kvs.h, libkvs.so (with its SONAME), libkvs.a and kvs.pc"
fi

version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
major="${version%%.*}"

# ---- 2b. what libkvs.so exports: exactly kvs.h's functions, each versioned; its SONAME -----
echo "== exported symbols"
so="$libdir/libkvs.so.$version"
# The functions kvs.h declares: in the preprocessed header (no comments left), every
# identifier followed by "(" is a function declaration.
header_functions="$(cc -E -P -x c "$prefix/include/kvs.h" | tr '\n' ' ' |
    grep -oE '\bkvs_[a-z0-9_]+ *\(' | sed 's/ *($//' | sort -u)"
# The version nodes libkvs.map defines.
map_nodes="$(grep -oE '^KVS_[0-9]+\.[0-9]+' "$ffi/libkvs.map" | sort -u)"
# What libkvs.so defines for others: name@@VERSION for a function with a default version,
# plain name for an unversioned one; each version node itself is an absolute (A) symbol.
nm -D --defined-only "$so" >"$work/dynsyms" 2>&1
exported_functions="$(awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' "$work/dynsyms" | sort)"
exported_nodes="$(awk '$2 == "A" { print $3 }' "$work/dynsyms" | sort)"
if [[ -n "$header_functions" && "$exported_functions" == "$header_functions" ]]; then
    pass "libkvs.so exports exactly the $(wc -l <<<"$header_functions") functions of kvs.h"
else
    diff <(echo "$header_functions") <(echo "$exported_functions") | sed 's/^/  header<>exported: /'
    fail "libkvs.so exports exactly the functions of kvs.h"
fi
unversioned="$(awk '$2 != "A" && $3 !~ /^kvs_[a-z0-9_]+@@KVS_[0-9]+\.[0-9]+$/ { print $3 }' \
    "$work/dynsyms")"
if [[ -n "$map_nodes" && -z "$unversioned" && "$exported_nodes" == "$map_nodes" ]]; then
    pass "every function of libkvs.so has a default version, one of libkvs.map's (${map_nodes//$'\n'/ })"
else
    echo "  without a version of libkvs.map: ${unversioned:-none}"
    echo "  version nodes defined: ${exported_nodes//$'\n'/ }; in libkvs.map: ${map_nodes//$'\n'/ }"
    fail "every function of libkvs.so has a default version, one of libkvs.map's"
fi
soname="$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')"
if [[ "$soname" == "libkvs.so.$major" ]]; then
    pass "libkvs.so.$version has the SONAME libkvs.so.$major"
else
    fail "libkvs.so.$version has the SONAME libkvs.so.$major (it has '${soname:-none}')"
fi

cflags="$(pkg-config --cflags kvs)"
shared_libs="$(pkg-config --libs kvs) -Wl,-rpath,$libdir"
static_libs="$(pkg-config --libs kvs-static)"
warn=(-Wall -Wextra -Werror)

# ---- 3. the header alone, as C99 and as C++ ------------------------------------------------
echo "== header checks"
# shellcheck disable=SC2086 # pkg-config output is a list of flags
if quiet cc -std=c99 -pedantic "${warn[@]}" $cflags "$ffi/tests/c/header_check.c" \
    -o "$work/header_c99" $shared_libs && quiet "$work/header_c99"; then
    pass "kvs.h compiles and links as C99"
else
    fail "kvs.h compiles and links as C99"
fi
# shellcheck disable=SC2086
if quiet c++ -std=c++11 -pedantic "${warn[@]}" $cflags -x c++ "$ffi/tests/c/header_check.c" \
    -x none -o "$work/header_cxx" $shared_libs && quiet "$work/header_cxx"; then
    pass "kvs.h compiles and links as C++"
else
    fail "kvs.h compiles and links as C++"
fi

# ---- 4. the C tests, shared and static, plain and under valgrind ---------------------------
echo "== compiling the C tests"
# shellcheck disable=SC2086
quiet cc -std=c11 -g "${warn[@]}" $cflags "$ffi/tests/c/test_kvs.c" -o "$work/test_shared" \
    $shared_libs -pthread
built_shared=$?
# shellcheck disable=SC2086
quiet cc -std=c11 -g "${warn[@]}" $cflags "$ffi/tests/c/test_kvs.c" -o "$work/test_static" \
    $static_libs -pthread
built_static=$?
if [[ $built_shared -eq 0 ]] && readelf -d "$work/test_shared" | grep -q 'NEEDED.*libkvs\.so'; then
    pass "test_kvs links against libkvs.so"
else
    fail "test_kvs links against libkvs.so"
fi
# A program linked against libkvs.so records the version nodes it needs from it, so an older
# libkvs.so without them is refused at load time with a message naming the version.
if [[ $built_shared -eq 0 ]] && readelf -V -W "$work/test_shared" | awk -v lib="libkvs.so.$major" '
    /File:/ { in_lib = ($0 ~ ("File: " lib "( |$)")) }
    in_lib && /Name: KVS_[0-9]+\.[0-9]+/ { found = 1 }
    END { exit !found }'; then
    pass "test_kvs needs a KVS_* symbol version from libkvs.so.$major"
else
    readelf -V -W "$work/test_shared" 2>&1 | sed -n '/Version needs/,$p'
    fail "test_kvs needs a KVS_* symbol version from libkvs.so.$major"
fi
if [[ $built_static -eq 0 ]] && ! readelf -d "$work/test_static" | grep -q 'libkvs'; then
    pass "test_kvs links against libkvs.a (no libkvs.so needed)"
else
    fail "test_kvs links against libkvs.a (no libkvs.so needed)"
fi

if ! command -v valgrind >/dev/null; then
    echo "== installing valgrind"
    if ! quiet env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update && apt-get install -y --no-install-recommends valgrind'; then
        echo "cannot install valgrind"
    fi
fi

declare -A case_failed=()
case_names=()
# Runs one build of the C tests (optionally under a wrapper) and records each case.
run_suite() {
    local label="$1" binary="$2"
    shift 2
    local scratch="$work/scratch-$label"
    mkdir -p "$scratch"
    echo "== C tests: $label"
    "$@" "$binary" "$scratch" "$version" >"$work/$label.out" 2>"$work/$label.err" </dev/null
    local rc=$?
    cat "$work/$label.out"
    local name
    while read -r verdict name; do
        if [[ -z "${case_failed[$name]+set}" ]]; then
            case_names+=("$name")
            case_failed[$name]=0
        fi
        [[ "$verdict" == FAIL ]] && case_failed[$name]=1
    done < <(grep -E '^(ok|FAIL) ' "$work/$label.out")
    if [[ $rc -ne 0 ]] || ! grep -qE '^[0-9]+ passed, 0 failed$' "$work/$label.out"; then
        cat "$work/$label.err"
        fail "C tests ($label) exit with status 0 (got $rc)"
    fi
}

[[ $built_shared -eq 0 ]] && run_suite shared "$work/test_shared"
[[ $built_static -eq 0 ]] && run_suite static "$work/test_static"
if command -v valgrind >/dev/null; then
    # Errors and definite leaks fail the run; "possibly lost"/"still reachable" memory of
    # threads alive at exit (the engines' background threads) does not.
    vg=(valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite
        --errors-for-leak-kinds=definite --child-silent-after-fork=yes)
    [[ $built_shared -eq 0 ]] && run_suite valgrind-shared "$work/test_shared" "${vg[@]}"
    [[ $built_static -eq 0 ]] && run_suite valgrind-static "$work/test_static" "${vg[@]}"
else
    fail "valgrind is available"
fi
for name in "${case_names[@]}"; do
    if [[ "${case_failed[$name]}" -eq 0 ]]; then
        passed=$((passed + 1))
    else
        fail "$name"
    fi
done

# ---- 5. the example, built as the README says ----------------------------------------------
echo "== example"
store="$work/example-store"
if quiet cc "$ffi/examples/example.c" -o "$work/example" $(pkg-config --cflags --libs kvs) \
    -Wl,-rpath,"$(pkg-config --variable=libdir kvs)" &&
    "$work/example" "$store" >"$work/example1.out" 2>&1 &&
    "$work/example" "$store" >"$work/example2.out" 2>&1 &&
    grep -q "has run 2 time" "$work/example2.out" && grep -q "intact" "$work/example2.out"; then
    pass "examples/example.c builds with pkg-config and runs"
else
    cat "$work/example1.out" "$work/example2.out" 2>/dev/null
    fail "examples/example.c builds with pkg-config and runs"
fi

# ---- 6. the C example of the top-level README, extracted from README.md ---------------------
# The program between the "```c" and "```" lines of README.md's section "Using kvs from C", built
# with the command that section gives, so the README cannot drift from what compiles and runs.
echo "== README.md's C example"
readme_dir="$work/readme-example"
mkdir -p "$readme_dir"
awk '/^## / { in_section = ($0 == "## Using kvs from C") }
    in_section && /^```c$/ { in_code = 1; next }
    in_code && /^```$/ { exit }
    in_code { print }' README.md >"$readme_dir/example.c"
# shellcheck disable=SC2046 # pkg-config output is a list of flags
if [[ -s "$readme_dir/example.c" ]] &&
    quiet cc "${warn[@]}" "$readme_dir/example.c" -o "$readme_dir/example" \
        $(pkg-config --cflags --libs kvs) -Wl,-rpath,"$libdir" &&
    (cd "$readme_dir" && ./example) >"$readme_dir/out" 2>&1 &&
    [[ "$(cat "$readme_dir/out")" == "greeting = hello" ]]; then
    pass "README.md's C example compiles with pkg-config, runs and prints its value"
else
    echo "  extracted program: $(wc -l <"$readme_dir/example.c") lines; its output:"
    cat "$readme_dir/out" 2>/dev/null
    fail "README.md's C example compiles with pkg-config, runs and prints its value"
fi
# Its error handling: where the store's directory cannot be created (a file is in the way),
# it exits 1 and says which call failed and why.
rm -rf "$readme_dir/kvs-demo" && : >"$readme_dir/kvs-demo"
(cd "$readme_dir" && ./example) >"$readme_dir/out" 2>"$readme_dir/err"
rc=$?
if [[ $rc -eq 1 && ! -s "$readme_dir/out" ]] && grep -q '^kvs_open: .*kvs-demo' "$readme_dir/err"; then
    pass "README.md's C example reports a failed kvs_open and exits 1"
else
    echo "  exit status $rc; stdout: $(cat "$readme_dir/out" 2>/dev/null); stderr: $(cat "$readme_dir/err" 2>/dev/null)"
    fail "README.md's C example reports a failed kvs_open and exits 1"
fi

finish
