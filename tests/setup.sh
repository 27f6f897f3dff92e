#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond cargo and python3: Debian's redis-tools
# (redis-cli, redis-benchmark) and redis-server (the reference kvs's replies are compared
# with), for the RESP tests in tests/tests/resp.rs and the foreign-server tests of cli.rs;
# Debian's nutcracker (twemproxy, the sharding proxy tests/tests/scaling.rs puts in front of
# three kvs-servers) and the redis Python package (redis-py, in the virtual environment that
# kvs-py/tests/run.sh also uses) for scaling.rs; Django (in the same environment) and Node's
# ioredis (npm, into target/node, never globally) for the client tests of redis_multi.rs;
# curl and systemd-analyze for tests/tests/ops.rs.
# Idempotent: does nothing when they are already there. Needs root or sudo for apt-get; where it cannot
# install, it says so loudly and exits 0, and those tests skip with the same message; on CI
# (CI=true), where nothing may be skipped, it fails instead.
#
#   make test calls it before the Rust tests; run it by hand with `bash tests/setup.sh`.
#
#   KVS_PY_VENV      where the virtual environment lives (default: target/py-venv)
#   CARGO_TARGET_DIR honoured, as cargo does
#   PYTHON           interpreter to create the environment with (default: python3)
#   KVS_NODE_DIR     where ioredis is installed (default: target/node)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Says that something could not be installed and that its tests will skip; on CI, fails.
skipped() {
    echo "*** tests/setup.sh: $1: the tests that need it will be SKIPPED." >&2
    if [ "${CI:-}" = true ]; then
        echo "*** tests/setup.sh: CI=true, where every test must run: failing." >&2
        exit 1
    fi
}

# redis-py for tests/tests/scaling.rs, in the environment kvs-py/tests/run.sh makes (the same
# path and the same way), so both find it. Failing here only makes those tests skip.
python_redis() {
    local venv="${KVS_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/py-venv}"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import redis' 2>/dev/null; then
        return 0
    fi
    if ! command -v "${PYTHON:-python3}" >/dev/null 2>&1; then
        skipped "no ${PYTHON:-python3}"
        return 0
    fi
    echo "== tests/setup.sh: installing redis (redis-py) into $venv"
    if [ ! -x "$venv/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$venv" || {
            skipped "cannot create $venv"
            return 0
        }
    fi
    "$venv/bin/python" -m pip --disable-pip-version-check --quiet install "redis>=5" </dev/null \
        || skipped "pip install redis failed"
}
python_redis

# Django, for the Django cache test of tests/tests/redis_multi.rs, beside redis-py.
python_django() {
    local venv="${KVS_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/py-venv}"
    [ -x "$venv/bin/python" ] || return 0
    if "$venv/bin/python" -c 'import django' 2>/dev/null; then
        return 0
    fi
    echo "== tests/setup.sh: installing django into $venv"
    "$venv/bin/python" -m pip --disable-pip-version-check --quiet install "django>=4.2" </dev/null \
        || skipped "pip install django failed"
}
python_django

# ioredis, for the Node test of tests/tests/redis_multi.rs: with npm, into a directory under
# target/ (KVS_NODE_DIR), never globally. Failing here only makes that test skip.
node_ioredis() {
    local dir="${KVS_NODE_DIR:-${CARGO_TARGET_DIR:-$root/target}/node}"
    if [ -f "$dir/node_modules/ioredis/package.json" ]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        skipped "no node or npm"
        return 0
    fi
    echo "== tests/setup.sh: installing ioredis into $dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "ioredis@5" </dev/null \
        || skipped "npm install ioredis failed"
}
node_ioredis

want=()
command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1 \
    || want+=(redis-tools)
# redis-server is the reference the RESP tests compare kvs's replies against.
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
# nutcracker (twemproxy): the sharding proxy of tests/tests/scaling.rs. Debian installs it in
# /usr/sbin, which a non-root PATH may lack.
command -v nutcracker >/dev/null 2>&1 || [ -x /usr/sbin/nutcracker ] || want+=(nutcracker)
# curl scrapes kvs-server's metrics endpoint, and systemd-analyze (Debian's systemd package)
# verifies deploy/kvs-server.service, in tests/tests/ops.rs.
command -v curl >/dev/null 2>&1 || want+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi

warn() {
    skipped "cannot install ${want[*]} ($1; install them by hand)"
    exit 0
}

command -v apt-get >/dev/null 2>&1 || warn "no apt-get on this system"
if [ "$(id -u)" = 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    warn "not root, and no password-less sudo"
fi

echo "== tests/setup.sh: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${want[@]}" </dev/null; then
    # The package lists may be missing or stale (fresh containers have none).
    "${sudo[@]}" apt-get update </dev/null || warn "apt-get update failed"
    "${sudo[@]}" apt-get install -y --no-install-recommends "${want[@]}" </dev/null \
        || warn "apt-get install failed"
fi
