//! RESP benchmark: `redis-benchmark -c 50` SET and GET, with `-P 16` and without pipelining,
//! against the real `kvs-server` (kvs engine, default sync: every write reaches the operating
//! system before its reply) and against a `redis-server` started here on a free port with
//! persistence off (`--save '' --appendonly no`).
//!
//! ```text
//! cargo bench -p kvs-server --bench resp
//! cargo bench -p kvs-server --bench resp -- --rounds 5 --requests 200000 --server-threads 1
//! ```
//!
//! It prints one row per workload: the figures measured before the request path was reworked
//! ("before", fixed in [`WORKLOADS`], for the rows measured then), then this run's requests
//! per second of kvs and of redis, each the median of `--rounds` runs (default 5) with the
//! smallest and largest, the ratio kvs/redis (the median of each round's ratio, as both
//! servers of a round ran under the same background load), the CPU time each server spent
//! per request (the figure that moves least on a shared, busy machine), and the share of a
//! core `redis-benchmark` itself kept busy: near 1.00 for its default single thread, the
//! client limits the run, not the server, which is why every workload is also run with a
//! client of two threads (`--threads 2`, four times the requests; their rates are requests
//! over the run's wall time, as redis-benchmark with threads ends runs on quarter seconds).
//! The two servers are measured alternately, the one
//! first changing every round. Needs Debian's `redis-tools` and `redis-server`; without them
//! it says
//! so and exits.

mod servers;

use std::net::SocketAddr;
use std::process::Command;

use servers::{installed, si, start_kvs, start_redis, with_cpu_of, Process, Spread};

struct Options {
    rounds: usize,
    /// Requests per run without pipelining; pipelined runs send ten times as many.
    requests: usize,
    clients: usize,
    /// `kvs-server --threads`, if given.
    server_threads: Option<String>,
}

/// One workload of the table, with the figures measured on the 2-core development machine
/// before the request path was reworked (requests per second, `redis-benchmark -c 50`).
struct Workload {
    name: &'static str,
    test: &'static str,
    pipeline: usize,
    /// `redis-benchmark --threads`: 1 is its default, one thread for every connection.
    client_threads: usize,
    /// Measured before the request path was reworked, for the rows that were measured then.
    before: Option<(f64, f64)>,
}

const WORKLOADS: [Workload; 8] = [
    workload("-P 16 SET", "set", 16, 1, Some((1.15e6, 1.32e6))),
    workload("-P 16 GET", "get", 16, 1, Some((1.23e6, 1.49e6))),
    workload("-P 1 SET", "set", 1, 1, Some((86.7e3, 90.3e3))),
    workload("-P 1 GET", "get", 1, 1, Some((87.6e3, 88.2e3))),
    // The same with a client of two threads: one thread is what limits the rows above on a
    // machine of two cores (see the client's share of a core).
    workload("-P 16 SET, 2 client threads", "set", 16, 2, None),
    workload("-P 16 GET, 2 client threads", "get", 16, 2, None),
    workload("-P 1 SET, 2 client threads", "set", 1, 2, None),
    workload("-P 1 GET, 2 client threads", "get", 1, 2, None),
];

const fn workload(
    name: &'static str,
    test: &'static str,
    pipeline: usize,
    client_threads: usize,
    before: Option<(f64, f64)>,
) -> Workload {
    Workload {
        name,
        test,
        pipeline,
        client_threads,
        before,
    }
}

/// The ratio kvs/redis the request path aims at, for every workload of the table.
const GOAL: f64 = 1.2;

fn options() -> Options {
    let mut options = Options {
        rounds: 5,
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

/// The CPU time (user and system) of every child process this process has waited for.
fn children_cpu() -> std::time::Duration {
    // SAFETY: `getrusage` only writes the struct it is given, which lives on this stack.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) != 0 {
            return std::time::Duration::ZERO;
        }
        usage
    };
    let time =
        |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Requests per second of one `redis-benchmark` run of `workload` with `requests` requests,
/// as `--csv` reports it.
fn redis_benchmark(
    addr: SocketAddr,
    options: &Options,
    workload: &Workload,
    requests: usize,
) -> Option<f64> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", workload.test, "--csv"])
        .args(["-c", &options.clients.to_string()])
        .args(["-n", &requests.to_string()])
        .args(["-P", &workload.pipeline.to_string()])
        .args(["--threads", &workload.client_threads.to_string()])
        .output()
        .ok()?;
    if !output.stderr.is_empty() {
        eprintln!(
            "redis-benchmark: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        if !fields.first()?.eq_ignore_ascii_case(workload.test) {
            return None;
        }
        fields.get(1)?.parse::<f64>().ok()
    })
}

/// What one server did over the rounds of a workload.
#[derive(Default)]
struct Samples {
    rps: Vec<f64>,
    cpu_ns_per_request: Vec<f64>,
    /// The CPU time `redis-benchmark` spent over the run's wall time: near 1.0, the
    /// single-threaded client is what limits the run, whatever the server.
    client_cores: Vec<f64>,
}

