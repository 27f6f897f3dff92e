//! The MANIFEST: a store knows which log files make it up. Open refuses a store whose closed
//! files are not the ones it wrote (deleted, cut short, swapped, replaced), naming the file and
//! changing nothing; and it leaves alone, with a warning, the files the MANIFEST does not list.
//! Every test works on real files in a temporary directory.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError};
use tempfile::TempDir;

use support::{log_files_with_ids, manifest_entries};

/// Small files, so the store has many closed ones; no background compaction, so the tests
/// decide what the files are.
fn options() -> KvStoreOptions {
    KvStoreOptions::default()
        .max_file_size(4096)
        .compaction_min_stale(u64::MAX)
}

/// A store with many closed files (overwrites of 60 keys), and a copy of one file taken while
/// it was still the active one.
struct Template {
    dir: TempDir,
    model: BTreeMap<String, String>,
    /// The id and bytes of a file as it was while active, before it was sealed.
    older_copy: (u32, Vec<u8>),
}

fn write(store: &KvStore, model: &mut BTreeMap<String, String>, tag: &str, i: usize) {
    let key = format!("key{}", i % 60);
    let value = format!("{tag}-{i}-{}", "v".repeat(i * 7 % 40));
    store.set(key.clone(), value.clone()).unwrap();
    model.insert(key, value);
}

fn template(tag: &str) -> Template {
    let dir = TempDir::new().unwrap();
    let mut model = BTreeMap::new();
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    for i in 0..200 {
        write(&store, &mut model, tag, i);
    }
    let (active, path) = log_files_with_ids(dir.path()).pop().unwrap();
    // Its records: while active, the file is longer, allocated ahead with zeros.
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(support::records_end(&path) as usize);
    let older_copy = (active, bytes);
    for i in 200..1000 {
        write(&store, &mut model, tag, i);
    }
    drop(store);
    assert!(
        log_files_with_ids(dir.path()).last().unwrap().0 > active + 2,
        "the copied file was not sealed"
    );
    Template {
        dir,
        model,
        older_copy,
    }
}

/// A copy of the store in `from` (every regular file but the lock).
fn copy_store(from: &Path) -> TempDir {
    let to = TempDir::new().unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().unwrap() != "LOCK" {
            fs::copy(&path, to.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// Every entry of `dir` but the lock: its bytes, or `None` for a directory.
fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, p.is_file().then(|| fs::read(&p).unwrap()))
        })
        .collect()
}

/// The closed files of the store in `dir`, oldest first (every log file but the newest).
fn closed_files(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut files = log_files_with_ids(dir);
    files.pop();
    assert!(files.len() >= 6, "{files:?}");
    files
}

/// Opening `dir` fails with corruption in `victim`, the reason holds every one of `words`,
/// and no file changed. Returns the error message.
fn assert_refused(dir: &Path, victim: &Path, words: &[&str]) -> String {
    let before = snapshot(dir);
    let err = match KvStore::open_with(dir, options()) {
        Ok(_) => panic!("the store opened; {} was tampered with", victim.display()),
        Err(e) => e,
    };
    let message = err.to_string();
    match err {
        KvsError::Corruption { path, reason, .. } => {
            assert_eq!(path, victim, "{message}");
            for word in words {
                assert!(reason.contains(word), "{word:?} not in: {message}");
            }
        }
        other => panic!("expected corruption in {}, got {other}", victim.display()),
    }
    assert!(snapshot(dir) == before, "open changed files: {message}");
    message
}

fn assert_holds(store: &KvStore, model: &BTreeMap<String, String>) {
    assert_eq!(store.len().unwrap(), model.len());
    for (key, value) in model {
        assert_eq!(
            store.get(key.clone()).unwrap().as_ref(),
            Some(value),
            "{key}"
        );
    }
}

#[test]
fn a_deleted_closed_file_fails_open() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let (id, victim) = closed_files(dir.path())[2].clone();
    fs::remove_file(&victim).unwrap();
    let message = assert_refused(dir.path(), &victim, &[&format!("{id}.log is missing")]);
    println!("{message}");
}

#[test]
fn a_closed_file_cut_at_a_record_boundary_before_its_seal_fails_open() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let (id, victim) = closed_files(dir.path())[2].clone();
    let bytes = fs::read(&victim).unwrap();
    // The seal is the last 21 bytes (13-byte header, 8-byte value).
    fs::write(&victim, &bytes[..bytes.len() - 21]).unwrap();
    let message = assert_refused(
        dir.path(),
        &victim,
        &["seal", &format!("the store sealed it at {}", bytes.len())],
    );
    println!("{id}: {message}");
}

