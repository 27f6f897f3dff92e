//! `cargo bench -p kvs`: `KvStore` against `SledKvsEngine`.
//!
//! - `set/*`: sets of 16-byte keys and 100-byte values into a fresh store, one call each.
//! - `get/*`: uniformly random gets from a store of 100,000 such keys (which fits in a CPU's
//!   last-level cache, index and log), from 1 and 2 threads; and, for `KvStore`, from one of
//!   1,000,000 (which does not: each get waits for memory).
//! - `set/kvs/.. overwriting ..`, `cas/kvs`, `update/kvs`: a `set`, a matching
//!   `compare_and_set_bytes` and an `update_bytes` of keys of a store of 100,000, each call
//!   replacing a 100-byte value with another (automatic compaction off, so that each measures
//!   the call itself).
//! - `durable_set/*`: sets that are on disk (fsynced) before they return, from 1 and from 8
//!   threads: `KvStore` with `SyncPolicy::Always` (group commit) against sled flushing after
//!   every set.
//! - `batch/kvs`: `apply_batch` of 1,000 sets of such keys and values into a fresh store, per
//!   key (compare with `set/kvs`).
//! - `sweep/kvs`: `sweep_expired` of 100,000 expired keys (the background sweeper held off), per
//!   key.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::BatchSize;
use kvs::{now_millis, KvStore, KvStoreOptions, KvsEngine, SledKvsEngine, SyncPolicy, WriteBatch};
use tempfile::TempDir;

const KEYS: u64 = 100_000;
const VALUE: [u8; 100] = [b'v'; 100];

fn key(mut i: u64) -> [u8; 16] {
    // "key-" and 12 decimal digits, written by hand: formatting would cost more than a get.
    let mut k = *b"key-000000000000";
    for slot in k[4..].iter_mut().rev() {
        *slot = b'0' + (i % 10) as u8;
        i /= 10;
    }
    k
}

/// A cheap, fixed-sequence generator: the same random keys for both engines.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn open_kvs(dir: &TempDir) -> KvStore {
    KvStore::open(dir.path()).expect("open KvStore")
}

fn open_sled(dir: &TempDir) -> SledKvsEngine {
    SledKvsEngine::new(sled::open(dir.path()).expect("open sled")).expect("open the engine")
}

fn bench_set<E: KvsEngine>(c: &mut Criterion, name: &str, open: fn(&TempDir) -> E) {
    let mut group = c.benchmark_group("set");
    group.throughput(Throughput::Elements(1));
    let dir = TempDir::new().expect("temp dir");
    let store = open(&dir);
    let mut i = 0u64;
    group.bench_function(BenchmarkId::new(name, "16B key, 100B value"), |b| {
        b.iter(|| {
            i += 1;
            store.set_bytes(&key(i), &VALUE).expect("set");
        })
    });
    group.finish();
}

/// Random gets from one thread of a store of `keys` keys.
fn bench_get_one<E: KvsEngine>(c: &mut Criterion, name: &str, label: &str, store: &E, keys: u64) {
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    group.bench_function(BenchmarkId::new(name, label), |b| {
        b.iter(|| {
            let k = key(rng.next() % keys);
            let value = store.get_bytes(&k).expect("get");
            assert!(value.is_some());
        })
    });
    group.finish();
}

