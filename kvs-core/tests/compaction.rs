//! Compaction reclaims stale data, keeps the latest values, never brings a removed key back,
//! and leaves a store that opens correctly whatever step a crash interrupts.

mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use kvs::{KvStore, KvStoreOptions, KvsEngine};
use tempfile::TempDir;

use support::log_files_with_ids as log_files;

fn dir_size(dir: &Path) -> u64 {
    // The background compactor may delete a file between the listing and its metadata.
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn small_threshold() -> KvStoreOptions {
    KvStoreOptions::default().compaction_min_stale(64 << 10)
}

/// Waits (boundedly) for the background compactor to bring the directory under `limit`.
fn wait_for_size_under(dir: &Path, limit: u64) -> u64 {
    for _ in 0..500 {
        let size = dir_size(dir);
        if size <= limit {
            return size;
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }
    dir_size(dir)
}

#[test]
fn directory_stays_within_a_small_multiple_of_live_data() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), small_threshold()).unwrap();
    let value = "x".repeat(1000);
    let live = 100 * (1000 + 13 + 8);
    for round in 0..100 {
        for key in 0..100 {
            store
                .set(format!("key{key}"), format!("{round}{value}"))
                .unwrap();
        }
    }
    // 100 rounds wrote about 100x the live data; compaction must have reclaimed it. The log
    // holds the records; the directory also holds the active file's blocks allocated ahead of
    // its records (up to 8 MiB, zeros until written), which a close gives back.
    let limit = 4 * live as u64 + (64 << 10) * 2;
    let mut log = store.disk_stats().total_bytes;
    for _ in 0..500 {
        if log <= limit {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(20));
        log = store.disk_stats().total_bytes;
    }
    assert!(
        log <= limit,
        "the log is {log} bytes for about {live} live bytes"
    );
    let size = dir_size(dir.path());
    assert!(
        size <= limit + (8 << 20),
        "directory is {size} bytes for a log of {log} bytes"
    );
    for key in 0..100 {
        assert_eq!(
            store.get(format!("key{key}")).unwrap(),
            Some(format!("99{value}"))
        );
    }
    drop(store);
    let size = dir_size(dir.path());
    assert!(
        size <= limit,
        "directory is {size} bytes after the close, for about {live} live bytes"
    );
}

#[test]
fn compaction_keeps_latest_values_and_drops_removed_keys_across_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let store = KvStore::open(dir.path()).unwrap();
        for i in 0..200 {
            store.set(format!("k{i}"), "old".into()).unwrap();
        }
        for i in 0..200 {
            store.set(format!("k{i}"), format!("new{i}")).unwrap();
        }
        for i in (0..200).step_by(3) {
            store.remove(format!("k{i}")).unwrap();
        }
        store.compact().unwrap();
        let stats = store.disk_stats();
        assert_eq!(stats.stale_bytes, 0, "{stats:?}");
        for i in 0..200 {
            let expected = (i % 3 != 0).then(|| format!("new{i}"));
            assert_eq!(store.get(format!("k{i}")).unwrap(), expected);
        }
    }
    let store = KvStore::open(dir.path()).unwrap();
    for i in 0..200 {
        let expected = (i % 3 != 0).then(|| format!("new{i}"));
        assert_eq!(store.get(format!("k{i}")).unwrap(), expected, "k{i}");
    }
    assert_eq!(store.len().unwrap(), 200 - 67);
}

#[test]
fn readers_and_writers_see_correct_values_while_compaction_runs() {
    readers_and_writers_during_compactions(small_threshold());
}

#[test]
fn readers_and_writers_see_correct_values_while_compaction_runs_in_small_steps() {
    // Steps of 3 records, in files of 4 KiB: each compaction commits, switches and deletes
    // some 170 times while the keys are overwritten and read.
    readers_and_writers_during_compactions(
        small_threshold()
            .max_file_size(4096)
            .compaction_step_records(3),
    );
}

