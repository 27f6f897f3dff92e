//! Hint files (see `engines/log/hint.rs`) on real files: written for closed log files, used by
//! open in place of a replay, and never trusted over the log. Every kind of damage to a hint
//! (deleted, cut short, a flipped bit, the hint of another file, one left from a log file since
//! replaced) opens with every key as a model says and a warning naming the hint, and the hint
//! is written again; a process killed while writing a hint leaves a store that opens correctly.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};

use kvs::{KeyExpiry, KvStore, KvStoreOptions, KvsEngine, WriteBatch};
use tempfile::TempDir;

mod support;

/// Every warning logged by the library, to be looked up by the directory it names (tests run
/// in parallel, each in its own directory).
struct Capture;

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            WARNINGS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture_warnings() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        log::set_logger(&Capture).expect("no other logger");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

/// The warnings logged so far that mention `what`.
fn warnings_about(what: &Path) -> Vec<String> {
    let what = what.display().to_string();
    WARNINGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|w| w.contains(&what))
        .cloned()
        .collect()
}

/// Small files, so that a few hundred KiB of writes make several closed files; no background
/// compaction, so that the files stay as written.
fn options() -> KvStoreOptions {
    KvStoreOptions::default()
        .max_file_size(16 << 10)
        .compaction_min_stale(u64::MAX)
}

/// What the store should hold: key to value and deadline.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// A far-future deadline, so that nothing expires during the test.
const FAR: u64 = 4_000_000_000_000;

/// Writes sets, overwrites, removes, sets with deadlines and batches (so that hints hold every
/// kind of entry and batch members) over several closed files; returns the model.
fn fill(store: &KvStore, seed: u64) -> Model {
    let mut model = Model::new();
    let mut rng = support::Rng(seed);
    for i in 0..3000u64 {
        let key = format!("key-{}", rng.below(400)).into_bytes();
        match i % 10 {
            0..=4 => {
                let len = 20 + rng.below(60) as usize;
                let value = rng.bytes(len);
                store.set_bytes(&key, &value).unwrap();
                model.insert(key, (value, None));
            }
            5 | 6 => {
                if model.remove(&key).is_some() {
                    store.remove_bytes(&key).unwrap();
                }
            }
            7 => {
                let value = rng.bytes(30);
                let deadline = FAR + i;
                store
                    .set_with_deadline_bytes(&key, &value, deadline)
                    .unwrap();
                model.insert(key, (value, Some(deadline)));
            }
            _ => {
                let mut batch = WriteBatch::new();
                for j in 0..4 {
                    let key = format!("batch-{}", (i + j) % 150).into_bytes();
                    if j == 3 {
                        batch.remove(&key);
                        model.remove(&key);
                    } else {
                        let value = rng.bytes(25);
                        batch.set(&key, &value);
                        model.insert(key, (value, None));
                    }
                }
                store.apply_batch(&batch).unwrap();
            }
        }
    }
    model
}

/// Fails unless `store` holds exactly what `model` says: every value and deadline, and no
/// other key.
fn assert_matches(store: &KvStore, model: &Model) {
    let mut keys = store.keys().unwrap();
    keys.sort();
    let expected: Vec<Vec<u8>> = model.keys().cloned().collect();
    assert_eq!(keys, expected, "the store holds other keys than the model");
    for (key, (value, deadline)) in model {
        assert_eq!(
            store.get_bytes(key).unwrap().as_deref(),
            Some(&value[..]),
            "{}",
            String::from_utf8_lossy(key)
        );
        let expiry = match deadline {
            Some(d) => KeyExpiry::At(*d),
            None => KeyExpiry::Never,
        };
        assert_eq!(store.expiry_bytes(key).unwrap(), expiry);
    }
}

/// The ids the MANIFEST lists as closed.
fn closed_ids(dir: &Path) -> Vec<u32> {
    support::manifest_entries(dir)
        .into_iter()
        .filter(|&(_, state, _, _)| state == 1)
        .map(|(id, _, _, _)| id)
        .collect()
}

fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}.hint"))
}

