//! `kvs-bench`: `KvStore` against sled, fjall and LMDB, the same workloads in one run.
//!
//! ```sh
//! cargo run --release --manifest-path bench/Cargo.toml            # full run, ~6 minutes
//! cargo run --release --manifest-path bench/Cargo.toml -- --quick # smoke run, ~1 minute
//! ```
//!
//! Workloads, each measured for every engine in every round, engines alternating,
//! medians over the rounds:
//! 1. sets of 16-byte keys and 100-byte values into a fresh store, one per call;
//! 2. the same with 1 KiB values;
//! 3. uniformly random gets from a store of 100,000 keys, from 1 and from 2 threads;
//! 4. durable sets (on disk before the call returns) from 1 and from 8 threads;
//! 5. the time to open a store of 1,000,000 keys with 100-byte values, and the resident memory
//!    right after the open, each open in a fresh child process.
//!
//! What each engine's call promises (see `peer.rs` and the footnotes of the results page):
//! - kvs: `KvStore` with default options; a set has reached the OS (`write(2)`) when it
//!   returns. Durable sets use `SyncPolicy::Always` (fdatasync, group commit).
//! - sled: `SledKvsEngine`, which flushes after every set, in every workload (sled 0.34's flush
//!   is `sync_file_range`, weaker than the others' fdatasync: see `peer.rs`).
//! - fjall: `insert` flushes its journal to the OS (fjall's default); durable sets add
//!   `Database::persist(PersistMode::SyncData)` after each insert.
//! - LMDB (heed): one write transaction per set; `MDB_NOSYNC` for workloads 1-2 (the commit
//!   writes to the file without fsync), a synced commit for durable sets.
//!
//! The full run writes `docs/perf/results.md` (keeping the notes below its end marker) and
//! `docs/perf/results.svg`; `--quick` writes to `bench/target/quick/` instead, so a smoke run
//! never replaces the published figures. `--out DIR` chooses another directory, `--dir DIR`
//! where the stores are created (default: the system's temporary directory).
//!
//! `--only set,get,durable,open` measures only those groups of workloads (1-2, 3, 4, 5), and
//! like `--quick` writes its page to `bench/target/only/` unless `--out` says otherwise.
//! After the table it prints the goals (kvs's ratio over one peer on one workload) with the
//! ratio before the second round of speed work beside this run's.
//!
//! `--profile set|get|durable [--seconds N] [--threads N]` runs only `KvStore`'s workload 1, 3
//! or 4, for `perf record` (see `docs/perf/results.md`, "Where the time goes").

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kvs_bench::host::{cores, filesystem, load_average, machine, mib, revision, settle};
use kvs_bench::peer::{Durability, Engine, Result};
use kvs_bench::report::{Row, RunInfo, Unit};
use kvs_bench::workload::{Sample, Values, GET_KEYS, LARGE_VALUE, SMALL_VALUE};
use kvs_bench::{open, plot, report, workload};

/// How long and how often to measure.
struct Plan {
    rounds: usize,
    sample: Duration,
    durable_sample: Duration,
    open_keys: u64,
    open_rounds: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            rounds: 9,
            sample: Duration::from_millis(1000),
            durable_sample: Duration::from_millis(1500),
            open_keys: 1_000_000,
            open_rounds: 5,
        }
    }

    fn quick() -> Plan {
        Plan {
            rounds: 3,
            sample: Duration::from_millis(200),
            durable_sample: Duration::from_millis(300),
            open_keys: 200_000,
            open_rounds: 3,
        }
    }
}

struct Args {
    quick: bool,
    out: Option<PathBuf>,
    dir: Option<PathBuf>,
    profile: Option<String>,
    seconds: f64,
    threads: usize,
    /// The groups of workloads to measure (`--only`); all of them if `None`.
    only: Option<Vec<String>>,
}

/// The groups of workloads `--only` chooses from.
const GROUPS: [&str; 4] = ["set", "get", "durable", "open"];

