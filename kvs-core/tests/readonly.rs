//! A store opened read-only (`KvStoreOptions::read_only`): it serves every key, refuses every
//! write, changes nothing on disk (every file's bytes and the directory listing are compared
//! before and after), takes a shared lock (read-only handles coexist, in one process or
//! several; a writer and a reader keep each other out), and works on a read-only mount.
//!
//! Tests run as root here, and root ignores file permissions: `chmod -R a-w` alone proves
//! little, so the store is also put on a tmpfs remounted read-only (skipped, loudly, where
//! mounting is not allowed).

mod support;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kvs::{AnyEngine, EngineKind, KvStore, KvStoreOptions, KvsEngine, KvsError, RecoveryMode};

/// Every entry under `dir`, by relative path: a file's bytes, or `None` for a directory.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if entry.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn read_only() -> KvStoreOptions {
    KvStoreOptions::default().read_only(true)
}

/// Writes a store of several log files (small files), with overwrites and removes, into
/// `dir`, closes it, and returns what it holds.
fn write_store(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let store = KvStore::open_with(
        dir,
        KvStoreOptions::default()
            .max_file_size(4096)
            .compaction_min_stale(u64::MAX),
    )
    .unwrap();
    let mut model = BTreeMap::new();
    for round in 0..3 {
        for i in 0..60u32 {
            let key = format!("key-{i:02}").into_bytes();
            let value = format!("value-{i}-{round}-{}", "v".repeat(3 * i as usize)).into_bytes();
            store.set_bytes(&key, &value).unwrap();
            model.insert(key, value);
        }
    }
    for i in (0..60u32).step_by(7) {
        let key = format!("key-{i:02}").into_bytes();
        store.remove_bytes(&key).unwrap();
        model.remove(&key);
    }
    model
}

fn assert_holds(store: &impl KvsEngine, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    assert_eq!(store.len().unwrap(), model.len());
    for (key, value) in model {
        assert_eq!(store.get_bytes(key).unwrap().as_ref(), Some(value));
    }
    assert_eq!(store.get_bytes(b"key-07").unwrap(), None);
}

fn assert_read_only_error(result: kvs::Result<()>, what: &str) {
    match result {
        Err(KvsError::InvalidArgument(message)) => {
            assert!(message.contains("read-only"), "{what}: {message}")
        }
        other => panic!("{what} on a read-only store: {other:?}"),
    }
}

/// Every write fails with the read-only error (before looking at its arguments: removing a
/// missing key says read-only, not "key not found"); flush does nothing.
fn assert_writes_refused(store: &KvStore) {
    assert_read_only_error(store.set_bytes(b"new", b"value"), "set");
    assert_read_only_error(store.set_bytes(b"key-01", b"value"), "overwrite");
    assert_read_only_error(store.remove_bytes(b"key-01"), "remove");
    assert_read_only_error(store.remove_bytes(b"missing"), "remove of a missing key");
    assert_read_only_error(
        store.set_many_bytes(&[(b"a", b"1"), (b"b", b"2")]),
        "set_many",
    );
    assert_read_only_error(store.compact(), "compact");
    store.flush().unwrap();
}

/// The newest log file of `dir`.
fn newest_log(dir: &Path) -> PathBuf {
    support::log_files(dir).pop().expect("a log file")
}

#[test]
fn read_only_store_serves_every_key_refuses_writes_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    assert!(support::log_files(dir.path()).len() > 3);
    let before = snapshot(dir.path());
    {
        let store = KvStore::open_with(dir.path(), read_only()).unwrap();
        assert_holds(&store, &model);
        assert_writes_refused(&store);
        // Still serving after the refusals.
        assert_holds(&store, &model);
        let clone = store.clone();
        drop(store);
        assert_holds(&clone, &model);
    }
    assert_eq!(snapshot(dir.path()), before);
    // The store is whole: a read-write open afterwards sees it all and can write.
    let store = KvStore::open(dir.path()).unwrap();
    assert_holds(&store, &model);
    store.set_bytes(b"after", b"ok").unwrap();
}

