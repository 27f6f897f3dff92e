"""kvs.KvStore deadlines: set(..., ttl=), expire, ttl, persist, on both engines."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

import kvs


def wait_past(moment: float) -> None:
    """Sleeps until the real-time clock (the one kvs compares deadlines with) is past
    `moment`. A wait for the clock, not a bound on kvs: it cannot flake."""
    while time.time() <= moment:
        time.sleep(0.01)


def test_set_with_a_ttl_gives_the_key_a_deadline(db: kvs.KvStore) -> None:
    before = time.time()
    db.set(b"k", b"v", ttl=60)
    left = db.ttl(b"k")
    assert left is not None
    # Rounded up to the millisecond, counted from the call: at most 60 s and a millisecond.
    assert 0 < left <= 60.001
    assert left >= 60 - (time.time() - before) - 0.001
    assert db[b"k"] == b"v"


def test_a_key_without_a_deadline_has_ttl_none_and_a_missing_one_raises(
    db: kvs.KvStore,
) -> None:
    db[b"k"] = b"v"
    assert db.ttl(b"k") is None
    with pytest.raises(KeyError) as info:
        db.ttl("missing")
    assert info.value.args == ("missing",)


def test_ttl_accepts_int_float_and_timedelta(db: kvs.KvStore) -> None:
    db.set("i", "v", ttl=100)
    db.set("f", "v", ttl=0.5)
    db.set("d", "v", ttl=datetime.timedelta(minutes=2))
    ttl_i, ttl_f, ttl_d = db.ttl("i"), db.ttl("f"), db.ttl("d")
    assert ttl_i is not None and 99 < ttl_i <= 100
    assert ttl_f is not None and 0 < ttl_f <= 0.5
    assert ttl_d is not None and 119 < ttl_d <= 120
    # A tiny positive ttl still makes a deadline ahead (rounded up to 1 ms), never one that
    # has passed already: the key is set with a deadline (it may have expired by the read).
    db.set("tiny", "v", ttl=1e-9)


@pytest.mark.parametrize("bad", [0, -1, -0.5, 0.0])
def test_a_ttl_that_is_not_positive_raises_value_error(db: kvs.KvStore, bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        db.set(b"k", b"v", ttl=bad)
    assert b"k" not in db


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_ttl_that_is_not_finite_raises_value_error(db: kvs.KvStore, bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        db.set(b"k", b"v", ttl=bad)
    with pytest.raises(ValueError, match="finite"):
        db.expire(b"k", bad)
    assert b"k" not in db


def test_a_huge_ttl_raises_value_error(db: kvs.KvStore) -> None:
    with pytest.raises(ValueError, match="too large"):
        db.set(b"k", b"v", ttl=1e300)
    assert b"k" not in db


@pytest.mark.parametrize("bad", [True, "10", b"10", [10], object()])
def test_a_ttl_of_another_type_raises_type_error(db: kvs.KvStore, bad: object) -> None:
    with pytest.raises(TypeError, match="number of seconds"):
        db.set(b"k", b"v", ttl=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="number of seconds"):
        db.expire(b"k", bad)  # type: ignore[arg-type]


def test_a_plain_set_clears_the_deadline(db: kvs.KvStore) -> None:
    db.set(b"k", b"v", ttl=60)
    db.set(b"k", b"w")
    assert db.ttl(b"k") is None
    db.set(b"k", b"v", ttl=60)
    db[b"k"] = b"x"
    assert db.ttl(b"k") is None


def test_compare_and_set_keeps_the_deadline(db: kvs.KvStore) -> None:
    db.set(b"n", b"1", ttl=60)
    assert db.compare_and_set(b"n", b"1", b"2")
    assert db[b"n"] == b"2"
    left = db.ttl(b"n")
    assert left is not None and 0 < left <= 60


def test_expire_and_persist(db: kvs.KvStore) -> None:
    db[b"k"] = b"v"
    assert db.expire(b"k", 30) is True
    left = db.ttl(b"k")
    assert left is not None and 0 < left <= 30
    assert db[b"k"] == b"v"
    assert db.expire(b"k", datetime.timedelta(seconds=90)) is True
    left = db.ttl(b"k")
    assert left is not None and 60 < left <= 90
    assert db.persist(b"k") is True
    assert db.ttl(b"k") is None
    assert db.persist(b"k") is False
    assert db[b"k"] == b"v"
    # A key that is not set: nothing is created.
    assert db.expire(b"missing", 30) is False
    assert db.persist(b"missing") is False
    assert b"missing" not in db


@pytest.mark.parametrize("seconds", [0, -5, -0.001])
def test_expire_with_no_time_left_removes_the_key(db: kvs.KvStore, seconds: float) -> None:
    # As redis-server's EXPIRE with a time that is not positive.
    db[b"k"] = b"v"
    assert db.expire(b"k", seconds) is True
    assert b"k" not in db
    assert db.expire(b"k", seconds) is False


def test_an_expired_key_is_gone_for_every_read(db: kvs.KvStore) -> None:
    db[b"stays"] = b"v"
    db.set(b"goes", b"v", ttl=0.05)
    after = time.time()
    assert db.get(b"goes") == b"v"
    # The deadline is at most 50 ms (and the millisecond rounded up) after the call.
    wait_past(after + 0.052)
    assert b"goes" not in db
    assert db.get(b"goes") is None
    with pytest.raises(KeyError):
        db[b"goes"]
    with pytest.raises(KeyError):
        db.ttl(b"goes")
    assert len(db) == 1
    assert list(db) == [b"stays"]
    assert db.get_many([b"goes", b"stays"]) == [None, b"v"]
    assert set(db.scan_iter()) == {b"stays"}
    assert db.expire(b"goes", 10) is False
    assert db.compare_and_set(b"goes", None, b"new") is True
    assert db.ttl(b"goes") is None


def test_deadlines_survive_reopening(tmp_path: Path, engine: str) -> None:
    with kvs.KvStore(tmp_path, engine=engine) as db:
        db.set(b"k", b"v", ttl=3600)
        db.set(b"short", b"v", ttl=0.05)
        after = time.time()
    wait_past(after + 0.052)
    with kvs.KvStore(tmp_path) as db:
        left = db.ttl(b"k")
        assert left is not None and 3500 < left <= 3600
        assert b"short" not in db


def test_deadline_calls_check_their_key(db: kvs.KvStore) -> None:
    for call in (
        lambda: db.expire(1, 10),  # type: ignore[arg-type]
        lambda: db.ttl(None),  # type: ignore[arg-type]
        lambda: db.persist(bytearray(b"k")),  # type: ignore[arg-type]
        lambda: db.set(1, b"v", ttl=10),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="key must be bytes or str"):
            call()
