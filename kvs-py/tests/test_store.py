"""kvs.KvStore: the mapping protocol, types, persistence, both engines, threads."""

from __future__ import annotations

import collections.abc
import os
import sys
import threading
import time
from pathlib import Path

import pytest

import kvs


def test_is_a_mutable_mapping(db: kvs.KvStore) -> None:
    assert isinstance(db, collections.abc.MutableMapping)
    assert isinstance(db, kvs.KvStore)


def test_set_get_delete_through_the_mapping_protocol(db: kvs.KvStore) -> None:
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
    assert b"k" in db
    assert len(db) == 1
    del db[b"k"]
    assert b"k" not in db
    assert len(db) == 0


def test_overwrite_replaces_the_value(db: kvs.KvStore) -> None:
    db[b"k"] = b"first"
    db[b"k"] = b"second"
    assert db[b"k"] == b"second"
    assert len(db) == 1


def test_missing_key_raises_key_error_carrying_the_key(db: kvs.KvStore) -> None:
    with pytest.raises(KeyError) as info:
        db[b"nope"]
    assert info.value.args == (b"nope",)
    with pytest.raises(KeyError) as info:
        del db["nope"]
    assert info.value.args == ("nope",)
    with pytest.raises(KeyError):
        db.remove(b"nope")


def test_get_returns_default_for_a_missing_key(db: kvs.KvStore) -> None:
    assert db.get(b"nope") is None
    marker = object()
    assert db.get(b"nope", marker) is marker
    db[b"k"] = b"v"
    assert db.get(b"k", marker) == b"v"


def test_set_and_remove_methods(db: kvs.KvStore) -> None:
    db.set("a", "1")
    assert db["a"] == b"1"
    db.remove("a")
    assert "a" not in db


def test_iteration_yields_every_key_as_bytes(db: kvs.KvStore) -> None:
    expected = {f"key{i}".encode() for i in range(100)}
    for k in expected:
        db[k] = b"x"
    assert set(db) == expected
    assert set(db.keys()) == expected
    assert dict(db.items()) == {k: b"x" for k in expected}
    assert sorted(db.values()) == [b"x"] * 100


def test_removing_every_key_while_iterating_is_safe(db: kvs.KvStore) -> None:
    # Iteration walks the store a page at a time (see test_scan.py for writes during it).
    for i in range(10):
        db[str(i)] = "v"
    for k in db:
        del db[k]
    assert len(db) == 0


def test_mutable_mapping_mixins_work(db: kvs.KvStore) -> None:
    db.update({b"a": b"1", b"b": b"2"})
    db.update([(b"c", b"3")])
    assert db.setdefault(b"a", b"other") == b"1"
    assert db.setdefault(b"d", b"4") == b"4"
    assert db.pop(b"a") == b"1"
    assert db.pop(b"a", None) is None
    key, value = db.popitem()
    assert key not in db
    assert db == {k: v for k, v in {b"b": b"2", b"c": b"3", b"d": b"4"}.items() if k != key}
    db.clear()
    assert len(db) == 0


def test_str_is_encoded_as_utf8_and_values_come_back_as_bytes(db: kvs.KvStore) -> None:
    db["clé"] = "värde ☃"
    assert db["clé"] == "värde ☃".encode()
    assert db["clé".encode()] == "värde ☃".encode()
    assert "clé".encode() in db
    assert list(db) == ["clé".encode()]


@pytest.mark.parametrize("bad", [1, 1.5, None, bytearray(b"k"), memoryview(b"k"), ["k"], object()])
def test_keys_of_other_types_raise_type_error(db: kvs.KvStore, bad: object) -> None:
    with pytest.raises(TypeError, match="key must be bytes or str"):
        db[bad] = b"v"  # type: ignore[index]
    with pytest.raises(TypeError):
        db[bad]  # type: ignore[index]
    with pytest.raises(TypeError):
        bad in db
    with pytest.raises(TypeError):
        del db[bad]  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.get(bad)  # type: ignore[call-overload]
    assert len(db) == 0


