//! `scale`: kvs beside sled, fjall, redb and LMDB from a million keys to a hundred million.
//!
//! ```sh
//! # the published run: 1M and 10M keys for every engine, 100M for kvs alone
//! cargo run --release --manifest-path bench/Cargo.toml --bin scale
//! # the same sizes spelled out; a size may name the engines it runs ("100M:kvs")
//! cargo run --release --manifest-path bench/Cargo.toml --bin scale -- --keys 1M,10M,100M:kvs
//! # a smoke run (100k keys, short samples), written to bench/target/quick/
//! cargo run --release --manifest-path bench/Cargo.toml --bin scale -- --quick
//! ```
//!
//! Keys are 16 bytes, values 100 bytes (`workload::key`, `workload::Values`). For each size
//! and engine, in a fresh directory that is deleted as soon as that engine's figures are
//! taken:
//! 1. load: every key once, in batches of 1,000 keys, each batch one atomic write (kvs
//!    `set_many_bytes`, a `sled::Batch`, a fjall `WriteBatch`, one redb or LMDB write
//!    transaction), then one sync of the whole store;
//! 2. disk bytes (blocks allocated, as `du` counts them) after the load, and again after the
//!    engine's own settling where it has one (fjall: memtable flushed and compactions idle;
//!    redb: `Database::compact`);
//! 3. open in a fresh child process (`open.rs`), `--open-rounds` times: the time open takes
//!    and the child's resident memory right after it, total and anonymous;
//! 4. uniformly random gets over the loaded keys, from 1 and from 2 threads, `--seconds`
//!    each (after a one-second warm-up that is not counted);
//! 5. kvs alone, in a fresh child process: overwrite 10% of the keys (batches of 1,000), then
//!    `KvStore::compact`; the compaction's time, the resident memory before it (steady) and
//!    its peak (`VmHWM` of `/proc/self/status`, reset with `/proc/self/clear_refs` right
//!    before the compaction, and a sampler thread reading `VmRSS` and `RssAnon` every 10 ms).
//!
//! Before each engine's run the free space of the data directory is checked against what
//! the run needs (`NEEDED_BYTES_PER_KEY`); a size that does not fit is skipped, and the table
//! says so. The run writes `scale.md` (keeping the notes below its end marker) and
//! `scale.svg` to `docs/perf/` (or `--out DIR`; `--quick` writes to `bench/target/quick/`),
//! and prints the same table.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvs::{KvStore, KvsEngine};
use kvs_bench::host::{cores, filesystem, load_average, machine, mib, revision, settle};
use kvs_bench::open::{self, status_bytes, Opener};
use kvs_bench::peer::{Engine, Result, Store};
use kvs_bench::plot;
use kvs_bench::report::{self, Row, Unit};
use kvs_bench::workload::{self, key, Values, SMALL_VALUE};

/// Keys per write batch while loading and overwriting.
const BATCH: u64 = 1000;
/// The key's length, taken off the memory per key.
const KEY_LEN: f64 = 16.0;
/// Free space a run needs per key: a kvs store of 100M keys is about 14 GB, the 10%
/// overwrite adds a tenth, and compaction writes its output before deleting its input.
const NEEDED_BYTES_PER_KEY: u64 = 350;
/// The flag that makes this binary a compaction child.
const COMPACT_CHILD: &str = "--compact-child";

struct Args {
    sizes: Vec<(u64, Vec<Engine>)>,
    seconds: f64,
    /// Opens per engine and size; `None`: [`default_open_rounds`].
    open_rounds: Option<usize>,
    dir: Option<PathBuf>,
    out: Option<PathBuf>,
    quick: bool,
}

const DEFAULT_SIZES: &str = "1M,10M,100M:kvs";

fn usage() -> String {
    format!(
        "usage: scale [--keys SIZES] [--engines LIST] [--seconds N] [--open-rounds N] \
         [--dir DIR] [--out DIR] [--quick]\n\
         SIZES: comma-separated key counts (100k, 1M, 10M...), each optionally followed by \
         :ENGINE+ENGINE to run only those engines at that size (default {DEFAULT_SIZES})\n\
         LIST: comma-separated engines among kvs, sled, fjall, redb, lmdb (default all)"
    )
}

/// `100k`, `1M`, `10M`, `1000` as a count of keys.
fn parse_count(text: &str) -> Result<u64> {
    let (digits, scale) = match text.as_bytes().last() {
        Some(b'k' | b'K') => (&text[..text.len() - 1], 1_000),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 1_000_000),
        _ => (text, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|e| format!("{text:?} is not a key count such as 100k or 10M: {e}"))?;
    if n == 0 {
        return Err(format!("{text:?}: a size needs at least one key").into());
    }
    Ok(n * scale)
}

fn parse_engines(text: &str, sep: char) -> Result<Vec<Engine>> {
    text.split(sep)
        .map(|name| {
            Engine::from_name(name.trim())
                .ok_or_else(|| format!("no engine {name:?} (kvs, sled, fjall, redb, lmdb)").into())
        })
        .collect()
}

fn parse_sizes(text: &str, engines: &[Engine]) -> Result<Vec<(u64, Vec<Engine>)>> {
    text.split(',')
        .map(|part| {
            let (count, only) = match part.split_once(':') {
                Some((count, list)) => (count, parse_engines(list, '+')?),
                None => (part, engines.to_vec()),
            };
            let only: Vec<Engine> = only.into_iter().filter(|e| engines.contains(e)).collect();
            Ok((parse_count(count.trim())?, only))
        })
        .collect()
}

