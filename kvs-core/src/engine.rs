//! The [`KvsEngine`] trait every storage engine implements.

use std::path::Path;

use crate::{KeyExpiry, KvsError, Result, ScanFilter, ScanPage, WriteBatch};

/// What the function given to [`KvsEngine::transaction`] reads and writes through: the store
/// as of the transaction, with the transaction's own writes applied on top (a read after a
/// write in the same transaction sees that write).
pub trait Transaction {
    /// The value of `key`, `None` if it is not set (or has expired).
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Whether `key` is set, and its deadline.
    fn expiry(&mut self, key: &[u8]) -> Result<KeyExpiry>;

    /// Sets `key` to `value` with `deadline` (`None`: no deadline; a deadline that has passed
    /// removes the key).
    fn set(&mut self, key: &[u8], value: &[u8], deadline: Option<u64>) -> Result<()>;

    /// Removes `key`; returns whether it was set.
    fn remove(&mut self, key: &[u8]) -> Result<bool>;
}

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

    /// Calls `f` with the value of `key` (`None` if it is not set), as
    /// [`get_bytes`](KvsEngine::get_bytes) would return it, without copying it out of the
    /// engine first where the engine can: `KvStore` hands `f` the bytes in its mapped log file,
    /// so a server copies a value once, into its reply. `f` runs while the engine holds a read
    /// lock on part of its index: it must not call the engine, and should be quick (writers of
    /// keys that share that part wait for it). Nothing is passed to `f` if the read fails.
    ///
    /// This default, for engines that do not override it, calls `f` with what `get_bytes`
    /// returned.
    fn read_bytes(&self, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        f(self.get_bytes(key)?.as_deref());
        Ok(())
    }

    /// Sets each key to its value, in order, as a batch: engines may write them together
    /// (`KvStore` writes a batch with one system call).
    ///
    /// Atomic on `KvStore`, as [`apply_batch`](KvsEngine::apply_batch) of the same sets is: if
    /// this fails, or the process dies during it, reopening finds all of the pairs or none of
    /// them, and readers never see some of them without the others. (Pairs whose records take
    /// more than [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES) are written in order as several
    /// such batches: a crash may keep the first ones, never a later pair without every earlier
    /// one.) This default, for engines that do not override it, sets them one by one and is
    /// not atomic: the first pairs may be set and the rest not.
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
    /// - `SledKvsEngine` runs a compare-and-swap loop on the key's record: `f` may run
    ///   **more than once**, when another write changed the key in between; only the last
    ///   call's result is stored. `f` must not count on running once.
    ///
    /// A value `f` returns that is too large for the engine is an error and nothing is
    /// written.
    fn update_bytes<F>(&self, key: &[u8], f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>;

    /// Applies every operation of `batch`, in order, as one atomic write: after this returns
    /// `Ok`, all of it is in the store (acknowledged as [`set`](KvsEngine::set) is); if it
    /// fails, or the process dies at any point during it, reopening finds all of it or none
    /// of it, never a part.
    ///
    /// Isolation: readers in the process see the store before the batch or after it, never in
    /// between: once a read returns a value the batch wrote, every later read of any key the
    /// batch wrote returns the batch's value (or a later one). [`get_many_bytes`] reads
    /// several keys at one instant. An empty batch writes nothing.
    ///
    /// [`get_many_bytes`]: KvsEngine::get_many_bytes
    fn apply_batch(&self, batch: &WriteBatch) -> Result<()>;

    /// The values of `keys`, in order (`None`: not set), all read at one instant: no write
    /// (nor batch) lands between the reads of two of them.
    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Sets `key` to `value`, expiring at `deadline` (milliseconds since the Unix epoch; see
    /// [`now_millis`](crate::now_millis)). Durable as [`set`](KvsEngine::set) is. A deadline
    /// that has passed removes the key (as Redis does with a deadline in the past). A plain
    /// [`set`](KvsEngine::set) clears any deadline the key had.
    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()>;

    /// Gives the existing `key` the deadline `deadline`, keeping its value; returns whether
    /// the key was set (`false`: nothing is written). A deadline that has passed removes the
    /// key and returns `true`.
    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool>;

    /// Removes the deadline of `key`; returns whether it had one (`false` for a key without
    /// a deadline or not set: nothing is written).
    fn persist_bytes(&self, key: &[u8]) -> Result<bool>;

    /// Whether `key` is set, and its deadline if it has one.
    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry>;

    /// One page of a walk over the keys that pass `filter`: start with `cursor` 0 and pass
    /// each page's [`cursor`](ScanPage::cursor) to the next call, until it is 0.
    ///
    /// The guarantees of Redis's `SCAN`: every key that is set (and passes the filter) for the
    /// whole walk is returned at least once (it may be returned more than once); a key set or
    /// removed during the walk may or may not be; a walk of a store of N keys costs O(N) in
    /// all, and each call holds memory for about `count` keys, not for the whole key set. Writes
    /// go on during the walk. `count` is the amount of work per call, as in Redis (how many
    /// keys are looked at), so a page may hold fewer keys than `count` when a filter is set,
    /// even none. A cursor this engine did not return is [`KvsError::InvalidArgument`] (or
    /// silently a walk from somewhere in the store, where it cannot tell).
    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage>;

    /// Runs `f` as one atomic, isolated transaction: what `f` reads through the
    /// [`Transaction`] is the store at one point in time plus `f`'s own writes, and what it
    /// writes is applied as one batch ([`apply_batch`](KvsEngine::apply_batch): all or
    /// nothing, seen by readers at once, acknowledged as [`set`](KvsEngine::set) is) only if
    /// `f` returns `Ok`; an `Err` from `f` writes nothing and is returned. No other write of
    /// the store in this process lands between `f`'s reads and its writes.
    ///
    /// How `f` runs depends on the engine, as for [`update_bytes`](KvsEngine::update_bytes):
    /// `KvStore` calls it once with the writer lock held (keep it short, never use the same
    /// store's handle from inside it); `SledKvsEngine` may call it **more than once** when a
    /// conflicting write interleaves, keeping only the last run's writes and result.
    fn transaction<R, F>(&self, f: F) -> Result<R>
    where
        F: FnMut(&mut dyn Transaction) -> Result<R>;

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
