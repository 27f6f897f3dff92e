//! The Rust half of the `kvs_get` benchmark: `get_bytes` of a 100-byte value through
//! `kvs::AnyEngine`, on the same store shape and loop as `benches/get.c`.
//!
//! Run both with `bash kvs-ffi/benches/run.sh` (release builds), or this one alone with
//! `cargo bench -p kvs-ffi --bench get`.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use kvs::{AnyEngine, EngineKind, KvsEngine};

/// Keys in the store; gets cycle through them in order.
const KEYS: usize = 1000;
/// Bytes in each value.
const VALUE_LEN: usize = 100;
/// Gets per round; the best of `ROUNDS` rounds is reported (the least disturbed by noise).
const GETS: usize = 500_000;
const ROUNDS: usize = 5;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = AnyEngine::open(dir.path(), Some(EngineKind::Kvs))?;
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("key{i:06}").into_bytes())
        .collect();
    let value = vec![b'v'; VALUE_LEN];
    for key in &keys {
        db.set_bytes(key, &value)?;
    }

    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..GETS {
            let got = db.get_bytes(black_box(&keys[i % KEYS]))?;
            match got {
                Some(v) if v.len() == VALUE_LEN => {
                    black_box(v);
                }
                _ => return Err("wrong value".into()),
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / GETS as f64;
        best = best.min(ns);
    }
    println!(
        "rust AnyEngine::get_bytes (kvs engine, {VALUE_LEN}-byte value, {KEYS} keys): {best:.0} ns/get (best of {ROUNDS} x {GETS})"
    );
    Ok(())
}
