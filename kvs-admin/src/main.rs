//! `kvs-admin`: inspects, verifies, backs up and moves a kvs data directory, of either engine.
//!
//! - `check` reads and verifies every record of every log file ([`kvs::verify_dir`]), then
//!   opens the store read-only and reads every value; a sled store is opened and every key
//!   read.
//! - `stats` prints the engine, format versions, keys, files and live and stale bytes.
//! - `compact` compacts a kvs store now; `checkpoint DEST` writes a consistent copy.
//! - `dump` writes every key as Redis commands (see `stream.rs`); `restore` reads them back.
//!
//! Commands that only read open a kvs store read-only (taking its lock shared): they run
//! beside other readers, and are refused, with the engine's `Locked` error, while a process
//! (a `kvs-server`) has it open for writing. sled has no read-only mode: a sled store is always
//! opened read-write, and so needs the directory to itself.

mod stream;

use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kvs::{
    AnyEngine, EngineKind, KvStore, KvStoreOptions, KvsEngine, KvsError, ScanFilter, WriteBatch,
};

const EXIT_CODES: &str = "Exit status:\n  \
    0  success (check: no damage found)\n  \
    1  check found damage (the file and byte offset are printed)\n  \
    2  usage error: bad arguments, or a command that does not apply to the store's engine\n  \
    3  any other error: the directory is locked by a running kvs-server or another \
       process (\"is in use by another process\"), is not a store, cannot be read, a bad \
       restore stream (its byte offset is printed), ...";

