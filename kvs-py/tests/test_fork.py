"""A store (or client) inherited through fork() is refused in the child, and the parent's
data is intact; the documented ways of using a store in a child work. And a directory
whose ``engine`` file is lost is judged by its data."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any, Callable

import pytest

import kvs

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")
# A child that hangs (the bug this guards against) fails the test instead of hanging it; the
# children here take well under a second even on a loaded 2-core machine.
CHILD_TIMEOUT = 120


def fill(db: kvs.KvStore, prefix: str) -> None:
    for i in range(200):
        db[f"{prefix}{i}"] = f"value-{prefix}{i}"


def check(db: kvs.KvStore, prefix: str) -> None:
    for i in range(200):
        assert db[f"{prefix}{i}"] == f"value-{prefix}{i}".encode()


def inherited_ops(db: kvs.KvStore) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("get", lambda: db[b"before0"]),
        ("set", lambda: db.__setitem__(b"child", b"1")),
        ("remove", lambda: db.remove(b"before1")),
        ("contains", lambda: b"before0" in db),
        ("len", lambda: len(db)),
        ("iter", lambda: list(db)),
        ("flush", db.flush),
        ("scan", lambda: db.scan()),
        ("get_many", lambda: db.get_many([b"before0"])),
        ("set_ttl", lambda: db.set(b"child", b"1", ttl=60)),
        ("expire", lambda: db.expire(b"before0", 60)),
        ("ttl", lambda: db.ttl(b"before0")),
        ("persist", lambda: db.persist(b"before0")),
        ("batch", lambda: batch_of(db, b"child", b"1").commit()),
    ]


def batch_of(db: kvs.KvStore, key: bytes, value: bytes) -> kvs.Batch:
    batch = db.batch()
    batch[key] = value
    return batch


def refused_in_child(db: kvs.KvStore, parent: int) -> list[str]:
    """Every operation on the inherited store; returns the ones that did not raise
    ForkedError naming the parent. Then closes the store (which must not raise)."""
    wrong = []
    for name, op in inherited_ops(db):
        try:
            op()
            wrong.append(f"{name}: no error")
        except kvs.ForkedError as e:
            if f"process {parent};" not in str(e) or "fork()" not in str(e):
                wrong.append(f"{name}: {e}")
        except Exception as e:  # noqa: BLE001 - any other exception is the failure
            wrong.append(f"{name}: {type(e).__name__}: {e}")
    db.close()
    return wrong


def child_with_inherited_store(db: kvs.KvStore, parent: int, out: Any) -> None:
    out.put(refused_in_child(db, parent))


def test_forked_error_is_a_kvs_error() -> None:
    assert issubclass(kvs.ForkedError, kvs.KvsError)
    assert kvs.ForkedError.__module__ == "kvs"
    assert "ForkedError" in kvs.__all__


def test_multiprocessing_fork_child_is_refused_and_the_parent_keeps_its_data(
    tmp_path: Path, engine: str
) -> None:
    db = kvs.KvStore(tmp_path, engine=engine)
    fill(db, "before")
    results = FORK.Queue()
    child = FORK.Process(
        target=child_with_inherited_store, args=(db, os.getpid(), results)
    )
    child.start()
    wrong = results.get(timeout=CHILD_TIMEOUT)
    child.join(timeout=CHILD_TIMEOUT)
    assert child.exitcode == 0
    assert wrong == []
    # The parent goes on, then every write it made is there after a reopen.
    check(db, "before")
    fill(db, "after")
    db.close()
    with kvs.KvStore(tmp_path) as again:
        check(again, "before")
        check(again, "after")
        assert b"child" not in again
        assert len(again) == 400


def test_os_fork_child_is_refused(tmp_path: Path, engine: str) -> None:
    with kvs.KvStore(tmp_path, engine=engine) as db:
        fill(db, "before")
        parent = os.getpid()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            # The child: never return into pytest.
            code = 1
            try:
                os.close(read_end)
                wrong = refused_in_child(db, parent)
                os.write(write_end, "\n".join(wrong).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as report:
            wrong = report.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert wrong == ""
        fill(db, "after")
    with kvs.KvStore(tmp_path) as again:
        check(again, "before")
        check(again, "after")


def read_global_store(key: bytes) -> bytes:
    return INHERITED[key]


INHERITED: dict[bytes, bytes] = {}


def test_pool_worker_using_the_parents_store_raises_forked_error(tmp_path: Path) -> None:
    global INHERITED
    with kvs.KvStore(tmp_path) as db:
        db[b"k"] = b"v"
        INHERITED = db  # type: ignore[assignment]
        try:
            with FORK.Pool(1) as pool:
                with pytest.raises(kvs.ForkedError, match="does not survive fork"):
                    pool.apply(read_global_store, (b"k",))
        finally:
            INHERITED = {}
        assert db[b"k"] == b"v"


def child_opens_store(path: str, engine: str, out: Any) -> None:
    try:
        with kvs.KvStore(path, engine=engine) as own:
            own[b"child"] = b"1"
            out.put(("ok", own[b"before0"]))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put((type(e).__name__, str(e)))


def test_a_child_opens_the_store_after_the_parent_closed_it(tmp_path: Path) -> None:
    # Forked with the parent's store open; the parent closes it, then the child (whose
    # inherited copy is still alive) opens the store itself.
    db = kvs.KvStore(tmp_path, engine="kvs")
    fill(db, "before")
    results = FORK.Queue()
    go = FORK.Event()

    def child() -> None:
        go.wait(CHILD_TIMEOUT)
        child_opens_store(str(tmp_path), "kvs", results)

    process = FORK.Process(target=child)
    process.start()
    db.close()
    go.set()
    assert results.get(timeout=CHILD_TIMEOUT) == ("ok", b"value-before0")
    process.join(timeout=CHILD_TIMEOUT)
    assert process.exitcode == 0
    with kvs.KvStore(tmp_path) as again:
        check(again, "before")
        assert again[b"child"] == b"1"


def test_a_fresh_process_opens_the_store_after_the_parent_closed_it(
    tmp_path: Path, engine: str
) -> None:
    with kvs.KvStore(tmp_path, engine=engine) as db:
        fill(db, "before")
    results = SPAWN.Queue()
    process = SPAWN.Process(
        target=child_opens_store, args=(str(tmp_path), engine, results)
    )
    process.start()
    assert results.get(timeout=CHILD_TIMEOUT) == ("ok", b"value-before0")
    process.join(timeout=CHILD_TIMEOUT)
    assert process.exitcode == 0
    with kvs.KvStore(tmp_path) as again:
        assert again[b"child"] == b"1"


def test_sled_cannot_open_in_a_forked_child_of_a_sled_user(tmp_path: Path) -> None:
    # sled's background threads do not survive fork(): the open is refused, not hung.
    with kvs.KvStore(tmp_path / "parent", engine="sled") as db:
        db[b"k"] = b"v"
    results = FORK.Queue()
    process = FORK.Process(
        target=child_opens_store, args=(str(tmp_path / "child"), "sled", results)
    )
    process.start()
    kind, message = results.get(timeout=CHILD_TIMEOUT)
    process.join(timeout=CHILD_TIMEOUT)
    assert kind == "ForkedError", message
    assert "fresh process" in message


def test_lost_engine_file_is_judged_by_the_data(tmp_path: Path) -> None:
    with kvs.KvStore(tmp_path, engine="kvs") as db:
        db[b"k"] = b"v"
    (tmp_path / "engine").unlink()
    with pytest.raises(kvs.EngineMismatchError, match="'kvs'"):
        kvs.KvStore(tmp_path, engine="sled")
    assert not (tmp_path / "engine").exists()
    with kvs.KvStore(tmp_path) as db:
        assert db.engine == "kvs"
        assert db[b"k"] == b"v"
    assert (tmp_path / "engine").read_text().strip() == "kvs"
