//! A kvs data directory: which engine it holds, and who has it open.
//!
//! Two small files live beside the data:
//! - `engine`: the name of the engine that wrote the directory (`kvs` or `sled`), written once,
//!   atomically, the first time the directory is opened; a later open by another engine is
//!   refused before any data is touched.
//! - `LOCK`: held with an exclusive advisory lock (`flock`) for as long as a store is open, so
//!   that a second process (or a second handle in this process) cannot write the same log.
//!
//! A directory whose `engine` file is lost (deleted by hand, not restored from a backup) is
//! judged by the data in it ([`detect_engine`]): kvs's log files or manifest, or sled's
//! database. Asking for the other engine is refused as for a recorded mismatch, so that sled
//! never starts an empty database over kvs's data (or the reverse); asking for the detected
//! engine, or for none, records it again, with a warning.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{ProcessGuard, STORE};
use crate::{KvsError, Result};

/// Name of the file that records the engine of a data directory.
pub const ENGINE_FILE: &str = "engine";
/// Name of the lock file of a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// The storage engines kvs offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// [`KvStore`](crate::KvStore), kvs's own log-structured engine (the default).
    Kvs,
    /// [`SledKvsEngine`](crate::SledKvsEngine), on the `sled` crate.
    Sled,
}

impl EngineKind {
    /// The engine's name as users write it: `kvs` or `sled`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Kvs => "kvs",
            EngineKind::Sled => "sled",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = KvsError;

    fn from_str(s: &str) -> Result<EngineKind> {
        match s {
            "kvs" => Ok(EngineKind::Kvs),
            "sled" => Ok(EngineKind::Sled),
            other => Err(KvsError::UnknownEngine(other.to_string())),
        }
    }
}

