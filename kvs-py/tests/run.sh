#!/usr/bin/env bash
# Python tests of kvs (`make test-python`). Needs python3 (3.9+) and cargo; reads no standard
# input. It:
#   1. installs maturin, pytest and redis-py (for test_resp.py) into the tools environment
#      (KVS_PY_VENV);
#   2. builds the wheel once, as the README says: `maturin build --release` (abi3: one wheel for
#      CPython 3.9 and later), and checks its name, files (stubs, py.typed) and metadata;
#   3. installs it into a fresh virtual environment (KVS_PY_WHEEL_VENV) with a PATH that holds
#      no cargo, rustc or rustup (checked), from the file alone (--no-index: it needs nothing
#      else), and checks `pip check`, `pip show kvs` and where `import kvs` resolves;
#   4. builds from source as well, `pip install ./kvs-py` into the tools environment (the same
#      release build as step 2, so cargo reuses it), and checks that this install works too;
#   5. builds kvs-server for the client tests and runs the whole suite, kvs-py/tests, with the
#      wheel's environment and the same PATH, against the installed wheel (conftest.py fails
#      the run if `import kvs` resolves anywhere but that environment's site-packages).
# The tools environment keeps the source build: kvs-py/bench/bench.py runs with it.
#
#   KVS_PY_VENV        the tools environment (default: target/py-venv; tests/setup.sh puts
#                      redis-py and Django for the Rust end-to-end tests there too)
#   KVS_PY_WHEEL_VENV  the environment the wheel is installed into, made anew on every run
#                      (default: target/py-wheel-venv)
#   CARGO_TARGET_DIR   honoured, as cargo does
#   PYTHON             interpreter to create both environments with (default: python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="${KVS_PY_VENV:-$target_dir/py-venv}"
wheel_venv="${KVS_PY_WHEEL_VENV:-$target_dir/py-wheel-venv}"
version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
work="$(mktemp -d "${TMPDIR:-/tmp}/kvs-py-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The interpreter itself, not a launcher (pyenv's shims need pyenv on PATH).
base_python="$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')"

# ---- 1. tools ------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    "$base_python" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check --quiet)
echo "== installing maturin, pytest and redis (for test_resp.py) into $venv"
"${pip[@]}" install "maturin>=1.9,<2" "pytest>=7" "redis>=5" </dev/null

# ---- 2. the wheel --------------------------------------------------------------------------
echo "== maturin build --release (kvs-py)"
"$py" -m maturin build --release --manifest-path kvs-py/Cargo.toml --out "$work/wheels" \
    </dev/null
wheels=("$work"/wheels/kvs-*.whl)
if [ ${#wheels[@]} -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "kvs-py/tests/run.sh: expected one wheel in $work/wheels, found: ${wheels[*]}" >&2
    exit 1
fi
wheel="${wheels[0]}"
echo "== checking $(basename "$wheel")"
"$py" kvs-py/tests/check_install.py wheel "$wheel" "$version"

# ---- 3. the wheel, installed where there is no Rust ----------------------------------------
echo "== installing the wheel into a fresh $wheel_venv, with no Rust toolchain on PATH"
rm -rf "$wheel_venv"
"$base_python" -m venv "$wheel_venv"
# Only the environment's own scripts: the interpreter is reached through it, and nothing the
# tests run is looked up on PATH (kvs-server is given by its full path).
clean_path="$wheel_venv/bin"
clean=(env PATH="$clean_path")
wheel_py="$wheel_venv/bin/python"
wheel_pip=("${clean[@]}" "$wheel_py" -m pip --disable-pip-version-check --quiet)
"${wheel_pip[@]}" install --no-index "$wheel" </dev/null
"${clean[@]}" "$wheel_py" "$root/kvs-py/tests/check_install.py" installed "$version" </dev/null
echo "== installing pytest and redis (for test_resp.py) into $wheel_venv"
"${wheel_pip[@]}" install "pytest>=7" "redis>=5" </dev/null
# Installing them must not have replaced or broken kvs.
"${clean[@]}" "$wheel_py" "$root/kvs-py/tests/check_install.py" installed "$version" </dev/null

# ---- 4. the source build -------------------------------------------------------------------
echo "== pip install ./kvs-py (into $venv)"
"${pip[@]}" install --force-reinstall --no-deps ./kvs-py </dev/null
(cd "$work" && "$py" -I -c '
import sys, sysconfig, tempfile
from pathlib import Path
import kvs
site = Path(sysconfig.get_paths()["platlib"]).resolve()
assert Path(kvs.__file__).resolve().parent == site / "kvs", kvs.__file__
assert kvs.__version__ == sys.argv[1], kvs.__version__
with kvs.KvStore(tempfile.mkdtemp()) as db:
    db["k"] = "v"
    assert db["k"] == b"v"
print(f"ok   the source build imports from {site} and stores a key")
' "$version")

# ---- 5. the suite, against the installed wheel ---------------------------------------------
echo "== cargo build -p kvs-server"
cargo build --quiet -p kvs-server
export KVS_SERVER_BIN="$target_dir/debug/kvs-server"
# conftest.py checks that `import kvs` resolves here, not to the source tree.
KVS_PY_EXPECT_INSTALLED_IN="$("$wheel_py" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
export KVS_PY_EXPECT_INSTALLED_IN

echo "== pytest (the wheel, in $wheel_venv)"
cd "$root/kvs-py"
# -I: no PYTHONPATH, no user site-packages. -p no:cacheprovider: leave no .pytest_cache in
# the source tree.
status=0
"${clean[@]}" "$wheel_py" -I -m pytest -p no:cacheprovider -ra tests "$@" </dev/null || status=$?
exit "$status"
