//! Stores written by earlier releases keep opening, with every key intact.
//!
//! `tests/fixtures/<release>/{kvs,sled}/` are data directories written by that release with
//! the deterministic workload below (`write_fixture`, run by hand once per release that
//! changes an on-disk format). Each test copies one into a temporary directory (opening may
//! write: the lock file, a cut-back tail, newer bookkeeping) and checks it against the model.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

mod support;

use kvs::{
    now_millis, AnyEngine, EngineKind, KeyExpiry, KvStore, KvStoreOptions, KvsEngine, WriteBatch,
};

/// The workload every fixture holds: several log files (small files), overwrites, removes,
/// binary keys and values, an empty value, and one value larger than a file.
fn workload() -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut ops = Vec::new();
    for round in 0..3u32 {
        for i in 0..150u32 {
            let key = format!("key-{i:03}").into_bytes();
            let value = format!("value-{i}-round-{round}-{}", "x".repeat((i % 40) as usize));
            ops.push((key, Some(value.into_bytes())));
        }
        for i in (0..150u32).filter(|i| i % 7 == round) {
            ops.push((format!("key-{i:03}").into_bytes(), None));
        }
    }
    ops.push((b"\x00bin\xffkey".to_vec(), Some(vec![0, 1, 2, 255, 254])));
    ops.push((b"empty".to_vec(), Some(Vec::new())));
    ops.push((
        b"large".to_vec(),
        Some((0..9000u32).map(|i| i as u8).collect()),
    ));
    ops
}

/// What the workload leaves: key to value.
fn model() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for (key, value) in workload() {
        match value {
            Some(value) => {
                model.insert(key, value);
            }
            None => {
                model.remove(&key);
            }
        }
    }
    model
}

fn apply_workload(engine: &impl KvsEngine) {
    for (key, value) in workload() {
        match value {
            Some(value) => engine.set_bytes(&key, &value).unwrap(),
            None => engine.remove_bytes(&key).unwrap(),
        }
    }
}

