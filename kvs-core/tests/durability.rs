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

fn log_len(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn durable_store_extends_its_file_ahead_and_cuts_it_back_on_close() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), durable()).unwrap();
    for i in 0..20 {
        store.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    let logical = store.disk_stats().total_bytes;
    assert!(logical < 4096, "{logical}");
    assert!(log_len(dir.path()) >= 1 << 20, "not extended ahead");
    drop(store);
    assert_eq!(log_len(dir.path()), logical, "not cut back on close");
}

#[test]
fn a_crash_with_the_file_extended_ahead_reopens_cleanly_even_in_strict_mode() {
    // Copying the files of an open store is what a crash leaves on disk: records, then the
    // zeros the file was extended by.
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), durable()).unwrap();
    for i in 0..100 {
        store.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    store.remove("k3".into()).unwrap();
    let crashed = TempDir::new().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name != "LOCK" {
            std::fs::copy(&path, crashed.path().join(name)).unwrap();
        }
    }
    assert!(log_len(crashed.path()) >= 1 << 20);
    let reopened = KvStore::open_with(
        crashed.path(),
        durable().recovery(kvs::RecoveryMode::Strict),
    )
    .unwrap();
    for i in 0..100 {
        let expected = (i != 3).then(|| format!("v{i}"));
        assert_eq!(reopened.get(format!("k{i}")).unwrap(), expected);
    }
    assert!(log_len(crashed.path()) < 8192, "zero tail not cut off");
    // And it goes on taking durable writes.
    reopened.set("after".into(), "crash".into()).unwrap();
    drop(reopened);
    let again = KvStore::open(crashed.path()).unwrap();
    assert_eq!(again.get("after".into()).unwrap(), Some("crash".into()));
}

#[test]
fn every_durable_write_is_covered_by_exactly_one_counted_sync() {
    // One writer: each write waits for a sync of its own, so there are as many syncs as
    // writes. Eight writers: the counts still add up (every write counted once), and the
    // mean group size is printed (it depends on the disk and the scheduler).
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), durable()).unwrap();
    for i in 0..20 {
        store.set(format!("one{i}"), "v".into()).unwrap();
    }
    let one = store.disk_stats();
    assert_eq!((one.syncs, one.synced_writes), (20, 20));

    let threads = 8;
    let per_thread = 50;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    store.set(format!("t{t}-{i}"), "v".into()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let eight = store.disk_stats();
    let writes = (threads * per_thread) as u64;
    assert_eq!(eight.synced_writes, 20 + writes);
    let syncs = eight.syncs - one.syncs;
    assert!(
        (1..=writes).contains(&syncs),
        "{syncs} syncs for {writes} writes"
    );
    println!(
        "8 writers: {writes} writes in {syncs} syncs, {:.1} writes per sync",
        writes as f64 / syncs as f64
    );

    // A batch is one write; with `SyncPolicy::Os` nothing is counted.
    store
        .set_many_bytes(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        .unwrap();
    assert_eq!(store.disk_stats().synced_writes, 20 + writes + 1);
    drop(store);
    let os = KvStore::open(dir.path()).unwrap();
    os.set("os".into(), "v".into()).unwrap();
    let stats = os.disk_stats();
    assert_eq!((stats.syncs, stats.synced_writes), (0, 0));
}
