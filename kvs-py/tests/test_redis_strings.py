"""redis-py against the real kvs-server: the string, expiry and keyspace commands as a Python
program uses them (`set(ex=.., nx=..)`, `incr`, `expire`/`ttl`, `getex`, `scan_iter`, ...), on
both engines and both RESP versions (the `r` fixture of test_resp.py). The byte-for-byte
comparison with redis-server is tests/tests/redis_strings.rs.
"""

from __future__ import annotations

import threading
import time

import pytest

from test_resp import r, resp_server  # noqa: F401  (fixtures)

redis = pytest.importorskip(
    "redis", reason="redis-py is not installed: kvs-py/tests/run.sh installs it"
)


def test_set_with_expiry_and_conditions(r: "redis.Redis") -> None:
    assert r.set("lock", "me", ex=100, nx=True) is True
    assert r.set("lock", "you", ex=100, nx=True) is None
    assert r.get("lock") == b"me"
    assert 0 < r.ttl("lock") <= 100
    assert 0 < r.pttl("lock") <= 100_000
    assert r.set("lock", "me2", xx=True, keepttl=True) is True
    assert 0 < r.ttl("lock") <= 100
    assert r.set("lock", "me3", get=True) == b"me2"
    assert r.ttl("lock") == -1, "a plain SET clears the deadline"
    assert r.set("soon", "v", px=50_000) is True
    assert 0 < r.pttl("soon") <= 50_000
    assert r.set("gone", "v", exat=1) is True
    assert r.exists("gone") == 0
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.set("k", "v", ex=-5)
    # SETEX itself (redis-py deprecates its setex() wrapper in favour of set(ex=...)).
    assert r.execute_command("SETEX", "s", 100, "v") is True
    assert 0 < r.ttl("s") <= 100
    assert r.psetex("p", 100_000, "v") is True
    assert r.setnx("s", "w") is False
    assert r.setnx("fresh", "w") is True


def test_counters_are_atomic_and_keep_their_deadline(r: "redis.Redis", resp_server) -> None:  # noqa: F811
    assert r.incr("n") == 1
    assert r.incrby("n", 10) == 11
    assert r.decr("n") == 10
    assert r.decrby("n", 4) == 6
    assert r.expire("n", 100) is True
    assert r.incr("n") == 7
    assert 0 < r.ttl("n") <= 100, "INCR keeps the time to live, as in Redis"
    assert r.incrbyfloat("f", 10.5) == 10.5
    assert r.incrbyfloat("f", 0.1) == pytest.approx(10.6)
    r.set("text", "abc")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("text")

    def bump() -> None:
        client = redis.Redis(host="127.0.0.1", port=resp_server.port)
        for _ in range(200):
            client.incr("shared")
        client.close()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.get("shared") == b"800"


def test_expire_ttl_persist(r: "redis.Redis") -> None:
    r.set("k", "v")
    assert r.ttl("k") == -1
    assert r.ttl("missing") == -2
    assert r.expire("k", 100) is True
    assert 0 < r.ttl("k") <= 100
    assert r.expire("k", 50, gt=True) is False
    assert r.expire("k", 200, gt=True) is True
    assert r.expire("k", 10, nx=True) is False
    assert r.pexpire("k", 5_000, lt=True) is True
    assert 0 < r.pttl("k") <= 5_000
    assert r.expireat("k", 4102444800) is True
    assert r.expiretime("k") == 4102444800
    assert r.persist("k") is True
    assert r.persist("k") is False
    assert r.ttl("k") == -1
    assert r.pexpire("k", 1) is True
    time.sleep(0.05)
    assert r.get("k") is None
    assert r.exists("k") == 0
    assert r.expire("missing", 10) is False
    r.set("k", "v")
    assert r.expire("k", -1) is True
    assert r.exists("k") == 0, "a deadline in the past removes the key"


def test_getex_getdel_getset(r: "redis.Redis") -> None:
    r.set("k", "v")
    assert r.getex("k", ex=100) == b"v"
    assert 0 < r.ttl("k") <= 100
    assert r.getex("k", persist=True) == b"v"
    assert r.ttl("k") == -1
    assert r.getex("k", pxat=4102444800123) == b"v"
    assert r.pexpiretime("k") == 4102444800123
    assert r.getex("missing", ex=10) is None
    assert r.getset("k", "w") == b"v"
    assert r.ttl("k") == -1
    assert r.getdel("k") == b"w"
    assert r.getdel("k") is None


def test_strings(r: "redis.Redis") -> None:
    assert r.append("s", "Hello") == 5
    assert r.append("s", " World") == 11
    assert r.strlen("s") == 11
    assert r.getrange("s", 0, 4) == b"Hello"
    assert r.getrange("s", -5, -1) == b"World"
    assert r.setrange("s", 6, "Redis") == 11
    assert r.get("s") == b"Hello Redis"
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.msetnx({"b": "x", "c": "3"}) is False
    assert r.msetnx({"c": "3", "d": "4"}) is True
    assert r.mget("a", "b", "c", "d", "e") == [b"1", b"2", b"3", b"4", None]
    r.mset({"key1": "ohmytext", "key2": "mynewtext"})
    assert r.lcs("key1", "key2") == b"mytext"
    assert r.lcs("key1", "key2", len=True) == 6


def test_keyspace(r: "redis.Redis") -> None:
    for i in range(300):
        r.set(f"user:{i}", i)
    r.set("other", "x")
    assert set(r.scan_iter(match="user:*", count=17)) == {f"user:{i}".encode() for i in range(300)}
    assert set(r.scan_iter(_type="string", match="oth*")) == {b"other"}
    assert list(r.scan_iter(_type="list")) == []
    assert sorted(r.keys("user:1?")) == sorted(f"user:{i}".encode() for i in range(10, 20))
    assert r.type("other") == b"string"
    assert r.type("missing") == b"none"
    assert r.exists("other", "other", "missing") == 2
    assert r.touch("other") == 1
    assert r.randomkey() is not None
    assert r.dbsize() == 301
    r.set("t", "v", ex=100)
    assert r.rename("t", "u") is True
    assert 0 < r.ttl("u") <= 100, "the deadline moves with the key"
    assert r.renamenx("u", "other") is False
    with pytest.raises(redis.ResponseError, match="no such key"):
        r.rename("missing", "x")
    assert r.copy("other", "copy") is True
    assert r.copy("other", "copy") is False
    assert r.copy("other", "copy", replace=True) is True
    assert r.object("encoding", "user:1") == b"int"
    assert r.delete("copy", "copy", "missing") == 1
    assert r.unlink("u") == 1
    assert r.flushdb() is True
    assert r.dbsize() == 0
    r.set("k", "v")
    assert r.flushall(asynchronous=True) is True
    assert r.dbsize() == 0
