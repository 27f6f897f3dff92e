//! The storage engines, and [`AnyEngine`] to open a data directory by engine name.

mod log;
mod sled;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The header of every kvs log file (see `log/format.rs`), which tells kvs data apart.
pub(crate) use self::log::FILE_MAGIC as KVS_LOG_MAGIC;
pub use self::log::{
    log_file_versions, verify_dir, verify_dir_with_progress, DiskStats, FileCheck, FileDamage,
    KvStore, KvStoreOptions, RecoveryMode, SyncPolicy, VerifyReport, MAX_BATCH_BYTES, MAX_KEY_LEN,
    MAX_VALUE_LEN,
};
#[doc(hidden)]
pub use self::log::{Index, RecordPos};
pub use self::sled::SledKvsEngine;

use crate::data_dir::{self, DirLock, EngineKind};
use crate::{
    KeyExpiry, KvsEngine, KvsError, Result, ScanFilter, ScanPage, Transaction, WriteBatch,
};

/// Name of the sub-directory of a data directory that holds a sled database.
pub const SLED_SUBDIR: &str = "sled";

/// Either engine, chosen when a data directory is opened. This is how `kvs-server`, the C
/// library and the Python package open stores.
///
/// A handle belongs to the process that opened it: in a child made by `fork()`, every
/// operation fails with [`KvsError::Forked`](crate::KvsError::Forked) and dropping the handle leaves the store alone.
/// Open the store again in the child, after the parent has closed it (the directory lock
/// admits one process), or in a fresh process.
#[derive(Clone)]
pub enum AnyEngine {
    /// kvs's own log-structured engine.
    Kvs(KvStore),
    /// The sled engine.
    Sled(SledKvsEngine),
}

impl AnyEngine {
    /// Opens the data directory `path` with `engine`, or with the engine recorded there when
    /// `engine` is `None` (`kvs` for a new directory).
    ///
    /// The engine is recorded in the directory before anything else is written; asking for an
    /// engine other than the recorded one fails with [`KvsError::EngineMismatch`](crate::KvsError::EngineMismatch) and touches
    /// nothing. If the `engine` file is lost, the engine is told from the data files present
    /// (see [`data_dir::detect_engine`]) and recorded again.
    pub fn open(path: impl Into<PathBuf>, engine: Option<EngineKind>) -> Result<AnyEngine> {
        AnyEngine::open_with(path, engine, KvStoreOptions::default())
    }

    /// Like [`open`](AnyEngine::open), with options for the `kvs` engine.
    ///
    /// [`KvStoreOptions::read_only`] applies to both engines: a `kvs` store opens read-only;
    /// a `sled` store is refused with [`KvsError::InvalidArgument`] (sled 0.34 has no
    /// read-only mode), having touched nothing. The other options are for `kvs` only.
    pub fn open_with(
        path: impl Into<PathBuf>,
        engine: Option<EngineKind>,
        options: KvStoreOptions,
    ) -> Result<AnyEngine> {
        let dir = path.into();
        if !options.is_read_only() {
            // A read-only open creates nothing; `KvStore::open_with` checks the directory.
            data_dir::ensure_dir(&dir)?;
        }
        // The recorded engine, or the one whose data is there if the record is lost.
        let recorded = data_dir::engine_of(&dir)?;
        let kind = match (engine, recorded) {
            (Some(wanted), _) => {
                data_dir::check_recorded(&dir, recorded, wanted)?;
                wanted
            }
            (None, Some(recorded)) => recorded,
            (None, None) => EngineKind::Kvs,
        };
        match kind {
            EngineKind::Kvs => Ok(AnyEngine::Kvs(KvStore::open_with(dir, options)?)),
            EngineKind::Sled if options.is_read_only() => Err(KvsError::InvalidArgument(format!(
                "{} holds a sled store, and sled cannot open a store read-only (it writes to \
                 its files whenever it opens them); open it read-write, or use the kvs engine",
                dir.display()
            ))),
            EngineKind::Sled => {
                crate::process::check_sled_usable()?;
                let lock = DirLock::acquire(&dir, data_dir::DEFAULT_LOCK_WAIT)?;
                data_dir::record_engine(&dir, EngineKind::Sled)?;
                let sled_dir = dir.join(SLED_SUBDIR);
                let db = open_sled(&sled_dir)?;
                Ok(AnyEngine::Sled(SledKvsEngine::with_lock(
                    db, lock, &sled_dir,
                )?))
            }
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            AnyEngine::Kvs(_) => EngineKind::Kvs,
            AnyEngine::Sled(_) => EngineKind::Sled,
        }
    }
}