/// A store of several closed files, each with its hint, and its model.
fn store_with_hints(seed: u64) -> (TempDir, Model) {
    capture_warnings();
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    let model = fill(&store, seed);
    drop(store);
    let closed = closed_ids(dir.path());
    assert!(closed.len() >= 4, "{closed:?}");
    for id in &closed {
        assert!(hint_path(dir.path(), *id).is_file(), "no hint for {id}.log");
    }
    (dir, model)
}

/// Fails unless every closed file of `dir` has a good hint (as `verify_dir` judges it).
fn assert_hints_good(dir: &Path) {
    let report = kvs::verify_dir(dir).unwrap();
    assert!(!report.is_damaged());
    assert_eq!(report.hint_warnings, vec![], "hints left bad");
    for id in closed_ids(dir) {
        assert!(hint_path(dir, id).is_file(), "no hint for {id}.log");
    }
}

#[test]
fn closed_files_get_hints_and_open_loads_them_without_reading_the_files() {
    let (dir, model) = store_with_hints(1);
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    assert_matches(&store, &model);
    drop(store);
    assert_hints_good(dir.path());

    // A store where every record is live (no key written twice).
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    let mut model = Model::new();
    for i in 0..1000u32 {
        let (key, value) = (
            format!("unique-{i}").into_bytes(),
            vec![b'a' + (i % 26) as u8; 40],
        );
        store.set_bytes(&key, &value).unwrap();
        model.insert(key, (value, None));
    }
    drop(store);
    // A byte of a value in a closed file flipped in place, its modification time kept (as bit
    // rot on the disk would): a replay would refuse the file (its checksum fails), but open
    // loads the file from its hint and does not read it. The read of that key finds the
    // damage and names the file: a hint never makes the log say what it does not.
    let id = closed_ids(dir.path())[1];
    let log = dir.path().join(format!("{id}.log"));
    let mtime = fs::metadata(&log).unwrap().modified().unwrap();
    let mut bytes = fs::read(&log).unwrap();
    // The last byte before the seal record (25 bytes): a value byte of the last record.
    let at = bytes.len() - 26;
    bytes[at] ^= 0x40;
    fs::write(&log, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let store = KvStore::open_with(dir.path(), options().read_only(true)).unwrap();
    let mut failed = Vec::new();
    for key in model.keys() {
        if let Err(e) = store.get_bytes(key) {
            failed.push(e.to_string());
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains(&log.display().to_string()),
        "{}",
        failed[0]
    );
    drop(store);
    // Without the hint, open replays the file and refuses it.
    fs::remove_file(hint_path(dir.path(), id)).unwrap();
    let err = KvStore::open_with(dir.path(), options().read_only(true))
        .err()
        .expect("a replay refuses the damaged file");
    assert!(err.to_string().contains(&format!("{id}.log")), "{err}");
}

/// Damages the hint of one closed file with `damage`, then checks that open gives every key
/// of the model with a warning naming the hint (unless `warns` is false: a missing hint is
/// no warning), and that the hint is good again after the store is closed.
fn check_damage(seed: u64, warns: bool, damage: impl FnOnce(&Path, u32, u32)) {
    let (dir, model) = store_with_hints(seed);
    let closed = closed_ids(dir.path());
    let (victim, other) = (closed[2], closed[1]);
    damage(dir.path(), victim, other);
    let hint = hint_path(dir.path(), victim);
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    assert_matches(&store, &model);
    let warned = warnings_about(&hint);
    if warns {
        assert!(
            warned
                .iter()
                .any(|w| w.contains(&format!("replaying {victim}.log"))),
            "no warning about {}: {warned:?}",
            hint.display()
        );
    } else {
        assert_eq!(warned, Vec::<String>::new());
    }
    drop(store);
    assert_hints_good(dir.path());
    // And the rewritten hint serves the next open.
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    assert_matches(&store, &model);
}

#[test]
fn a_deleted_hint_is_replayed_silently_and_written_again() {
    check_damage(2, false, |dir, id, _| {
        fs::remove_file(hint_path(dir, id)).unwrap()
    });
}

#[test]
fn a_truncated_hint_is_replayed_with_a_warning() {
    for cut in [0usize, 10, 40, 1] {
        check_damage(3, true, |dir, id, _| {
            let path = hint_path(dir, id);
            let bytes = fs::read(&path).unwrap();
            let keep = if cut == 1 { bytes.len() - 1 } else { cut };
            fs::write(&path, &bytes[..keep]).unwrap();
        });
    }
}

#[test]
fn a_bit_flipped_hint_is_replayed_with_a_warning() {
    // In the header (the id, the length, the fingerprint, the log file's inode and time), in
    // an entry's offset, in a key, in the trailer counts, in the checksum.
    for at in [
        13usize,
        17,
        25,
        30,
        40,
        52 + 6,
        52 + 14,
        usize::MAX - 20,
        usize::MAX,
    ] {
        check_damage(4, true, |dir, id, _| {
            let path = hint_path(dir, id);
            let mut bytes = fs::read(&path).unwrap();
            let at = if at > bytes.len() {
                bytes.len() - (usize::MAX - at) - 1
            } else {
                at
            };
            bytes[at] ^= 0x04;
            fs::write(&path, &bytes).unwrap();
        });
    }
}

#[test]
fn the_hint_of_another_file_is_replayed_with_a_warning() {
    check_damage(5, true, |dir, id, other| {
        fs::copy(hint_path(dir, other), hint_path(dir, id)).unwrap();
    });
}

#[test]
fn a_hint_of_a_newer_format_is_replayed_with_a_warning() {
    check_damage(6, true, |dir, id, _| {
        let path = hint_path(dir, id);
        let mut bytes = fs::read(&path).unwrap();
        bytes[7] = 2;
        fs::write(&path, &bytes).unwrap();
    });
}

#[test]
fn hints_left_from_log_files_since_replaced_are_not_used() {
    // Two stores with the same file ids and other records: store A's log files and MANIFEST
    // are replaced by store B's (a restore from a backup that left A's hints behind).
    let (a, _) = store_with_hints(7);
    let (b, model_b) = store_with_hints(8);
    for entry in fs::read_dir(a.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            fs::remove_file(&path).unwrap();
        }
    }
    for entry in fs::read_dir(b.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".log") || name == "MANIFEST" {
            fs::copy(&path, a.path().join(&name)).unwrap();
        }
    }
    let store = KvStore::open_with(a.path(), options()).unwrap();
    assert_matches(&store, &model_b);
    let stale = closed_ids(a.path())
        .into_iter()
        .filter(|&id| {
            warnings_about(&hint_path(a.path(), id))
                .iter()
                .any(|w| w.contains("stale"))
        })
        .count();
    assert!(stale >= 1, "no hint reported stale");
    drop(store);
    assert_hints_good(a.path());
}

