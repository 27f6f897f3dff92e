//! The workloads: keys, values, and timed loops over one store from one or more threads.
//!
//! Every measurement runs for a fixed time rather than a fixed count, so a slow engine (a
//! durable set costs an fsync) and a fast one (a get from the page cache) each get a sample
//! of about the same length, and the whole run has a known duration.

use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::peer::{Durability, Engine, Result, Store};

/// Keys in the store that gets read from (workload 3).
pub const GET_KEYS: u64 = 100_000;
/// Value length of the stores built for gets and opens.
pub const SMALL_VALUE: usize = 100;
/// Value length of workload 2.
pub const LARGE_VALUE: usize = 1024;

/// Random bytes that values are cut from: values differ from each other and do not compress,
/// so fjall's LZ4 blocks hold no more than the others' pages.
const VALUE_POOL: usize = 1 << 20;

/// A bijection on u64 with well-mixed output (the splitmix64 finalizer): distinct inputs give
/// distinct keys, in an order that is random for every engine's structure.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The 16-byte key number `i`: 16 lowercase hex digits of `mix(i)`.
pub fn key(i: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let x = mix(i);
    let mut k = [0u8; 16];
    for (n, byte) in k.iter_mut().enumerate() {
        *byte = HEX[((x >> (60 - 4 * n)) & 0xf) as usize];
    }
    k
}

/// Where values come from.
pub struct Values {
    pool: Vec<u8>,
}

impl Default for Values {
    fn default() -> Values {
        Values::new()
    }
}

impl Values {
    pub fn new() -> Values {
        let mut pool = Vec::with_capacity(VALUE_POOL + LARGE_VALUE);
        let mut i = 0u64;
        while pool.len() < VALUE_POOL + LARGE_VALUE {
            pool.extend_from_slice(&mix(i ^ 0x5eed).to_le_bytes());
            i += 1;
        }
        Values { pool }
    }

    /// The value written with key number `i`.
    pub fn get(&self, i: u64, len: usize) -> &[u8] {
        let offset = (mix(!i) % VALUE_POOL as u64) as usize;
        &self.pool[offset..offset + len]
    }
}

/// Key numbers of different threads and rounds never meet: thread `t` of round `r` writes
/// numbers `r << 52 | t << 40 | n`.
fn key_number(round: u64, thread: u64, n: u64) -> u64 {
    (round << 52) | (thread << 40) | n
}

/// What one timed run measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Operations per second, over all threads.
    pub ops_per_sec: f64,
    /// CPU time of the whole process (engine background threads included) over wall time: how
    /// many cores the run kept busy.
    pub cpus: f64,
}

