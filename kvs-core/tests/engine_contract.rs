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