fn parse_args(raw: &[String]) -> Result<Args> {
    let mut keys = None;
    let mut engines = Engine::SCALE.to_vec();
    let mut args = Args {
        sizes: Vec::new(),
        seconds: 5.0,
        open_rounds: None,
        dir: None,
        out: None,
        quick: false,
    };
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--keys" => keys = Some(value()?.clone()),
            "--engines" => engines = parse_engines(value()?, ',')?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--open-rounds" => args.open_rounds = Some(value()?.parse()?),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--quick" => args.quick = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
        }
    }
    if args.quick {
        keys.get_or_insert_with(|| "100k".into());
        args.seconds = args.seconds.min(1.0);
        args.open_rounds = Some(1);
    }
    if args.open_rounds == Some(0) || args.seconds.is_nan() || args.seconds <= 0.0 {
        return Err("--open-rounds and --seconds must be above 0".into());
    }
    args.sizes = parse_sizes(keys.as_deref().unwrap_or(DEFAULT_SIZES), &engines)?;
    Ok(args)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let result = match raw.first().map(String::as_str) {
        Some(open::CHILD_FLAG) => open::run_child(&raw[1..]),
        Some(COMPACT_CHILD) => compact_child(&raw[1..]),
        _ => parse_args(&raw).and_then(|args| run(&args, &raw)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything measured for one engine at one size.
#[derive(Debug, Default, Clone)]
struct Figures {
    load_keys_per_sec: f64,
    load_with_sync_keys_per_sec: f64,
    disk_after_load: u64,
    /// `None`: the engine has no settling of its own.
    disk_after_settling: Option<u64>,
    settling_seconds: Option<f64>,
    open_seconds: Vec<f64>,
    open_cpu_seconds: Vec<f64>,
    rss_after_open: Vec<f64>,
    anon_after_open: Vec<f64>,
    get_one: f64,
    get_two: f64,
    compaction: Option<Compaction>,
    load_average: String,
}

/// What the compaction child measured (kvs only).
#[derive(Debug, Default, Clone, Copy)]
struct Compaction {
    overwrite_keys_per_sec: f64,
    seconds: f64,
    steady_rss: u64,
    steady_anon: u64,
    /// `VmHWM` after the compaction, reset right before it; `None` if the reset failed.
    hwm: Option<u64>,
    sampled_peak_rss: u64,
    sampled_peak_anon: u64,
    log_bytes_before: u64,
    log_bytes_after: u64,
}

/// One size's results: per engine, what was measured or why it was skipped.
struct SizeResult {
    keys: u64,
    engines: Vec<Engine>,
    figures: Vec<(Engine, Figures)>,
    skipped: Vec<(Engine, String)>,
}

fn run(args: &Args, raw: &[String]) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("kvs-scale-")
        .tempdir_in(&base)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        if args.quick {
            root.join("target/quick")
        } else {
            root.join("../docs/perf")
        }
    });
    let started = Instant::now();
    let date = report::utc_now();
    let load_before = load_average();
    eprintln!(
        "scale: {} in {} ({} free), load average {load_before}",
        args.sizes
            .iter()
            .map(|(n, e)| format!(
                "{} keys for {}",
                count_label(*n),
                e.iter().map(|e| e.name()).collect::<Vec<_>>().join("+")
            ))
            .collect::<Vec<_>>()
            .join(", "),
        scratch.path().display(),
        gb(free_bytes(scratch.path())?)
    );
    let values = Values::new();
    let write = |results: &[SizeResult], last: bool| {
        write_results(
            results,
            &date,
            &load_before,
            started,
            &base,
            &out,
            args,
            raw,
            last,
        )
    };
    let mut results = Vec::new();
    for (keys, engines) in &args.sizes {
        let mut result = SizeResult {
            keys: *keys,
            engines: engines.clone(),
            figures: Vec::new(),
            skipped: Vec::new(),
        };
        for &engine in engines {
            let free = free_bytes(scratch.path())?;
            let needed = keys.saturating_mul(NEEDED_BYTES_PER_KEY);
            if free < needed {
                let why = format!(
                    "skipped: {} free in {}, the run needs about {}",
                    gb(free),
                    scratch.path().display(),
                    gb(needed)
                );
                eprintln!("{} {}: {why}", engine.name(), count_label(*keys));
                result.skipped.push((engine, why));
                continue;
            }
            match measure(engine, *keys, scratch.path(), &values, args) {
                Ok(figures) => result.figures.push((engine, figures)),
                Err(e) => {
                    // An unattended run goes on with the next engine; the table says why
                    // this one has no figures.
                    eprintln!("{} {}: failed: {e}", engine.name(), count_label(*keys));
                    result.skipped.push((engine, format!("failed: {e}")));
                }
            }
        }
        results.push(result);
        // Written after every size, so a long run that dies later keeps what it measured.
        write(&results, false)?;
    }
    eprintln!("measured in {:.0} s", started.elapsed().as_secs_f64());
    write(&results, true)
}

