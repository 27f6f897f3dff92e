//! [`SledKvsEngine`]: the [`KvsEngine`] interface over the `sled` crate.

use std::sync::Arc;

use crate::data_dir::DirLock;
use crate::{KvsEngine, KvsError, Result};

/// A [`KvsEngine`] backed by a `sled` database.
///
/// Every write is flushed (`Db::flush`) before it returns, so an acknowledged write survives a
/// crash of the process, as with [`KvStore`](crate::KvStore).
#[derive(Clone)]
pub struct SledKvsEngine {
    db: sled::Db,
    // Held when the engine was opened through a kvs data directory (see `AnyEngine::open`).
    _lock: Option<Arc<DirLock>>,
}

impl SledKvsEngine {
    /// Wraps an open sled database.
    pub fn new(db: sled::Db) -> SledKvsEngine {
        SledKvsEngine { db, _lock: None }
    }

    pub(crate) fn with_lock(db: sled::Db, lock: DirLock) -> SledKvsEngine {
        SledKvsEngine {
            db,
            _lock: Some(Arc::new(lock)),
        }
    }
}

impl KvsEngine for SledKvsEngine {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        self.db.remove(key)?.ok_or(KvsError::KeyNotFound)?;
        self.db.flush()?;
        Ok(())
    }

    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.db.contains_key(key)?)
    }

    fn len(&self) -> Result<usize> {
        Ok(self.db.len())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.db
            .iter()
            .keys()
            .map(|k| k.map(|k| k.to_vec()).map_err(KvsError::from))
            .collect()
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
