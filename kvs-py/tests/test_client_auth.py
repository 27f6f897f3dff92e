"""kvs.Client(password=...) against a real kvs-server started with a password, on both
engines; and the password never in the server's log."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import kvs
from conftest import ENGINES, Server, free_port, server_binary, wait_for_port

PASSWORD = "py-pw-7c21-never-logged"


@pytest.fixture(params=ENGINES)
def protected(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """kvs-server on each engine, with PASSWORD, on a free port of 127.0.0.1."""
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
                    "--requirepass",
                    PASSWORD,
                ],
                cwd=data,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        if wait_for_port(proc, port, time.monotonic() + 30):
            running = Server(proc, port, log)
            yield running
            running.stop()
            assert PASSWORD not in log.read_text(errors="replace")
            return
        proc.kill()
        proc.wait()
    pytest.fail(f"kvs-server did not start; its log:\n{log.read_text(errors='replace')}")


def test_the_password_opens_the_server(protected: Server) -> None:
    for password in (PASSWORD, PASSWORD.encode()):
        client = kvs.Client(protected.addr, password=password)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()


def test_without_the_password_every_request_is_refused(protected: Server) -> None:
    client = kvs.Client(protected.addr)
    with pytest.raises(ValueError, match="authentication required"):
        client.get("k")
    with pytest.raises(ValueError, match="authentication required"):
        client.set("k", "v")
    client.close()


def test_a_wrong_password_is_refused_when_connecting(protected: Server) -> None:
    with pytest.raises(ValueError, match="wrong password"):
        kvs.Client(protected.addr, password="wrong")
    with pytest.raises(TypeError):
        kvs.Client(protected.addr, password=3)  # type: ignore[arg-type]


def test_a_server_without_a_password_takes_any(server: Server) -> None:
    client = kvs.Client(server.addr, password="anything")
    client.set("k", "v")
    assert client.get("k") == b"v"
    client.close()
