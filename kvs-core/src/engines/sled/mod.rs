//! [`SledKvsEngine`]: the [`KvsEngine`] interface over the `sled` crate.
//!
//! The layout of the data inside sled (format 2, with deadlines) and the migration of a store
//! of release 0.1.0 are in `layout.rs`; the active sweep of expired keys in `sweep.rs`; the
//! cursors of scans in `cursors.rs`.
//!
//! # What sled 0.34.7 guarantees, and what the engine builds on it
//!
//! Read in sled's source (`tree.rs`, `transaction.rs`, `iter.rs`, `concurrency_control.rs`):
//! - `Tree::apply_batch` and every transaction hold sled's *process-wide* concurrency-control
//!   lock exclusively (`concurrency_control::write`) while they apply, and every `get`,
//!   `insert`, `remove`, `compare_and_swap` and each step of an iterator hold it shared
//!   (`concurrency_control::read`). So a batch or a transaction is isolated from every single
//!   read: a `get` sees the trees before it or after it. A transaction's own reads
//!   (`TransactionalTree::get`) run under the exclusive lock, so all of them happen at one
//!   instant. The price: the first exclusive use switches every later shared use in the
//!   process from an atomic counter to a real `RwLock` (`ConcurrencyControl::enable`;
//!   measured with `examples/sled_costs.rs`: no difference in the cost of a get beyond the
//!   noise), and while a batch or transaction runs, every sled read of the process waits.
//!   Every transaction also logs a batch marker, a read-only one too.
//! - Both write under one log reservation sealed as a batch (`pin_log`, `seal_batch`):
//!   recovery after a crash replays all of it or none of it.
//! - Single operations (`insert`, `remove`, `compare_and_swap`) are atomic on their key; an
//!   iterator is not a snapshot (each step reads the tree as it is then).
//!
//! So: a [`WriteBatch`] is one transaction over the record and expiry trees, as are
//! `set_many_bytes` and every write that sets a deadline (a set with a deadline,
//! `expire_at`, `persist`). [`get_many_bytes`](KvsEngine::get_many_bytes) reads at one
//! instant by holding off the handle's writes (its mutation lock), not by a transaction.
//! Plain `set`, `remove`, compare-and-set and update are single sled operations on the record
//! (they keep or drop the deadline inside it); when one drops a deadline, a small transaction
//! right after removes its expiry entry. A crash in between leaves that entry stale, and the
//! sweep recognises it (the record decides).

use std::mem::ManuallyDrop;
use std::ops::Bound;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use crate::batch::Op;
use crate::data_dir::{self, DirLock, EngineKind};
use crate::process::{self, ProcessGuard, STORE};
use crate::transaction::Overlay;
use crate::{
    is_expired, now_millis, KeyExpiry, KvsEngine, KvsError, Result, ScanFilter, ScanPage,
    Transaction, WriteBatch,
};

mod cursors;
mod layout;
mod sweep;

use self::cursors::Cursors;
use self::layout::{transaction_error, Record};
use self::sweep::Sweeper;

/// A [`KvsEngine`] backed by a `sled` database.
///
/// Every write is flushed (`Db::flush`) before it returns, so an acknowledged write survives a
/// crash of the process, as with [`KvStore`](crate::KvStore).
///
/// Deadlines are kept in the sled database with the values (they survive a restart and a
/// crash); a background thread owned by the handle removes expired keys that nobody reads
/// (every read hides them at once anyway). [`len`](KvsEngine::len) reads every key (O(n)).
///
/// Like a `KvStore`, a handle belongs to the process that created it: in a child made by
/// `fork()` every operation fails with [`KvsError::Forked`], and dropping the handle there
/// leaves the database alone (see [`Drop`](#impl-Drop-for-SledKvsEngine)).
#[derive(Clone)]
pub struct SledKvsEngine {
    /// Never dropped in a child of `fork()`: see `Drop` below.
    db: ManuallyDrop<sled::Db>,
    /// The records (`kvs-data`): dropped before `db`, never in a child of `fork()`.
    data: ManuallyDrop<sled::Tree>,
    /// Keys by deadline (`kvs-expiry`): dropped before `db`, never in a child of `fork()`.
    expiry: ManuallyDrop<sled::Tree>,
    process: ProcessGuard,
    /// The directory of the sled database, when known (not for [`SledKvsEngine::new`]): errors
    /// name it.
    sled_dir: Option<Arc<Path>>,
    /// Held when the engine was opened through a kvs data directory (see `AnyEngine::open`).
    dir: Option<Arc<DataDir>>,
    /// Shared by every write through the handle and its clones, taken exclusively by a
    /// checkpoint for its copy (see [`SledKvsEngine::checkpoint`](KvsEngine::checkpoint)).
    writes: Arc<RwLock<()>>,
    /// Held shared by every write through the handle and its clones, and by the sweep, for
    /// the duration of its sled operation (not its flush); exclusively by
    /// [`get_many_bytes`](KvsEngine::get_many_bytes), whose reads no write may come between.
    mutations: Arc<RwLock<()>>,
    /// The sweep of expired keys, stopped by the last clone to drop.
    sweeper: Option<Arc<Sweeper>>,
    /// The open walks of [`scan_bytes`](KvsEngine::scan_bytes).
    cursors: Arc<Cursors>,
}

