//! Expiry in `KvStore`: deadlines hide a key from every read once they pass, survive reopen,
//! SIGKILL and compaction, are kept by compare-and-set and update and cleared by set; the
//! sweeper removes expired keys without their being read, and an expired key never comes
//! back.
//!
//! Time: tests give keys deadlines a little in the future and wait (polling the clock) until
//! those pass. No assertion bounds how long anything takes, except where said, with a margin.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kvs::{
    now_millis, KeyExpiry, KvStore, KvStoreOptions, KvsEngine, KvsError, ScanFilter, WriteBatch,
};
use tempfile::TempDir;

/// Far enough ahead never to pass during a test.
fn far() -> u64 {
    now_millis() + 24 * 3_600_000
}

/// Sleeps until the clock has passed `deadline`.
fn wait_past(deadline: u64) {
    while now_millis() <= deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn get(store: &KvStore, key: &str) -> Option<String> {
    store
        .get_bytes(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

fn all_keys(store: &KvStore) -> Vec<Vec<u8>> {
    let mut keys = store.keys().unwrap();
    keys.sort();
    keys
}

fn scanned(store: &KvStore) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store
            .scan_bytes(cursor, 100, &ScanFilter::default())
            .unwrap();
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn every_read_hides_an_expired_key_at_once() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set("plain".into(), "p".into()).unwrap();
    let deadline = now_millis() + 1_500;
    for key in ["e1", "e2", "e3", "e4", "e5"] {
        store
            .set_with_deadline_bytes(key.as_bytes(), b"v", deadline)
            .unwrap();
    }
    // Before the deadline (checked after the read: if the clock had not passed it then, the
    // read must have seen the key).
    let seen = get(&store, "e1");
    if now_millis() < deadline {
        assert_eq!(seen.as_deref(), Some("v"));
        assert_eq!(store.expiry_bytes(b"e1").unwrap(), KeyExpiry::At(deadline));
    }
    wait_past(deadline);
    assert_eq!(get(&store, "e1"), None);
    assert!(!store.contains_key(b"e1").unwrap());
    assert_eq!(store.len().unwrap(), 1);
    assert_eq!(all_keys(&store), vec![b"plain".to_vec()]);
    assert_eq!(scanned(&store), vec![b"plain".to_vec()]);
    assert_eq!(
        store.get_many_bytes(&[b"e1", b"plain"]).unwrap(),
        vec![None, Some(b"p".to_vec())]
    );
    assert_eq!(store.expiry_bytes(b"e1").unwrap(), KeyExpiry::Missing);
    assert!(!store.expire_at_bytes(b"e1", far()).unwrap());
    assert!(!store.persist_bytes(b"e1").unwrap());
    assert!(matches!(
        store.remove_bytes(b"e1"),
        Err(KvsError::KeyNotFound)
    ));
    // Compare-and-set and update see it missing.
    assert!(!store
        .compare_and_set_bytes(b"e2", Some(b"v"), Some(b"w"))
        .unwrap());
    assert!(store
        .compare_and_set_bytes(b"e2", None, Some(b"new"))
        .unwrap());
    assert_eq!(get(&store, "e2").as_deref(), Some("new"));
    // A key created by compare-and-set has no deadline.
    assert_eq!(store.expiry_bytes(b"e2").unwrap(), KeyExpiry::Never);
    let mut seen_by_update = Some(b"not called".to_vec());
    store
        .update_bytes(b"e3", |current| {
            seen_by_update = current.map(<[u8]>::to_vec);
            None
        })
        .unwrap();
    assert_eq!(seen_by_update, None);
    // A batch removing it removes nothing (not an error); one setting it sets it anew.
    let mut batch = WriteBatch::new();
    batch.remove(b"e4").set(b"e5", b"again");
    store.apply_batch(&batch).unwrap();
    assert_eq!(get(&store, "e4"), None);
    assert_eq!(get(&store, "e5").as_deref(), Some("again"));
    assert_eq!(store.expiry_bytes(b"e5").unwrap(), KeyExpiry::Never);
    assert_eq!(store.len().unwrap(), 3);
}

#[test]
fn deadlines_are_kept_by_compare_and_set_and_update_and_cleared_by_set() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    let d = far();
    store.set_with_deadline_bytes(b"k", b"1", d).unwrap();
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::At(d));
    assert!(store
        .compare_and_set_bytes(b"k", Some(b"1"), Some(b"2"))
        .unwrap());
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::At(d));
    store
        .update_bytes(b"k", |v| v.map(|v| [v, b"3"].concat()))
        .unwrap();
    assert_eq!(get(&store, "k").as_deref(), Some("23"));
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::At(d));
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    assert_eq!(
        store.expiry_bytes(b"k").unwrap(),
        KeyExpiry::At(d),
        "after reopen"
    );
    // expire and persist rewrite the record with the new deadline.
    let d2 = d + 1_000;
    assert!(store.expire_at_bytes(b"k", d2).unwrap());
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::At(d2));
    assert!(store.persist_bytes(b"k").unwrap());
    assert!(
        !store.persist_bytes(b"k").unwrap(),
        "no deadline left to remove"
    );
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::Never);
    assert_eq!(get(&store, "k").as_deref(), Some("23"));
    assert!(store.expire_at_bytes(b"k", d2).unwrap());
    store.set("k".into(), "plain".into()).unwrap();
    assert_eq!(
        store.expiry_bytes(b"k").unwrap(),
        KeyExpiry::Never,
        "set clears it"
    );
    assert!(!store.expire_at_bytes(b"missing", d).unwrap());
    assert_eq!(store.expiry_bytes(b"missing").unwrap(), KeyExpiry::Missing);
    // A deadline already past removes the key, and says it was there.
    store.set("gone".into(), "x".into()).unwrap();
    assert!(store.expire_at_bytes(b"gone", 1).unwrap());
    assert_eq!(get(&store, "gone"), None);
    store.set("gone2".into(), "x".into()).unwrap();
    store.set_with_deadline_bytes(b"gone2", b"y", 1).unwrap();
    assert_eq!(get(&store, "gone2"), None);
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    assert_eq!(store.expiry_bytes(b"k").unwrap(), KeyExpiry::Never);
    assert_eq!(get(&store, "k").as_deref(), Some("plain"));
    assert_eq!(get(&store, "gone"), None);
    assert_eq!(get(&store, "gone2"), None);
}

