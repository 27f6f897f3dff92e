//! Log files getting shorter while a store has them memory-mapped.
//!
//! A read through a map of a page wholly past the end of its file raises SIGBUS and kills the
//! process. kvs cuts files itself (the active file's extended-ahead zeros when it is sealed, a
//! failed append, a torn tail on open) and must never cut one below a record a read can reach;
//! another program cutting a file is outside kvs's control, but compaction, which reads every
//! live record, must report it as an error naming the file rather than die.
//!
//! The reads run in child processes (this test binary re-run with `--ignored --exact`), so
//! that a SIGBUS fails the test with the signal instead of killing the test harness.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError, SyncPolicy};
use tempfile::TempDir;

use support::log_files_with_ids as log_files;

const DIR_VAR: &str = "KVS_SHRINK_TEST_DIR";

fn child_dir() -> PathBuf {
    std::env::var_os(DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{DIR_VAR} must be set"))
}

/// Runs the child test `name` on `dir`; fails, naming the signal if there was one, unless the
/// child passed.
fn run_child(name: &str, dir: &Path) -> String {
    let mut child = support::child_test(name);
    child.env(DIR_VAR, dir);
    support::run_child_test(child)
}

/// 64 KiB files, extended ahead to their full size by `SyncPolicy::Always` and cut back to
/// their last record when sealed; no background compaction.
fn options() -> KvStoreOptions {
    KvStoreOptions::default()
        .sync(SyncPolicy::Always)
        .max_file_size(64 << 10)
        .compaction_min_stale(u64::MAX)
}

fn key(i: usize) -> String {
    format!("key-{i:05}")
}

/// Values of varying lengths, so that records end anywhere in a page, at its end included.
fn value(i: usize) -> String {
    format!("{i:05}-{}", "v".repeat(1000 + (i * 397) % 3100))
}

const KEYS: usize = 400;

#[test]
#[ignore = "run as a child process by files_kvs_cuts_back_read_to_their_last_record"]
fn shrink_child_own_cuts() {
    let dir = child_dir();
    let store = KvStore::open_with(&dir, options()).unwrap();
    for i in 0..KEYS {
        store.set(key(i), value(i)).unwrap();
    }
    // Every file but the active one was extended ahead to 64 KiB while mapped, then cut back
    // when sealed: none is that long any more.
    let files = log_files(&dir);
    assert!(files.len() > 10, "only {} log files", files.len());
    for (_, path) in &files[..files.len() - 1] {
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len < 64 << 10, "{} is {len} bytes", path.display());
    }
    // Read through the maps made while the files were longer; the last record of each
    // closed file ends within bytes of its new end.
    for i in 0..KEYS {
        assert_eq!(store.get(key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    store.compact().unwrap();
    for i in 0..KEYS {
        assert_eq!(store.get(key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    println!(
        "own cuts: {} files cut back, {KEYS} keys read",
        files.len() - 1
    );
}

/// kvs's own cuts never reach a record a read can touch.
#[test]
fn files_kvs_cuts_back_read_to_their_last_record() {
    let dir = TempDir::new().unwrap();
    let out = run_child("shrink_child_own_cuts", dir.path());
    let line = out.lines().find_map(|l| l.split_once("own cuts: "));
    println!("{}", line.map_or("", |(_, rest)| rest));
}

#[test]
#[ignore = "run as a child process by compaction_reports_a_file_cut_short_behind_its_back"]
fn shrink_child_external_cut() {
    let dir = child_dir();
    let store = KvStore::open_with(&dir, options()).unwrap();
    for i in 0..KEYS {
        store.set(key(i), value(i)).unwrap();
    }
    // Another program cuts the oldest file to its first page: the pages after it are now
    // past the end of the file, under the store's map.
    let (_, victim) = log_files(&dir).into_iter().next().unwrap();
    assert!(std::fs::metadata(&victim).unwrap().len() > 3 * 4096);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(4096)
        .unwrap();

    let err = store.compact().expect_err("compaction of a file cut short");
    match &err {
        KvsError::Corruption {
            path,
            offset,
            reason,
        } => {
            assert_eq!(path, &victim, "{err}");
            // The first record that does not fit in what is left.
            assert!((8..=4096).contains(offset), "{err}");
            assert!(reason.contains("ends before the record"), "{err}");
        }
        other => panic!("expected a corruption error, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&victim.display().to_string()), "{message}");
    // The store is unchanged: keys outside the cut file still read back.
    let last = KEYS - 1;
    assert_eq!(store.get(key(last)).unwrap(), Some(value(last)));
    println!("external cut: compaction refused with: {message}");
}

/// A log file cut short by another program while the store is open: compaction, which reads
/// every live record, reports the file and offset instead of dying of SIGBUS.
#[test]
fn compaction_reports_a_file_cut_short_behind_its_back() {
    let dir = TempDir::new().unwrap();
    let out = run_child("shrink_child_external_cut", dir.path());
    let line = out.lines().find_map(|l| l.split_once("external cut: "));
    println!("{}", line.map_or("", |(_, rest)| rest));
}

/// The writable part of the active file's map, as `/proc/self/maps` shows it: the bytes of
/// every `rw` mapping of `file`.
fn writable_mapped_bytes(file: &Path) -> u64 {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let name = file.to_str().unwrap();
    maps.lines()
        .filter(|line| line.ends_with(name))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            perms.starts_with("rw").then_some(())?;
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            Some(end - start)
        })
        .sum()
}

#[test]
fn no_page_of_the_active_map_is_writable_past_the_end_of_its_file() {
    // Anything that reads every writable page of the process (valgrind's leak check at exit,
    // in a forked child too) would take a SIGBUS on each word of a writable page past the end
    // of the file: the map is writable only over what the file holds.
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    for i in 0..2_000u32 {
        store.set(format!("key-{i}"), "v".repeat(100)).unwrap();
    }
    let (_, active) = log_files(dir.path()).into_iter().last().unwrap();
    let len = std::fs::metadata(&active).unwrap().len();
    let page = 4096;
    let writable = writable_mapped_bytes(&active);
    assert!(writable > 0, "no writable map of {}", active.display());
    assert!(
        writable <= len.div_ceil(page) * page,
        "{writable} bytes of {} mapped writable, the file holds {len}",
        active.display()
    );
}
