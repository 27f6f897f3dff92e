"""Fixtures of the kvs Python tests: stores on both engines, and a real kvs-server."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import kvs

ENGINES = ["kvs", "sled"]
REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    """With $KVS_PY_EXPECT_INSTALLED_IN set (run.sh sets it to the site-packages the wheel was
    installed into), refuses to test any other copy of kvs, the source tree's included."""
    expected = os.environ.get("KVS_PY_EXPECT_INSTALLED_IN")
    package = Path(kvs.__file__).resolve().parent
    if expected and package != Path(expected).resolve() / "kvs":
        raise pytest.UsageError(
            f"import kvs resolves to {package}, not to the installed package under {expected}"
        )


def pytest_report_header(config: pytest.Config) -> str:
    return f"kvs {kvs.__version__} from {Path(kvs.__file__).resolve().parent}"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each engine in turn."""
    return request.param


@pytest.fixture
def db(tmp_path: Path, engine: str) -> Iterator[kvs.KvStore]:
    """A fresh store on each engine, closed after the test."""
    store = kvs.KvStore(tmp_path / "data", engine=engine)
    yield store
    store.close()


def server_binary() -> Path:
    """The kvs-server binary: $KVS_SERVER_BIN, else the workspace's debug build."""
    found = os.environ.get("KVS_SERVER_BIN")
    path = Path(found) if found else REPO / "target" / "debug" / "kvs-server"
    if not path.is_file():
        pytest.fail(f"kvs-server binary not found at {path}: run `cargo build -p kvs-server`")
    return path


def free_port() -> int:
    """A port the OS just handed out for 127.0.0.1 (and took back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int, deadline: float) -> bool:
    """Waits until the server accepts connections; False if it exited first."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Server:
    """A running kvs-server: `addr` is what kvs.Client takes."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.log = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """kvs-server on a free port of 127.0.0.1, with its data in a temporary directory."""
    binary = server_binary()
    data = tmp_path / "server-data"
    data.mkdir()
    log = tmp_path / "server.log"
    # The port is free when chosen but could be taken before the server binds it: retry.
    for _ in range(5):
        port = free_port()
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [str(binary), "--addr", f"127.0.0.1:{port}"],
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
