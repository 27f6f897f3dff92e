"""kvs.KvStore's keyword-only options: sync, read_only, max_file_size, compaction_min_stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kvs


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under ``directory``: a file's bytes, None for a directory."""
    return {
        str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


def make_store(path: Path) -> None:
    with kvs.KvStore(path) as db:
        db["k"] = "v"
        db["other"] = b"\x00\x01"


def test_options_are_keyword_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        kvs.KvStore(tmp_path / "data", "kvs", "always")  # type: ignore[misc]


def test_sync_always_round_trips(tmp_path: Path) -> None:
    with kvs.KvStore(tmp_path / "data", sync="always") as db:
        db["k"] = "v"
        assert not db.read_only
    with kvs.KvStore(tmp_path / "data", sync="os") as db:
        assert db["k"] == b"v"


def test_max_file_size_reaches_the_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with kvs.KvStore(data, max_file_size=4096, compaction_min_stale=2**64 - 1) as db:
        for i in range(100):
            db[f"key-{i:03}"] = b"v" * 200
    # 100 records of over 200 bytes in files of 4 KiB.
    assert len(list(data.glob("*.log"))) >= 5
    with kvs.KvStore(data) as db:
        assert len(db) == 100


def test_read_only_serves_reads_refuses_writes_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data)
    before = snapshot(data)
    with kvs.KvStore(data, read_only=True) as db:
        assert db.read_only
        assert db["k"] == b"v"
        assert dict(db.items()) == {b"k": b"v", b"other": b"\x00\x01"}
        for write in (
            lambda: db.__setitem__("k", "new"),
            lambda: db.set("new", "value"),
            lambda: db.__delitem__("k"),
            lambda: db.remove("missing"),
        ):
            with pytest.raises(ValueError, match="read-only"):
                write()
        db.flush()  # nothing to make durable
        assert db["k"] == b"v"
        # Read-only stores share the directory; a writer is kept out.
        with kvs.KvStore(data, engine="kvs", read_only=True) as second:
            assert second["other"] == b"\x00\x01"
        with pytest.raises(kvs.LockedError):
            kvs.KvStore(data)
    assert snapshot(data) == before
    with kvs.KvStore(data) as db:
        db["after"] = "ok"


def test_read_only_store_in_another_process_keeps_a_writer_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, kvs\n"
            "db = kvs.KvStore(sys.argv[1], read_only=True)\n"
            "print(db['k'].decode(), flush=True)\n"
            "sys.stdin.read()\n"
            "db.close()\n",
            str(data),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "v\n"
        with kvs.KvStore(data, read_only=True) as db:
            assert db["k"] == b"v"
        with pytest.raises(kvs.LockedError):
            kvs.KvStore(data)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    with kvs.KvStore(data) as db:
        assert db["k"] == b"v"


def test_read_only_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(kvs.KvsIOError):
        kvs.KvStore(missing, read_only=True)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(kvs.KvsIOError, match="no kvs log files"):
        kvs.KvStore(empty, read_only=True)
    assert list(empty.iterdir()) == []


def test_read_only_sled_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with kvs.KvStore(data, engine="sled") as db:
        db["k"] = "v"
    before = snapshot(data)
    for engine in ("sled", None):
        with pytest.raises(ValueError, match="sled"):
            kvs.KvStore(data, engine=engine, read_only=True)
    assert snapshot(data) == before


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sync": "never"}, ValueError, "sync"),
        ({"sync": 1}, TypeError, "sync"),
        ({"read_only": 1}, TypeError, "read_only"),
        ({"read_only": "yes"}, TypeError, "read_only"),
        ({"max_file_size": 100}, ValueError, "max_file_size"),
        ({"max_file_size": 2**30 + 1}, ValueError, "max_file_size"),
        ({"max_file_size": -1}, ValueError, "max_file_size"),
        ({"max_file_size": 4096.0}, TypeError, "max_file_size"),
        ({"max_file_size": True}, TypeError, "max_file_size"),
        ({"compaction_min_stale": -1}, ValueError, "compaction_min_stale"),
        ({"compaction_min_stale": 2**64}, ValueError, "compaction_min_stale"),
        ({"compaction_min_stale": "4MiB"}, TypeError, "compaction_min_stale"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
    ],
)
def test_bad_values_are_refused_before_anything_is_created(
    tmp_path: Path, options: dict[str, object], error: type[Exception], match: str
) -> None:
    data = tmp_path / "data"
    with pytest.raises(error, match=match):
        kvs.KvStore(data, **options)  # type: ignore[arg-type]
    assert not data.exists()


def test_none_means_the_default(tmp_path: Path) -> None:
    with kvs.KvStore(
        tmp_path / "data",
        sync=None,
        read_only=None,
        max_file_size=None,
        compaction_min_stale=None,
    ) as db:
        db["k"] = "v"
        assert not db.read_only
