#!/usr/bin/env bash
# Throughput through twemproxy (nutcracker), in one run: redis-benchmark against
#   - one kvs-server directly, and one redis-server directly (no proxy);
#   - nutcracker in front of 1 kvs-server, and of 3;
#   - nutcracker in front of 1 redis-server, and of 3;
# every server on a host of its own (a network namespace each, behind a bridge, as
# tests/tests/scaling.rs sets them up; loopback addresses 127.0.0.2-4 where namespaces cannot be
# made), nutcracker with the repository's deploy/nutcracker.yml. Then the capacity of one
# kvs-server: 1,000,000 keys of 100-byte values loaded with redis-cli --pipe, its memory and
# disk after. Prints a Markdown table (docs/SCALING.md has the figures of a run).
#
#   bash bench/proxy.sh                  # needs redis-server, redis-tools, nutcracker
#                                        # (bash tests/setup.sh installs them) and cargo
#
#   REQUESTS=1000000 CLIENTS=50 PIPELINE=16  redis-benchmark's -n, -c and -P
#   CAPACITY_KEYS=1000000                     keys loaded for the capacity figures (0: skip)
#
# redis-server runs with appendonly yes and appendfsync no (and protected-mode no, as it is
# reached from another namespace): every write goes to its log and
# reaches the operating system, as kvs-server's (sync os) do, so both keep what they
# acknowledged if the process dies. Every process and namespace made here is removed at the
# end, also when the script fails or is interrupted.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requests="${REQUESTS:-1000000}"
clients="${CLIENTS:-50}"
pipeline="${PIPELINE:-16}"
capacity_keys="${CAPACITY_KEYS:-1000000}"

nutcracker="$(command -v nutcracker || echo /usr/sbin/nutcracker)"
for tool in redis-server redis-cli redis-benchmark "$nutcracker"; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "bench/proxy.sh: $tool is missing (bash tests/setup.sh installs it)" >&2
        exit 1
    }
done

echo "== cargo build --release -p kvs-server" >&2
(cd "$root" && cargo build --quiet --release -p kvs-server)
kvs_server="${CARGO_TARGET_DIR:-$root/target}/release/kvs-server"