#[test]
fn deadlines_survive_compaction_and_reopen() {
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default().max_file_size(4096);
    let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
    let d = far();
    for i in 0..200u64 {
        let key = format!("k{i}");
        store.set(key.clone(), "first".into()).unwrap();
        if i % 2 == 0 {
            store
                .set_with_deadline_bytes(key.as_bytes(), b"second", d + i)
                .unwrap();
        } else {
            store.set(key, "second".into()).unwrap();
        }
    }
    let check = |store: &KvStore, when: &str| {
        for i in 0..200u64 {
            let expected = if i % 2 == 0 {
                KeyExpiry::At(d + i)
            } else {
                KeyExpiry::Never
            };
            assert_eq!(
                store.expiry_bytes(format!("k{i}").as_bytes()).unwrap(),
                expected,
                "{when}"
            );
            assert_eq!(
                get(store, &format!("k{i}")).as_deref(),
                Some("second"),
                "{when}"
            );
        }
    };
    store.compact().unwrap();
    check(&store, "after compaction");
    drop(store);
    check(
        &KvStore::open_with(dir.path(), options).unwrap(),
        "after reopen",
    );
}

#[test]
fn an_expired_key_never_comes_back_across_reopen_and_compaction() {
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default().max_file_size(4096);
    let deadline = now_millis() + 1_000;
    {
        let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..100 {
            // An older value without a deadline lies under the expiring one.
            store.set(format!("k{i}"), "old".into()).unwrap();
        }
        for i in 0..100 {
            store
                .set_with_deadline_bytes(format!("k{i}").as_bytes(), b"new", deadline)
                .unwrap();
        }
        store.set("stays".into(), "s".into()).unwrap();
    }
    wait_past(deadline);
    let check = |store: &KvStore, when: &str| {
        for i in 0..100 {
            assert_eq!(get(store, &format!("k{i}")), None, "k{i} {when}");
        }
        assert_eq!(all_keys(store), vec![b"stays".to_vec()], "{when}");
    };
    let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
    check(&store, "after reopen");
    store.compact().unwrap();
    check(&store, "after compaction");
    drop(store);
    let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
    check(&store, "after compaction and reopen");
    // Set again, it is the new value, without a deadline.
    store.set("k7".into(), "again".into()).unwrap();
    assert_eq!(get(&store, "k7").as_deref(), Some("again"));
    assert_eq!(store.expiry_bytes(b"k7").unwrap(), KeyExpiry::Never);
    store.compact().unwrap();
    drop(store);
    let store = KvStore::open_with(dir.path(), options).unwrap();
    assert_eq!(get(&store, "k7").as_deref(), Some("again"));
    assert_eq!(get(&store, "k8"), None);
}

