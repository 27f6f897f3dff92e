//! [`KvStore`]: kvs's own log-structured storage engine.
//!
//! Writes append a record to the active log file; an in-memory index maps each key to the
//! position of its latest record; reads look the key up and check and copy one record, through
//! a read-only memory map of its file (no system call).
//! When more than half of the log is stale (overwritten or removed data), a background thread
//! copies the live records into new files and deletes the old ones, in steps of a bounded
//! number of records (see `compaction.rs`).
//!
//! **Batches** ([`KvsEngine::apply_batch`], and `set_many_bytes`) are written as one framed run
//! of records with one `pwrite` (see `format.rs`) and made visible in the index all at once.
//!
//! **Expiry**: a key's newest record carries its deadline, if it has one, and the index keeps
//! it beside the position; every read hides a key whose deadline has passed. Giving a key a
//! new deadline ([`KvsEngine::expire_at_bytes`], [`KvsEngine::persist_bytes`]) rewrites its
//! record with its value and the new deadline: it costs a write of the value's size. A second
//! background thread, the **sweeper**, removes expired keys from the index every
//! [`KvStoreOptions::sweep_interval`] (100 ms), [`SWEEP_CHUNK`] keys at a time under the writer lock (so writers wait at
//! most one chunk), counting their records stale so that compaction reclaims them. Compaction
//! never copies a key that had expired, and an expired record never comes back on replay: its
//! deadline is in it.
//!
//! - `format.rs`: the record layout, byte by byte; encoding and checking one record.
//! - `reader.rs`: reading a log file's records in order, and what is wrong where it stops.
//! - `writer.rs`: encodes and appends records to the active file, counts stale bytes.
//! - `index.rs`: the sharded key to position map; positions and log ends.
//! - `log_file.rs`: an open log file, memory-mapped for reads.
//! - `manifest.rs`: the `MANIFEST`, the list of the store's log files, byte by byte; what open
//!   checks against it.
//! - `recovery.rs`: finding the files and replaying them on open, torn tails and corruption.
//! - `compaction.rs`: the crash-safe compaction, in bounded steps.
//! - `hint.rs`: hint files, what replaying a closed file puts in the index, written in the
//!   background and loaded by open instead of the file.
//! - `verify.rs`: [`verify_dir`], checking every record of a store's files without opening it.
//! - `checkpoint.rs`: online checkpoints, a consistent copy of the live store.
//! - `options.rs`: [`KvStoreOptions`], [`SyncPolicy`], [`RecoveryMode`].
//! - `durability.rs`: group commit for [`SyncPolicy::Always`].
//! - `crash_point.rs`: named points where tests make the process die (feature `crash-points`).

mod checkpoint;
mod compaction;
pub(crate) mod crash_point;
mod durability;
mod format;
mod hint;
mod index;
mod log_file;
mod manifest;
mod options;
mod reader;
mod recovery;
mod verify;
mod writer;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use self::durability::Durability;
use self::format::{check_sizes, set_record_len, verify_record_at_read, RecordHeader, Version};
use self::hint::Hinter;
use self::index::{Change, LogEnd};
use self::log_file::{FileSet, LogFile};
use self::manifest::{CommitHook, Manifest};
use self::writer::{
    active_map_len, batch_too_large, create_log, log_path, BatchRecord, LogWriter, MAX_FILE_BYTES,
};
use crate::batch::Op;
use crate::data_dir::{self, DirLock, EngineKind};
use crate::transaction::Overlay;
use crate::{
    is_expired, now_millis, KeyExpiry, KvsEngine, KvsError, Result, ScanFilter, ScanPage,
    Transaction, WriteBatch,
};

pub(crate) use self::format::FILE_MAGIC;
pub use self::format::{MAX_BATCH_BYTES, MAX_KEY_LEN, MAX_VALUE_LEN};
/// For `benches/index_memory.rs`, which measures the index alone: not part of the API.
#[doc(hidden)]
pub use self::index::{Index, RecordPos};

/// On close, an active file holding more than this many bytes is sealed and a new, empty one
/// started, and the sealed file's hint is written before the close returns: the next open
/// then loads it from its hint instead of replaying it (see `hint.rs`), and replays at most
/// this much. Below it, replaying the active file costs less (a few milliseconds) than the
/// file and hint a rotation would add.
pub const SEAL_ON_CLOSE_BYTES: u64 = 4 << 20;

/// How many expired keys the sweeper removes per hold of the writer lock.
pub const SWEEP_CHUNK: usize = 1024;
pub use self::options::{KvStoreOptions, RecoveryMode, SyncPolicy};
pub use self::verify::{
    log_file_versions, verify_dir, verify_dir_with_progress, FileCheck, FileDamage, VerifyReport,
};

/// kvs's log-structured key/value store.
///
/// Cloning is cheap; all clones share one store and may be used from any thread. Reads run in
/// parallel; writes are serialized. Dropping the last clone stops compaction, syncs the log
/// and releases the directory.
///
/// A store belongs to the process that opened it. In a child made by `fork()`, every
/// operation fails with [`KvsError::Forked`] and dropping the inherited handle touches
/// nothing (the parent goes on unharmed); to use the store in the child, open it again there,
/// after the parent has closed it (the directory lock admits one process at a time).
///
/// ```
/// use kvs::{KvStore, KvsEngine};
/// # fn main() -> kvs::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let store = KvStore::open(dir.path())?;
/// store.set("key".to_owned(), "value".to_owned())?;
/// assert_eq!(store.get("key".to_owned())?, Some("value".to_owned()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KvStore {
    // Field order matters: `handle` drops (and joins the compactor) before `shared`.
    _handle: Arc<Handle>,
    shared: Arc<Shared>,
}

