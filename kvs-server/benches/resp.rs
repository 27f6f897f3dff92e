//! RESP benchmark: `redis-benchmark -t set,get -c 50 -n 100000`, without pipelining and with
//! `-P 16`, against the real `kvs-server` (kvs engine, default sync: every write reaches the
//! operating system before its reply) and against a `redis-server` started here on a free port
//! with persistence off (`--save '' --appendonly no`). Prints requests per second and the ratio
//! kvs/redis.
//!
//! ```text
//! cargo bench -p kvs-server --bench resp
//! cargo bench -p kvs-server --bench resp -- --rounds 5 --requests 200000 --server-threads 1
//! ```
//!
//! The two servers are measured alternately, `--rounds` times each (default 3), and the median
//! is shown, so that both see the same background load. Needs Debian's `redis-tools` and
//! `redis-server`; without them it says so and exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

struct Options {
    rounds: usize,
    requests: usize,
    clients: usize,
    /// `kvs-server --threads`, if given.
    server_threads: Option<String>,
}

fn options() -> Options {
    let mut options = Options {
        rounds: 3,
        requests: 100_000,
        clients: 50,
        server_threads: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--rounds" => options.rounds = value().parse().unwrap_or(options.rounds).max(1),
            "--requests" => options.requests = value().parse().unwrap_or(options.requests),
            "--clients" => options.clients = value().parse().unwrap_or(options.clients),
            "--server-threads" => options.server_threads = Some(value()),
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }
    options
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(program: &str) -> bool {
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

fn start_kvs(dir: &Path, threads: Option<&str>) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs-server"));
    if let Some(threads) = threads {
        command.args(["--threads", threads]);
    }
    let mut child = command
        .args(["--addr", "127.0.0.1:0", "--engine", "kvs"])
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

fn start_redis(dir: &Path) -> Option<(Process, SocketAddr)> {
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

/// requests per second of SET and GET, as `redis-benchmark --csv` reports them.
fn redis_benchmark(addr: SocketAddr, options: &Options, pipeline: usize) -> Option<(f64, f64)> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", "set,get", "--csv"])
        .args(["-c", &options.clients.to_string()])
        .args(["-n", &options.requests.to_string()])
        .args(["-P", &pipeline.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut set = None;
    let mut get = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        let Some(rps) = fields.get(1).and_then(|f| f.parse::<f64>().ok()) else {
            continue;
        };
        match fields[0] {
            "SET" => set = Some(rps),
            "GET" => get = Some(rps),
            _ => {}
        }
    }
    if !output.stderr.is_empty() {
        eprintln!(
            "redis-benchmark: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Some((set?, get?))
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let options = options();
    if !installed("redis-server") || !installed("redis-benchmark") {
        println!(
            "RESP benchmark skipped: redis-server and redis-benchmark are not installed \
             (Debian: apt-get install redis-server redis-tools)"
        );
        return;
    }
    let kvs_dir = tempfile::tempdir().expect("temp dir");
    let redis_dir = tempfile::tempdir().expect("temp dir");
    let (_kvs, kvs_addr) = start_kvs(kvs_dir.path(), options.server_threads.as_deref());
    let Some((_redis, redis_addr)) = start_redis(redis_dir.path()) else {
        println!("RESP benchmark skipped: redis-server did not start");
        return;
    };
    println!(
        "redis-benchmark -t set,get -c {} -n {}; requests per second, median of {} rounds \
         (kvs-server: kvs engine, sync os{}; redis-server: --save '' --appendonly no)",
        options.clients,
        options.requests,
        options.rounds,
        options
            .server_threads
            .as_deref()
            .map_or(String::new(), |t| format!(", --threads {t}")),
    );
    println!(
        "{:<8} {:>12} {:>12} {:>9} {:>12} {:>12} {:>9}",
        "", "kvs SET", "redis SET", "kvs/redis", "kvs GET", "redis GET", "kvs/redis"
    );
    for pipeline in [1, 16] {
        let mut kvs = (Vec::new(), Vec::new());
        let mut redis = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            for (addr, samples) in [(kvs_addr, &mut kvs), (redis_addr, &mut redis)] {
                match redis_benchmark(addr, &options, pipeline) {
                    Some((set, get)) => {
                        samples.0.push(set);
                        samples.1.push(get);
                    }
                    None => {
                        println!("redis-benchmark failed against {addr}");
                        return;
                    }
                }
            }
        }
        let (kvs_set, kvs_get) = (median(kvs.0), median(kvs.1));
        let (redis_set, redis_get) = (median(redis.0), median(redis.1));
        println!(
            "{:<8} {:>12.0} {:>12.0} {:>8.2}x {:>12.0} {:>12.0} {:>8.2}x",
            format!("-P {pipeline}"),
            kvs_set,
            redis_set,
            kvs_set / redis_set,
            kvs_get,
            redis_get,
            kvs_get / redis_get
        );
    }
}
