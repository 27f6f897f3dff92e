//! The single writer of the `kvs` engine: appends records to the active log file and keeps
//! the byte counts that decide when to compact.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::crash_point;
use super::format::{encode_seal, FILE_MAGIC, HEADER_LEN, SEAL_VALUE_LEN};
use super::index::{Index, RecordPos};
use super::log_file::{FileSet, LogFile};
use super::SyncPolicy;
use crate::data_dir::sync_dir;
use crate::{KvsError, Result};

/// The largest a log file grows before writes move on to a new one. Record offsets are kept
/// in 32 bits in memory (see `index.rs`), so no record may start past 4 GiB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// With [`SyncPolicy::Always`], the active file is made this much longer than its records
/// ahead of time (a sparse extension), so that most fsyncs have no change of file size to
/// commit: measured on ext4, 6.0-6.5k appends+fdatasync per second when every write grows the
/// file, 7.8-8.9k when it does not. The zeros past the last record are cut off when the file is
/// sealed or the store closed, and recovery takes an all-zero tail of the newest file for the
/// end of the log.
const PRESIZE_STEP: u64 = 8 << 20;

/// The most capacity the write buffer keeps between writes. Records and batches up to this
/// size reuse it; a larger one (a value of up to 512 MiB, a batch of up to 16 MiB) gets a
/// buffer of its own, freed after the write.
const KEEP_BUF_BYTES: usize = 4 << 20;

/// Path of log file `id` in `dir`.
pub fn log_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}.log"))
}

/// How much of the active file to map when log files hold at most `max_file_bytes`: a file
/// fills up to that, and then gets its seal record, which may go past it. The map must cover
/// the seal too, or the file could not give its descriptor up once closed (see `log_file.rs`).
pub fn active_map_len(max_file_bytes: u64) -> u64 {
    max_file_bytes + (HEADER_LEN + SEAL_VALUE_LEN) as u64
}