/// State shared by every clone and by the compaction thread.
struct Shared {
    dir: PathBuf,
    options: KvStoreOptions,
    index: Index,
    /// Every log file, by id; readers find them through the index (see `FileSet`), so a file
    /// compaction deletes stays readable until the reads that found it end.
    files: FileSet,
    writer: Mutex<LogWriter>,
    compact_tx: Sender<()>,
    /// Held for the whole of a compaction.
    compaction_running: Mutex<()>,
    /// While a compaction is under way, one more than the id of the newest file it replaces
    /// (0 when none is): the hinter leaves those files alone (see `hint.rs`).
    replacing: Arc<AtomicU64>,
    /// Group commit for [`SyncPolicy::Always`].
    durability: Durability,
    /// Set when the last handle is dropped; compaction stops at the next record.
    closing: AtomicBool,
    _lock: DirLock,
}

/// Owned by user handles only (not the compactor): its drop is "the store is closed".
struct Handle {
    shared: Arc<Shared>,
    compactor: Mutex<Option<JoinHandle<()>>>,
    /// The sweeper thread, and the sender whose drop stops it.
    sweeper: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// The thread that writes hint files (read-write stores only).
    hinter: Mutex<Option<Hinter>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.shared._lock.is_inherited() {
            // A child of fork(): the compactor thread is not in this process and the log is
            // the parent's. Touch neither (see process.rs); forget the thread's handle
            // rather than detach a thread that does not exist here.
            std::mem::forget(
                self.compactor
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            );
            std::mem::forget(
                self.sweeper
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            );
            if let Some(hinter) = self
                .hinter
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                hinter.forget();
            }
            return;
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        // Wake the compactor so it sees `closing`; a full channel already wakes it.
        let _ = self.shared.compact_tx.try_send(());
        let compactor = self
            .compactor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = compactor {
            let _ = thread.join();
        }
        let sweeper = self
            .sweeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, thread)) = sweeper {
            drop(stop);
            let _ = thread.join();
        }
        if self.shared.options.read_only {
            // Nothing was written, so there is nothing to cut back or sync.
            return;
        }
        let mut writer = self.shared.lock_writer();
        let sealed = self.seal_on_close(&mut writer);
        if let Err(e) = writer.trim().and_then(|()| writer.sync_active()) {
            log::error!("syncing {} on close failed: {e}", self.shared.dir.display());
        }
        drop(writer);
        let hinter = self.hinter.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(hinter) = hinter {
            hinter.close(sealed);
        }
    }
}

impl Handle {
    /// Seals the active file and starts a new one if it holds more than
    /// [`SEAL_ON_CLOSE_BYTES`]; returns the id of the file sealed.
    fn seal_on_close(&self, writer: &mut LogWriter) -> Option<u32> {
        let shared = &*self.shared;
        let (_, end) = writer.sync_target();
        if !shared.options.write_hints
            || writer.check_usable().is_err()
            || end.offset <= SEAL_ON_CLOSE_BYTES
        {
            return None;
        }
        let next = end.file.checked_add(1)?;
        match writer.rotate_to(next, &shared.files, &shared.index) {
            Ok(()) => Some(end.file),
            Err(e) => {
                // The store closes as it is: the next open replays the file.
                log::warn!(
                    "sealing the active file of {} on close failed: {e}",
                    shared.dir.display()
                );
                None
            }
        }
    }
}

impl KvStore {
    /// Opens (or creates) the store in directory `path`, with default options.
    pub fn open(path: impl Into<PathBuf>) -> Result<KvStore> {
        KvStore::open_with(path, KvStoreOptions::default())
    }

