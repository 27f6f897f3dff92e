"""redis-py's side of tests/tests/scaling.rs: writes and reads keys through the sharding proxy
and asks each shard directly which keys it holds. Prints its findings on stdout, one
`name=value` line each (nested names joined with "."), which the Rust test checks; asserts
nothing itself.

Key i is "key:<i>". Its value: "cli-<i>" for i < n/2 (written by redis-cli), "py-<i>" for the
rest (written here), "moved-<i>" once rewritten through the proxy after its shard was ejected.

    shards.py set   PROXY FIRST END                 SET key:i = py-<i> for FIRST <= i < END
    shards.py read  PROXY N OWNERS                  GET every key; counts by owner
    shards.py owners SHARDS N OWNERS                which shard holds each key; writes OWNERS
    shards.py move  PROXY N OWNERS DEAD             SET moved-<i> on the keys of shard DEAD
    shards.py moved SHARDS N OWNERS DEAD            where those keys are now (DEAD not asked)

PROXY is HOST:PORT, SHARDS HOST:PORT,HOST:PORT,... (in the proxy's order), OWNERS a file of
one shard index per key ("-" in `read`: no owners known yet).

Through twemproxy, a client must speak RESP2 (it has no HELLO), must not send CLIENT SETINFO
(it does not pass CLIENT), and must pipeline without MULTI (transaction=False).
"""

import sys
import warnings

import redis

BATCH = 1000


def connect(addr):
    host, port = addr.rsplit(":", 1)
    with warnings.catch_warnings():
        # redis-py 8 prefers driver_info=...; lib_name/lib_version=None work from redis-py 5.
        warnings.simplefilter("ignore", DeprecationWarning)
        return redis.Redis(
            host=host,
            port=int(port),
            protocol=2,
            lib_name=None,
            lib_version=None,
            socket_timeout=120,
            decode_responses=True,
        )


def expected(i, n):
    return f"cli-{i}" if i < n // 2 else f"py-{i}"


def pipelined(r, commands):
    """Runs (name, args) commands in pipelined batches; yields each reply or exception."""
    for start in range(0, len(commands), BATCH):
        chunk = commands[start : start + BATCH]
        p = r.pipeline(transaction=False)
        for name, args in chunk:
            p.execute_command(name, *args)
        try:
            replies = p.execute(raise_on_error=False)
        except redis.RedisError as e:
            # The proxy closed the connection: every command of the batch failed so.
            replies = [e] * len(chunk)
        yield from replies


def load_owners(path, n):
    if path == "-":
        return ["all"] * n
    with open(path) as f:
        owners = [line.strip() for line in f]
    assert len(owners) == n, f"{path}: {len(owners)} owners for {n} keys"
    return owners


def cmd_set(proxy, first, end):
    r = connect(proxy)
    commands = [("SET", (f"key:{i}", f"py-{i}")) for i in range(first, end)]
    replies = list(pipelined(r, commands))
    acked = sum(1 for reply in replies if reply is True)
    bad = [repr(reply) for reply in replies if reply is not True][:5]
    return {"acked": acked, "bad": bad}


def cmd_read(proxy, n, owners_path):
    owners = load_owners(owners_path, n)
    r = connect(proxy)
    commands = [("GET", (f"key:{i}",)) for i in range(n)]
    by_owner = {}
    examples = {}
    for i, reply in enumerate(pipelined(r, commands)):
        if isinstance(reply, Exception):
            kind = "error"
        elif reply is None:
            kind = "nil"
        elif reply == expected(i, n):
            kind = "right"
        else:
            kind = "wrong"
        counts = by_owner.setdefault(owners[i], {"right": 0, "wrong": 0, "nil": 0, "error": 0})
        counts[kind] += 1
        if kind != "right" and len(examples.setdefault(kind, [])) < 3:
            if isinstance(reply, Exception):
                shown = f"{type(reply).__name__}: {reply}"
            else:
                shown = repr(reply)
            examples[kind].append(f"key:{i} (owner {owners[i]}): {shown}")
    return {"by_owner": by_owner, "examples": examples}


def holdings(shards, n, skip=None):
    """For each shard, the value of every key it holds directly (None where it has none), and
    its DBSIZE; shard number `skip` (down) is not asked and holds nothing."""
    held = []
    for s, addr in enumerate(shards):
        if str(s) == skip:
            held.append(([None] * n, 0))
            continue
        r = connect(addr)
        values = []
        for start in range(0, n, BATCH):
            values += r.mget([f"key:{i}" for i in range(start, min(n, start + BATCH))])
        held.append((values, r.dbsize()))
    return held


def cmd_owners(shards, n, owners_path):
    held = holdings(shards, n)
    owners, counts = [], [0] * len(shards)
    none = multiple = wrong = 0
    examples = []
    for i in range(n):
        having = [s for s, (values, _) in enumerate(held) if values[i] is not None]
        if len(having) == 1:
            s = having[0]
            counts[s] += 1
            owners.append(str(s))
            if held[s][0][i] != expected(i, n):
                wrong += 1
                examples.append(f"key:{i} on shard {s}: {held[s][0][i]!r}")
        else:
            if having:
                multiple += 1
            else:
                none += 1
            owners.append("?")
            examples.append(f"key:{i} on shards {having}")
    with open(owners_path, "w") as f:
        f.write("\n".join(owners) + "\n")
    return {
        "dbsize": {s: dbsize for s, (_, dbsize) in enumerate(held)},
        "counts": dict(enumerate(counts)),
        "none": none,
        "multiple": multiple,
        "wrong": wrong,
        "examples": examples[:5],
    }


def cmd_move(proxy, n, owners_path, dead):
    """Rewrites the dead shard's keys; a batch sent while the proxy was retrying the dead shard
    fails, so failed keys are sent again (at most 20 rounds)."""
    owners = load_owners(owners_path, n)
    r = connect(proxy)
    todo = [i for i in range(n) if owners[i] == dead]
    rounds = 0
    while todo and rounds < 20:
        rounds += 1
        commands = [("SET", (f"key:{i}", f"moved-{i}")) for i in todo]
        replies = list(pipelined(r, commands))
        todo = [i for i, reply in zip(todo, replies) if reply is not True]
    return {"left": len(todo), "rounds": rounds}


def cmd_moved(shards, n, owners_path, dead):
    owners = load_owners(owners_path, n)
    held = holdings(shards, n, skip=dead)
    where = {}
    bad = []
    for i in range(n):
        if owners[i] != dead:
            continue
        having = [s for s, (values, _) in enumerate(held) if values[i] == f"moved-{i}"]
        key = ",".join(map(str, having)) or "none"
        where[key] = where.get(key, 0) + 1
        if len(having) != 1 and len(bad) < 5:
            bad.append(f"key:{i}: {[values[i] for values, _ in held]}")
    return {"where": where, "bad": bad}


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "set":
        result = cmd_set(args[0], int(args[1]), int(args[2]))
    elif command == "read":
        result = cmd_read(args[0], int(args[1]), args[2])
    elif command == "owners":
        result = cmd_owners(args[0].split(","), int(args[1]), args[2])
    elif command == "move":
        result = cmd_move(args[0], int(args[1]), args[2], args[3])
    elif command == "moved":
        result = cmd_moved(args[0].split(","), int(args[1]), args[2], args[3])
    else:
        raise SystemExit(f"unknown command {command}")
    for name, value in flat(result):
        print(f"{name}={value}")


def flat(value, prefix=""):
    """(name, value) pairs of a dict of dicts; lists and scalars are values."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from flat(inner, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


if __name__ == "__main__":
    main(sys.argv)
