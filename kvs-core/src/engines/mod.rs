//! The storage engines, and [`AnyEngine`] to open a data directory by engine name.

mod log;
mod sled;

use std::path::PathBuf;

/// The header of every kvs log file (see `log/format.rs`), which tells kvs data apart.
pub(crate) use self::log::FILE_MAGIC as KVS_LOG_MAGIC;
pub use self::log::{
    DiskStats, KvStore, KvStoreOptions, RecoveryMode, SyncPolicy, MAX_KEY_LEN, MAX_VALUE_LEN,
};
pub use self::sled::SledKvsEngine;

use crate::data_dir::{self, DirLock, EngineKind};
use crate::{KvsEngine, KvsError, Result};

/// Name of the sub-directory of a data directory that holds a sled database.
pub const SLED_SUBDIR: &str = "sled";

/// Either engine, chosen when a data directory is opened. This is how `kvs-server`, the C
/// library and the Python package open stores.
///
/// A handle belongs to the process that opened it: in a child made by `fork()`, every
/// operation fails with [`KvsError::Forked`] and dropping the handle leaves the store alone.
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
    /// engine other than the recorded one fails with [`KvsError::EngineMismatch`] and touches
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
                )))
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
            Err(e) => return Err(KvsError::from(e)),
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
}