    /// Opens (or creates) the store in directory `path`.
    ///
    /// Fails with [`KvsError::EngineMismatch`] if the directory holds a sled store,
    /// [`KvsError::Locked`] if another process has it open, and [`KvsError::Corruption`] if a
    /// log file is damaged anywhere but at its torn tail, if a log file the store's `MANIFEST`
    /// lists is missing or is not the file the store wrote, or if the `MANIFEST` itself is
    /// damaged. Files the `MANIFEST` does not list are left alone, with a warning.
    ///
    /// With [`KvStoreOptions::read_only`], writes nothing and creates nothing (see there); the
    /// directory must hold a kvs store.
    pub fn open_with(path: impl Into<PathBuf>, options: KvStoreOptions) -> Result<KvStore> {
        let dir = path.into();
        let read_only = options.read_only;
        let lock = if read_only {
            check_read_only_dir(&dir)?;
            data_dir::check_engine(&dir, EngineKind::Kvs)?;
            DirLock::acquire_shared(&dir, options.lock_wait)?
        } else {
            data_dir::ensure_dir(&dir)?;
            data_dir::check_engine(&dir, EngineKind::Kvs)?;
            let lock = DirLock::acquire(&dir, options.lock_wait)?;
            data_dir::record_engine(&dir, EngineKind::Kvs)?;
            lock
        };

        let index = Index::new();
        let recovered = recovery::recover(&dir, options.recovery, read_only, &index)?;
        let max_file_bytes = options.max_file_bytes.clamp(4096, MAX_FILE_BYTES);
        let mut files = BTreeMap::new();
        for &id in &recovered.ids {
            let path = log_path(&dir, id);
            let size = recovered.sizes.get(&id).copied().unwrap_or(0);
            let file = if read_only {
                // Nothing is written: every file, the newest included, is mapped as it is
                // and opened for reading only.
                File::open(&path).map(|file| LogFile::new(file, size))
            } else if Some(&id) == recovered.ids.last() {
                // The newest file is the active one and grows: map it up to the most it can
                // hold, and keep its descriptor for writes.
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map(|file| LogFile::active(file, size.max(active_map_len(max_file_bytes))))
            } else {
                // Closed files are only read: mapped, then their descriptor is closed, so a
                // store of many files needs no descriptor per file.
                File::open(&path).map(|file| LogFile::new(file, size))
            };
            files.insert(id, Arc::new(file.map_err(|e| KvsError::io_at(&path, e))?));
        }
        let (active_id, active) = match files.last_key_value() {
            Some((&id, file)) => (id, Arc::clone(file)),
            None if read_only => {
                return Err(KvsError::io_at(
                    &dir,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "holds no kvs log files: there is no store to open read-only",
                    ),
                ))
            }
            None => {
                let file = create_log(&dir, 1, max_file_bytes)?;
                files.insert(1, Arc::clone(&file));
                (1, file)
            }
        };
        let mut sizes = recovered.sizes;
        sizes
            .entry(active_id)
            .or_insert(format::FILE_MAGIC.len() as u64);
        let fingerprints = recovered.fingerprints;
        // Hints are written for closed files in the background, by read-write stores only.
        let replacing = Arc::new(AtomicU64::new(0));
        let hinter = if read_only || !options.write_hints {
            None
        } else {
            Some(Hinter::spawn(
                dir.clone(),
                recovered.hinted,
                Arc::clone(&replacing),
            )?)
        };
        let mut manifest = match recovered.manifest {
            Some(manifest) => manifest,
            None => {
                // A store without a manifest (written by release 0.1.0, or new), replayed as
                // that release did: from now on, it is guarded by one (read-only: in memory
                // only, nothing is written).
                let mut manifest = Manifest::default();
                for (&id, &size) in sizes.range(..active_id) {
                    let fingerprint = fingerprints.get(&id).copied().unwrap_or_default();
                    manifest.set_closed(id, size, fingerprint);
                }
                manifest.set_active(active_id);
                if !read_only {
                    manifest::replace(&dir, &manifest)?;
                    data_dir::sync_dir(&dir)?;
                }
                manifest
            }
        };
        if let Some(hinter) = &hinter {
            hinter.sender().send(&manifest);
            manifest.set_hook(CommitHook::new(dir.clone(), hinter.sender()));
        }
        let mut writer = LogWriter::new(
            dir.clone(),
            options.sync,
            options.max_file_bytes,
            active_id,
            active,
            sizes,
            recovered.stale,
            fingerprints.get(&active_id).copied().unwrap_or_default(),
            manifest,
        );
        writer.set_active_version(
            recovered
                .versions
                .get(&active_id)
                .copied()
                .unwrap_or(Version::V2),
        );
        let files = FileSet::new(files, &index);
        if read_only {
            writer.set_read_only();
        } else {
            // A store of release 0.1.0: its active file is of version 1, and new records are
            // only written in version 2, in a file of their own.
            writer.leave_old_version(&files, &index)?;
        }

        let (compact_tx, compact_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            dir,
            options,
            index,
            files,
            writer: Mutex::new(writer),
            compact_tx,
            compaction_running: Mutex::new(()),
            replacing,
            durability: Durability::default(),
            closing: AtomicBool::new(false),
            _lock: lock,
        });
        let (compactor, sweeper) = if read_only {
            (None, None)
        } else {
            let compactor = spawn_compactor(Arc::clone(&shared), compact_rx)?;
            let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
            let sweeper = match spawn_sweeper(Arc::clone(&shared), stop_rx) {
                Ok(sweeper) => sweeper,
                Err(e) => {
                    shared.closing.store(true, Ordering::SeqCst);
                    let _ = shared.compact_tx.try_send(());
                    let _ = compactor.join();
                    return Err(e);
                }
            };
            (Some(compactor), Some((stop_tx, sweeper)))
        };
        let store = KvStore {
            _handle: Arc::new(Handle {
                shared: Arc::clone(&shared),
                compactor: Mutex::new(compactor),
                sweeper: Mutex::new(sweeper),
                hinter: Mutex::new(hinter),
            }),
            shared,
        };
        if !read_only {
            store
                .shared
                .lock_writer()
                .maybe_request_compaction(&store.shared);
        }
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// Runs a compaction now, on the calling thread, whatever the stale-byte counts say.
    pub fn compact(&self) -> Result<()> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        compaction::compact(&self.shared)
    }

    /// Removes every expired key from the index now, counting its record stale, as the
    /// sweeper does every [`KvStoreOptions::sweep_interval`]; returns how many. Reads hide
    /// expired keys without this: it only makes their space reclaimable sooner.
    pub fn sweep_expired(&self) -> Result<usize> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        self.shared.sweep_all(now_millis())
    }

    /// How many keys have a deadline that has not passed (what Redis's `INFO` reports as
    /// `expires=`).
    pub fn expiring_len(&self) -> usize {
        self.shared.index.expiring_len()
    }

    /// Statistics about the log files.
    pub fn disk_stats(&self) -> DiskStats {
        let (syncs, synced_writes) = self.shared.sync_counts();
        let writer = self.shared.lock_writer();
        DiskStats {
            total_bytes: writer.total_bytes(),
            stale_bytes: writer.stale_bytes(),
            files: self.shared.files.snapshot().len(),
            syncs,
            synced_writes,
        }
    }
}