#[test]
fn two_closed_files_swapped_fail_open() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let closed = closed_files(dir.path());
    let (first, second) = (&closed[1].1, &closed[4].1);
    let tmp = dir.path().join("swap");
    fs::rename(first, &tmp).unwrap();
    fs::rename(second, first).unwrap();
    fs::rename(&tmp, second).unwrap();
    // Files replay in id order: the first of the two is found out first.
    let message = assert_refused(dir.path(), first, &["replaced"]);
    println!("{message}");
}

#[test]
fn two_closed_files_of_the_same_length_swapped_fail_open() {
    // The length check cannot tell these apart: only the fingerprint can. Records of one
    // size fill every file to the same length.
    let dir = TempDir::new().unwrap();
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        for i in 0..1500 {
            store
                .set(format!("key{:03}", i % 100), format!("{i:08}"))
                .unwrap();
        }
    }
    let closed = closed_files(dir.path());
    let mut by_len = BTreeMap::<u64, Vec<PathBuf>>::new();
    for (_, path) in &closed {
        let len = fs::metadata(path).unwrap().len();
        by_len.entry(len).or_default().push(path.clone());
    }
    let Some(pair) = by_len.values().find(|paths| paths.len() >= 2) else {
        panic!("no two closed files of the same length: {by_len:?}");
    };
    let (first, second) = (&pair[0], &pair[1]);
    assert_ne!(fs::read(first).unwrap(), fs::read(second).unwrap());
    let tmp = dir.path().join("swap");
    fs::rename(first, &tmp).unwrap();
    fs::rename(second, first).unwrap();
    fs::rename(&tmp, second).unwrap();
    let message = assert_refused(
        dir.path(),
        first,
        &["not the file the store wrote", "swapped"],
    );
    println!("{message}");
}

#[test]
fn a_closed_file_replaced_by_one_of_another_store_fails_open() {
    let t = template("a");
    let other = template("b");
    let dir = copy_store(t.dir.path());
    let (id, victim) = closed_files(dir.path())[3].clone();
    let stranger = other.dir.path().join(format!("{id}.log"));
    fs::copy(&stranger, &victim).unwrap();
    let message = assert_refused(dir.path(), &victim, &["replaced"]);
    println!("{message}");
}

#[test]
fn a_closed_file_replaced_by_an_older_copy_of_itself_fails_open() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let (id, bytes) = &t.older_copy;
    let victim = dir.path().join(format!("{id}.log"));
    assert!(fs::read(&victim).unwrap().starts_with(bytes));
    fs::write(&victim, bytes).unwrap();
    let message = assert_refused(dir.path(), &victim, &["replaced"]);
    println!("{message}");
}

#[test]
fn a_closed_file_replaced_by_a_directory_fails_open() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let (_, victim) = closed_files(dir.path())[0].clone();
    fs::remove_file(&victim).unwrap();
    fs::create_dir(&victim).unwrap();
    assert_refused(dir.path(), &victim, &["not a regular file"]);
}

#[test]
fn a_missing_active_file_fails_open() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let (id, victim) = log_files_with_ids(dir.path()).pop().unwrap();
    fs::remove_file(&victim).unwrap();
    assert_refused(
        dir.path(),
        &victim,
        &[&format!("{id}.log is missing"), "active file"],
    );
}

#[test]
fn a_damaged_manifest_fails_open_and_is_not_rebuilt() {
    let t = template("a");
    let manifest = fs::read(t.dir.path().join("MANIFEST")).unwrap();
    let mut cases = vec![manifest[..manifest.len() - 1].to_vec(), Vec::new()];
    for byte in [0, 8, 12, 16, manifest.len() - 1] {
        let mut bad = manifest.clone();
        bad[byte] ^= 0x10;
        cases.push(bad);
    }
    for bad in cases {
        let dir = copy_store(t.dir.path());
        let path = dir.path().join("MANIFEST");
        fs::write(&path, &bad).unwrap();
        let message = assert_refused(dir.path(), &path, &["manifest"]);
        assert!(message.contains("MANIFEST"), "{message}");
    }
}

