//! Corruption at scale: random bit flips anywhere in closed (non-newest) log files, random
//! garbage tails on the newest file, and random bytes in place of whole files. Whatever the
//! damage: open either works or fails with `KvsError::Corruption` naming the file and an offset
//! at or before the damage, a failed open changes nothing on disk, a get never returns a wrong
//! value, and nothing panics.
//!
//! Every torn tail of the last record is covered in `recovery.rs`
//! (`recovers_from_torn_tail_at_every_byte_of_the_last_record`).
//!
//! `KVS_CORRUPTION_CASES` sets the number of bit flips (default 1,000; the slow suite uses
//! 20,000) and scales the other case counts; `KVS_CORRUPTION_SEED` replays one run.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError};
use tempfile::TempDir;

use support::{log_files, Rng};

fn cases() -> u64 {
    std::env::var("KVS_CORRUPTION_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

fn rng(test: u64) -> Rng {
    let seed = std::env::var("KVS_CORRUPTION_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x6b76_7321);
    println!("seed {seed} (set KVS_CORRUPTION_SEED to replay)");
    Rng(seed ^ test.wrapping_mul(0x1000_0001))
}

/// A store spread over many small files, with overwrites and removes, and what it holds.
struct Template {
    dir: TempDir,
    model: BTreeMap<String, Option<String>>,
    /// Log files, oldest first.
    logs: Vec<PathBuf>,
}

fn options() -> KvStoreOptions {
    KvStoreOptions::default()
        .max_file_size(4_096)
        .compaction_min_stale(u64::MAX)
}

fn template() -> Template {
    let dir = TempDir::new().unwrap();
    let mut model = BTreeMap::new();
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        for i in 0..400u64 {
            let key = format!("key{}", i % 150);
            if i % 9 == 4 && model.get(&key).is_some_and(Option::is_some) {
                store.remove(key.clone()).unwrap();
                model.insert(key, None);
            } else {
                let value = format!("value{i}-{}", "x".repeat((i * 13 % 90) as usize));
                store.set(key.clone(), value.clone()).unwrap();
                model.insert(key, Some(value));
            }
        }
    }
    let logs = log_files(dir.path());
    assert!(logs.len() >= 5, "{logs:?}");
    Template { dir, model, logs }
}

/// A copy of the template's directory, with `damage` applied to the copy of log `victim`.
fn damaged_copy(
    t: &Template,
    victim: usize,
    damage: impl FnOnce(&mut Vec<u8>),
) -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    fs::copy(t.dir.path().join("engine"), dir.path().join("engine")).unwrap();
    let mut victim_path = PathBuf::new();
    let mut damage = Some(damage);
    for (i, log) in t.logs.iter().enumerate() {
        let copy = dir.path().join(log.file_name().unwrap());
        let mut bytes = fs::read(log).unwrap();
        if i == victim {
            if let Some(damage) = damage.take() {
                damage(&mut bytes);
            }
            victim_path = copy.clone();
        }
        fs::write(&copy, &bytes).unwrap();
    }
    (dir, victim_path)
}

/// Every key reads back as the model says, or fails as corruption; never a wrong value.
/// Returns how many keys read back right.
fn check_reads(store: &KvStore, model: &BTreeMap<String, Option<String>>, case: &str) -> usize {
    let mut right = 0;
    for (key, want) in model {
        match store.get(key.clone()) {
            Ok(got) if &got == want => right += 1,
            Ok(got) => panic!("{case}: key {key} read back {got:?}, wrote {want:?}"),
            Err(e) => assert!(e.is_corruption(), "{case}: key {key}: {e}"),
        }
    }
    right
}

/// Opens `dir`, catching panics: a panic is a failure whatever the input.
fn open(dir: &Path, case: &str) -> kvs::Result<KvStore> {
    catch_unwind(AssertUnwindSafe(|| KvStore::open_with(dir, options())))
        .unwrap_or_else(|_| panic!("{case}: open panicked"))
}

#[test]
fn bit_flips_in_closed_files_fail_open_naming_file_and_offset() {
    let t = template();
    let mut rng = rng(1);
    let closed = t.logs.len() - 1;
    let n = cases();
    let mut opened = 0;
    for case in 0..n {
        let victim = rng.below(closed as u64) as usize;
        let len = fs::metadata(&t.logs[victim]).unwrap().len();
        let byte = rng.below(len) as usize;
        let bit = rng.below(8);
        let name = format!(
            "case {case}: bit {bit} of byte {byte} of {:?}",
            t.logs[victim]
        );
        let (dir, path) = damaged_copy(&t, victim, |b| b[byte] ^= 1 << bit);
        let before = fs::read(&path).unwrap();
        match open(dir.path(), &name) {
            Err(e @ KvsError::Corruption { .. }) => {
                let KvsError::Corruption {
                    path: at, offset, ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(at, &path, "{name}: {e}");
                assert!(
                    *offset <= byte as u64,
                    "{name}: offset {offset} after the flip"
                );
                let message = e.to_string();
                assert!(message.contains(&path.display().to_string()), "{message}");
                assert!(message.contains(&offset.to_string()), "{message}");
                // Nothing was cut or deleted.
                assert_eq!(fs::read(&path).unwrap(), before, "{name}: file changed");
                assert_eq!(log_files(dir.path()).len(), t.logs.len(), "{name}");
            }
            Err(e) => panic!("{name}: expected corruption, got {e}"),
            // A CRC-32 catches every single-bit flip, so this does not happen; if it did, the
            // values would still have to be right.
            Ok(store) => {
                check_reads(&store, &t.model, &name);
                opened += 1;
            }
        }
    }
    println!(
        "{n} bit flips in closed files: {} opens failed naming file and offset, {opened} opened",
        n - opened
    );
}

#[test]
fn random_garbage_tails_are_cut_off_or_refused() {
    let t = template();
    let mut rng = rng(2);
    let newest = t.logs.len() - 1;
    let original_len = fs::metadata(&t.logs[newest]).unwrap().len();
    // A valid record to plant after the garbage: then the garbage is not a torn write.
    let record = {
        let good = fs::read(&t.logs[newest]).unwrap();
        good[8..].to_vec()
    };
    let n = (cases() / 4).max(50);
    let (mut cut, mut refused) = (0, 0);
    for case in 0..n {
        let len = 1 + rng.below(if case % 2 == 0 { 64 } else { 8_192 }) as usize;
        let mut tail = rng.bytes(len);
        let plant = case % 10 == 9;
        if plant {
            tail.extend_from_slice(&record);
        }
        let name = format!("case {case}: {len}-byte garbage tail, valid record after: {plant}");
        let (dir, path) = damaged_copy(&t, newest, |b| b.extend_from_slice(&tail));
        match open(dir.path(), &name) {
            Ok(store) => {
                assert!(
                    !plant,
                    "{name}: a valid record after garbage was thrown away"
                );
                assert_eq!(fs::metadata(&path).unwrap().len(), original_len, "{name}");
                assert_eq!(
                    check_reads(&store, &t.model, &name),
                    t.model.len(),
                    "{name}"
                );
                cut += 1;
            }
            Err(e @ KvsError::Corruption { .. }) => {
                let KvsError::Corruption {
                    path: at, offset, ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(at, &path, "{name}: {e}");
                assert_eq!(*offset, original_len, "{name}: {e}");
                refused += 1;
            }
            Err(e) => panic!("{name}: expected corruption, got {e}"),
        }
    }
    assert_eq!(
        refused,
        n / 10,
        "only tails followed by a valid record are refused"
    );
    println!("{n} garbage tails: {cut} cut off, {refused} refused (valid record after them)");
}

#[test]
fn random_bytes_in_place_of_a_log_never_panic_or_return_wrong_values() {
    let t = template();
    let mut rng = rng(3);
    let n = (cases() / 4).max(50);
    let (mut opened, mut refused) = (0, 0);
    for case in 0..n {
        let victim = rng.below(t.logs.len() as u64) as usize;
        let len = rng.below(6_000) as usize;
        // Half keep a valid header, so that the bytes reach the record parser.
        let keep_magic = case % 2 == 0;
        let mut junk = rng.bytes(len);
        // Header-shaped junk: a plausible kind and small lengths, so the checksum is checked.
        for chunk in junk.chunks_mut(40) {
            if chunk.len() >= 13 && rng.below(2) == 0 {
                chunk[4] = 1 + rng.below(2) as u8;
                chunk[5..9].copy_from_slice(&(rng.below(20) as u32).to_le_bytes());
                chunk[9..13].copy_from_slice(&(rng.below(20) as u32).to_le_bytes());
            }
        }
        let name = format!("case {case}: {len} random bytes as {:?}", t.logs[victim]);
        let (dir, _) = damaged_copy(&t, victim, |b| {
            b.truncate(if keep_magic { 8 } else { 0 });
            b.extend_from_slice(&junk);
        });
        match open(dir.path(), &name) {
            Ok(store) => {
                // Keys whose latest record was in the replaced file may read as an older
                // value or as missing; every other key must read right or as corruption,
                // and no value may be one that was never written for its key.
                for key in t.model.keys() {
                    match store.get(key.clone()) {
                        Ok(Some(v)) => {
                            let i: u64 = key[3..].parse().unwrap();
                            let written = v
                                .strip_prefix("value")
                                .and_then(|rest| rest.split('-').next())
                                .and_then(|n| n.parse::<u64>().ok())
                                .is_some_and(|n| n % 150 == i);
                            assert!(written, "{name}: key {key} read back {v:?}");
                        }
                        Ok(None) => {}
                        Err(e) => assert!(e.is_corruption(), "{name}: {e}"),
                    }
                }
                opened += 1;
            }
            Err(e) => {
                assert!(e.is_corruption(), "{name}: expected corruption, got {e}");
                refused += 1;
            }
        }
    }
    println!("{n} files of random bytes: {opened} opened, {refused} refused");
}

/// A get compares the key it looks up with the copy in the record it reads (see `index.rs`):
/// a record whose key bytes were damaged under an open store must still be found, and
/// reported as corruption naming the file and the record's offset, not taken for a key that
/// is not set (and a key stored next to it still reads).
#[test]
fn a_damaged_key_in_a_record_is_corruption_for_a_get_not_a_missing_key() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    store.set("alpha".to_owned(), "one".to_owned()).unwrap();
    store.set("beta".to_owned(), "two".to_owned()).unwrap();
    let logs = log_files(dir.path());
    let log = logs.last().unwrap();
    // The first record starts after the 8-byte file header; its key after the 17-byte
    // version-2 header (a set without a deadline).
    let record = 8u64;
    let mut bytes = fs::read(log).unwrap();
    assert_eq!(
        &bytes[25..30],
        b"alpha",
        "the record's key where the format says"
    );
    bytes[26] ^= 0x20;
    {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(log).unwrap();
        file.write_all_at(&bytes[26..27], 26).unwrap();
    }
    match store.get("alpha".to_owned()) {
        Err(KvsError::Corruption { path, offset, .. }) => {
            assert_eq!(&path, log);
            assert_eq!(offset, record);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(
        store.get("beta".to_owned()).unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(
        store.get("aLpha".to_owned()).unwrap(),
        None,
        "the damaged copy names no key"
    );
}
