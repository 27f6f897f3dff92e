//! The contract every engine keeps, run against `KvStore` and `SledKvsEngine` alike.

use std::sync::{Arc, Barrier};
use std::thread;

use kvs::{AnyEngine, EngineKind, KvStore, KvsEngine, KvsError, SledKvsEngine};
use tempfile::TempDir;

trait Fixture: KvsEngine {
    fn open(dir: &std::path::Path) -> Self;
}

impl Fixture for KvStore {
    fn open(dir: &std::path::Path) -> Self {
        KvStore::open(dir).expect("open KvStore")
    }
}

impl Fixture for SledKvsEngine {
    fn open(dir: &std::path::Path) -> Self {
        // A sled handle just dropped lets go of sled's file lock a moment later, from sled's
        // flusher thread (`AnyEngine` waits for it the same way): on a loaded machine the
        // reopen of `data_survives_reopen` can come first.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match sled::open(dir) {
                Ok(db) => return SledKvsEngine::new(db).expect("open SledKvsEngine"),
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("open sled: {e}"),
            }
        }
    }
}

impl Fixture for AnyEngine {
    fn open(dir: &std::path::Path) -> Self {
        AnyEngine::open(dir, None).expect("open AnyEngine")
    }
}

fn s(x: &str) -> String {
    x.to_owned()
}

fn get_returns_what_set_stored<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("key1"), s("value1")).unwrap();
    store.set(s("key2"), s("value2")).unwrap();
    assert_eq!(store.get(s("key1")).unwrap(), Some(s("value1")));
    assert_eq!(store.get(s("key2")).unwrap(), Some(s("value2")));
}

fn set_overwrites<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("key1"), s("value1")).unwrap();
    store.set(s("key1"), s("value2")).unwrap();
    assert_eq!(store.get(s("key1")).unwrap(), Some(s("value2")));
    assert_eq!(store.len().unwrap(), 1);
}

fn missing_key_gets_none<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    assert_eq!(store.get(s("nope")).unwrap(), None);
    store.set(s("a"), s("1")).unwrap();
    assert_eq!(store.get(s("b")).unwrap(), None);
}

fn removing_missing_key_is_key_not_found<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    assert!(matches!(store.remove(s("k")), Err(KvsError::KeyNotFound)));
    store.set(s("k"), s("v")).unwrap();
    store.remove(s("k")).unwrap();
    assert!(matches!(store.remove(s("k")), Err(KvsError::KeyNotFound)));
}

fn remove_deletes_the_key<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("k"), s("v")).unwrap();
    store.remove(s("k")).unwrap();
    assert_eq!(store.get(s("k")).unwrap(), None);
    assert!(!store.contains_key(b"k").unwrap());
    assert_eq!(store.len().unwrap(), 0);
}

fn data_survives_reopen<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    {
        let store = E::open(dir.path());
        store.set(s("kept"), s("v1")).unwrap();
        store.set(s("overwritten"), s("old")).unwrap();
        store.set(s("overwritten"), s("new")).unwrap();
        store.set(s("removed"), s("x")).unwrap();
        store.remove(s("removed")).unwrap();
    }
    let store = E::open(dir.path());
    assert_eq!(store.get(s("kept")).unwrap(), Some(s("v1")));
    assert_eq!(store.get(s("overwritten")).unwrap(), Some(s("new")));
    assert_eq!(store.get(s("removed")).unwrap(), None);
    assert_eq!(store.len().unwrap(), 2);
}

fn binary_keys_and_values_round_trip<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let key = [0u8, 255, 0, 10, 13];
    let value: Vec<u8> = (0..=255u8).collect();
    store.set_bytes(&key, &value).unwrap();
    store.set_bytes(b"", b"").unwrap();
    assert_eq!(store.get_bytes(&key).unwrap(), Some(value));
    assert_eq!(store.get_bytes(b"").unwrap(), Some(vec![]));
    store.remove_bytes(b"").unwrap();
    assert_eq!(store.get_bytes(b"").unwrap(), None);
}

fn non_utf8_value_through_string_api_is_an_error<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set_bytes(b"k", &[0xff, 0xfe]).unwrap();
    assert!(matches!(store.get(s("k")), Err(KvsError::NotUtf8 { .. })));
    assert_eq!(store.get_bytes(b"k").unwrap(), Some(vec![0xff, 0xfe]));
}

fn large_values_round_trip<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let value: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    store.set_bytes(b"big", &value).unwrap();
    assert_eq!(store.get_bytes(b"big").unwrap(), Some(value));
}

fn keys_lists_every_live_key<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    for i in 0..100 {
        store.set(format!("key{i}"), s("v")).unwrap();
    }
    for i in 0..50 {
        store.remove(format!("key{i}")).unwrap();
    }
    let mut keys = store.keys().unwrap();
    keys.sort();
    let mut expected: Vec<Vec<u8>> = (50..100).map(|i| format!("key{i}").into_bytes()).collect();
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(store.len().unwrap(), 50);
    assert!(!store.is_empty().unwrap());
}

fn clones_share_one_store_across_threads<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let threads = 8;
    let per_thread = 200;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let key = format!("t{t}-k{i}");
                    store.set(key.clone(), format!("v{i}")).unwrap();
                    assert_eq!(store.get(key).unwrap(), Some(format!("v{i}")));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.len().unwrap(), threads * per_thread);
    for t in 0..threads {
        for i in 0..per_thread {
            assert_eq!(
                store.get(format!("t{t}-k{i}")).unwrap(),
                Some(format!("v{i}"))
            );
        }
    }
}