/// Sizes of a [`KvStore`]'s log, from [`KvStore::disk_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStats {
    /// Bytes in all log files.
    pub total_bytes: u64,
    /// Bytes of overwritten or removed data that compaction will reclaim.
    pub stale_bytes: u64,
    /// Number of log files.
    pub files: usize,
    /// With [`SyncPolicy::Always`]: how many group-commit fsyncs there have been since the
    /// store was opened (see `durability.rs`); 0 with [`SyncPolicy::Os`].
    pub syncs: u64,
    /// How many writes (a record, or a whole batch) those fsyncs made durable between them:
    /// `synced_writes / syncs` is how many writes one fsync covered, on average.
    pub synced_writes: u64,
}

/// The sweeper (see the module docs): every [`KvStoreOptions::sweep_interval`], removes every
/// key then due, a chunk at a time, until none is left or the store closes.
fn spawn_sweeper(shared: Arc<Shared>, stop: Receiver<()>) -> Result<JoinHandle<()>> {
    let interval = shared.options.sweep_interval;
    std::thread::Builder::new()
        .name("kvs-sweeper".into())
        .spawn(move || loop {
            match stop.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Err(e) = shared.sweep_all(now_millis()) {
                // The store refuses writes (poisoned): nothing more to count.
                log::debug!("sweep of {} stopped: {e}", shared.dir.display());
            }
        })
        .map_err(KvsError::Io)
}

fn spawn_compactor(shared: Arc<Shared>, rx: Receiver<()>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kvs-compactor".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                if shared.closing.load(Ordering::SeqCst) {
                    return;
                }
                // Writes during the last compaction asked again while its stale files were
                // still counted: only go on if the log still needs one.
                if !shared.lock_writer().compaction_due(&shared.options) {
                    continue;
                }
                if let Err(e) = compaction::compact(&shared) {
                    // The log is intact (compaction deletes nothing until its output is
                    // durable); it simply stays larger. The next trigger tries again.
                    log::error!("compaction of {} failed: {e}", shared.dir.display());
                }
            }
        })
        .map_err(KvsError::Io)
}

impl Shared {
    fn lock_writer(&self) -> MutexGuard<'_, LogWriter> {
        // A panic while holding the writer can only come from a bug, or from the caller's
        // function in `update_bytes`, which runs before anything is written; never from a
        // half-written record (the index is updated after the append): the writer stays
        // consistent.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the record at `pos` (checksums, and that it holds `key` if given) and calls `f`
    /// with its bytes, header included, and its parsed header.
    fn with_record<R>(
        &self,
        file: &LogFile,
        pos: RecordPos,
        key: Option<&[u8]>,
        f: impl FnOnce(&[u8], &RecordHeader) -> R,
    ) -> Result<R> {
        let corruption = |reason: String| KvsError::Corruption {
            path: log_path(&self.dir, pos.file),
            offset: pos.offset as u64,
            reason,
        };
        let checked = file
            .with_bytes(pos.offset as u64, pos.len as usize, |record| {
                let header = verify_record_at_read(record).map_err(|e| e.to_string())?;
                if let Some(key) = key {
                    if record.get(header.key_start()..header.value_start()) != Some(key) {
                        return Err("record holds another key than the index says".to_string());
                    }
                }
                Ok(f(record, &header))
            })
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    corruption("file ends before the record".into())
                }
                _ => KvsError::io_at(log_path(&self.dir, pos.file), e),
            })?;
        checked.map_err(corruption)
    }

    /// Fails for a store opened read-only: the first check of every write. (The writer
    /// refuses too, in [`LogWriter::check_usable`]; this answers before any argument is
    /// looked at, so a read-only store says so rather than, say, "key not found".)
    fn check_writable(&self) -> Result<()> {
        if self.options.read_only {
            return Err(writer::read_only_error());
        }
        Ok(())
    }
}

impl Shared {
    /// Calls `f` with the value of `key` (`None` if it is not set), checked, straight from
    /// its log file: nothing is copied unless `f` copies it.
    fn with_value<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        self.index
            .get_with(key, |found| self.with_found_value(key, found, f))
    }

    /// Calls `f` with the value of `key` from what the index found for it (see
    /// [`Index::get_with`]).
    fn with_found_value<R>(
        &self,
        key: &[u8],
        found: Option<(RecordPos, Option<&LogFile>)>,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        match found {
            None => Ok(f(None)),
            Some((pos, Some(file))) => self.with_record(file, pos, Some(key), |record, header| {
                f(Some(&record[header.value_start()..]))
            }),
            Some((pos, None)) => Err(KvsError::Corruption {
                path: log_path(&self.dir, pos.file),
                offset: pos.offset as u64,
                reason: "the index points into a log file that is not open".into(),
            }),
        }
    }
}

