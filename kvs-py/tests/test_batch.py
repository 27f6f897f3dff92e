"""kvs.KvStore.batch(): writes applied all or nothing, on both engines, across threads and
across a kill -9 of the writing process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kvs


def test_a_batch_is_the_shared_batch_class(db: kvs.KvStore) -> None:
    batch = db.batch()
    assert type(batch) is kvs.Batch
    assert len(batch) == 0
    assert "0 operation(s)" in repr(batch) and "kvs.KvStore" in repr(batch)


def test_the_with_block_applies_every_operation(db: kvs.KvStore, tmp_path: Path) -> None:
    db[b"from"] = b"10"
    db[b"pending"] = b"yes"
    with db.batch() as b:
        b[b"from"] = b"7"
        b["to"] = "3"
        del b[b"pending"]
        del b[b"never set"]  # not an error in a batch
        b.set(b"session", b"token", ttl=3600)
        b.set(b"twice", b"first")
        b.set(b"twice", b"second")
        b.remove(b"to-be")
        assert len(b) == 8
        # Nothing lands before the block ends.
        assert db[b"from"] == b"10"
        assert b"to" not in db
    assert len(b) == 0
    assert db[b"from"] == b"7"
    assert db[b"to"] == b"3"
    assert b"pending" not in db
    assert db[b"twice"] == b"second"
    assert db[b"session"] == b"token"
    left = db.ttl(b"session")
    assert left is not None and 3500 < left <= 3600
    assert db.ttl(b"from") is None
    assert "committed" in repr(b)
    db.close()
    with kvs.KvStore(db.path) as again:
        assert again[b"to"] == b"3"
        assert b"pending" not in again
        assert again.ttl(b"session") is not None


def test_a_block_that_raises_applies_nothing(db: kvs.KvStore) -> None:
    db[b"k"] = b"before"
    with pytest.raises(RuntimeError, match="boom"):
        with db.batch() as b:
            b[b"k"] = b"after"
            b[b"new"] = b"v"
            del b[b"k"]
            raise RuntimeError("boom")
    assert db[b"k"] == b"before"
    assert b"new" not in db
    assert len(b) == 0
    assert "discarded" in repr(b)
    with pytest.raises(ValueError, match="discarded"):
        b[b"k"] = b"v"
    with pytest.raises(ValueError, match="discarded"):
        b.commit()


def test_commit_and_discard_by_hand(db: kvs.KvStore) -> None:
    b = db.batch()
    b[b"a"] = b"1"
    b.commit()
    assert db[b"a"] == b"1"
    with pytest.raises(ValueError, match="already committed"):
        b.commit()
    with pytest.raises(ValueError, match="already committed"):
        b[b"a"] = b"2"
    with pytest.raises(ValueError, match="already committed"):
        b.discard()
    assert db[b"a"] == b"1"

    d = db.batch()
    d[b"b"] = b"1"
    d.discard()
    d.discard()  # twice is fine
    assert b"b" not in db

    # A block that committed or discarded its batch itself: the end of the block leaves it.
    with db.batch() as c:
        c[b"c"] = b"1"
        c.commit()
    assert db[b"c"] == b"1"
    with db.batch() as e:
        e[b"e"] = b"1"
        e.discard()
    assert b"e" not in db


def test_an_empty_batch_commits_and_writes_nothing(db: kvs.KvStore) -> None:
    with db.batch():
        pass
    assert len(db) == 0


def test_a_failed_commit_writes_nothing_and_leaves_the_batch_open(tmp_path: Path) -> None:
    with kvs.KvStore(tmp_path, engine="kvs") as db:
        db[b"k"] = b"before"
        b = db.batch()
        b[b"k"] = b"after"
        b[b"x" * ((1 << 20) + 1)] = b"over the 1 MiB key limit"
        with pytest.raises(ValueError):
            b.commit()
        assert db[b"k"] == b"before"
        assert len(db) == 1
        # Still open, as it was: it takes operations, and fails the same way again.
        assert len(b) == 2
        b[b"more"] = b"v"
        assert len(b) == 3
        with pytest.raises(ValueError):
            with b:
                pass
        assert len(db) == 1


def test_operations_are_checked_when_added(db: kvs.KvStore) -> None:
    b = db.batch()
    with pytest.raises(TypeError, match="key must be bytes or str"):
        b[1] = b"v"  # type: ignore[index]
    with pytest.raises(TypeError, match="value must be bytes or str"):
        b[b"k"] = bytearray(b"v")  # type: ignore[assignment]
    with pytest.raises(TypeError):
        del b[None]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        b.set(b"k", b"v", ttl=0)
    with pytest.raises(ValueError, match="finite"):
        b.set(b"k", b"v", ttl=float("nan"))
    with pytest.raises(TypeError, match="number of seconds"):
        b.set(b"k", b"v", ttl=True)  # type: ignore[arg-type]
    assert len(b) == 0
    b.commit()
    assert len(db) == 0


def test_a_batch_of_a_closed_store_raises_value_error(tmp_path: Path) -> None:
    db = kvs.KvStore(tmp_path)
    b = db.batch()
    b[b"k"] = b"v"
    db.close()
    with pytest.raises(ValueError, match="closed"):
        b.commit()
    with kvs.KvStore(tmp_path) as again:
        assert b"k" not in again


def test_readers_see_a_batch_whole_or_not_at_all(db: kvs.KvStore) -> None:
    """One thread applies batches that set every key to the same generation; readers, with
    get_many (one instant), never see two generations at once."""
    keys = [f"account:{i}".encode() for i in range(8)]
    with db.batch() as b:
        for key in keys:
            b[key] = b"0"
    stop = threading.Event()
    torn: list[list[bytes | None]] = []
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                values = db.get_many(keys)
                reads[0] += 1
                if len(set(values)) != 1:
                    torn.append(values)
        except BaseException as e:  # reported on the test thread
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for generation in range(1, 300):
            with db.batch() as b:
                for key in keys:
                    b[key] = str(generation)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert torn == []
    assert reads[0] > 0
    assert db.get_many(keys) == [b"299"] * len(keys)


WRITER = """
import sys
import kvs