#[test]
fn a_hint_is_not_used_once_its_log_file_was_swapped_or_written_to() {
    // Two closed files of the same length swapped: each hint's header still matches the
    // MANIFEST entry of its id, but not the inode now under that name: open replays, and the
    // fingerprint check refuses the store, naming the file.
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    for i in 0..1500 {
        store
            .set(format!("key{:03}", i % 100), format!("{i:08}"))
            .unwrap();
    }
    drop(store);
    let closed = closed_ids(dir.path());
    let len = |id: u32| {
        fs::metadata(dir.path().join(format!("{id}.log")))
            .unwrap()
            .len()
    };
    let (a, b) = closed
        .iter()
        .zip(&closed[1..])
        .map(|(&a, &b)| (a, b))
        .find(|&(a, b)| len(a) == len(b))
        .expect("two closed files of the same length");
    let (path_a, path_b) = (
        dir.path().join(format!("{a}.log")),
        dir.path().join(format!("{b}.log")),
    );
    let tmp = dir.path().join("swap");
    fs::rename(&path_a, &tmp).unwrap();
    fs::rename(&path_b, &path_a).unwrap();
    fs::rename(&tmp, &path_b).unwrap();
    let err = KvStore::open_with(dir.path(), options())
        .err()
        .expect("swapped files are refused, hints or not");
    assert!(err.to_string().contains("swapped"), "{err}");
    assert!(
        warnings_about(&hint_path(dir.path(), a))
            .iter()
            .any(|w| w.contains("replaced, copied or written to")),
        "{:?}",
        warnings_about(&hint_path(dir.path(), a))
    );
}