impl Shared {
    /// Removes every key whose deadline is `now` or earlier from the index, a chunk at a time
    /// (the writer lock is let go between chunks), until none is left due or the store closes;
    /// returns how many it removed.
    fn sweep_all(&self, now: u64) -> Result<usize> {
        let mut total = 0;
        while !self.closing.load(Ordering::SeqCst) {
            let removed = self.sweep_chunk(now)?;
            total += removed;
            if removed < SWEEP_CHUNK {
                break;
            }
        }
        Ok(total)
    }

    /// Removes up to [`SWEEP_CHUNK`] keys whose deadline is `now` or earlier from the index,
    /// under the writer lock, counting their records stale; returns how many (fewer than
    /// [`SWEEP_CHUNK`]: none is left due).
    fn sweep_chunk(&self, now: u64) -> Result<usize> {
        let mut writer = self.lock_writer();
        writer.check_usable()?;
        let removed = self.index.remove_expired(now, SWEEP_CHUNK, |_, pos| {
            writer.add_stale(pos.file, pos.len as u64)
        });
        if removed > 0 {
            writer.maybe_request_compaction(self);
        }
        Ok(removed)
    }
}

impl LogWriter {
    /// Whether enough of the log is stale for a compaction: at least
    /// [`KvStoreOptions::compaction_min_stale`] bytes, and at least half of it.
    fn compaction_due(&self, options: &KvStoreOptions) -> bool {
        let stale = self.stale_bytes();
        stale >= options.compaction_min_stale && stale * 2 >= self.total_bytes()
    }

    /// Wakes the compactor when enough of the log is stale.
    fn maybe_request_compaction(&self, shared: &Shared) {
        if self.compaction_due(&shared.options) {
            match shared.compact_tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    log::warn!("compaction thread of {} is gone", shared.dir.display())
                }
            }
        }
    }
}