/// Reads the engine recorded in `dir`, if any.
pub fn recorded_engine(dir: &Path) -> Result<Option<EngineKind>> {
    let path = dir.join(ENGINE_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse() {
            Ok(kind) => Ok(Some(kind)),
            Err(_) => Err(KvsError::Corruption {
                path,
                offset: 0,
                reason: format!("unknown engine name {:?}", text.trim()),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KvsError::io_at(path, e)),
    }
}

/// Name of the manifest a kvs store may keep beside its log files.
pub const MANIFEST_FILE: &str = "MANIFEST";

/// The first bytes of every kvs log file, whatever its format version (the magic's last
/// byte is the version).
const KVS_LOG_MAGIC: &[u8] = {
    let magic = &crate::engines::KVS_LOG_MAGIC;
    let (name, _version) = magic.split_at(magic.len() - 1);
    name
};

/// The engine whose data `dir` holds, judged from the files present (for a directory whose
/// `engine` file is missing): `Kvs` for canonical `<id>.log` files (a decimal id without
/// leading zeros) that start with the kvs log magic, or a `MANIFEST` file; `Sled` for a
/// `sled/` sub-directory holding sled's `db` or `conf` file; `None` when neither is there.
/// A directory with both fails with [`KvsError::Corruption`] on the `engine` file, naming
/// both. Reads only.
pub fn detect_engine(dir: &Path) -> Result<Option<EngineKind>> {
    match (kvs_data(dir)?, sled_data(dir)) {
        (None, None) => Ok(None),
        (Some(_), None) => Ok(Some(EngineKind::Kvs)),
        (None, Some(_)) => Ok(Some(EngineKind::Sled)),
        (Some(kvs), Some(sled)) => Err(KvsError::Corruption {
            path: dir.join(ENGINE_FILE),
            offset: 0,
            reason: format!(
                "the file is missing, and the directory holds data of both engines: kvs's \
                 ({}) and sled's ({}); write the name of the engine in use (kvs or sled) \
                 into it",
                kvs.display(),
                sled.display()
            ),
        }),
    }
}

/// A file of `dir` that shows it holds kvs data, if any.
fn kvs_data(dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KvsError::io_at(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| KvsError::io_at(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == MANIFEST_FILE {
            return Ok(Some(entry.path()));
        }
        let canonical = name
            .strip_suffix(".log")
            .and_then(|stem| Some((stem, stem.parse::<u32>().ok()?)))
            .is_some_and(|(stem, id)| id.to_string() == stem);
        if canonical && starts_with_kvs_magic(&entry.path())? {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Whether the file at `path` starts with the kvs log magic (a directory, or a file gone
/// meanwhile, does not).
fn starts_with_kvs_magic(path: &Path) -> Result<bool> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(KvsError::io_at(path, e)),
    };
    let mut head = [0; KVS_LOG_MAGIC.len()];
    match file.read_exact(&mut head) {
        Ok(()) => Ok(head == KVS_LOG_MAGIC),
        // Shorter than the magic, or a directory named like a log file.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::IsADirectory
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(KvsError::io_at(path, e)),
    }
}

/// The sled database directory of `dir`, if it holds one.
fn sled_data(dir: &Path) -> Option<std::path::PathBuf> {
    let sled = dir.join(crate::SLED_SUBDIR);
    let has = |name: &str| sled.join(name).is_file();
    (has("db") || has("conf")).then_some(sled)
}

/// The engine of `dir`: the one recorded, or, when the `engine` file is missing, the one
/// whose data is there ([`detect_engine`]). `None` for a directory without data. Reads only.
pub fn engine_of(dir: &Path) -> Result<Option<EngineKind>> {
    match recorded_engine(dir)? {
        Some(recorded) => Ok(Some(recorded)),
        None => detect_engine(dir),
    }
}

/// Fails with [`KvsError::EngineMismatch`] if `dir` records an engine other than `wanted`, or
/// records none and holds the other engine's data. Touches nothing on disk.
pub fn check_engine(dir: &Path, wanted: EngineKind) -> Result<()> {
    check_recorded(dir, engine_of(dir)?, wanted)
}

/// Fails with [`KvsError::EngineMismatch`] if `recorded` (the engine recorded in `dir`, as
/// already read) is another engine than `wanted`.
pub(crate) fn check_recorded(
    dir: &Path,
    recorded: Option<EngineKind>,
    wanted: EngineKind,
) -> Result<()> {
    match recorded {
        Some(recorded) if recorded != wanted => Err(KvsError::EngineMismatch {
            dir: dir.to_path_buf(),
            recorded: recorded.name().to_string(),
            requested: wanted.name().to_string(),
        }),
        _ => Ok(()),
    }
}

/// Records `kind` as the engine of `dir` (atomically: temp file, fsync, rename, fsync of the
/// directory), or checks it against the one already recorded. A directory whose `engine`
/// file is lost is checked against the data in it, and recorded again with a warning.
pub fn record_engine(dir: &Path, kind: EngineKind) -> Result<()> {
    let recorded = recorded_engine(dir)?;
    check_recorded(dir, recorded, kind)?;
    if recorded.is_some() {
        return Ok(());
    }
    if let Some(found) = detect_engine(dir)? {
        check_recorded(dir, Some(found), kind)?;
        log::warn!(
            "{} has no {ENGINE_FILE} file, but holds {found} data: recording the engine {found} again",
            dir.display()
        );
    }
    let tmp = dir.join(format!("{ENGINE_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        writeln!(file, "{}", kind.name())?;
        file.sync_all()
    };
    write().map_err(|e| KvsError::io_at(&tmp, e))?;
    let path = dir.join(ENGINE_FILE);
    fs::rename(&tmp, &path).map_err(|e| KvsError::io_at(&path, e))?;
    sync_dir(dir)
}

/// Makes the directory entries of `dir` (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KvsError::io_at(dir, e))
}

/// Creates `dir` if needed and checks that it is a directory.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| KvsError::io_at(dir, e))?;
    if !dir.is_dir() {
        return Err(KvsError::io_at(
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    Ok(())
}

/// An exclusive lock on a data directory, released when dropped.
///
/// `flock` locks belong to the open file description, which a child of `fork()` shares with
/// its parent: the lock is released by an explicit unlock from either process, or when the
/// last descriptor of the description is closed. So the process that took the lock unlocks
/// it explicitly on drop (closing alone would leave it held for as long as a child that
/// inherited the descriptor lives, and the parent could not reopen its own store), and a
/// child never does (that would release the parent's lock): it only closes its copy.
#[derive(Debug)]
pub struct DirLock {
    /// `None` for a read-only open of a directory without a `LOCK` file (see
    /// [`DirLock::acquire_shared`]).
    file: Option<File>,
    owner: ProcessGuard,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if self.owner.is_inherited() {
            return;
        }
        let Some(file) = &self.file else { return };
        if let Err(e) = file.unlock() {
            // The lock still goes when the descriptor closes, right after this.
            log::warn!("unlocking a kvs data directory failed: {e}");
        }
    }
}

impl DirLock {
    /// Takes the lock of `dir`, waiting up to `wait` for a holder to let go.
    ///
    /// The wait covers a store of this process whose last handles are still being dropped on
    /// other threads; a directory held by another live process fails with
    /// [`KvsError::Locked`] once `wait` has passed.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| KvsError::io_at(&path, e))?;
        DirLock::wait_for(file, dir, wait, File::try_lock)
    }

    /// Takes the lock on the open `LOCK` file with `try_lock` (exclusive or shared), trying
    /// again every few milliseconds for up to `wait` while another holder has it.
    fn wait_for(
        file: File,
        dir: &Path,
        wait: Duration,
        try_lock: fn(&File) -> std::result::Result<(), TryLockError>,
    ) -> Result<DirLock> {
        let deadline = Instant::now() + wait;
        loop {
            match try_lock(&file) {
                Ok(()) => {
                    return Ok(DirLock {
                        file: Some(file),
                        owner: ProcessGuard::current(STORE),
                    })
                }
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(KvsError::Locked {
                        dir: dir.to_path_buf(),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(KvsError::io_at(dir.join(LOCK_FILE), e)),
            }
        }
    }

    /// Fails with [`KvsError::Forked`] in a child of the process that took the lock: the
    /// check every operation of a store makes first.
    #[inline]
    pub(crate) fn check_process(&self) -> Result<()> {
        self.owner.check()
    }

    /// Whether this is a child of the process that took the lock (see
    /// [`ProcessGuard::is_inherited`]): a store dropped there must leave the files alone.
    pub(crate) fn is_inherited(&self) -> bool {
        self.owner.is_inherited()
    }

    /// Takes a *shared* lock of `dir` for a read-only open, waiting up to `wait` for a writer
    /// to let go: any number of shared holders coexist, and an exclusive
    /// [`acquire`](DirLock::acquire) is refused while one is held (and the reverse).
    ///
    /// Creates nothing: `LOCK` is opened for reading only. A directory without one (a store
    /// copied without it, on read-only media) is used without a lock, with a warning; nothing
    /// then keeps a writer out.
    pub fn acquire_shared(dir: &Path, wait: Duration) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!(
                    "{} has no {LOCK_FILE} file: opening it read-only without a lock",
                    dir.display()
                );
                return Ok(DirLock {
                    file: None,
                    owner: ProcessGuard::current(STORE),
                });
            }
            Err(e) => return Err(KvsError::io_at(&path, e)),
        };
        DirLock::wait_for(file, dir, wait, File::try_lock_shared)
    }
}

/// Default time to wait for a directory's lock.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(2);
