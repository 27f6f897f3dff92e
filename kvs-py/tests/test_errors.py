"""The exception hierarchy, and which failures raise which exception."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

import kvs


def test_hierarchy_is_rooted_at_kvs_error() -> None:
    assert issubclass(kvs.KvsError, Exception)
    for cls in (
        kvs.CorruptionError,
        kvs.KvsIOError,
        kvs.LockedError,
        kvs.EngineMismatchError,
        kvs.ServerError,
    ):
        assert issubclass(cls, kvs.KvsError)
        assert cls.__module__ == "kvs"
    assert issubclass(kvs.KvsIOError, OSError)
    assert not issubclass(kvs.KvsError, OSError)


def test_unknown_engine_name_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'redis'"):
        kvs.KvStore(tmp_path, engine="redis")


def test_other_engine_than_the_recorded_one_raises_engine_mismatch(tmp_path: Path) -> None:
    with kvs.KvStore(tmp_path, engine="sled") as db:
        db[b"k"] = b"v"
    with pytest.raises(kvs.EngineMismatchError, match="'sled'"):
        kvs.KvStore(tmp_path, engine="kvs")
    with kvs.KvStore(tmp_path) as db:
        assert db[b"k"] == b"v"


def test_path_that_is_a_file_raises_kvs_io_error_with_errno_and_filename(
    tmp_path: Path,
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(kvs.KvsIOError) as info:
        kvs.KvStore(not_a_dir)
    assert isinstance(info.value, OSError)
    assert info.value.errno in (errno.EEXIST, errno.ENOTDIR)
    assert info.value.filename == str(not_a_dir)
    assert str(info.value).startswith(f"I/O error on {not_a_dir}")


def test_corrupted_record_raises_corruption_error(tmp_path: Path) -> None:
    with kvs.KvStore(tmp_path, engine="kvs") as db:
        for i in range(20):
            db[f"key{i}"] = f"value{i}" * 20
    logs = sorted(tmp_path.glob("*.log"))
    assert logs
    data = bytearray(logs[0].read_bytes())
    # Header (8 bytes), then the first record's 13-byte header and its key: hit its value.
    data[8 + 13 + 4 + 10] ^= 0xFF
    logs[0].write_bytes(bytes(data))
    with pytest.raises(kvs.CorruptionError, match=r"\.log"):
        with kvs.KvStore(tmp_path) as db:
            for key in list(db):
                db[key]


def test_directory_open_in_another_process_raises_locked_error(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import kvs, sys\n"
            "db = kvs.KvStore(sys.argv[1])\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"open\n"
        with pytest.raises(kvs.LockedError, match="locked"):
            kvs.KvStore(tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    with kvs.KvStore(tmp_path) as db:
        assert len(db) == 0


def test_wrong_argument_types_to_the_constructor_raise_type_error() -> None:
    with pytest.raises(TypeError):
        kvs.KvStore(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        kvs.KvStore("somewhere", engine=1)  # type: ignore[arg-type]