impl KvsEngine for KvStore {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        check_sizes(key, value)?;
        let shared = &*self.shared;
        let end = self.set_locked(key, value)?;
        if shared.options.sync == SyncPolicy::Always {
            shared.wait_durable(end)?;
        }
        Ok(())
    }

    /// An atomic batch of sets (see [`KvsEngine::apply_batch`]) when its records take at most
    /// [`MAX_BATCH_BYTES`]. A larger run is written in order as several atomic batches, each
    /// as large as fits: a crash may then keep the first of them and not the rest (never a
    /// later pair without every earlier one).
    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        let mut ops: Vec<Op<'_>> = Vec::with_capacity(pairs.len());
        let mut size = 0usize;
        for &(key, value) in pairs {
            check_sizes(key, value)?;
            let len = set_record_len(key, value, None);
            if !ops.is_empty() && size + len > MAX_BATCH_BYTES {
                self.write_batch(&ops)?;
                ops.clear();
                size = 0;
            }
            size += len;
            ops.push(Op::Set {
                key,
                value,
                deadline: None,
            });
        }
        self.write_batch(&ops)
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shared._lock.check_process()?;
        self.shared
            .with_value(key, |value| value.map(<[u8]>::to_vec))
    }

    /// `f` gets the value's bytes in the log file's map (or read into a buffer, for a file
    /// read with `pread`), under the read lock of the key's index shard, once the record's
    /// checksums hold.
    fn read_bytes(&self, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        self.shared._lock.check_process()?;
        self.shared.with_value(key, f)
    }

    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        check_sizes(key, b"")?;
        let shared = &*self.shared;
        let end = self.remove_locked(key)?;
        if shared.options.sync == SyncPolicy::Always {
            shared.wait_durable(end)?;
        }
        Ok(())
    }

    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        self.shared._lock.check_process()?;
        Ok(self.shared.index.contains(key))
    }

    fn len(&self) -> Result<usize> {
        self.shared._lock.check_process()?;
        Ok(self.shared.index.len())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.shared._lock.check_process()?;
        let mut keys = Vec::new();
        self.shared.index.for_each(|key, _| keys.push(key.to_vec()));
        Ok(keys)
    }

    fn flush(&self) -> Result<()> {
        self.shared._lock.check_process()?;
        if self.shared.options.read_only {
            // Nothing was written: nothing to make durable.
            return Ok(());
        }
        self.shared.lock_writer().sync_active()
    }

    /// Compares and writes under the writer lock: every write of the store is serialized
    /// by it, so the value compared is the one replaced. The key keeps its deadline.
    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.shared._lock.check_process()?;
        check_sizes(key, new.unwrap_or_default())?;
        let written = {
            let mut writer = self.shared.lock_writer();
            writer.check_usable()?;
            let deadline = self.shared.index.deadline(key);
            // Compared in place, in the record's file: no copy of the current value.
            if !self.shared.with_value(key, |current| current == expected)? {
                return Ok(false);
            }
            self.write_value_locked(&mut writer, key, expected, new, kept(expected, deadline))?
        };
        self.wait_written(written)?;
        Ok(true)
    }

    /// Reads, calls `f` once and writes, all under the writer lock. The key keeps its
    /// deadline.
    fn update_bytes<F>(&self, key: &[u8], mut f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        self.shared._lock.check_process()?;
        check_sizes(key, b"")?;
        let (written, new) = {
            let mut writer = self.shared.lock_writer();
            writer.check_usable()?;
            let deadline = self.shared.index.deadline(key);
            // Copied out: `f` is the caller's code, and must not run with an index shard
            // locked (a read of the same store from `f` could then wait for ever).
            let current = self
                .shared
                .with_value(key, |value| value.map(<[u8]>::to_vec))?;
            let new = f(current.as_deref());
            if let Some(value) = &new {
                check_sizes(key, value)?;
            }
            let deadline = kept(current.as_deref(), deadline);
            let written = self.write_value_locked(
                &mut writer,
                key,
                current.as_deref(),
                new.as_deref(),
                deadline,
            )?;
            (written, new)
        };
        self.wait_written(written)?;
        Ok(new)
    }

    /// Writes an online checkpoint into `dest` (see [`KvsEngine::checkpoint`]).
    ///
    /// Writers wait only while the cut is taken under the writer lock: the list of files, one
    /// hard link per closed log file (closed files never change) and one `open` of the active
    /// file; not for the copy. The active file is then copied up to the end of the last record
    /// appended at the cut, with writers going on; where `dest` is on another file system the
    /// closed files are copied too (opened under the lock, copied after it). Compaction goes on
    /// meanwhile and is never waited for. A store whose writes failed for good
    /// ([`KvsError::Poisoned`]) is refused.
    fn checkpoint(&self, dest: &Path) -> Result<()> {
        self.shared._lock.check_process()?;
        let target = crate::engines::CheckpointDir::prepare(dest)?;
        let result = checkpoint::checkpoint(&self.shared, target.path());
        target.finish(result)
    }

    /// Writes the batch as one framed run of records with one `pwrite`, then makes all of it
    /// visible in the index at once; see the module docs. A remove of a key that is not set
    /// writes nothing, and a set with a deadline already past acts as a remove. A batch of
    /// several operations whose records take more than [`MAX_BATCH_BYTES`] is refused with
    /// [`KvsError::InvalidArgument`], nothing written (a batch of one is one record, as large
    /// as a `set` may be).
    fn apply_batch(&self, batch: &WriteBatch) -> Result<()> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        let ops: Vec<Op<'_>> = batch.ops().iter().map(Op::from).collect();
        self.write_batch(&ops)
    }

    /// Looks every key up with the shards they live in read-locked together (see
    /// [`Index::get_with_many`]): writes of those shards wait while the values are copied.
    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.shared._lock.check_process()?;
        let shared = &*self.shared;
        shared.index.get_with_many(keys, |found| {
            keys.iter()
                .zip(found)
                .map(|(key, &entry)| {
                    shared.with_found_value(key, entry, |value| value.map(<[u8]>::to_vec))
                })
                .collect()
        })
    }

    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        check_sizes(key, value)?;
        let end = {
            let mut writer = self.shared.lock_writer();
            writer.check_usable()?;
            if is_expired(deadline, now_millis()) {
                self.remove_if_set(&mut writer, key)?
            } else {
                self.write_set(&mut writer, key, value, Some(deadline))?
            }
        };
        self.wait_written(end)
    }

    /// Rewrites the key's record with its value and the new deadline: costs a write of the
    /// value's size.
    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        check_sizes(key, b"")?;
        let end = {
            let mut writer = self.shared.lock_writer();
            writer.check_usable()?;
            // Copied out: the index shard must not stay read-locked while the new record is
            // put in it.
            let Some(value) = self
                .shared
                .with_value(key, |value| value.map(<[u8]>::to_vec))?
            else {
                return Ok(false);
            };
            if is_expired(deadline, now_millis()) {
                self.write_remove(&mut writer, key)?
            } else {
                self.write_set(&mut writer, key, &value, Some(deadline))?
            }
        };
        self.wait_written(end)?;
        Ok(true)
    }

    /// Rewrites the key's record with its value and no deadline: costs a write of the value's
    /// size (nothing is written for a key without a deadline).
    fn persist_bytes(&self, key: &[u8]) -> Result<bool> {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        check_sizes(key, b"")?;
        let end = {
            let mut writer = self.shared.lock_writer();
            writer.check_usable()?;
            let KeyExpiry::At(_) = self.shared.index.deadline(key) else {
                return Ok(false);
            };
            let Some(value) = self
                .shared
                .with_value(key, |value| value.map(<[u8]>::to_vec))?
            else {
                // Expired between the two looks.
                return Ok(false);
            };
            self.write_set(&mut writer, key, &value, None)?
        };
        self.wait_written(end)?;
        Ok(true)
    }

    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry> {
        self.shared._lock.check_process()?;
        Ok(self.shared.index.deadline(key))
    }

    /// Calls `f` once with the writer lock held: no other write (nor the sweep) runs until its
    /// writes are applied, as one batch (see [`apply_batch`](KvsEngine::apply_batch)), so
    /// what it read is what it changes. Readers go on meanwhile and see the batch at once.
    fn transaction<R, F>(&self, mut f: F) -> Result<R>
    where
        F: FnMut(&mut dyn Transaction) -> Result<R>,
    {
        self.shared._lock.check_process()?;
        self.shared.check_writable()?;
        let shared = &*self.shared;
        let (result, end) = {
            let mut writer = shared.lock_writer();
            writer.check_usable()?;
            let mut tx = Overlay::new(|key: &[u8]| {
                let deadline = match shared.index.deadline(key) {
                    KeyExpiry::Missing => return Ok(None),
                    KeyExpiry::Never => None,
                    KeyExpiry::At(deadline) => Some(deadline),
                };
                let value = shared.with_value(key, |value| value.map(<[u8]>::to_vec))?;
                Ok(value.map(|value| (value, deadline)))
            });
            let result = f(&mut tx)?;
            let batch = tx.into_batch();
            let ops: Vec<Op<'_>> = batch.ops().iter().map(Op::from).collect();
            check_batch(&ops)?;
            let end = self.write_batch_locked(&mut writer, &ops)?;
            (result, end)
        };
        self.wait_written(end)?;
        Ok(result)
    }

    /// Walks the index's hash tables bucket by bucket (see `index.rs` for the cursor and why
    /// the walk keeps SCAN's guarantees); keys are copied, values never read. As in Redis,
    /// every cursor is accepted: one no walk returned goes on from wherever it points.
    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage> {
        self.shared._lock.check_process()?;
        let (next, keys) = self.shared.index.scan(cursor, count, filter);
        Ok(ScanPage { cursor: next, keys })
    }
}

