//! [`RedisServer`]: a real `redis-server` on 127.0.0.1, for the tests that compare kvs with
//! Redis itself. Debian's `redis-server` package; tests skip, saying so, where it is missing.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::server::PATIENCE;

/// A running `redis-server` (no persistence), killed when dropped.
pub struct RedisServer {
    child: Child,
    /// Where it listens, `127.0.0.1:PORT`.
    pub addr: String,
}

/// Whether `program` (a Redis tool: `redis-server`, `redis-cli`, `redis-benchmark`) is on the
/// PATH and runs.
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisServer {
    /// Starts `redis-server` in `dir` on a free port of 127.0.0.1 and waits until it accepts
    /// connections; `None`, after saying loudly that the test skips, if it is not installed.
    pub fn start(dir: &Path) -> Option<RedisServer> {
        if !installed("redis-server") {
            eprintln!(
                "\n*** SKIPPED: redis-server is not installed (Debian's redis-server package; \
                 `bash tests/setup.sh` installs it), so kvs is not \
                 compared with a real Redis server here. ***\n"
            );
            return None;
        }
        // A port that was free a moment ago.
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .expect("local address")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let mut redis = RedisServer {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(&redis.addr).is_err() {
            let exited = redis.child.try_wait().expect("wait works");
            assert!(exited.is_none(), "redis-server exited: {exited:?}");
            assert!(Instant::now() < deadline, "redis-server never listened");
            thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