fn fixture(release: &str, engine: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(release)
        .join(engine)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn assert_holds_model(engine: &impl KvsEngine) {
    let model = model();
    assert_eq!(engine.len().unwrap(), model.len());
    for (key, value) in &model {
        assert_eq!(
            engine.get_bytes(key).unwrap().as_ref(),
            Some(value),
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    for i in (0..150u32).filter(|i| i % 7 == 2) {
        let key = format!("key-{i:03}");
        assert_eq!(engine.get_bytes(key.as_bytes()).unwrap(), None, "{key}");
    }
}

/// Opens a copy of the fixture, checks it, writes to it, and checks it again after a reopen:
/// an old store is not only readable but goes on working.
fn check_release(release: &str, kind: EngineKind) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(release, kind.name()), tmp.path());
    {
        let engine = AnyEngine::open(tmp.path(), None).unwrap();
        assert!(matches!(
            (&engine, kind),
            (AnyEngine::Kvs(_), EngineKind::Kvs) | (AnyEngine::Sled(_), EngineKind::Sled)
        ));
        assert_holds_model(&engine);
        engine.set_bytes(b"written-later", b"new").unwrap();
    }
    let engine = AnyEngine::open(tmp.path(), Some(kind)).unwrap();
    assert_holds_model_plus(&engine);
}

fn assert_holds_model_plus(engine: &AnyEngine) {
    assert_eq!(
        engine.get_bytes(b"written-later").unwrap().as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(engine.len().unwrap(), model().len() + 1);
}

/// A deadline no test outlives: 2100-01-01T00:00:00Z, in milliseconds since the Unix epoch.
const SLED_FIXTURE_DEADLINE: u64 = 4_102_444_800_000;

/// What a sled store of release 0.2.0 holds beyond [`workload`]: keys written by batches,
/// with and without deadlines, and deadlines set, moved and removed one key at a time.
fn apply_sled_v0_2_0_workload(engine: &impl KvsEngine) {
    for round in 0..3u32 {
        let mut batch = kvs::WriteBatch::new();
        for i in 0..40u32 {
            let key = format!("batch-{i:02}");
            let value = format!("batch {i} round {round}");
            if i.is_multiple_of(4) {
                batch.set_with_deadline(
                    key.as_bytes(),
                    value.as_bytes(),
                    SLED_FIXTURE_DEADLINE + u64::from(i),
                );
            } else {
                batch.set(key.as_bytes(), value.as_bytes());
            }
        }
        batch.remove(format!("batch-{:02}", 39 - round).as_bytes());
        engine.apply_batch(&batch).unwrap();
    }
    engine
        .set_with_deadline_bytes(b"ttl-set", b"t", SLED_FIXTURE_DEADLINE)
        .unwrap();
    engine.set_bytes(b"ttl-moved", b"m").unwrap();
    assert!(engine
        .expire_at_bytes(b"ttl-moved", SLED_FIXTURE_DEADLINE + 1)
        .unwrap());
    engine
        .set_with_deadline_bytes(b"ttl-persisted", b"p", SLED_FIXTURE_DEADLINE)
        .unwrap();
    assert!(engine.persist_bytes(b"ttl-persisted").unwrap());
    engine
        .set_with_deadline_bytes(b"ttl-cleared", b"old", SLED_FIXTURE_DEADLINE)
        .unwrap();
    engine.set_bytes(b"ttl-cleared", b"new").unwrap();
    engine
        .set_with_deadline_bytes(b"ttl-cas", b"1", SLED_FIXTURE_DEADLINE)
        .unwrap();
    assert!(engine
        .compare_and_set_bytes(b"ttl-cas", Some(b"1"), Some(b"2"))
        .unwrap());
}

/// What [`apply_sled_v0_2_0_workload`] leaves: key to value and expiry.
fn sled_v0_2_0_model() -> BTreeMap<Vec<u8>, (Vec<u8>, kvs::KeyExpiry)> {
    use kvs::KeyExpiry::{At, Never};
    let mut model = BTreeMap::new();
    // Each round sets every key, then removes one (the later op wins): the last round
    // removes batch-37.
    for i in (0..40u32).filter(|&i| i != 37) {
        let expiry = if i.is_multiple_of(4) {
            At(SLED_FIXTURE_DEADLINE + u64::from(i))
        } else {
            Never
        };
        let value = format!("batch {i} round 2").into_bytes();
        model.insert(format!("batch-{i:02}").into_bytes(), (value, expiry));
    }
    model.insert(
        b"ttl-set".to_vec(),
        (b"t".to_vec(), At(SLED_FIXTURE_DEADLINE)),
    );
    model.insert(
        b"ttl-moved".to_vec(),
        (b"m".to_vec(), At(SLED_FIXTURE_DEADLINE + 1)),
    );
    model.insert(b"ttl-persisted".to_vec(), (b"p".to_vec(), Never));
    model.insert(b"ttl-cleared".to_vec(), (b"new".to_vec(), Never));
    model.insert(
        b"ttl-cas".to_vec(),
        (b"2".to_vec(), At(SLED_FIXTURE_DEADLINE)),
    );
    model
}

/// The v0.1.0 model, then the keys and deadlines of [`sled_v0_2_0_model`].
fn assert_holds_sled_v0_2_0_model(engine: &impl KvsEngine) {
    let extra = sled_v0_2_0_model();
    assert_eq!(engine.len().unwrap(), model().len() + extra.len());
    for (key, value) in &model() {
        assert_eq!(engine.get_bytes(key).unwrap().as_ref(), Some(value));
        assert_eq!(engine.expiry_bytes(key).unwrap(), kvs::KeyExpiry::Never);
    }
    for (key, (value, expiry)) in &extra {
        let shown = String::from_utf8_lossy(key);
        assert_eq!(
            engine.get_bytes(key).unwrap().as_ref(),
            Some(value),
            "{shown}"
        );
        assert_eq!(engine.expiry_bytes(key).unwrap(), *expiry, "{shown}");
    }
    assert_eq!(engine.get_bytes(b"batch-37").unwrap(), None);
}

#[test]
fn sled_store_of_release_0_2_0_opens_with_every_key_and_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("v0.2.0", "sled"), tmp.path());
    {
        let engine = AnyEngine::open(tmp.path(), None).unwrap();
        assert!(matches!(engine, AnyEngine::Sled(_)));
        assert_holds_sled_v0_2_0_model(&engine);
        let mut batch = kvs::WriteBatch::new();
        batch.set_with_deadline(b"written-later", b"new", SLED_FIXTURE_DEADLINE);
        engine.apply_batch(&batch).unwrap();
    }
    let engine = AnyEngine::open(tmp.path(), Some(EngineKind::Sled)).unwrap();
    assert_eq!(
        engine.expiry_bytes(b"written-later").unwrap(),
        kvs::KeyExpiry::At(SLED_FIXTURE_DEADLINE)
    );
    assert_eq!(
        engine.len().unwrap(),
        model().len() + sled_v0_2_0_model().len() + 1
    );
}