#[test]
fn read_only_opens_use_hints_and_write_none() {
    let (dir, model) = store_with_hints(9);
    let closed = closed_ids(dir.path());
    fs::remove_file(hint_path(dir.path(), closed[0])).unwrap();
    let damaged = hint_path(dir.path(), closed[1]);
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[60] ^= 1;
    fs::write(&damaged, &bytes).unwrap();
    let store = KvStore::open_with(dir.path(), options().read_only(true)).unwrap();
    assert_matches(&store, &model);
    drop(store);
    assert!(!hint_path(dir.path(), closed[0]).exists());
    assert_eq!(
        fs::read(&damaged).unwrap(),
        bytes,
        "read-only open rewrote a hint"
    );
    let report = kvs::verify_dir(dir.path()).unwrap();
    assert!(!report.is_damaged(), "a bad hint is not damage");
    assert_eq!(report.hint_warnings.len(), 1, "{:?}", report.hint_warnings);
    assert_eq!(report.hint_warnings[0].0, damaged);
}

#[test]
fn a_store_told_not_to_write_hints_writes_none_and_still_uses_good_ones() {
    capture_warnings();
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), options().write_hints(false)).unwrap();
    let model = fill(&store, 11);
    drop(store);
    let closed = closed_ids(dir.path());
    assert!(closed.len() >= 4, "{closed:?}");
    for id in &closed {
        assert!(!hint_path(dir.path(), *id).exists(), "a hint for {id}.log");
    }
    // Written by a store that does write them, then opened by one that does not: the hints
    // are loaded, and stay as they were.
    drop(KvStore::open_with(dir.path(), options()).unwrap());
    let hints: Vec<Vec<u8>> = closed
        .iter()
        .map(|id| fs::read(hint_path(dir.path(), *id)).unwrap())
        .collect();
    let store = KvStore::open_with(dir.path(), options().write_hints(false)).unwrap();
    assert_matches(&store, &model);
    drop(store);
    for (id, bytes) in closed.iter().zip(&hints) {
        assert_eq!(&fs::read(hint_path(dir.path(), *id)).unwrap(), bytes);
    }
}

#[test]
fn compaction_outputs_get_hints_and_the_replaced_files_lose_theirs() {
    let (dir, model) = store_with_hints(10);
    let before = closed_ids(dir.path());
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    store.compact().unwrap();
    drop(store);
    let after = closed_ids(dir.path());
    for id in &before {
        assert!(!after.contains(id));
        assert!(
            !hint_path(dir.path(), *id).exists(),
            "{id}.hint outlived {id}.log"
        );
    }
    assert_hints_good(dir.path());
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    assert_matches(&store, &model);
}

#[test]
fn a_checkpoint_links_the_hints_of_the_files_it_links() {
    let (dir, model) = store_with_hints(12);
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    let parent = TempDir::new().unwrap();
    let dest = parent.path().join("copy");
    store.checkpoint(&dest).unwrap();
    drop(store);
    let closed = closed_ids(&dest);
    assert!(!closed.is_empty());
    // Linked, so the same inode as the log file's: each hint is good for the copy.
    assert_hints_good(&dest);
    let copy = KvStore::open_with(&dest, options().read_only(true)).unwrap();
    assert_matches(&copy, &model);
    for id in closed {
        assert!(warnings_about(&hint_path(&dest, id)).is_empty());
    }
}