/// What a handle opened through a kvs data directory holds on to.
struct DataDir {
    /// Released after the database is closed (it drops after `SledKvsEngine::drop`).
    _lock: DirLock,
    /// The descriptors sled holds on its files, found right after it opened them (see
    /// `Drop`): (descriptor, device, inode).
    sled_fds: Vec<(RawFd, u64, u64)>,
}

impl SledKvsEngine {
    /// Wraps an open sled database. The handle belongs to the calling process.
    ///
    /// A database of release 0.1.0 (values in sled's default tree) is migrated to this
    /// release's layout first (see `layout.rs`), and a new one gets it; a database of a newer
    /// kvs format is refused with [`KvsError::InvalidArgument`].
    pub fn new(db: sled::Db) -> Result<SledKvsEngine> {
        SledKvsEngine::build(db, None, None)
    }

    /// A handle on the database in `sled_dir`, just opened while holding `lock`.
    pub(crate) fn with_lock(db: sled::Db, lock: DirLock, sled_dir: &Path) -> Result<SledKvsEngine> {
        let dir = DataDir {
            _lock: lock,
            sled_fds: descriptors_under(sled_dir),
        };
        SledKvsEngine::build(db, Some(Arc::from(sled_dir)), Some(Arc::new(dir)))
    }

    fn build(
        db: sled::Db,
        sled_dir: Option<Arc<Path>>,
        dir: Option<Arc<DataDir>>,
    ) -> Result<SledKvsEngine> {
        process::sled_started();
        let trees = layout::prepare(&db, sled_dir.as_deref())?;
        let writes = Arc::default();
        let mutations = Arc::default();
        let sweeper = Sweeper::start(
            trees.data.clone(),
            trees.expiry.clone(),
            [Arc::clone(&writes), Arc::clone(&mutations)],
            sled_dir.clone(),
        )?;
        Ok(SledKvsEngine {
            db: ManuallyDrop::new(db),
            data: ManuallyDrop::new(trees.data),
            expiry: ManuallyDrop::new(trees.expiry),
            process: ProcessGuard::current(STORE),
            sled_dir,
            dir,
            writes,
            mutations,
            sweeper: Some(Arc::new(sweeper)),
            cursors: Arc::new(Cursors::new()),
        })
    }

