//! Load benchmark: the real `kvs-server` (kvs engine) under N client threads, each with its
//! own connection doing sets then gets, compared with `redis-server` in the same run.
//!
//! ```text
//! cargo bench -p kvs-server --bench load
//! cargo bench -p kvs-server --bench load -- --threads 1,32 --ops 20000 --pools shared-queue
//! cargo bench -p kvs-server --bench load -- --server-threads 1   # kvs-server --threads 1
//! ```
//!
//! For each pool kind and thread count it prints ops/s and p50/p99 latency of the sets and of
//! the gets. redis is driven twice at the same connection counts: by this same client harness
//! (speaking RESP), which makes the fairest ratio, and by `redis-benchmark`. The ratios
//! printed are kvs/redis ops/s. Then it opens 1,000 idle connections to `kvs-server` and
//! prints the growth of the server's resident memory.
//!
//! First of all it measures one client doing GETs back to back (the kvs protocol through
//! `KvsClient` against `kvs-server`, RESP through this harness against `redis-server`),
//! `--rounds` times each (default 5), alternating which goes first, and prints a row beside
//! the figures measured before the request path was reworked: ops/s and p50 latency,
//! median (min-max) of the rounds, the median of each round's ratio, and the CPU time each
//! server spent per request. Without `redis-server` and
//! `redis-benchmark` installed (Debian: `redis-server`, `redis-tools`) the comparison is
//! skipped with a message.

mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use kvs::KvsClient;

use servers::{installed, si, start_kvs, start_redis, with_cpu_of, Process, Spread};

const VALUE_LEN: usize = 32;

struct Options {
    threads: Vec<usize>,
    ops: usize,
    pools: Vec<String>,
    idle: usize,
    /// `kvs-server --threads`, if given.
    server_threads: Option<String>,
    /// Rounds of the lone-client comparison, and GETs per round.
    rounds: usize,
    lone_ops: usize,
}

fn options() -> Options {
    let mut options = Options {
        threads: vec![1, 8, 32, 128],
        ops: 20_000,
        pools: vec!["shared-queue".into(), "rayon".into(), "naive".into()],
        idle: 1000,
        server_threads: None,
        rounds: 5,
        lone_ops: 20_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--threads" => {
                options.threads = value().split(',').filter_map(|t| t.parse().ok()).collect()
            }
            "--ops" => options.ops = value().parse().unwrap_or(options.ops),
            "--pools" => options.pools = value().split(',').map(str::to_string).collect(),
            "--idle" => options.idle = value().parse().unwrap_or(options.idle),
            "--server-threads" => options.server_threads = Some(value()),
            "--rounds" => options.rounds = value().parse().unwrap_or(options.rounds).max(1),
            "--lone-ops" => options.lone_ops = value().parse().unwrap_or(options.lone_ops).max(1),
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }
    options
}

/// One connection of the load harness.
trait Connection: Send {
    fn set(&mut self, key: &[u8], value: &[u8]);
    fn get(&mut self, key: &[u8]);
}

impl Connection for KvsClient {
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.set_bytes(key, value).expect("kvs set");
    }
    fn get(&mut self, key: &[u8]) {
        assert!(self.get_bytes(key).expect("kvs get").is_some());
    }
}

/// A minimal RESP client: SET and GET, one request at a time.
struct Redis {
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Redis {
    fn connect(addr: SocketAddr) -> Redis {
        let stream = TcpStream::connect(addr).expect("redis connects");
        stream.set_nodelay(true).expect("nodelay");
        Redis {
            reader: BufReader::new(stream),
            out: Vec::new(),
            line: Vec::new(),
        }
    }

    fn command(&mut self, parts: &[&[u8]]) {
        self.out.clear();
        self.out
            .extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
        for part in parts {
            self.out
                .extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            self.out.extend_from_slice(part);
            self.out.extend_from_slice(b"\r\n");
        }
        self.reader
            .get_mut()
            .write_all(&self.out)
            .expect("redis write");
        self.line.clear();
        self.reader
            .read_until(b'\n', &mut self.line)
            .expect("redis reply");
        if self.line.first() == Some(&b'$') {
            let len: i64 = std::str::from_utf8(&self.line[1..self.line.len() - 2])
                .ok()
                .and_then(|n| n.parse().ok())
                .expect("bulk length");
            if len >= 0 {
                let mut body = vec![0; len as usize + 2];
                self.reader.read_exact(&mut body).expect("redis value");
            }
        }
    }
}

impl Connection for Redis {
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.command(&[b"SET", key, value]);
    }
    fn get(&mut self, key: &[u8]) {
        self.command(&[b"GET", key]);
    }
}

