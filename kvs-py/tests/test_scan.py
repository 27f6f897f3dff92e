"""kvs.KvStore walks over keys (scan, scan_iter, keys(prefix=, match=), iteration) and
get_many, on both engines."""

from __future__ import annotations

import collections.abc
from pathlib import Path

import pytest

import kvs

USERS = [f"user:{i:04d}".encode() for i in range(1000)]
OTHERS = [f"other:{i}".encode() for i in range(50)]


def fill(db: kvs.KvStore) -> None:
    with db.batch() as b:
        for key in USERS + OTHERS:
            b[key] = b"v"
        b[b""] = b"the empty key"


def walk(db: kvs.KvStore, **kwargs: object) -> tuple[list[bytes], int]:
    """Every key of a whole scan walk (with repeats, if any), and the number of calls."""
    cursor, seen, calls = 0, [], 0
    while True:
        cursor, keys = db.scan(cursor, **kwargs)  # type: ignore[arg-type]
        assert isinstance(cursor, int) and all(type(k) is bytes for k in keys)
        seen.extend(keys)
        calls += 1
        assert calls < 100_000, "the walk does not end"
        if cursor == 0:
            return seen, calls


def test_a_scan_walk_returns_every_key(db: kvs.KvStore) -> None:
    fill(db)
    seen, calls = walk(db, count=10)
    assert set(seen) == set(USERS + OTHERS + [b""])
    # count is the work per call: a walk of 1051 keys takes more than one call.
    assert calls > 1
    seen, _ = walk(db)  # the default count
    assert set(seen) == set(USERS + OTHERS + [b""])


def test_scan_filters_by_prefix_and_glob(db: kvs.KvStore) -> None:
    fill(db)
    seen, _ = walk(db, count=7, prefix=b"user:00")
    assert set(seen) == set(USERS[:100])
    seen, _ = walk(db, count=50, prefix="user:", match="*7")
    assert set(seen) == {k for k in USERS if k.endswith(b"7")}
    seen, _ = walk(db, match=b"other:[1-2]")
    assert set(seen) == {b"other:1", b"other:2"}
    seen, _ = walk(db, match=b"other:?")
    assert set(seen) == {f"other:{i}".encode() for i in range(10)}
    # The empty pattern matches only the empty key, as in Redis.
    seen, _ = walk(db, match=b"")
    assert set(seen) == {b""}


def test_glob_escapes_and_binary_keys(db: kvs.KvStore) -> None:
    db[b"a*b"] = b"v"
    db[b"axb"] = b"v"
    db[b"\x00\xff"] = b"v"
    assert set(walk(db, match=rb"a\*b")[0]) == {b"a*b"}
    assert set(walk(db, match=b"a*b")[0]) == {b"a*b", b"axb"}
    assert set(walk(db, prefix=b"\x00")[0]) == {b"\x00\xff"}


def test_keys_set_throughout_a_walk_come_back_while_others_change(db: kvs.KvStore) -> None:
    fill(db)
    cursor, seen, step = 0, set(), 0
    while True:
        cursor, keys = db.scan(cursor, count=10)
        seen.update(keys)
        # Writes go on during the walk.
        db.pop(OTHERS[step % len(OTHERS)], None)
        db[f"new:{step}"] = b"v"
        step += 1
        if cursor == 0:
            break
    assert set(USERS) <= seen
    assert b"" in seen


@pytest.mark.parametrize("count", [0, -1])
def test_a_count_below_one_raises_value_error(db: kvs.KvStore, count: int) -> None:
    with pytest.raises(ValueError, match="count"):
        db.scan(0, count)
    with pytest.raises(ValueError, match="count"):
        db.scan_iter(count=count)


