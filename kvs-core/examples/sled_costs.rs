//! What the sled engine's batches, compare-and-set and isolation cost, measured on this
//! machine: `cargo run --release -p kvs --example sled_costs`.
//!
//! - sets one call each (each flushed) against the same sets as one `apply_batch` and as one
//!   `set_many_bytes` (one flush);
//! - `set_bytes` against a matching `compare_and_set_bytes` replacing an existing value;
//! - `get_many_bytes` of 10 keys (one transaction) against 10 `get_bytes`;
//! - `get_bytes` before and after the process's first sled batch: from then on sled's
//!   process-wide concurrency control takes a real `RwLock` on every read (the price of
//!   batches isolated from readers; see `engines/sled/mod.rs`). Run alone, in a fresh
//!   process, so that the first phase really is before any batch.

use std::time::{Duration, Instant};

use kvs::{KvsEngine, SledKvsEngine, WriteBatch};

const KEYS: usize = 1000;
const GETS: usize = 1_000_000;

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn per(d: Duration, n: usize) -> String {
    format!("{:>9.2} µs", d.as_secs_f64() * 1e6 / n as f64)
}

fn gets(engine: &SledKvsEngine, threads: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..GETS / threads {
                    let k = key((i * 7919 + t) % KEYS);
                    assert!(engine.get_bytes(&k).expect("get").is_some());
                }
            });
        }
    });
    start.elapsed()
}

fn main() -> kvs::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path()).map_err(|e| kvs::KvsError::InvalidArgument(e.to_string()))?;
    let engine = SledKvsEngine::new(db)?;
    let value = [b'v'; 100];

    let start = Instant::now();
    for i in 0..KEYS {
        engine.set_bytes(&key(i), &value)?;
    }
    let single = start.elapsed();

    // A first pass warms the caches, so that "before" is not also "cold".
    gets(&engine, 1);
    let g1 = gets(&engine, 1);
    let g2 = gets(&engine, 2);

    let mut batch = WriteBatch::new();
    for i in 0..KEYS {
        batch.set(&key(i), &value);
    }
    let start = Instant::now();
    engine.apply_batch(&batch)?;
    let batched = start.elapsed();

    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_slice(), &value[..])).collect();
    let start = Instant::now();
    engine.set_many_bytes(&pairs)?;
    let many = start.elapsed();

    let g1_after = gets(&engine, 1);
    let g2_after = gets(&engine, 2);

    // get_many of 10 keys (one transaction, under sled's exclusive lock) against 10 gets.
    let ten: Vec<Vec<u8>> = (0..10).map(|i| key(i * 97)).collect();
    let ten: Vec<&[u8]> = ten.iter().map(Vec::as_slice).collect();
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        assert_eq!(engine.get_many_bytes(&ten)?.len(), 10);
    }
    let many_gets = start.elapsed();
    let start = Instant::now();
    for _ in 0..rounds {
        for k in &ten {
            assert!(engine.get_bytes(k)?.is_some());
        }
    }
    let ten_gets = start.elapsed();

    let other = [b'w'; 100];
    let start = Instant::now();
    for i in 0..KEYS {
        assert!(engine.compare_and_set_bytes(&key(i), Some(&value), Some(&other))?);
    }
    let cas = start.elapsed();
    let start = Instant::now();
    for i in 0..KEYS {
        engine.set_bytes(&key(i), &value)?;
    }
    let set_again = start.elapsed();

    println!("{KEYS} sets of 100-byte values, per key:");
    println!("  set_bytes, one call each      {}", per(single, KEYS));
    println!("  apply_batch, one batch        {}", per(batched, KEYS));
    println!("  set_many_bytes, one call      {}", per(many, KEYS));
    println!("replacing a value, per call:");
    println!("  set_bytes                     {}", per(set_again, KEYS));
    println!("  compare_and_set_bytes         {}", per(cas, KEYS));
    println!("reading 10 keys, per call:");
    println!("  get_many_bytes of 10          {}", per(many_gets, rounds));
    println!("  10 get_bytes                  {}", per(ten_gets, rounds));
    println!("{GETS} gets of {KEYS} keys, per get:");
    println!("  before any batch, 1 thread    {}", per(g1, GETS));
    println!("  after a batch, 1 thread       {}", per(g1_after, GETS));
    println!("  before any batch, 2 threads   {}", per(g2, GETS));
    println!("  after a batch, 2 threads      {}", per(g2_after, GETS));
    Ok(())
}