fn set_many_sets_every_pair_in_order<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    {
        let store = E::open(dir.path());
        store.set(s("old"), s("value")).unwrap();
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let mut pairs: Vec<(&[u8], &[u8])> =
            keys.iter().map(|k| (k.as_bytes(), k.as_bytes())).collect();
        // The same key twice in one batch: the later pair wins.
        pairs.push((b"old", b"first"));
        pairs.push((b"old", b"second"));
        store.set_many_bytes(&pairs).unwrap();
        store.set_many_bytes(&[]).unwrap();
        store.set_many_bytes(&[(b"one", b"1")]).unwrap();
        assert_eq!(store.get(s("k7")).unwrap(), Some(s("k7")));
        assert_eq!(store.get(s("old")).unwrap(), Some(s("second")));
        assert_eq!(store.len().unwrap(), 52);
        // Overwrite in a batch, then remove one of them.
        store
            .set_many_bytes(&[(b"k1", b"again"), (b"k2", b"again")])
            .unwrap();
        store.remove(s("k2")).unwrap();
    }
    let store = E::open(dir.path());
    assert_eq!(store.get(s("k1")).unwrap(), Some(s("again")));
    assert_eq!(store.get(s("k2")).unwrap(), None);
    assert_eq!(store.get(s("k49")).unwrap(), Some(s("k49")));
    assert_eq!(store.get(s("old")).unwrap(), Some(s("second")));
    assert_eq!(store.get(s("one")).unwrap(), Some(s("1")));
}

fn flush_succeeds_and_keeps_data<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("k"), s("v")).unwrap();
    store.flush().unwrap();
    assert_eq!(store.get(s("k")).unwrap(), Some(s("v")));
}

// ---- Compare-and-set and update --------------------------------------------------------

/// Every case of compare-and-set: the key absent or set, `expected` matching or not, a new
/// value or a removal. A `false` leaves the store as it was.
fn compare_and_set_follows_its_table<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    // (value before, expected, new, swapped, value after)
    type Case = (
        Option<&'static [u8]>,
        Option<&'static [u8]>,
        Option<&'static [u8]>,
        bool,
        Option<&'static [u8]>,
    );
    let cases: [Case; 12] = [
        // Absent, expected absent: matches.
        (None, None, Some(b"new"), true, Some(b"new")),
        (None, None, None, true, None),
        // Absent, expected a value: no match, nothing changes.
        (None, Some(b"old"), Some(b"new"), false, None),
        (None, Some(b"old"), None, false, None),
        (None, Some(b""), Some(b"new"), false, None),
        // Set, expected its value: matches.
        (Some(b"old"), Some(b"old"), Some(b"new"), true, Some(b"new")),
        (Some(b"old"), Some(b"old"), None, true, None),
        (Some(b"old"), Some(b"old"), Some(b"old"), true, Some(b"old")),
        // Set, expected another value, or absence: no match.
        (
            Some(b"old"),
            Some(b"other"),
            Some(b"new"),
            false,
            Some(b"old"),
        ),
        (Some(b"old"), Some(b"ol"), None, false, Some(b"old")),
        (Some(b"old"), None, Some(b"new"), false, Some(b"old")),
        // The empty value is a value, not absence.
        (Some(b""), None, Some(b"new"), false, Some(b"")),
    ];
    for (i, &(before, expected, new, swapped, after)) in cases.iter().enumerate() {
        let key = format!("case{i}");
        let key = key.as_bytes();
        if let Some(value) = before {
            store.set_bytes(key, value).unwrap();
        }
        let case = format!("case {i}: {before:?} expected {expected:?} new {new:?}");
        assert_eq!(
            store.compare_and_set_bytes(key, expected, new).unwrap(),
            swapped,
            "{case}"
        );
        assert_eq!(store.get_bytes(key).unwrap().as_deref(), after, "{case}");
        assert_eq!(store.contains_key(key).unwrap(), after.is_some(), "{case}");
    }
    let live = cases.iter().filter(|c| c.4.is_some()).count();
    assert_eq!(store.len().unwrap(), live);
}

/// `update_bytes` sees the current value, stores what `f` returns and returns it; `None`
/// removes the key, and on a missing key leaves it missing.
fn update_stores_what_f_returns<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let mut seen = Vec::new();
    let new = store
        .update_bytes(b"k", |old| {
            seen.push(old.map(<[u8]>::to_vec));
            Some(b"1".to_vec())
        })
        .unwrap();
    assert_eq!(new, Some(b"1".to_vec()));
    assert_eq!(seen.last(), Some(&None));
    let new = store
        .update_bytes(b"k", |old| {
            let mut v = old.unwrap_or_default().to_vec();
            v.push(b'2');
            Some(v)
        })
        .unwrap();
    assert_eq!(new, Some(b"12".to_vec()));
    assert_eq!(store.get_bytes(b"k").unwrap(), Some(b"12".to_vec()));
    assert_eq!(store.update_bytes(b"k", |_| None).unwrap(), None);
    assert_eq!(store.get_bytes(b"k").unwrap(), None);
    assert_eq!(store.update_bytes(b"absent", |_| None).unwrap(), None);
    assert!(!store.contains_key(b"absent").unwrap());
    assert_eq!(store.len().unwrap(), 0);
}

/// The value of a counter as these tests write it: a decimal number, absent for 0.
fn counter(value: Option<&[u8]>) -> u64 {
    value.map_or(0, |v| {
        std::str::from_utf8(v)
            .expect("counter is UTF-8")
            .parse()
            .expect("counter is a number")
    })
}

const COUNTER_THREADS: usize = 8;
const COUNTER_STEPS: u64 = 250;