/// The deadline of the keys of release 0.2.0's workload that never expire in a test's life:
/// 2100-01-01T00:00:00Z.
const FAR_DEADLINE: u64 = 4_102_444_800_000;

/// What release 0.2.0's kvs fixture holds on top of [`workload`]: atomic batches (one larger
/// than a log file), keys with a far deadline, keys whose deadline passed before the fixture
/// was closed (their records are in the log, with their deadlines), a deadline given and then
/// removed again (`persist`), and a deadline given to an existing key (`expire_at`).
fn apply_workload_0_2_0(store: &KvStore) {
    let mut batch = WriteBatch::new();
    for i in 0..40u32 {
        batch.set(
            format!("batch-{i:02}").as_bytes(),
            format!("b{i}").as_bytes(),
        );
    }
    // Removes of keys set and not set; a set with a deadline.
    batch.remove(b"key-000").remove(b"never-set");
    batch.set_with_deadline(b"ttl-far-batch", b"far", FAR_DEADLINE);
    store.apply_batch(&batch).unwrap();
    let mut big = WriteBatch::new();
    for i in 0..6u32 {
        big.set(format!("big-batch-{i}").as_bytes(), &vec![i as u8; 1500]);
    }
    store.apply_batch(&big).unwrap();
    for i in 0..20u32 {
        store
            .set_with_deadline_bytes(format!("ttl-far-{i:02}").as_bytes(), b"far", FAR_DEADLINE)
            .unwrap();
    }
    assert!(store.expire_at_bytes(b"key-001", FAR_DEADLINE).unwrap());
    store
        .set_with_deadline_bytes(b"persisted", b"p", FAR_DEADLINE)
        .unwrap();
    assert!(store.persist_bytes(b"persisted").unwrap());
    let soon = now_millis() + 1_000;
    for i in 0..20u32 {
        store
            .set_with_deadline_bytes(format!("ttl-past-{i:02}").as_bytes(), b"gone", soon)
            .unwrap();
    }
    // An older value under an expiring one: it must not come back either.
    store.set("key-002".into(), "older".into()).unwrap();
    store
        .set_with_deadline_bytes(b"key-002", b"newer", soon)
        .unwrap();
    while now_millis() <= soon {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What release 0.2.0's kvs fixture leaves: key to value and deadline.
fn model_0_2_0() -> BTreeMap<Vec<u8>, (Vec<u8>, KeyExpiry)> {
    let mut model: BTreeMap<Vec<u8>, (Vec<u8>, KeyExpiry)> = model()
        .into_iter()
        .map(|(k, v)| (k, (v, KeyExpiry::Never)))
        .collect();
    for i in 0..40u32 {
        model.insert(
            format!("batch-{i:02}").into_bytes(),
            (format!("b{i}").into_bytes(), KeyExpiry::Never),
        );
    }
    model.remove(&b"key-000"[..]);
    model.remove(&b"key-002"[..]);
    model.insert(
        b"ttl-far-batch".to_vec(),
        (b"far".to_vec(), KeyExpiry::At(FAR_DEADLINE)),
    );
    for i in 0..6u32 {
        model.insert(
            format!("big-batch-{i}").into_bytes(),
            (vec![i as u8; 1500], KeyExpiry::Never),
        );
    }
    for i in 0..20u32 {
        model.insert(
            format!("ttl-far-{i:02}").into_bytes(),
            (b"far".to_vec(), KeyExpiry::At(FAR_DEADLINE)),
        );
    }
    if let Some(entry) = model.get_mut(&b"key-001"[..]) {
        entry.1 = KeyExpiry::At(FAR_DEADLINE);
    }
    model.insert(b"persisted".to_vec(), (b"p".to_vec(), KeyExpiry::Never));
    model
}

fn assert_holds_model_0_2_0(store: &KvStore) {
    let model = model_0_2_0();
    assert_eq!(store.len().unwrap(), model.len());
    for (key, (value, expiry)) in &model {
        let name = String::from_utf8_lossy(key);
        assert_eq!(
            store.get_bytes(key).unwrap().as_ref(),
            Some(value),
            "{name}"
        );
        assert_eq!(store.expiry_bytes(key).unwrap(), *expiry, "{name}");
    }
    for key in [
        "key-000",
        "key-002",
        "never-set",
        "ttl-past-00",
        "ttl-past-19",
    ] {
        assert_eq!(store.get_bytes(key.as_bytes()).unwrap(), None, "{key}");
        assert_eq!(
            store.expiry_bytes(key.as_bytes()).unwrap(),
            KeyExpiry::Missing,
            "{key}"
        );
    }
}

#[test]
fn kvs_store_of_release_0_2_0_opens_with_every_key_and_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("v0.2.0", "kvs"), tmp.path());
    {
        let store = KvStore::open(tmp.path()).unwrap();
        assert_holds_model_0_2_0(&store);
        store.set_bytes(b"written-later", b"new").unwrap();
    }
    let store = KvStore::open(tmp.path()).unwrap();
    assert_eq!(
        store.get_bytes(b"written-later").unwrap(),
        Some(b"new".to_vec())
    );
    assert_eq!(store.len().unwrap(), model_0_2_0().len() + 1);
    store.remove_bytes(b"written-later").unwrap();
    // Compaction drops the expired records and keeps every deadline.
    store.compact().unwrap();
    assert_holds_model_0_2_0(&store);
    drop(store);
    assert_holds_model_0_2_0(&KvStore::open(tmp.path()).unwrap());
}