#[derive(Clone, Copy, Default)]
struct Figures {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `threads` connections, each doing its share of `ops` sets, then the same number of gets.
fn load<C: Connection + 'static>(
    threads: usize,
    ops: usize,
    connect: impl Fn() -> C,
) -> (Figures, Figures) {
    let per_thread = (ops / threads).max(1);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let mut connection = connect();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let value = vec![b'v'; VALUE_LEN];
                let keys: Vec<Vec<u8>> = (0..per_thread)
                    .map(|i| format!("key:{t:04}:{i:08}").into_bytes())
                    .collect();
                let mut set_latencies = Vec::with_capacity(per_thread);
                let mut get_latencies = Vec::with_capacity(per_thread);
                barrier.wait();
                for key in &keys {
                    let start = Instant::now();
                    connection.set(key, &value);
                    set_latencies.push(start.elapsed());
                }
                barrier.wait();
                barrier.wait();
                for key in &keys {
                    let start = Instant::now();
                    connection.get(key);
                    get_latencies.push(start.elapsed());
                }
                barrier.wait();
                (set_latencies, get_latencies)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    barrier.wait();
    let set_time = start.elapsed();
    barrier.wait();
    let start = Instant::now();
    barrier.wait();
    let get_time = start.elapsed();
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    for worker in workers {
        let (s, g) = worker.join().expect("client thread");
        sets.extend(s);
        gets.extend(g);
    }
    (figures(sets, set_time), figures(gets, get_time))
}

fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e6
    };
    Figures {
        ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// redis-benchmark's own figures for SET and GET at `clients` connections.
fn redis_benchmark(addr: SocketAddr, clients: usize, ops: usize) -> Option<(Figures, Figures)> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-c", &clients.to_string(), "-n", &ops.to_string()])
        .args([
            "-t",
            "set,get",
            "-d",
            &VALUE_LEN.to_string(),
            "-r",
            "1000000",
            "--csv",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut set = None;
    let mut get = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        if fields.len() < 7 {
            continue;
        }
        let number = |i: usize| fields[i].parse::<f64>().ok();
        // The header line has no numbers.
        let (Some(ops_per_sec), Some(p50_ms), Some(p99_ms)) = (number(1), number(4), number(6))
        else {
            continue;
        };
        let figures = Figures {
            ops_per_sec,
            p50_us: p50_ms * 1000.0,
            p99_us: p99_ms * 1000.0,
        };
        match fields[0] {
            "SET" => set = Some(figures),
            "GET" => get = Some(figures),
            _ => {}
        }
    }
    Some((set?, get?))
}

fn row(name: &str, threads: usize, (set, get): (Figures, Figures)) {
    println!(
        "{name:<32} {threads:>5} {:>11.0} {:>8.0} {:>8.0} {:>11.0} {:>8.0} {:>8.0}",
        set.ops_per_sec, set.p50_us, set.p99_us, get.ops_per_sec, get.p50_us, get.p99_us
    );
}

fn ratio(name: &str, kvs: (Figures, Figures), other: (Figures, Figures)) {
    println!(
        "{:<32} {:>5} {:>10.2}x {:>17} {:>10.2}x",
        format!("  kvs/{name}"),
        "",
        kvs.0.ops_per_sec / other.0.ops_per_sec,
        "",
        kvs.1.ops_per_sec / other.1.ops_per_sec
    );
}

/// Resident memory of a process in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A redis-server to compare with, if redis-server and redis-benchmark are installed.
fn start_redis_if_installed(dir: &Path) -> Option<(Process, SocketAddr)> {
    if !installed("redis-server") || !installed("redis-benchmark") {
        println!(
            "redis comparison skipped: redis-server and redis-benchmark are not installed \
             (Debian: apt-get install redis-server redis-tools)"
        );
        return None;
    }
    let redis = start_redis(dir);
    if redis.is_none() {
        println!("redis comparison skipped: redis-server did not start");
    }
    redis
}

/// The lone client of the table, as measured on the 2-core development machine before the
/// request path was reworked: kvs ops/s and p50 (us), then redis's.
const LONE_BEFORE: (f64, f64, f64, f64) = (14.2e3, 70.0, 17.8e3, 55.0);

/// GETs of `keys`, one at a time on `connection`: ops/s and p50 latency (us) of the round, and
/// the CPU time per GET of the server `pid`, in nanoseconds.
fn lone_round<C: Connection>(connection: &mut C, keys: &[Vec<u8>], pid: u32) -> [f64; 3] {
    let mut latencies = Vec::with_capacity(keys.len());
    let start = Instant::now();
    let ((), cpu) = with_cpu_of(pid, || {
        for key in keys {
            let sent = Instant::now();
            connection.get(key);
            latencies.push(sent.elapsed());
        }
    });
    let figures = figures(latencies, start.elapsed());
    let cpu_ns = cpu.map_or(f64::NAN, |cpu| cpu.as_nanos() as f64 / keys.len() as f64);
    [figures.ops_per_sec, figures.p50_us, cpu_ns]
}

/// The lone-client row: one connection doing GETs back to back, kvs against redis.
fn lone_client(options: &Options, redis: &(Process, SocketAddr)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let kvs = start_kvs(
        dir.path(),
        "shared-queue",
        options.server_threads.as_deref(),
    );
    let keys: Vec<Vec<u8>> = (0..options.lone_ops)
        .map(|i| format!("lone:{i:08}").into_bytes())
        .collect();
    let value = vec![b'v'; VALUE_LEN];
    let mut kvs_client = KvsClient::connect(kvs.1).expect("kvs connects");
    let mut redis_client = Redis::connect(redis.1);
    for key in &keys {
        Connection::set(&mut kvs_client, key, &value);
        Connection::set(&mut redis_client, key, &value);
    }
    let (mut kvs_rounds, mut redis_rounds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.rounds {
        // Alternate which server goes first, so that neither always follows the other.
        let (k, r) = if round % 2 == 0 {
            let k = lone_round(&mut kvs_client, &keys, kvs.0 .0.id());
            (k, lone_round(&mut redis_client, &keys, redis.0 .0.id()))
        } else {
            let r = lone_round(&mut redis_client, &keys, redis.0 .0.id());
            (lone_round(&mut kvs_client, &keys, kvs.0 .0.id()), r)
        };
        ratios.push(k[0] / r[0]);
        kvs_rounds.push(k);
        redis_rounds.push(r);
    }
    let column = |rounds: &[[f64; 3]], i: usize| {
        Spread::of(&rounds.iter().map(|r| r[i]).collect::<Vec<_>>()).expect("a round")
    };
    let (before_kvs, before_kvs_p50, before_redis, before_redis_p50) = LONE_BEFORE;
    println!(
        "one client, back-to-back GET ({} per round, {VALUE_LEN}-byte values; kvs: the kvs \
         protocol through KvsClient, redis: RESP through this harness); median (min-max) of {} \
         rounds",
        options.lone_ops, options.rounds
    );
    println!(
        "{:<7} | {:>7} {:>7} {:>6} {:>9} | {:>22} {:>22} {:>22} | {:>17} | {:>14} | goal",
        "",
        "before:",
        "",
        "",
        "p50 us",
        "now: kvs ops/s",
        "redis ops/s",
        "kvs/redis",
        "p50 us kvs/redis",
        "CPU/GET ns"
    );
    let ratio = Spread::of(&ratios).expect("a round");
    println!(
        "{:<7} | {:>7} {:>7} {:>5.2}x {:>9} | {:>22} {:>22} {:>22} | {:>17} | {:>14} | >= 1.0x{}",
        "lone",
        si(before_kvs),
        si(before_redis),
        before_kvs / before_redis,
        format!("{before_kvs_p50:.0}/{before_redis_p50:.0}"),
        column(&kvs_rounds, 0).show(),
        column(&redis_rounds, 0).show(),
        format!("{:.2}x ({:.2}-{:.2})", ratio.median, ratio.min, ratio.max),
        format!(
            "{:.1} / {:.1}",
            column(&kvs_rounds, 1).median,
            column(&redis_rounds, 1).median
        ),
        format!(
            "{:.0} / {:.0}",
            column(&kvs_rounds, 2).median,
            column(&redis_rounds, 2).median
        ),
        if ratio.median >= 1.0 {
            ""
        } else {
            " (not met)"
        },
    );
    println!();
}

fn main() {
    let options = options();
    let redis_dir = tempfile::tempdir().expect("temp dir");
    let redis = start_redis_if_installed(redis_dir.path());
    if let Some(redis) = &redis {
        lone_client(&options, redis);
    }
    println!(
        "{} ops per phase, {VALUE_LEN}-byte values, one connection per client thread; \
         latencies in microseconds",
        options.ops
    );
    println!(
        "{:<32} {:>5} {:>11} {:>8} {:>8} {:>11} {:>8} {:>8}",
        "server", "conns", "set ops/s", "p50", "p99", "get ops/s", "p50", "p99"
    );
    // Every server runs for the whole benchmark (idle ones cost nothing), and each
    // connection count is measured on all of them back to back, so that the ratios compare
    // runs made under the same background load.
    let kvs_servers: Vec<_> = options
        .pools
        .iter()
        .map(|pool| {
            let dir = tempfile::tempdir().expect("temp dir");
            let (process, addr) = start_kvs(dir.path(), pool, options.server_threads.as_deref());
            (pool, process, addr, dir)
        })
        .collect();
    for &threads in &options.threads {
        let mut harness = None;
        let mut benchmark = None;
        if let Some((_, addr)) = &redis {
            let figures = load(threads, options.ops, || Redis::connect(*addr));
            row("redis (this harness)", threads, figures);
            harness = Some(figures);
            benchmark = redis_benchmark(*addr, threads, options.ops);
            if let Some(figures) = benchmark {
                row("redis (redis-benchmark)", threads, figures);
            }
        }
        for (pool, _, addr, _) in &kvs_servers {
            let kvs = load(threads, options.ops, || {
                KvsClient::connect(*addr).expect("kvs connects")
            });
            row(&format!("kvs-server --pool {pool}"), threads, kvs);
            if let Some(harness) = harness {
                ratio("redis (harness)", kvs, harness);
            }
            if let Some(benchmark) = benchmark {
                ratio("redis-benchmark", kvs, benchmark);
            }
        }
    }
    drop(kvs_servers);

    if options.idle > 0 {
        let dir = tempfile::tempdir().expect("temp dir");
        let (server, addr) = start_kvs(dir.path(), "shared-queue", None);
        let pid = server.0.id();
        let mut client = KvsClient::connect(addr).expect("kvs connects");
        client.set("warm".into(), "up".into()).expect("set");
        let before = rss_kib(pid);
        let idle: Vec<TcpStream> = (0..options.idle)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        // Let the server accept and register them all, then prove it still answers.
        thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        let mut fresh = KvsClient::connect(addr).expect("kvs connects");
        fresh.get("warm".into()).expect("get");
        let first_request = start.elapsed();
        let after = rss_kib(pid);
        match (before, after) {
            (Some(before), Some(after)) => println!(
                "{} idle connections: server RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB); a new \
                 client connected and was answered in {:.2} ms",
                idle.len(),
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                after.saturating_sub(before) as f64 / 1024.0,
                first_request.as_secs_f64() * 1e3
            ),
            _ => println!("idle connections: cannot read the server's RSS (not Linux?)"),
        }
    }
}