/// Runs `COUNTER_THREADS` threads, each calling `step(store, thread, i)` `COUNTER_STEPS`
/// times, all started together.
fn on_threads<E: Fixture>(store: &E, step: impl Fn(&E, usize, u64) + Send + Sync + 'static) {
    let barrier = Arc::new(Barrier::new(COUNTER_THREADS));
    let step = Arc::new(step);
    let handles: Vec<_> = (0..COUNTER_THREADS)
        .map(|t| {
            let (store, barrier, step) = (store.clone(), Arc::clone(&barrier), Arc::clone(&step));
            thread::spawn(move || {
                barrier.wait();
                for i in 0..COUNTER_STEPS {
                    step(&store, t, i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Threads incrementing shared counters through `update_bytes` lose no increment. Two
/// counters, each thread adding to both, so that the threads collide on each.
fn concurrent_updates_give_exact_totals<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    on_threads(&store, |store: &E, _, _| {
        for key in [&b"a"[..], b"b"] {
            store
                .update_bytes(key, |old| Some((counter(old) + 1).to_string().into_bytes()))
                .unwrap();
        }
    });
    let total = COUNTER_THREADS as u64 * COUNTER_STEPS;
    assert_eq!(counter(store.get_bytes(b"a").unwrap().as_deref()), total);
    assert_eq!(counter(store.get_bytes(b"b").unwrap().as_deref()), total);
}

/// Threads incrementing shared counters with a read-then-compare-and-set retry loop lose no
/// increment; the counter starts absent, so the first step swaps from `None`.
fn concurrent_compare_and_set_loops_give_exact_totals<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    on_threads(&store, |store: &E, _, _| {
        for key in [&b"a"[..], b"b"] {
            loop {
                let old = store.get_bytes(key).unwrap();
                let new = (counter(old.as_deref()) + 1).to_string();
                if store
                    .compare_and_set_bytes(key, old.as_deref(), Some(new.as_bytes()))
                    .unwrap()
                {
                    break;
                }
            }
        }
    });
    let total = COUNTER_THREADS as u64 * COUNTER_STEPS;
    assert_eq!(counter(store.get_bytes(b"a").unwrap().as_deref()), total);
    assert_eq!(counter(store.get_bytes(b"b").unwrap().as_deref()), total);
}

/// A lock built on compare-and-set excludes: threads claim a key (absent -> their token),
/// and while they hold it, do a plain, non-atomic `get` then `set` of a second key. If two
/// threads ever held the lock together, an increment of the second key would be lost.
fn compare_and_set_gives_mutual_exclusion<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let claims = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let claimed = Arc::clone(&claims);
    on_threads(&store, move |store: &E, t, i| {
        let token = format!("{t}-{i}");
        if !store
            .compare_and_set_bytes(b"lock", None, Some(token.as_bytes()))
            .unwrap()
        {
            return;
        }
        claimed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n = counter(store.get_bytes(b"guarded").unwrap().as_deref());
        store
            .set_bytes(b"guarded", (n + 1).to_string().as_bytes())
            .unwrap();
        // Released by its holder only: the token is still there.
        assert!(store
            .compare_and_set_bytes(b"lock", Some(token.as_bytes()), None)
            .unwrap());
    });
    let claims = claims.load(std::sync::atomic::Ordering::SeqCst);
    assert!(claims > 0);
    assert_eq!(
        counter(store.get_bytes(b"guarded").unwrap().as_deref()),
        claims
    );
    assert_eq!(store.get_bytes(b"lock").unwrap(), None);
}

/// What compare-and-set and update write is in the store after a reopen.
fn compare_and_set_and_update_survive_reopen<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    {
        let store = E::open(dir.path());
        assert!(store
            .compare_and_set_bytes(b"created", None, Some(b"1"))
            .unwrap());
        store.set_bytes(b"replaced", b"old").unwrap();
        assert!(store
            .compare_and_set_bytes(b"replaced", Some(b"old"), Some(b"new"))
            .unwrap());
        store.set_bytes(b"removed", b"x").unwrap();
        assert!(store
            .compare_and_set_bytes(b"removed", Some(b"x"), None)
            .unwrap());
        assert!(!store
            .compare_and_set_bytes(b"refused", Some(b"x"), Some(b"y"))
            .unwrap());
        store
            .update_bytes(b"updated", |old| {
                Some((counter(old) + 41).to_string().into_bytes())
            })
            .unwrap();
        store
            .update_bytes(b"updated", |old| {
                Some((counter(old) + 1).to_string().into_bytes())
            })
            .unwrap();
        store.set_bytes(b"update-removed", b"x").unwrap();
        store.update_bytes(b"update-removed", |_| None).unwrap();
    }
    let store = E::open(dir.path());
    assert_eq!(store.get_bytes(b"created").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.get_bytes(b"replaced").unwrap(), Some(b"new".to_vec()));
    assert_eq!(store.get_bytes(b"removed").unwrap(), None);
    assert_eq!(store.get_bytes(b"refused").unwrap(), None);
    assert_eq!(store.get_bytes(b"updated").unwrap(), Some(b"42".to_vec()));
    assert_eq!(store.get_bytes(b"update-removed").unwrap(), None);
    assert_eq!(store.len().unwrap(), 3);
}

// ---- Engine v2: batches, get_many, deadlines, scans ------------------------------------

use kvs::{deadline_after, now_millis, KeyExpiry, ScanFilter, WriteBatch};
use std::collections::BTreeSet;
use std::time::Duration;

/// A deadline an hour away: far enough that no test outlives it.
fn in_an_hour() -> u64 {
    deadline_after(Duration::from_secs(3600))
}

/// Waits until the clock has passed `deadline` (waiting on the clock, not timing anything).
fn wait_past(deadline: u64) {
    while now_millis() <= deadline {
        thread::sleep(Duration::from_millis(5));
    }
}

fn batch_applies_in_order_and_the_later_op_wins<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    {
        let store = E::open(dir.path());
        store.set(s("a"), s("old")).unwrap();
        store.set(s("b"), s("old")).unwrap();
        let mut batch = WriteBatch::new();
        batch
            .set(b"x", b"1")
            .set(b"a", b"new")
            .remove(b"b")
            .remove(b"never-set")
            .set(b"x", b"3")
            .set(b"gone", b"soon")
            .remove(b"gone")
            .remove(b"back")
            .set(b"back", b"again");
        store.apply_batch(&batch).unwrap();
        assert_eq!(store.get(s("x")).unwrap(), Some(s("3")));
        assert_eq!(store.get(s("a")).unwrap(), Some(s("new")));
        assert_eq!(store.get(s("b")).unwrap(), None);
        assert_eq!(store.get(s("gone")).unwrap(), None);
        assert_eq!(store.get(s("back")).unwrap(), Some(s("again")));
        assert_eq!(store.get(s("never-set")).unwrap(), None);
        assert_eq!(store.len().unwrap(), 3);
    }
    let store = E::open(dir.path());
    assert_eq!(store.get(s("x")).unwrap(), Some(s("3")));
    assert_eq!(store.get(s("a")).unwrap(), Some(s("new")));
    assert_eq!(store.get(s("b")).unwrap(), None);
    assert_eq!(store.get(s("back")).unwrap(), Some(s("again")));
    assert_eq!(store.len().unwrap(), 3);
}

fn an_empty_batch_or_one_of_missing_removes_writes_nothing<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("k"), s("v")).unwrap();
    store.apply_batch(&WriteBatch::new()).unwrap();
    let mut removes = WriteBatch::new();
    removes.remove(b"missing").remove(b"also-missing");
    store.apply_batch(&removes).unwrap();
    assert_eq!(store.len().unwrap(), 1);
    assert_eq!(store.get(s("k")).unwrap(), Some(s("v")));
    assert_eq!(store.keys().unwrap(), vec![b"k".to_vec()]);
}