#[test]
fn kvs_store_of_release_0_2_0_is_of_format_version_2() {
    // Walked by hand: every file is of version 2, and the log holds batches, records with
    // deadlines and seals.
    let mut kinds = BTreeMap::<u8, usize>::new();
    for (_, path) in support::log_files_with_ids(&fixture("v0.2.0", "kvs")) {
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"kvs-log\x02", "{}", path.display());
        let mut at = 8;
        while at < bytes.len() {
            *kinds.entry(bytes[at + 4]).or_default() += 1;
            at += support::record_len_at(&bytes, at);
        }
        assert_eq!(at, bytes.len(), "{}", path.display());
    }
    assert!(support::log_files(&fixture("v0.2.0", "kvs")).len() >= 3);
    for kind in [0x11, 0x12, 0x13, 0x14, 0x15] {
        assert!(
            kinds.contains_key(&kind),
            "no record of kind {kind:#x}: {kinds:?}"
        );
    }
}

#[test]
fn a_store_of_release_0_1_0_writes_on_in_a_version_2_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("v0.1.0", "kvs"), tmp.path());
    let before = support::log_files(tmp.path());
    let old_active = fs::read(before.last().unwrap()).unwrap();
    {
        let store = KvStore::open(tmp.path()).unwrap();
        store.set_bytes(b"written-later", b"new").unwrap();
    }
    let after = support::log_files(tmp.path());
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        &fs::read(after.last().unwrap()).unwrap()[..8],
        b"kvs-log\x02"
    );
    // The old active file kept its records and got a version-1 seal (kind 3, its offset).
    let sealed = fs::read(&before[before.len() - 1]).unwrap();
    assert_eq!(&sealed[..old_active.len()], &old_active[..]);
    let seal = &sealed[old_active.len()..];
    assert_eq!(seal.len(), 21);
    assert_eq!(seal[4], 3);
    assert_eq!(&seal[13..], &(old_active.len() as u64).to_le_bytes());
    assert_eq!(
        seal,
        support::v1_record(3, b"", &(old_active.len() as u64).to_le_bytes())
    );
    let engine = AnyEngine::open(tmp.path(), Some(EngineKind::Kvs)).unwrap();
    assert_holds_model_plus(&engine);
}

#[test]
fn kvs_store_of_release_0_1_0_opens_with_every_key() {
    check_release("v0.1.0", EngineKind::Kvs);
}

#[test]
fn sled_store_of_release_0_1_0_opens_with_every_key() {
    check_release("v0.1.0", EngineKind::Sled);
}

#[test]
fn kvs_store_of_release_0_1_0_compacts() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("v0.1.0", "kvs"), tmp.path());
    let store = KvStore::open(tmp.path()).unwrap();
    store.compact().unwrap();
    assert_holds_model(&store);
    drop(store);
    assert_holds_model(&KvStore::open(tmp.path()).unwrap());
}

