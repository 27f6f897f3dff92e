//! Starting the servers the benchmarks compare: the real `kvs-server` and a `redis-server`,
//! each on a free port, killed when dropped. Shared by `load.rs` and `resp.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `program --version` runs.
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `kvs-server` (kvs engine, the given pool, `--threads` if given) in `dir` on a port of
/// its choosing; returns it and the address it logged.
pub fn start_kvs(dir: &Path, pool: &str, threads: Option<&str>) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs-server"));
    if let Some(threads) = threads {
        command.args(["--threads", threads]);
    }
    let mut child = command
        .args(["--addr", "127.0.0.1:0", "--engine", "kvs", "--pool", pool])
        .current_dir(dir)
        .env("RUST_LOG", "warn,kvs_server=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvs-server starts");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("kvs-server says where it listens");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .expect("an address");
        }
    };
    // Keep draining its stderr so that it never blocks on a full pipe.
    thread::spawn(move || for _ in lines {});
    (Process(child), addr)
}

/// Starts `redis-server` with persistence off in `dir` on a free port, and waits until it
/// answers PING; `None` if it does not start.
pub fn start_redis(dir: &Path) -> Option<(Process, SocketAddr)> {
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let process = Process(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(addr) {
                let mut reply = [0; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return Some((process, addr));
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    None
}

/// CPU time used so far by every thread of process `pid` (Linux: the run time of each task in
/// `/proc/PID/task/*/schedstat`, in nanoseconds). `None` elsewhere.
///
/// The CPU a server spends per request is the figure that holds on a shared, busy machine:
/// requests per second move with what else runs, the work done for each request much less.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended since the listing has no file any more: it is not counted.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Runs `work` and returns what it returns with the CPU time process `pid` used meanwhile.
pub fn with_cpu_of<T>(pid: u32, work: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = cpu_time(pid);
    let result = work();
    let used = match (before, cpu_time(pid)) {
        (Some(before), Some(after)) => after.checked_sub(before),
        _ => None,
    };
    (result, used)
}

/// The median of samples with their smallest and largest.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            median: *sorted.get(sorted.len() / 2)?,
            min: *sorted.first()?,
            max: *sorted.last()?,
        })
    }

    /// `median (min-max)`, each as [`si`] writes it.
    pub fn show(&self) -> String {
        format!("{} ({}-{})", si(self.median), si(self.min), si(self.max))
    }
}

/// `x` in three significant figures with a k or M suffix: `1.15M`, `86.7k`, `742`.
pub fn si(x: f64) -> String {
    let (value, suffix) = if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$}{suffix}")
}