fn batch_sets_carry_deadlines<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let later = in_an_hour();
    store
        .set_with_deadline_bytes(b"cleared", b"v", later)
        .unwrap();
    store.set(s("doomed"), s("v")).unwrap();
    let mut batch = WriteBatch::new();
    batch
        .set_with_deadline(b"expiring", b"e", later)
        .set(b"cleared", b"plain")
        .set_with_deadline(b"doomed", b"x", 1)
        .set_with_deadline(b"born-dead", b"x", now_millis() - 1);
    store.apply_batch(&batch).unwrap();
    assert_eq!(
        store.expiry_bytes(b"expiring").unwrap(),
        KeyExpiry::At(later)
    );
    assert_eq!(store.get(s("expiring")).unwrap(), Some(s("e")));
    assert_eq!(store.expiry_bytes(b"cleared").unwrap(), KeyExpiry::Never);
    assert_eq!(store.get(s("cleared")).unwrap(), Some(s("plain")));
    assert_eq!(store.expiry_bytes(b"doomed").unwrap(), KeyExpiry::Missing);
    assert_eq!(store.get(s("doomed")).unwrap(), None);
    assert_eq!(store.get(s("born-dead")).unwrap(), None);
    assert_eq!(store.len().unwrap(), 2);
}

fn get_many_reads_every_key_in_order<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("a"), s("1")).unwrap();
    store.set(s("c"), s("3")).unwrap();
    store.set_bytes(b"bin\xff", b"\x00").unwrap();
    assert_eq!(
        store
            .get_many_bytes(&[b"c", b"missing", b"a", b"bin\xff", b"a"])
            .unwrap(),
        vec![
            Some(b"3".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"\x00".to_vec()),
            Some(b"1".to_vec())
        ]
    );
    assert_eq!(
        store.get_many_bytes(&[]).unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
}

/// `read_bytes` hands its function what `get_bytes` returns, once: set, overwritten, missing,
/// removed, expired, empty and large values alike.
fn read_bytes_sees_what_get_bytes_returns<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let large = vec![7u8; 3 << 20];
    store.set_bytes(b"a", b"first").unwrap();
    store.set_bytes(b"a", b"second").unwrap();
    store.set_bytes(b"empty", b"").unwrap();
    store.set_bytes(b"large", &large).unwrap();
    store.set_bytes(b"gone", b"x").unwrap();
    store.remove_bytes(b"gone").unwrap();
    let deadline = kvs::now_millis() + 50;
    store
        .set_with_deadline_bytes(b"expiring", b"soon", deadline)
        .unwrap();
    wait_past(deadline);
    for key in [
        &b"a"[..],
        b"empty",
        b"large",
        b"gone",
        b"missing",
        b"expiring",
    ] {
        let mut calls = Vec::new();
        store
            .read_bytes(key, &mut |value| calls.push(value.map(<[u8]>::to_vec)))
            .unwrap();
        assert_eq!(
            calls,
            vec![store.get_bytes(key).unwrap()],
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    let mut seen = None;
    store
        .read_bytes(b"a", &mut |value| seen = value.map(<[u8]>::to_vec))
        .unwrap();
    assert_eq!(seen.as_deref(), Some(&b"second"[..]));
}

/// A writer applies batches that set ten keys to the same number, counting up; readers must
/// never see two numbers at once (`get_many_bytes`), nor a key go back to an older number
/// once any key of the batch showed the newer one (`get_bytes`).
fn readers_see_a_batch_whole<E: Fixture>() {
    const KEYS: usize = 10;
    const BATCHES: u64 = 150;
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("k{i}").into_bytes()).collect();
    let mut first = WriteBatch::new();
    for key in &keys {
        first.set(key, b"0");
    }
    store.apply_batch(&first).unwrap();
    let number = |v: &Option<Vec<u8>>| -> u64 {
        std::str::from_utf8(v.as_deref().expect("a batch key is never missing"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (store, keys, done) = (store.clone(), keys.clone(), Arc::clone(&done));
            thread::spawn(move || {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || reads == 0 {
                    reads += 1;
                    if reader == 0 {
                        let values = store.get_many_bytes(&refs).unwrap();
                        let seen: BTreeSet<u64> = values.iter().map(number).collect();
                        assert_eq!(seen.len(), 1, "get_many saw a part of a batch: {seen:?}");
                    } else {
                        // The last key first: once it shows n, every key shows n or later.
                        let last = number(&store.get_bytes(&keys[KEYS - 1]).unwrap());
                        for key in &keys[..KEYS - 1] {
                            let v = number(&store.get_bytes(key).unwrap());
                            assert!(v >= last, "a read saw {v} after another read saw {last}");
                        }
                    }
                }
                reads
            })
        })
        .collect();
    for n in 1..=BATCHES {
        let mut batch = WriteBatch::new();
        let value = n.to_string();
        for key in &keys {
            batch.set(key, value.as_bytes());
        }
        store.apply_batch(&batch).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let last: BTreeSet<u64> = store
        .get_many_bytes(&refs)
        .unwrap()
        .iter()
        .map(number)
        .collect();
    assert_eq!(last, BTreeSet::from([BATCHES]));
}

fn deadlines_follow_set_expire_and_persist<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let later = in_an_hour();
    store.set_with_deadline_bytes(b"k", b"v", later).unwrap();
    assert_eq!(store.get(s("k")).unwrap(), Some(s("v")));
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::At(later));
    let ttl = store.expiry_bytes(b"k").unwrap().ttl_millis(now_millis());
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");

    // expire_at on a key that exists, and one that does not.
    assert!(store.expire_at_bytes(b"k", later + 1000).unwrap());
    assert_eq!(
        store.expiry_bytes(b"k").unwrap(),
        KeyExpiry::At(later + 1000)
    );
    assert_eq!(
        store.get(s("k")).unwrap(),
        Some(s("v")),
        "expire_at keeps the value"
    );
    assert!(!store.expire_at_bytes(b"missing", later).unwrap());
    assert_eq!(store.expiry_bytes(b"missing").unwrap(), KeyExpiry::Missing);

    // persist: once true, then false; false for a key without deadline or missing.
    assert!(store.persist_bytes(b"k").unwrap());
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::Never);
    assert!(!store.persist_bytes(b"k").unwrap());
    assert!(!store.persist_bytes(b"missing").unwrap());
    assert_eq!(store.get(s("k")).unwrap(), Some(s("v")));

    // A deadline that has passed removes the key, through either method.
    store.set_with_deadline_bytes(b"k", b"v2", 1).unwrap();
    assert_eq!(store.get(s("k")).unwrap(), None);
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::Missing);
    store.set(s("j"), s("v")).unwrap();
    assert!(store.expire_at_bytes(b"j", now_millis() - 1).unwrap());
    assert_eq!(store.get(s("j")).unwrap(), None);
    assert!(!store.contains_key(b"j").unwrap());
    assert_eq!(store.len().unwrap(), 0);
}

