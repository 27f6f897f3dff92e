//! I/O faults: a full disk (or a file-size limit), a failing fsync, and running out of file
//! descriptors. For each: the call fails with a clear error and is not acknowledged, nothing
//! acknowledged earlier is lost, and the store works again once space or descriptors are back
//! (after a failed fsync it says it must be reopened: `KvsError::Poisoned`).
//!
//! Resource limits are per process, so each limit test runs in a child process: this test
//! binary re-run with `--ignored --exact <child test>`, the directory in an environment
//! variable. The child checks everything itself and exits non-zero on any failure.
//!
//! The failing-fsync test needs root: it mounts a small tmpfs, puts an ext4 image on it through
//! a loop device, and fills the tmpfs, so that writeback (and so fsync) fails with an I/O
//! error while `write` still succeeds. Without root or loop devices it says so and passes.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError, SyncPolicy};
use tempfile::TempDir;

mod support;

const DIR_VAR: &str = "KVS_FAULT_TEST_DIR";
const SYNC_VAR: &str = "KVS_FAULT_TEST_SYNC";

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// The soft limit of `resource`, and its hard limit.
fn get_limit(resource: Resource) -> (libc::rlim_t, libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    (limit.rlim_cur, limit.rlim_max)
}

/// Sets the soft limit of `resource` for this process, keeping the hard limit.
fn set_soft_limit(resource: Resource, soft: libc::rlim_t) {
    let (_, hard) = get_limit(resource);
    let limit = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass; changing a soft limit of our own
    // process affects nothing but later system calls of this (child) process.
    let rc = unsafe { libc::setrlimit(resource, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// The OS error code inside a kvs I/O error, if any.
fn os_error(err: &KvsError) -> Option<i32> {
    match err {
        KvsError::Io(e) | KvsError::IoAt { source: e, .. } => e.raw_os_error(),
        _ => None,
    }
}

fn child_dir() -> PathBuf {
    std::env::var_os(DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{DIR_VAR} must be set"))
}

fn child_sync() -> SyncPolicy {
    match std::env::var(SYNC_VAR).as_deref() {
        Ok("always") => SyncPolicy::Always,
        _ => SyncPolicy::Os,
    }
}

/// Runs the child test `name` on `dir` and fails if it fails; returns its stdout.
fn run_child(name: &str, dir: &Path, env: &[(&str, &str)]) -> String {
    let mut child = support::child_test(name);
    child.env(DIR_VAR, dir).envs(env.iter().copied());
    support::run_child_test(child)
}

/// The child's one-line summary, from its output.
fn summary(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.split_once("limit: ").map(|(_, rest)| rest))
        .unwrap_or("")
}

/// What a test believes the store holds: every acknowledged write.
#[derive(Default)]
struct Model {
    acked: BTreeMap<String, Option<String>>,
}

impl Model {
    fn set(&mut self, store: &KvStore, key: String, value: String) -> kvs::Result<()> {
        store.set(key.clone(), value.clone())?;
        self.acked.insert(key, Some(value));
        Ok(())
    }

    fn remove(&mut self, store: &KvStore, key: String) -> kvs::Result<()> {
        store.remove(key.clone())?;
        self.acked.insert(key, None);
        Ok(())
    }

    /// Every acknowledged write reads back exactly.
    fn check(&self, store: &KvStore, when: &str) {
        for (key, want) in &self.acked {
            let got = store
                .get(key.clone())
                .unwrap_or_else(|e| panic!("{when}: get {key}: {e}"));
            assert_eq!(&got, want, "{when}: key {key}");
        }
    }
}

fn value(i: usize, len: usize) -> String {
    format!("{i:08}-{}", "v".repeat(len))
}

/// No compaction output may be left behind by a compaction that failed.
fn assert_no_compaction_leftovers(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().ends_with(".compacting"),
            "leftover {name:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Disk full: RLIMIT_FSIZE

#[test]
#[ignore = "run as a child process by writes_over_the_file_size_limit_fail_cleanly"]
fn fault_child_file_size_limit() {
    let dir = child_dir();
    let sync = child_sync();
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code; with
    // SIGXFSZ ignored, a write over RLIMIT_FSIZE fails with EFBIG instead of killing us.
    let previous = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    assert_ne!(previous, libc::SIG_ERR);
    let (original, _) = get_limit(libc::RLIMIT_FSIZE);
    let options = KvStoreOptions::default()
        .sync(sync)
        .compaction_min_stale(u64::MAX);
    let store = KvStore::open_with(&dir, options.clone()).unwrap();
    let mut model = Model::default();
    for i in 0..200 {
        model.set(&store, format!("k{i}"), value(i, 80)).unwrap();
    }
    for i in (0..200).step_by(10) {
        model.remove(&store, format!("k{i}")).unwrap();
    }
    // Closed and opened again, the active file ends at its last record: the store allocates
    // its file ahead of its records (so that a full disk shows at allocation, never as SIGBUS
    // under a write through the map), and space allocated before the disk filled up is the
    // store's, so a limit lowered under it would hold back nothing.
    drop(store);
    let store = KvStore::open_with(&dir, options.clone()).unwrap();
    let log_len = store.disk_stats().total_bytes;

    // "Disk full": the log may grow by 2,000 more bytes.
    set_soft_limit(libc::RLIMIT_FSIZE, log_len + 2_000);
    let mut failures = 0;
    for i in 200..260 {
        match model.set(&store, format!("k{i}"), value(i, 300)) {
            Ok(()) => {}
            Err(e) => {
                failures += 1;
                assert_eq!(os_error(&e), Some(libc::EFBIG), "{e}");
                let message = e.to_string();
                assert!(message.contains(".log"), "error names no file: {message}");
            }
        }
    }
    assert!(failures >= 50, "only {failures} writes failed");
    model.check(&store, "while the disk is full");

    // A compaction that runs out of space gives up and leaves the old files as they were.
    set_soft_limit(libc::RLIMIT_FSIZE, 4_096);
    let err = store.compact().expect_err("compaction with no space");
    assert_eq!(os_error(&err), Some(libc::EFBIG), "{err}");
    assert_no_compaction_leftovers(&dir);
    model.check(&store, "after a failed compaction");

    // Space is back: writes and compaction work again, without a reopen.
    set_soft_limit(libc::RLIMIT_FSIZE, original);
    for i in 300..400 {
        model.set(&store, format!("k{i}"), value(i, 300)).unwrap();
    }
    model.remove(&store, "k301".into()).unwrap();
    store.compact().unwrap();
    model.check(&store, "once space is back");
    drop(store);
    let store = KvStore::open_with(&dir, options).unwrap();
    model.check(&store, "after reopening");
    println!(
        "file-size limit: {failures} writes refused, {} acknowledged keys verified",
        model.acked.len()
    );
}

#[test]
fn writes_over_the_file_size_limit_fail_cleanly() {
    for sync in ["os", "always"] {
        let dir = TempDir::new().unwrap();
        let out = run_child(
            "fault_child_file_size_limit",
            dir.path(),
            &[(SYNC_VAR, sync)],
        );
        println!("sync {sync}: {}", summary(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// A really full disk: a small tmpfs

/// A tmpfs of `kib` KiB mounted at `mnt` while this lives (root only).
struct SmallDisk {
    mnt: PathBuf,
}

impl SmallDisk {
    fn new(mnt: &Path, kib: u64) -> Option<SmallDisk> {
        let size = format!("size={kib}k");
        if !system(
            "mount",
            &["-t", "tmpfs", "-o", &size, "tmpfs", path_str(mnt)],
        ) {
            println!("SKIPPED: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk {
            mnt: mnt.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        system("umount", &[path_str(&self.mnt)]);
    }
}

#[test]
#[ignore = "run as a child process by a_full_disk_fails_writes_cleanly_and_loses_nothing"]
fn fault_child_full_disk() {
    let dir = child_dir();
    let options = KvStoreOptions::default()
        .sync(child_sync())
        .compaction_min_stale(u64::MAX);
    let store = KvStore::open_with(&dir, options.clone()).unwrap();
    let mut model = Model::default();
    let mut first_error = None;
    // 64 KiB values into a disk of 3 MiB: full after about 45 of them.
    for i in 0..200 {
        if let Err(e) = model.set(&store, format!("k{i}"), value(i, 64 << 10)) {
            first_error = Some(e);
            break;
        }
    }
    let e = first_error.expect("the disk never filled up");
    assert_eq!(os_error(&e), Some(libc::ENOSPC), "{e}");
    assert!(e.to_string().contains(".log"), "error names no file: {e}");
    // Still full: every further write is refused the same way, and nothing is lost.
    for i in 200..205 {
        let e = model
            .set(&store, format!("k{i}"), value(i, 64 << 10))
            .expect_err("a write into a full disk");
        assert_eq!(os_error(&e), Some(libc::ENOSPC), "{e}");
    }
    model.check(&store, "with the disk full");
    drop(store);
    let store = KvStore::open_with(&dir, options).unwrap();
    model.check(&store, "reopened");
    println!(
        "full disk: limit: {} acknowledged writes verified",
        model.acked.len()
    );
}

/// Writes go through a writable map of a file allocated ahead (see `writer.rs`): a store to a
/// page of it the file system has no room for would kill the process with SIGBUS. On a disk
/// that fills up, each write must fail with ENOSPC instead, naming its file, and nothing
/// acknowledged may be lost.
#[test]
fn a_full_disk_fails_writes_cleanly_and_loses_nothing() {
    for sync in ["os", "always"] {
        let root = TempDir::new().unwrap();
        let Some(disk) = SmallDisk::new(root.path(), 3 << 10) else {
            return;
        };
        let dir = disk.mnt.join("data");
        let out = run_child("fault_child_full_disk", &dir, &[(SYNC_VAR, sync)]);
        println!("sync {sync}: {}", summary(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// Out of file descriptors: RLIMIT_NOFILE

/// Descriptors this process has open.
fn open_fds() -> u64 {
    // The directory being listed holds one descriptor itself.
    let listed = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    listed - 1
}

/// The descriptor limit that leaves this process exactly `spare` descriptors to open. The
/// kernel hands out the lowest free number and refuses numbers at or above the limit, so what
/// is left are the free numbers below it, holes left by closed files included (kvs closes the
/// descriptors of log files it has mapped).
fn limit_leaving(spare: usize) -> libc::rlim_t {
    let mut free = 0;
    let mut fd: libc::c_int = 0;
    loop {
        // SAFETY: F_GETFD only asks whether `fd` is open (and for its flags); it changes nothing.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
        if !open {
            if free == spare {
                return fd as libc::rlim_t;
            }
            free += 1;
        }
        fd += 1;
    }
}

#[test]
#[ignore = "run as a child process by running_out_of_descriptors_fails_cleanly"]
fn fault_child_descriptor_limit() {
    let dir = child_dir();
    let (original, _) = get_limit(libc::RLIMIT_NOFILE);
    // Small files, so that writes move to a new file (which needs a descriptor) every few
    // dozen records; no background compaction, so the test decides when it runs; no hint
    // writer, whose descriptors would come and go at moments the test does not choose.
    let options = KvStoreOptions::default()
        .max_file_size(4_096)
        .compaction_min_stale(u64::MAX)
        .write_hints(false);
    let store = KvStore::open_with(&dir, options.clone()).unwrap();
    let mut model = Model::default();
    for i in 0..100 {
        model.set(&store, format!("k{i}"), value(i, 60)).unwrap();
    }
    let other = TempDir::new().unwrap();

    // Not one descriptor to spare.
    set_soft_limit(libc::RLIMIT_NOFILE, limit_leaving(0));
    match KvStore::open(other.path()) {
        Err(e) => {
            assert_eq!(os_error(&e), Some(libc::EMFILE), "{e}");
            assert!(e.to_string().contains("open files"), "{e}");
        }
        Ok(_) => panic!("open succeeded without a free descriptor"),
    }
    let mut failures = 0;
    for i in 100..200 {
        if let Err(e) = model.set(&store, format!("k{i}"), value(i, 60)) {
            failures += 1;
            assert_eq!(os_error(&e), Some(libc::EMFILE), "{e}");
        }
    }
    assert!(failures > 0, "no write needed a new file");
    let err = store.compact().expect_err("compaction without descriptors");
    assert_eq!(os_error(&err), Some(libc::EMFILE), "{err}");
    model.check(&store, "without descriptors");

    // Exactly one descriptor to spare: creating a new log file works, syncing the directory
    // after it (which opens the directory) does not.
    for spare in 1..=3 {
        set_soft_limit(libc::RLIMIT_NOFILE, original);
        set_soft_limit(libc::RLIMIT_NOFILE, limit_leaving(spare));
        for i in 0..40 {
            let key = format!("s{spare}-{i}");
            if let Err(e) = model.set(&store, key, value(i, 60)) {
                assert_eq!(os_error(&e), Some(libc::EMFILE), "{e}");
            }
        }
        if let Err(e) = store.compact() {
            assert_eq!(os_error(&e), Some(libc::EMFILE), "{e}");
        }
        model.check(&store, &format!("with {spare} spare descriptors"));
    }

    // Descriptors are back: everything works again without a reopen.
    set_soft_limit(libc::RLIMIT_NOFILE, original);
    assert_no_compaction_leftovers(&dir);
    for i in 200..400 {
        model.set(&store, format!("k{i}"), value(i, 60)).unwrap();
    }
    model.remove(&store, "k5".into()).unwrap();
    store.compact().unwrap();
    model.check(&store, "once descriptors are back");
    KvStore::open(other.path()).unwrap();
    drop(store);
    let store = KvStore::open_with(&dir, options).unwrap();
    model.check(&store, "after reopening");
    println!(
        "descriptor limit: {failures} writes refused, {} acknowledged keys verified",
        model.acked.len()
    );
}

#[test]
fn running_out_of_descriptors_fails_cleanly() {
    let dir = TempDir::new().unwrap();
    let out = run_child("fault_child_descriptor_limit", dir.path(), &[]);
    println!("{}", summary(&out));
}

// ---------------------------------------------------------------------------------------------
// Many log files under a low descriptor limit

/// Keys in the many-files store, 28 to a 4 KiB log file. The default (1,215 files, a few
/// seconds) is already several times the descriptor limit; `make test-slow` sets 285,000
/// (10,179 files; each new file costs a create and an fsync, about 2 ms here, twice: when it is
/// written and when compaction rewrites it).
const MANY_FILES_KEYS_VAR: &str = "KVS_MANY_FILES_KEYS";
const MANY_FILES_DEFAULT_KEYS: usize = 34_000;
/// Records of 146 bytes: 28 of them fill a 4 KiB file after its 8-byte header exactly, in the
/// files written here and in compaction's output alike.
const MANY_FILES_PER_FILE: usize = 28;

fn many_files_keys() -> usize {
    std::env::var(MANY_FILES_KEYS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MANY_FILES_DEFAULT_KEYS)
}

fn many_files_options() -> KvStoreOptions {
    // No background compaction: the test decides when it runs.
    KvStoreOptions::default()
        .max_file_size(4_096)
        .compaction_min_stale(u64::MAX)
}

fn many_files_key(i: usize) -> String {
    format!("k{i:07}")
}

/// The value of key `i` after `round` rounds of overwrites: 125 bytes, with the 8-byte key a
/// 146-byte record.
fn many_files_value(i: usize, round: usize) -> String {
    format!("{round}-{}", value(i, 114))
}

/// Checks every key of the many-files store: `removed` keys are gone, `overwritten` keys hold
/// their second value, the others their first.
fn check_many_files(
    store: &KvStore,
    keys: usize,
    overwritten: &dyn Fn(usize) -> bool,
    removed: &dyn Fn(usize) -> bool,
    when: &str,
) {
    for i in 0..keys {
        let got = store
            .get(many_files_key(i))
            .unwrap_or_else(|e| panic!("{when}: get key {i}: {e}"));
        let want = if removed(i) {
            None
        } else if overwritten(i) {
            Some(many_files_value(i, 1))
        } else {
            Some(many_files_value(i, 0))
        };
        assert_eq!(got, want, "{when}: key {i}");
    }
}

/// The descriptor limit of the many-files child: far fewer than the store has files.
const MANY_FILES_NOFILE: u64 = 256;

#[test]
#[ignore = "run as a child process by many_log_files_open_and_compact_under_a_low_descriptor_limit"]
fn fault_child_many_files() {
    let dir = child_dir();
    let keys = many_files_keys();
    set_soft_limit(libc::RLIMIT_NOFILE, MANY_FILES_NOFILE);
    assert_eq!(get_limit(libc::RLIMIT_NOFILE).0, MANY_FILES_NOFILE);

    let store = KvStore::open_with(&dir, many_files_options()).unwrap();
    let files_at_open = store.disk_stats().files;
    assert!(
        files_at_open as u64 > 4 * MANY_FILES_NOFILE,
        "only {files_at_open} log files"
    );
    let none = |_: usize| false;
    check_many_files(&store, keys, &none, &none, "after open");

    // Writes that move on to more new files than the limit, then a compaction that rewrites
    // them all.
    let overwritten = |i: usize| i.is_multiple_of(3);
    let removed = |i: usize| i.is_multiple_of(11);
    for i in (0..keys).filter(|&i| overwritten(i)) {
        store
            .set(many_files_key(i), many_files_value(i, 1))
            .unwrap();
    }
    for i in (0..keys).filter(|&i| removed(i)) {
        store.remove(many_files_key(i)).unwrap();
    }
    let files_before_compaction = store.disk_stats().files;
    check_many_files(&store, keys, &overwritten, &removed, "after writes");
    store.compact().unwrap();
    let files_after_compaction = store.disk_stats().files;
    check_many_files(&store, keys, &overwritten, &removed, "after compaction");
    assert!(
        open_fds() < MANY_FILES_NOFILE / 2,
        "{} descriptors open for {files_after_compaction} log files",
        open_fds()
    );
    drop(store);

    let store = KvStore::open_with(&dir, many_files_options()).unwrap();
    check_many_files(&store, keys, &overwritten, &removed, "after reopening");
    println!(
        "many files limit: {files_at_open} log files opened, {files_before_compaction} compacted \
         into {files_after_compaction}, {keys} keys verified, RLIMIT_NOFILE {MANY_FILES_NOFILE}"
    );
}

/// A store of more log files than the process may hold descriptors opens, reads, writes and
/// compacts: closed log files are memory-mapped and hold no descriptor.
#[test]
fn many_log_files_open_and_compact_under_a_low_descriptor_limit() {
    let dir = TempDir::new().unwrap();
    let keys = many_files_keys();
    {
        // Built without the limit, one batch a file.
        let store = KvStore::open_with(dir.path(), many_files_options()).unwrap();
        let pairs: Vec<(String, String)> = (0..keys)
            .map(|i| (many_files_key(i), many_files_value(i, 0)))
            .collect();
        for chunk in pairs.chunks(MANY_FILES_PER_FILE) {
            let batch: Vec<(&[u8], &[u8])> = chunk
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect();
            store.set_many_bytes(&batch).unwrap();
        }
    }
    let out = run_child("fault_child_many_files", dir.path(), &[]);
    println!("{}", summary(&out));
}

// ---------------------------------------------------------------------------------------------
// A failing fsync: ext4 on a loop device whose backing file lives on a tiny tmpfs

/// A file system whose writeback fails once its backing store is full: ext4 in a 64 MiB image
/// on a tmpfs of a few MiB, through a loop device. `write` succeeds (ext4 believes it has
/// room), fsync fails with an I/O error. Unmounted and detached when dropped.
struct FailingDisk {
    backing: PathBuf,
    mnt: PathBuf,
    device: String,
}

/// Runs a system command quietly; whether it succeeded.
fn system(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl FailingDisk {
    /// Sets it up under `root`; `None` (with the reason printed) where this machine does not
    /// allow it (not root, no loop devices, no mkfs.ext4).
    fn new(root: &Path, backing_kib: u64) -> Option<FailingDisk> {
        let backing = root.join("backing");
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&backing).ok()?;
        std::fs::create_dir_all(&mnt).ok()?;
        let size = format!("size={backing_kib}k");
        if !system(
            "mount",
            &["-t", "tmpfs", "-o", &size, "tmpfs", path_str(&backing)],
        ) {
            println!("SKIPPED: cannot mount a tmpfs (needs root)");
            return None;
        }
        let image = backing.join("disk.img");
        let made = std::fs::File::create(&image)
            .and_then(|f| f.set_len(64 << 20))
            .is_ok()
            && system("mkfs.ext4", &["-q", "-F", path_str(&image)]);
        let device = made
            .then(|| {
                Command::new("losetup")
                    .args(["-f", "--show", path_str(&image)])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            })
            .flatten();
        let Some(device) = device else {
            println!("SKIPPED: cannot make an ext4 image on a loop device");
            system("umount", &[path_str(&backing)]);
            return None;
        };
        let disk = FailingDisk {
            backing,
            mnt,
            device,
        };
        if !disk.mount() {
            println!("SKIPPED: cannot mount the loop device");
            return None;
        }
        Some(disk)
    }

    fn mount(&self) -> bool {
        system("mount", &[&self.device, path_str(&self.mnt)])
    }

    /// Gives the backing tmpfs room again and remounts the ext4 file system (after a check),
    /// as after replacing a full disk's contents on a larger one.
    fn make_room_and_remount(&self) {
        assert!(system("umount", &[path_str(&self.mnt)]), "umount");
        assert!(system(
            "mount",
            &["-o", "remount,size=256m", path_str(&self.backing)]
        ));
        // Exit codes 1 and 2 mean "errors fixed"; only whether it mounts afterwards matters.
        let _ = system("e2fsck", &["-fy", &self.device]);
        assert!(self.mount(), "remount");
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        system("umount", &[path_str(&self.mnt)]);
        system("losetup", &["-d", &self.device]);
        system("umount", &[path_str(&self.backing)]);
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn a_failing_fsync_poisons_the_store_and_loses_nothing_acknowledged() {
    let root = TempDir::new().unwrap();
    let Some(disk) = FailingDisk::new(root.path(), 6 << 10) else {
        return;
    };
    let dir = disk.mnt.join("data");
    let options = KvStoreOptions::default()
        .sync(SyncPolicy::Always)
        .compaction_min_stale(u64::MAX);
    let store = KvStore::open_with(&dir, options).unwrap();
    let mut model = Model::default();
    let mut attempted = BTreeMap::new();
    let mut first_error = None;
    for i in 0..400 {
        let key = format!("k{i}");
        let value = value(i, 64 << 10);
        attempted.insert(key.clone(), value.clone());
        if let Err(e) = model.set(&store, key, value) {
            first_error = Some(e);
            break;
        }
    }
    let first_error = first_error.expect("the full disk never failed an fsync");
    println!(
        "first failure after {} acknowledged writes: {first_error}",
        model.acked.len()
    );
    assert!(
        matches!(first_error, KvsError::Poisoned(_)) || first_error.is_io(),
        "{first_error}"
    );
    // From now on every write is refused, loudly, and reads still work.
    for i in 0..5 {
        match store.set(format!("after{i}"), "x".into()) {
            Err(e @ KvsError::Poisoned(_)) => assert!(e.to_string().contains("reopen"), "{e}"),
            other => panic!("a write after a failed fsync: {other:?}"),
        }
    }
    assert!(matches!(
        store.remove("k0".into()),
        Err(KvsError::Poisoned(_))
    ));
    assert!(store.flush().is_err());
    model.check(&store, "poisoned, before reopening");
    drop(store);

    disk.make_room_and_remount();
    let store = KvStore::open(&dir).unwrap();
    model.check(&store, "after the disk has room again");
    // The write that failed may or may not be there; if it is, it is whole.
    for (key, value) in &attempted {
        if let Some(got) = store.get(key.clone()).unwrap() {
            assert_eq!(&got, value, "{key}");
        }
    }
    store.set("fresh".into(), "write".into()).unwrap();
    println!(
        "failing fsync: {} acknowledged writes verified after remount",
        model.acked.len()
    );
}