@pytest.mark.parametrize("bad", [1, None, bytearray(b"v"), memoryview(b"v"), {"v": 1}])
def test_values_of_other_types_raise_type_error(db: kvs.KvStore, bad: object) -> None:
    with pytest.raises(TypeError, match="value must be bytes or str"):
        db[b"k"] = bad  # type: ignore[assignment]
    assert b"k" not in db


def test_unencodable_str_raises_unicode_error(db: kvs.KvStore) -> None:
    with pytest.raises(UnicodeEncodeError):
        db["\ud800"] = b"v"


def test_binary_keys_and_values_round_trip(db: kvs.KvStore) -> None:
    every_byte = bytes(range(256))
    db[every_byte] = every_byte[::-1]
    db[b"\x00"] = b"\x00\x00"
    db[b""] = b""
    assert db[every_byte] == every_byte[::-1]
    assert db[b"\x00"] == b"\x00\x00"
    assert db[b""] == b""
    assert set(db) == {every_byte, b"\x00", b""}


def test_large_values_round_trip(db: kvs.KvStore) -> None:
    big = os.urandom(8 << 20)
    db[b"big"] = big
    assert db[b"big"] == big


def test_key_over_the_size_limit_raises_value_error(tmp_path: Path) -> None:
    # The kvs engine enforces the documented limits (1 MiB keys).
    with kvs.KvStore(tmp_path, engine="kvs") as db:
        with pytest.raises(ValueError):
            db[b"k" * ((1 << 20) + 1)] = b"v"


def test_data_persists_across_close_and_reopen(tmp_path: Path, engine: str) -> None:
    with kvs.KvStore(tmp_path, engine=engine) as db:
        for i in range(1000):
            db[f"k{i}"] = f"v{i}"
        del db["k0"]
    with kvs.KvStore(tmp_path) as db:
        assert db.engine == engine
        assert len(db) == 999
        assert "k0" not in db
        assert db["k999"] == b"v999"


def test_directory_can_be_reopened_right_after_close(tmp_path: Path, engine: str) -> None:
    for round_ in range(5):
        db = kvs.KvStore(tmp_path, engine=engine)
        db[b"round"] = str(round_)
        db.close()
    with kvs.KvStore(tmp_path) as db:
        assert db[b"round"] == b"4"


def test_new_directory_defaults_to_the_kvs_engine(tmp_path: Path) -> None:
    with kvs.KvStore(tmp_path / "new") as db:
        assert db.engine == "kvs"
    assert (tmp_path / "new" / "engine").read_text().strip() == "kvs"


def test_path_may_be_a_str_or_a_pathlike(tmp_path: Path) -> None:
    with kvs.KvStore(str(tmp_path / "a")) as db:
        db["k"] = "v"
        assert db.path == tmp_path / "a"
    with kvs.KvStore(tmp_path / "a") as db:
        assert db["k"] == b"v"


def test_flush_succeeds_and_keeps_data(db: kvs.KvStore) -> None:
    db[b"k"] = b"v"
    db.flush()
    assert db[b"k"] == b"v"


def test_context_manager_closes_the_store(tmp_path: Path) -> None:
    with kvs.KvStore(tmp_path) as db:
        db[b"k"] = b"v"
        assert not db.closed
    assert db.closed
    assert "closed" in repr(db)