#[test]
fn files_the_manifest_does_not_list_are_ignored_and_left_alone() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let mut model = t.model.clone();
    let old3 = fs::read(dir.path().join("3.log")).unwrap();
    {
        // After a compaction the low ids are no longer the store's.
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        store.compact().unwrap();
        // And a rotation, whose manifest no longer lists the files the compaction replaced.
        for i in 1000..1100 {
            write(&store, &mut model, "b", i);
        }
    }
    assert!(manifest_entries(dir.path()).iter().all(|e| e.1 != 3));
    let first = log_files_with_ids(dir.path())[0].0;
    assert!(first > 9, "file {first} is the store's");
    // Names that parse as numbers without being canonical ids, a log of id 3 written before
    // the compaction (older values), an empty file, a directory, a leftover temporary
    // manifest, a note.
    fs::write(dir.path().join("003.log"), &old3).unwrap();
    fs::write(dir.path().join("+3.log"), &old3).unwrap();
    fs::write(dir.path().join("3.log"), &old3).unwrap();
    fs::write(dir.path().join("2.log"), b"").unwrap();
    fs::create_dir(dir.path().join("9.log")).unwrap();
    fs::write(dir.path().join("9.log").join("inside"), b"x").unwrap();
    fs::write(dir.path().join("MANIFEST.tmp"), b"half a manifest").unwrap();
    fs::write(dir.path().join("notes.txt"), b"my notes").unwrap();
    let strays = ["003.log", "+3.log", "3.log", "2.log", "9.log", "notes.txt"];
    let stray_bytes = |dir: &Path| -> Vec<Option<Vec<u8>>> {
        strays
            .iter()
            .map(|name| {
                let path = dir.join(name);
                assert!(path.exists(), "{name} was deleted");
                path.is_file().then(|| fs::read(&path).unwrap())
            })
            .collect()
    };
    let before = stray_bytes(dir.path());

    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        assert_holds(&store, &model);
        // Rotations write the manifest (over the leftover MANIFEST.tmp too).
        for i in 1000..1300 {
            write(&store, &mut model, "c", i);
        }
        assert_holds(&store, &model);
    }
    assert_eq!(stray_bytes(dir.path()), before);
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    assert_holds(&store, &model);
    assert_eq!(stray_bytes(dir.path()), before);
    // The strays count for nothing in the store's figures.
    let listed: Vec<(u32, u8, u64, u32)> = manifest_entries(dir.path())
        .into_iter()
        .filter(|e| e.1 != 3)
        .collect();
    let listed_bytes: u64 = listed
        .iter()
        .map(|(id, ..)| {
            fs::metadata(dir.path().join(format!("{id}.log")))
                .unwrap()
                .len()
        })
        .sum();
    let stats = store.disk_stats();
    assert_eq!(stats.files, listed.len());
    assert_eq!(stats.total_bytes, listed_bytes);
}

#[test]
fn an_unlisted_newer_file_is_removed_if_it_holds_no_more_than_a_header_and_refused_otherwise() {
    let t = template("a");
    for header in [&b""[..], &b"kvs-l"[..], &b"kvs-log\x01"[..]] {
        // What a rotation that crashed before writing the manifest leaves.
        let dir = copy_store(t.dir.path());
        let active = log_files_with_ids(dir.path()).last().unwrap().0;
        let leftover = dir.path().join(format!("{}.log", active + 1));
        fs::write(&leftover, header).unwrap();
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        assert!(!leftover.exists(), "{} bytes of header left", header.len());
        assert_holds(&store, &t.model);
    }

    // One with data cannot be a crash leftover (kvs lists a file before writing to it), but
    // can hold acknowledged writes: those of a kvs that keeps no MANIFEST (release 0.1.0)
    // opened on the directory. Open refuses, naming it, and changes nothing.
    let dir = copy_store(t.dir.path());
    let active = log_files_with_ids(dir.path()).last().unwrap().0;
    let newer = dir.path().join(format!("{}.log", active + 2));
    fs::copy(dir.path().join("2.log"), &newer).unwrap();
    let message = assert_refused(dir.path(), &newer, &["does not list it", "release 0.1.0"]);
    println!("{message}");
    // Moved away, the store opens.
    fs::remove_file(&newer).unwrap();
    assert_holds(
        &KvStore::open_with(dir.path(), options()).unwrap(),
        &t.model,
    );
}

