//! `cargo bench -p kvs --bench index_memory`: how much memory `KvStore`'s index costs per key.
//!
//! Keys are 16 bytes. Each measurement runs in a fresh child process (this program run again),
//! so that memory one measurement freed and the allocator kept cannot hide the next one's:
//!
//! - `store`: a store filled with N keys (100-byte values, by another process) is opened, and
//!   the resident memory of the process measured before and after: the difference is the index
//!   built by replay, one insert per record (values stay on disk).
//! - `inserts`: the index alone, filled by N single inserts.
//! - `reserved`: the index alone, sized once with `Index::reserve` for N keys (as an open does
//!   when the files say how many keys they hold), then filled.
//!
//! Prints, for N = 1M and 10M, the growth of resident memory per key beyond the key's 16 bytes,
//! both in all and of anonymous memory only: a reopen also maps the log files, and the pages
//! replay read stay resident as page cache until the kernel wants them back, which the index
//! does not own. `--keys N` measures N keys only.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kvs::bench_internals::{Index, RecordPos};
use kvs::{KvStore, KvsEngine, WriteBatch};

const KEY_LEN: usize = 16;
const CHILD: &str = "KVS_INDEX_MEMORY_CHILD";

fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = *b"key-000000000000";
    let mut n = i;
    for slot in k[4..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// A field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resident memory: in all, and anonymous only.
fn resident() -> (u64, u64) {
    (status_bytes("VmRSS"), status_bytes("RssAnon"))
}

/// Runs measurement `what` of `keys` keys; returns the resident memory it grew by (in all,
/// anonymous) and what it says about itself.
fn measure(what: &str, keys: u64, dir: &Path) -> ((u64, u64), String) {
    match what {
        "fill" => {
            let store = KvStore::open(dir).expect("open");
            let value = [b'v'; 100];
            let mut batch = WriteBatch::new();
            for i in 0..keys {
                batch.set(&key(i), &value);
                if batch.len() == 1_000 || i + 1 == keys {
                    store.apply_batch(&batch).expect("apply_batch");
                    batch.clear();
                }
            }
            ((0, 0), String::new())
        }
        "store" => {
            let before = resident();
            let start = Instant::now();
            let store = KvStore::open(dir).expect("reopen");
            let took = start.elapsed();
            let after = resident();
            assert_eq!(store.len().expect("len") as u64, keys);
            (
                (after.0 - before.0, after.1 - before.1),
                format!("open (replay) took {:.0} ms", took.as_secs_f64() * 1e3),
            )
        }
        "inserts" | "reserved" => {
            let before = resident();
            let index = Index::new();
            if what == "reserved" {
                index.reserve(keys, keys * KEY_LEN as u64);
            }
            for i in 0..keys {
                let pos = RecordPos {
                    file: (i >> 20) as u32,
                    offset: (i as u32 & 0xf_ffff) * 133,
                    len: 133,
                };
                index.insert(&key(i), pos).expect("insert");
            }
            let after = resident();
            assert_eq!(index.len() as u64, keys);
            assert_eq!(
                index.position(&key(keys / 2)).map(|p| p.len),
                Some(133),
                "a key inserted is found"
            );
            ((after.0 - before.0, after.1 - before.1), String::new())
        }
        other => panic!("unknown measurement {other:?}"),
    }
}

fn main() {
    if let Ok(job) = std::env::var(CHILD) {
        let mut job = job.splitn(3, ' ');
        let (what, keys, dir) = (job.next(), job.next(), job.next());
        let keys: u64 = keys.and_then(|k| k.parse().ok()).expect("child key count");
        let dir = Path::new(dir.expect("child store directory"));
        let ((all, anon), note) = measure(what.expect("child measurement"), keys, dir);
        println!("{all} {anon} {note}");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let counts: Vec<u64> = match args.iter().position(|a| a == "--keys") {
        Some(i) => vec![args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--keys N")],
        None => vec![1_000_000, 10_000_000],
    };
    let exe = std::env::current_exe().expect("this program's path");
    println!("index_memory: keys of {KEY_LEN} bytes; resident memory per key beyond the key");
    let run = |what: &str, keys: u64, dir: &Path| {
        Command::new(&exe)
            .env(CHILD, format!("{what} {keys} {}", dir.display()))
            .output()
            .expect("run a measurement")
    };
    for &keys in &counts {
        // The store is filled in a process of its own: memory that filling freed and the
        // allocator kept would otherwise serve the index the reopen builds.
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(
            run("fill", keys, dir.path()).status.success(),
            "filling a store"
        );
        for what in ["store", "inserts", "reserved"] {
            let output = run(what, keys, dir.path());
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "measurement {what} of {keys} keys failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let mut fields = stdout.trim().splitn(3, ' ');
            let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
            let (all, anon) = (next().expect("bytes"), next().expect("anonymous bytes"));
            let note = stdout
                .trim()
                .splitn(3, ' ')
                .nth(2)
                .unwrap_or("")
                .to_string();
            let beyond = |bytes: u64| bytes as f64 / keys as f64 - KEY_LEN as f64;
            println!(
                "index_memory: {keys:>9} keys, {what:<8}: {:+6.1} B/key ({:+6.1} anonymous), {:.1} MiB{}{note}",
                beyond(all),
                beyond(anon),
                all as f64 / (1 << 20) as f64,
                if note.is_empty() { "" } else { "; " },
            );
        }
    }
}