/// A key whose deadline passes is gone for every read at once, whether or not anything has
/// removed it yet, and its deadline leaves no trace on a key set again.
fn a_passed_deadline_hides_the_key_from_every_read<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("stays"), s("v")).unwrap();
    // A second away: the sets below land before it even on a loaded machine, so that the keys
    // expire while they are set.
    let soon = now_millis() + 1000;
    store
        .set_with_deadline_bytes(b"p:dies", b"old", soon)
        .unwrap();
    store
        .set_with_deadline_bytes(b"p:cas", b"old", soon)
        .unwrap();
    store
        .set_with_deadline_bytes(b"p:update", b"old", soon)
        .unwrap();
    store
        .set_with_deadline_bytes(b"p:remove", b"old", soon)
        .unwrap();
    store
        .set_with_deadline_bytes(b"p:batch", b"old", soon)
        .unwrap();
    wait_past(soon);
    assert_eq!(store.get(s("p:dies")).unwrap(), None);
    assert!(!store.contains_key(b"p:dies").unwrap());
    assert_eq!(store.expiry_bytes(b"p:dies").unwrap(), KeyExpiry::Missing);
    assert_eq!(store.len().unwrap(), 1);
    assert_eq!(store.keys().unwrap(), vec![b"stays".to_vec()]);
    assert_eq!(
        store.get_many_bytes(&[b"p:dies", b"stays"]).unwrap(),
        vec![None, Some(b"v".to_vec())]
    );
    assert_eq!(
        scan_walk(&store, &ScanFilter::prefix(b"p:"), 3),
        BTreeSet::new()
    );
    assert!(!store.expire_at_bytes(b"p:dies", in_an_hour()).unwrap());
    assert!(!store.persist_bytes(b"p:dies").unwrap());
    assert!(matches!(
        store.remove(s("p:remove")),
        Err(KvsError::KeyNotFound)
    ));

    // Compare-and-set and update see the key as not set; what they create has no deadline.
    assert!(!store
        .compare_and_set_bytes(b"p:cas", Some(b"old"), Some(b"new"))
        .unwrap());
    assert!(store
        .compare_and_set_bytes(b"p:cas", None, Some(b"new"))
        .unwrap());
    assert_eq!(store.expiry_bytes(b"p:cas").unwrap(), KeyExpiry::Never);
    let mut seen = Vec::new();
    let new = store
        .update_bytes(b"p:update", |old| {
            seen.push(old.map(<[u8]>::to_vec));
            Some(b"fresh".to_vec())
        })
        .unwrap();
    assert_eq!(new, Some(b"fresh".to_vec()));
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
    assert_eq!(store.expiry_bytes(b"p:update").unwrap(), KeyExpiry::Never);
    let mut batch = WriteBatch::new();
    batch.remove(b"p:batch");
    store.apply_batch(&batch).unwrap();
    assert_eq!(store.get(s("p:batch")).unwrap(), None);
    assert_eq!(store.len().unwrap(), 3);
}

fn compare_and_set_and_update_keep_the_deadline_and_set_clears_it<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let later = in_an_hour();
    store.set_with_deadline_bytes(b"k", b"1", later).unwrap();
    assert!(store
        .compare_and_set_bytes(b"k", Some(b"1"), Some(b"2"))
        .unwrap());
    assert_eq!(store.get(s("k")).unwrap(), Some(s("2")));
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::At(later));
    store.update_bytes(b"k", |_| Some(b"3".to_vec())).unwrap();
    assert_eq!(store.get(s("k")).unwrap(), Some(s("3")));
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::At(later));
    store.set(s("k"), s("4")).unwrap();
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::Never);

    // Keys created by compare-and-set or update have no deadline.
    assert!(store.compare_and_set_bytes(b"c", None, Some(b"v")).unwrap());
    store.update_bytes(b"u", |_| Some(b"v".to_vec())).unwrap();
    assert_eq!(store.expiry_bytes(b"c").unwrap(), KeyExpiry::Never);
    assert_eq!(store.expiry_bytes(b"u").unwrap(), KeyExpiry::Never);

    // A removal through compare-and-set takes the deadline with it.
    store.set_with_deadline_bytes(b"r", b"v", later).unwrap();
    assert!(store.compare_and_set_bytes(b"r", Some(b"v"), None).unwrap());
    store.set(s("r"), s("again")).unwrap();
    assert_eq!(store.expiry_bytes(b"r").unwrap(), KeyExpiry::Never);
}

fn deadlines_survive_reopen<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let later = in_an_hour();
    let soon = now_millis() + 1000;
    {
        let store = E::open(dir.path());
        store
            .set_with_deadline_bytes(b"later", b"v", later)
            .unwrap();
        store.set_with_deadline_bytes(b"soon", b"v", soon).unwrap();
        let mut batch = WriteBatch::new();
        batch.set_with_deadline(b"batched", b"b", later + 1);
        store.apply_batch(&batch).unwrap();
        store
            .set_with_deadline_bytes(b"persisted", b"v", later)
            .unwrap();
        assert!(store.persist_bytes(b"persisted").unwrap());
    }
    wait_past(soon);
    let store = E::open(dir.path());
    assert_eq!(store.expiry_bytes(b"later").unwrap(), KeyExpiry::At(later));
    assert_eq!(
        store.expiry_bytes(b"batched").unwrap(),
        KeyExpiry::At(later + 1)
    );
    assert_eq!(store.expiry_bytes(b"persisted").unwrap(), KeyExpiry::Never);
    assert_eq!(
        store.get(s("soon")).unwrap(),
        None,
        "expired while the store was closed"
    );
    assert_eq!(store.len().unwrap(), 3);
}