/// Opens a sled database, waiting briefly for sled's own file lock: a sled handle of this
/// process that was just dropped lets go of it a moment later, from sled's flusher thread.
fn open_sled(path: &std::path::Path) -> Result<::sled::Db> {
    let deadline = std::time::Instant::now() + data_dir::DEFAULT_LOCK_WAIT;
    loop {
        match ::sled::open(path) {
            Ok(db) => return Ok(db),
            // sled reports its lock as `Other` with this message (sled 0.34).
            Err(::sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(self::sled::to_kvs_error(e, Some(path))),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $engine:ident => $call:expr) => {
        match $self {
            AnyEngine::Kvs($engine) => $call,
            AnyEngine::Sled($engine) => $call,
        }
    };
}

impl KvsEngine for AnyEngine {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        delegate!(self, e => e.set_bytes(key, value))
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        delegate!(self, e => e.get_bytes(key))
    }

    fn read_bytes(&self, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        delegate!(self, e => e.read_bytes(key, f))
    }

    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        delegate!(self, e => e.set_many_bytes(pairs))
    }

    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        delegate!(self, e => e.remove_bytes(key))
    }

    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        delegate!(self, e => e.contains_key(key))
    }

    fn len(&self) -> Result<usize> {
        delegate!(self, e => e.len())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        delegate!(self, e => e.keys())
    }

    fn flush(&self) -> Result<()> {
        delegate!(self, e => e.flush())
    }

    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        delegate!(self, e => e.compare_and_set_bytes(key, expected, new))
    }

    fn update_bytes<F>(&self, key: &[u8], f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        delegate!(self, e => e.update_bytes(key, f))
    }

    fn checkpoint(&self, dest: &Path) -> Result<()> {
        delegate!(self, e => e.checkpoint(dest))
    }

    fn apply_batch(&self, batch: &WriteBatch) -> Result<()> {
        delegate!(self, e => e.apply_batch(batch))
    }

    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        delegate!(self, e => e.get_many_bytes(keys))
    }

    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()> {
        delegate!(self, e => e.set_with_deadline_bytes(key, value, deadline))
    }

    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool> {
        delegate!(self, e => e.expire_at_bytes(key, deadline))
    }

    fn persist_bytes(&self, key: &[u8]) -> Result<bool> {
        delegate!(self, e => e.persist_bytes(key))
    }

    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry> {
        delegate!(self, e => e.expiry_bytes(key))
    }

    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage> {
        delegate!(self, e => e.scan_bytes(cursor, count, filter))
    }

    fn transaction<R, F>(&self, f: F) -> Result<R>
    where
        F: FnMut(&mut dyn Transaction) -> Result<R>,
    {
        delegate!(self, e => e.transaction(f))
    }
}

/// The destination directory of a checkpoint (see [`KvsEngine::checkpoint`]), locked while the
/// checkpoint is written into it, so that no store is opened on a half-made copy.
pub(crate) struct CheckpointDir {
    path: PathBuf,
    /// Whether the checkpoint created the directory (rather than finding it empty).
    created: bool,
    lock: DirLock,
}

impl CheckpointDir {
    /// Takes `dest`: creates it, or takes it if it is an empty directory. Anything else (a
    /// file, a directory with anything in it) fails, naming `dest`, and touches nothing.
    pub(crate) fn prepare(dest: &Path) -> Result<CheckpointDir> {
        let refuse = |kind: io::ErrorKind, what: &str| {
            KvsError::io_at(
                dest,
                io::Error::new(
                    kind,
                    format!("{what}: a checkpoint is written into a new or empty directory"),
                ),
            )
        };
        let created = match fs::create_dir(dest) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !dest.is_dir() {
                    return Err(refuse(io::ErrorKind::NotADirectory, "not a directory"));
                }
                let mut entries = fs::read_dir(dest).map_err(|e| KvsError::io_at(dest, e))?;
                if entries.next().is_some() {
                    return Err(refuse(io::ErrorKind::DirectoryNotEmpty, "not empty"));
                }
                false
            }
            Err(e) => return Err(KvsError::io_at(dest, e)),
        };
        match DirLock::acquire(dest, std::time::Duration::ZERO) {
            Ok(lock) => Ok(CheckpointDir {
                path: dest.to_path_buf(),
                created,
                lock,
            }),
            Err(e) => {
                if created {
                    let _ = fs::remove_dir_all(dest);
                } else {
                    let _ = fs::remove_file(dest.join(data_dir::LOCK_FILE));
                }
                Err(e)
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Ends a checkpoint that `result` says was written: makes the directory's entries durable
    /// (and its own entry, in its parent, when it was created) and lets go of it. If `result`
    /// is an error, removes what was written instead (the whole directory if the checkpoint
    /// created it) and returns the error.
    pub(crate) fn finish(self, result: Result<()>) -> Result<()> {
        let result = result.and_then(|()| {
            data_dir::sync_dir(&self.path)?;
            if self.created {
                let parent = match self.path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                data_dir::sync_dir(parent)?;
            }
            Ok(())
        });
        if result.is_err() {
            if self.created {
                let _ = fs::remove_dir_all(&self.path);
            } else if let Ok(entries) = fs::read_dir(&self.path) {
                // The directory was empty: everything in it is the checkpoint's.
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = match entry.file_type() {
                        Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
                        _ => fs::remove_file(&path),
                    };
                }
            }
        }
        drop(self.lock);
        result
    }
}