    /// Held by every write for its duration: a checkpoint's copy waits for writes in progress
    /// and holds new ones off.
    fn write_guard(&self) -> RwLockReadGuard<'_, ()> {
        // Nothing is guarded but the exclusion itself: a panic while holding it leaves
        // nothing inconsistent.
        self.writes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held by every write around its sled operation: `get_many_bytes` holds it exclusively.
    /// Taken after `write_guard`, never before (and never by a caller's code while held).
    fn mutation_guard(&self) -> RwLockReadGuard<'_, ()> {
        // As for `write_guard`: nothing is guarded but the exclusion itself.
        self.mutations.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// In the process that opened it, dropping the last handle stops the sweep of expired keys,
/// closes the database as sled does, then releases the directory lock (fields drop after
/// `drop` returns).
///
/// In a child of `fork()` the `Db` (with the engine's trees and the sweep thread, which does
/// not exist there) is leaked instead: sled 0.34's drop flushes its page cache
/// into the files the parent is using (`TreeInner`'s and `Log`'s drops), then waits for its
/// flusher thread to stop (`Flusher`'s drop), a thread the child does not have, so it would
/// write into the parent's database and then hang.
///
/// sled also holds a `flock` on its `db` file, and a lock belongs to the open file
/// description, which a child shares with its parent: closing its descriptor does not release
/// the lock while a child still has a copy. For a handle opened through a data directory
/// (which knows sled's descriptors, listed at open), the last handle to drop therefore
/// - in the parent, unlocks sled's files explicitly once sled has closed them (through a
///   duplicate of each descriptor, taken before), so that the parent can reopen the store
///   while children that inherited it live on;
/// - in the child, closes the child's copies of those descriptors, so that the child can open
///   the store itself once the parent has closed it.
///
/// (A handle made by [`SledKvsEngine::new`] does not know its descriptors: sled's lock then
/// stays held until every process that has a copy of them closes the handle or exits.)
impl Drop for SledKvsEngine {
    fn drop(&mut self) {
        // `Arc::into_inner` gives the data directory to exactly one of the clones: the last.
        let last = self.dir.take().and_then(Arc::into_inner);
        let sweeper = self.sweeper.take().and_then(Arc::into_inner);
        if self.process.is_inherited() {
            std::mem::forget(sweeper);
            for &(fd, dev, ino) in last.iter().flat_map(|dir| &dir.sled_fds) {
                if is_file(fd, dev, ino) {
                    // SAFETY: `fd` is one of sled's descriptors, owned by the `Db` that is
                    // leaked here (never used or closed again in this process), and it still
                    // refers to the file it did at open.
                    unsafe { libc::close(fd) };
                }
            }
            return;
        }
        let dups: Vec<RawFd> = last
            .iter()
            .flat_map(|dir| &dir.sled_fds)
            .filter(|&&(fd, dev, ino)| is_file(fd, dev, ino))
            // SAFETY: `fd` is an open descriptor of sled's (checked just above); `dup` only
            // makes a new descriptor of the same open file description.
            .map(|&(fd, _, _)| unsafe { libc::dup(fd) })
            .filter(|&dup| dup >= 0)
            .collect();
        if let Some(sweeper) = sweeper {
            sweeper.stop();
        }
        // SAFETY: `data`, `expiry` and `db` are dropped only here, once each, and `self` is not
        // used after drop. The trees go first: the last handle's `db` closes the database.
        unsafe {
            ManuallyDrop::drop(&mut self.data);
            ManuallyDrop::drop(&mut self.expiry);
            ManuallyDrop::drop(&mut self.db);
        }
        for dup in dups {
            // SAFETY: `dup` is our own descriptor, from `dup` above; unlocking and closing it
            // touch no one else's descriptor (sled has closed its own by now).
            unsafe {
                libc::flock(dup, libc::LOCK_UN);
                libc::close(dup);
            }
        }
    }
}

/// The descriptors of this process on files under `dir`, as `/proc/self/fd` lists them, with
/// each file's device and inode. Empty where `/proc` is not available.
fn descriptors_under(dir: &Path) -> Vec<(RawFd, u64, u64)> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own descriptor is closed by now: its link no longer resolves below.
    fds.into_iter()
        .filter_map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            if !target.starts_with(&dir) {
                return None;
            }
            let meta = std::fs::metadata(&target).ok()?;
            Some((fd, meta.dev(), meta.ino()))
        })
        .collect()
}

