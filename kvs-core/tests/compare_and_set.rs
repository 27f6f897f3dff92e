//! `KvStore`'s compare-and-set and update beyond the engine contract (`engine_contract.rs`):
//! what they write to the log, how often `update_bytes` calls its function, size limits,
//! and the durable sync policy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError, SyncPolicy, MAX_KEY_LEN, MAX_VALUE_LEN};
use tempfile::TempDir;

/// A compare-and-set that does not match appends nothing to the log, nor does one (or an
/// update) that changes nothing: a missing key left missing, a value replaced by itself. One
/// that changes the value appends a record.
#[test]
fn a_compare_and_set_that_changes_nothing_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set_bytes(b"k", b"v").unwrap();
    let before = store.disk_stats().total_bytes;
    assert!(!store
        .compare_and_set_bytes(b"k", Some(b"other"), Some(b"new"))
        .unwrap());
    assert!(!store
        .compare_and_set_bytes(b"k", None, Some(b"new"))
        .unwrap());
    assert!(!store
        .compare_and_set_bytes(b"absent", Some(b"v"), None)
        .unwrap());
    assert!(store.compare_and_set_bytes(b"absent", None, None).unwrap());
    assert_eq!(store.update_bytes(b"absent", |_| None).unwrap(), None);
    assert!(store
        .compare_and_set_bytes(b"k", Some(b"v"), Some(b"v"))
        .unwrap());
    assert_eq!(
        store.update_bytes(b"k", |v| v.map(<[u8]>::to_vec)).unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(store.disk_stats().total_bytes, before);
    assert_eq!(store.get_bytes(b"k").unwrap(), Some(b"v".to_vec()));

    assert!(store
        .compare_and_set_bytes(b"k", Some(b"v"), Some(b"w"))
        .unwrap());
    let after_set = store.disk_stats().total_bytes;
    assert!(after_set > before);
    assert!(store.compare_and_set_bytes(b"k", Some(b"w"), None).unwrap());
    assert!(store.disk_stats().total_bytes > after_set);
}

/// On `KvStore`, `update_bytes` calls its function exactly once per call, even with many
/// threads updating the same key (sled may call it more often; the contract does not pin
/// that).
#[test]
fn update_calls_its_function_once_per_call() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    let (threads, steps) = (8u64, 200u64);
    let calls = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, calls, barrier) = (store.clone(), Arc::clone(&calls), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..steps {
                    store
                        .update_bytes(b"n", |old| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let n: u64 =
                                old.map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                            Some((n + 1).to_string().into_bytes())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), threads * steps);
    assert_eq!(
        store.get_bytes(b"n").unwrap(),
        Some((threads * steps).to_string().into_bytes())
    );
}

/// The function of `update_bytes` may read the store (only writing from it would deadlock).
#[test]
fn update_may_read_the_store_from_its_function() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set_bytes(b"source", b"copied").unwrap();
    let reader = store.clone();
    let new = store
        .update_bytes(b"target", |_| reader.get_bytes(b"source").unwrap())
        .unwrap();
    assert_eq!(new, Some(b"copied".to_vec()));
    assert_eq!(
        store.get_bytes(b"target").unwrap(),
        Some(b"copied".to_vec())
    );
}

/// Keys and new values past the limits are refused as `set` refuses them, and nothing is
/// written; an `expected` value of any size is only compared.
#[test]
fn sizes_are_checked_as_for_set() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set_bytes(b"k", b"v").unwrap();
    let before = store.disk_stats().total_bytes;
    let long_key = vec![b'k'; MAX_KEY_LEN + 1];
    let big = vec![0u8; MAX_VALUE_LEN + 1];
    assert!(matches!(
        store.compare_and_set_bytes(&long_key, None, Some(b"v")),
        Err(KvsError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.compare_and_set_bytes(b"k", Some(b"v"), Some(&big)),
        Err(KvsError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.update_bytes(&long_key, |_| Some(b"v".to_vec())),
        Err(KvsError::InvalidArgument(_))
    ));
    let mut calls = 0;
    let err = store.update_bytes(b"k", |_| {
        calls += 1;
        Some(big.clone())
    });
    assert!(matches!(err, Err(KvsError::InvalidArgument(_))), "{err:?}");
    assert_eq!(calls, 1);
    assert!(!store
        .compare_and_set_bytes(b"k", Some(&big), Some(b"w"))
        .unwrap());
    assert_eq!(store.get_bytes(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.disk_stats().total_bytes, before);
}

/// With `SyncPolicy::Always`, compare-and-set and update go through the group commit as
/// `set` does; concurrent counters still add up, and everything is there after a reopen.
#[test]
fn durable_policy_counters_add_up_and_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let options = || KvStoreOptions::default().sync(SyncPolicy::Always);
    let (threads, steps) = (4u64, 50u64);
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let store = store.clone();
                thread::spawn(move || {
                    for _ in 0..steps {
                        store
                            .update_bytes(b"updated", |old| {
                                let n: u64 = old.map_or(0, |v| {
                                    std::str::from_utf8(v).unwrap().parse().unwrap()
                                });
                                Some((n + 1).to_string().into_bytes())
                            })
                            .unwrap();
                        loop {
                            let old = store.get_bytes(b"swapped").unwrap();
                            let n: u64 = old
                                .as_deref()
                                .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                            let new = (n + 1).to_string();
                            if store
                                .compare_and_set_bytes(
                                    b"swapped",
                                    old.as_deref(),
                                    Some(new.as_bytes()),
                                )
                                .unwrap()
                            {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        store.set_bytes(b"gone", b"x").unwrap();
        assert!(store
            .compare_and_set_bytes(b"gone", Some(b"x"), None)
            .unwrap());
        assert!(store.compare_and_set_bytes(b"gone", None, None).unwrap());
    }
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    let total = (threads * steps).to_string().into_bytes();
    assert_eq!(store.get_bytes(b"updated").unwrap(), Some(total.clone()));
    assert_eq!(store.get_bytes(b"swapped").unwrap(), Some(total));
    assert_eq!(store.get_bytes(b"gone").unwrap(), None);
}
