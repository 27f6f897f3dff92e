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
                Ok(db) => return SledKvsEngine::new(db),
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