impl KvStore {
    /// The write half of `set`, under the writer lock. Returns where the record ends.
    fn set_locked(&self, key: &[u8], value: &[u8]) -> Result<LogEnd> {
        let mut writer = self.shared.lock_writer();
        writer.check_usable()?;
        self.write_set(&mut writer, key, value, None)
    }

    /// Appends a set record (with `deadline`, if any, which has not passed) and points the
    /// index at it, with the writer lock held (`writer` is its guard). Returns where the
    /// record ends.
    fn write_set(
        &self,
        writer: &mut LogWriter,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Result<LogEnd> {
        let shared = &*self.shared;
        let pos = writer.append_set(key, value, deadline, &shared.files, &shared.index)?;
        // An index over 128 GiB of keys is the only way this fails; the record is then in
        // the log without being acknowledged, as if the process had died right after it.
        let old = match deadline {
            // A plain set clears any deadline the key had.
            None => shared.index.insert(key, pos),
            Some(_) => shared.index.insert_with_deadline(key, pos, deadline),
        }
        .map_err(|_| index_full())?;
        if let Some(old) = old {
            writer.add_stale(old.file, old.len as u64);
            writer.maybe_request_compaction(shared);
        }
        Ok(pos.end())
    }

    /// The write of an atomic batch (see [`KvsEngine::apply_batch`]): under the writer lock,
    /// the records of `ops` encoded and appended as one framed batch, then every index change
    /// applied at once, then (with [`SyncPolicy::Always`]) one wait for the whole batch.
    fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
        check_batch(ops)?;
        let end = {
            let mut writer = self.shared.lock_writer();
            writer.check_usable()?;
            self.write_batch_locked(&mut writer, ops)?
        };
        self.wait_written(end)
    }

    /// The write half of [`write_batch`](KvStore::write_batch), with the writer lock held
    /// (`writer` is its guard) and `ops` checked by [`check_batch`]: appends the batch and
    /// applies it to the index. Returns where the log ends after it.
    fn write_batch_locked(&self, writer: &mut LogWriter, ops: &[Op<'_>]) -> Result<LogEnd> {
        let shared = &*self.shared;
        {
            let now = now_millis();
            let is_remove = |op: &Op<'_>| match *op {
                Op::Set { deadline, .. } => deadline.is_some_and(|d| is_expired(d, now)),
                Op::Remove { .. } => true,
            };
            // Only a remove needs to know whether its key is set; a batch of sets (the common
            // case, `set_many_bytes`) keeps no map.
            let track = ops.iter().any(is_remove);
            // Whether each key the batch touched is set after the ops so far (keys it has not
            // touched: as the index says).
            let mut set_now = std::collections::HashMap::<&[u8], bool>::new();
            let mut records = Vec::with_capacity(ops.len());
            for op in ops {
                match *op {
                    Op::Set {
                        key,
                        value,
                        deadline,
                    } if !is_remove(op) => {
                        records.push(BatchRecord::Set {
                            key,
                            value,
                            deadline,
                        });
                        if track {
                            set_now.insert(key, true);
                        }
                    }
                    // A remove, or a set whose deadline has passed: a remove, if the key is set.
                    Op::Set { key, .. } | Op::Remove { key } => {
                        let is_set = *set_now
                            .entry(key)
                            .or_insert_with(|| shared.index.contains(key));
                        if is_set {
                            records.push(BatchRecord::Remove { key });
                            set_now.insert(key, false);
                        }
                    }
                }
            }
            if records.is_empty() {
                // Nothing to write: the log as it is covers whatever made the keys what they
                // are.
                Ok(writer.sync_target().1)
            } else {
                let positions = writer.append_batch(&records, &shared.files, &shared.index)?;
                let changes: Vec<Change<'_>> = records
                    .iter()
                    .zip(&positions)
                    .map(|(record, &pos)| match *record {
                        BatchRecord::Set { key, deadline, .. } => {
                            Change::Put { key, pos, deadline }
                        }
                        BatchRecord::Remove { key } => Change::Remove { key },
                    })
                    .collect();
                // As in `write_set`: the batch is then in the log without being acknowledged.
                let replaced = shared.index.apply(&changes).map_err(|_| index_full())?;
                for ((record, pos), old) in records.iter().zip(&positions).zip(replaced) {
                    if let BatchRecord::Remove { .. } = record {
                        // A tombstone only matters until the next compaction.
                        writer.add_stale(pos.file, pos.len as u64);
                    }
                    if let Some(old) = old {
                        writer.add_stale(old.file, old.len as u64);
                    }
                }
                writer.maybe_request_compaction(shared);
                Ok(positions
                    .last()
                    .map_or(writer.sync_target().1, RecordPos::end))
            }
        }
    }