#[test]
fn read_only_store_works_through_any_engine() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    let before = snapshot(dir.path());
    for engine in [None, Some(EngineKind::Kvs)] {
        let store = AnyEngine::open_with(dir.path(), engine, read_only()).unwrap();
        assert_holds(&store, &model);
        let AnyEngine::Kvs(kvs) = &store else {
            panic!("not the kvs engine")
        };
        assert_writes_refused(kvs);
    }
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn sled_refuses_read_only_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sled = AnyEngine::open(dir.path(), Some(EngineKind::Sled)).unwrap();
        sled.set_bytes(b"k", b"v").unwrap();
    }
    let before = snapshot(dir.path());
    for engine in [None, Some(EngineKind::Sled)] {
        match AnyEngine::open_with(dir.path(), engine, read_only()) {
            Err(KvsError::InvalidArgument(message)) => {
                assert!(
                    message.contains("sled") && message.contains("read-only"),
                    "{message}"
                )
            }
            Err(e) => panic!("sled read-only open: {e:?}"),
            Ok(_) => panic!("sled read-only open succeeded"),
        }
    }
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn torn_tail_is_served_around_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    {
        let store = KvStore::open(dir.path()).unwrap();
        store.set_bytes(b"torn", &[7u8; 300]).unwrap();
    }
    // Tear the last record: a crash mid-write leaves a prefix of it.
    let newest = newest_log(dir.path());
    let len = fs::metadata(&newest).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let before = snapshot(dir.path());
    {
        let store = KvStore::open_with(dir.path(), read_only()).unwrap();
        assert_holds(&store, &model);
        assert_eq!(store.get_bytes(b"torn").unwrap(), None);
        assert_writes_refused(&store);
    }
    assert_eq!(snapshot(dir.path()), before, "the torn tail was cut");
    // Strict recovery refuses it, read-only or not, and changes nothing either.
    assert!(matches!(
        KvStore::open_with(dir.path(), read_only().recovery(RecoveryMode::Strict)),
        Err(KvsError::Corruption { .. })
    ));
    assert_eq!(snapshot(dir.path()), before);
    // It really was a torn tail: a read-write open cuts it.
    drop(KvStore::open(dir.path()).unwrap());
    assert!(fs::metadata(&newest).unwrap().len() < len - 100);
}

#[test]
fn zero_tail_is_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    // What a crash with `SyncPolicy::Always` leaves: the file extended ahead of its records.
    let newest = newest_log(dir.path());
    let len = fs::metadata(&newest).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len + 8192)
        .unwrap();
    let before = snapshot(dir.path());
    {
        let store = KvStore::open_with(dir.path(), read_only()).unwrap();
        assert_holds(&store, &model);
    }
    assert_eq!(snapshot(dir.path()), before, "the zero tail was cut");
    drop(KvStore::open(dir.path()).unwrap());
    assert_eq!(fs::metadata(&newest).unwrap().len(), len);
}

#[test]
fn crash_leftovers_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    // An unfinished compaction output.
    fs::write(dir.path().join("900.log.compacting"), b"half a compaction").unwrap();
    let before = snapshot(dir.path());
    {
        let store = KvStore::open_with(dir.path(), read_only()).unwrap();
        assert_holds(&store, &model);
    }
    assert_eq!(snapshot(dir.path()), before);
    // A read-write open does remove it: it was a leftover open would have cleaned up.
    drop(KvStore::open(dir.path()).unwrap());
    assert!(!dir.path().join("900.log.compacting").exists());
}

#[test]
fn committed_compaction_not_yet_renamed_is_refused_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    {
        let store = KvStore::open(dir.path()).unwrap();
        store.compact().unwrap();
    }
    // A crash after the compaction committed, before its output was renamed into place: the
    // MANIFEST lists the output, found only under its temporary name.
    let output = support::log_files(dir.path()).remove(0);
    let compacting = PathBuf::from(format!("{}.compacting", output.display()));
    fs::rename(&output, &compacting).unwrap();
    let before = snapshot(dir.path());
    match KvStore::open_with(dir.path(), read_only()) {
        Err(KvsError::InvalidArgument(message)) => {
            assert!(
                message.contains(&*compacting.to_string_lossy()) && message.contains("read-write"),
                "{message}"
            )
        }
        Err(e) => panic!("read-only open: {e:?}"),
        Ok(_) => panic!("read-only open of an unfinished compaction succeeded"),
    }
    assert_eq!(snapshot(dir.path()), before);
    // A read-write open finishes it, after which read-only opens.
    drop(KvStore::open(dir.path()).unwrap());
    let store = KvStore::open_with(dir.path(), read_only()).unwrap();
    assert_holds(&store, &model);
}

