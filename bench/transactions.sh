#!/usr/bin/env bash
# The cost of INCR and of MULTI/EXEC on kvs-server over RESP, as ratios, in one run:
#   - INCR against SET (redis-benchmark -t set,incr, the same -n, -c and -P): SET/INCR;
#   - MULTI + 10 SETs + EXEC against the same 10 SETs pipelined without MULTI: the time of
#     TRANSACTIONS of each sent with `redis-cli --pipe` (the whole input pipelined on one
#     connection), MULTI/EXEC over pipelined;
#   - GET and SET throughput (redis-benchmark -t set,get) of this tree's kvs-server against a
#     baseline's, when BASELINE_REV names one (built from `git archive` of it into
#     target/bench-baseline): this tree over the baseline.
# Each figure is the median of ROUNDS runs on a fresh server (engine kvs, default options) in
# a temporary directory, on 127.0.0.1. Prints the figures and the ratios.
#
#   bash bench/transactions.sh                     # needs redis-tools and cargo
#   BASELINE_REV=main bash bench/transactions.sh   # also compares GET/SET with main
#
#   REQUESTS=200000 CLIENTS=50 PIPELINE=16   redis-benchmark's -n, -c and -P
#   TRANSACTIONS=20000                        transactions of 10 SETs for the MULTI/EXEC figure
#   ROUNDS=3                                  runs per figure (the median is kept)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requests="${REQUESTS:-200000}"
clients="${CLIENTS:-50}"
pipeline="${PIPELINE:-16}"
transactions="${TRANSACTIONS:-20000}"
rounds="${ROUNDS:-3}"
target="${CARGO_TARGET_DIR:-$root/target}"

for tool in redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "bench/transactions.sh: $tool is missing (bash tests/setup.sh installs it)" >&2
        exit 1
    }
done

echo "== cargo build --release -p kvs-server" >&2
(cd "$root" && cargo build --quiet --release -p kvs-server)
server_bin="$target/release/kvs-server"
baseline_bin=""
if [ -n "${BASELINE_REV:-}" ]; then
    echo "== building the baseline kvs-server of $BASELINE_REV" >&2
    src="$target/bench-baseline/src"
    rm -rf "$src" && mkdir -p "$src"
    (cd "$root" && git archive "$BASELINE_REV") | tar -x -C "$src"
    (cd "$src" && CARGO_TARGET_DIR="$target/bench-baseline/target" \
        cargo build --quiet --release -p kvs-server)
    baseline_bin="$target/bench-baseline/target/release/kvs-server"
fi

work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Starts the kvs-server binary $1 in a fresh directory; sets $pid and $port.
start() {
    local dir
    dir="$(mktemp -d "$work/data.XXXXXX")"
    (cd "$dir" && RUST_LOG=info exec "$1" --addr 127.0.0.1:0 >"$dir/out" 2>"$dir/err") &
    pid=$!
    for _ in $(seq 600); do
        port="$(grep -so '127\.0\.0\.1:[0-9]*' "$dir/err" | head -1 | cut -d: -f2 || true)"
        [ -n "$port" ] && redis-cli -p "$port" PING >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench/transactions.sh: kvs-server never listened: $(cat "$dir/err")" >&2
    exit 1
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}

# The median of the numbers on stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# redis-benchmark's requests per second of test $2 (SET, GET, INCR) on binary $1.
rps() {
    local bin="$1" test="$2"
    for _ in $(seq "$rounds"); do
        start "$bin"
        redis-benchmark -p "$port" -t "${test,,}" -n "$requests" -c "$clients" -P "$pipeline" --csv \
            | awk -F'"' -v t="$test" '$2 == t { print $4 }'
        stop
    done | median
}

# The inputs for redis-cli --pipe: TRANSACTIONS of (MULTI, 10 SETs, EXEC), and the same SETs
# without MULTI/EXEC.
python3 - "$work" "$transactions" <<'EOF'
import sys

work, n = sys.argv[1], int(sys.argv[2])

def request(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

with open(f"{work}/multi.resp", "wb") as multi, open(f"{work}/plain.resp", "wb") as plain:
    for t in range(n):
        sets = b"".join(request(b"SET", b"key:%d:%d" % (t % 1000, i), b"v" * 16) for i in range(10))
        multi.write(request(b"MULTI") + sets + request(b"EXEC"))
        plain.write(sets)
EOF

# Seconds redis-cli --pipe takes to send file $2 to binary $1 and read every reply.
pipe_seconds() {
    local bin="$1" file="$2"
    for _ in $(seq "$rounds"); do
        start "$bin"
        local t0 t1 out
        t0="$(date +%s.%N)"
        out="$(redis-cli -p "$port" --pipe <"$file")"
        t1="$(date +%s.%N)"
        stop
        echo "$out" | grep -q "errors: 0," || {
            echo "bench/transactions.sh: redis-cli --pipe saw errors: $out" >&2
            exit 1
        }
        echo "$t1 - $t0" | bc -l
    done | median
}

echo "== redis-benchmark -t set,incr -n $requests -c $clients -P $pipeline, median of $rounds" >&2
set_rps="$(rps "$server_bin" SET)"
incr_rps="$(rps "$server_bin" INCR)"
echo "== redis-cli --pipe of $transactions transactions of 10 SETs, median of $rounds" >&2
multi_s="$(pipe_seconds "$server_bin" "$work/multi.resp")"
plain_s="$(pipe_seconds "$server_bin" "$work/plain.resp")"

printf '\n%-44s %14s\n' "figure" "value"
printf '%-44s %14.0f\n' "SET requests/s" "$set_rps"
printf '%-44s %14.0f\n' "INCR requests/s" "$incr_rps"
printf '%-44s %14.3f\n' "$transactions x (MULTI, 10 SETs, EXEC), s" "$multi_s"
printf '%-44s %14.3f\n' "$transactions x 10 SETs pipelined, s" "$plain_s"
printf '\n%-44s %8.2f   (target: at most 1.2)\n' "SET/INCR throughput" \
    "$(echo "$set_rps / $incr_rps" | bc -l)"
printf '%-44s %8.2f   (target: at most 3)\n' "MULTI/EXEC time / pipelined time" \
    "$(echo "$multi_s / $plain_s" | bc -l)"

if [ -n "$baseline_bin" ]; then
    echo "== baseline $BASELINE_REV: redis-benchmark -t set,get" >&2
    get_rps="$(rps "$server_bin" GET)"
    base_set="$(rps "$baseline_bin" SET)"
    base_get="$(rps "$baseline_bin" GET)"
    printf '%-44s %8.2f   (%.0f against %.0f requests/s; target: at least 1)\n' \
        "SET throughput, this tree / $BASELINE_REV" "$(echo "$set_rps / $base_set" | bc -l)" \
        "$set_rps" "$base_set"
    printf '%-44s %8.2f   (%.0f against %.0f requests/s; target: at least 1)\n' \
        "GET throughput, this tree / $BASELINE_REV" "$(echo "$get_rps / $base_get" | bc -l)" \
        "$get_rps" "$base_get"
fi