fn parse_args(raw: &[String]) -> Result<Args> {
    let mut args = Args {
        quick: false,
        out: None,
        dir: None,
        profile: None,
        seconds: 10.0,
        threads: 1,
        only: None,
    };
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--profile" => args.profile = Some(value()?.clone()),
            "--seconds" => args.seconds = value()?.parse()?,
            "--threads" => args.threads = value()?.parse()?,
            "--only" => {
                let groups: Vec<String> = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = groups.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    return Err(format!(
                        "--only takes a comma-separated list of {}, not {bad:?}",
                        GROUPS.join(", ")
                    )
                    .into());
                }
                args.only = Some(groups);
            }
            "-h" | "--help" => {
                println!(
                    "usage: kvs-bench [--quick] [--only set,get,durable,open] [--out DIR] \
                     [--dir DIR]\n       \
                     kvs-bench --profile set|get|durable [--seconds N] [--threads N] [--dir DIR]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let result = match raw.first().map(String::as_str) {
        Some(open::CHILD_FLAG) => open::run_child(&raw[1..]),
        _ => parse_args(&raw).and_then(|args| run(&args, &raw)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvs-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, raw: &[String]) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("kvs-bench-")
        .tempdir_in(&base)?;
    if let Some(which) = &args.profile {
        return profile(which, scratch.path(), args.seconds, args.threads);
    }
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        if args.quick {
            root.join("target/quick")
        } else if args.only.is_some() {
            root.join("target/only")
        } else {
            root.join("../docs/perf")
        }
    });
    let load_before = load_average();
    let date = report::utc_now();
    let started = Instant::now();
    let values = Values::new();
    let rows = measure_all(&plan, scratch.path(), &values, args.only.as_deref())?;
    eprintln!("measured in {:.0} s", started.elapsed().as_secs_f64());

    let info = RunInfo {
        command: std::iter::once("cargo run --release --manifest-path bench/Cargo.toml --")
            .chain(raw.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end_matches(" --")
            .to_string(),
        date,
        machine: machine(),
        load_before,
        load_after: load_average(),
        revision: revision(),
        rounds: plan.rounds,
        seconds_per_sample: plan.sample.as_secs_f64(),
        durable_seconds_per_sample: plan.durable_sample.as_secs_f64(),
        open_keys: plan.open_keys,
        open_rounds: plan.open_rounds,
        data_dir: format!("{} ({})", base.display(), filesystem(&base)),
    };
    println!("{}", report::text_table(&rows));
    println!("{}", report::goals_text(&rows));
    println!(
        "load average: {} at start, {} at end",
        info.load_before, info.load_after
    );
    std::fs::create_dir_all(&out)?;
    let title = format!(
        "KvStore vs sled, fjall, LMDB: medians of {} rounds, {} ({} cores)",
        plan.rounds,
        info.date,
        cores()
    );
    std::fs::write(out.join("results.svg"), plot::svg(&rows, &title))?;
    report::write_page(
        &out.join("results.md"),
        &report::markdown(&info, &rows, "results.svg"),
    )?;
    println!("wrote {}", out.join("results.md").display());
    Ok(())
}

/// Engines in the order round `round` measures them: the starting engine rotates, so no engine
/// is always the first of a round (right after a phase change) or the last. Between write
/// samples, `settle` flushes the previous engine's dirty pages, so they are not written back
/// during the next engine's sample.
fn order(round: usize) -> impl Iterator<Item = Engine> {
    (0..Engine::ALL.len()).map(move |i| Engine::ALL[(round + i) % Engine::ALL.len()])
}