db = kvs.KvStore(sys.argv[1], engine=sys.argv[2])
generation = 0
while True:
    generation += 1
    with db.batch() as b:
        for i in range(10):
            b[f"gen-{i}"] = str(generation).encode() * 400
    print(generation, flush=True)
"""


def test_a_batch_survives_kill_9_whole(tmp_path: Path, engine: str) -> None:
    """A process killed with SIGKILL while it applies batches leaves every batch whole, and
    keeps every batch it acknowledged."""
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data), engine],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked = 0
    try:
        for line in proc.stdout:
            acked = int(line)
            if acked >= 50:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The dead writer's last acknowledgements: read through the same buffered file (not
    # communicate(), which reads the descriptors and would skip what the buffer holds).
    for line in proc.stdout.read().splitlines():
        acked = int(line)
    err = proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    assert acked >= 50, err.decode(errors="replace")
    with kvs.KvStore(data) as db:
        values = db.get_many([f"gen-{i}" for i in range(10)])
    assert len(set(values)) == 1, "a batch was torn by the kill"
    value = values[0]
    assert value is not None
    generation = int(value[: len(value) // 400])
    assert value == str(generation).encode() * 400
    # Every acknowledged batch is kept; at most the one in flight at the kill lands too.
    assert acked <= generation <= acked + 1


def test_commit_releases_the_gil(tmp_path: Path) -> None:
    """Another Python thread runs while a batch is being applied."""
    ticks: list[int] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.0002)

    old_interval = sys.getswitchinterval()
    value = b"x" * (8 << 20)
    with kvs.KvStore(tmp_path) as db:
        sys.setswitchinterval(60.0)
        thread = threading.Thread(target=ticker)
        try:
            thread.start()
            while not ticks:
                time.sleep(0.001)
            ran_during_commit = False
            # Each batch writes 32 MiB; a few tries leave room for a stalled scheduler.
            for _ in range(20):
                b = db.batch()
                for i in range(4):
                    b[f"big{i}"] = value
                before = len(ticks)
                b.commit()
                if len(ticks) > before:
                    ran_during_commit = True
                    break
        finally:
            stop.set()
            sys.setswitchinterval(old_interval)
            thread.join()
    assert ran_during_commit


def test_threads_may_fill_one_batch(db: kvs.KvStore) -> None:
    b = db.batch()

    def fill(t: int) -> None:
        for i in range(200):
            b[f"t{t}-{i}"] = b"v"

    threads = [threading.Thread(target=fill, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(b) == 800
    b.commit()
    assert len(db) == 800


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_batch_of_an_inherited_store_is_refused_in_the_child(tmp_path: Path) -> None:
    import multiprocessing

    with kvs.KvStore(tmp_path) as db:
        db[b"k"] = b"parent"
        b = db.batch()
        b[b"k"] = b"child"
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()

        def child() -> None:
            try:
                b.commit()
                queue.put("no error")
            except kvs.ForkedError:
                queue.put("forked")
            except Exception as e:  # noqa: BLE001 - reported to the parent
                queue.put(f"{type(e).__name__}: {e}")

        proc = ctx.Process(target=child)
        proc.start()
        proc.join(120)
        assert queue.get(timeout=10) == "forked"
        assert db[b"k"] == b"parent"
        # The parent's batch is untouched by the child's attempt.
        b.commit()
        assert db[b"k"] == b"child"
