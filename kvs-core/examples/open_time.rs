//! How long [`KvStore::open`] takes, in a fresh process:
//! `cargo run --release -p kvs --example open_time -- DIR N`.
//!
//! If `DIR` holds no store, loads `N` keys (16-byte keys, 100-byte values, in batches of
//! 1,000 through `set_many_bytes`), closes the store and waits for its hint files to be
//! written (see `engines/log/hint.rs`), then exits: run it again to measure. If `DIR` holds a
//! store, opens it and prints the time the open took, the number of keys, and the process's
//! resident memory (VmRSS) after the open. Pass `--no-hints` as the third argument to remove
//! the hint files first, so the open replays every log file (what a store without hints
//! costs).

use std::time::Instant;

use kvs::{KvStore, KvsEngine};

fn key(i: u64) -> [u8; 16] {
    // Spread over the key space, as real keys would be, and exactly 16 bytes.
    let mixed = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&mixed.to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

fn rss_mib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// With `KVS_LOG=debug` in the environment, the library's log lines go to stderr (how long
/// each part of the open took).
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{} {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

fn main() -> kvs::Result<()> {
    if let Ok(level) = std::env::var("KVS_LOG") {
        if log::set_logger(&Stderr).is_ok() {
            log::set_max_level(level.parse().unwrap_or(log::LevelFilter::Info));
        }
    }
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: open_time DIR N [--no-hints]"));
    let n: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: open_time DIR N [--no-hints]");
    let no_hints = args.next().as_deref() == Some("--no-hints");
    let has_store = dir.join("MANIFEST").exists();
    if !has_store {
        let started = Instant::now();
        let store = KvStore::open(&dir)?;
        let value = [b'v'; 100];
        let mut keys = Vec::with_capacity(1000);
        let mut at = 0;
        while at < n {
            keys.clear();
            let end = (at + 1000).min(n);
            keys.extend((at..end).map(key));
            let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &value[..])).collect();
            store.set_many_bytes(&pairs)?;
            at = end;
        }
        println!(
            "loaded {n} keys into {} in {:.1} s; closing (the hints are written before the \
             store is closed)",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        let closing = Instant::now();
        drop(store);
        println!("closed in {:.1} s", closing.elapsed().as_secs_f64());
        return Ok(());
    }
    if no_hints {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "hint") {
                std::fs::remove_file(&path)?;
            }
        }
    }
    let started = Instant::now();
    let store = KvStore::open(&dir)?;
    let took = started.elapsed();
    let keys = store.len()?;
    println!(
        "opened {} in {:.1} ms: {keys} keys, RSS {}",
        dir.display(),
        took.as_secs_f64() * 1e3,
        rss_mib()
    );
    // Leave without waiting on the background threads to write hints: a read-only measure.
    std::mem::forget(store);
    std::process::exit(0);
}
