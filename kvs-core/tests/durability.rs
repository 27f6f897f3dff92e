//! `SyncPolicy::Always`: every write is on disk before it returns, including when many
//! threads write at once and share fsyncs (group commit).

use std::sync::{Arc, Barrier};
use std::thread;

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError, SyncPolicy};
use tempfile::TempDir;

fn durable() -> KvStoreOptions {
    KvStoreOptions::default().sync(SyncPolicy::Always)
}

#[test]
fn durable_writes_from_many_threads_all_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let store = KvStore::open_with(dir.path(), durable()).unwrap();
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    for i in 0..40 {
                        store.set(format!("t{t}-{i}"), format!("v{i}")).unwrap();
                        if i % 5 == 0 {
                            store.remove(format!("t{t}-{i}")).unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
    let store = KvStore::open(dir.path()).unwrap();
    for t in 0..8 {
        for i in 0..40 {
            let expected = (i % 5 != 0).then(|| format!("v{i}"));
            assert_eq!(store.get(format!("t{t}-{i}")).unwrap(), expected);
        }
    }
}

#[test]
fn durable_writes_survive_file_rotation_and_compaction() {
    let dir = TempDir::new().unwrap();
    let options = durable().max_file_size(4096);
    {
        let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..200 {
            store.set(format!("k{}", i % 50), format!("v{i}")).unwrap();
        }
        store.compact().unwrap();
        for i in 200..260 {
            store.set(format!("k{}", i % 50), format!("v{i}")).unwrap();
        }
    }
    let store = KvStore::open_with(dir.path(), options).unwrap();
    for k in 0..50 {
        let last = (0..260).filter(|i| i % 50 == k).max().unwrap();
        assert_eq!(
            store.get(format!("k{k}")).unwrap(),
            Some(format!("v{last}"))
        );
    }
    assert!(matches!(
        store.remove("missing".into()),
        Err(KvsError::KeyNotFound)
    ));
}
