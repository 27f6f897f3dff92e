//! What only the sled engine does: its layout inside sled (format 2), the migration of a
//! store of release 0.1.0 (and its resumption after a crash), the active sweep of expired
//! keys, batches under `kill -9`, its scan cursors, and fork.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kvs::{
    deadline_after, now_millis, AnyEngine, EngineKind, KeyExpiry, KvsEngine, KvsError, ScanFilter,
    SledKvsEngine, WriteBatch,
};
use tempfile::TempDir;

/// Opens the sled database in `dir`, waiting for sled's file lock, which a handle just
/// dropped (or a process just killed) lets go of a moment later.
fn open_db(dir: &Path) -> sled::Db {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e)
                if e.to_string().contains("could not acquire lock") && Instant::now() < give_up =>
            {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open sled in {}: {e}", dir.display()),
        }
    }
}

/// Waits for `done`, polling; fails after `limit` (a guard against a hang, far above what the
/// wait takes) and returns how long it took.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn tree_keys(db: &sled::Db, tree: &str) -> BTreeSet<Vec<u8>> {
    db.open_tree(tree)
        .unwrap()
        .iter()
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect()
}

// ---- The layout --------------------------------------------------------------------------

#[test]
fn the_store_holds_the_documented_trees_and_bytes() {
    let dir = TempDir::new().unwrap();
    let db = open_db(dir.path());
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    engine.set_bytes(b"plain", b"v").unwrap();
    engine
        .set_with_deadline_bytes(b"timed", b"w", 4_102_444_800_000)
        .unwrap();
    let meta = db.open_tree("kvs-meta").unwrap();
    assert_eq!(meta.get(b"format").unwrap().unwrap().as_ref(), [0, 0, 0, 2]);
    let data = db.open_tree("kvs-data").unwrap();
    assert_eq!(data.get(b"plain").unwrap().unwrap().as_ref(), [0x00, b'v']);
    // 4,102,444,800,000 ms (2100-01-01) is 0x0000_03BB_2CC3_D800.
    assert_eq!(
        data.get(b"timed").unwrap().unwrap().as_ref(),
        [0x01, 0x00, 0x00, 0x03, 0xbb, 0x2c, 0xc3, 0xd8, 0x00, b'w']
    );
    assert_eq!(
        tree_keys(&db, "kvs-expiry"),
        BTreeSet::from([vec![
            0x00, 0x00, 0x03, 0xbb, 0x2c, 0xc3, 0xd8, 0x00, b't', b'i', b'm', b'e', b'd'
        ]])
    );
    assert!(db.is_empty(), "nothing in sled's default tree");
}