/// Every key of a whole walk with `filter`, `count` at a time. Fails if the walk does not end
/// within a bound far above what N keys take.
fn scan_walk<E: KvsEngine>(store: &E, filter: &ScanFilter, count: usize) -> BTreeSet<Vec<u8>> {
    let limit = 100 + 10 * store.len().unwrap();
    let mut keys = BTreeSet::new();
    let mut cursor = 0;
    for _ in 0..limit {
        let page = store.scan_bytes(cursor, count, filter).unwrap();
        for key in page.keys {
            assert!(filter.matches(&key), "{key:?} does not pass {filter:?}");
            keys.insert(key);
        }
        cursor = page.cursor;
        if cursor == 0 {
            return keys;
        }
    }
    panic!("a walk did not end within {limit} calls");
}

fn scans_filter_by_prefix_and_pattern<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let mut expected_prefix = BTreeSet::new();
    let mut expected_names = BTreeSet::new();
    for i in 0..40 {
        let name = format!("user:{i}:name").into_bytes();
        store.set_bytes(&name, b"n").unwrap();
        store
            .set_bytes(format!("user:{i}:mail").as_bytes(), b"m")
            .unwrap();
        store
            .set_bytes(format!("group:{i}").as_bytes(), b"g")
            .unwrap();
        expected_prefix.insert(format!("user:{i}:mail").into_bytes());
        expected_prefix.insert(name.clone());
        expected_names.insert(name);
    }
    store
        .set_bytes(b"user", b"not under the prefix user:")
        .unwrap();
    for count in [1, 7, 1000] {
        assert_eq!(
            scan_walk(&store, &ScanFilter::prefix(b"user:"), count),
            expected_prefix
        );
        assert_eq!(
            scan_walk(&store, &ScanFilter::pattern(b"user:*:name"), count),
            expected_names
        );
        let both = ScanFilter {
            prefix: b"user:1".to_vec(),
            pattern: Some(b"*:nam?".to_vec()),
        };
        let ones: BTreeSet<Vec<u8>> = expected_names
            .iter()
            .filter(|k| k.starts_with(b"user:1"))
            .cloned()
            .collect();
        assert_eq!(scan_walk(&store, &both, count), ones);
        assert_eq!(scan_walk(&store, &ScanFilter::all(), count).len(), 121);
        assert_eq!(
            scan_walk(&store, &ScanFilter::prefix(b"nothing"), count),
            BTreeSet::new()
        );
    }
}

fn a_scan_of_an_empty_store_ends_at_once<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let page = store.scan_bytes(0, 10, &ScanFilter::all()).unwrap();
    assert_eq!(page.cursor, 0);
    assert!(page.keys.is_empty());
}

/// A walk of N keys ends, and returns each of them, with a small `count` as a large one.
fn a_walk_of_n_keys_returns_each_and_ends<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let all: BTreeSet<Vec<u8>> = (0..300).map(|i| format!("key{i}").into_bytes()).collect();
    let pairs: Vec<(&[u8], &[u8])> = all.iter().map(|k| (k.as_slice(), &b"v"[..])).collect();
    store.set_many_bytes(&pairs).unwrap();
    for count in [1, 10, 299, 300, 301] {
        assert_eq!(
            scan_walk(&store, &ScanFilter::all(), count),
            all,
            "count {count}"
        );
    }
}

/// Keys set for the whole walk are all returned while other keys are set and removed.
fn a_walk_returns_every_stable_key_while_writes_go_on<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    let stable: BTreeSet<Vec<u8>> = (0..400).map(|i| format!("s{i:04}").into_bytes()).collect();
    for key in &stable {
        store.set_bytes(key, b"v").unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut i = 0u32;
            // Bounded, and stopped as soon as the walk is over.
            while i < 20_000 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Interleaved with the stable keys in key order.
                let key = format!("s{:04}-tmp", i % 400);
                store.set_bytes(key.as_bytes(), b"t").unwrap();
                if i.is_multiple_of(2) {
                    store.remove_bytes(key.as_bytes()).unwrap();
                }
                i += 1;
            }
        })
    };
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    let mut calls = 0;
    loop {
        let page = store.scan_bytes(cursor, 5, &ScanFilter::all()).unwrap();
        seen.extend(page.keys);
        cursor = page.cursor;
        calls += 1;
        assert!(calls < 100_000, "the walk did not end");
        if cursor == 0 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let missing: Vec<_> = stable.difference(&seen).collect();
    assert!(missing.is_empty(), "keys never returned: {missing:?}");
}

/// A cursor the engine did not hand out is refused as an invalid argument (an engine that
/// cannot tell may walk from somewhere instead: then it returns real keys only).
fn an_unknown_cursor_is_an_invalid_argument_or_a_walk<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set(s("a"), s("1")).unwrap();
    match store.scan_bytes(0x5eed_dead_beef, 10, &ScanFilter::all()) {
        Err(KvsError::InvalidArgument(message)) => {
            assert!(message.contains("cursor"), "{message}")
        }
        Err(e) => panic!("expected an invalid argument, got {e:?}"),
        Ok(page) => assert!(page.keys.iter().all(|k| k == b"a"), "{page:?}"),
    }
}

