"""kvs.KvStore.compare_and_set and update_value: semantics, threads, persistence."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, List, Optional

import pytest

import kvs

# (value before, expected, new, swapped, value after); None is absence.
CASES = [
    (None, None, b"new", True, b"new"),
    (None, None, None, True, None),
    (None, b"old", b"new", False, None),
    (None, b"", None, False, None),
    (b"old", b"old", b"new", True, b"new"),
    (b"old", b"old", None, True, None),
    (b"old", b"other", b"new", False, b"old"),
    (b"old", None, b"new", False, b"old"),
    (b"", None, b"new", False, b""),
    (b"", b"", None, True, None),
]


@pytest.mark.parametrize("before, expected, new, swapped, after", CASES)
def test_compare_and_set_follows_its_table(
    db: kvs.KvStore,
    before: Optional[bytes],
    expected: Optional[bytes],
    new: Optional[bytes],
    swapped: bool,
    after: Optional[bytes],
) -> None:
    if before is not None:
        db[b"k"] = before
    assert db.compare_and_set(b"k", expected, new) is swapped
    assert db.get(b"k") == after
    assert (b"k" in db) == (after is not None)


def test_compare_and_set_takes_str_and_checks_types(db: kvs.KvStore) -> None:
    assert db.compare_and_set("k", None, "é")
    assert db.compare_and_set("k", "é", "x")
    assert db[b"k"] == b"x"
    with pytest.raises(TypeError):
        db.compare_and_set(b"k", bytearray(b"x"), b"y")
    with pytest.raises(TypeError):
        db.compare_and_set(b"k", b"x", 1)
    assert db[b"k"] == b"x"


def test_compare_and_set_on_a_closed_store_is_value_error(tmp_path: Path, engine: str) -> None:
    store = kvs.KvStore(tmp_path / "data", engine=engine)
    store.close()
    with pytest.raises(ValueError):
        store.compare_and_set(b"k", None, b"v")


def test_update_value_stores_what_func_returns(db: kvs.KvStore) -> None:
    seen: List[Optional[bytes]] = []

    def append(old: Optional[bytes]) -> bytes:
        seen.append(old)
        return (old or b"") + b"!"

    assert db.update_value(b"k", append) == b"!"
    assert db.update_value("k", append) == b"!!"
    assert seen == [None, b"!"]
    assert db[b"k"] == b"!!"
    assert db.update_value(b"k", lambda old: None) is None
    assert b"k" not in db
    assert db.update_value(b"k", lambda old: "text") == b"text"


def test_update_value_propagates_an_exception_and_writes_nothing(db: kvs.KvStore) -> None:
    db[b"k"] = b"v"

    def fail(old: Optional[bytes]) -> bytes:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        db.update_value(b"k", fail)
    with pytest.raises(TypeError):
        db.update_value(b"k", lambda old: 42)
    assert db[b"k"] == b"v"


def test_update_value_func_may_use_the_store(db: kvs.KvStore) -> None:
    db[b"source"] = b"copied"
    assert db.update_value(b"target", lambda old: db[b"source"]) == b"copied"
    assert db[b"target"] == b"copied"


THREADS, STEPS = 8, 200


def run_threads(step: Callable[[], None]) -> None:
    """THREADS threads, started together, each calling step() STEPS times."""
    barrier = threading.Barrier(THREADS)
    errors: List[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(STEPS):
                step()
        except BaseException as e:  # reported below, on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_threads_incrementing_with_compare_and_set_lose_nothing(db: kvs.KvStore) -> None:
    def increment() -> None:
        while True:
            old = db.get(b"n")
            if db.compare_and_set(b"n", old, str(int(old or 0) + 1)):
                return

    run_threads(increment)
    assert db[b"n"] == str(THREADS * STEPS).encode()


def test_threads_incrementing_with_update_value_lose_nothing(db: kvs.KvStore) -> None:
    run_threads(lambda: db.update_value(b"n", lambda old: str(int(old or 0) + 1)))
    assert db[b"n"] == str(THREADS * STEPS).encode()


def test_compare_and_set_writes_survive_reopen(tmp_path: Path, engine: str) -> None:
    with kvs.KvStore(tmp_path / "data", engine=engine) as db:
        assert db.compare_and_set(b"created", None, b"1")
        db[b"removed"] = b"x"
        assert db.compare_and_set(b"removed", b"x", None)
        assert not db.compare_and_set(b"refused", b"x", b"y")
        db.update_value(b"updated", lambda old: b"42")
    with kvs.KvStore(tmp_path / "data") as db:
        assert db.get(b"created") == b"1"
        assert b"removed" not in db
        assert b"refused" not in db
        assert db.get(b"updated") == b"42"
        assert len(db) == 2