    /// Writes a tombstone for `key` if it is set (with the writer lock held); returns where
    /// the log ends after it.
    fn remove_if_set(&self, writer: &mut LogWriter, key: &[u8]) -> Result<LogEnd> {
        if self.shared.index.contains(key) {
            self.write_remove(writer, key)
        } else {
            Ok(writer.sync_target().1)
        }
    }

    /// The write half of `remove`, under the writer lock. Returns where the tombstone ends.
    fn remove_locked(&self, key: &[u8]) -> Result<LogEnd> {
        let shared = &*self.shared;
        let mut writer = shared.lock_writer();
        writer.check_usable()?;
        // Writes are serialized by the writer lock, so the key cannot appear or vanish
        // between this check and the tombstone.
        if !shared.index.contains(key) {
            return Err(KvsError::KeyNotFound);
        }
        self.write_remove(&mut writer, key)
    }

    /// Appends a tombstone for `key`, which is set, and takes it out of the index, with the
    /// writer lock held (`writer` is its guard). Returns where the tombstone ends.
    fn write_remove(&self, writer: &mut LogWriter, key: &[u8]) -> Result<LogEnd> {
        let shared = &*self.shared;
        let tombstone = writer.append_remove(key, &shared.files, &shared.index)?;
        let old = shared.index.remove(key);
        writer.add_stale(tombstone.file, tombstone.len as u64);
        if let Some(old) = old {
            writer.add_stale(old.file, old.len as u64);
        }
        writer.maybe_request_compaction(shared);
        Ok(tombstone.end())
    }
}

impl KvStore {
    /// The write of a compare-and-set or update that passed, with the writer lock held:
    /// takes `key` from `current` (its value now) to `new` (`None`: not set). Returns where
    /// the log ended after it, the end a durable acknowledgement waits for. With nothing to
    /// write (`new` is `current`: a missing key stays missing, or a value is replaced by
    /// itself), nothing is written, and the end is that of the log as it is, which covers
    /// whatever write made the key what it is. A new value gets `deadline` (the key's own,
    /// see [`kept`]).
    fn write_value_locked(
        &self,
        writer: &mut LogWriter,
        key: &[u8],
        current: Option<&[u8]>,
        new: Option<&[u8]>,
        deadline: Option<u64>,
    ) -> Result<LogEnd> {
        match new {
            _ if new == current => Ok(writer.sync_target().1),
            Some(value) => self.write_set(writer, key, value, deadline),
            None => self.write_remove(writer, key),
        }
    }

    /// Waits, with [`SyncPolicy::Always`], for the log to be durable up to `end`.
    fn wait_written(&self, end: LogEnd) -> Result<()> {
        if self.shared.options.sync == SyncPolicy::Always {
            self.shared.wait_durable(end)?;
        }
        Ok(())
    }
}

/// The deadline a compare-and-set or update keeps: the key's own (`expiry`, looked up before
/// `current` was read), or none for a key they create (`current` is `None`).
fn kept(current: Option<&[u8]>, expiry: KeyExpiry) -> Option<u64> {
    match (current, expiry) {
        (Some(_), KeyExpiry::At(deadline)) => Some(deadline),
        _ => None,
    }
}

/// Checks the sizes of a batch's keys and values and of the batch as a whole, before anything
/// is written.
fn check_batch(ops: &[Op<'_>]) -> Result<()> {
    let mut size = 0usize;
    for op in ops {
        let (key, value, deadline) = match *op {
            Op::Set {
                key,
                value,
                deadline,
            } => (key, value, deadline),
            Op::Remove { key } => (key, &[][..], None),
        };
        check_sizes(key, value)?;
        size = size.saturating_add(set_record_len(key, value, deadline));
    }
    if ops.len() > 1 && size > MAX_BATCH_BYTES {
        return Err(batch_too_large(size));
    }
    Ok(())
}

/// The error for an index that cannot take another key.
fn index_full() -> KvsError {
    KvsError::Io(std::io::Error::new(
        std::io::ErrorKind::OutOfMemory,
        "the in-memory index is full (over 4 GiB of keys in one shard)",
    ))
}

/// Checks that `dir`, to be opened read-only, is an existing directory (read-only open
/// creates nothing).
fn check_read_only_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| KvsError::io_at(dir, e))?;
    if !meta.is_dir() {
        return Err(KvsError::io_at(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    Ok(())
}