work="$(mktemp -d)"
pids=()
namespaces=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Hosts: namespaces kvsb-<pid>-host0..2 on a bridge in kvsb-<pid>-front (10.77.0.0/24, nothing
# added to the machine's own namespace), else loopback addresses.
base="kvsb-$$"
front_ip=127.0.0.1
host_ip=(127.0.0.2 127.0.0.3 127.0.0.4)
at_front=()
make_namespaces() {
    [ "$(id -u)" = 0 ] || return 1
    ip netns add "$base-front" || return 1
    namespaces+=("$base-front")
    ip -n "$base-front" link set lo up
    ip -n "$base-front" link add br0 type bridge
    ip -n "$base-front" addr add 10.77.0.1/24 dev br0
    ip -n "$base-front" link set br0 up
    for i in 0 1 2; do
        ip netns add "$base-host$i"
        namespaces+=("$base-host$i")
        ip -n "$base-host$i" link set lo up
        ip link add eth0 netns "$base-host$i" type veth peer name "host$i" netns "$base-front"
        ip -n "$base-front" link set "host$i" master br0
        ip -n "$base-front" link set "host$i" up
        ip -n "$base-host$i" addr add "10.77.0.$((11 + i))/24" dev eth0
        ip -n "$base-host$i" link set eth0 up
    done
}
if make_namespaces 2>"$work/netns.err"; then
    front_ip=10.77.0.1
    host_ip=(10.77.0.11 10.77.0.12 10.77.0.13)
    at_front=(ip netns exec "$base-front")
    setup="one network namespace per host, veth pairs on a bridge"
else
    echo "*** bench/proxy.sh: NO NETWORK NAMESPACES ($(tr '\n' ' ' <"$work/netns.err")):" \
        "the hosts share this machine's loopback (127.0.0.2-4)." >&2
    setup="loopback addresses 127.0.0.2-4 (no network namespaces)"
fi
# "${at[@]}" COMMAND runs COMMAND on host $i (after at_host $i); "${at_front[@]}" COMMAND at the
# front. Both are plain commands (no function), so that a background one's $! is the process
# itself: ip netns exec and env exec what they run.
at_host() {
    if [ ${#at_front[@]} -gt 0 ]; then at=(ip netns exec "$base-host$1"); else at=(); fi
}
front() { "${at_front[@]}" "$@"; }

port=16379
proxy_port=22121
wait_for() { # wait_for IP PORT: until PING answers PONG
    for _ in $(seq 1 600); do
        [ "$(front redis-cli -h "$1" -p "$2" PING 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    echo "bench/proxy.sh: nothing answers on $1:$2; the servers' logs:" >&2
    tail -n 5 "$work"/*.log >&2 || true
    exit 1
}

start_servers() { # start_servers kvs|redis N [NAME]: N servers, data in $work/NAME-<i>
    local kind=$1 n=$2 name=${3:-$1-$2}
    for ((i = 0; i < n; i++)); do
        local dir="$work/$name-$i"
        mkdir -p "$dir"
        at_host "$i"
        if [ "$kind" = kvs ]; then
            "${at[@]}" env -C "$dir" "$kvs_server" --addr "${host_ip[$i]}:$port" \
                --log-level warn 2>"$dir.log" &
        else
            "${at[@]}" redis-server --bind "${host_ip[$i]}" --port "$port" --dir "$dir" \
                --save '' --appendonly yes --appendfsync no --daemonize no \
                --protected-mode no >"$dir.log" 2>&1 &
        fi
        pids+=($!)
        servers+=("${host_ip[$i]}:$port")
    done
    for server in "${servers[@]}"; do wait_for "${server%:*}" "${server#*:}"; done
}

start_proxy() { # start_proxy: nutcracker in front of "${servers[@]}"
    local conf="$work/nutcracker-${#servers[@]}.yml" i=0
    while IFS= read -r line; do
        case "$line" in
        *"listen:"*) echo "  listen: $front_ip:$proxy_port" ;;
        *"- "*:*:*)
            if [ $i -lt ${#servers[@]} ]; then
                echo "    - ${servers[$i]}:1 kvs$((i + 1))"
            fi
            i=$((i + 1))
            ;;
        *) echo "$line" ;;
        esac
    done <"$root/deploy/nutcracker.yml" >"$conf"
    "${at_front[@]}" "$nutcracker" --conf-file "$conf" --stats-addr 127.0.0.1 \
        --stats-port $((20000 + $$ % 10000)) \
        --output "$work/nutcracker.log" &
    proxy_pid=$!
    pids+=($proxy_pid)
    wait_for "$front_ip" "$proxy_port"
}

stop_all() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    servers=()
}

bench() { # bench IP PORT: "SET GET" requests/s
    front redis-benchmark -h "$1" -p "$2" -t set,get -n "$requests" -c "$clients" \
        -P "$pipeline" -r 100000 -d 100 -q --csv 2>/dev/null |
        awk -F'"' '/^"SET"/ {s=$4} /^"GET"/ {g=$4} END {printf "%.0f %.0f", s, g}'
}

rows=()
measure() { # measure LABEL kvs|redis N proxy|direct
    local label=$1 kind=$2 n=$3 how=$4
    servers=()
    start_servers "$kind" "$n"
    local figures
    if [ "$how" = proxy ]; then
        start_proxy
        figures=$(bench "$front_ip" "$proxy_port")
    else
        figures=$(bench "${servers[0]%:*}" "$port")
    fi
    # Every server took writes (a refusal, such as redis's protected mode, would be counted
    # as a reply by redis-benchmark).
    for server in "${servers[@]}"; do
        local keys
        keys=$(front redis-cli -h "${server%:*}" -p "${server#*:}" DBSIZE)
        [ "$keys" -gt 0 ] 2>/dev/null || {
            echo "bench/proxy.sh: $label: $server holds no keys after the benchmark ($keys)" >&2
            exit 1
        }
    done
    stop_all
    echo "== $label: SET GET = $figures requests/s" >&2
    rows+=("| $label | ${figures% *} | ${figures#* } |")
}

measure "kvs-server, direct" kvs 1 direct
measure "redis-server, direct" redis 1 direct
measure "nutcracker + 1 kvs-server" kvs 1 proxy
measure "nutcracker + 1 redis-server" redis 1 proxy
measure "nutcracker + 3 kvs-servers" kvs 3 proxy
measure "nutcracker + 3 redis-servers" redis 3 proxy

capacity=""
if [ "$capacity_keys" -gt 0 ]; then
    servers=()
    start_servers kvs 1 capacity
    server_pid=${pids[0]}
    started=$(date +%s.%N)
    python3 -c '
import sys
n, out = int(sys.argv[1]), sys.stdout.buffer
value = b"v" * 100
for i in range(n):
    key = b"key:%010d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(key), key, value))
' "$capacity_keys" | front redis-cli -h "${host_ip[0]}" -p "$port" --pipe >"$work/pipe.out"
    took=$(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" \
        "$(date +%s.%N)" "$started")
    keys=$(front redis-cli -h "${host_ip[0]}" -p "$port" DBSIZE)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
    disk=$(du -sk "$work/capacity-0" | cut -f1)
    stop_all
    capacity="Capacity of one kvs-server: $keys keys of 100-byte values (14-byte keys) loaded \
with redis-cli --pipe in $took s; then $((rss / 1024)) MiB resident, $((disk / 1024)) MiB \
on disk."
fi

cat <<EOF

redis-benchmark -t set,get -n $requests -c $clients -P $pipeline -r 100000 -d 100, through
nutcracker with deploy/nutcracker.yml; $setup; $(nproc) cores, load average at end:
$(cut -d' ' -f1-3 /proc/loadavg); kvs $(cd "$root" && git rev-parse --short HEAD),
$("$nutcracker" --version 2>&1 | head -1 | sed 's/^This is //'),
$(redis-server --version | cut -d' ' -f1-3).

| setup | SET requests/s | GET requests/s |
|---|--:|--:|
$(printf '%s\n' "${rows[@]}")

$capacity
EOF
