//! `KvStore` cursor scans and multi-key reads, with real threads writing meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvs::{KvStore, KvsEngine, ScanFilter};

fn walk(store: &KvStore, count: usize, filter: &ScanFilter) -> Vec<Vec<u8>> {
    let mut cursor = 0;
    let mut keys = Vec::new();
    loop {
        let page = store.scan_bytes(cursor, count, filter).unwrap();
        keys.extend(page.keys);
        if page.cursor == 0 {
            return keys;
        }
        cursor = page.cursor;
    }
}

#[test]
fn a_walk_while_writers_go_on_returns_every_key_present_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    for i in 0..20_000u32 {
        store
            .set_bytes(format!("stay-{i:05}").as_bytes(), b"v")
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0u64;
                // At least some writes land during the walk, however the threads are scheduled.
                while !stop.load(Ordering::Relaxed) || i < 20_000 {
                    let key = format!("churn-{t}-{i}");
                    store.set_bytes(key.as_bytes(), b"x").unwrap();
                    if i.is_multiple_of(2) {
                        store.remove_bytes(key.as_bytes()).unwrap();
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let seen: HashSet<Vec<u8>> = walk(&store, 64, &ScanFilter::all()).into_iter().collect();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    for i in 0..20_000u32 {
        assert!(
            seen.contains(format!("stay-{i:05}").as_bytes()),
            "stay-{i:05} was set for the whole walk and not returned"
        );
    }
}

#[test]
fn filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    for i in 0..1_000u32 {
        store
            .set_bytes(format!("user:{i}:name").as_bytes(), b"n")
            .unwrap();
        store
            .set_bytes(format!("user:{i}:mail").as_bytes(), b"m")
            .unwrap();
    }
    store.set_bytes(b"other", b"o").unwrap();
    let mut names = walk(&store, 10, &ScanFilter::pattern(b"user:*:name"));
    names.sort();
    let mut expected: Vec<Vec<u8>> = (0..1_000u32)
        .map(|i| format!("user:{i}:name").into_bytes())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        walk(&store, 1_000, &ScanFilter::prefix(b"user:")).len(),
        2_000
    );
    assert_eq!(
        walk(&store, 3, &ScanFilter::prefix(b"oth")),
        vec![b"other".to_vec()]
    );
    // A page looks at about `count` keys: never more keys than that in one page.
    let page = store.scan_bytes(0, 5, &ScanFilter::all()).unwrap();
    assert!(page.keys.len() <= 5 && page.cursor != 0);
    // The walk survives a reopen of the store: keys, not values, are walked.
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    assert_eq!(walk(&store, 100, &ScanFilter::all()).len(), 2_001);
}

#[test]
fn get_many_reads_every_key_at_one_instant() {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    assert_eq!(
        store.get_many_bytes(&[b"a", b"b"]).unwrap(),
        vec![None, None]
    );
    store.set_bytes(b"a", b"1").unwrap();
    assert_eq!(
        store.get_many_bytes(&[b"a", b"missing", b"a"]).unwrap(),
        vec![Some(b"1".to_vec()), None, Some(b"1".to_vec())]
    );
    assert_eq!(
        store.get_many_bytes(&[]).unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
}