#[test]
fn kvs_store_of_release_0_1_0_gets_a_manifest_that_guards_it_from_then_on() {
    // Release 0.1.0 wrote no MANIFEST: its store opens as it always did, and comes out of that
    // open with one, so that a closed file deleted afterwards is caught.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("v0.1.0", "kvs"), tmp.path());
    assert!(!tmp.path().join("MANIFEST").exists());
    assert_holds_model(&KvStore::open(tmp.path()).unwrap());
    assert!(tmp.path().join("MANIFEST").is_file());
    assert_holds_model(&KvStore::open(tmp.path()).unwrap());

    let victim = tmp.path().join("3.log");
    fs::remove_file(&victim).unwrap();
    match KvStore::open(tmp.path()) {
        Err(kvs::KvsError::Corruption { path, reason, .. }) => {
            assert_eq!(path, victim);
            assert!(reason.contains("3.log is missing"), "{reason}");
        }
        Err(e) => panic!("expected corruption in 3.log, got {e}"),
        Ok(_) => panic!("the store opened without its 3.log"),
    }
}

/// Writes the fixtures of the running release into `$KVS_WRITE_FIXTURE/{kvs,sled}`:
/// `KVS_WRITE_FIXTURE=kvs-core/tests/fixtures/vX.Y.Z cargo test -p kvs --test fixtures --
/// --ignored write_fixture`. Run once, when a release changes an on-disk format, and commit
/// the result beside the older ones.
#[test]
#[ignore]
fn write_fixture() {
    let root = PathBuf::from(std::env::var("KVS_WRITE_FIXTURE").expect("KVS_WRITE_FIXTURE"));
    let kvs_dir = root.join("kvs");
    {
        // Small files, and no automatic compaction, so the fixture has several sealed files.
        let options = KvStoreOptions::default()
            .max_file_size(4096)
            .compaction_min_stale(u64::MAX);
        let store = KvStore::open_with(&kvs_dir, options).unwrap();
        apply_workload(&store);
        assert_holds_model(&store);
        // Release 0.2.0: batches and deadlines.
        apply_workload_0_2_0(&store);
        assert_holds_model_0_2_0(&store);
    }
    let _ = fs::remove_file(kvs_dir.join("LOCK"));
    let sled_dir = root.join("sled");
    {
        let engine = AnyEngine::open(&sled_dir, Some(EngineKind::Sled)).unwrap();
        apply_workload(&engine);
        // Release 0.2.0 and later: batches and deadlines too.
        apply_sled_v0_2_0_workload(&engine);
        assert_holds_sled_v0_2_0_model(&engine);
        engine.flush().unwrap();
    }
    let _ = fs::remove_file(sled_dir.join("LOCK"));
}

/// A log file of a format version this release does not know is refused by name and version,
/// in a closed file and in the newest one, and nothing is changed: never read as version 1,
/// never taken for garbage and cut off.
#[test]
fn a_log_file_of_an_unknown_future_format_version_is_refused_by_version() {
    for file in ["3.log", "8.log"] {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&fixture("v0.1.0", "kvs"), tmp.path());
        let path = tmp.path().join(file);
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"kvs-log\x01");
        bytes[7] = 3;
        fs::write(&path, &bytes).unwrap();
        let err = KvStore::open(tmp.path()).err().expect("open must fail");
        let message = err.to_string();
        assert!(
            message.contains("unsupported format version 3") && message.contains(file),
            "{file}: {message}"
        );
        assert_eq!(fs::read(&path).unwrap(), bytes, "{file} was changed");
    }
}

/// Version-1 records under a version-2 file header (a damaged version byte) are not read as
/// version 2 records, nor cut off as a torn tail: the first record's header fails its
/// checksum, and open refuses, naming the file, changing nothing.
#[test]
fn version_1_records_under_a_version_2_header_are_refused() {
    for file in ["3.log", "8.log"] {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&fixture("v0.1.0", "kvs"), tmp.path());
        let path = tmp.path().join(file);
        let mut bytes = fs::read(&path).unwrap();
        bytes[7] = 2;
        fs::write(&path, &bytes).unwrap();
        match KvStore::open(tmp.path()) {
            Err(kvs::KvsError::Corruption {
                path: at,
                offset,
                reason,
            }) => {
                assert_eq!((at, offset), (path.clone(), 8), "{file}: {reason}");
                assert!(reason.contains("damaged record header"), "{file}: {reason}");
            }
            other => panic!("{file}: expected corruption, got {:?}", other.map(|_| ())),
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "{file} was changed");
    }
}