/// Three readers and a thread compacting over and over while every key is overwritten 20
/// times; then every key has its last value, before and after a reopen.
fn readers_and_writers_during_compactions(options: KvStoreOptions) {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), options).unwrap();
    let keys = 500;
    for i in 0..keys {
        store.set(format!("k{i}"), format!("v{i}-0")).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = (reads * 7 + t) % keys;
                    let value = store.get(format!("k{i}")).unwrap().expect("key present");
                    assert!(value.starts_with(&format!("v{i}-")), "{value}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let compactor = {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                store.compact().unwrap();
                runs += 1;
            }
            runs
        })
    };
    for round in 1..=20 {
        for i in 0..keys {
            store.set(format!("k{i}"), format!("v{i}-{round}")).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(compactor.join().unwrap() > 0);
    for i in 0..keys {
        assert_eq!(
            store.get(format!("k{i}")).unwrap(),
            Some(format!("v{i}-20"))
        );
    }
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    for i in 0..keys {
        assert_eq!(
            store.get(format!("k{i}")).unwrap(),
            Some(format!("v{i}-20"))
        );
    }
}

/// Builds a directory where k0..k9 were set, k0..k4 overwritten, and k5..k9 removed, across
/// several files; returns the expected live contents.
fn history(dir: &Path) -> Vec<(String, Option<String>)> {
    let store = KvStore::open(dir).unwrap();
    for i in 0..10 {
        store.set(format!("k{i}"), format!("first{i}")).unwrap();
    }
    store.compact().unwrap();
    for i in 0..5 {
        store.set(format!("k{i}"), format!("second{i}")).unwrap();
    }
    store.compact().unwrap();
    for i in 5..10 {
        store.remove(format!("k{i}")).unwrap();
    }
    (0..10)
        .map(|i| {
            let v = (i < 5).then(|| format!("second{i}"));
            (format!("k{i}"), v)
        })
        .collect()
}

fn check(dir: &Path, expected: &[(String, Option<String>)]) {
    let store = KvStore::open(dir).unwrap();
    for (k, v) in expected {
        assert_eq!(&store.get(k.clone()).unwrap(), v, "{k}");
    }
}

/// The log files of `dir` as the next compaction leaves them until it deletes them: the same
/// bytes, the active (newest) one with a seal record appended, as compaction writes when it
/// moves writes on to a new file (see `format.rs`).
fn files_as_compaction_leaves_them(dir: &Path) -> Vec<(u32, Vec<u8>)> {
    let mut files: Vec<(u32, Vec<u8>)> = log_files(dir)
        .into_iter()
        .map(|(id, p)| (id, fs::read(p).unwrap()))
        .collect();
    if let Some((_, active)) = files.last_mut() {
        // The store writes format version 2: a version-2 seal (kind 0x13).
        let offset = active.len() as u64;
        active.extend(support::v2_record(0x13, b"", b"", &offset.to_le_bytes()));
    }
    files
}

#[test]
fn crash_after_compaction_commit_before_deleting_old_files_opens_correctly() {
    // Simulate: the output was renamed into place, none of the old files deleted yet.
    let dir = TempDir::new().unwrap();
    let expected = history(dir.path());
    let before = files_as_compaction_leaves_them(dir.path());
    KvStore::open(dir.path()).unwrap().compact().unwrap();
    // Put the pre-compaction files back beside the compaction's output.
    for (id, bytes) in &before {
        fs::write(dir.path().join(format!("{id}.log")), bytes).unwrap();
    }
    check(dir.path(), &expected);
}

#[test]
fn crash_while_deleting_old_files_oldest_first_never_resurrects_a_removed_key() {
    let dir = TempDir::new().unwrap();
    let expected = history(dir.path());
    let before = files_as_compaction_leaves_them(dir.path());
    KvStore::open(dir.path()).unwrap().compact().unwrap();
    let after: Vec<(u32, Vec<u8>)> = log_files(dir.path())
        .into_iter()
        .map(|(id, p)| (id, fs::read(p).unwrap()))
        .collect();
    // Every prefix of the deletion order (oldest first): the old files that survive are the
    // newest `keep` ones.
    for keep in 0..=before.len() {
        let case = TempDir::new().unwrap();
        fs::copy(dir.path().join("engine"), case.path().join("engine")).unwrap();
        for (id, bytes) in after.iter().chain(&before[before.len() - keep..]) {
            fs::write(case.path().join(format!("{id}.log")), bytes).unwrap();
        }
        check(case.path(), &expected);
    }
}

#[test]
fn crash_before_compaction_commit_leaves_old_files_in_charge() {
    let dir = TempDir::new().unwrap();
    let expected = history(dir.path());
    // A half-written output (not yet renamed) is ignored and removed.
    let next = log_files(dir.path()).last().unwrap().0 + 1;
    let partial = dir.path().join(format!("{next}.log.compacting"));
    fs::write(&partial, b"kvs-log\x01 then nothing useful").unwrap();
    check(dir.path(), &expected);
    assert!(!partial.exists());
}

#[test]
fn small_file_limit_splits_the_log_and_compaction_output_across_files() {
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default().max_file_size(4096);
    {
        let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
        for round in 0..3 {
            for i in 0..300 {
                store
                    .set(format!("key{i}"), format!("r{round}-{}", "v".repeat(40)))
                    .unwrap();
            }
        }
        let before = log_files(dir.path()).len();
        assert!(before > 10, "only {before} files for ~60 KiB of log");
        store.compact().unwrap();
        let after = log_files(dir.path());
        // About 20 KiB of live data in 4 KiB files: several outputs, no file over the limit
        // (a file may pass it by at most one record).
        assert!(
            after.len() >= 4 && after.len() < before,
            "{} files",
            after.len()
        );
        for (_, path) in &after {
            assert!(fs::metadata(path).unwrap().len() <= 4096 + 128, "{path:?}");
        }
    }
    let store = KvStore::open_with(dir.path(), options).unwrap();
    for i in 0..300 {
        assert_eq!(
            store.get(format!("key{i}")).unwrap(),
            Some(format!("r2-{}", "v".repeat(40)))
        );
    }
}

#[test]
fn a_record_larger_than_the_file_limit_gets_a_file_of_its_own_and_reads_back() {
    // Also the read path for bytes beyond a file's memory map (the map covers the limit).
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default().max_file_size(4096);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    {
        let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
        store.set_bytes(b"small", b"x").unwrap();
        store.set_bytes(b"big", &big).unwrap();
        store.set_bytes(b"after", b"y").unwrap();
        assert_eq!(store.get_bytes(b"big").unwrap().as_deref(), Some(&big[..]));
        store.compact().unwrap();
        assert_eq!(store.get_bytes(b"big").unwrap().as_deref(), Some(&big[..]));
    }
    let store = KvStore::open_with(dir.path(), options).unwrap();
    assert_eq!(store.get_bytes(b"big").unwrap().as_deref(), Some(&big[..]));
    assert_eq!(
        store.get_bytes(b"small").unwrap().as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        store.get_bytes(b"after").unwrap().as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn compaction_reclaims_when_each_file_holds_a_single_record() {
    // Records of more than half a file (2.1 KiB in 4 KiB files) get a file each, and so do
    // records over the limit (5 KiB): compaction must find room for one output file per live
    // record, round after round, and the directory stays a small multiple of the live data.
    for value_len in [2150, 5 << 10] {
        let dir = TempDir::new().unwrap();
        let options = KvStoreOptions::default()
            .max_file_size(4096)
            .compaction_min_stale(16 << 10);
        let keys = 16;
        let value = |round: usize, key: usize| {
            let mut v = format!("r{round}-k{key}-").into_bytes();
            v.resize(value_len, b'v');
            v
        };
        // Record header, key "keyNN", value.
        let live = (keys * (13 + 5 + value_len)) as u64;
        let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
        let rounds = 8;
        for round in 0..rounds {
            // Two overwrites of every key: over the stale threshold, so the background
            // compactor runs meanwhile.
            for _ in 0..2 {
                for key in 0..keys {
                    store
                        .set_bytes(format!("key{key:02}").as_bytes(), &value(round, key))
                        .unwrap();
                }
            }
            if round >= rounds / 2 {
                // The second half of the rounds is left to the background compactor.
                continue;
            }
            store
                .compact()
                .unwrap_or_else(|e| panic!("{value_len}-byte values, round {round}: {e}"));
            // Right after a compaction the directory holds the live data, one file header
            // and seal per record, and perhaps a background compaction's partial output: at
            // most about twice the live data.
            let size = dir_size(dir.path());
            assert!(
                size <= 3 * live,
                "{value_len}-byte values, round {round}: directory is {size} bytes for {live} \
                 live bytes"
            );
        }
        // Once the background compactor is done, under half of the log is stale (or less
        // than the threshold, 16 KiB): about twice the live data at most. Without working
        // compactions it is `rounds * 2` times the live data.
        let size = wait_for_size_under(dir.path(), 3 * live);
        assert!(
            size <= 3 * live,
            "{value_len}-byte values, background compaction: directory is {size} bytes for \
             {live} live bytes"
        );
        drop(store);
        let store = KvStore::open_with(dir.path(), options).unwrap();
        for key in 0..keys {
            assert_eq!(
                store.get_bytes(format!("key{key:02}").as_bytes()).unwrap(),
                Some(value(rounds - 1, key)),
                "{value_len}-byte values, key {key}"
            );
        }
    }
}

#[test]
fn a_compaction_in_steps_of_one_record_keeps_every_value_and_no_removed_or_expired_key() {
    // Every record gets a step of its own: a commit, a switch and the deletion of whatever
    // old files it read through.
    compaction_keeps_every_value_and_no_removed_or_expired_key(1);
}

#[test]
fn a_compaction_listing_live_records_from_the_index_keeps_every_value_and_no_removed_or_expired_key(
) {
    // Every key fits in one step: the live records are listed from the index, and the one
    // step replaces every old file.
    compaction_keeps_every_value_and_no_removed_or_expired_key(10_000);
}

/// Keys overwritten, removed, or given a deadline that passes before the compaction, spread
/// over many 4 KiB files, compacted in steps of `step_records`.
fn compaction_keeps_every_value_and_no_removed_or_expired_key(step_records: usize) {
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default()
        .max_file_size(4096)
        .compaction_min_stale(u64::MAX)
        .compaction_step_records(step_records)
        .sweep_interval(std::time::Duration::from_secs(3600));
    let store = KvStore::open_with(dir.path(), options.clone()).unwrap();
    let keys = 600;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let deadline = now_ms() + 300;
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..3 {
        for i in 0..keys {
            let key = format!("k{i:03}");
            match (i + round) % 5 {
                0 if round > 0 => {
                    if expected.remove(&key).is_some() {
                        store.remove(key).unwrap();
                    }
                }
                1 => {
                    // Due before the compaction (the sweeper is off): the index still holds
                    // it, and its record must not be copied nor come back.
                    store
                        .set_with_deadline_bytes(key.as_bytes(), b"expiring", deadline)
                        .unwrap();
                    expected.remove(&key);
                }
                _ => {
                    let value = format!("r{round}-{i}-{}", "x".repeat(i % 100));
                    store.set(key.clone(), value.clone()).unwrap();
                    expected.insert(key, value);
                }
            }
        }
    }
    while now_ms() <= deadline {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(store.expiring_len() == 0, "every deadline has passed");
    let files_before = log_files(dir.path()).len();
    assert!(files_before > 20, "only {files_before} files");
    store.compact().unwrap();
    let check = |store: &KvStore, when: &str| {
        for i in 0..keys {
            let key = format!("k{i:03}");
            assert_eq!(
                store.get(key.clone()).unwrap().as_ref(),
                expected.get(&key),
                "{when}: {key}"
            );
        }
        assert_eq!(store.len().unwrap(), expected.len(), "{when}");
    };
    check(&store, "after the compaction");
    let files_after = log_files(dir.path()).len();
    if step_records == 1 {
        // One output file per live record (each step starts a file), and the old files gone.
        assert_eq!(
            files_after,
            expected.len() + 1,
            "outputs and the active file"
        );
    } else {
        // The old files gone: the live records fill the outputs.
        let live_bytes: usize = expected.iter().map(|(k, v)| k.len() + v.len() + 17).sum();
        assert!(
            files_after <= live_bytes / 2048 + 2,
            "{files_after} files for {live_bytes} bytes of live records"
        );
    }
    drop(store);
    let store = KvStore::open_with(dir.path(), options).unwrap();
    check(&store, "after a reopen");
    // A second compaction, of the outputs of the first, in steps again.
    store.compact().unwrap();
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    check(&store, "after a second compaction and a reopen");
}

/// A compaction that lists the live records from the index reads only those: damage in a
/// record no key points at any longer goes with its file. One that reads the old files
/// through (more keys than a step) reports it.
#[test]
fn a_compaction_from_the_index_reads_only_live_records() {
    for (step_records, reads_through) in [(10_000, false), (2, true)] {
        let dir = TempDir::new().unwrap();
        let options = KvStoreOptions::default()
            .compaction_min_stale(u64::MAX)
            .write_hints(false)
            .compaction_step_records(step_records);
        let store = KvStore::open_with(dir.path(), options).unwrap();
        store.set("a".into(), "old-value-of-a".into()).unwrap();
        for key in ["a", "b", "c"] {
            store.set(key.into(), format!("new-{key}")).unwrap();
        }
        // The first record (stale: "a" was set again) is damaged behind the store's back.
        let (_, first) = log_files(dir.path())[0].clone();
        let bytes = fs::read(&first).unwrap();
        let at = bytes
            .windows(b"old-value".len())
            .position(|w| w == b"old-value")
            .unwrap();
        // In place: the file is the store's active one.
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&first).unwrap();
        file.write_at(&[bytes[at] ^ 0xff], at as u64).unwrap();
        let result = store.compact();
        if reads_through {
            let err = result.unwrap_err();
            assert!(matches!(err, kvs::KvsError::Corruption { .. }), "{err}");
        } else {
            result.unwrap();
            assert!(!first.exists(), "the old file is deleted");
            drop(store);
            let store = KvStore::open(dir.path()).unwrap();
            for key in ["a", "b", "c"] {
                assert_eq!(store.get(key.into()).unwrap(), Some(format!("new-{key}")));
            }
        }
    }
}
