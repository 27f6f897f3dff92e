"""kvs.Client against the real kvs-server binary (started by the `server` fixture)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import kvs
from conftest import Server, free_port


@pytest.fixture
def client(server: Server) -> Iterator[kvs.Client]:
    with kvs.Client(server.addr) as c:
        yield c


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host, port = listener.getsockname()
        yield f"{host}:{port}"


def test_set_get_remove_round_trip(client: kvs.Client) -> None:
    client.set(b"k", b"v")
    assert client.get(b"k") == b"v"
    client.remove(b"k")
    assert client.get(b"k") is None


def test_str_is_encoded_as_utf8_and_values_come_back_as_bytes(client: kvs.Client) -> None:
    client.set("clé", "värde ☃")
    assert client.get("clé") == "värde ☃".encode()
    assert client.get("clé".encode()) == "värde ☃".encode()


def test_binary_and_large_values_round_trip(client: kvs.Client) -> None:
    every_byte = bytes(range(256))
    client.set(every_byte, every_byte[::-1])
    assert client.get(every_byte) == every_byte[::-1]
    big = os.urandom(4 << 20)
    client.set(b"big", big)
    assert client.get(b"big") == big
    client.set(b"", b"")
    assert client.get(b"") == b""


def test_missing_key_get_is_none_and_remove_raises_key_error(client: kvs.Client) -> None:
    assert client.get(b"nope") is None
    with pytest.raises(KeyError) as info:
        client.remove(b"nope")
    assert info.value.args == (b"nope",)


def test_one_client_carries_many_requests(client: kvs.Client) -> None:
    for i in range(500):
        client.set(f"k{i}", f"v{i}")
    for i in range(500):
        assert client.get(f"k{i}") == f"v{i}".encode()


@pytest.mark.parametrize("bad", [1, None, bytearray(b"k"), memoryview(b"k")])
def test_keys_and_values_of_other_types_raise_type_error(client: kvs.Client, bad: object) -> None:
    with pytest.raises(TypeError, match="key must be bytes or str"):
        client.get(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes or str"):
        client.remove(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value must be bytes or str"):
        client.set(b"k", bad)  # type: ignore[arg-type]


def test_request_over_the_frame_limit_raises_value_error_and_client_carries_on(
    client: kvs.Client,
) -> None:
    with pytest.raises(ValueError):
        client.set(b"huge", b"x" * (33 << 20))
    client.set(b"k", b"v")
    assert client.get(b"k") == b"v"


def test_unreachable_server_raises_connection_error_naming_the_address() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=addr) as info:
        kvs.Client(addr)
    assert isinstance(info.value, ConnectionRefusedError)


def test_server_that_does_not_answer_raises_timeout_error(silent_server: str) -> None:
    with kvs.Client(silent_server, timeout=0.3) as c:
        with pytest.raises(TimeoutError, match=silent_server):
            c.get(b"k")


def test_timeout_must_be_positive() -> None:
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            kvs.Client("127.0.0.1:1", timeout=bad)


def test_server_gone_mid_session_raises_connection_error(server: Server) -> None:
    with kvs.Client(server.addr) as c:
        c.set(b"k", b"v")
        server.stop()
        with pytest.raises(ConnectionError):
            c.get(b"k")
        # Still down: reconnecting fails the same way, and nothing crashes.
        with pytest.raises(ConnectionError):
            c.get(b"k")


def test_use_after_close_raises_value_error(server: Server) -> None:
    c = kvs.Client(server.addr)
    c.close()
    c.close()
    assert c.closed
    assert "closed" in repr(c)
    for call in (lambda: c.get(b"k"), lambda: c.set(b"k", b"v"), lambda: c.remove(b"k")):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_context_manager_closes_the_client(server: Server) -> None:
    with kvs.Client(server.addr) as c:
        assert c.addr == server.addr
        assert not c.closed
    assert c.closed


def test_one_client_is_safe_to_share_between_threads(client: kvs.Client) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                client.set(f"t{t}-{i}", str(i))
                assert client.get(f"t{t}-{i}") == str(i).encode()
        except BaseException as e:  # reported below, on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_compare_and_set_follows_the_table(client: kvs.Client) -> None:
    # (expected, new, swapped, value afterwards), one after the other on one key.
    table = [
        (b"a", b"x", False, None),  # not set: only "expect not set" swaps
        (None, b"a", True, b"a"),
        (None, b"x", False, b"a"),  # set: "not set", another value or b"" change nothing
        (b"b", b"x", False, b"a"),
        (b"", b"x", False, b"a"),
        ("a", b"", True, b""),  # str is UTF-8; b"" is a value, not absence
        (b"", b"\0\xff", True, b"\0\xff"),
        (b"\0\xff", None, True, None),  # to None removes the key
        (None, None, True, None),
    ]
    for i, (expected, new, swapped, after) in enumerate(table):
        assert client.compare_and_set(b"k", expected, new) is swapped, i
        assert client.get(b"k") == after, i


def test_compare_and_set_rejects_values_of_other_types(client: kvs.Client) -> None:
    with pytest.raises(TypeError):
        client.compare_and_set(b"k", 1, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.compare_and_set(b"k", None, 1.5)  # type: ignore[arg-type]
    assert client.get(b"k") is None


def test_clients_in_threads_count_exactly_with_compare_and_set(server: Server) -> None:
    errors: list[BaseException] = []
    increments = 100

    def work() -> None:
        try:
            with kvs.Client(server.addr) as c:
                for _ in range(increments):
                    while True:
                        old = c.get(b"counter")
                        if c.compare_and_set(b"counter", old, str(int(old or 0) + 1)):
                            break
        except BaseException as e:  # reported below, on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with kvs.Client(server.addr) as c:
        assert c.get(b"counter") == str(4 * increments).encode()


def test_other_python_threads_run_while_the_client_waits(silent_server: str) -> None:
    # See test_store.py: with a huge switch interval, the ticker runs during the request
    # only if the client released the GIL while waiting on the network.
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
                c.get(b"k")
            after = len(ticks)
        finally:
            stop.set()
            sys.setswitchinterval(old_interval)
            thread.join()
    assert after > before


def test_writes_through_the_server_persist_in_its_data_directory(
    server: Server, tmp_path: Path
) -> None:
    with kvs.Client(server.addr) as c:
        c.set(b"written", b"by the client")
    server.stop()
    with kvs.KvStore(tmp_path / "server-data") as db:
        assert db[b"written"] == b"by the client"