#[test]
fn a_store_of_a_newer_format_is_refused_by_version_and_left_alone() {
    let dir = TempDir::new().unwrap();
    {
        let db = open_db(dir.path());
        db.open_tree("kvs-meta")
            .unwrap()
            .insert(b"format", &[0, 0, 0, 3])
            .unwrap();
        db.insert(b"raw", b"value").unwrap();
        db.flush().unwrap();
        let err = SledKvsEngine::new(db.clone())
            .err()
            .expect("a newer format must be refused");
        assert!(matches!(err, KvsError::InvalidArgument(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("format version 3") && message.contains("version 2"),
            "{message}"
        );
        assert_eq!(
            db.get(b"raw").unwrap().unwrap().as_ref(),
            b"value",
            "not migrated"
        );
        assert!(db.open_tree("kvs-data").unwrap().is_empty());
    }
}

#[test]
fn a_damaged_record_is_reported_with_its_key_and_the_database() {
    let tmp = TempDir::new().unwrap();
    let engine = AnyEngine::open(tmp.path(), Some(EngineKind::Sled)).unwrap();
    engine.set_bytes(b"fine", b"v").unwrap();
    drop(engine);
    let sled_dir = tmp.path().join(kvs::SLED_SUBDIR);
    {
        let db = open_db(&sled_dir);
        db.open_tree("kvs-data")
            .unwrap()
            .insert(b"bad", &[0x01, 0x00])
            .unwrap();
        db.flush().unwrap();
    }
    let engine = AnyEngine::open(tmp.path(), None).unwrap();
    let err = engine.get_bytes(b"bad").unwrap_err();
    assert!(err.is_corruption(), "{err:?}");
    assert_eq!(err.path(), Some(sled_dir.as_path()));
    assert!(err.to_string().contains("\"bad\""), "{err}");
    assert_eq!(
        engine.get_bytes(b"fine").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// `get_many_bytes` only reads: it writes nothing to sled's log (a sled transaction, even a
/// read-only one, would log a batch marker each time).
#[test]
fn get_many_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let db = open_db(dir.path());
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    engine
        .set_many_bytes(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        .unwrap();
    engine.flush().unwrap();
    let size = || std::fs::metadata(dir.path().join("db")).unwrap().len();
    let before = size();
    for _ in 0..5000 {
        let values = engine.get_many_bytes(&[b"a", b"b", b"missing"]).unwrap();
        assert_eq!(values[1].as_deref(), Some(&b"2"[..]));
    }
    engine.flush().unwrap();
    assert_eq!(size(), before, "reads grew sled's log");
}

// ---- Migration from release 0.1.0 --------------------------------------------------------

const OLD_KEYS: usize = 3500;

fn old_value(i: usize) -> Vec<u8> {
    format!("value {i} {}", "x".repeat(i % 50)).into_bytes()
}

/// A sled database as release 0.1.0 wrote it: raw values in sled's default tree.
fn write_old_store(dir: &Path) {
    let db = open_db(dir);
    for i in 0..OLD_KEYS {
        db.insert(format!("old{i:05}"), old_value(i)).unwrap();
    }
    db.flush().unwrap();
}

#[test]
fn a_store_of_release_0_1_0_is_migrated_in_place() {
    let dir = TempDir::new().unwrap();
    write_old_store(dir.path());
    let db = open_db(dir.path());
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    assert!(db.is_empty(), "the default tree is emptied");
    assert_eq!(tree_keys(&db, "kvs-data").len(), OLD_KEYS);
    assert_eq!(engine.len().unwrap(), OLD_KEYS);
    for i in (0..OLD_KEYS).step_by(7) {
        let key = format!("old{i:05}");
        assert_eq!(
            engine.get_bytes(key.as_bytes()).unwrap(),
            Some(old_value(i)),
            "{key}"
        );
        assert_eq!(
            engine.expiry_bytes(key.as_bytes()).unwrap(),
            KeyExpiry::Never
        );
    }
}

/// The child of `a_migration_killed_midway_resumes_and_loses_nothing`: opens the old store
/// with a crash point armed after the second chunk of the migration.
#[test]
#[ignore]
fn migration_child() {
    let dir =
        std::env::var("KVS_TEST_SLED_DIR").expect("KVS_TEST_SLED_DIR is set by the outer test");
    let _ = SledKvsEngine::new(open_db(Path::new(&dir)));
    panic!("the crash point was not reached");
}

#[test]
fn a_migration_killed_midway_resumes_and_loses_nothing() {
    let dir = TempDir::new().unwrap();
    write_old_store(dir.path());
    let output = support::child_test("migration_child")
        .env("KVS_TEST_SLED_DIR", dir.path())
        .env("KVS_CRASH_AT", "sled-migration:chunk-committed:2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains("crash point sled-migration:chunk-committed"),
        "{stderr}"
    );
    {
        // Killed between chunks: two chunks of 1,000 keys moved, the rest where it was.
        let db = open_db(dir.path());
        assert_eq!(db.len(), OLD_KEYS - 2000);
        assert_eq!(tree_keys(&db, "kvs-data").len(), 2000);
        assert!(
            db.open_tree("kvs-meta").unwrap().is_empty(),
            "no format before the end"
        );
    }
    let db = open_db(dir.path());
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    assert!(db.is_empty());
    assert_eq!(engine.len().unwrap(), OLD_KEYS);
    for i in 0..OLD_KEYS {
        let key = format!("old{i:05}");
        assert_eq!(
            engine.get_bytes(key.as_bytes()).unwrap(),
            Some(old_value(i)),
            "{key}"
        );
    }
    let meta = db.open_tree("kvs-meta").unwrap();
    assert_eq!(meta.get(b"format").unwrap().unwrap().as_ref(), [0, 0, 0, 2]);
}

/// Large values make smaller chunks (at most 8 MiB each): a crash after the first chunk of a
/// store of 1 MiB values finds 7 of them moved, and nothing lost.
#[test]
fn a_migration_of_large_values_moves_them_in_smaller_chunks() {
    let dir = TempDir::new().unwrap();
    let big = |i: usize| vec![i as u8; 1 << 20];
    {
        let db = open_db(dir.path());
        for i in 0..12 {
            db.insert(format!("big{i:02}"), big(i)).unwrap();
        }
        db.flush().unwrap();
    }
    let output = support::child_test("migration_child")
        .env("KVS_TEST_SLED_DIR", dir.path())
        .env("KVS_CRASH_AT", "sled-migration:chunk-committed:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{stderr}");
    {
        let db = open_db(dir.path());
        // 7 keys of 1 MiB and 5 bytes each fit in 8 MiB; an 8th does not.
        assert_eq!(tree_keys(&db, "kvs-data").len(), 7);
        assert_eq!(db.len(), 5);
    }
    let engine = SledKvsEngine::new(open_db(dir.path())).unwrap();
    for i in 0..12 {
        let key = format!("big{i:02}");
        assert_eq!(
            engine.get_bytes(key.as_bytes()).unwrap(),
            Some(big(i)),
            "{key}"
        );
    }
}

// ---- The active sweep --------------------------------------------------------------------

#[test]
fn the_sweep_removes_expired_keys_nobody_reads() {
    let dir = TempDir::new().unwrap();
    let db = open_db(dir.path());
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    engine.set_bytes(b"stays", b"v").unwrap();
    // A second away: time enough for the batch to land before it, even on a loaded machine.
    let soon = now_millis() + 1000;
    let mut batch = WriteBatch::new();
    for i in 0..300 {
        batch.set_with_deadline(format!("dies{i}").as_bytes(), b"v", soon);
    }
    engine.apply_batch(&batch).unwrap();
    let entries = tree_keys(&db, "kvs-expiry").len();
    if now_millis() < soon {
        // Read before the deadline, so before the sweep could take any.
        assert_eq!(entries, 300);
    }
    // More keys than one sweep chunk (256): the sweep goes on to the next chunk at once.
    let took = wait_for(Duration::from_secs(60), "the sweep", || {
        tree_keys(&db, "kvs-data").len() == 1 && tree_keys(&db, "kvs-expiry").is_empty()
    });
    eprintln!("the sweep removed 300 expired keys {took:?} after the first poll");
    assert_eq!(
        tree_keys(&db, "kvs-data"),
        BTreeSet::from([b"stays".to_vec()])
    );
}

/// The expiry entry of `key` at `deadline`, as `kvs-expiry` keys it.
fn entry(deadline: u64, key: &[u8]) -> Vec<u8> {
    let mut entry = deadline.to_be_bytes().to_vec();
    entry.extend_from_slice(key);
    entry
}

#[test]
fn writes_that_drop_or_move_a_deadline_take_its_expiry_entry_along() {
    let dir = TempDir::new().unwrap();
    let db = open_db(dir.path());
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    let (d1, d2) = {
        let later = deadline_after(Duration::from_secs(3600));
        (later, later + 1)
    };
    for key in [
        &b"set"[..],
        b"batch",
        b"batch-remove",
        b"remove",
        b"cas",
        b"update",
        b"persist",
        b"expire",
        b"deadline",
        b"many",
        b"kept",
    ] {
        engine.set_with_deadline_bytes(key, b"old", d1).unwrap();
    }
    engine.set_bytes(b"set", b"new").unwrap();
    let mut batch = WriteBatch::new();
    batch
        .set_with_deadline(b"batch", b"new", d2)
        .remove(b"batch-remove");
    engine.apply_batch(&batch).unwrap();
    engine.remove_bytes(b"remove").unwrap();
    assert!(engine
        .compare_and_set_bytes(b"cas", Some(b"old"), None)
        .unwrap());
    engine.update_bytes(b"update", |_| None).unwrap();
    assert!(engine.persist_bytes(b"persist").unwrap());
    assert!(engine.expire_at_bytes(b"expire", d2).unwrap());
    engine
        .set_with_deadline_bytes(b"deadline", b"new", d2)
        .unwrap();
    engine.set_many_bytes(&[(b"many", b"new")]).unwrap();
    assert!(engine
        .compare_and_set_bytes(b"kept", Some(b"old"), Some(b"new"))
        .unwrap());
    assert_eq!(
        tree_keys(&db, "kvs-expiry"),
        BTreeSet::from([
            entry(d2, b"batch"),
            entry(d2, b"expire"),
            entry(d2, b"deadline"),
            entry(d1, b"kept"),
        ]),
        "only the current deadlines have entries"
    );
}

/// A crash between a write and the removal of the expiry entry it made stale leaves that
/// entry behind (made here by hand): the sweep drops it when it comes due, and keeps the key,
/// whose record has no deadline or a later one.
#[test]
fn the_sweep_drops_stale_entries_and_keeps_their_keys() {
    let dir = TempDir::new().unwrap();
    let db = open_db(dir.path());
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    let later = deadline_after(Duration::from_secs(3600));
    engine.set_bytes(b"plain", b"v").unwrap();
    engine
        .set_with_deadline_bytes(b"later", b"v", later)
        .unwrap();
    let soon = now_millis() + 100;
    let expiry = db.open_tree("kvs-expiry").unwrap();
    for key in [&b"plain"[..], b"later", b"missing"] {
        expiry.insert(entry(soon, key), &[]).unwrap();
    }
    wait_for(
        Duration::from_secs(60),
        "the sweep of stale entries",
        || tree_keys(&db, "kvs-expiry") == BTreeSet::from([entry(later, b"later")]),
    );
    assert_eq!(
        engine.get_bytes(b"plain").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(engine.expiry_bytes(b"plain").unwrap(), KeyExpiry::Never);
    assert_eq!(engine.expiry_bytes(b"later").unwrap(), KeyExpiry::At(later));
    assert_eq!(tree_keys(&db, "kvs-data").len(), 2);
}

#[test]
fn expired_keys_are_swept_after_a_reopen_too() {
    let tmp = TempDir::new().unwrap();
    let soon = now_millis() + 1000;
    {
        let engine = AnyEngine::open(tmp.path(), Some(EngineKind::Sled)).unwrap();
        engine.set_with_deadline_bytes(b"dies", b"v", soon).unwrap();
        engine.set_bytes(b"stays", b"v").unwrap();
    }
    while now_millis() <= soon {
        std::thread::sleep(Duration::from_millis(5));
    }
    let db = open_db(&tmp.path().join(kvs::SLED_SUBDIR));
    let engine = SledKvsEngine::new(db.clone()).unwrap();
    assert_eq!(engine.get_bytes(b"dies").unwrap(), None);
    wait_for(Duration::from_secs(60), "the sweep after reopen", || {
        tree_keys(&db, "kvs-data").len() == 1
    });
    assert_eq!(engine.len().unwrap(), 1);
}

// ---- Batches and deadlines under kill -9 -------------------------------------------------

const BATCH_KEYS: usize = 20;

/// The child of `batches_are_all_or_nothing_under_kill_9`: sets a key with a deadline, then
/// applies batches that set every key to the batch's number, printing each acknowledgement,
/// until it is killed.
#[test]
#[ignore]
fn batch_writer_child() {
    let dir =
        std::env::var("KVS_TEST_SLED_DIR").expect("KVS_TEST_SLED_DIR is set by the outer test");
    let deadline: u64 = std::env::var("KVS_TEST_DEADLINE").unwrap().parse().unwrap();
    let engine = AnyEngine::open(dir, Some(EngineKind::Sled)).unwrap();
    engine
        .set_with_deadline_bytes(b"ttl", b"v", deadline)
        .unwrap();
    println!("ttl set");
    let value = "x".repeat(300);
    // Bounded; the parent kills the child long before.
    for n in 1..=1_000_000u64 {
        let mut batch = WriteBatch::new();
        for k in 0..BATCH_KEYS {
            batch.set(
                format!("k{k:02}").as_bytes(),
                format!("{n} {value}").as_bytes(),
            );
        }
        batch.remove(format!("gone{}", n - 1).as_bytes());
        batch.set(format!("gone{n}").as_bytes(), b"-");
        engine.apply_batch(&batch).unwrap();
        println!("acked {n}");
    }
}

#[test]
fn batches_are_all_or_nothing_under_kill_9() {
    let tmp = TempDir::new().unwrap();
    let deadline = deadline_after(Duration::from_secs(3600));
    let mut child = support::child_test("batch_writer_child")
        .env("KVS_TEST_SLED_DIR", tmp.path())
        .env("KVS_TEST_DEADLINE", deadline.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0;
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked = n.parse().unwrap();
            if acked == 40 {
                break;
            }
        }
    }
    assert_eq!(acked, 40, "the child stopped before 40 batches");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Acknowledgements printed before the kill landed.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked = n.parse().unwrap();
        }
    }
    let engine = AnyEngine::open(tmp.path(), None).unwrap();
    let keys: Vec<Vec<u8>> = (0..BATCH_KEYS)
        .map(|k| format!("k{k:02}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let numbers: BTreeSet<u64> = engine
        .get_many_bytes(&refs)
        .unwrap()
        .into_iter()
        .map(|v| {
            let v = String::from_utf8(v.expect("every key of a batch")).unwrap();
            v.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(numbers.len(), 1, "a batch was applied in part: {numbers:?}");
    let n = *numbers.first().unwrap();
    assert!(
        n == acked || n == acked + 1,
        "found batch {n}, last acknowledged {acked}"
    );
    let gone: Vec<Vec<u8>> = engine
        .keys()
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with(b"gone"))
        .collect();
    assert_eq!(gone, vec![format!("gone{n}").into_bytes()]);
    assert_eq!(
        engine.expiry_bytes(b"ttl").unwrap(),
        KeyExpiry::At(deadline)
    );
}

// ---- Scan cursors ------------------------------------------------------------------------

#[test]
fn cursors_are_refused_when_unknown_or_forgotten() {
    let tmp = TempDir::new().unwrap();
    let engine = AnyEngine::open(tmp.path(), Some(EngineKind::Sled)).unwrap();
    for i in 0..10 {
        engine.set_bytes(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let unknown = engine.scan_bytes(77, 1, &ScanFilter::all()).unwrap_err();
    assert!(
        matches!(unknown, KvsError::InvalidArgument(_)),
        "{unknown:?}"
    );
    assert!(unknown.to_string().contains("scan cursor 77"), "{unknown}");

    let first = engine.scan_bytes(0, 1, &ScanFilter::all()).unwrap();
    assert_ne!(first.cursor, 0);
    assert_eq!(first.keys, vec![b"k0".to_vec()]);
    // A retry of the same page answers the same.
    let second = engine
        .scan_bytes(first.cursor, 1, &ScanFilter::all())
        .unwrap();
    let retry = engine
        .scan_bytes(first.cursor, 1, &ScanFilter::all())
        .unwrap();
    assert_eq!(second.keys, retry.keys);
    assert_eq!(second.keys, vec![b"k1".to_vec()]);
    assert_ne!(second.cursor, retry.cursor, "cursor ids are never reused");

    // A cursor of a handle closed since is unknown to the next one.
    let open_walk = second.cursor;
    drop(engine);
    let engine = AnyEngine::open(tmp.path(), None).unwrap();
    let err = engine
        .scan_bytes(open_walk, 1, &ScanFilter::all())
        .unwrap_err();
    assert!(matches!(err, KvsError::InvalidArgument(_)), "{err:?}");

    // Past 4,096 open walks, the one left longest is forgotten.
    let oldest = engine.scan_bytes(0, 1, &ScanFilter::all()).unwrap().cursor;
    let newest: Vec<u64> = (0..4096)
        .map(|_| engine.scan_bytes(0, 1, &ScanFilter::all()).unwrap().cursor)
        .collect();
    let err = engine
        .scan_bytes(oldest, 1, &ScanFilter::all())
        .unwrap_err();
    assert!(err.to_string().contains("start the walk again"), "{err}");
    let page = engine
        .scan_bytes(newest[0], 100, &ScanFilter::all())
        .unwrap();
    assert_eq!(page.keys.len(), 9);
    assert_eq!(page.cursor, 0);
}

// ---- fork --------------------------------------------------------------------------------

/// In a child of `fork()` the new methods are refused like the old ones, and dropping the
/// handle there (which leaks sled and the sweep thread, which the child does not have)
/// returns. Forks from a process of its own (`fork_scenario`), not from the test harness's
/// with its other tests' threads.
#[test]
fn a_forked_child_is_refused_and_drops_the_handle_without_its_sweep() {
    let tmp = TempDir::new().unwrap();
    let mut child = support::child_test("fork_scenario");
    child.env("KVS_TEST_SLED_DIR", tmp.path());
    support::run_child_test(child);
}

#[test]
#[ignore]
fn fork_scenario() {
    let dir =
        std::env::var("KVS_TEST_SLED_DIR").expect("KVS_TEST_SLED_DIR is set by the outer test");
    let engine = AnyEngine::open(dir, Some(EngineKind::Sled)).unwrap();
    engine.set_bytes(b"k", b"v").unwrap();
    let mut batch = WriteBatch::new();
    batch.set(b"b", b"1");
    // SAFETY: the child calls only kvs methods that fail at their first check (one atomic
    // load, no lock), drops the handle (which leaks sled and the sweep, taking no lock), and
    // leaves with `_exit`, running no destructor of the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let refused = [
            engine.apply_batch(&batch).err(),
            engine.get_many_bytes(&[b"k"]).err(),
            engine.scan_bytes(0, 10, &ScanFilter::all()).err(),
            engine.set_with_deadline_bytes(b"k", b"v", u64::MAX).err(),
            engine.expiry_bytes(b"k").err(),
        ];
        let all_forked = refused
            .iter()
            .all(|e| matches!(e, Some(KvsError::Forked { .. })));
        drop(engine);
        // SAFETY: `_exit` ends the child at once; nothing of the parent's is touched.
        unsafe { libc::_exit(if all_forked { 0 } else { 1 }) };
    }
    // The child's drop must not wait for anything of the parent's (sled's flusher, the
    // sweep): a hang is the failure. 120 s is far above the moment the child takes even on a loaded 2-core
    // machine, so only a real hang reaches it.
    let give_up = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(done >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if done == pid {
            break status;
        }
        if Instant::now() > give_up {
            // SAFETY: signals our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child hung dropping its handle");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "a method was not refused in the child"
    );
    // The parent's handle and its sweep go on.
    engine.apply_batch(&batch).unwrap();
    assert_eq!(engine.get_bytes(b"b").unwrap().as_deref(), Some(&b"1"[..]));
}
