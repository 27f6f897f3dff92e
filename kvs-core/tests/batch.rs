//! Atomic batches of `KvStore` (`apply_batch`, `set_many_bytes`): what a batch does, that a
//! batch cut at any byte is all there or not at all, that a process killed with SIGKILL while
//! applying batches keeps every acknowledged batch whole, that readers never see part of a
//! batch, and that compaction during batches keeps everything.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvs::{
    now_millis, KeyExpiry, KvStore, KvStoreOptions, KvsEngine, KvsError, WriteBatch,
    MAX_BATCH_BYTES,
};
use tempfile::TempDir;

use support::{log_files, Rng};

fn newest_log(dir: &Path) -> std::path::PathBuf {
    log_files(dir).pop().expect("a log file")
}

/// Where the records of the newest log file end (see `support::records_end`).
fn log_len(dir: &Path) -> u64 {
    support::records_end(&newest_log(dir))
}

/// Copies every file of the store in `from` (but its lock file) into `to`.
fn copy_store(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name() != Some(std::ffi::OsStr::new("LOCK")) {
            fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

fn get(store: &KvStore, key: &str) -> Option<String> {
    store
        .get_bytes(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn a_batch_applies_its_operations_in_order() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set("old".into(), "1".into()).unwrap();
    store.set("doomed".into(), "1".into()).unwrap();
    let far = now_millis() + 3_600_000;
    let mut batch = WriteBatch::new();
    batch
        .set(b"a", b"1")
        .remove(b"a")
        .set(b"a", b"2")
        .set(b"fresh", b"x")
        .remove(b"fresh")
        .remove(b"never-set")
        .set_with_deadline(b"old", b"ttl", far)
        .set_with_deadline(b"doomed", b"past", 1);
    store.apply_batch(&batch).unwrap();
    assert_eq!(get(&store, "a").as_deref(), Some("2"));
    assert_eq!(get(&store, "fresh"), None);
    assert_eq!(get(&store, "never-set"), None);
    assert_eq!(get(&store, "old").as_deref(), Some("ttl"));
    assert_eq!(store.expiry_bytes(b"old").unwrap(), KeyExpiry::At(far));
    // A set whose deadline has passed is a remove.
    assert_eq!(get(&store, "doomed"), None);
    assert_eq!(store.len().unwrap(), 2);
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    assert_eq!(get(&store, "a").as_deref(), Some("2"));
    assert_eq!(get(&store, "fresh"), None);
    assert_eq!(get(&store, "doomed"), None);
    assert_eq!(store.expiry_bytes(b"old").unwrap(), KeyExpiry::At(far));
    assert_eq!(store.len().unwrap(), 2);
}

#[test]
fn a_batch_with_nothing_to_do_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set("k".into(), "v".into()).unwrap();
    let before = log_len(dir.path());
    store.apply_batch(&WriteBatch::new()).unwrap();
    let mut batch = WriteBatch::new();
    batch
        .remove(b"missing")
        .remove(b"also-missing")
        .set_with_deadline(b"missing", b"v", 1);
    store.apply_batch(&batch).unwrap();
    store.set_many_bytes(&[]).unwrap();
    assert_eq!(log_len(dir.path()), before);
    assert_eq!(get(&store, "k").as_deref(), Some("v"));
}

#[test]
fn a_batch_over_the_limit_is_refused_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set("k".into(), "v".into()).unwrap();
    let before = log_len(dir.path());
    let half = vec![7u8; MAX_BATCH_BYTES / 2];
    let mut batch = WriteBatch::new();
    batch.set(b"x", &half).set(b"y", &half);
    match store.apply_batch(&batch) {
        Err(KvsError::InvalidArgument(message)) => {
            assert!(message.contains("limit"), "{message}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(log_len(dir.path()), before, "nothing written");
    assert_eq!(get(&store, "x"), None);
    // A batch of one is one record: as large as a set may be.
    let mut one = WriteBatch::new();
    one.set(b"big", &vec![1u8; MAX_BATCH_BYTES + 1]);
    store.apply_batch(&one).unwrap();
    assert_eq!(
        store.get_bytes(b"big").unwrap().map(|v| v.len()),
        Some(MAX_BATCH_BYTES + 1)
    );
    // set_many_bytes of as much writes it as several batches, in order.
    store
        .set_many_bytes(&[(b"x", &half), (b"y", &half), (b"z", b"last")])
        .unwrap();
    assert_eq!(get(&store, "z").as_deref(), Some("last"));
    assert_eq!(
        store.get_bytes(b"y").unwrap().map(|v| v.len()),
        Some(half.len())
    );
}

#[test]
fn a_batch_larger_than_a_log_file_goes_whole_into_one_file() {
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default().max_file_size(4096);
    let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
    store.set("first".into(), "1".into()).unwrap();
    let value = vec![9u8; 1000];
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let mut batch = WriteBatch::new();
    for key in &keys {
        batch.set(key.as_bytes(), &value);
    }
    store.apply_batch(&batch).unwrap();
    let newest = newest_log(dir.path());
    assert!(
        fs::metadata(&newest).unwrap().len() > 20 * 1000,
        "the file grew past 4096"
    );
    drop(store);
    let store = KvStore::open_with(dir.path(), options).unwrap();
    for key in &keys {
        assert_eq!(
            store.get_bytes(key.as_bytes()).unwrap(),
            Some(value.clone())
        );
    }
    // And writes go on after it, in a new file.
    store.set("after".into(), "2".into()).unwrap();
    assert_ne!(newest_log(dir.path()), newest);
}

/// (a) The last write of the store is a batch; for every length of the newest file from the
/// batch's start to its end (and, as after `SyncPolicy::Always`, with zeros after that
/// length), the store reopens with all of the batch or none of it.
#[test]
fn a_batch_cut_at_any_byte_is_all_there_or_not_at_all() {
    let template = TempDir::new().unwrap();
    let far = now_millis() + 3_600_000;
    let (start, end) = {
        let store = KvStore::open(template.path()).unwrap();
        store.set("before".into(), "1".into()).unwrap();
        store.set("gone".into(), "x".into()).unwrap();
        let start = log_len(template.path());
        let mut batch = WriteBatch::new();
        for i in 0..5 {
            batch.set(format!("b{i}").as_bytes(), "v".repeat(i * 7 + 1).as_bytes());
        }
        batch
            .remove(b"gone")
            .remove(b"missing")
            .set_with_deadline(b"ttl", b"t", far);
        store.apply_batch(&batch).unwrap();
        (start, log_len(template.path()))
    };
    let log_name = newest_log(template.path()).file_name().unwrap().to_owned();
    let full = fs::read(template.path().join(&log_name)).unwrap();
    assert_eq!(full.len() as u64, end);
    for len in start..=end {
        for zeros_after in [0u64, 4096] {
            let dir = TempDir::new().unwrap();
            copy_store(template.path(), dir.path());
            let log = dir.path().join(&log_name);
            fs::write(&log, &full[..len as usize]).unwrap();
            if zeros_after > 0 {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&log)
                    .unwrap()
                    .set_len(len + zeros_after)
                    .unwrap();
            }
            let what = format!("cut at {len} of {start}..{end}, {zeros_after} zeros after");
            let store = KvStore::open(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(get(&store, "before").as_deref(), Some("1"), "{what}");
            let whole = len == end;
            for i in 0..5 {
                let expected = whole.then(|| "v".repeat(i * 7 + 1));
                assert_eq!(get(&store, &format!("b{i}")), expected, "{what}: b{i}");
            }
            assert_eq!(
                get(&store, "gone"),
                (!whole).then(|| "x".to_string()),
                "{what}"
            );
            assert_eq!(get(&store, "ttl"), whole.then(|| "t".to_string()), "{what}");
            assert_eq!(store.len().unwrap(), if whole { 7 } else { 2 }, "{what}");
            // The torn batch was cut off whole; the store writes on after it.
            assert_eq!(
                fs::metadata(&log).unwrap().len(),
                if whole { end } else { start },
                "{what}"
            );
            store.set("after".into(), "cut".into()).unwrap();
            drop(store);
            let store = KvStore::open(dir.path()).unwrap();
            assert_eq!(get(&store, "after").as_deref(), Some("cut"), "{what}");
            assert_eq!(get(&store, "b0").is_some(), whole, "{what}");
        }
    }
}

/// A batch damaged in the middle of the log (records after it) is corruption naming the
/// batch's offset, never dropped as a torn write.
#[test]
fn a_damaged_batch_before_the_tail_is_corruption() {
    let dir = TempDir::new().unwrap();
    let start = {
        let store = KvStore::open(dir.path()).unwrap();
        store.set("before".into(), "1".into()).unwrap();
        let start = log_len(dir.path());
        store
            .set_many_bytes(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
            .unwrap();
        store.set("after".into(), "1".into()).unwrap();
        start
    };
    let log = newest_log(dir.path());
    let mut bytes = fs::read(&log).unwrap();
    // The last byte of the second member's value: 29-byte frame, members of 17 + 2 bytes.
    let victim = start as usize + 29 + 19 + 18;
    bytes[victim] ^= 0x01;
    fs::write(&log, &bytes).unwrap();
    match KvStore::open(dir.path()) {
        Err(KvsError::Corruption {
            path,
            offset,
            reason,
        }) => {
            assert_eq!((path, offset), (log.clone(), start), "{reason}");
            assert!(reason.contains("batch"), "{reason}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    assert_eq!(fs::read(&log).unwrap(), bytes, "open changed the file");
}

const DIR_VAR: &str = "KVS_BATCH_TEST_DIR";
const CYCLE_VAR: &str = "KVS_BATCH_TEST_CYCLE";
/// Keys each batch of the child sets.
const GROUP: usize = 10;

/// The child of [`batches_survive_kill_9_whole`]: applies batches until killed. Batch `n` sets
/// `c{cycle}-g{j}` to `n-<padding>` for every j, removes `c{cycle}-r{n-1}` and sets
/// `c{cycle}-r{n}`; it reports `batch n` on stdout before and `ok` once it returned.
#[test]
#[ignore = "run as a child process by batches_survive_kill_9_whole"]
fn batch_child_writer() {
    let (Ok(dir), Ok(cycle)) = (std::env::var(DIR_VAR), std::env::var(CYCLE_VAR)) else {
        panic!("{DIR_VAR} and {CYCLE_VAR} must be set");
    };
    // Small files and a low compaction threshold: kills land inside rotations and
    // compactions too.
    let store = KvStore::open_with(
        &dir,
        KvStoreOptions::default()
            .compaction_min_stale(16 << 10)
            .max_file_size(16 << 10),
    )
    .expect("child open");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for n in 1..1_000_000u64 {
        let mut batch = WriteBatch::new();
        for j in 0..GROUP as u64 {
            let value = format!("{n}-{}", "p".repeat(((n * 31 + j * 17) % 200) as usize));
            batch.set(format!("c{cycle}-g{j}").as_bytes(), value.as_bytes());
        }
        batch.remove(format!("c{cycle}-r{}", n - 1).as_bytes()).set(
            format!("c{cycle}-r{n}").as_bytes(),
            n.to_string().as_bytes(),
        );
        writeln!(out, "batch {n}").expect("stdout");
        out.flush().expect("stdout");
        store.apply_batch(&batch).expect("apply_batch");
        writeln!(out, "ok").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Runs the child for `cycle` and kills it with SIGKILL after `kill_after` acknowledged
/// batches; returns the last batch acknowledged.
fn run_batch_child(dir: &Path, cycle: u64, kill_after: u64) -> u64 {
    run_batch_child_with(dir, cycle, Some(kill_after), &[])
}

/// [`run_batch_child`], with `env` for the child; with `kill_after` `None`, waits for the
/// child to die by itself (at a crash point: SIGABRT).
fn run_batch_child_with(
    dir: &Path,
    cycle: u64,
    kill_after: Option<u64>,
    env: &[(&str, &str)],
) -> u64 {
    let mut child = support::child_test("batch_child_writer")
        .env(DIR_VAR, dir)
        .env(CYCLE_VAR, cycle.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = 0;
    let mut in_flight = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        // The first report may follow the test harness's own "test ... " on the same line.
        if let Some(at) = line.rfind("batch ") {
            in_flight = Some(line[at + 6..].parse::<u64>().expect("batch number"));
        } else if line == "ok" {
            acked = in_flight.take().expect("ok after a batch");
            if Some(acked) == kill_after {
                child.kill().expect("kill child");
            }
        }
    }
    let status = child.wait().expect("wait child");
    match kill_after {
        Some(n) => assert!(acked >= n, "child died after {acked} batches: {status}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(6), "child did not abort: {status}");
        }
    }
    acked
}

/// A child that dies in the middle of writing a batch (crash point `write:mid-record`: half of
/// the batch's bytes written, then abort), at its 7th, 120th and 2nd batch (three cycles on one directory): on reopen, every
/// earlier batch is there and nothing of the torn one.
#[test]
fn a_batch_torn_by_a_crash_mid_write_is_not_there_at_all() {
    let dir = TempDir::new().unwrap();
    for (cycle, at) in [(1u64, 7u64), (2, 120), (3, 2)] {
        let point = format!("write:mid-record:{at}");
        let acked = run_batch_child_with(dir.path(), cycle, None, &[("KVS_CRASH_AT", &point)]);
        assert_eq!(acked, at - 1, "cycle {cycle}");
        let store = KvStore::open(dir.path()).expect("reopen after the crash");
        assert_eq!(batch_in_store(&store, cycle), at - 1, "cycle {cycle}");
    }
}

/// The batch number whose writes `store` holds for cycle `cycle`, checking that they are
/// whole: every key of the group from the same batch, and only that batch's `r` key.
fn batch_in_store(store: &KvStore, cycle: u64) -> u64 {
    let mut seen = Vec::new();
    for j in 0..GROUP {
        let value = get(store, &format!("c{cycle}-g{j}")).expect("group key");
        seen.push(value.split('-').next().unwrap().parse::<u64>().unwrap());
    }
    let n = seen[0];
    assert!(
        seen.iter().all(|&m| m == n),
        "cycle {cycle}: part of a batch: {seen:?}"
    );
    assert_eq!(get(store, &format!("c{cycle}-r{n}")), Some(n.to_string()));
    assert_eq!(get(store, &format!("c{cycle}-r{}", n - 1)), None);
    let r_keys = store
        .keys()
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with(format!("c{cycle}-r").as_bytes()))
        .count();
    assert_eq!(r_keys, 1, "cycle {cycle}: r keys of several batches");
    n
}

/// (b) A child applying batches in a loop is killed with SIGKILL; on reopen every batch it
/// acknowledged is there, whole, and the one in flight is there whole or not at all.
#[test]
fn batches_survive_kill_9_whole() {
    let dir = TempDir::new().unwrap();
    let mut found = BTreeMap::new();
    // The slow suite's KVS_CRASH_CYCLES adds cycles, killed after a random number of batches.
    let extra: u64 = std::env::var("KVS_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut rng = Rng(0xba7c4);
    let cycles: Vec<(u64, u64)> = [(1, 5), (2, 150), (3, 40), (4, 600), (5, 1)]
        .into_iter()
        .chain((0..extra).map(|i| (6 + i, 1 + rng.below(800))))
        .collect();
    for (cycle, kill_after) in cycles {
        let acked = run_batch_child(dir.path(), cycle, kill_after);
        let store = KvStore::open(dir.path()).expect("reopen after kill");
        let n = batch_in_store(&store, cycle);
        assert!(
            n == acked || n == acked + 1,
            "cycle {cycle}: store has batch {n}, the child acknowledged {acked}"
        );
        found.insert(cycle, n);
        // Every earlier cycle's last batch is still there, whole (compaction kept it).
        for (&earlier, &m) in &found {
            assert_eq!(batch_in_store(&store, earlier), m, "cycle {earlier}");
        }
    }
}

/// (c) Readers never see part of a batch: every batch sets `a` and then `b` to the same
/// counter, so a reader that reads `a` and then `b` sees `b` at least as new as `a`.
#[test]
fn readers_never_see_part_of_a_batch() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(
        dir.path(),
        KvStoreOptions::default()
            .compaction_min_stale(64 << 10)
            .max_file_size(64 << 10),
    )
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let read_u64 = |store: &KvStore, key: &[u8]| -> u64 {
        store
            .get_bytes(key)
            .unwrap()
            .map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap())
    };
    let mut readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let a = read_u64(&store, b"a");
                    let b = read_u64(&store, b"b");
                    assert!(b >= a, "read a = {a}, then b = {b}: part of a batch");
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    // And get_many_bytes reads both at one instant: always equal.
    readers.push({
        let store = store.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !done.load(Ordering::SeqCst) {
                let both = store.get_many_bytes(&[b"a", b"b"]).unwrap();
                assert_eq!(both[0], both[1], "get_many_bytes saw part of a batch");
                checks += 1;
            }
            checks
        })
    });
    // a is written before b in each batch: were the batch made visible record by record, a
    // reader could see the new a with the old b.
    for i in 1..=5_000u64 {
        let mut batch = WriteBatch::new();
        let value = i.to_string();
        batch
            .set(b"a", value.as_bytes())
            .set(b"b", value.as_bytes());
        store.apply_batch(&batch).unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().unwrap() > 0, "the reader never ran");
    }
    assert_eq!(read_u64(&store, b"a"), 5_000);
}

/// (d) Compaction running over and over while batches of sets and removes are applied loses
/// nothing: the store matches a model of the batches, before and after a reopen.
#[test]
fn compaction_during_batches_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default()
        .compaction_min_stale(8 << 10)
        .max_file_size(8 << 10);
    let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let compactor = {
        let store = store.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut runs = 0;
            while !done.load(Ordering::SeqCst) {
                store.compact().unwrap();
                runs += 1;
            }
            runs
        })
    };
    let mut model = BTreeMap::<Vec<u8>, Vec<u8>>::new();
    let mut rng = Rng(7);
    for round in 0..1_500u64 {
        let mut batch = WriteBatch::new();
        for _ in 0..1 + rng.below(20) {
            let key = format!("k{}", rng.below(300)).into_bytes();
            if rng.below(4) == 0 {
                batch.remove(&key);
                model.remove(&key);
            } else {
                let value = format!("{round}-{}", "x".repeat(rng.below(100) as usize));
                batch.set(&key, value.as_bytes());
                model.insert(key, value.into_bytes());
            }
        }
        store.apply_batch(&batch).unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert!(compactor.join().unwrap() > 0);
    let check = |store: &KvStore, when: &str| {
        assert_eq!(store.len().unwrap(), model.len(), "{when}");
        for (key, value) in &model {
            assert_eq!(
                store.get_bytes(key).unwrap().as_ref(),
                Some(value),
                "{when}"
            );
        }
    };
    check(&store, "before reopen");
    drop(store);
    check(
        &KvStore::open_with(dir.path(), options).unwrap(),
        "after reopen",
    );
}