#[test]
fn a_file_named_like_the_next_log_file_is_skipped_by_rotation() {
    // A name taken while the store is open: writes move on past it, and leave it alone.
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let mut model = t.model.clone();
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    let active = log_files_with_ids(dir.path()).last().unwrap().0;
    let stranger = dir.path().join(format!("{}.log", active + 1));
    fs::write(&stranger, b"not the store's").unwrap();
    for i in 1000..1200 {
        write(&store, &mut model, "c", i);
    }
    drop(store);
    assert!(log_files_with_ids(dir.path()).last().unwrap().0 > active + 2);
    assert_eq!(fs::read(&stranger).unwrap(), b"not the store's");
    assert!(!manifest_entries(dir.path())
        .iter()
        .any(|e| e.0 == active + 1));
    assert_holds(&KvStore::open_with(dir.path(), options()).unwrap(), &model);
    assert_eq!(fs::read(&stranger).unwrap(), b"not the store's");
}

#[test]
fn compaction_lists_its_outputs_and_open_deletes_the_obsolete_files() {
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let before: Vec<(u32, Vec<u8>)> = closed_files(dir.path())
        .into_iter()
        .map(|(id, p)| (id, fs::read(p).unwrap()))
        .collect();
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        store.compact().unwrap();
        assert_holds(&store, &t.model);
    }
    // Until the next manifest write, the replaced files are listed as obsolete.
    let entries = manifest_entries(dir.path());
    for (id, _) in &before {
        assert!(entries.contains(&(*id, 3, 0, 0)), "{id} not obsolete");
    }
    for (id, state, len, _) in &entries {
        if *state == 1 {
            let path = dir.path().join(format!("{id}.log"));
            assert_eq!(fs::metadata(path).unwrap().len(), *len, "{id}");
        }
    }
    // A crash while deleting them leaves some behind: open deletes them.
    for (id, bytes) in &before {
        fs::write(dir.path().join(format!("{id}.log")), bytes).unwrap();
    }
    let mut model = t.model.clone();
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        for (id, _) in &before {
            assert!(!dir.path().join(format!("{id}.log")).exists(), "{id}");
        }
        assert_holds(&store, &model);
        for i in 1000..1100 {
            write(&store, &mut model, "c", i);
        }
    }
    // The next manifest (a rotation) no longer lists them.
    let entries = manifest_entries(dir.path());
    assert!(entries.iter().all(|e| e.1 != 3), "{entries:?}");
    assert_holds(&KvStore::open_with(dir.path(), options()).unwrap(), &model);
}

#[test]
fn a_new_store_gets_a_manifest_and_reopens_after_a_compaction() {
    let dir = TempDir::new().unwrap();
    drop(KvStore::open(dir.path()).unwrap());
    assert_eq!(manifest_entries(dir.path()), vec![(1, 2, 0, 0)]);
    let mut model = BTreeMap::new();
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        for i in 0..500 {
            write(&store, &mut model, "a", i);
        }
        // The fingerprints of the compaction's outputs and of files written after a reopen
        // (the running fingerprint resumed) must match what replay computes.
        store.compact().unwrap();
    }
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        assert_holds(&store, &model);
        for i in 500..800 {
            write(&store, &mut model, "b", i);
        }
        store.set_many_bytes(&[(b"x", b"1"), (b"y", b"2")]).unwrap();
        model.insert("x".into(), "1".into());
        model.insert("y".into(), "2".into());
        for i in 800..1000 {
            write(&store, &mut model, "c", i);
        }
    }
    assert_holds(&KvStore::open_with(dir.path(), options()).unwrap(), &model);
}

#[test]
fn a_rotation_that_cannot_write_the_manifest_fails_the_write_and_leaves_no_file_behind() {
    // A directory where the manifest's temporary file goes: writing the manifest fails, so no
    // write can move on to a new file.
    let dir = TempDir::new().unwrap();
    let mut model = BTreeMap::new();
    let store = KvStore::open_with(dir.path(), options()).unwrap();
    for i in 0..100 {
        write(&store, &mut model, "a", i);
    }
    let blocker = dir.path().join("MANIFEST.tmp");
    fs::create_dir(&blocker).unwrap();
    let listed_before = manifest_entries(dir.path());
    let mut failures = 0;
    for i in 100..300 {
        let key = format!("key{}", i % 60);
        let value = format!("b-{i}");
        match store.set(key.clone(), value.clone()) {
            Ok(()) => {
                model.insert(key, value);
            }
            Err(e) => {
                failures += 1;
                assert!(e.to_string().contains("MANIFEST.tmp"), "{e}");
            }
        }
    }
    assert!(failures > 0, "no write needed a new file");
    assert_eq!(manifest_entries(dir.path()), listed_before);
    // The file each failed rotation created is gone: the manifest does not list it.
    let on_disk: Vec<u32> = log_files_with_ids(dir.path())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let listed: Vec<u32> = listed_before.iter().map(|e| e.0).collect();
    assert_eq!(on_disk, listed);
    assert_holds(&store, &model);

    // Once the manifest can be written, writes go on without a reopen.
    fs::remove_dir(&blocker).unwrap();
    for i in 300..500 {
        write(&store, &mut model, "c", i);
    }
    drop(store);
    assert_holds(&KvStore::open_with(dir.path(), options()).unwrap(), &model);
}