/// Threads moving units between two keys inside transactions (read both, write both) lose
/// nothing and never see a half-done move: the sum stays constant, and counters incremented
/// through transactions give exact totals.
fn transactions_are_atomic_and_isolated<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set_bytes(b"left", b"1000").unwrap();
    store.set_bytes(b"right", b"1000").unwrap();
    on_threads(&store, |store: &E, t, i| {
        let (from, to): (&[u8], &[u8]) = if (t + i as usize).is_multiple_of(2) {
            (b"left", b"right")
        } else {
            (b"right", b"left")
        };
        store
            .transaction(|tx| {
                let a = counter(tx.get(from)?.as_deref());
                let b = counter(tx.get(to)?.as_deref());
                assert_eq!(a + b, 2000, "a transaction saw a half-done move");
                if a > 0 {
                    tx.set(from, (a - 1).to_string().as_bytes(), None)?;
                    tx.set(to, (b + 1).to_string().as_bytes(), None)?;
                }
                let n = counter(tx.get(b"moves")?.as_deref());
                tx.set(b"moves", (n + 1).to_string().as_bytes(), None)?;
                Ok(())
            })
            .unwrap();
    });
    let left = counter(store.get_bytes(b"left").unwrap().as_deref());
    let right = counter(store.get_bytes(b"right").unwrap().as_deref());
    assert_eq!(left + right, 2000);
    let total = COUNTER_THREADS as u64 * COUNTER_STEPS;
    assert_eq!(
        counter(store.get_bytes(b"moves").unwrap().as_deref()),
        total
    );
}