#[derive(Parser, Debug)]
#[command(
    name = "kvs-admin",
    version,
    about = "Inspects, verifies, backs up and moves a kvs data directory.",
    long_about = "Inspects, verifies, backs up and moves a kvs data directory, of either \
                  engine (kvs or sled).\n\n\
                  Commands that only read (check, stats, dump) open a kvs store \
                  read-only, beside other readers; sled has no read-only mode, so a sled store \
                  is opened read-write. A directory in use by a running kvs-server is refused.",
    after_help = EXIT_CODES
)]
struct Cli {
    /// The data directory.
    #[arg(long, value_name = "DIR", default_value = ".", global = true)]
    dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read and verify every record of every file; exit 1 if any is damaged.
    Check,
    /// Print the engine, format versions, keys, files, live and stale bytes.
    Stats {
        /// Print one JSON object instead of aligned text.
        #[arg(long)]
        json: bool,
    },
    /// Compact a kvs store now: copy its live records into new files, drop the stale ones.
    Compact,
    /// Write a consistent copy of the store into DEST, a new directory, openable as a store.
    Checkpoint {
        /// Where to write it (must not exist, or be an empty directory).
        dest: PathBuf,
    },
    /// Write every key, value and deadline to stdout as Redis commands (SET, then PEXPIREAT
    /// for a key with a deadline), which `redis-cli --pipe` loads into kvs-server or
    /// redis-server, and `kvs-admin restore` into a data directory.
    Dump,
    /// Read a stream written by `dump` (from FILE, or stdin) and write its keys into the store
    /// (created if the directory is empty), in batches. Keys already there are overwritten.
    Restore {
        /// The stream; `-` or none: stdin.
        file: Option<PathBuf>,
        /// The engine of a new store (default kvs); a store already there keeps its own.
        #[arg(long, value_enum)]
        engine: Option<Engine>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Engine {
    Kvs,
    Sled,
}

/// What ends a command: its exit code and a message for stderr.
struct Failure {
    code: u8,
    message: String,
    /// The engine said the data is damaged ([`kvs::ErrorKind::Corruption`]).
    corrupt: bool,
}

const DAMAGE: u8 = 1;
const USAGE: u8 = 2;
const OTHER: u8 = 3;

impl From<KvsError> for Failure {
    fn from(e: KvsError) -> Failure {
        Failure {
            code: OTHER,
            corrupt: e.kind() == kvs::ErrorKind::Corruption,
            message: e.to_string(),
        }
    }
}

impl Failure {
    fn new(code: u8, message: String) -> Failure {
        Failure {
            code,
            message,
            corrupt: false,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::from(KvsError::from(e))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.dir, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message, .. }) => {
            if !message.is_empty() {
                eprintln!("kvs-admin: {message}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(dir: &Path, command: Command) -> Result<(), Failure> {
    match command {
        Command::Check => check(dir),
        Command::Stats { json } => stats(dir, json),
        Command::Compact => compact(dir),
        Command::Checkpoint { dest } => {
            // A checkpoint seals the active log file first: the store is opened for writing
            // (a running kvs-server takes them online, through `KvsClient::checkpoint`).
            let engine = AnyEngine::open(dir, Some(existing_engine(dir)?))?;
            engine.checkpoint(&dest)?;
            println!(
                "checkpoint of {} written to {}",
                dir.display(),
                dest.display()
            );
            Ok(())
        }
        Command::Dump => dump(dir),
        Command::Restore { file, engine } => restore(dir, file, engine),
    }
}

/// The engine recorded in (or told from the files of) `dir`; an error for a directory that
/// holds no store, which no command but `restore` creates.
fn existing_engine(dir: &Path) -> Result<EngineKind, Failure> {
    match kvs::data_dir::engine_of(dir)? {
        Some(kind) => Ok(kind),
        None => Err(Failure::new(
            OTHER,
            format!(
                "{} holds no kvs or sled store (no engine file, log files or sled database)",
                dir.display()
            ),
        )),
    }
}

/// Opens the store in `dir` for a command that only reads: read-only for kvs, read-write
/// (saying so on stderr) for sled, which has no read-only mode.
fn open_for_reading(dir: &Path) -> Result<AnyEngine, Failure> {
    match existing_engine(dir)? {
        EngineKind::Kvs => Ok(AnyEngine::Kvs(KvStore::open_with(
            dir,
            KvStoreOptions::default().read_only(true),
        )?)),
        EngineKind::Sled => {
            eprintln!(
                "kvs-admin: {} is a sled store; sled has no read-only mode, so it is opened \
                 read-write",
                dir.display()
            );
            Ok(AnyEngine::open(dir, Some(EngineKind::Sled))?)
        }
    }
}

/// Calls `f` with every key of `engine` that is set, a page of a scan at a time (a key may
/// come twice, see [`KvsEngine::scan_bytes`]; never the whole key set in memory).
fn for_each_key(
    engine: &AnyEngine,
    mut f: impl FnMut(&[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let filter = ScanFilter::all();
    let mut cursor = 0;
    loop {
        let page = engine.scan_bytes(cursor, 1000, &filter)?;
        for key in &page.keys {
            f(key)?;
        }
        if page.cursor == 0 {
            return Ok(());
        }
        cursor = page.cursor;
    }
}

/// A progress line on stderr, rewritten in place, when stderr is a terminal.
struct Progress {
    on: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            on: io::stderr().is_terminal(),
        }
    }

    fn show(&self, line: &str) {
        if self.on {
            eprint!("\r\x1b[2K{line}");
        }
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

fn check(dir: &Path) -> Result<(), Failure> {
    let progress = Progress::new();
    let mut damaged = false;
    if existing_engine(dir)? == EngineKind::Kvs {
        let report = kvs::verify_dir_with_progress(dir, &mut |file, done, total| {
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            progress.show(&format!("checking {}: {percent}%", file.display()));
        })?;
        progress.clear();
        for file in &report.files {
            let version = file
                .version
                .map_or_else(|| "?".to_string(), |v| v.to_string());
            match (&file.damage, file.torn_tail) {
                (Some(damage), _) => {
                    damaged = true;
                    let after = match damage.valid_after {
                        Some(at) => format!("; valid records follow at offset {at}"),
                        None => "; no valid record follows".to_string(),
                    };
                    println!(
                        "DAMAGED {} (format v{version}) at offset {}: {}{after} ({} records \
                         before it)",
                        file.path.display(),
                        damage.offset,
                        damage.reason,
                        file.records
                    );
                }
                (None, Some(at)) => println!(
                    "ok      {} (format v{version}): {} records, {} bytes; torn tail from \
                     offset {at} (left by a crash; cut off when the store is next opened for \
                     writing)",
                    file.path.display(),
                    file.records,
                    file.len
                ),
                (None, None) => println!(
                    "ok      {} (format v{version}): {} records, {} bytes",
                    file.path.display(),
                    file.records,
                    file.len
                ),
            }
        }
        for path in &report.obsolete {
            println!(
                "skipped {} (replaced by a compaction; deleted on the next open)",
                path.display()
            );
        }
        for (path, reason) in &report.hint_warnings {
            println!(
                "warning {}: {reason} (a hint only speeds up opening: the next open replays \
                 its log file instead, and writes the hint again)",
                path.display()
            );
        }
        if damaged {
            return Err(Failure::new(
                DAMAGE,
                format!("{}: damage found", dir.display()),
            ));
        }
    }
    // Every record is sound; now the store as the engine opens it (for kvs, what the records
    // alone do not show: the MANIFEST and the files it lists), and every value read.
    let engine = match open_for_reading(dir) {
        Ok(engine) => engine,
        Err(failure) => return Err(damage_if_corrupt(failure)),
    };
    let mut keys = 0u64;
    let mut bytes = 0u64;
    let result = for_each_key(&engine, |key| {
        if let Some(value) = engine.get_bytes(key)? {
            keys += 1;
            bytes += value.len() as u64;
            if keys.is_multiple_of(10_000) {
                progress.show(&format!("reading values: {keys} keys"));
            }
        }
        Ok(())
    });
    progress.clear();
    result.map_err(damage_if_corrupt)?;
    println!(
        "{}: {} store, no damage; {keys} keys read, {bytes} bytes of values",
        dir.display(),
        engine.kind()
    );
    Ok(())
}

/// An error opening or reading the store that says the data is damaged is what `check` is
/// for: exit 1, not 3.
fn damage_if_corrupt(failure: Failure) -> Failure {
    if failure.corrupt {
        Failure::new(DAMAGE, format!("damage found: {}", failure.message))
    } else {
        failure
    }
}

fn stats(dir: &Path, json: bool) -> Result<(), Failure> {
    let engine = open_for_reading(dir)?;
    let keys = engine.len()?;
    let (with_deadline, disk, versions) = match &engine {
        AnyEngine::Kvs(store) => {
            let mut versions: Vec<u8> = kvs::log_file_versions(dir)?
                .into_iter()
                .filter_map(|(_, v)| v)
                .collect();
            versions.sort_unstable();
            versions.dedup();
            (
                store.expiring_len() as u64,
                Some(store.disk_stats()),
                versions,
            )
        }
        AnyEngine::Sled(_) => {
            let mut count = 0u64;
            for_each_key(&engine, |key| {
                if matches!(engine.expiry_bytes(key)?, kvs::KeyExpiry::At(_)) {
                    count += 1;
                }
                Ok(())
            })?;
            (count, None, Vec::new())
        }
    };
    let kind = engine.kind();
    let mut out = io::stdout().lock();
    if json {
        let num = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
        let versions = versions
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",");
        writeln!(
            out,
            "{{\"dir\":{},\"engine\":\"{kind}\",\"format_versions\":[{versions}],\"keys\":{keys},\
             \"keys_with_deadline\":{with_deadline},\"files\":{},\"total_bytes\":{},\
             \"live_bytes\":{},\"stale_bytes\":{}}}",
            json_string(&dir.display().to_string()),
            num(disk.map(|d| d.files as u64)),
            num(disk.map(|d| d.total_bytes)),
            num(disk.map(|d| d.total_bytes.saturating_sub(d.stale_bytes))),
            num(disk.map(|d| d.stale_bytes)),
        )?;
    } else {
        let na = |v: Option<u64>| v.map_or_else(|| "n/a (sled)".to_string(), |v| v.to_string());
        let versions = if versions.is_empty() {
            "n/a (sled)".to_string()
        } else {
            versions
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows = [
            ("directory", dir.display().to_string()),
            ("engine", kind.to_string()),
            ("format versions", versions),
            ("keys", keys.to_string()),
            ("keys with deadline", with_deadline.to_string()),
            ("files", na(disk.map(|d| d.files as u64))),
            ("total bytes", na(disk.map(|d| d.total_bytes))),
            (
                "live bytes",
                na(disk.map(|d| d.total_bytes.saturating_sub(d.stale_bytes))),
            ),
            ("stale bytes", na(disk.map(|d| d.stale_bytes))),
        ];
        let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        for (name, value) in rows {
            writeln!(out, "{name:<width$}  {value}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn compact(dir: &Path) -> Result<(), Failure> {
    if existing_engine(dir)? == EngineKind::Sled {
        return Err(Failure::new(
            USAGE,
            format!(
                "compact does not apply to {}: it is a sled store, and sled reclaims its space \
                 itself",
                dir.display()
            ),
        ));
    }
    let store = KvStore::open(dir)?;
    let before = store.disk_stats();
    store.compact()?;
    let after = store.disk_stats();
    println!(
        "compacted {}: {} bytes in {} files before ({} stale), {} bytes in {} files after",
        dir.display(),
        before.total_bytes,
        before.files,
        before.stale_bytes,
        after.total_bytes,
        after.files
    );
    Ok(())
}

fn dump(dir: &Path) -> Result<(), Failure> {
    let engine = open_for_reading(dir)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut keys = 0u64;
    for_each_key(&engine, |key| {
        // A key that expired since the scan met it is gone: not dumped.
        let Some(value) = engine.get_bytes(key)? else {
            return Ok(());
        };
        let deadline = match engine.expiry_bytes(key)? {
            kvs::KeyExpiry::At(deadline) => Some(deadline),
            kvs::KeyExpiry::Never => None,
            kvs::KeyExpiry::Missing => return Ok(()),
        };
        stream::write_key(&mut out, key, &value, deadline)?;
        keys += 1;
        Ok(())
    })?;
    out.flush()?;
    eprintln!("kvs-admin: dumped {keys} keys of {}", dir.display());
    Ok(())
}

/// Bytes of keys and values a restore gathers into one batch before it applies it: well
/// under the engines' limit on a batch ([`kvs::MAX_BATCH_BYTES`]), record headers included.
const RESTORE_BATCH_BYTES: usize = kvs::MAX_BATCH_BYTES / 2;
/// Most keys in one batch.
const RESTORE_BATCH_KEYS: usize = 4096;

fn restore(dir: &Path, file: Option<PathBuf>, engine: Option<Engine>) -> Result<(), Failure> {
    let input: Box<dyn io::BufRead> = match file {
        Some(path) if path.as_os_str() != "-" => {
            let file = std::fs::File::open(&path).map_err(|source| KvsError::IoAt {
                path: path.clone(),
                source,
            })?;
            Box::new(BufReader::with_capacity(1 << 16, file))
        }
        _ => Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock())),
    };
    let engine = engine.map(|e| match e {
        Engine::Kvs => EngineKind::Kvs,
        Engine::Sled => EngineKind::Sled,
    });
    // A store already there keeps its engine; asking for another one is refused.
    let store = AnyEngine::open(dir, engine)?;
    let mut reader = stream::Reader::new(input);
    let mut batch = WriteBatch::new();
    let mut batch_bytes = 0;
    let mut keys = 0u64;
    loop {
        let entry = match reader.next_entry() {
            Ok(entry) => entry,
            Err(e) => {
                // The keys before the bad bytes are written, as said.
                if !batch.is_empty() {
                    store.apply_batch(&batch)?;
                }
                store.flush()?;
                return Err(Failure::new(
                    OTHER,
                    format!("bad restore stream {e} ({keys} keys before it were restored)"),
                ));
            }
        };
        let Some(entry) = entry else { break };
        let size = entry.key.len() + entry.value.len();
        if !batch.is_empty()
            && (batch_bytes + size > RESTORE_BATCH_BYTES || batch.len() >= RESTORE_BATCH_KEYS)
        {
            store.apply_batch(&batch)?;
            batch.clear();
            batch_bytes = 0;
        }
        if size > RESTORE_BATCH_BYTES {
            // Larger than a batch may be: written alone.
            match entry.deadline {
                Some(deadline) => {
                    store.set_with_deadline_bytes(&entry.key, &entry.value, deadline)?
                }
                None => store.set_bytes(&entry.key, &entry.value)?,
            }
        } else {
            match entry.deadline {
                Some(deadline) => batch.set_with_deadline(&entry.key, &entry.value, deadline),
                None => batch.set(&entry.key, &entry.value),
            };
            batch_bytes += size;
        }
        keys += 1;
    }
    if !batch.is_empty() {
        store.apply_batch(&batch)?;
    }
    store.flush()?;
    println!("restored {keys} keys into {}", dir.display());
    Ok(())
}
