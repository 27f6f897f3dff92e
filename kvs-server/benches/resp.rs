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

mod servers;

use std::net::SocketAddr;
use std::process::Command;

use servers::{installed, start_kvs, start_redis};

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
    let (_kvs, kvs_addr) = start_kvs(
        kvs_dir.path(),
        "shared-queue",
        options.server_threads.as_deref(),
    );
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