/// A transaction reads its own writes, an error from its function writes nothing, removes
/// say whether the key was set, and deadlines are read and written through it.
fn a_transaction_reads_its_writes_and_an_error_writes_nothing<E: Fixture>() {
    let dir = TempDir::new().unwrap();
    let store = E::open(dir.path());
    store.set_bytes(b"a", b"1").unwrap();
    let later = in_an_hour();
    let seen = store
        .transaction(|tx| {
            assert_eq!(tx.get(b"a")?, Some(b"1".to_vec()));
            tx.set(b"a", b"2", Some(later))?;
            assert_eq!(tx.get(b"a")?, Some(b"2".to_vec()));
            assert_eq!(tx.expiry(b"a")?, KeyExpiry::At(later));
            assert!(!tx.remove(b"missing")?);
            tx.set(b"b", b"x", None)?;
            assert!(tx.remove(b"b")?);
            tx.get(b"b")
        })
        .unwrap();
    assert_eq!(seen, None);
    assert_eq!(store.get_bytes(b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.expiry_bytes(b"a").unwrap(), KeyExpiry::At(later));
    assert_eq!(store.get_bytes(b"b").unwrap(), None);

    let failed = store.transaction(|tx| {
        tx.set(b"a", b"3", None)?;
        tx.set(b"c", b"3", None)?;
        Err::<(), _>(KvsError::InvalidArgument("changed my mind".into()))
    });
    assert!(matches!(failed, Err(KvsError::InvalidArgument(m)) if m == "changed my mind"));
    assert_eq!(store.get_bytes(b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.get_bytes(b"c").unwrap(), None);
    drop(store);
    let store = E::open(dir.path());
    assert_eq!(
        store.get_bytes(b"a").unwrap(),
        Some(b"2".to_vec()),
        "committed for good"
    );
    assert_eq!(store.expiry_bytes(b"a").unwrap(), KeyExpiry::At(later));
}

macro_rules! contract_suite {
    ($module:ident, $engine:ty) => {
        mod $module {
            use super::*;
            #[test]
            fn get_returns_what_set_stored() {
                super::get_returns_what_set_stored::<$engine>()
            }
            #[test]
            fn set_overwrites() {
                super::set_overwrites::<$engine>()
            }
            #[test]
            fn missing_key_gets_none() {
                super::missing_key_gets_none::<$engine>()
            }
            #[test]
            fn removing_missing_key_is_key_not_found() {
                super::removing_missing_key_is_key_not_found::<$engine>()
            }
            #[test]
            fn remove_deletes_the_key() {
                super::remove_deletes_the_key::<$engine>()
            }
            #[test]
            fn data_survives_reopen() {
                super::data_survives_reopen::<$engine>()
            }
            #[test]
            fn binary_keys_and_values_round_trip() {
                super::binary_keys_and_values_round_trip::<$engine>()
            }
            #[test]
            fn non_utf8_value_through_string_api_is_an_error() {
                super::non_utf8_value_through_string_api_is_an_error::<$engine>()
            }
            #[test]
            fn large_values_round_trip() {
                super::large_values_round_trip::<$engine>()
            }
            #[test]
            fn keys_lists_every_live_key() {
                super::keys_lists_every_live_key::<$engine>()
            }
            #[test]
            fn clones_share_one_store_across_threads() {
                super::clones_share_one_store_across_threads::<$engine>()
            }
            #[test]
            fn set_many_sets_every_pair_in_order() {
                super::set_many_sets_every_pair_in_order::<$engine>()
            }
            #[test]
            fn flush_succeeds_and_keeps_data() {
                super::flush_succeeds_and_keeps_data::<$engine>()
            }
            #[test]
            fn compare_and_set_follows_its_table() {
                super::compare_and_set_follows_its_table::<$engine>()
            }
            #[test]
            fn update_stores_what_f_returns() {
                super::update_stores_what_f_returns::<$engine>()
            }
            #[test]
            fn concurrent_updates_give_exact_totals() {
                super::concurrent_updates_give_exact_totals::<$engine>()
            }
            #[test]
            fn concurrent_compare_and_set_loops_give_exact_totals() {
                super::concurrent_compare_and_set_loops_give_exact_totals::<$engine>()
            }
            #[test]
            fn compare_and_set_gives_mutual_exclusion() {
                super::compare_and_set_gives_mutual_exclusion::<$engine>()
            }
            #[test]
            fn compare_and_set_and_update_survive_reopen() {
                super::compare_and_set_and_update_survive_reopen::<$engine>()
            }
            #[test]
            fn batch_applies_in_order_and_the_later_op_wins() {
                super::batch_applies_in_order_and_the_later_op_wins::<$engine>()
            }
            #[test]
            fn an_empty_batch_or_one_of_missing_removes_writes_nothing() {
                super::an_empty_batch_or_one_of_missing_removes_writes_nothing::<$engine>()
            }
            #[test]
            fn batch_sets_carry_deadlines() {
                super::batch_sets_carry_deadlines::<$engine>()
            }
            #[test]
            fn get_many_reads_every_key_in_order() {
                super::get_many_reads_every_key_in_order::<$engine>()
            }
            #[test]
            fn read_bytes_sees_what_get_bytes_returns() {
                super::read_bytes_sees_what_get_bytes_returns::<$engine>()
            }
            #[test]
            fn readers_see_a_batch_whole() {
                super::readers_see_a_batch_whole::<$engine>()
            }
            #[test]
            fn deadlines_follow_set_expire_and_persist() {
                super::deadlines_follow_set_expire_and_persist::<$engine>()
            }
            #[test]
            fn a_passed_deadline_hides_the_key_from_every_read() {
                super::a_passed_deadline_hides_the_key_from_every_read::<$engine>()
            }
            #[test]
            fn compare_and_set_and_update_keep_the_deadline_and_set_clears_it() {
                super::compare_and_set_and_update_keep_the_deadline_and_set_clears_it::<$engine>()
            }
            #[test]
            fn deadlines_survive_reopen() {
                super::deadlines_survive_reopen::<$engine>()
            }
            #[test]
            fn scans_filter_by_prefix_and_pattern() {
                super::scans_filter_by_prefix_and_pattern::<$engine>()
            }
            #[test]
            fn a_scan_of_an_empty_store_ends_at_once() {
                super::a_scan_of_an_empty_store_ends_at_once::<$engine>()
            }
            #[test]
            fn a_walk_of_n_keys_returns_each_and_ends() {
                super::a_walk_of_n_keys_returns_each_and_ends::<$engine>()
            }
            #[test]
            fn a_walk_returns_every_stable_key_while_writes_go_on() {
                super::a_walk_returns_every_stable_key_while_writes_go_on::<$engine>()
            }
            #[test]
            fn an_unknown_cursor_is_an_invalid_argument_or_a_walk() {
                super::an_unknown_cursor_is_an_invalid_argument_or_a_walk::<$engine>()
            }
            #[test]
            fn transactions_are_atomic_and_isolated() {
                super::transactions_are_atomic_and_isolated::<$engine>()
            }
            #[test]
            fn a_transaction_reads_its_writes_and_an_error_writes_nothing() {
                super::a_transaction_reads_its_writes_and_an_error_writes_nothing::<$engine>()
            }
        }
    };
}

contract_suite!(kv_store, KvStore);
contract_suite!(sled_engine, SledKvsEngine);
contract_suite!(any_engine, AnyEngine);

// ---- Opening a data directory by engine name -------------------------------------------

#[test]
fn open_by_name_records_the_engine_and_refuses_a_mismatch() {
    for (first, other) in [
        (EngineKind::Kvs, EngineKind::Sled),
        (EngineKind::Sled, EngineKind::Kvs),
    ] {
        let dir = TempDir::new().unwrap();
        {
            let store = AnyEngine::open(dir.path(), Some(first)).unwrap();
            store.set(s("k"), s("v")).unwrap();
        }
        let recorded = std::fs::read_to_string(dir.path().join("engine")).unwrap();
        assert_eq!(recorded.trim(), first.name());

        let before = list_dir(dir.path());
        match AnyEngine::open(dir.path(), Some(other)) {
            Err(KvsError::EngineMismatch {
                recorded,
                requested,
                ..
            }) => {
                assert_eq!(recorded, first.name());
                assert_eq!(requested, other.name());
            }
            Err(e) => panic!("expected EngineMismatch, got {e}"),
            Ok(_) => panic!("expected EngineMismatch, got a store"),
        }
        assert_eq!(
            list_dir(dir.path()),
            before,
            "a refused open touched the directory"
        );

        // Without a name, the recorded engine is used and the data is there.
        let store = AnyEngine::open(dir.path(), None).unwrap();
        assert_eq!(store.kind(), first);
        assert_eq!(store.get(s("k")).unwrap(), Some(s("v")));
    }
}

#[test]
fn kv_store_open_refuses_a_sled_directory() {
    let dir = TempDir::new().unwrap();
    drop(AnyEngine::open(dir.path(), Some(EngineKind::Sled)).unwrap());
    assert!(matches!(
        KvStore::open(dir.path()),
        Err(KvsError::EngineMismatch { .. })
    ));
}

#[test]
fn new_directory_defaults_to_the_kvs_engine() {
    let dir = TempDir::new().unwrap();
    let store = AnyEngine::open(dir.path().join("fresh"), None).unwrap();
    assert_eq!(store.kind(), EngineKind::Kvs);
}

#[test]
fn unknown_engine_name_is_rejected() {
    assert!(matches!(
        "leveldb".parse::<EngineKind>(),
        Err(KvsError::UnknownEngine(name)) if name == "leveldb"
    ));
    assert_eq!("sled".parse::<EngineKind>().unwrap(), EngineKind::Sled);
}

#[test]
fn opening_a_regular_file_is_an_error() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"not a directory").unwrap();
    assert!(KvStore::open(&file).is_err());
    assert!(AnyEngine::open(&file, None).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn store_reopens_as_soon_as_the_last_clone_is_dropped_on_another_thread() {
    for kind in [EngineKind::Kvs, EngineKind::Sled] {
        let dir = TempDir::new().unwrap();
        for round in 0..5 {
            let store = AnyEngine::open(dir.path(), Some(kind)).unwrap();
            store.set(format!("round{round}"), s("v")).unwrap();
            let clones: Vec<_> = (0..4).map(|_| store.clone()).collect();
            drop(store);
            // The last clones go away on other threads while this thread reopens.
            let droppers: Vec<_> = clones
                .into_iter()
                .map(|c| thread::spawn(move || drop(c)))
                .collect();
            let reopened = AnyEngine::open(dir.path(), Some(kind)).unwrap();
            assert_eq!(reopened.get(format!("round{round}")).unwrap(), Some(s("v")));
            for d in droppers {
                d.join().unwrap();
            }
        }
    }
}

#[test]
fn a_second_open_handle_in_the_same_process_is_refused() {
    let dir = TempDir::new().unwrap();
    let _first = kvs::KvStore::open(dir.path()).unwrap();
    let second = kvs::KvStore::open_with(
        dir.path(),
        kvs::KvStoreOptions::default().lock_wait(std::time::Duration::from_millis(50)),
    );
    assert!(matches!(second, Err(KvsError::Locked { .. })));
}

fn list_dir(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut entries: Vec<(String, u64)> = walk(dir)
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p.strip_prefix(dir).unwrap().display().to_string(), len)
        })
        .collect();
    entries.sort();
    entries
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
