//! `cargo bench -p kvs --bench index_memory`: how much memory `KvStore`'s index costs per key.
//!
//! Fills a store with N keys of 16 bytes (100-byte values), drops it, and measures the
//! resident memory of the process before and after reopening it: the difference is the index
//! built by replay (values stay on disk). Prints bytes per key.

use std::time::Instant;

use kvs::{KvStore, KvsEngine};

const KEYS: u64 = 1_000_000;

fn rss_bytes() -> u64 {
    // /proc/self/statm: size resident shared ... in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    resident * 4096
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = KvStore::open(dir.path()).expect("open");
        let value = [b'v'; 100];
        for i in 0..KEYS {
            store
                .set_bytes(format!("key-{i:012}").as_bytes(), &value)
                .expect("set");
        }
    }
    let before = rss_bytes();
    let start = Instant::now();
    let store = KvStore::open(dir.path()).expect("reopen");
    let open_time = start.elapsed();
    let after = rss_bytes();
    let keys = store.len().expect("len") as u64;
    assert_eq!(keys, KEYS);
    let per_key = (after.saturating_sub(before)) as f64 / keys as f64;
    println!("index_memory: {keys} keys of 16 bytes, 100-byte values");
    println!(
        "index_memory: open (replay) took {:.0} ms",
        open_time.as_secs_f64() * 1e3
    );
    println!(
        "index_memory: resident memory grew by {:.1} MiB: {per_key:.1} bytes per key ({:.1} beyond the key itself)",
        (after - before) as f64 / (1 << 20) as f64,
        per_key - 16.0
    );
}
