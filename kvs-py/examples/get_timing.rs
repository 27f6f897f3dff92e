//! Times random gets through the Rust API, to measure what kvs's Python layer adds per call
//! (`python kvs-py/bench/bench.py --overhead` runs this and the same gets from Python).
//!
//! `cargo run --release -p kvs-py --example get_timing -- [KEYS] [VALUE_BYTES] [GETS]`
//! prints `ns_per_get=<best of three rounds>`. Keys, values and the order of gets follow
//! the same scheme as bench.py (not the same random bytes; the engine does not care).

use std::hint::black_box;
use std::time::Instant;

use kvs::{AnyEngine, EngineKind, KvsEngine};

fn arg(index: usize, default: usize) -> Result<usize, String> {
    match std::env::args().nth(index) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("argument {index} must be a number, not {text:?}")),
    }
}

/// xorshift64*: a fixed, dependency-free sequence of key indices.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = arg(1, 100_000)?;
    let value_len = arg(2, 100)?;
    let gets = arg(3, 1_000_000)?;
    if n == 0 {
        return Err("KEYS must be at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let store = AnyEngine::open(dir.path(), Some(EngineKind::Kvs))?;
    let keys: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("key-{i:012}").into_bytes())
        .collect();
    let value = vec![0xA5u8; value_len];
    for key in &keys {
        store.set_bytes(key, &value)?;
    }
    let mut state = 0x9E37_79B9_7F4A_7C15;
    let lookups: Vec<&[u8]> = (0..gets)
        .map(|_| keys[(next(&mut state) % n as u64) as usize].as_slice())
        .collect();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        for key in &lookups {
            black_box(store.get_bytes(key)?);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("ns_per_get={:.1}", best / gets as f64 * 1e9);
    Ok(())
}
