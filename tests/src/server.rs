//! [`ServerProcess`]: a real `kvs-server` in a directory, on a port chosen by the OS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::binaries::kvs_server;

/// How long to wait for a server to come up or go down before failing the test. Generous:
/// machines running tests can be slow and busy; nothing here measures speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running `kvs-server`, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data directory (and working directory).
    pub dir: PathBuf,
    log: Arc<Log>,
}

/// Every line the server wrote to stderr, collected by a thread so the pipe never fills.
#[derive(Default)]
struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl ServerProcess {
    /// Starts `kvs-server --addr 127.0.0.1:0 <args>` in `dir` and waits until it listens.
    /// Panics if it exits or never says where it listens.
    pub fn start(dir: &Path, args: &[&str]) -> ServerProcess {
        let mut command = Command::new(kvs_server());
        command.args(["--addr", "127.0.0.1:0"]).args(args);
        ServerProcess::start_command(command, dir)
    }

    /// Runs `command`, which runs `kvs-server` (perhaps through a wrapper that `exec`s it,
    /// such as `ip netns exec`, so that the process is the server itself), in `dir`, and
    /// waits until it listens. Panics if it exits or never says where it listens.
    pub fn start_command(mut command: Command, dir: &Path) -> ServerProcess {
        let mut child = command
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvs-server starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Log::default());
        let collector = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut lines = collector.lines.lock().unwrap();
                lines.0.push(line);
                collector.changed.notify_all();
            }
            collector.lines.lock().unwrap().1 = true;
            collector.changed.notify_all();
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.to_path_buf(),
            log,
        };
        let line = server.wait_for_log("listening on");
        let addr = line
            .rsplit("listening on ")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok());
        server.addr = addr.unwrap_or_else(|| panic!("no address in {line:?}"));
        server
    }

    /// The address as `kvs-client --addr` takes it.
    pub fn addr_arg(&self) -> String {
        self.addr.to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stderr line containing `needle` and returns it. Panics if the server
    /// closes stderr (exits) first or after [`PATIENCE`].
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.0.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                !lines.1 && now < deadline,
                "kvs-server never logged {needle:?}; its stderr:\n{}",
                lines.0.join("\n")
            );
            lines = self
                .log
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.log.lines.lock().unwrap().0.join("\n")
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the process to end.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
        self.wait()
    }

    /// Waits for the process to exit (at most [`PATIENCE`], then kills it and panics).
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kvs-server did not exit; its stderr:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
