#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond cargo and python3: Debian's redis-tools
# (redis-cli, redis-benchmark) and redis-server (the reference kvs's replies are compared
# with), for the RESP tests in tests/tests/resp.rs and the foreign-server tests of cli.rs.
# Idempotent: does nothing when they are already there. Needs root or sudo for apt-get; where it cannot
# install, it says so loudly and exits 0, and those tests skip with the same message.
#
#   make test calls it before the Rust tests; run it by hand with `bash tests/setup.sh`.
set -euo pipefail

want=()
command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1 \
    || want+=(redis-tools)
# redis-server is the reference the RESP tests compare kvs's replies against.
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi

warn() {
    echo "*** tests/setup.sh: cannot install ${want[*]}: $1." >&2
    echo "*** The tests that need redis-cli will be SKIPPED. Install ${want[*]} by hand." >&2
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