def test_scan_checks_its_argument_types(db: kvs.KvStore) -> None:
    with pytest.raises(TypeError, match="cursor"):
        db.scan("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cursor"):
        db.scan(False)
    with pytest.raises(ValueError, match="cursor"):
        db.scan(-1)
    with pytest.raises(ValueError, match="cursor"):
        db.scan(2**64)
    with pytest.raises(TypeError, match="count"):
        db.scan(0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prefix"):
        db.scan(0, 10, prefix=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="match"):
        db.scan(0, 10, match=bytearray(b"*"))  # type: ignore[arg-type]


def test_scan_iter_and_filtered_keys_walk_the_filter(db: kvs.KvStore) -> None:
    fill(db)
    it = db.scan_iter(prefix=b"user:09", match=b"*0")
    assert isinstance(it, kvs.KeyIterator)
    assert iter(it) is it
    assert set(it) == {k for k in USERS[900:] if k.endswith(b"0")}
    assert list(it) == []  # exhausted
    assert set(db.scan_iter(match="other:*", count=3)) == set(OTHERS)
    assert set(db.keys(prefix="other:")) == set(OTHERS)
    assert set(db.keys(match=b"user:000?")) == set(USERS[:10])


def test_keys_without_arguments_is_the_mappings_view(db: kvs.KvStore) -> None:
    fill(db)
    view = db.keys()
    assert isinstance(view, collections.abc.KeysView)
    assert len(view) == len(USERS) + len(OTHERS) + 1
    assert b"user:0001" in view
    assert set(view) == set(USERS + OTHERS + [b""])
    assert view & {b"user:0001", b"nope"} == {b"user:0001"}


def test_iteration_walks_pages_instead_of_copying_every_key(db: kvs.KvStore) -> None:
    """The iterator reads the store a page at a time: once the store is closed, the next
    page cannot be read. (A copy of the key set taken at the start would go on.)"""
    fill(db)
    it = iter(db)
    first = next(it)
    db.close()
    rest = []
    with pytest.raises(ValueError, match="closed"):
        for key in it:
            rest.append(key)
    # Only what the first page held came out: far fewer than the 1051 keys.
    assert 1 + len(rest) < len(USERS)
    assert type(first) is bytes
    assert isinstance(it, kvs.KeyIterator)


def test_changing_the_store_while_iterating_is_safe(db: kvs.KvStore) -> None:
    for i in range(200):
        db[f"keep:{i}"] = b"v"
    for i in range(50):
        db[f"churn:{i}"] = b"v"
    seen = set()
    added = 0
    for key in db:
        seen.add(key)
        if added < 50:
            db.pop(f"churn:{added}", None)
            db[f"added:{added}"] = b"v"
            added += 1
    assert {f"keep:{i}".encode() for i in range(200)} <= seen
    assert len(db) == 250


def test_get_many_reads_keys_in_order(db: kvs.KvStore) -> None:
    db[b"a"] = b"1"
    db["b"] = ""
    assert db.get_many([b"a", b"missing", "b", b"a"]) == [b"1", None, b"", b"1"]
    assert db.get_many([]) == []
    # Any iterable of keys, a generator too.
    assert db.get_many(k for k in ("a", "b")) == [b"1", b""]


def test_get_many_refuses_a_single_key_and_bad_keys(db: kvs.KvStore) -> None:
    db[b"a"] = b"1"
    with pytest.raises(TypeError, match="single str key"):
        db.get_many("ab")
    with pytest.raises(TypeError, match="single bytes key"):
        db.get_many(b"ab")
    with pytest.raises(TypeError, match="key must be bytes or str"):
        db.get_many([b"a", 1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        db.get_many(5)  # type: ignore[arg-type]


def test_new_methods_after_close_raise_value_error(tmp_path: Path) -> None:
    db = kvs.KvStore(tmp_path)
    db.close()
    for call in (
        lambda: db.scan(),
        lambda: list(db.scan_iter()),
        lambda: db.get_many([b"k"]),
        lambda: db.set(b"k", b"v", ttl=1),
        lambda: db.expire(b"k", 1),
        lambda: db.ttl(b"k"),
        lambda: db.persist(b"k"),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()