/// Runs `op(thread, n)` on `threads` threads for `duration`. Each thread looks at the clock
/// every `check_every` calls.
pub fn timed<F>(threads: usize, duration: Duration, check_every: u64, op: F) -> Result<Sample>
where
    F: Fn(u64, u64) -> Result<()> + Sync,
{
    let barrier = Barrier::new(threads + 1);
    let (start, results) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                scope.spawn(move || -> Result<(u64, Instant)> {
                    barrier.wait();
                    let deadline = Instant::now() + duration;
                    let mut n = 0u64;
                    loop {
                        for _ in 0..check_every {
                            op(t, n)?;
                            n += 1;
                        }
                        let now = Instant::now();
                        if now >= deadline {
                            return Ok((n, now));
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = (Instant::now(), cpu_time());
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (start, results)
    });
    let (cpu_end, wall_end) = (cpu_time(), Instant::now());
    let (start, cpu_start) = start;
    let mut ops = 0;
    let mut end = start;
    for result in results {
        let (n, finished) = result?;
        ops += n;
        end = end.max(finished);
    }
    Ok(Sample {
        ops_per_sec: ops as f64 / end.duration_since(start).as_secs_f64(),
        cpus: (cpu_end - cpu_start) / wall_end.duration_since(start).as_secs_f64(),
    })
}

/// User plus system CPU time of this process so far, in seconds.
pub fn cpu_time() -> f64 {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Sets of `value_len`-byte values with fresh keys, from `threads` threads.
pub fn sets(
    store: &Store,
    values: &Values,
    value_len: usize,
    threads: usize,
    duration: Duration,
    round: u64,
) -> Result<Sample> {
    // A durable set costs an fsync (about a millisecond): checking the clock after each one
    // keeps the 8 threads' finishing times close; a fast set checks it every 16.
    let check_every = if store.is_durable() { 1 } else { 16 };
    timed(threads, duration, check_every, |t, n| {
        let i = key_number(round, t, n);
        store.set(&key(i), values.get(i, value_len))
    })
}

/// Uniformly random gets of the keys [`load`] wrote, from `threads` threads.
pub fn gets(
    store: &Store,
    keys: u64,
    threads: usize,
    duration: Duration,
    round: u64,
) -> Result<Sample> {
    timed(threads, duration, 64, |t, n| {
        let i = mix(key_number(round, t, n)) % keys;
        match store.get(&key(i))? {
            Some(value) => {
                black_box(value);
                Ok(())
            }
            None => Err(format!("key number {i} is missing").into()),
        }
    })
}

/// Builds a store of `keys` keys with `SMALL_VALUE`-byte values in `dir`, and closes it.
pub fn load(engine: Engine, dir: &Path, values: &Values, keys: u64) -> Result<()> {
    let store = engine.open(dir, Durability::Os)?;
    store.load((0..keys).map(|i| (key(i).to_vec(), values.get(i, SMALL_VALUE).to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_sixteen_hex_digits() {
        let keys: std::collections::HashSet<_> = (0..10_000).map(key).collect();
        assert_eq!(keys.len(), 10_000);
        assert!(keys.iter().all(|k| k.iter().all(u8::is_ascii_hexdigit)));
    }

    #[test]
    fn timed_counts_every_thread_and_its_cores() -> Result<()> {
        let sample = timed(2, Duration::from_millis(50), 16, |_, _| {
            black_box((0..100u64).sum::<u64>());
            Ok(())
        })?;
        assert!(sample.ops_per_sec > 0.0);
        assert!(sample.cpus > 0.0 && sample.cpus < 3.0, "{sample:?}");
        Ok(())
    }

    #[test]
    fn every_engine_reads_back_what_it_loaded() -> Result<()> {
        let values = Values::new();
        for engine in Engine::ALL {
            let dir = tempfile::tempdir()?;
            load(engine, dir.path(), &values, 1000)?;
            let store = engine.open(dir.path(), Durability::Os)?;
            for i in [0, 1, 999] {
                let got = store.get(&key(i))?;
                assert_eq!(
                    got.as_deref(),
                    Some(values.get(i, SMALL_VALUE)),
                    "{engine:?}"
                );
            }
            store.set(b"fresh", b"value")?;
            assert_eq!(store.get(b"fresh")?.as_deref(), Some(&b"value"[..]));
            assert_eq!(store.get(b"absent")?, None);
        }
        Ok(())
    }

    #[test]
    fn every_scale_engine_reads_back_its_batches_after_a_reopen() -> Result<()> {
        let values = Values::new();
        for engine in Engine::SCALE {
            let dir = tempfile::tempdir()?;
            {
                let store = engine.open_plain(dir.path())?;
                for first in [0u64, 1000] {
                    let owned: Vec<([u8; 16], &[u8])> = (first..first + 1000)
                        .map(|i| (key(i), values.get(i, SMALL_VALUE)))
                        .collect();
                    let pairs: Vec<(&[u8], &[u8])> =
                        owned.iter().map(|(k, v)| (&k[..], *v)).collect();
                    store.set_batch(&pairs)?;
                }
                store.sync()?;
            }
            let store = engine.open_plain(dir.path())?;
            for i in [0, 999, 1000, 1999] {
                assert_eq!(
                    store.get(&key(i))?.as_deref(),
                    Some(values.get(i, SMALL_VALUE)),
                    "{engine:?} key number {i}"
                );
            }
            assert_eq!(store.get(&key(2000))?, None, "{engine:?}");
        }
        Ok(())
    }
}