/// Polls `done` every 10 ms until it holds, failing after `limit` (a bound on something that
/// takes a few hundred milliseconds, set far above it for a slow, loaded machine).
fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_sweeper_removes_expired_keys_without_their_being_read() {
    let dir = TempDir::new().unwrap();
    // No automatic compaction: this test compacts by hand, once the sweep is done.
    let options = KvStoreOptions::default().compaction_min_stale(u64::MAX);
    let store = KvStore::open_with(dir.path(), options).unwrap();
    let value = vec![5u8; 100];
    let deadline = now_millis() + 1_000;
    let mut batch = WriteBatch::new();
    for i in 0..20_000u32 {
        batch.set_with_deadline(format!("e{i}").as_bytes(), &value, deadline);
        if batch.len() == 1_000 {
            store.apply_batch(&batch).unwrap();
            batch.clear();
        }
    }
    for i in 0..100 {
        store.set(format!("live{i}"), "l".into()).unwrap();
    }
    let stale_before = store.disk_stats().stale_bytes;
    let total_before = store.disk_stats().total_bytes;
    wait_past(deadline);
    // Not one read of the expired keys: the sweeper alone counts their records stale. Its
    // pass comes every 100 ms and takes a few ms for 20,000 keys; 60 s is the bound of a
    // stalled machine, not of the sweep.
    let expired_bytes: u64 = (0..20_000u32)
        .map(|i| (17 + 8 + format!("e{i}").len() + 100) as u64)
        .sum();
    eventually(Duration::from_secs(60), "sweep", || {
        store.disk_stats().stale_bytes >= stale_before + expired_bytes
    });
    assert_eq!(store.disk_stats().stale_bytes, stale_before + expired_bytes);
    assert_eq!(store.expiring_len(), 0);
    store.compact().unwrap();
    let total_after = store.disk_stats().total_bytes;
    assert!(
        total_after < total_before / 10,
        "compaction reclaimed the expired records: {total_before} -> {total_after}"
    );
    assert_eq!(store.len().unwrap(), 100);
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    assert_eq!(store.len().unwrap(), 100);
    assert_eq!(get(&store, "e5"), None);
}

const DIR_VAR: &str = "KVS_EXPIRY_TEST_DIR";
const BASE_VAR: &str = "KVS_EXPIRY_TEST_BASE";

/// The child of [`deadlines_survive_kill_9`]: sets `k{i}` with deadline `base + i` until
/// killed, reporting `set i` before and `ok` after each.
#[test]
#[ignore = "run as a child process by deadlines_survive_kill_9"]
fn expiry_child_writer() {
    let (Ok(dir), Ok(base)) = (std::env::var(DIR_VAR), std::env::var(BASE_VAR)) else {
        panic!("{DIR_VAR} and {BASE_VAR} must be set");
    };
    let base: u64 = base.parse().expect("base");
    let store = KvStore::open_with(&dir, KvStoreOptions::default().max_file_size(16 << 10))
        .expect("child open");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 0..1_000_000u64 {
        writeln!(out, "set {i}").expect("stdout");
        out.flush().expect("stdout");
        store
            .set_with_deadline_bytes(format!("k{i}").as_bytes(), b"v", base + i)
            .expect("set");
        writeln!(out, "ok").expect("stdout");
        out.flush().expect("stdout");
    }
}