/// Writes `scale.md` and `scale.svg` for `results` into `out`; prints the tables if `last`.
#[allow(clippy::too_many_arguments)]
fn write_results(
    results: &[SizeResult],
    date: &str,
    load_before: &str,
    started: Instant,
    base: &Path,
    out: &Path,
    args: &Args,
    raw: &[String],
    last: bool,
) -> Result<()> {
    let info = Info {
        command: std::iter::once(
            "cargo run --release --manifest-path bench/Cargo.toml --bin scale --",
        )
        .chain(raw.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(" --")
        .to_string(),
        date: date.to_string(),
        machine: machine(),
        revision: revision(),
        load_before: load_before.to_string(),
        load_after: load_average(),
        data_dir: format!("{} ({})", base.display(), filesystem(base)),
        seconds: args.seconds,
        open_rounds: args.open_rounds.map_or_else(
            || "3 (1 at 100M keys and above)".to_string(),
            |n| n.to_string(),
        ),
        minutes: started.elapsed().as_secs_f64() / 60.0,
    };
    let tables: Vec<(String, Vec<Line>)> = results
        .iter()
        .map(|r| (format!("{} keys", report::thousands(r.keys)), lines(r)))
        .collect();
    if last {
        for (title, table) in &tables {
            println!("{title}\n{}", text_table(table));
        }
        println!(
            "load average: {} at start, {} at end",
            info.load_before, info.load_after
        );
    }
    std::fs::create_dir_all(out)?;
    let plotted: Vec<Row> = results.iter().flat_map(plot_rows).collect();
    let title = format!(
        "kvs at scale beside sled, fjall, redb, LMDB: {} ({} cores)",
        info.date,
        cores()
    );
    std::fs::write(
        out.join("scale.svg"),
        plot::svg_of(&plotted, &Engine::SCALE, &title),
    )?;
    report::write_page(&out.join("scale.md"), &markdown(&info, results, &tables))?;
    if last {
        println!("wrote {}", out.join("scale.md").display());
    } else {
        eprintln!("wrote {} (so far)", out.join("scale.md").display());
    }
    Ok(())
}

/// Every measurement of one engine at one size; the store is deleted on return.
fn measure(
    engine: Engine,
    keys: u64,
    scratch: &Path,
    values: &Values,
    args: &Args,
) -> Result<Figures> {
    let name = format!("{} {}", engine.name(), count_label(keys));
    let mut figures = Figures {
        load_average: load_average(),
        ..Figures::default()
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", engine.name()))
        .tempdir_in(scratch)?;
    let path = dir.path().join("store");
    eprintln!(
        "{name}: loading into {} ({} free, load average {})",
        path.display(),
        gb(free_bytes(scratch)?),
        figures.load_average
    );

    // 1-2. Load, sync, measure the disk, settle, measure again.
    {
        let store = engine.open_plain(&path)?;
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut pairs_owned: Vec<([u8; 16], &[u8])> = Vec::with_capacity(BATCH as usize);
        let mut first = 0;
        while first < keys {
            let end = (first + BATCH).min(keys);
            pairs_owned.clear();
            pairs_owned.extend((first..end).map(|i| (key(i), values.get(i, SMALL_VALUE))));
            let pairs: Vec<(&[u8], &[u8])> =
                pairs_owned.iter().map(|(k, v)| (&k[..], *v)).collect();
            store.set_batch(&pairs)?;
            first = end;
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "{name}: loaded {} of {} keys, {:.0} keys/s so far",
                    report::thousands(first),
                    report::thousands(keys),
                    first as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        let loaded = started.elapsed().as_secs_f64();
        store.sync()?;
        let synced = started.elapsed().as_secs_f64();
        figures.load_keys_per_sec = keys as f64 / loaded;
        figures.load_with_sync_keys_per_sec = keys as f64 / synced;
        figures.disk_after_load = disk_bytes(&path)?;
        eprintln!(
            "{name}: loaded in {loaded:.1} s ({:.0} keys/s), synced at {synced:.1} s; {:.1} MiB on disk",
            figures.load_keys_per_sec,
            mib(figures.disk_after_load)
        );
        let settle_started = Instant::now();
        if engine_settle(store)? {
            figures.settling_seconds = Some(settle_started.elapsed().as_secs_f64());
            figures.disk_after_settling = Some(disk_bytes(&path)?);
            eprintln!(
                "{name}: settled in {:.1} s; {:.1} MiB on disk",
                settle_started.elapsed().as_secs_f64(),
                mib(figures.disk_after_settling.unwrap_or(0))
            );
        }
    }
    release_memory();
    settle();

    // 3. Open in a fresh child.
    let rounds = args
        .open_rounds
        .unwrap_or_else(|| default_open_rounds(keys));
    for round in 0..rounds {
        let sample = open::measure_in_child_with(engine, &path, Opener::Plain)?;
        eprintln!(
            "{name}: open {}/{}: {:.3} s ({:.3} s of CPU), {:.1} MiB resident after ({:.1} MiB anonymous)",
            round + 1,
            rounds,
            sample.seconds,
            sample.cpu_seconds,
            mib(sample.rss_after),
            mib(sample.anon_after)
        );
        figures.open_seconds.push(sample.seconds);
        figures.open_cpu_seconds.push(sample.cpu_seconds);
        figures.rss_after_open.push(sample.rss_after as f64);
        figures.anon_after_open.push(sample.anon_after as f64);
    }

    // 4. Random gets.
    {
        let store = engine.open_plain(&path)?;
        workload::gets(&store, keys, 1, Duration::from_secs(1), 99)?;
        let duration = Duration::from_secs_f64(args.seconds);
        figures.get_one = workload::gets(&store, keys, 1, duration, 0)?.ops_per_sec;
        figures.get_two = workload::gets(&store, keys, 2, duration, 1)?.ops_per_sec;
        eprintln!(
            "{name}: random gets: {:.0}/s from 1 thread, {:.0}/s from 2",
            figures.get_one, figures.get_two
        );
    }

    // 5. kvs: overwrite 10%, compact.
    if engine == Engine::Kvs {
        eprintln!("{name}: overwriting 10% of the keys, then compacting (in a child)");
        let c = compaction_in_child(&path, keys)?;
        eprintln!(
            "{name}: overwrite {:.0} keys/s; compaction {:.1} s, log {:.1} -> {:.1} MiB; \
             resident before {:.1} MiB, peak {} (VmHWM), {:.1} MiB sampled; anonymous {:.1} -> {:.1} MiB sampled peak",
            c.overwrite_keys_per_sec,
            c.seconds,
            mib(c.log_bytes_before),
            mib(c.log_bytes_after),
            mib(c.steady_rss),
            c.hwm.map_or_else(|| "unknown".into(), |h| format!("{:.1} MiB", mib(h))),
            mib(c.sampled_peak_rss),
            mib(c.steady_anon),
            mib(c.sampled_peak_anon)
        );
        figures.compaction = Some(c);
    }
    release_memory();
    drop(dir);
    eprintln!("{name}: done, store deleted");
    Ok(figures)
}

/// Opens per engine below 100M keys: 3, for a median; at 100M and above one (an open of
/// 100M keys may take minutes, and the compaction child opens the store once more).
fn default_open_rounds(keys: u64) -> usize {
    if keys >= 100_000_000 {
        1
    } else {
        3
    }
}

/// The engine's own settling after a load, on the open store; false if it has none.
fn engine_settle(store: Store) -> Result<bool> {
    match store {
        Store::Fjall { db, keyspace, .. } => {
            // Flush the memtable, then wait until the LSM tree's table counts stop changing
            // (its background compactions are idle) for two seconds, ten minutes at most.
            keyspace.rotate_memtable_and_wait()?;
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut last = (keyspace.l0_table_count(), keyspace.table_count());
            let mut stable_since = Instant::now();
            while Instant::now() < deadline && stable_since.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(100));
                let now = (keyspace.l0_table_count(), keyspace.table_count());
                if now != last {
                    last = now;
                    stable_since = Instant::now();
                }
            }
            db.persist(fjall::PersistMode::SyncAll)?;
            Ok(true)
        }
        Store::Redb { mut db, .. } => {
            let db = std::sync::Arc::get_mut(&mut db)
                .ok_or("the redb database is still shared: cannot compact it")?;
            while db.compact()? {}
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Runs the compaction child on the kvs store in `dir` of `keys` keys.
fn compaction_in_child(dir: &Path, keys: u64) -> Result<Compaction> {
    let output = Command::new(std::env::current_exe()?)
        .arg(COMPACT_CHILD)
        .arg(dir)
        .arg(keys.to_string())
        // Its progress lines go straight to ours.
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the compaction child failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let f: Vec<&str> = stdout.split_whitespace().collect();
    let n = |i: usize| -> Result<u64> {
        f.get(i)
            .ok_or_else(|| format!("the compaction child printed too little: {stdout:?}"))?
            .parse::<u64>()
            .map_err(|e| format!("the compaction child printed {stdout:?}: {e}").into())
    };
    let float = |i: usize| -> Result<f64> {
        f.get(i)
            .ok_or_else(|| format!("the compaction child printed too little: {stdout:?}"))?
            .parse::<f64>()
            .map_err(|e| format!("the compaction child printed {stdout:?}: {e}").into())
    };
    let hwm = n(4)?;
    Ok(Compaction {
        overwrite_keys_per_sec: float(0)?,
        seconds: float(1)?,
        steady_rss: n(2)?,
        steady_anon: n(3)?,
        hwm: (hwm > 0).then_some(hwm),
        sampled_peak_rss: n(5)?,
        sampled_peak_anon: n(6)?,
        log_bytes_before: n(7)?,
        log_bytes_after: n(8)?,
    })
}

/// The compaction child: open the kvs store in `args[0]` of `args[1]` keys, overwrite the
/// first tenth of the key numbers, compact, and print what it measured on one line.
fn compact_child(args: &[String]) -> Result<()> {
    let [dir, keys] = args else {
        return Err(format!("{COMPACT_CHILD} takes DIR KEYS, not {args:?}").into());
    };
    let keys: u64 = keys.parse()?;
    let values = Values::new();
    let opened = Instant::now();
    let store = KvStore::open(dir)?;
    eprintln!(
        "compaction child: opened {dir} in {:.1} s; overwriting",
        opened.elapsed().as_secs_f64()
    );
    let overwritten = (keys / 10).max(1);
    let started = Instant::now();
    let mut first = 0;
    while first < overwritten {
        let end = (first + BATCH).min(overwritten);
        let owned: Vec<([u8; 16], &[u8])> = (first..end)
            .map(|i| (key(i), values.get(i + keys, SMALL_VALUE)))
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = owned.iter().map(|(k, v)| (&k[..], *v)).collect();
        store.set_many_bytes(&pairs)?;
        first = end;
    }
    let overwrite_rate = overwritten as f64 / started.elapsed().as_secs_f64();
    let before = store.disk_stats();
    eprintln!(
        "compaction child: overwrote {} keys at {overwrite_rate:.0} keys/s; compacting",
        report::thousands(overwritten)
    );
    let steady_rss = status_bytes("VmRSS")?;
    let steady_anon = status_bytes("RssAnon")?;
    // Writing 5 to clear_refs resets VmHWM to the current resident set (Linux 4.0 and
    // later): VmHWM after the compaction is then the compaction's own peak.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let stop = AtomicBool::new(false);
    let (seconds, (peak_rss, peak_anon)) = std::thread::scope(|scope| -> Result<_> {
        let sampler = scope.spawn(|| {
            let mut peak = (steady_rss, steady_anon);
            while !stop.load(Ordering::Relaxed) {
                if let (Ok(rss), Ok(anon)) = (status_bytes("VmRSS"), status_bytes("RssAnon")) {
                    peak = (peak.0.max(rss), peak.1.max(anon));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        let started = Instant::now();
        let result = store.compact();
        let seconds = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let peak = sampler
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        result?;
        Ok((seconds, peak))
    })?;
    let hwm = if hwm_reset { status_bytes("VmHWM")? } else { 0 };
    let after = store.disk_stats();
    // The compaction kept what it had to: an overwritten key has its new value, the others
    // their first one.
    let check = |i: u64, seed: u64| -> Result<()> {
        match store.get_bytes(&key(i))? {
            Some(v) if v == values.get(seed, SMALL_VALUE) => Ok(()),
            other => Err(format!("after compaction key number {i} reads {other:?}").into()),
        }
    };
    check(0, keys)?;
    if overwritten < keys {
        check(keys - 1, keys - 1)?;
    }
    println!(
        "{overwrite_rate} {seconds} {steady_rss} {steady_anon} {hwm} {peak_rss} {peak_anon} {} {}",
        before.total_bytes, after.total_bytes
    );
    Ok(())
}

/// Hands the memory of a closed store back to the system: glibc keeps freed memory for reuse,
/// and a 100M-key index left in this process would take page cache from the next child.
fn release_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the system; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes allocated to the files under `path` (`st_blocks`, as `du` counts them).
fn disk_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            total += disk_bytes(&entry?.path())?;
        }
    }
    Ok(total)
}

/// Free space for an unprivileged user on the filesystem of `path`.
fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the struct it is given; a zeroed statvfs is a valid value,
    // and `c_path` is a NUL-terminated string that lives across the call.
    let (rc, stat) = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        let rc = libc::statvfs(c_path.as_ptr(), &mut stat);
        (rc, stat)
    };
    if rc != 0 {
        return Err(format!(
            "statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// `1000000` as `1M`, `100000` as `100k`.
fn count_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

struct Info {
    command: String,
    date: String,
    machine: String,
    revision: String,
    load_before: String,
    load_after: String,
    data_dir: String,
    seconds: f64,
    open_rounds: String,
    minutes: f64,
}

/// One line of a size's table: a figure per engine, and the goal kvs is held to.
struct Line {
    label: String,
    unit: Unit,
    /// Per engine of `Engine::SCALE`: the figure, or `None`.
    values: [Option<f64>; Engine::COUNT],
    /// Higher is better (ratios read the same way as the comparison's).
    goal: Option<Goal>,
}

/// What kvs's figure is held to.
enum Goal {
    /// kvs's figure at most this.
    AtMost(f64, String),
    /// kvs's figure at least this.
    AtLeast(f64, String),
    /// kvs's figure at least `factor` times the peer's (for throughput).
    TimesPeer(f64, Engine),
    /// kvs's figure at most the peer's divided by `factor` (for times).
    FasterThanPeer(f64, Engine, Box<Goal>),
}

impl Line {
    fn value(&self, engine: Engine) -> Option<f64> {
        self.values[engine as usize]
    }

    fn cell(&self, engine: Engine) -> String {
        self.value(engine)
            .map_or_else(|| "-".into(), |v| self.unit.format(v))
    }

    fn ratio_cell(&self, peer: Engine) -> String {
        match (self.value(Engine::Kvs), self.value(peer)) {
            (Some(k), Some(p)) if p > 0.0 => format!("{:.2}x", k / p),
            _ => "-".into(),
        }
    }

    fn goal_cell(&self) -> String {
        let Some(goal) = &self.goal else {
            return String::new();
        };
        let kvs = self.value(Engine::Kvs);
        let (text, met) = judge(goal, kvs, self);
        match met {
            Some(true) => format!("{text}: met"),
            Some(false) => format!("{text}: MISSED"),
            None => format!("{text}: no figure to compare"),
        }
    }
}

fn judge(goal: &Goal, kvs: Option<f64>, line: &Line) -> (String, Option<bool>) {
    match goal {
        Goal::AtMost(bound, text) => (format!("<= {text}"), kvs.map(|k| k <= *bound)),
        Goal::AtLeast(bound, text) => (format!(">= {text}"), kvs.map(|k| k >= *bound)),
        Goal::TimesPeer(factor, peer) => (
            format!(">= {factor}x {}", peer.name()),
            kvs.zip(line.value(*peer)).map(|(k, p)| k >= factor * p),
        ),
        Goal::FasterThanPeer(factor, peer, inner) => {
            let (text, met) = judge(inner, kvs, line);
            let peer_met = kvs.zip(line.value(*peer)).map(|(k, p)| k * factor <= p);
            let met = match (met, peer_met) {
                (Some(a), Some(b)) => Some(a && b),
                (Some(a), None) => Some(a),
                (None, _) => None,
            };
            (
                format!("{text} and {factor}x faster than {}", peer.name()),
                met,
            )
        }
    }
}

fn median(v: &[f64]) -> Option<f64> {
    report::median(v)
}

/// The lines of one size's table.
fn lines(result: &SizeResult) -> Vec<Line> {
    let keys = result.keys;
    let get = |f: &dyn Fn(&Figures) -> Option<f64>| -> [Option<f64>; Engine::COUNT] {
        let mut values = [None; Engine::COUNT];
        for (engine, figures) in &result.figures {
            values[*engine as usize] = f(figures);
        }
        values
    };
    let line = |label: &str, unit: Unit, f: &dyn Fn(&Figures) -> Option<f64>| Line {
        label: label.into(),
        unit,
        values: get(f),
        goal: None,
    };
    let open_goal = match keys {
        1_000_000 => Some(Goal::AtMost(100.0, "100 ms".into())),
        10_000_000 => Some(Goal::FasterThanPeer(
            2.0,
            Engine::Fjall,
            Box::new(Goal::AtMost(500.0, "500 ms".into())),
        )),
        100_000_000 => Some(Goal::AtMost(5000.0, "5 s".into())),
        _ => None,
    };
    let get_goal = match keys {
        10_000_000 => Some(Goal::TimesPeer(1.5, Engine::Lmdb)),
        100_000_000 => Some(Goal::TimesPeer(1.0, Engine::Lmdb)),
        _ => None,
    };
    let ratio_goal =
        matches!(keys, 10_000_000 | 100_000_000).then(|| Goal::AtMost(1.25, "1.25x".into()));
    let per_key = |rss: &[f64]| median(rss).map(|r| r / keys as f64 - KEY_LEN);
    let mut lines = vec![
        Line {
            goal: Some(Goal::AtLeast(2e6, "2M keys/s".into())),
            ..line("load, batches of 1,000", Unit::OpsPerSec, &|f| {
                Some(f.load_keys_per_sec)
            })
        },
        line("load, with the final sync", Unit::OpsPerSec, &|f| {
            Some(f.load_with_sync_keys_per_sec)
        }),
        line("disk after load", Unit::MiB, &|f| {
            Some(mib(f.disk_after_load))
        }),
        line("disk after the engine's settling", Unit::MiB, &|f| {
            Some(mib(f.disk_after_settling.unwrap_or(f.disk_after_load)))
        }),
        Line {
            goal: open_goal,
            ..line("open (fresh process)", Unit::Millis, &|f| {
                median(&f.open_seconds).map(|s| s * 1000.0)
            })
        },
        line("open, CPU time (all threads)", Unit::Millis, &|f| {
            median(&f.open_cpu_seconds).map(|s| s * 1000.0)
        }),
        line("resident after open", Unit::MiB, &|f| {
            median(&f.rss_after_open).map(|b| b / (1024.0 * 1024.0))
        }),
        line("anonymous resident after open", Unit::MiB, &|f| {
            median(&f.anon_after_open).map(|b| b / (1024.0 * 1024.0))
        }),
        Line {
            goal: Some(Goal::AtMost(40.0, "40 B".into())),
            ..line("resident after open / keys - 16", Unit::Bytes, &|f| {
                per_key(&f.rss_after_open)
            })
        },
        line("anonymous after open / keys - 16", Unit::Bytes, &|f| {
            per_key(&f.anon_after_open)
        }),
        Line {
            goal: get_goal,
            ..line("random get, 1 thread", Unit::OpsPerSec, &|f| {
                Some(f.get_one)
            })
        },
        line("random get, 2 threads", Unit::OpsPerSec, &|f| {
            Some(f.get_two)
        }),
    ];
    let c = |f: &Figures| f.compaction;
    lines.extend([
        line(
            "kvs: overwrite 10%, batches of 1,000",
            Unit::OpsPerSec,
            &|f| c(f).map(|c| c.overwrite_keys_per_sec),
        ),
        line("kvs: compaction", Unit::Millis, &|f| {
            c(f).map(|c| c.seconds * 1000.0)
        }),
        line("kvs: log before compaction", Unit::MiB, &|f| {
            c(f).map(|c| mib(c.log_bytes_before))
        }),
        line("kvs: log after compaction", Unit::MiB, &|f| {
            c(f).map(|c| mib(c.log_bytes_after))
        }),
        line("kvs: resident before compaction", Unit::MiB, &|f| {
            c(f).map(|c| mib(c.steady_rss))
        }),
        line(
            "kvs: peak resident in compaction (VmHWM)",
            Unit::MiB,
            &|f| c(f).and_then(|c| c.hwm).map(mib),
        ),
        Line {
            goal: ratio_goal,
            ..line("kvs: peak / before (VmHWM)", Unit::Ratio, &|f| {
                c(f).and_then(|c| c.hwm.map(|h| h as f64 / c.steady_rss as f64))
            })
        },
        line("kvs: anonymous before compaction", Unit::MiB, &|f| {
            c(f).map(|c| mib(c.steady_anon))
        }),
        line(
            "kvs: peak anonymous in compaction (sampled)",
            Unit::MiB,
            &|f| c(f).map(|c| mib(c.sampled_peak_anon)),
        ),
        line(
            "kvs: peak / before, anonymous (sampled)",
            Unit::Ratio,
            &|f| c(f).map(|c| c.sampled_peak_anon as f64 / c.steady_anon as f64),
        ),
    ]);
    lines
}

/// The lines of a size that go into the plot.
fn plot_rows(result: &SizeResult) -> Vec<Row> {
    let wanted = [
        "load, batches of 1,000",
        "disk after the engine's settling",
        "open (fresh process)",
        "resident after open",
        "random get, 1 thread",
        "random get, 2 threads",
    ];
    lines(result)
        .into_iter()
        .filter(|l| wanted.contains(&l.label.as_str()))
        .map(|l| {
            let mut row = Row::new(format!("{}, {}", l.label, count_label(result.keys)), l.unit);
            for engine in Engine::SCALE {
                if let Some(v) = l.value(engine) {
                    row.push(engine, v);
                }
            }
            row
        })
        .collect()
}

const PEERS: [Engine; 4] = [Engine::Sled, Engine::Fjall, Engine::Redb, Engine::Lmdb];

fn text_table(lines: &[Line]) -> String {
    let header: Vec<String> = ["figure".to_string()]
        .into_iter()
        .chain(Engine::SCALE.iter().map(|e| e.name().to_string()))
        .chain(PEERS.iter().map(|p| format!("kvs/{}", p.name())))
        .chain(["goal for kvs".to_string()])
        .collect();
    let body: Vec<Vec<String>> = lines
        .iter()
        .filter(|l| l.values.iter().any(Option::is_some))
        .map(|l| {
            [format!("{} ({})", l.label, l.unit.label())]
                .into_iter()
                .chain(Engine::SCALE.iter().map(|&e| l.cell(e)))
                .chain(PEERS.iter().map(|&p| l.ratio_cell(p)))
                .chain([l.goal_cell()])
                .collect()
        })
        .collect();
    report::align(&header, &body, true)
}

fn markdown(info: &Info, results: &[SizeResult], tables: &[(String, Vec<Line>)]) -> String {
    let mut md = String::new();
    md.push_str("# kvs at scale: beside sled, fjall, redb and LMDB, up to 100M keys\n\n");
    md.push_str("Generated by the scale benchmark in `bench/` (`src/bin/scale.rs`):\n\n");
    md.push_str(&format!("```sh\n{}\n```\n\n", info.command));
    md.push_str(&format!("- Date: {}\n", info.date));
    md.push_str(&format!("- Machine: {}\n", info.machine));
    md.push_str(&format!(
        "- Load average (1, 5, 15 min) at start: {}; at end: {} (the machine is shared)\n",
        info.load_before, info.load_after
    ));
    md.push_str(&format!("- kvs revision: {}\n", info.revision));
    md.push_str(&format!("- Data directory: {}\n", info.data_dir));
    md.push_str(&format!(
        "- Opens: median of {} in fresh child processes; gets: {:.1} s from 1 thread, then \
         {:.1} s from 2, after a 1 s warm-up; the whole run took {:.0} minutes.\n\n",
        info.open_rounds, info.seconds, info.seconds, info.minutes
    ));
    md.push_str(
        "Keys are 16 bytes (hex digits in random order), values 100 bytes cut from random \
         bytes (they do not compress). Ratios are kvs's figure over the peer's: above 1 is \
         better for kvs in ops/s rows, below 1 in ms, MiB and byte rows. The goal column is \
         what kvs is held to at that size.\n\n",
    );
    for ((title, lines), result) in tables.iter().zip(results) {
        md.push_str(&format!("## {title}\n\n"));
        let engines: Vec<Engine> = Engine::SCALE
            .into_iter()
            .filter(|e| result.engines.contains(e))
            .collect();
        let peers: Vec<Engine> = PEERS
            .into_iter()
            .filter(|e| result.figures.iter().any(|(f, _)| f == e))
            .collect();
        let kvs_ran = result.figures.iter().any(|(e, _)| *e == Engine::Kvs);
        md.push_str("| figure | unit |");
        for e in &engines {
            md.push_str(&format!(" {} |", e.name()));
        }
        if kvs_ran {
            for p in &peers {
                md.push_str(&format!(" kvs/{} |", p.name()));
            }
            md.push_str(" goal for kvs |");
        }
        md.push_str("\n|---|---|");
        let columns = engines.len() + if kvs_ran { peers.len() } else { 0 };
        md.push_str(&"--:|".repeat(columns));
        if kvs_ran {
            md.push_str("---|");
        }
        md.push('\n');
        for l in lines
            .iter()
            .filter(|l| l.values.iter().any(Option::is_some))
        {
            md.push_str(&format!("| {} | {} |", l.label, l.unit.label()));
            for &e in &engines {
                md.push_str(&format!(" {} |", l.cell(e)));
            }
            if kvs_ran {
                for &p in &peers {
                    md.push_str(&format!(" {} |", l.ratio_cell(p)));
                }
                md.push_str(&format!(" {} |", l.goal_cell()));
            }
            md.push('\n');
        }
        md.push('\n');
        for (engine, why) in &result.skipped {
            md.push_str(&format!("- {}: {why}\n", engine.name()));
        }
        for (engine, f) in &result.figures {
            let settling = match f.settling_seconds {
                Some(s) => format!("its settling took {s:.1} s"),
                None => "no settling of its own".into(),
            };
            md.push_str(&format!(
                "- {}: load average {} when its measurements began; {settling}\n",
                engine.name(),
                f.load_average
            ));
        }
        md.push('\n');
    }
    md.push_str("![Load, disk, open, memory and gets per size](scale.svg)\n\n");
    md.push_str(NOTES);
    md
}

const NOTES: &str = "## How each engine is driven\n\n\
| engine | load (batches of 1,000) | settling | get |\n\
|---|---|---|---|\n\
| kvs | `KvsEngine::set_many_bytes`: one atomic batch, one `write(2)`, default options (`SyncPolicy::Os`); `flush` at the end | none: a fresh load leaves nothing stale to compact | `get_bytes` |\n\
| sled 0.34 | a plain `sled::Db`, one `sled::Batch` per 1,000 keys, no flush per batch (not `SledKvsEngine`, which flushes every write); `Db::flush` at the end | none | `Db::get`, copied to a `Vec<u8>` |\n\
| fjall 3.1 | one `WriteBatch` per 1,000 keys (journal flushed to the OS, fjall's default); `persist(SyncAll)` at the end | memtable flushed, then waits until its table counts have not changed for 2 s | `Keyspace::get`, copied |\n\
| redb 4.6 | one write transaction per 1,000 keys, `Durability::None`; one durable commit at the end | `Database::compact` until it has nothing left | one read transaction per get, copied |\n\
| lmdb (heed 0.23) | one write transaction per 1,000 keys, `MDB_NOSYNC`; `force_sync` at the end | none | one read transaction per get, copied |\n\n\
- Disk is the blocks allocated to the store's files (`st_blocks`, as `du` counts), right \
after the load's final sync, and after the engine's own settling where it has one.\n\
- An open runs in a fresh child process of the benchmark, with the page cache warm; it \
counts until the open returns, and the child then reads one key back. Its CPU time (user \
and system, every thread of the child, from `getrusage`) is the work the open did: on the \
shared machine the wall time also counts the time spent waiting for a core. Resident memory is \
the child's `VmRSS` right after the open (the process's own baseline of 2-4 MiB included); \
the anonymous part (`RssAnon`) leaves out the pages of mapped files, which the kernel can \
drop and read again. \"Resident after open / keys - 16\" is the memory per key beyond the \
key itself.\n\
- Gets are uniformly random over the loaded keys, every key present; with 2 threads both \
read the same open store. With 2 cores, 2 threads can at best double a rate.\n\
- kvs's compaction runs in a fresh child process: it opens the store, overwrites the first \
tenth of the key numbers (keys in random order) in batches of 1,000, then calls \
`KvStore::compact` on its own thread. The peak is `VmHWM`, reset by writing 5 to \
`/proc/self/clear_refs` just before the compaction, over `VmRSS` just before it; a sampler \
thread reading `/proc/self/status` every 10 ms gives the anonymous peak (it can miss a peak \
shorter than 10 ms). kvs reads its log through `mmap`, so `VmRSS` counts the log pages a \
compaction reads; the anonymous figures leave them out.\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_engine_lists() -> Result<()> {
        assert_eq!(parse_count("100k")?, 100_000);
        assert_eq!(parse_count("10M")?, 10_000_000);
        assert_eq!(parse_count("1234")?, 1234);
        assert!(parse_count("0").is_err());
        assert!(parse_count("ten").is_err());
        let sizes = parse_sizes("1M,100M:kvs+lmdb", &Engine::SCALE)?;
        assert_eq!(sizes[0], (1_000_000, Engine::SCALE.to_vec()));
        assert_eq!(sizes[1], (100_000_000, vec![Engine::Kvs, Engine::Lmdb]));
        // --engines narrows every size, a size's own list included.
        let sizes = parse_sizes("1M,100M:kvs+lmdb", &[Engine::Kvs])?;
        assert_eq!(sizes[1], (100_000_000, vec![Engine::Kvs]));
        assert!(parse_sizes("1M:nosuch", &Engine::SCALE).is_err());
        assert_eq!(count_label(100_000_000), "100M");
        assert_eq!(count_label(100_000), "100k");
        assert_eq!(count_label(1234), "1234");
        Ok(())
    }

    fn line(kvs: f64, fjall: Option<f64>, goal: Goal) -> Line {
        let mut values = [None; Engine::COUNT];
        values[Engine::Kvs as usize] = Some(kvs);
        values[Engine::Fjall as usize] = fjall;
        Line {
            label: "open".into(),
            unit: Unit::Millis,
            values,
            goal: Some(goal),
        }
    }

    #[test]
    fn goals_are_judged_on_kvs_and_its_peer() {
        let at_most = || Goal::AtMost(500.0, "500 ms".into());
        assert_eq!(line(400.0, None, at_most()).goal_cell(), "<= 500 ms: met");
        assert_eq!(
            line(600.0, None, at_most()).goal_cell(),
            "<= 500 ms: MISSED"
        );
        let faster = || Goal::FasterThanPeer(2.0, Engine::Fjall, Box::new(at_most()));
        // Under the bound but not twice as fast as fjall.
        assert!(line(400.0, Some(700.0), faster())
            .goal_cell()
            .ends_with("MISSED"));
        assert!(line(400.0, Some(800.0), faster())
            .goal_cell()
            .ends_with(": met"));
        let times = Goal::TimesPeer(1.5, Engine::Fjall);
        assert!(line(10.0, None, times)
            .goal_cell()
            .ends_with("no figure to compare"));
        assert_eq!(
            line(1.0, Some(2.0), at_most()).ratio_cell(Engine::Fjall),
            "0.50x"
        );
    }

    #[test]
    fn disk_bytes_count_allocated_blocks_of_every_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("sub"))?;
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 64 * 1024])?;
        std::fs::write(dir.path().join("b"), vec![1u8; 64 * 1024])?;
        let bytes = disk_bytes(dir.path())?;
        assert!(bytes >= 128 * 1024, "{bytes}");
        assert!(bytes < 1024 * 1024, "{bytes}");
        assert!(free_bytes(dir.path())? > 0);
        Ok(())
    }
}