#[test]
fn only_canonical_hint_names_are_hints() {
    let (dir, model) = store_with_hints(11);
    let id = closed_ids(dir.path())[0];
    let good = fs::read(hint_path(dir.path(), id)).unwrap();
    // Strays with the hint's bytes under names that are not its: left alone, not used.
    for name in [format!("0{id}.hint"), format!("+{id}.hint")] {
        fs::write(dir.path().join(name), &good).unwrap();
    }
    // What a crash while writing a hint leaves: removed.
    fs::write(dir.path().join(format!("{id}.hint.tmp")), &good[..40]).unwrap();
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    assert_matches(&store, &model);
    drop(store);
    assert!(dir.path().join(format!("0{id}.hint")).is_file());
    assert!(dir.path().join(format!("+{id}.hint")).is_file());
    assert!(!dir.path().join(format!("{id}.hint.tmp")).exists());
}

#[test]
fn stores_of_earlier_releases_open_by_replay_and_get_hints() {
    capture_warnings();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for release in ["v0.1.0", "v0.2.0"] {
        let from = fixtures.join(release).join("kvs");
        let dir = TempDir::new().unwrap();
        for entry in fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        let read_only = KvStore::open_with(dir.path(), options().read_only(true)).unwrap();
        let mut keys = read_only.keys().unwrap();
        keys.sort();
        let values: Vec<_> = keys
            .iter()
            .map(|k| read_only.get_bytes(k).unwrap())
            .collect();
        drop(read_only);
        let store = KvStore::open(dir.path()).unwrap();
        drop(store);
        let closed = closed_ids(dir.path());
        assert!(!closed.is_empty(), "{release}: no closed file");
        assert_hints_good(dir.path());
        let store = KvStore::open(dir.path()).unwrap();
        let mut reopened = store.keys().unwrap();
        reopened.sort();
        assert_eq!(reopened, keys, "{release}");
        for (key, value) in keys.iter().zip(&values) {
            assert_eq!(&store.get_bytes(key).unwrap(), value, "{release}");
        }
    }
}

const DIR_VAR: &str = "KVS_HINT_TEST_DIR";

fn crash_value(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// The model after the first `n` writes of [`crash_child_writer`].
fn crash_model(n: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    (0..n)
        .map(|i| (format!("k{}", i % 700).into_bytes(), crash_value(i)))
        .collect()
}

/// The child: writes, acknowledging each write on stdout, until the crash point stops it.
#[test]
#[ignore = "run as a child process by hints tests"]
fn crash_child_writer() {
    let dir = std::env::var(DIR_VAR).expect("directory");
    let store = KvStore::open_with(&dir, options()).unwrap();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 0..20_000u64 {
        store
            .set_bytes(format!("k{}", i % 700).as_bytes(), &crash_value(i))
            .unwrap();
        writeln!(out, "{}", i + 1).unwrap();
        out.flush().unwrap();
    }
    // The close writes the hints still missing: the crash point is reached by then.
    drop(store);
}

#[test]
fn a_process_killed_while_writing_a_hint_leaves_a_store_that_opens() {
    capture_warnings();
    for nth in [1, 3] {
        let dir = TempDir::new().unwrap();
        let mut child = support::child_test("crash_child_writer")
            .env(DIR_VAR, dir.path())
            .env("KVS_CRASH_AT", format!("hint:entries-written:{nth}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut acked = 0u64;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(line) = line else { break };
            if let Ok(n) = line.trim().parse::<u64>() {
                acked = n;
            }
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("crash point hint:entries-written reached"),
            "the child did not die writing a hint: {stderr}"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.ends_with(".hint.tmp").then_some(name)
            })
            .collect();
        assert_eq!(leftovers.len(), 1, "the crash left no hint half written");

        let store = KvStore::open_with(dir.path(), options()).unwrap();
        // The write in flight at the crash may or may not be there; nothing else may differ.
        let mut held: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for key in store.keys().unwrap() {
            let value = store.get_bytes(&key).unwrap().unwrap();
            held.insert(key, value);
        }
        assert!(
            held == crash_model(acked) || held == crash_model(acked + 1),
            "after {acked} acknowledged writes the store holds {} keys",
            held.len()
        );
        drop(store);
        for name in &leftovers {
            assert!(!dir.path().join(name).exists(), "{name} left after open");
        }
        assert_hints_good(dir.path());
    }
}