#[test]
fn deadlines_survive_kill_9() {
    let dir = TempDir::new().unwrap();
    let base = far();
    let mut child = support::child_test("expiry_child_writer")
        .env(DIR_VAR, dir.path())
        .env(BASE_VAR, base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked: Option<u64> = None;
    let mut in_flight = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        // The first report may follow the test harness's own "test ... " on the same line.
        if let Some(at) = line.rfind("set ") {
            in_flight = Some(line[at + 4..].parse::<u64>().expect("key number"));
        } else if line == "ok" {
            acked = in_flight.take();
            if acked == Some(500) {
                child.kill().expect("kill child");
            }
        }
    }
    child.wait().expect("wait child");
    let acked = acked.expect("acknowledged writes");
    assert!(acked >= 500);
    let store = KvStore::open(dir.path()).unwrap();
    for i in 0..=acked {
        assert_eq!(
            store.expiry_bytes(format!("k{i}").as_bytes()).unwrap(),
            KeyExpiry::At(base + i),
            "k{i}"
        );
    }
    // The one in flight is there with its deadline, or not at all.
    let next = store
        .expiry_bytes(format!("k{}", acked + 1).as_bytes())
        .unwrap();
    assert!(
        next == KeyExpiry::Missing || next == KeyExpiry::At(base + acked + 1),
        "{next:?}"
    );
    assert!(store.len().unwrap() as u64 <= acked + 2);
}

/// A store closed while a key with a deadline still lived, reopened after the deadline
/// passed: the key stays gone, through compaction and another reopen, and its older value
/// (a record without a deadline, before it in the log) does not return.
#[test]
fn a_key_expired_while_the_store_was_down_stays_gone() {
    let dir = TempDir::new().unwrap();
    let deadline = now_millis() + 800;
    {
        let store = KvStore::open(dir.path()).unwrap();
        store.set("k".into(), "older".into()).unwrap();
        store
            .set_with_deadline_bytes(b"k", b"newer", deadline)
            .unwrap();
        // Dropped without the deadline having passed: nothing but the record says it expires.
    }
    wait_past(deadline);
    check_gone(dir.path());
}

fn check_gone(dir: &Path) {
    let store = KvStore::open(dir).unwrap();
    assert_eq!(get(&store, "k"), None);
    store.compact().unwrap();
    drop(store);
    let store = KvStore::open(dir).unwrap();
    assert_eq!(get(&store, "k"), None);
    assert_eq!(store.len().unwrap(), 0);
}

#[test]
fn sweep_expired_removes_the_expired_keys_at_once() {
    let dir = TempDir::new().unwrap();
    // The background sweeper does not run during the test: only the explicit sweep does.
    let options = KvStoreOptions::default().sweep_interval(Duration::from_secs(3_600));
    let store = KvStore::open_with(dir.path(), options).unwrap();
    let deadline = now_millis() + 300;
    for i in 0..10 {
        store
            .set_with_deadline_bytes(format!("e{i}").as_bytes(), b"v", deadline)
            .unwrap();
    }
    store
        .set_with_deadline_bytes(b"later", b"v", far())
        .unwrap();
    wait_past(deadline);
    let stale = store.disk_stats().stale_bytes;
    assert_eq!(store.sweep_expired().unwrap(), 10);
    assert_eq!(
        store.disk_stats().stale_bytes,
        stale + 10 * (17 + 8 + 2 + 1)
    );
    assert_eq!(store.sweep_expired().unwrap(), 0);
    assert_eq!(store.expiring_len(), 1);
    assert_eq!(store.len().unwrap(), 1);
}