/// Measures every workload of the groups in `only` (all of them if `None`), and returns the
/// rows of those.
fn measure_all(
    plan: &Plan,
    scratch: &Path,
    values: &Values,
    only: Option<&[String]>,
) -> Result<Vec<Row>> {
    let wants = |group: &str| only.is_none_or(|only| only.iter().any(|g| g == group));
    let mut set_small = Row::new("1. set, 100 B values", Unit::OpsPerSec);
    let mut set_large = Row::new("2. set, 1 KiB values", Unit::OpsPerSec);
    let mut get_one = Row::new("3. get, random of 100k, 1 thread", Unit::OpsPerSec);
    let mut get_two = Row::new("3. get, random of 100k, 2 threads", Unit::OpsPerSec);
    let mut durable_one = Row::new("4. durable set, 1 thread", Unit::OpsPerSec);
    let mut durable_eight = Row::new("4. durable set, 8 threads", Unit::OpsPerSec);
    let keys_label = if plan.open_keys.is_multiple_of(1_000_000) {
        format!("{}M", plan.open_keys / 1_000_000)
    } else {
        format!("{}k", plan.open_keys / 1000)
    };
    let mut open_time = Row::new(format!("5. open {keys_label} keys"), Unit::Millis);
    let mut open_rss = Row::new(
        format!("5. memory after open, {keys_label} keys"),
        Unit::MiB,
    );

    // Workloads 1 and 2: a fresh store for every sample.
    let sets = if wants("set") {
        vec![(&mut set_small, SMALL_VALUE), (&mut set_large, LARGE_VALUE)]
    } else {
        Vec::new()
    };
    for (row, value_len) in sets {
        measure_rounds(row, plan.rounds, |engine, _| {
            let dir = tempfile::tempdir_in(scratch)?;
            let store = engine.open(dir.path(), Durability::Os)?;
            let sample = workload::sets(&store, values, value_len, 1, plan.sample, 0)?;
            drop(store);
            drop(dir);
            settle();
            Ok(sample)
        })?;
    }

    if wants("get") {
        // Workload 3: one store of 100k keys per engine, built, closed and reopened.
        let mut stores = Vec::new();
        for engine in Engine::ALL {
            let dir = scratch.join(format!("get-{}", engine.name()));
            workload::load(engine, &dir, values, GET_KEYS)?;
            stores.push((engine, engine.open(&dir, Durability::Os)?));
        }
        settle();
        for (row, threads) in [(&mut get_one, 1), (&mut get_two, 2)] {
            measure_rounds(row, plan.rounds, |engine, round| {
                let store = &stores[engine as usize].1;
                workload::gets(store, GET_KEYS, threads, plan.sample, round as u64)
            })?;
        }
        drop(stores);
    }

    if wants("durable") {
        // Workload 4: one durable store per engine, kept across rounds.
        let mut stores = Vec::new();
        for engine in Engine::ALL {
            let dir = scratch.join(format!("durable-{}", engine.name()));
            stores.push(engine.open(&dir, Durability::Disk)?);
        }
        for (row, threads) in [(&mut durable_one, 1), (&mut durable_eight, 8)] {
            measure_rounds(row, plan.rounds, |engine, round| {
                let store = &stores[engine as usize];
                let key_round = (round + threads * plan.rounds) as u64;
                workload::sets(
                    store,
                    values,
                    SMALL_VALUE,
                    threads,
                    plan.durable_sample,
                    key_round,
                )
            })?;
        }
        drop(stores);
    }

    if wants("open") {
        // Workload 5: open a big store in a child process.
        let mut dirs = Vec::new();
        for engine in Engine::ALL {
            let dir = scratch.join(format!("open-{}", engine.name()));
            let started = Instant::now();
            workload::load(engine, &dir, values, plan.open_keys)?;
            eprintln!(
                "built {} keys for {} in {:.1} s",
                plan.open_keys,
                engine.name(),
                started.elapsed().as_secs_f64()
            );
            dirs.push(dir);
        }
        settle();
        for round in 0..plan.open_rounds {
            for engine in order(round) {
                let sample = open::measure_in_child(engine, &dirs[engine as usize])?;
                eprintln!(
                    "{:<38} {:<5} round {}/{}: {:.3} s, {:.1} MiB resident ({:.1} MiB before open)",
                    open_time.label,
                    engine.name(),
                    round + 1,
                    plan.open_rounds,
                    sample.seconds,
                    mib(sample.rss_after),
                    mib(sample.rss_before)
                );
                open_time.push(engine, sample.seconds * 1000.0);
                open_rss.push(engine, mib(sample.rss_after));
            }
        }
    }
    Ok([
        ("set", set_small),
        ("set", set_large),
        ("get", get_one),
        ("get", get_two),
        ("durable", durable_one),
        ("durable", durable_eight),
        ("open", open_time),
        ("open", open_rss),
    ]
    .into_iter()
    .filter(|(group, _)| wants(group))
    .map(|(_, row)| row)
    .collect())
}

/// Runs `KvStore` alone on one workload, for a profiler.
fn profile(which: &str, scratch: &Path, seconds: f64, threads: usize) -> Result<()> {
    let values = Values::new();
    let duration = Duration::from_secs_f64(seconds);
    let sample = match which {
        "set" | "durable" => {
            let durability = if which == "set" {
                Durability::Os
            } else {
                Durability::Disk
            };
            let store = Engine::Kvs.open(&scratch.join("set"), durability)?;
            let sample = workload::sets(&store, &values, SMALL_VALUE, threads, duration, 0)?;
            if let kvs_bench::peer::Store::Kvs { store, .. } = &store {
                let stats = store.disk_stats();
                if stats.syncs > 0 {
                    println!(
                        "{} fsyncs covered {} writes: {:.2} writes each",
                        stats.syncs,
                        stats.synced_writes,
                        stats.synced_writes as f64 / stats.syncs as f64
                    );
                }
            }
            sample
        }
        "get" => {
            let dir = scratch.join("get");
            workload::load(Engine::Kvs, &dir, &values, GET_KEYS)?;
            let store = Engine::Kvs.open(&dir, Durability::Os)?;
            workload::gets(&store, GET_KEYS, threads, duration, 0)?
        }
        other => return Err(format!("--profile takes set, get or durable, not {other:?}").into()),
    };
    println!(
        "kvs {which}, {threads} thread(s): {:.0} ops/s, {:.2} cores busy",
        sample.ops_per_sec, sample.cpus
    );
    Ok(())
}

/// `rounds` rounds of `sample` for every engine, in the order of each round (see [`order`]),
/// each sample reported and added to `row`.
fn measure_rounds(
    row: &mut Row,
    rounds: usize,
    mut sample: impl FnMut(Engine, usize) -> Result<Sample>,
) -> Result<()> {
    for round in 0..rounds {
        for engine in order(round) {
            let measured = sample(engine, round)?;
            progress(&row.label, engine, round, rounds, measured);
            row.push_sample(engine, measured);
        }
    }
    Ok(())
}

fn progress(label: &str, engine: Engine, round: usize, rounds: usize, sample: Sample) {
    eprintln!(
        "{label:<38} {:<5} round {}/{rounds}: {:>10.0} ops/s, {:.2} cores busy",
        engine.name(),
        round + 1,
        sample.ops_per_sec,
        sample.cpus
    );
}