fn bench_get<E: KvsEngine>(c: &mut Criterion, name: &str, store: E) {
    bench_get_one(c, name, "random of 100k", &store, KEYS);
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    // Two threads sharing the store: `iters` gets in all, half each; throughput is per get, so
    // perfect scaling halves the time per get.
    group.bench_function(BenchmarkId::new(name, "random of 100k, 2 threads"), |b| {
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(3));
            let threads: Vec<_> = (0..2u64)
                .map(|t| {
                    let store = store.clone();
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + t);
                        barrier.wait();
                        for _ in 0..iters / 2 {
                            let value = store.get_bytes(&key(rng.next() % KEYS)).expect("get");
                            assert!(value.is_some());
                        }
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for t in threads {
                t.join().expect("reader thread");
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// Runs `iters` sets spread over `threads` threads; returns the wall time.
fn timed_parallel_sets<E: KvsEngine>(store: &E, threads: u64, iters: u64, base: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in (t..iters).step_by(threads as usize) {
                    store.set_bytes(&key(base + i), &VALUE).expect("set");
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("writer thread");
    }
    start.elapsed()
}

fn bench_durable_set<E: KvsEngine>(c: &mut Criterion, name: &str, store: E) {
    let mut group = c.benchmark_group("durable_set");
    group.throughput(Throughput::Elements(1));
    let mut base = 0u64;
    for threads in [1u64, 8] {
        group.bench_function(BenchmarkId::new(name, format!("{threads} threads")), |b| {
            b.iter_custom(|iters| {
                base += iters;
                timed_parallel_sets(&store, threads, iters, base)
            })
        });
    }
    group.finish();
}

fn durable_sets(c: &mut Criterion) {
    let kvs_dir = TempDir::new().expect("temp dir");
    let kvs = KvStore::open_with(
        kvs_dir.path(),
        KvStoreOptions::default().sync(SyncPolicy::Always),
    )
    .expect("open KvStore");
    bench_durable_set(c, "kvs", kvs);
    let sled_dir = TempDir::new().expect("temp dir");
    bench_durable_set(c, "sled", open_sled(&sled_dir));
}

fn sets(c: &mut Criterion) {
    bench_set(c, "kvs", open_kvs);
    bench_set(c, "sled", open_sled);
}

fn gets(c: &mut Criterion) {
    let kvs_dir = TempDir::new().expect("temp dir");
    let kvs = open_kvs(&kvs_dir);
    for i in 0..KEYS {
        kvs.set_bytes(&key(i), &VALUE).expect("fill kvs");
    }
    bench_get(c, "kvs", kvs);

    // A million keys, filled in batches (the get does not care how the records were written).
    const MANY: u64 = 1_000_000;
    let many_dir = TempDir::new().expect("temp dir");
    let many = open_kvs(&many_dir);
    let mut batch = WriteBatch::new();
    for i in 0..MANY {
        batch.set(&key(i), &VALUE);
        if batch.len() == 1_000 {
            many.apply_batch(&batch).expect("fill kvs");
            batch.clear();
        }
    }
    bench_get_one(c, "kvs", "random of 1M", &many, MANY);
    drop(many);

    // Fill sled with one batch and one flush: the engine's per-write flush would make filling
    // take minutes and does not change what a get does.
    let sled_dir = TempDir::new().expect("temp dir");
    let engine = open_sled(&sled_dir);
    let keys: Vec<_> = (0..KEYS).map(key).collect();
    let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_ref(), &VALUE[..])).collect();
    engine.set_many_bytes(&pairs).expect("fill sled");
    bench_get(c, "sled", engine);
}

/// `set`, `compare_and_set_bytes` and `update_bytes`, each replacing the value of one of
/// `KEYS` keys: pass `n` over the keys turns every value from `VALUE` into `OTHER` (even
/// passes) or back (odd ones), so that a compare-and-set always matches.
fn replacing_writes(c: &mut Criterion) {
    const OTHER: [u8; 100] = [b'w'; 100];
    let values = |i: u64| match (i / KEYS) % 2 {
        0 => (&VALUE, &OTHER),
        _ => (&OTHER, &VALUE),
    };
    let open = |dir: &TempDir| {
        let options = KvStoreOptions::default().compaction_min_stale(u64::MAX);
        let store = KvStore::open_with(dir.path(), options).expect("open KvStore");
        for i in 0..KEYS {
            store.set_bytes(&key(i), &VALUE).expect("fill kvs");
        }
        store
    };
    let id = || BenchmarkId::new("kvs", "16B key, overwriting 100B value");

    let dir = TempDir::new().expect("temp dir");
    let store = open(&dir);
    let mut group = c.benchmark_group("set");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function(id(), |b| {
        b.iter(|| {
            let (_, new) = values(i);
            store.set_bytes(&key(i % KEYS), new).expect("set");
            i += 1;
        })
    });
    group.finish();
    drop(store);

    let dir = TempDir::new().expect("temp dir");
    let store = open(&dir);
    let mut group = c.benchmark_group("cas");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function(id(), |b| {
        b.iter(|| {
            let (old, new) = values(i);
            let swapped = store
                .compare_and_set_bytes(&key(i % KEYS), Some(old), Some(new))
                .expect("compare and set");
            assert!(swapped);
            i += 1;
        })
    });
    group.finish();
    drop(store);

    let dir = TempDir::new().expect("temp dir");
    let store = open(&dir);
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function(id(), |b| {
        b.iter(|| {
            let (old, new) = values(i);
            store
                .update_bytes(&key(i % KEYS), |current| {
                    assert_eq!(current, Some(&old[..]));
                    Some(new.to_vec())
                })
                .expect("update");
            i += 1;
        })
    });
    group.finish();
}

/// `apply_batch` of 1,000 sets of fresh keys, counted per key.
fn batches(c: &mut Criterion) {
    const BATCH: u64 = 1_000;
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(BATCH));
    let dir = TempDir::new().expect("temp dir");
    let store = open_kvs(&dir);
    let mut next = 0u64;
    group.bench_function(
        BenchmarkId::new("kvs", "1000 sets, 16B key, 100B value"),
        |b| {
            // By reference: building and dropping the batch's own vectors is not measured.
            b.iter_batched_ref(
                || {
                    let mut batch = WriteBatch::new();
                    for _ in 0..BATCH {
                        batch.set(&key(next), &VALUE);
                        next += 1;
                    }
                    batch
                },
                |batch| store.apply_batch(batch).expect("apply_batch"),
                BatchSize::SmallInput,
            )
        },
    );
    group.finish();
}

/// `sweep_expired` of `SWEEP` keys whose deadline has passed, counted per key. The keys are
/// set (in batches) and left to expire outside the measurement; the background sweeper is
/// held off (an interval of an hour) and compaction is off, so only the sweep is measured.
fn sweeps(c: &mut Criterion) {
    const SWEEP: u64 = 100_000;
    let mut group = c.benchmark_group("sweep");
    group.throughput(Throughput::Elements(SWEEP));
    group.sample_size(10);
    let dir = TempDir::new().expect("temp dir");
    let options = KvStoreOptions::default()
        .compaction_min_stale(u64::MAX)
        .sweep_interval(Duration::from_secs(3_600));
    let store = KvStore::open_with(dir.path(), options).expect("open KvStore");
    let mut next = 0u64;
    group.bench_function(BenchmarkId::new("kvs", "100k expired keys"), |b| {
        b.iter_batched(
            || {
                // Each batch's deadline is a little after its write (a deadline already past
                // would make the set a remove); the last one is waited for.
                let mut deadline = 0;
                let mut batch = WriteBatch::new();
                for _ in 0..SWEEP / 1_000 {
                    deadline = now_millis() + 20;
                    for _ in 0..1_000 {
                        batch.set_with_deadline(&key(next), b"v", deadline);
                        next += 1;
                    }
                    store.apply_batch(&batch).expect("apply_batch");
                    batch.clear();
                }
                while now_millis() <= deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            },
            |()| {
                let swept = store.sweep_expired().expect("sweep");
                assert_eq!(swept as u64, SWEEP);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(4))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = sets, gets, durable_sets, replacing_writes, batches, sweeps
}
criterion_main!(benches);