/// Whether descriptor `fd` is open on the file with device `dev` and inode `ino`.
fn is_file(fd: RawFd, dev: u64, ino: u64) -> bool {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` writes a `stat` into the buffer, which is large enough for one, and
    // reads nothing else; it fails harmlessly on a descriptor that is not open.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: `fstat` succeeded, so it initialized the buffer.
    let stat = unsafe { stat.assume_init() };
    stat.st_dev == dev && stat.st_ino == ino
}

impl SledKvsEngine {
    /// `err` as a kvs error, naming this database's directory when it is known.
    fn error(&self, err: sled::Error) -> KvsError {
        to_kvs_error(err, self.sled_dir.as_deref())
    }

    fn tx_error(&self, err: sled::transaction::TransactionError<KvsError>) -> KvsError {
        transaction_error(err, self.sled_dir.as_deref())
    }

    fn decode<'a>(&self, raw: &'a [u8], key: &[u8]) -> Result<Record<'a>> {
        layout::decode(raw, key, self.sled_dir.as_deref())
    }

    /// The record stored for `key` if it is live at `now` (not expired): `None` for a key not
    /// set or expired.
    fn live<'a>(&self, raw: Option<&'a [u8]>, key: &[u8], now: u64) -> Result<Option<Record<'a>>> {
        match raw {
            None => Ok(None),
            Some(raw) => {
                let record = self.decode(raw, key)?;
                Ok(record
                    .deadline
                    .is_none_or(|d| !is_expired(d, now))
                    .then_some(record))
            }
        }
    }

    fn flush_db(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Applies `ops` in order as one transaction over the record and expiry trees, then
    /// flushes; nothing for no op. Each record replaced or removed takes its expiry entry
    /// with it (unless the new record has the same deadline).
    fn write_ops<'a>(&self, ops: impl Iterator<Item = Op<'a>>) -> Result<()> {
        let ops: Vec<Op<'a>> = ops.collect();
        if ops.is_empty() {
            return Ok(());
        }
        let _write = self.write_guard();
        let sled_dir = self.sled_dir.as_deref();
        let now = now_millis();
        let mutation = self.mutation_guard();
        (&*self.data, &*self.expiry)
            .transaction(|(data, expiry)| apply_ops_in(data, expiry, &ops, now, sled_dir))
            .map_err(|e| self.tx_error(e))?;
        drop(mutation);
        self.flush_db()
    }

    /// The write step of compare-and-set and update: replaces the record `raw` of `key` (as
    /// read) with `new` and `deadline` (`None`: removes it) if it is still there, then flushes
    /// and, for a removal, drops the old record's expiry entry. `false`: another write changed
    /// the record in between, and nothing was written.
    fn swap_record(
        &self,
        key: &[u8],
        raw: Option<&[u8]>,
        new: Option<&[u8]>,
        deadline: Option<u64>,
    ) -> Result<bool> {
        let record = new.map(|v| layout::encode(v, deadline));
        let removes = record.is_none();
        let mutation = self.mutation_guard();
        let swapped = self
            .data
            .compare_and_swap(key, raw, record)
            .map_err(|e| self.error(e))?;
        drop(mutation);
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush_db()?;
        if removes {
            self.forget_deadline_of(key, raw)?;
        }
        Ok(true)
    }

    /// After a single-operation write replaced or removed the record `old` of `key`: removes
    /// the expiry entry of `old`'s deadline unless the record now there has that deadline
    /// again (another write may have set it in between: the check and the removal are one
    /// transaction). Not flushed: an entry left by a crash before this is stale, and the
    /// sweep drops it when its deadline comes.
    fn forget_deadline_of(&self, key: &[u8], old: Option<&[u8]>) -> Result<()> {
        let sled_dir = self.sled_dir.as_deref();
        let Some(old) = old
            .and_then(|raw| layout::decode(raw, key, sled_dir).ok())
            .and_then(|r| r.deadline)
        else {
            return Ok(());
        };
        let _mutation = self.mutation_guard();
        (&*self.data, &*self.expiry)
            .transaction(|(data, expiry)| {
                let now = data.get(key)?;
                let claimed = now
                    .as_deref()
                    .and_then(|raw| layout::decode(raw, key, sled_dir).ok())
                    .is_some_and(|r| r.deadline == Some(old));
                if !claimed {
                    expiry.remove(layout::expiry_entry(old, key))?;
                }
                Ok::<_, ConflictableTransactionError<KvsError>>(())
            })
            .map_err(|e| self.tx_error(e))
    }
}

/// What a step of a transaction of the engine returns.
type TxResult<T> = std::result::Result<T, ConflictableTransactionError<KvsError>>;

/// Inside a transaction: the live record of `key` at `now` (value copied, deadline), `None`
/// for a key not set or expired.
fn live_in(
    data: &sled::transaction::TransactionalTree,
    key: &[u8],
    now: u64,
    sled_dir: Option<&Path>,
) -> TxResult<Option<(Vec<u8>, Option<u64>)>> {
    let Some(raw) = data.get(key)? else {
        return Ok(None);
    };
    let record =
        layout::decode(&raw, key, sled_dir).map_err(ConflictableTransactionError::Abort)?;
    if record.deadline.is_some_and(|d| is_expired(d, now)) {
        return Ok(None);
    }
    Ok(Some((record.value.to_vec(), record.deadline)))
}

/// Inside a transaction: applies `ops` in order to the record and expiry trees (a `Set` whose
/// deadline has passed at `now` removes the key); each record replaced or removed takes its
/// expiry entry with it (unless the new record has the same deadline).
fn apply_ops_in(
    data: &sled::transaction::TransactionalTree,
    expiry: &sled::transaction::TransactionalTree,
    ops: &[Op<'_>],
    now: u64,
    sled_dir: Option<&Path>,
) -> TxResult<()> {
    for op in ops {
        match *op {
            Op::Set {
                key,
                value,
                deadline,
            } => {
                let deadline = match deadline {
                    Some(d) if is_expired(d, now) => {
                        let old = data.remove(key)?;
                        drop_old_entry(expiry, old.as_deref(), key, None, sled_dir)?;
                        continue;
                    }
                    live => live,
                };
                let old = data.insert(key, layout::encode(value, deadline))?;
                drop_old_entry(expiry, old.as_deref(), key, deadline, sled_dir)?;
                if let Some(deadline) = deadline {
                    expiry.insert(layout::expiry_entry(deadline, key), &[])?;
                }
            }
            Op::Remove { key } => {
                let old = data.remove(key)?;
                drop_old_entry(expiry, old.as_deref(), key, None, sled_dir)?;
            }
        }
    }
    Ok(())
}

/// A sled error as a kvs error: the one place that looks inside `sled::Error`, so that no
/// type of sled's shows in [`KvsError`] (nor in what the bindings match on).
///
/// - `Io` is [`KvsError::IoAt`] on the database's directory (`sled_dir`), or
///   [`KvsError::Io`] when the directory is not known;
/// - `Corruption` is [`KvsError::Corruption`], at the offset in sled's log (`db`, or the blob
///   file that the log points to) where sled found it, when sled says;
/// - the rest (a collection that no longer exists, an unsupported use, a bug sled reports) is
///   [`KvsError::Engine`].
pub(crate) fn to_kvs_error(err: sled::Error, sled_dir: Option<&Path>) -> KvsError {
    match err {
        sled::Error::Io(source) => match sled_dir {
            Some(dir) => KvsError::io_at(dir, source),
            None => KvsError::Io(source),
        },
        sled::Error::Corruption { at, .. } => {
            let dir = sled_dir.map_or_else(|| PathBuf::from("sled database"), Path::to_path_buf);
            let (path, offset, reason) = match at {
                Some(sled::DiskPtr::Inline(offset)) => {
                    (dir.join("db"), offset, "sled found damaged data".to_owned())
                }
                Some(sled::DiskPtr::Blob(offset, blob)) => (
                    dir.join("blobs").join(blob.to_string()),
                    0,
                    format!(
                        "sled found a damaged blob (pointed to from offset {offset} of its log)"
                    ),
                ),
                None => (dir, 0, "sled found damaged data".to_owned()),
            };
            KvsError::Corruption {
                path,
                offset,
                reason,
            }
        }
        other => KvsError::Engine {
            engine: "sled",
            message: other.to_string(),
        },
    }
}

impl KvsEngine for SledKvsEngine {
    /// Stores the record without a deadline: a deadline the key had goes with the old record
    /// (its entry in the expiry tree is removed right after, see `forget_deadline_of`).
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.process.check()?;
        let _write = self.write_guard();
        let mutation = self.mutation_guard();
        let old = self
            .data
            .insert(key, layout::encode(value, None))
            .map_err(|e| self.error(e))?;
        drop(mutation);
        self.flush_db()?;
        self.forget_deadline_of(key, old.as_deref())
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.process.check()?;
        let raw = self.data.get(key).map_err(|e| self.error(e))?;
        Ok(self
            .live(raw.as_deref(), key, now_millis())?
            .map(|r| r.value.to_vec()))
    }

    /// Atomic, unlike the trait's minimum: one transaction, as
    /// [`apply_batch`](KvsEngine::apply_batch) (all or nothing across a crash, and isolated
    /// from readers, see the module's documentation).
    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        self.process.check()?;
        let ops = pairs.iter().map(|&(key, value)| Op::Set {
            key,
            value,
            deadline: None,
        });
        self.write_ops(ops)
    }

    /// A key whose deadline has passed is not set: removing it is [`KvsError::KeyNotFound`]
    /// (its record goes all the same).
    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        self.process.check()?;
        let _write = self.write_guard();
        let mutation = self.mutation_guard();
        let old = self.data.remove(key).map_err(|e| self.error(e))?;
        drop(mutation);
        // A damaged record that was there is removed, as asked.
        let was_live = match old.as_deref() {
            None => false,
            Some(raw) => self
                .live(Some(raw), key, now_millis())
                .map_or(true, |r| r.is_some()),
        };
        if !was_live {
            self.forget_deadline_of(key, old.as_deref())?;
            return Err(KvsError::KeyNotFound);
        }
        self.flush_db()?;
        self.forget_deadline_of(key, old.as_deref())
    }

    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get_bytes(key)?.is_some())
    }

    /// Reads every record (O(n)) and counts those not expired.
    fn len(&self) -> Result<usize> {
        self.process.check()?;
        let now = now_millis();
        let mut n = 0;
        for pair in self.data.iter() {
            let (key, raw) = pair.map_err(|e| self.error(e))?;
            if self.live(Some(&raw), &key, now)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.process.check()?;
        let now = now_millis();
        let mut keys = Vec::new();
        for pair in self.data.iter() {
            let (key, raw) = pair.map_err(|e| self.error(e))?;
            if self.live(Some(&raw), &key, now)?.is_some() {
                keys.push(key.to_vec());
            }
        }
        Ok(keys)
    }

    fn flush(&self) -> Result<()> {
        self.process.check()?;
        self.flush_db()
    }

    /// sled's own `compare_and_swap` on the record, then a flush when it changed the key.
    /// The comparison is on the value (an expired key is not set); the new value keeps the
    /// key's deadline. When another write changes the record between the read and the swap
    /// (or the sweep removes it), the comparison is made again on what is there then.
    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.process.check()?;
        let _write = self.write_guard();
        loop {
            let raw = self.data.get(key).map_err(|e| self.error(e))?;
            let current = self.live(raw.as_deref(), key, now_millis())?;
            if current.map(|r| r.value) != expected {
                return Ok(false);
            }
            if raw.is_none() && new.is_none() {
                // A missing key left missing: nothing to write.
                return Ok(true);
            }
            let deadline = current.and_then(|r| r.deadline);
            if self.swap_record(key, raw.as_deref(), new, deadline)? {
                return Ok(true);
            }
        }
    }

    /// A compare-and-swap loop on the record (as sled's `update_and_fetch`, which cannot see
    /// deadlines): `f` may run **more than once**, when another write changed the key in
    /// between. The new value keeps the key's deadline; an expired key is given to `f` as not
    /// set.
    fn update_bytes<F>(&self, key: &[u8], mut f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        self.process.check()?;
        let _write = self.write_guard();
        loop {
            let raw = self.data.get(key).map_err(|e| self.error(e))?;
            let current = self.live(raw.as_deref(), key, now_millis())?;
            let new = f(current.map(|r| r.value));
            if new.as_deref() == current.map(|r| r.value) {
                return Ok(new);
            }
            let deadline = current.and_then(|r| r.deadline);
            if self.swap_record(key, raw.as_deref(), new.as_deref(), deadline)? {
                return Ok(new);
            }
        }
    }

    /// Writes an online checkpoint into `dest` (see [`KvsEngine::checkpoint`]): a kvs data
    /// directory recording the `sled` engine, with a new sled database in its `sled`
    /// sub-directory, as [`AnyEngine::open`](crate::AnyEngine::open) makes and opens.
    ///
    /// sled 0.34 has no checkpoint, and its iterators are not snapshots (each step reads the
    /// tree as it is then; `Db::export` is such an iteration, and panics on an I/O error), so
    /// **writes through this handle and its clones wait for the whole copy**: the checkpoint
    /// waits for writes in progress to end, holds new ones off, copies every key into the new
    /// database, and lets writes go on before that database is flushed and closed (measured:
    /// writes held 100 ms for 2,200 keys, 8.8 MB, in a debug build on a busy 2-core machine;
    /// the hold grows with the size of the store). Reads go on throughout. The copy holds
    /// exactly the writes acknowledged before it started (keys already expired are left out;
    /// deadlines are kept, and the copy's expiry tree is built from them). Writes made to the
    /// `sled::Db` directly (not through a `SledKvsEngine`) are not held off, and only the
    /// engine's trees are copied.
    fn checkpoint(&self, dest: &Path) -> Result<()> {
        self.process.check()?;
        crate::process::check_sled_usable()?;
        let target = super::CheckpointDir::prepare(dest)?;
        let result = self.copy_into(target.path());
        target.finish(result)
    }

    /// One transaction over the record and expiry trees (see the module's documentation):
    /// all or nothing across a crash, and isolated from every reader. A `Set` with a deadline
    /// that has passed when the batch is applied removes the key.
    fn apply_batch(&self, batch: &WriteBatch) -> Result<()> {
        self.process.check()?;
        self.write_ops(batch.ops().iter().map(Op::from))
    }

    /// The reads hold the handle's mutation lock exclusively, which every write through the
    /// handle and its clones (and the sweep) holds shared around its sled operation (not its
    /// flush): no write lands between two of them. Writes wait for the reads; other reads do
    /// not.
    ///
    /// (A sled transaction would read at one instant too, but sled 0.34 logs a batch marker
    /// for every transaction, a read-only one as well: measured, 20,000 calls grew the log by
    /// 480 KB. sled has no snapshot to read from.) One key is one plain read.
    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.process.check()?;
        if let [] | [_] = keys {
            return keys.iter().map(|key| self.get_bytes(key)).collect();
        }
        let _instant = self.mutations.write().unwrap_or_else(|p| p.into_inner());
        let now = now_millis();
        keys.iter()
            .map(|key| {
                let raw = self.data.get(key).map_err(|e| self.error(e))?;
                Ok(self
                    .live(raw.as_deref(), key, now)?
                    .map(|r| r.value.to_vec()))
            })
            .collect()
    }

    /// One transaction: the record with its deadline, and its entry in the expiry tree (the
    /// entry of a deadline the key had before is removed).
    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()> {
        self.process.check()?;
        self.write_ops(std::iter::once(Op::Set {
            key,
            value,
            deadline: Some(deadline),
        }))
    }

    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool> {
        self.process.check()?;
        let _write = self.write_guard();
        let sled_dir = self.sled_dir.as_deref();
        let now = now_millis();
        let mutation = self.mutation_guard();
        let set = (&*self.data, &*self.expiry)
            .transaction(|(data, expiry)| {
                let Some((value, old)) = live_in(data, key, now, sled_dir)? else {
                    return Ok(false);
                };
                if let Some(old) = old.filter(|&old| old != deadline) {
                    expiry.remove(layout::expiry_entry(old, key))?;
                }
                if is_expired(deadline, now) {
                    data.remove(key)?;
                } else {
                    data.insert(key, layout::encode(&value, Some(deadline)))?;
                    expiry.insert(layout::expiry_entry(deadline, key), &[])?;
                }
                Ok::<_, ConflictableTransactionError<KvsError>>(true)
            })
            .map_err(|e| self.tx_error(e))?;
        drop(mutation);
        if set {
            self.flush_db()?;
        }
        Ok(set)
    }

    fn persist_bytes(&self, key: &[u8]) -> Result<bool> {
        self.process.check()?;
        let _write = self.write_guard();
        let sled_dir = self.sled_dir.as_deref();
        let now = now_millis();
        let mutation = self.mutation_guard();
        let had = (&*self.data, &*self.expiry)
            .transaction(|(data, expiry)| {
                let Some((value, Some(old))) = live_in(data, key, now, sled_dir)? else {
                    return Ok(false);
                };
                data.insert(key, layout::encode(&value, None))?;
                expiry.remove(layout::expiry_entry(old, key))?;
                Ok::<_, ConflictableTransactionError<KvsError>>(true)
            })
            .map_err(|e| self.tx_error(e))?;
        drop(mutation);
        if had {
            self.flush_db()?;
        }
        Ok(had)
    }

    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry> {
        self.process.check()?;
        let raw = self.data.get(key).map_err(|e| self.error(e))?;
        Ok(match self.live(raw.as_deref(), key, now_millis())? {
            None => KeyExpiry::Missing,
            Some(Record { deadline: None, .. }) => KeyExpiry::Never,
            Some(Record {
                deadline: Some(deadline),
                ..
            }) => KeyExpiry::At(deadline),
        })
    }

    /// One sled transaction over the record and expiry trees: `f` reads through it (sled
    /// tracks what it read) and its writes are applied inside it, so the whole is atomic and
    /// isolated; when a conflicting write interleaves, sled runs the transaction, and `f`,
    /// again. An `Err` from `f` aborts it and writes nothing.
    fn transaction<R, F>(&self, f: F) -> Result<R>
    where
        F: FnMut(&mut dyn Transaction) -> Result<R>,
    {
        self.process.check()?;
        let _write = self.write_guard();
        let sled_dir = self.sled_dir.as_deref();
        let f = std::cell::RefCell::new(f);
        let mutation = self.mutation_guard();
        let (result, wrote) = (&*self.data, &*self.expiry)
            .transaction(|(data, expiry)| {
                let now = now_millis();
                // sled's transaction function is `Fn`; it runs on this thread only, one run at a
                // time, so the borrow never overlaps.
                let mut f = f.borrow_mut();
                let mut failed = None;
                let mut tx = Overlay::new(|key: &[u8]| match live_in(data, key, now, sled_dir) {
                    Ok(entry) => Ok(entry),
                    Err(ConflictableTransactionError::Abort(e)) => Err(e),
                    Err(other) => {
                        // A conflict or a storage error: remembered and handed to sled, which
                        // retries or fails the transaction.
                        failed = Some(other);
                        Err(KvsError::Engine {
                            engine: "sled",
                            message: "the transaction must be retried".into(),
                        })
                    }
                });
                let outcome = (*f)(&mut tx);
                let batch = tx.into_batch();
                if let Some(failed) = failed {
                    return Err(failed);
                }
                let result = outcome.map_err(ConflictableTransactionError::Abort)?;
                let ops: Vec<Op<'_>> = batch.ops().iter().map(Op::from).collect();
                apply_ops_in(data, expiry, &ops, now, sled_dir)?;
                Ok((result, !ops.is_empty()))
            })
            .map_err(|e| self.tx_error(e))?;
        drop(mutation);
        if wrote {
            self.flush_db()?;
        }
        Ok(result)
    }

    /// A walk in key order. The cursor stands for the last key the previous page looked at
    /// (kept in the handle: see `cursors.rs`); the next page resumes right after it, so every
    /// key set for the whole walk is returned exactly once, and a key set during the walk is
    /// returned when it sorts after the walk's position. A prefix seeks to it
    /// (`scan_prefix`); a pattern is checked on each key looked at.
    ///
    /// Limits: at most 4,096 walks are open at once per store handle (and its clones): past
    /// that the walk not continued for the longest is forgotten, and its cursor is
    /// [`KvsError::InvalidArgument`], as is a cursor this handle did not return (or a cursor
    /// of another process, or of this store opened again). A cursor may be passed again (a
    /// retry) until 1,024 later cursors have been passed. A `count` of 0 counts as 1.
    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage> {
        self.process.check()?;
        let count = count.max(1);
        let prefix = filter.prefix.as_slice();
        let iter = match cursor {
            0 => self.data.scan_prefix(prefix),
            cursor => {
                let after = self.cursors.resume(cursor)?;
                if after.as_slice() < prefix {
                    self.data.scan_prefix(prefix)
                } else {
                    self.data
                        .range::<&[u8], _>((Bound::Excluded(after.as_slice()), Bound::Unbounded))
                }
            }
        };
        let mut iter = iter.take_while(|pair| {
            pair.as_ref()
                .map_or(true, |(key, _)| key.starts_with(prefix))
        });
        let now = now_millis();
        let mut keys = Vec::new();
        let mut last = None;
        for pair in iter.by_ref().take(count) {
            let (key, raw) = pair.map_err(|e| self.error(e))?;
            if self.live(Some(&raw), &key, now)?.is_some() && filter.matches(&key) {
                keys.push(key.to_vec());
            }
            last = Some(key);
        }
        let cursor = match (last, iter.next()) {
            (_, Some(Err(e))) => return Err(self.error(e)),
            (Some(last), Some(Ok(_))) => self.cursors.open(last.to_vec()),
            _ => 0,
        };
        Ok(ScanPage { cursor, keys })
    }
}

/// Inside a transaction that has just replaced the record `old` of `key` with one expiring at
/// `deadline` (`None`: without deadline, or removed): removes the expiry entry of `old`'s
/// deadline, if it had another one.
fn drop_old_entry(
    expiry: &sled::transaction::TransactionalTree,
    old: Option<&[u8]>,
    key: &[u8],
    deadline: Option<u64>,
    sled_dir: Option<&Path>,
) -> TxResult<()> {
    // A damaged old record is replaced all the same: it has no entry to find.
    let old = old.and_then(|raw| layout::decode(raw, key, sled_dir).ok());
    if let Some(old) = old
        .and_then(|r| r.deadline)
        .filter(|&old| Some(old) != deadline)
    {
        expiry.remove(layout::expiry_entry(old, key))?;
    }
    Ok(())
}

impl SledKvsEngine {
    /// The checkpoint's copy into the empty data directory `dest` (see `checkpoint`).
    fn copy_into(&self, dest: &Path) -> Result<()> {
        data_dir::record_engine(dest, EngineKind::Sled)?;
        let sled_dir = dest.join(super::SLED_SUBDIR);
        let in_copy = |e| to_kvs_error(e, Some(&sled_dir));
        let copy = sled::open(&sled_dir).map_err(in_copy)?;
        let trees = layout::prepare(&copy, Some(&sled_dir))?;
        {
            let _no_writes = self.writes.write().unwrap_or_else(|p| p.into_inner());
            let now = now_millis();
            let mut batch = sled::Batch::default();
            let mut entries = sled::Batch::default();
            let mut batched = 0usize;
            for pair in self.data.iter() {
                let (key, raw) = pair.map_err(|e| self.error(e))?;
                let Some(record) = self.live(Some(&raw), &key, now)? else {
                    continue;
                };
                if let Some(deadline) = record.deadline {
                    entries.insert(layout::expiry_entry(deadline, &key), &[]);
                }
                batched += key.len() + raw.len();
                batch.insert(key, raw);
                if batched >= COPY_BATCH_BYTES {
                    trees
                        .data
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(in_copy)?;
                    trees
                        .expiry
                        .apply_batch(std::mem::take(&mut entries))
                        .map_err(in_copy)?;
                    batched = 0;
                }
            }
            trees.data.apply_batch(batch).map_err(in_copy)?;
            trees.expiry.apply_batch(entries).map_err(in_copy)?;
        }
        copy.flush().map_err(in_copy)?;
        drop(trees);
        drop(copy);
        data_dir::sync_dir(&sled_dir)
    }
}

/// How many bytes of keys and values a checkpoint of a sled store writes into the copy at a
/// time.
const COPY_BATCH_BYTES: usize = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn sled_io_errors_name_the_database_directory() {
        let err = to_kvs_error(
            sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            Some(Path::new("/data/sled")),
        );
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(err.path(), Some(Path::new("/data/sled")));
        assert_eq!(
            err.os_error().and_then(std::io::Error::raw_os_error),
            Some(libc::ENOSPC)
        );
        assert!(err.to_string().contains("/data/sled"), "{err}");

        let unknown_dir = to_kvs_error(sled::Error::Io(std::io::Error::other("x")), None);
        assert!(matches!(unknown_dir, KvsError::Io(_)), "{unknown_dir:?}");
    }

    #[test]
    fn sled_corruption_is_kvs_corruption_at_sleds_offset() {
        let err = to_kvs_error(
            sled::Error::Corruption {
                at: Some(sled::DiskPtr::Inline(4096)),
                bt: (),
            },
            Some(Path::new("/data/sled")),
        );
        match &err {
            KvsError::Corruption { path, offset, .. } => {
                assert_eq!(path, Path::new("/data/sled/db"));
                assert_eq!(*offset, 4096);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        assert!(err.is_corruption());

        let nowhere = to_kvs_error(sled::Error::Corruption { at: None, bt: () }, None);
        assert_eq!(nowhere.kind(), ErrorKind::Corruption);
        assert!(nowhere.to_string().contains("sled database"), "{nowhere}");
    }

    #[test]
    fn other_sled_errors_are_the_engines_own() {
        let err = to_kvs_error(
            sled::Error::Unsupported("no".into()),
            Some(Path::new("/data/sled")),
        );
        assert_eq!(err.kind(), ErrorKind::Other);
        assert!(matches!(err, KvsError::Engine { engine: "sled", .. }));
        assert!(err.to_string().starts_with("sled error: "), "{err}");
    }
}
