"""redis-py's transactions against a kvs-server: `pipeline()` with `transaction=True` (MULTI/
EXEC) and `False` (plain pipelining), and `transaction()` with WATCH retries while other
clients write the same keys. Run by tests/tests/redis_multi.rs as

    python redis_py.py HOST PORT PROTOCOL

(PROTOCOL 2 or 3). Every check is an assert; the last line printed is `ok` and the counts."""

import sys
import threading

import redis

host, port, protocol = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def client():
    return redis.Redis(host=host, port=port, protocol=protocol, decode_responses=True)


r = client()
r.flushall()

# pipeline(): a MULTI/EXEC transaction by default.
p = r.pipeline()
p.set("a", "1").incr("a").incrby("a", 10).get("a").mset({"b": "x", "c": "y"}).mget("a", "b", "c")
assert p.execute() == [True, 2, 12, "12", True, ["12", "x", "y"]], "pipeline(transaction=True)"

# A command failing at run time inside EXEC: the pipeline raises, and the others applied.
p = r.pipeline(transaction=True)
p.set("d", "1").incr("b").set("e", "2")
try:
    p.execute()
    raise AssertionError("INCR of a non-integer inside EXEC did not raise")
except redis.exceptions.ResponseError as e:
    assert "value is not an integer" in str(e), e
assert r.get("d") == "1" and r.get("e") == "2", "the other commands of EXEC apply"
p = r.pipeline(transaction=True)
p.set("f", "1").incr("b").set("g", "2")
assert [type(x).__name__ for x in p.execute(raise_on_error=False)] == [
    "bool",
    "ResponseError",
    "bool",
]

# A queuing error (unknown command): EXECABORT, nothing applied.
p = r.pipeline(transaction=True)
p.set("h", "1").execute_command("NOSUCHCOMMAND").set("i", "2")
try:
    p.execute()
    raise AssertionError("a queuing error did not abort")
except redis.exceptions.ResponseError as e:
    assert "NOSUCHCOMMAND" in str(e) or "EXECABORT" in str(e), e
assert r.exists("h", "i") == 0, "nothing of an aborted transaction applies"

# pipeline(transaction=False): pipelined, no MULTI.
p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"k{i}", i)
p.incr("k7").get("k7").dbsize()
replies = p.execute()
assert replies[:100] == [True] * 100 and replies[100:] == [8, "8", 100 + 7], replies[100:]

# transaction(): WATCH, read, MULTI, write, EXEC, retried on a WatchError, while other
# clients change the same key with plain INCRs.
WORKERS, ROUNDS, PLAIN = 4, 50, 200
r.set("counter", 0)
retries = []


def watched_incr(pipe):
    value = int(pipe.get("counter"))
    pipe.multi()
    pipe.set("counter", value + 1)


def worker():
    c = client()
    for _ in range(ROUNDS):
        c.transaction(watched_incr, "counter")


def plain():
    c = client()
    for _ in range(PLAIN):
        c.incr("counter")


threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
threads += [threading.Thread(target=plain) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
total = int(r.get("counter"))
assert total == WORKERS * ROUNDS + 2 * PLAIN, total

# The WATCH abort itself: a key changed by another client between WATCH and EXEC.
p = r.pipeline()
p.watch("a")
other = client()
other.set("a", "changed")
p.multi()
p.set("a", "mine")
try:
    p.execute()
    raise AssertionError("EXEC ran although a watched key changed")
except redis.exceptions.WatchError:
    pass
assert r.get("a") == "changed"
p.reset()

print("ok", protocol, total)