#[test]
fn release_0_1_0_store_opens_read_only_without_a_manifest_lock_or_rewrite() {
    // A store of the first release: no MANIFEST, no LOCK file.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0.1.0/kvs");
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    assert!(!dir.path().join("LOCK").exists());
    assert!(!dir.path().join("MANIFEST").exists());
    let before = snapshot(dir.path());
    {
        let store = KvStore::open_with(dir.path(), read_only()).unwrap();
        assert_eq!(
            store.get_bytes(b"empty").unwrap().as_deref(),
            Some(&b""[..])
        );
        assert_eq!(
            store.get_bytes(b"large").unwrap(),
            Some((0..9000u32).map(|i| i as u8).collect())
        );
        // Without a LOCK file there is no lock: a second read-only open is fine too.
        let second = KvStore::open_with(dir.path(), read_only()).unwrap();
        assert_eq!(second.len().unwrap(), store.len().unwrap());
        assert_writes_refused(&store);
    }
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn read_only_open_of_no_store_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(
        KvStore::open_with(&missing, read_only()),
        Err(KvsError::IoAt { .. })
    ));
    assert!(matches!(
        AnyEngine::open_with(&missing, None, read_only()),
        Err(KvsError::IoAt { .. })
    ));
    assert!(!missing.exists());
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    match KvStore::open_with(&empty, read_only()) {
        Err(e @ KvsError::IoAt { .. }) => {
            assert!(e.to_string().contains("no kvs log files"), "{e}")
        }
        Err(e) => panic!("read-only open of an empty directory: {e:?}"),
        Ok(_) => panic!("read-only open of an empty directory succeeded"),
    }
    assert!(snapshot(&empty).is_empty());
}

#[test]
fn read_only_opens_share_the_lock_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    let short = |options: KvStoreOptions| options.lock_wait(Duration::from_millis(50));
    let first = KvStore::open_with(dir.path(), short(read_only())).unwrap();
    let second = KvStore::open_with(dir.path(), short(read_only())).unwrap();
    assert_holds(&first, &model);
    assert_holds(&second, &model);
    assert!(matches!(
        KvStore::open_with(dir.path(), short(KvStoreOptions::default())),
        Err(KvsError::Locked { .. })
    ));
    drop(first);
    // One reader left: still no writer.
    assert!(matches!(
        KvStore::open_with(dir.path(), short(KvStoreOptions::default())),
        Err(KvsError::Locked { .. })
    ));
    drop(second);
    let writer = KvStore::open_with(dir.path(), short(KvStoreOptions::default())).unwrap();
    assert!(matches!(
        KvStore::open_with(dir.path(), short(read_only())),
        Err(KvsError::Locked { .. })
    ));
    drop(writer);
    drop(KvStore::open_with(dir.path(), short(read_only())).unwrap());
}

const DIR_VAR: &str = "KVS_READONLY_TEST_DIR";
const MODE_VAR: &str = "KVS_READONLY_TEST_MODE";
/// What the child prints once it holds the store.
const READY: &str = "child holds the store";

/// Child half of the cross-process tests: opens the store of `DIR_VAR` read-only or for
/// writing (`MODE_VAR`), prints [`READY`], and holds it until its stdin closes.
#[test]
#[ignore = "run by the cross-process tests"]
fn readonly_child_holds_store() {
    let dir = std::env::var(DIR_VAR).expect("dir");
    let options = match std::env::var(MODE_VAR).expect("mode").as_str() {
        "read-only" => read_only(),
        _ => KvStoreOptions::default(),
    };
    let store = KvStore::open_with(&dir, options).unwrap();
    assert!(store.len().unwrap() > 0);
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
    drop(store);
}

/// Runs `f` while a child process holds the store in `dir` open (`mode`: "read-only" or
/// "write"), then lets the child go and checks that it passed.
fn while_child_holds(dir: &Path, mode: &str, f: impl FnOnce()) {
    let mut command = support::child_test("readonly_child_holds_store");
    command
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn child");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let read = stdout.read_line(&mut line).expect("child output");
        seen.push_str(&line);
        // libtest may print the test's name on the same line first.
        if line.contains(READY) {
            break;
        }
        if read == 0 {
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("child exited before opening the store:\n{seen}\n{stderr}");
        }
    }
    f();
    drop(child.stdin.take());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && rest.contains("1 passed"),
        "child failed: {status}\n{seen}{rest}"
    );
}

#[test]
fn read_only_opens_coexist_across_processes_and_keep_a_writer_out() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_store(dir.path());
    let before = snapshot(dir.path());
    let short = |options: KvStoreOptions| options.lock_wait(Duration::from_millis(100));
    while_child_holds(dir.path(), "read-only", || {
        let store = KvStore::open_with(dir.path(), short(read_only())).unwrap();
        assert_holds(&store, &model);
        assert!(matches!(
            KvStore::open_with(dir.path(), short(KvStoreOptions::default())),
            Err(KvsError::Locked { .. })
        ));
        assert!(matches!(
            AnyEngine::open_with(dir.path(), None, short(KvStoreOptions::default())),
            Err(KvsError::Locked { .. })
        ));
    });
    assert_eq!(snapshot(dir.path()), before);
    // With the child gone and the reader dropped, a writer gets in.
    drop(KvStore::open(dir.path()).unwrap());
}