def test_context_manager_closes_on_error_and_lets_it_through(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with kvs.KvStore(tmp_path) as db:
            db[b"k"] = b"v"
            raise RuntimeError("boom")
    assert db.closed
    with kvs.KvStore(tmp_path) as db:
        assert db[b"k"] == b"v"


def test_every_use_after_close_raises_value_error(db: kvs.KvStore) -> None:
    db[b"k"] = b"v"
    db.close()
    db.close()  # closing twice is fine
    calls = [
        lambda: db[b"k"],
        lambda: db.__setitem__(b"k", b"v"),
        lambda: db.__delitem__(b"k"),
        lambda: b"k" in db,
        lambda: len(db),
        lambda: list(db),
        lambda: db.get(b"k"),
        lambda: db.set(b"k", b"v"),
        lambda: db.remove(b"k"),
        lambda: db.flush(),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="closed"):
            call()


def test_repr_names_path_and_engine(db: kvs.KvStore) -> None:
    text = repr(db)
    assert text.startswith("<kvs.KvStore open")
    assert db.engine in text


def test_one_store_is_safe_to_share_between_threads(db: kvs.KvStore) -> None:
    threads_n, per_thread = 8, 300
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                key = f"t{t}-{i}"
                db[key] = key * 3
                assert db[key] == (key * 3).encode()
                if i % 3 == 0:
                    del db[key]
        except BaseException as e:  # reported below, on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(db) == threads_n * (per_thread - len(range(0, per_thread, 3)))
    assert db["t7-1"] == b"t7-1t7-1t7-1"


def test_close_while_other_threads_use_the_store_never_crashes(tmp_path: Path) -> None:
    db = kvs.KvStore(tmp_path)
    outcomes: list[str] = []

    def hammer() -> None:
        for i in range(100_000):
            try:
                db[b"k"] = str(i)
            except ValueError:
                outcomes.append("closed")
                return
        outcomes.append("finished")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    db.close()
    for t in threads:
        t.join()
    # A thread that died of anything but ValueError would have recorded no outcome.
    assert len(outcomes) == 4
    with kvs.KvStore(tmp_path) as again:
        assert len(again) <= 1


def test_other_python_threads_run_while_the_store_works(tmp_path: Path) -> None:
    # With a huge switch interval the interpreter never takes the GIL from a thread by
    # force: the ticker runs during a store call only if the call released the GIL.
    ticks: list[int] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.0002)

    old_interval = sys.getswitchinterval()
    value = b"x" * (32 << 20)
    with kvs.KvStore(tmp_path) as db:
        sys.setswitchinterval(60.0)
        thread = threading.Thread(target=ticker)
        try:
            thread.start()
            while not ticks:
                time.sleep(0.001)
            ran_during_call = False
            # Each call writes 32 MiB; a few tries leave room for a stalled scheduler.
            for attempt in range(20):
                before = len(ticks)
                db[b"big"] = value
                if len(ticks) > before:
                    ran_during_call = True
                    break
        finally:
            stop.set()
            sys.setswitchinterval(old_interval)
            thread.join()
    assert ran_during_call


def test_checkpoint_while_a_thread_writes(tmp_path: Path, engine: str) -> None:
    """The copy holds a counter value between the last one acknowledged before the call and
    the last one issued before it returned, opens as a store of the same engine, and is
    independent of its source."""
    db = kvs.KvStore(tmp_path / "data", engine=engine)
    progress = {"issued": 0, "acked": 0}
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                progress["issued"] = n
                db[b"counter"] = str(n).encode()
                progress["acked"] = n
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while progress["acked"] < 50 and not errors:
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.001)
        lower = progress["acked"]
        # str and os.PathLike both name the destination.
        db.checkpoint(str(tmp_path / "copy"))
        upper = progress["issued"]
        db.checkpoint(tmp_path / "copy2")
        while progress["acked"] < upper + 20 and not errors:
            assert time.monotonic() < deadline, "the writer stopped after the checkpoint"
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    source_counter = int(db[b"counter"])

    with kvs.KvStore(tmp_path / "copy") as copy:
        assert copy.engine == engine
        copied = int(copy[b"counter"])
        assert lower <= copied <= upper
        copy[b"only-in-copy"] = b"1"
    assert source_counter > copied
    assert b"only-in-copy" not in db
    assert int(db[b"counter"]) == source_counter
    with kvs.KvStore(tmp_path / "copy2") as copy2:
        assert int(copy2[b"counter"]) >= copied
    db.close()


def test_checkpoint_into_a_non_empty_directory_fails_untouched(
    tmp_path: Path, db: kvs.KvStore
) -> None:
    db[b"k"] = b"v"
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "precious").write_bytes(b"keep me")
    with pytest.raises(kvs.KvsIOError) as info:
        db.checkpoint(dest)
    assert "not empty" in str(info.value)
    assert isinstance(info.value, OSError)
    assert sorted(p.name for p in dest.iterdir()) == ["precious"]
    assert (dest / "precious").read_bytes() == b"keep me"
