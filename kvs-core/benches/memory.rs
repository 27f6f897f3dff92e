//! `cargo bench -p kvs --bench memory`: the resident memory of a `KvStore` around a compaction
//! and around one very large value.
//!
//! - **Compaction**: fills a store with N keys of 16 bytes (100-byte values; N from
//!   `KVS_MEMORY_KEYS`, 2,000,000 by default), reopens it, and measures the resident memory
//!   (VmRSS) before a compaction of all of it, its peak during (VmHWM, reset first by writing
//!   "5" to /proc/self/clear_refs), and after. Target: the peak within 1.25x of before.
//!   VmHWM is the kernel's own high-water mark of the resident set, not a sample: no peak
//!   between two readings is missed.
//! - **Writer stall**: then compacts the same store again while another thread overwrites
//!   keys one `set` at a time, and prints the longest single `set` (and how many took over
//!   1 ms and 10 ms): how long compaction held writers up at most.
//! - **A 512 MiB value**: on a fresh store, the resident memory before writing one value of
//!   512 MiB (the largest accepted), after writing it (the caller's copy freed), and after
//!   reading it back (the copy returned freed). Target: both within 16 MiB of before.
//!
//! Figures are printed, with the ratio to each target; nothing is timed.

use kvs::{KvStore, KvStoreOptions, KvsEngine};

const MIB: f64 = (1 << 20) as f64;

/// A field of /proc/self/status, in bytes (the kernel gives kB).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn rss() -> u64 {
    status_bytes("VmRSS")
}

/// Resets the peak resident memory (VmHWM) to the current resident memory.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}

fn peak() -> u64 {
    status_bytes("VmHWM")
}

/// Resident memory as "total (anonymous + file-backed)" in MiB.
fn split() -> String {
    format!(
        "{:.1} MiB ({:.1} anon + {:.1} file)",
        mib(rss()),
        mib(status_bytes("RssAnon")),
        mib(status_bytes("RssFile"))
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn compaction(keys: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    // No background compaction: the bench runs the one it measures.
    let options = KvStoreOptions::default().compaction_min_stale(u64::MAX);
    {
        let store = KvStore::open_with(dir.path(), options.clone()).expect("open");
        let value = [b'v'; 100];
        let keys_of = |from: u64, to: u64| -> Vec<Vec<u8>> {
            (from..to)
                .map(|i| format!("key-{i:012}").into_bytes())
                .collect()
        };
        for start in (0..keys).step_by(1000) {
            let batch = keys_of(start, (start + 1000).min(keys));
            let pairs: Vec<(&[u8], &[u8])> =
                batch.iter().map(|k| (k.as_slice(), &value[..])).collect();
            store.set_many_bytes(&pairs).expect("set");
        }
    }
    let store = KvStore::open_with(dir.path(), options).expect("reopen");
    assert_eq!(store.len().expect("len") as u64, keys);
    let before = rss();
    let before_split = split();
    reset_peak();
    let start = std::time::Instant::now();
    store.compact().expect("compact");
    let took = start.elapsed();
    let during = peak();
    let after = rss();
    println!(
        "memory: before compaction {before_split}, after {}",
        split()
    );
    assert_eq!(store.len().expect("len") as u64, keys);
    println!("memory: compaction of {keys} keys (16-byte keys, 100-byte values), {took:.1?}");
    println!(
        "memory: RSS before {:.1} MiB, peak during {:.1} MiB, after {:.1} MiB",
        mib(before),
        mib(during),
        mib(after)
    );
    println!(
        "memory: peak / before = {:.2} (target <= 1.25), after / before = {:.2}",
        during as f64 / before as f64,
        after as f64 / before as f64
    );
    writer_stall(&store, keys);
}

/// Compacts `store` (of `keys` keys) while a writer thread overwrites keys, and prints the
/// writer's longest `set`; first, for comparison, the same writer for 3 s with no compaction
/// (what the machine alone costs it).
fn writer_stall(store: &KvStore, keys: u64) {
    let (took, stats) = with_writer(store, keys, || {
        std::thread::sleep(std::time::Duration::from_secs(3))
    });
    println!("memory: writer alone for {took:.1?}: {stats}");
    let (took, stats) = with_writer(store, keys, || store.compact().expect("compact"));
    println!(
        "memory: writer stall: compaction of {keys} keys took {took:.1?} beside a writer: {stats}"
    );
}

/// Runs `during` while another thread overwrites keys of `store` one `set` at a time (at most
/// `keys` of them); returns how long `during` took and the writer's latencies.
fn with_writer(store: &KvStore, keys: u64, during: impl FnOnce()) -> (std::time::Duration, String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let value = [b'w'; 100];
            let (mut sets, mut worst, mut over_1ms, mut over_10ms) = (0u64, Duration::ZERO, 0, 0);
            while !done.load(Ordering::Relaxed) && sets < keys {
                let key = format!("key-{:012}", (sets * 7919) % keys);
                let start = Instant::now();
                store.set_bytes(key.as_bytes(), &value).expect("set");
                let latency = start.elapsed();
                worst = worst.max(latency);
                over_1ms += u64::from(latency > Duration::from_millis(1));
                over_10ms += u64::from(latency > Duration::from_millis(10));
                sets += 1;
            }
            format!(
                "{sets} sets, longest {worst:.2?}, {over_1ms} over 1 ms, {over_10ms} over 10 ms"
            )
        });
        let start = Instant::now();
        during();
        let took = start.elapsed();
        done.store(true, Ordering::Relaxed);
        (took, writer.join().expect("writer thread"))
    })
}

fn large_value() {
    const LEN: usize = 512 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = KvStore::open(dir.path()).expect("open");
    store.set_bytes(b"small", b"x").expect("set");
    let before = rss();
    println!("memory: before writing it {}", split());
    {
        let value = vec![b'v'; LEN];
        store.set_bytes(b"big", &value).expect("set big");
    }
    let after_write = rss();
    println!("memory: after writing it {}", split());
    {
        let got = store
            .get_bytes(b"big")
            .expect("get big")
            .expect("big is there");
        assert_eq!(got.len(), LEN);
    }
    let after_read = rss();
    println!("memory: after reading it {}", split());
    println!("memory: one 512 MiB value");
    println!(
        "memory: RSS before {:.1} MiB, after writing it {:.1} MiB, after reading it {:.1} MiB",
        mib(before),
        mib(after_write),
        mib(after_read)
    );
    println!(
        "memory: growth after writing {:+.1} MiB, after reading {:+.1} MiB (target: within 16 MiB)",
        (after_write as f64 - before as f64) / MIB,
        (after_read as f64 - before as f64) / MIB
    );
}

fn main() {
    let keys = std::env::var("KVS_MEMORY_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    large_value();
    compaction(keys);
}