/// One run of `workload` against `server`: its requests per second, and the server's CPU
/// time per request.
fn run(
    server: &(Process, SocketAddr),
    options: &Options,
    workload: &Workload,
    samples: &mut Samples,
) -> Option<()> {
    // With several threads redis-benchmark ends a run only at a quarter of a second (see
    // below): four times the requests keep that step small next to the run.
    let requests = options.requests
        * if workload.pipeline > 1 { 10 } else { 1 }
        * if workload.client_threads > 1 { 4 } else { 1 };
    let client_before = children_cpu();
    let started = std::time::Instant::now();
    let (rps, cpu) = with_cpu_of(server.0 .0.id(), || {
        redis_benchmark(server.1, options, workload, requests)
    });
    let wall = started.elapsed();
    let rps = rps?;
    // With several threads, redis-benchmark's own figure comes in steps of a quarter of a
    // second of run time (997k, 798k for a million requests): the run's wall time, which
    // steps the same way but over runs four times as long, is the finer one.
    samples.rps.push(if workload.client_threads > 1 {
        requests as f64 / wall.as_secs_f64()
    } else {
        rps
    });
    if let Some(client) = children_cpu().checked_sub(client_before) {
        samples
            .client_cores
            .push(client.as_secs_f64() / wall.as_secs_f64());
    }
    if let Some(cpu) = cpu {
        samples
            .cpu_ns_per_request
            .push(cpu.as_nanos() as f64 / requests as f64);
    }
    Some(())
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
    let kvs = start_kvs(
        kvs_dir.path(),
        "shared-queue",
        options.server_threads.as_deref(),
    );
    let Some(redis) = start_redis(redis_dir.path()) else {
        println!("RESP benchmark skipped: redis-server did not start");
        return;
    };
    println!(
        "redis-benchmark -c {} -n {} (10x with -P 16, 4x more with 2 client threads); requests \
         per second, median (min-max) of {} rounds; kvs-server: kvs engine, sync os{}; \
         redis-server: --save '' --appendonly no",
        options.clients,
        options.requests,
        options.rounds,
        options
            .server_threads
            .as_deref()
            .map_or(String::new(), |t| format!(", --threads {t}")),
    );
    println!(
        "{:<27} | {:>7} {:>7} {:>6} | {:>22} {:>22} {:>22} | {:>17} | {:>13} | goal",
        "workload",
        "before:",
        "",
        "",
        "now: kvs",
        "redis",
        "kvs/redis",
        "CPU/request",
        "client cores"
    );
    println!(
        "{:<27} | {:>7} {:>7} {:>6} | {:>22} {:>22} {:>22} | {:>17} | {:>13} |",
        "", "kvs", "redis", "ratio", "", "", "", "kvs / redis", "kvs / redis"
    );
    for workload in &WORKLOADS {
        let mut kvs_samples = Samples::default();
        let mut redis_samples = Samples::default();
        let mut ratios = Vec::new();
        for round in 0..options.rounds {
            // Alternate which server goes first, so that neither always follows the other.
            let order = if round % 2 == 0 {
                [(&kvs, &mut kvs_samples), (&redis, &mut redis_samples)]
            } else {
                [(&redis, &mut redis_samples), (&kvs, &mut kvs_samples)]
            };
            for (server, samples) in order {
                if run(server, &options, workload, samples).is_none() {
                    println!("redis-benchmark failed against {}", server.1);
                    return;
                }
            }
            if let (Some(k), Some(r)) = (kvs_samples.rps.last(), redis_samples.rps.last()) {
                ratios.push(k / r);
            }
        }
        let (Some(kvs_rps), Some(redis_rps), Some(ratio)) = (
            Spread::of(&kvs_samples.rps),
            Spread::of(&redis_samples.rps),
            Spread::of(&ratios),
        ) else {
            continue;
        };
        let cpu = |samples: &Samples| {
            Spread::of(&samples.cpu_ns_per_request)
                .map_or_else(|| "?".to_string(), |s| format!("{:.0}", s.median))
        };
        let client = |samples: &Samples| {
            Spread::of(&samples.client_cores)
                .map_or_else(|| "?".to_string(), |s| format!("{:.2}", s.median))
        };
        let (before_kvs, before_redis, before_ratio) = match workload.before {
            Some((k, r)) => (si(k), si(r), format!("{:.2}x", k / r)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<27} | {:>7} {:>7} {:>6} | {:>22} {:>22} {:>22} | {:>17} | {:>13} | >= {GOAL:.1}x{}",
            workload.name,
            before_kvs,
            before_redis,
            before_ratio,
            kvs_rps.show(),
            redis_rps.show(),
            format!("{:.2}x ({:.2}-{:.2})", ratio.median, ratio.min, ratio.max),
            format!("{} / {} ns", cpu(&kvs_samples), cpu(&redis_samples)),
            format!("{} / {}", client(&kvs_samples), client(&redis_samples)),
            if ratio.median >= GOAL {
                ""
            } else {
                " (not met)"
            },
        );
    }
}
