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

    /// Atomically: if the value of `key` is `expected` (`None`: the key is not set), sets it
    /// to `new` (`None`: removes it) and returns `true`; otherwise changes nothing and returns
    /// `false`.
    ///
    /// Atomic against every other write of `key` through any handle of the store in this
    /// process (`set`, `remove`, `set_many_bytes`, this,
    /// [`update_bytes`](KvsEngine::update_bytes)).
    /// A `true` is acknowledged as [`set`](KvsEngine::set) is: the new state has reached the
    /// operating system (and, with a durable sync policy, the disk). A `false` writes nothing;
    /// `KvStore` writes nothing either when `new` is `expected` (`None` for `None` on a key
    /// that is not set, or a value replaced by itself).
    ///
    /// A counter, incremented by any number of threads without losing a step:
    ///
    /// ```
    /// use kvs::{KvStore, KvsEngine};
    /// # fn main() -> kvs::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let store = KvStore::open(dir.path())?;
    /// loop {
    ///     let old = store.get_bytes(b"hits")?;
    ///     let n: u64 = match old.as_deref() {
    ///         None => 0,
    ///         Some(v) => std::str::from_utf8(v).unwrap().parse().unwrap(),
    ///     };
    ///     let new = (n + 1).to_string();
    ///     if store.compare_and_set_bytes(b"hits", old.as_deref(), Some(new.as_bytes()))? {
    ///         break;
    ///     }
    /// }
    /// assert_eq!(store.get_bytes(b"hits")?, Some(b"1".to_vec()));
    /// # Ok(()) }
    /// ```
    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool>;

    /// Atomically replaces the value of `key` with `f(current)` (`None` in: the key is not
    /// set; `None` out: remove it) and returns the new value. Durable as
    /// [`set`](KvsEngine::set) is. If `f` returns the current state (a missing key left
    /// missing; with `KvStore`, also the value it was given), nothing is written.
    ///
    /// How `f` runs depends on the engine:
    /// - `KvStore` calls `f` exactly once, holding the store's writer lock: every other write
    ///   to the store waits for it, so keep `f` short, and never write to the same store from
    ///   inside `f` (that deadlocks). Reads from inside `f` are fine.
    /// - `SledKvsEngine` runs sled's compare-and-swap loop (`update_and_fetch`): `f` may run
    ///   **more than once**, when another write changed the key in between; only the last
    ///   call's result is stored. `f` must not count on running once.
    ///
    /// A value `f` returns that is too large for the engine is an error and nothing is
    /// written.
    fn update_bytes<F>(&self, key: &[u8], f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>;

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
