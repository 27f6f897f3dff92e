//! [`SledKvsEngine`]: the [`KvsEngine`] interface over the `sled` crate.

use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::data_dir::{self, DirLock, EngineKind};
use crate::process::{self, ProcessGuard, STORE};
use crate::{KvsEngine, KvsError, Result};

/// A [`KvsEngine`] backed by a `sled` database.
///
/// Every write is flushed (`Db::flush`) before it returns, so an acknowledged write survives a
/// crash of the process, as with [`KvStore`](crate::KvStore).
///
/// Like a `KvStore`, a handle belongs to the process that created it: in a child made by
/// `fork()` every operation fails with [`KvsError::Forked`], and dropping the handle there
/// leaves the database alone (see [`Drop`](#impl-Drop-for-SledKvsEngine)).
#[derive(Clone)]
pub struct SledKvsEngine {
    /// Never dropped in a child of `fork()`: see `Drop` below.
    db: ManuallyDrop<sled::Db>,
    process: ProcessGuard,
    /// Held when the engine was opened through a kvs data directory (see `AnyEngine::open`).
    dir: Option<Arc<DataDir>>,
    /// Shared by every write through the handle and its clones, taken exclusively by a
    /// checkpoint for its copy (see [`SledKvsEngine::checkpoint`](KvsEngine::checkpoint)).
    writes: Arc<RwLock<()>>,
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
    pub fn new(db: sled::Db) -> SledKvsEngine {
        process::sled_started();
        SledKvsEngine {
            db: ManuallyDrop::new(db),
            process: ProcessGuard::current(STORE),
            dir: None,
            writes: Arc::default(),
        }
    }

    /// A handle on the database in `sled_dir`, just opened while holding `lock`.
    pub(crate) fn with_lock(db: sled::Db, lock: DirLock, sled_dir: &Path) -> SledKvsEngine {
        process::sled_started();
        SledKvsEngine {
            db: ManuallyDrop::new(db),
            process: ProcessGuard::current(STORE),
            dir: Some(Arc::new(DataDir {
                _lock: lock,
                sled_fds: descriptors_under(sled_dir),
            })),
            writes: Arc::default(),
        }
    }

    /// Held by every write for its duration: a checkpoint's copy waits for writes in progress
    /// and holds new ones off.
    fn write_guard(&self) -> RwLockReadGuard<'_, ()> {
        // Nothing is guarded but the exclusion itself: a panic while holding it leaves
        // nothing inconsistent.
        self.writes.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// In the process that opened it, dropping the last handle closes the database as sled does,
/// then releases the directory lock (fields drop after `drop` returns).
///
/// In a child of `fork()` the `Db` is leaked instead: sled 0.34's drop flushes its page cache
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
        if self.process.is_inherited() {
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
        // SAFETY: `db` is dropped only here, once, and `self` is not used after drop.
        unsafe { ManuallyDrop::drop(&mut self.db) };
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

impl KvsEngine for SledKvsEngine {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.process.check()?;
        let _write = self.write_guard();
        self.db.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.process.check()?;
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        self.process.check()?;
        for (key, value) in pairs {
            self.set_bytes(key, value)?;
        }
        Ok(())
    }

    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        self.process.check()?;
        let _write = self.write_guard();
        self.db.remove(key)?.ok_or(KvsError::KeyNotFound)?;
        self.db.flush()?;
        Ok(())
    }

    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        self.process.check()?;
        Ok(self.db.contains_key(key)?)
    }

    fn len(&self) -> Result<usize> {
        self.process.check()?;
        Ok(self.db.len())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.process.check()?;
        self.db
            .iter()
            .keys()
            .map(|k| k.map(|k| k.to_vec()).map_err(KvsError::from))
            .collect()
    }

    fn flush(&self) -> Result<()> {
        self.process.check()?;
        self.db.flush()?;
        Ok(())
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
    /// the hold grows with the size of the store). Reads go on throughout. The copy holds exactly the writes acknowledged before it started. Writes
    /// made to the `sled::Db` directly (not through a `SledKvsEngine`) are not held off, and
    /// only the default tree (the one the engine uses) is copied.
    fn checkpoint(&self, dest: &Path) -> Result<()> {
        self.process.check()?;
        crate::process::check_sled_usable()?;
        let target = super::CheckpointDir::prepare(dest)?;
        let result = self.copy_into(target.path());
        target.finish(result)
    }
}

impl SledKvsEngine {
    /// The checkpoint's copy into the empty data directory `dest` (see `checkpoint`).
    fn copy_into(&self, dest: &Path) -> Result<()> {
        data_dir::record_engine(dest, EngineKind::Sled)?;
        let sled_dir = dest.join(super::SLED_SUBDIR);
        let copy = sled::open(&sled_dir)?;
        {
            let _no_writes = self.writes.write().unwrap_or_else(|p| p.into_inner());
            let mut batch = sled::Batch::default();
            let mut batched = 0usize;
            for pair in self.db.iter() {
                let (key, value) = pair?;
                batched += key.len() + value.len();
                batch.insert(key, value);
                if batched >= COPY_BATCH_BYTES {
                    copy.apply_batch(std::mem::take(&mut batch))?;
                    batched = 0;
                }
            }
            copy.apply_batch(batch)?;
        }
        copy.flush()?;
        drop(copy);
        data_dir::sync_dir(&sled_dir)
    }
}

/// How many bytes of keys and values a checkpoint of a sled store writes into the copy at a
/// time.
const COPY_BATCH_BYTES: usize = 4 << 20;
