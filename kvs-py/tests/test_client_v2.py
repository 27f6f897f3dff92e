"""kvs.Client's batches, deadlines, multi-key reads, scans, update and checkpoints, against
the real kvs-server binary on both engines."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

import kvs
from conftest import ENGINES, Server, free_port, server_binary, wait_for_port


@pytest.fixture(params=ENGINES)
def engine_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """kvs-server with `--engine` each engine in turn, on a free port of 127.0.0.1."""
    data = tmp_path / "server-data"
    data.mkdir()
    log = tmp_path / "server.log"
    for _ in range(5):
        port = free_port()
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [
                    str(server_binary()),
                    "--addr",
                    f"127.0.0.1:{port}",
                    "--engine",
                    request.param,
                ],
                cwd=data,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        if wait_for_port(proc, port, time.monotonic() + 30):
            running = Server(proc, port, log)
            running.engine = request.param  # type: ignore[attr-defined]
            yield running
            running.stop()
            return
        proc.kill()
        proc.wait()
    pytest.fail(f"kvs-server did not start; its log:\n{log.read_text(errors='replace')}")


@pytest.fixture
def client(engine_server: Server) -> Iterator[kvs.Client]:
    with kvs.Client(engine_server.addr) as c:
        yield c


def test_set_with_ttl_expire_ttl_and_persist(client: kvs.Client) -> None:
    client.set("t", "v", ttl=3600)
    left = client.ttl("t")
    assert left is not None and 3500 < left <= 3600
    assert client.persist("t") is True
    assert client.ttl("t") is None
    assert client.persist("t") is False
    assert client.expire("t", 60.5) is True
    left = client.ttl("t")
    assert left is not None and 0 < left <= 60.5
    # A plain set clears the deadline.
    client.set("t", "w")
    assert client.ttl("t") is None
    # Missing keys: KeyError from ttl, False from expire and persist.
    with pytest.raises(KeyError):
        client.ttl("missing")
    assert client.expire("missing", 10) is False
    assert client.persist("missing") is False
    # expire with zero seconds removes the key, as Redis's EXPIRE.
    assert client.expire("t", 0) is True
    assert client.get("t") is None
    with pytest.raises(ValueError):
        client.set("k", "v", ttl=0)
    with pytest.raises(TypeError):
        client.set("k", "v", ttl="soon")  # type: ignore[arg-type]


def test_expired_keys_are_gone_over_the_wire(client: kvs.Client) -> None:
    client.set("soon", "v", ttl=0.2)
    client.set("stays", "v")
    assert client.get("soon") == b"v"
    # Wait until the deadline has passed on the clock server and client share: no time
    # bound is asserted, only that the key is gone afterwards.
    deadline = time.time() + 0.2
    while time.time() <= deadline + 0.01:
        time.sleep(0.05)
    assert client.get("soon") is None
    assert client.get_many(["soon", "stays"]) == [None, b"v"]
    assert list(client.keys()) == [b"stays"]
    with pytest.raises(KeyError):
        client.ttl("soon")


def test_get_many(client: kvs.Client) -> None:
    client.set(b"a", b"1")
    client.set("", b"empty key")
    big = bytes(range(256)) * 1000
    client.set("big", big)
    assert client.get_many([b"a", "missing", "", "big"]) == [b"1", None, b"empty key", big]
    assert client.get_many(iter(["a"])) == [b"1"]
    assert client.get_many([]) == []
    with pytest.raises(TypeError):
        client.get_many(b"ab")
    with pytest.raises(TypeError):
        client.get_many([1])  # type: ignore[list-item]


def test_batch_applies_on_success_and_nothing_if_the_block_raises(client: kvs.Client) -> None:
    client.set("from", "10")
    client.set("pending", "x")
    with client.batch() as b:
        b["from"] = "7"
        b["to"] = b"3"
        del b["pending"]
        del b["never-set"]
        b.set("session", "s", ttl=3600)
        assert len(b) == 5
    assert client.get_many(["from", "to", "pending", "session"]) == [b"7", b"3", None, b"s"]
    left = client.ttl("session")
    assert left is not None and left > 3500

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with client.batch() as b:
            b["from"] = "0"
            del b["to"]
            raise Boom()
    assert client.get_many(["from", "to"]) == [b"7", b"3"]


def test_a_batch_with_one_invalid_op_writes_nothing(
    client: kvs.Client, engine_server: Server
) -> None:
    client.set("kept", "before")
    b = client.batch()
    b["first"] = "1"
    del b["kept"]
    # One byte over the kvs engine's key limit (kvs.MAX_KEY_LEN in Rust: 1 MiB).
    b[b"k" * ((1 << 20) + 1)] = "over the key limit"
    b["last"] = "2"
    if engine_server.engine == "sled":  # type: ignore[attr-defined]
        # sled takes keys of any length: the batch is valid there and lands whole.
        b.commit()
        assert client.get_many(["first", "kept", "last"]) == [b"1", None, b"2"]
        return
    with pytest.raises(ValueError):
        b.commit()
    assert client.get_many(["first", "kept", "last"]) == [None, b"before", None]
    # A failed commit leaves the batch open: it can be fixed and sent.
    assert len(b) == 4


def test_scan_pages_keys_and_iteration(client: kvs.Client) -> None:
    names = [f"user:{i:03}" for i in range(250)]
    with client.batch() as b:
        for name in names:
            b[name] = "v"
        b["other"] = "v"
    seen: set[bytes] = set()
    cursor, pages = 0, 0
    while True:
        cursor, keys = client.scan(cursor, count=40, prefix="user:")
        seen.update(keys)
        pages += 1
        if cursor == 0:
            break
    assert seen == {n.encode() for n in names}
    assert pages > 1
    assert sorted(client.keys(match="user:?[05]9")) == sorted(
        n.encode() for n in names if n[-2] in "05" and n[-1] == "9"
    )
    assert sorted(client.keys(prefix="user:1")) == [
        n.encode() for n in names if n.startswith("user:1")
    ]
    assert sorted(client) == sorted([n.encode() for n in names] + [b"other"])
    assert sorted(client.scan_iter(prefix="oth", count=1)) == [b"other"]
    # The one key walker of kvs, the same class as a store's.
    assert isinstance(iter(client), kvs.KeyIterator)
    assert isinstance(client.keys(prefix="x"), kvs.KeyIterator)
    with pytest.raises(ValueError):
        client.scan(0, count=0)
    with pytest.raises(TypeError):
        client.scan("0")  # type: ignore[arg-type]


def test_iteration_holds_one_page_while_another_client_writes(
    client: kvs.Client, engine_server: Server
) -> None:
    stable = [f"stable:{i:04}".encode() for i in range(500)]
    with client.batch() as b:
        for key in stable:
            b[key] = "v"
    done = threading.Event()

    def churn() -> None:
        with kvs.Client(engine_server.addr) as other:
            for i in range(1000):
                other.set(f"churn:{i}", "v")
                if i >= 10:
                    other.remove(f"churn:{i - 10}")
        done.set()

    writer = threading.Thread(target=churn)
    writer.start()
    walks = 0
    while True:
        finished = done.is_set()
        seen = set(client.scan_iter(count=10))
        walks += 1
        missing = [k for k in stable if k not in seen]
        assert not missing, f"walk {walks} missed {missing[:5]}"
        if finished:
            break
    writer.join()


def test_update_counts_exactly_across_threads_and_clients(engine_server: Server) -> None:
    threads_n, increments = 4, 25
    calls = [0] * threads_n

    def work(index: int) -> None:
        with kvs.Client(engine_server.addr) as c:

            def bump(old: Optional[bytes]) -> bytes:
                calls[index] += 1
                return str(int(old or b"0") + 1).encode()

            for _ in range(increments):
                c.update_value("counter", bump)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with kvs.Client(engine_server.addr) as c:
        assert c.get("counter") == str(threads_n * increments).encode(), calls
        assert sum(calls) >= threads_n * increments
        # None removes; the new value comes back; an exception from func writes nothing.
        assert c.update_value("counter", lambda old: None) is None
        assert c.get("counter") is None
        assert c.update_value("fresh", lambda old: b"made" if old is None else b"wrong") == b"made"
        with pytest.raises(ZeroDivisionError):
            c.update_value("fresh", lambda old: 1 / 0)
        assert c.get("fresh") == b"made"


def test_update_keeps_the_deadline(client: kvs.Client) -> None:
    client.set("n", "1", ttl=3600)
    assert client.update_value("n", lambda old: old + b"0" if old else b"?") == b"10"
    left = client.ttl("n")
    assert left is not None and left > 3500


def test_checkpoint_opens_as_a_store(
    client: kvs.Client, engine_server: Server, tmp_path: Path
) -> None:
    client.set("a", "1")
    client.set("t", "2", ttl=3600)
    dest = tmp_path / "checkpoint"
    client.checkpoint(dest)
    client.set("after", "3")
    with pytest.raises(kvs.KvsError):
        client.checkpoint(dest)
    with kvs.KvStore(dest) as copy:
        assert copy.engine == engine_server.engine  # type: ignore[attr-defined]
        assert copy[b"a"] == b"1"
        assert copy.get(b"after") is None
        left = copy.ttl("t")
        assert left is not None and left > 3500


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host, port = listener.getsockname()
        yield f"{host}:{port}"


def _commit_a_batch(c: kvs.Client) -> None:
    b = c.batch()
    b["k"] = "v"
    b.commit()


@pytest.mark.parametrize(
    "request_",
    [
        lambda c: c.set("k", "v", ttl=10),
        lambda c: c.expire("k", 10),
        lambda c: c.ttl("k"),
        lambda c: c.persist("k"),
        lambda c: c.get_many(["k"]),
        lambda c: c.scan(),
        lambda c: next(iter(c)),
        lambda c: c.update_value("k", lambda old: b"v"),
        lambda c: c.checkpoint("/nowhere"),
        _commit_a_batch,
    ],
    ids=["set-ttl", "expire", "ttl", "persist", "get_many", "scan", "iter", "update",
         "checkpoint", "batch"],
)
def test_every_new_request_releases_the_gil_while_it_waits(
    silent_server: str, request_
) -> None:
    # With a switch interval of a minute, another thread runs during the wait only if the
    # client released the GIL while waiting on the network (as test_client.py checks get).
    ticks: list[int] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.0002)

    old_interval = sys.getswitchinterval()
    with kvs.Client(silent_server, timeout=0.3) as c:
        sys.setswitchinterval(60.0)
        thread = threading.Thread(target=ticker)
        try:
            thread.start()
            while not ticks:
                time.sleep(0.001)
            before = len(ticks)
            with pytest.raises(TimeoutError):
                request_(c)
            after = len(ticks)
        finally:
            stop.set()
            sys.setswitchinterval(old_interval)
            thread.join()
    assert after > before


def test_an_older_server_is_named_with_the_request_it_does_not_know() -> None:
    """A stand-in for a server older than the request: it answers every request as kvs-server
    answers a tag it does not know (a protocol error, then a close)."""
    message = b"protocol error: malformed message: unexpected variant"
    reply_payload = bytes([0x02, 5, len(message)]) + message
    reply = len(reply_payload).to_bytes(4, "big") + reply_payload
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host, port = listener.getsockname()

        def serve() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    header = conn.recv(4, socket.MSG_WAITALL)
                    conn.recv(int.from_bytes(header, "big"), socket.MSG_WAITALL)
                    conn.sendall(reply)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with kvs.Client(f"{host}:{port}") as c:
                with pytest.raises(kvs.ServerError, match="does not know the Scan request"):
                    c.scan()
                with pytest.raises(kvs.ServerError, match="does not know the ApplyBatch request"):
                    with c.batch() as b:
                        b["k"] = "v"
        finally:
            thread.join(timeout=60)
