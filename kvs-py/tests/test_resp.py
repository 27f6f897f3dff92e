"""redis-py, the Redis client for Python, against the real kvs-server (RESP on the kvs port).

Runs on both engines and both RESP versions: redis-py 8 speaks RESP3 by default (it sends
`HELLO 3` on connect); `protocol=2` forces RESP2.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import kvs
from conftest import Server, free_port, server_binary, wait_for_port

redis = pytest.importorskip(
    "redis", reason="redis-py is not installed: kvs-py/tests/run.sh installs it"
)


@pytest.fixture(params=["kvs", "sled"])
def resp_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """kvs-server on each engine, as the `server` fixture of conftest starts it."""
    data = tmp_path / "server-data"
    data.mkdir()
    log = tmp_path / "server.log"
    for _ in range(5):
        port = free_port()
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [str(server_binary()), "--addr", f"127.0.0.1:{port}", "--engine", request.param],
                cwd=data,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        if wait_for_port(proc, port, time.monotonic() + 30):
            running = Server(proc, port, log)
            yield running
            running.stop()
            return
        proc.kill()
        proc.wait()
    pytest.fail(f"kvs-server did not start; its log:\n{log.read_text(errors='replace')}")


@pytest.fixture(params=[None, 2], ids=["default-protocol", "resp2"])
def r(request: pytest.FixtureRequest, resp_server: Server) -> Iterator["redis.Redis"]:
    kwargs = {} if request.param is None else {"protocol": request.param}
    client = redis.Redis(host="127.0.0.1", port=resp_server.port, **kwargs)
    yield client
    client.close()


def test_strings_round_trip_as_bytes(r: "redis.Redis") -> None:
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("greeting", "hello") is True
    assert r.get("greeting") == b"hello"
    assert r.get("missing") is None
    assert r.delete("greeting", "missing") == 1
    assert r.exists("greeting") == 0


def test_binary_keys_and_values(r: "redis.Redis") -> None:
    key = b"\x00\r\n*$\xff"
    value = bytes(range(256)) * 1000
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.set(b"", b"") is True
    assert r.get(b"") == b""


def test_set_options_nx_xx_get(r: "redis.Redis") -> None:
    assert r.set("k", "1", nx=True) is True
    assert r.set("k", "2", nx=True) is None
    assert r.set("other", "x", xx=True) is None
    assert r.exists("other") == 0
    assert r.set("k", "3", xx=True, get=True) == b"1"
    assert r.get("k") == b"3"
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.set("k", "4", ex=0)


def test_multi_key_commands_and_dbsize(r: "redis.Redis") -> None:
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "c") == [b"1", b"2", None]
    assert r.exists("a", "b", "c", "a") == 3
    assert r.dbsize() == 2
    assert r.delete("a", "b", "c") == 2
    assert r.dbsize() == 0


def test_pipeline_answers_in_order(r: "redis.Redis") -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"key:{i}", f"value:{i}")
        pipe.get(f"key:{i}")
    replies = pipe.execute()
    assert replies[0::2] == [True] * 500
    assert replies[1::2] == [f"value:{i}".encode() for i in range(500)]


def test_info_sections_parse(r: "redis.Redis") -> None:
    r.set("k", "v")
    info = r.info()
    assert info["redis_mode"] == "standalone"
    assert info["kvs_version"] == kvs.__version__
    assert info["connected_clients"] >= 1
    assert info["db0"]["keys"] == 1
    assert r.info("keyspace") == {"db0": {"keys": 1, "expires": 0, "avg_ttl": 0}}
    assert "total_commands_processed" in r.info("stats")


def test_errors_are_response_errors(r: "redis.Redis") -> None:
    with pytest.raises(redis.ResponseError, match="unknown command 'LPUSH'"):
        r.execute_command("LPUSH", "list", "a")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
        r.execute_command("GET")
    # The connection is still usable.
    assert r.ping() is True


def test_values_are_shared_with_kvs_client(r: "redis.Redis", resp_server: Server) -> None:
    r.set(b"shared", b"\x00from redis")
    with kvs.Client(resp_server.addr) as client:
        assert client.get(b"shared") == b"\x00from redis"
        client.set(b"back", b"from kvs")
    assert r.get("back") == b"from kvs"


def test_many_threads_share_a_connection_pool(r: "redis.Redis") -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                key = f"t{t}:{i}"
                r.set(key, key)
                assert r.get(key) == key.encode()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert r.dbsize() == 800
