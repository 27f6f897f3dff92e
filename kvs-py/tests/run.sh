#!/usr/bin/env bash
# Python tests of kvs (`make test-python`): builds the package into a private virtual
# environment exactly as users install it (`pip install ./kvs-py`), builds kvs-server for the
# client tests, and runs pytest. Needs python3 (3.9+) and cargo; reads no standard input.
#
#   KVS_PY_VENV      where the virtual environment lives (default: target/py-venv)
#   CARGO_TARGET_DIR honoured, as cargo does
#   KVS_PY_PROFILE   cargo profile of the extension (default: dev, the fastest to build;
#                    `release` for benchmarks)
#   PYTHON           interpreter to create the environment with (default: python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="${KVS_PY_VENV:-$target_dir/py-venv}"
profile="${KVS_PY_PROFILE:-dev}"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check --quiet)

echo "== installing maturin, pytest and redis (for test_resp.py) into $venv"
"${pip[@]}" install "maturin>=1.9,<2" "pytest>=7" "redis>=5"

echo "== pip install ./kvs-py (cargo profile: $profile)"
# MATURIN_PEP517_ARGS passes the profile to maturin through pip's build backend call.
MATURIN_PEP517_ARGS="--profile $profile" "${pip[@]}" install --force-reinstall --no-deps ./kvs-py

echo "== cargo build -p kvs-server"
cargo build --quiet -p kvs-server
export KVS_SERVER_BIN="$target_dir/debug/kvs-server"

echo "== pytest"
cd "$root/kvs-py"
# -p no:cacheprovider: leave no .pytest_cache in the source tree.
exec "$py" -m pytest -p no:cacheprovider -ra tests "$@"