const CHILD_DIR_VAR: &str = "KVS_MANIFEST_TEST_DIR";

/// Sets the soft limit on the size of any file this process writes.
fn set_file_size_limit(soft: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) };
    assert_eq!(got, 0);
    limit.rlim_cur = soft.min(limit.rlim_max);
    // SAFETY: setrlimit only reads the struct we pass; it changes a limit of this (child)
    // process only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
}

/// The child of `a_failed_append_is_left_out_of_the_fingerprint`: appends that fail halfway
/// (a file-size limit), then enough writes that the file is sealed, then a reopen, which
/// checks the sealed file's fingerprint.
#[test]
#[ignore = "run as a child process by a_failed_append_is_left_out_of_the_fingerprint"]
fn manifest_child_failed_appends() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR_VAR).expect("directory"));
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code; with
    // SIGXFSZ ignored, a write over RLIMIT_FSIZE fails with EFBIG instead of killing us.
    let previous = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    assert_ne!(previous, libc::SIG_ERR);
    let options = options();
    let mut model = BTreeMap::new();
    let store = KvStore::open_with(&dir, options.clone()).unwrap();
    for i in 0..20 {
        write(&store, &mut model, "a", i);
    }
    assert_eq!(store.disk_stats().files, 1);
    // Closed and opened again, the file ends at its last record: space the store allocated
    // ahead of its records before the limit was lowered would take these writes whole.
    drop(store);
    let store = KvStore::open_with(&dir, options.clone()).unwrap();
    // Room for 50 more bytes: each of these records is written in part, then cut back.
    set_file_size_limit(store.disk_stats().total_bytes + 50);
    for i in 0..5 {
        let err = store
            .set(format!("key{i}"), "x".repeat(300))
            .expect_err("a write over the file-size limit");
        assert!(err.to_string().contains(".log"), "{err}");
    }
    set_file_size_limit(libc::RLIM_INFINITY);
    for i in 20..500 {
        write(&store, &mut model, "b", i);
    }
    assert!(
        store.disk_stats().files >= 3,
        "the first file was not sealed"
    );
    drop(store);
    let store = KvStore::open_with(&dir, options).unwrap();
    assert_holds(&store, &model);
    println!("child: reopened with {} keys", model.len());
}

#[test]
fn a_failed_append_is_left_out_of_the_fingerprint() {
    let dir = TempDir::new().unwrap();
    let mut child = support::child_test("manifest_child_failed_appends");
    child.env(CHILD_DIR_VAR, dir.path());
    let stdout = support::run_child_test(child);
    assert!(stdout.contains("child: reopened"), "{stdout}");
}

#[test]
fn writes_by_a_kvs_that_keeps_no_manifest_are_refused_not_lost() {
    // Release 0.1.0 opened on a store with a MANIFEST ignores it: it writes log files as this
    // release does, and leaves the MANIFEST as it was. Simulated here by the MANIFEST put back
    // as it was before a session that wrote (and moved on to new files).
    let t = template("a");
    let dir = copy_store(t.dir.path());
    let manifest = fs::read(dir.path().join("MANIFEST")).unwrap();
    let active = log_files_with_ids(dir.path()).last().unwrap().0;
    let mut model = t.model.clone();
    fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    {
        let store = KvStore::open_with(dir.path(), options()).unwrap();
        for i in 1000..1300 {
            write(&store, &mut model, "old-release", i);
        }
    }
    fs::write(dir.path().join("MANIFEST"), &manifest).unwrap();
    let first_new = dir.path().join(format!("{}.log", active + 1));
    assert_refused(
        dir.path(),
        &first_new,
        &["release 0.1.0", "remove MANIFEST"],
    );
    // What the error says to do: without the MANIFEST, every file is replayed, and listed.
    fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    assert_holds(&KvStore::open_with(dir.path(), options()).unwrap(), &model);
    assert_holds(&KvStore::open_with(dir.path(), options()).unwrap(), &model);
}
