//! The [`KvsEngine`] trait every storage engine implements.

use std::path::Path;

use crate::{KvsError, Result};

/// A key/value storage engine.
///
/// A value of this type is a *handle*: cloning it is cheap and every clone works on the same
/// store, from any thread. Keys and values are bytes underneath; the `String` methods are a
/// convenience face over the `*_bytes` ones.
pub trait KvsEngine: Clone + Send + Sync + 'static {
    /// Sets `key` to `value`, replacing any previous value.
    ///
    /// When this returns `Ok`, the write has reached the operating system (and, with a
    /// durable sync policy, the disk): it survives a crash of the process.
    fn set(&self, key: String, value: String) -> Result<()> {
        self.set_bytes(key.as_bytes(), value.as_bytes())
    }

    /// Returns the value of `key`, or `None` if it is not set.
    ///
    /// A value that is not valid UTF-8 is an error ([`KvsError::NotUtf8`]); read it with
    /// [`get_bytes`](KvsEngine::get_bytes).
    fn get(&self, key: String) -> Result<Option<String>> {
        match self.get_bytes(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| KvsError::NotUtf8 { key }),
        }
    }

    /// Removes `key`. Removing a key that is not set is [`KvsError::KeyNotFound`].
    fn remove(&self, key: String) -> Result<()> {
        self.remove_bytes(key.as_bytes())
    }

    /// Sets `key` to `value` (binary form of [`set`](KvsEngine::set)).
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Returns the value of `key` (binary form of [`get`](KvsEngine::get)).
    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets each key to its value, in order, as a batch: engines may write them together
    /// (`KvStore` writes a batch with one system call).
    ///
    /// Not atomic: if this fails, or the process crashes during it, the first pairs may be set
    /// and the rest not (never a later pair without an earlier one, for `KvStore`).
    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        for (key, value) in pairs {
            self.set_bytes(key, value)?;
        }
        Ok(())
    }

    /// Removes `key` (binary form of [`remove`](KvsEngine::remove)).
    fn remove_bytes(&self, key: &[u8]) -> Result<()>;

    /// Whether `key` is set. Engines may answer without reading the value.
    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get_bytes(key)?.is_some())
    }

    /// The number of keys in the store.
    fn len(&self) -> Result<usize>;

    /// Whether the store holds no key.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A snapshot of all keys, in no particular order. Keys set or removed while this runs
    /// may or may not be included.
    fn keys(&self) -> Result<Vec<Vec<u8>>>;

    /// Forces every acknowledged write onto stable storage (fsync).
    fn flush(&self) -> Result<()>;

    /// Writes an online checkpoint of the store into `dest`: a consistent copy holding exactly
    /// the writes acknowledged before one point in time during the call (every write that
    /// returned before the call started, none issued after it returned, and never a later
    /// write of a thread without its earlier ones), taken while other threads go on using the
    /// store. `dest` then opens as an ordinary store of the same engine (it holds its `engine`
    /// file), independent of this one; the copy is durable when this returns `Ok`.
    ///
    /// `dest` must not exist, or be an empty directory: anything else fails without touching
    /// it. If the checkpoint fails, what it wrote is removed again; if the process dies during
    /// it, `dest` is incomplete and must be deleted. How long writers wait depends on the
    /// engine: see [`KvStore`](crate::KvStore) (a moment, not the copy) and
    /// [`SledKvsEngine`](crate::SledKvsEngine) (the whole copy).
    fn checkpoint(&self, dest: &Path) -> Result<()>;
}