#[test]
fn a_writer_in_another_process_keeps_read_only_opens_out() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    while_child_holds(dir.path(), "write", || {
        assert!(matches!(
            KvStore::open_with(
                dir.path(),
                read_only().lock_wait(Duration::from_millis(100))
            ),
            Err(KvsError::Locked { .. })
        ));
    });
    drop(KvStore::open_with(dir.path(), read_only()).unwrap());
}

#[test]
fn store_made_read_only_with_chmod_opens_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let model = write_store(&store_dir);
    // `chmod -R a-w`. Root ignores it (the snapshot comparison is what proves nothing was
    // written); another user would be refused every write by the kernel as well.
    let status = Command::new("chmod")
        .args(["-R", "a-w"])
        .arg(&store_dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::metadata(&store_dir).unwrap().permissions().mode() & 0o222,
        0
    );
    let before = snapshot(&store_dir);
    {
        let store = KvStore::open_with(&store_dir, read_only()).unwrap();
        assert_holds(&store, &model);
        assert_writes_refused(&store);
    }
    assert_eq!(snapshot(&store_dir), before);
    // Let tempfile clean up.
    Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&store_dir)
        .status()
        .unwrap();
}

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    /// `None` (with a loud message) where mounting is not allowed.
    fn tmpfs() -> Option<Mount> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Mount { dir }),
            Ok(output) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (not root?): {}; the read-only mount test \
                     did not run",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e}); the read-only mount test did not run");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount read-only failed");
        // It really is read-only now, for root too.
        let err = fs::write(self.path().join("probe"), b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn store_on_a_read_only_mount_opens_read_only() {
    let Some(mount) = Mount::tmpfs() else { return };
    let store_dir = mount.path().join("store");
    let mut model = write_store(&store_dir);
    // A torn tail, left in place below.
    {
        let store = KvStore::open(&store_dir).unwrap();
        store.set_bytes(b"torn", &[1u8; 200]).unwrap();
    }
    let newest = newest_log(&store_dir);
    let len = fs::metadata(&newest).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 50)
        .unwrap();
    // A copy of the store without its LOCK file, as a read-only medium may hold it.
    let unlocked = mount.path().join("unlocked");
    fs::create_dir(&unlocked).unwrap();
    for entry in fs::read_dir(&store_dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            fs::copy(entry.path(), unlocked.join(entry.file_name())).unwrap();
        }
    }
    mount.remount_read_only();
    let before = snapshot(mount.path());
    model.remove(&b"torn"[..]);
    for dir in [&store_dir, &unlocked] {
        let store = KvStore::open_with(dir, read_only()).unwrap();
        assert_holds(&store, &model);
        assert_eq!(store.get_bytes(b"torn").unwrap(), None);
        assert_writes_refused(&store);
        let second = AnyEngine::open_with(dir, None, read_only()).unwrap();
        assert_holds(&second, &model);
    }
    // A read-write open cannot work there (it would have to cut the torn tail).
    assert!(KvStore::open(&store_dir).is_err());
    assert_eq!(snapshot(mount.path()), before);
}

#[test]
fn newest_file_cut_short_in_its_header_serves_what_a_repair_would() {
    // A crash while the newest file was being created, in a store without a MANIFEST (as
    // release 0.1.0 wrote them): the file holds part of its header only.
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    let newest = newest_log(dir.path());
    fs::write(&newest, &fs::read(&newest).unwrap()[..3]).unwrap();
    let before = snapshot(dir.path());
    let served = {
        let store = KvStore::open_with(dir.path(), read_only()).unwrap();
        let mut served = BTreeMap::new();
        for key in store.keys().unwrap() {
            let value = store.get_bytes(&key).unwrap().unwrap();
            served.insert(key, value);
        }
        assert!(!served.is_empty());
        assert_writes_refused(&store);
        served
    };
    assert_eq!(snapshot(dir.path()), before, "the header was rewritten");
    // A read-write open repairs the header, and serves the same. (The removes of the last
    // file went with it, so `assert_holds`'s model does not apply.)
    let store = KvStore::open(dir.path()).unwrap();
    assert_eq!(store.len().unwrap(), served.len());
    for (key, value) in &served {
        assert_eq!(store.get_bytes(key).unwrap().as_ref(), Some(value));
    }
    assert!(fs::metadata(&newest).unwrap().len() > 3);
}
