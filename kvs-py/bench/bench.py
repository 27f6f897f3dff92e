"""Benchmark kvs.KvStore against Python's embedded stores.

    python kvs-py/bench/bench.py [--n 100000] [--value-size 100] [--overhead]

For each store: N sets of distinct keys (16 bytes) with small values (100 bytes), one call
each, then N gets of keys drawn at random (same sequence for every store); prints a table.
Peers: dbm and sqlite3 always; lmdb and diskcache when installed. Every store is used as
an application would use a dict-like store: one call per operation, writes acknowledged
once they reached the operating system (no fsync per write, as kvs by default): sqlite3
in WAL mode with synchronous=OFF and autocommit, lmdb with sync=False and one transaction
per operation.

--overhead also times random gets through the Rust API (the `get_timing` example of
kvs-py, built with cargo in release mode) and through kvs.KvStore, alternating, and prints
the per-call cost Python adds.
Install the package first: bash kvs-py/tests/run.sh (a release build, in target/py-venv).
"""

from __future__ import annotations

import argparse
import dbm
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import kvs

Key = bytes
Store = tuple[Callable[[Key, bytes], object], Callable[[Key], object], Callable[[], None]]


def keys_and_values(n: int, value_size: int) -> tuple[list[bytes], list[bytes]]:
    rng = random.Random(42)
    keys = [b"key-%012d" % i for i in range(n)]
    values = [rng.randbytes(value_size) for _ in range(n)]
    return keys, values


def open_kvs(path: Path, engine: str) -> Store:
    db = kvs.KvStore(path, engine=engine)
    return db.__setitem__, db.__getitem__, db.close


def open_dbm(path: Path) -> Store:
    db = dbm.open(str(path / "db"), "n")
    return db.__setitem__, db.__getitem__, db.close


def open_sqlite(path: Path) -> Store:
    con = sqlite3.connect(path / "db.sqlite", isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
    insert = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
    select = "SELECT v FROM kv WHERE k = ?"

    def set_(k: bytes, v: bytes) -> None:
        con.execute(insert, (k, v))

    def get(k: bytes) -> bytes:
        row = con.execute(select, (k,)).fetchone()
        if row is None:
            raise KeyError(k)
        return row[0]

    return set_, get, con.close


def open_lmdb(path: Path) -> Optional[Store]:
    try:
        import lmdb  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    env = lmdb.open(str(path), map_size=4 << 30, sync=False, metasync=False)

    def set_(k: bytes, v: bytes) -> None:
        with env.begin(write=True) as txn:
            txn.put(k, v)

    def get(k: bytes) -> bytes:
        with env.begin() as txn:
            v = txn.get(k)
        if v is None:
            raise KeyError(k)
        return v

    return set_, get, env.close


def open_diskcache(path: Path) -> Optional[Store]:
    try:
        import diskcache  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    cache = diskcache.Cache(str(path))
    return cache.__setitem__, cache.__getitem__, cache.close


def dbm_name() -> str:
    with tempfile.TemporaryDirectory() as d:
        db = dbm.open(os.path.join(d, "probe"), "n")
        db.close()
        return f"dbm ({dbm.whichdb(os.path.join(d, 'probe'))})"


def run(
    name: str, opener: Callable[[Path], Optional[Store]], keys: list[bytes], values: list[bytes],
    lookups: list[bytes],
) -> Optional[tuple[str, float, float]]:
    directory = Path(tempfile.mkdtemp(prefix="kvs-bench-"))
    try:
        store = opener(directory)
        if store is None:
            return None
        set_, get, close = store
        start = time.perf_counter()
        for k, v in zip(keys, values):
            set_(k, v)
        set_secs = time.perf_counter() - start
        start = time.perf_counter()
        for k in lookups:
            get(k)
        get_secs = time.perf_counter() - start
        close()
        return name, set_secs, get_secs
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def rust_ns_per_get(n: int, value_size: int, gets: int) -> float:
    """ns per get through the Rust API (best of 3 rounds), from the get_timing example."""
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [
            "cargo", "run", "--quiet", "--release", "-p", "kvs-py", "--example", "get_timing",
            "--", str(n), str(value_size), str(gets),
        ],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout
    match = re.search(r"ns_per_get=([0-9.]+)", out)
    if match is None:
        raise RuntimeError(f"unexpected output of get_timing: {out!r}")
    return float(match.group(1))


def python_ns_per_get(n: int, value_size: int, gets: int) -> float:
    """ns per get through kvs.KvStore (best of 3 rounds), on the same data and access
    pattern as get_timing."""
    keys, values = keys_and_values(n, value_size)
    rng = random.Random(7)
    lookups = [keys[rng.randrange(n)] for _ in range(gets)]
    with tempfile.TemporaryDirectory(prefix="kvs-bench-") as d:
        with kvs.KvStore(d, engine="kvs") as db:
            for k, v in zip(keys, values):
                db[k] = v
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for k in lookups:
                    db[k]
                best = min(best, time.perf_counter() - start)
    return best / gets * 1e9


def overhead(n: int, value_size: int, gets: int, rounds: int) -> tuple[float, float]:
    """Best Rust and best Python ns per get over `rounds` alternating runs: alternating
    keeps a busy machine from favouring one side."""
    rust, python = float("inf"), float("inf")
    for _ in range(rounds):
        rust = min(rust, rust_ns_per_get(n, value_size, gets))
        python = min(python, python_ns_per_get(n, value_size, gets))
    return rust, python


def table(rows: list[tuple[str, float, float]], n: int) -> Iterator[str]:
    yield f"{'store':<22} {'sets/s':>10} {'us/set':>8} {'gets/s':>10} {'us/get':>8}"
    for name, set_secs, get_secs in rows:
        yield (
            f"{name:<22} {n / set_secs:>10,.0f} {set_secs / n * 1e6:>8.2f}"
            f" {n / get_secs:>10,.0f} {get_secs / n * 1e6:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="sets and gets per store")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value")
    parser.add_argument("--overhead", action="store_true", help="also measure Python's cost per get")
    args = parser.parse_args()

    keys, values = keys_and_values(args.n, args.value_size)
    rng = random.Random(7)
    lookups = [keys[rng.randrange(args.n)] for _ in range(args.n)]
    stores: list[tuple[str, Callable[[Path], Optional[Store]]]] = [
        ("kvs.KvStore (kvs)", lambda p: open_kvs(p, "kvs")),
        ("kvs.KvStore (sled)", lambda p: open_kvs(p, "sled")),
        (dbm_name(), open_dbm),
        ("sqlite3 (WAL, sync off)", open_sqlite),
        ("lmdb (sync off)", open_lmdb),
        ("diskcache", open_diskcache),
    ]
    print(
        f"kvs {kvs.__version__}, Python {sys.version.split()[0]}, {args.n:,} sets then "
        f"{args.n:,} random gets, {len(keys[0])}-byte keys, {args.value_size}-byte values"
    )
    rows = []
    for name, opener in stores:
        row = run(name, opener, keys, values, lookups)
        if row is None:
            print(f"({name}: not installed, skipped)")
        else:
            rows.append(row)
    for line in table(rows, args.n):
        print(line)

    if args.overhead:
        gets, rounds = 300_000, 4
        rust, python = overhead(args.n, args.value_size, gets, rounds)
        print(
            f"\n{args.value_size}-byte get, best of {rounds} alternating runs of {gets:,} random "
            f"gets over {args.n:,} keys: "
            f"Rust API {rust:.0f} ns, kvs.KvStore {python:.0f} ns, "
            f"Python adds {python - rust:.0f} ns per call"
        )


if __name__ == "__main__":
    main()