/// Creates log file `id` with its header and syncs the directory, ready for appending and
/// mapped for reads as a file of at most `max_len` bytes (see [`active_map_len`]).
///
/// If any step fails, the file is removed again: the caller retries with the same id later
/// (the next write, the next compaction), and a leftover would make that retry fail for good.
pub fn create_log(dir: &Path, id: u32, max_len: u64) -> Result<Arc<LogFile>> {
    let path = log_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| KvsError::io_at(&path, e))?;
    let ready = file
        .write_all_at(&FILE_MAGIC, 0)
        .map_err(|e| KvsError::io_at(&path, e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = ready {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Arc::new(LogFile::active(file, active_map_len(max_len))))
}

/// The append side of the log. Lives behind the store's writer mutex.
pub struct LogWriter {
    dir: PathBuf,
    max_file_bytes: u64,
    /// Whether to extend the active file ahead of its records (see [`PRESIZE_STEP`]).
    presize: bool,
    /// The active file's length on disk: `offset`, or more when it was extended ahead.
    file_len: u64,
    active_id: u32,
    active: Arc<LogFile>,
    /// Where the next record goes in the active file.
    offset: u64,
    /// Scratch space for encoding records, reused across writes.
    pub buf: Vec<u8>,
    /// Size in bytes of each log file.
    sizes: BTreeMap<u32, u64>,
    /// Bytes of each log file that no longer matter (overwritten, removed, tombstones).
    stale: BTreeMap<u32, u64>,
    /// Set when a failed fsync left the state of the file unknown: no more writes.
    poisoned: Option<String>,
    /// Whether the active file ends with a seal and is synced: once writes move on, it is
    /// closed, and gives up its descriptor.
    sealed: bool,
}

impl LogWriter {
    pub fn new(
        dir: PathBuf,
        sync: SyncPolicy,
        max_file_bytes: u64,
        active_id: u32,
        active: Arc<LogFile>,
        sizes: BTreeMap<u32, u64>,
        stale: BTreeMap<u32, u64>,
    ) -> LogWriter {
        let offset = sizes
            .get(&active_id)
            .copied()
            .unwrap_or(FILE_MAGIC.len() as u64);
        LogWriter {
            dir,
            max_file_bytes: max_file_bytes.clamp(1 << 12, MAX_FILE_BYTES),
            presize: sync == SyncPolicy::Always,
            // Recovery cut the file back to its last record.
            file_len: offset,
            active_id,
            active,
            offset,
            buf: Vec::with_capacity(4096),
            sizes,
            stale,
            poisoned: None,
            sealed: false,
        }
    }

    /// Fails if an earlier failure made writing unsafe.
    pub fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(KvsError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    pub fn active_id(&self) -> u32 {
        self.active_id
    }

    /// Appends the record encoded in `self.buf` to the active file, first moving on to a new
    /// file if this one is full. When this returns `Ok`, the bytes are in the operating system;
    /// with [`SyncPolicy::Always`] the caller then waits for a sync covering them (group commit,
    /// see `Durability` in `mod.rs`).
    ///
    /// A buffer grown past [`KEEP_BUF_BYTES`] for a large record is released afterwards: it
    /// would otherwise stay allocated (and resident) for the life of the store.
    pub fn append(&mut self, files: &FileSet, index: &Index) -> Result<RecordPos> {
        let result = self.append_buf(files, index);
        if self.buf.capacity() > KEEP_BUF_BYTES {
            self.buf = Vec::with_capacity(4096);
        }
        result
    }

    fn append_buf(&mut self, files: &FileSet, index: &Index) -> Result<RecordPos> {
        self.check_usable()?;
        let len = self.buf.len();
        if self.offset > FILE_MAGIC.len() as u64 && self.offset + len as u64 > self.max_file_bytes {
            self.rotate(files, index)?;
        }
        let offset = self.offset;
        let end = offset + len as u64;
        if self.presize && end > self.file_len {
            // Only an optimization: where the file cannot grow that far (a file-size limit),
            // the write itself says whether there is room.
            let target = (end + PRESIZE_STEP).min(self.max_file_bytes.max(end));
            if self.active.set_len(target).is_ok() {
                self.file_len = target;
            }
        }
        if crash_point::armed("write:mid-record") {
            let _ = self.active.write_all_at(&self.buf[..len / 2], offset);
            crash_point::die("write:mid-record");
        }
        if let Err(e) = self.active.write_all_at(&self.buf, offset) {
            // A partial record may be in the file. Cut it off, so the next record lands right
            // after the last good one; if even that fails, the next write overwrites it, and a
            // crash in between leaves it as a torn tail that recovery cuts off.
            let _ = self.cut_back();
            return Err(KvsError::io_at(log_path(&self.dir, self.active_id), e));
        }
        self.offset += len as u64;
        self.sealed = false;
        self.sizes.insert(self.active_id, self.offset);
        crash_point::hit("write:before-return");
        Ok(RecordPos {
            file: self.active_id,
            // Both fit: offsets stay under max_file_bytes (<= 1 GiB) and records are at most
            // MAX_KEY_LEN + MAX_VALUE_LEN + header, far under 4 GiB.
            offset: offset as u32,
            len: len as u32,
        })
    }

    /// Starts a new active file, `active + 1` (every compaction output sorts before the active
    /// file, so this is the highest id).
    fn rotate(&mut self, files: &FileSet, index: &Index) -> Result<()> {
        let id = self.active_id.checked_add(1).ok_or_else(|| {
            KvsError::InvalidArgument("log file ids exhausted; copy the data to a new store".into())
        })?;
        self.seal_active()?;
        let file = create_log(&self.dir, id, self.max_file_bytes)?;
        files.update(index, |files| {
            files.insert(id, Arc::clone(&file));
        });
        self.switch_to(id, file);
        Ok(())
    }

    /// The most bytes a log file may hold.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// fsyncs the active file. A failure poisons the writer: after a failed fsync the kernel
    /// may have dropped the dirty pages, so nothing written since the last good sync is known
    /// to be anywhere.
    pub fn sync_active(&mut self) -> Result<()> {
        self.check_usable()?;
        if let Err(e) = self.active.sync_data() {
            let path = log_path(&self.dir, self.active_id);
            self.poisoned = Some(format!("fsync of {} failed: {e}", path.display()));
            return Err(KvsError::io_at(path, e));
        }
        Ok(())
    }

    /// Before writes move on from the active file: append a seal record (see `format.rs`:
    /// it tells a closed file cut short from a whole one) and sync the file, so that every
    /// file older than the active one is durable as a whole, whatever the sync policy (group
    /// commit only ever syncs the active file). Files are left rarely, so this costs little.
    pub fn seal_active(&mut self) -> Result<()> {
        self.check_usable()?;
        let mut seal = Vec::with_capacity(HEADER_LEN + SEAL_VALUE_LEN);
        encode_seal(&mut seal, self.offset);
        if let Err(e) = self.active.write_all_at(&seal, self.offset) {
            let _ = self.cut_back();
            return Err(KvsError::io_at(log_path(&self.dir, self.active_id), e));
        }
        self.offset += seal.len() as u64;
        self.sizes.insert(self.active_id, self.offset);
        self.add_stale(self.active_id, seal.len() as u64);
        // A closed file ends with its seal: cut off what was extended ahead.
        self.trim()?;
        self.sync_active()?;
        self.sealed = true;
        Ok(())
    }

    /// Cuts the active file back to its last record, if it was extended ahead of it.
    pub fn trim(&mut self) -> Result<()> {
        if self.file_len > self.offset {
            self.cut_back()
                .map_err(|e| KvsError::io_at(log_path(&self.dir, self.active_id), e))?;
        }
        Ok(())
    }

    /// Cuts the active file back to the end of its last record (`offset`). The only way the
    /// writer ever shortens a file: every record the index points to ends at or before
    /// `offset`, so no read through the file's map can touch a page past its new end (see
    /// `log_file.rs`).
    fn cut_back(&mut self) -> std::io::Result<()> {
        self.active.set_len(self.offset)?;
        self.file_len = self.offset;
        Ok(())
    }

    /// The active file, its id and the end of its last record: what a group-commit sync
    /// covers.
    pub fn sync_target(&self) -> (u32, Arc<LogFile>, u64) {
        (self.active_id, Arc::clone(&self.active), self.offset)
    }

    /// Refuses further writes after a failed fsync (see [`LogWriter::sync_active`]).
    pub fn poison(&mut self, reason: String) {
        self.poisoned.get_or_insert(reason);
    }

    /// Makes `file` (already created with its header) the active file. The file left behind,
    /// sealed and synced, closes its descriptor: reads of it go through its map.
    pub fn switch_to(&mut self, id: u32, file: Arc<LogFile>) {
        let left = std::mem::replace(&mut self.active, file);
        if self.sealed {
            left.release_descriptor(self.offset);
        }
        self.sealed = false;
        self.active_id = id;
        self.offset = FILE_MAGIC.len() as u64;
        self.file_len = self.offset;
        self.sizes.insert(id, self.offset);
    }

    /// Counts `len` bytes of file `file` as stale.
    pub fn add_stale(&mut self, file: u32, len: u64) {
        *self.stale.entry(file).or_insert(0) += len;
    }

    /// Forgets the counts of a file that compaction deleted.
    pub fn forget_file(&mut self, id: u32) {
        self.sizes.remove(&id);
        self.stale.remove(&id);
    }

    /// Records the size of a file that compaction wrote.
    pub fn add_file(&mut self, id: u32, size: u64) {
        self.sizes.insert(id, size);
    }

    /// Total bytes in all log files.
    pub fn total_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    /// Stale bytes in all log files.
    pub fn stale_bytes(&self) -> u64 {
        self.stale.values().sum()
    }
}
