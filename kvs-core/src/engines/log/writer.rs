//! The single writer of the `kvs` engine: appends records to the active log file and keeps
//! the byte counts that decide when to compact.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::crash_point;
use super::format::{
    encode_batch, encode_remove, encode_seal, encode_seal_v1, encode_set, MembersChecksum, Version,
    BATCH_RECORD_LEN, FILE_MAGIC, HEADER_LEN, MAX_BATCH_BYTES, SEAL_RECORD_LEN,
};
use super::index::{Index, LogEnd, RecordPos};
use super::log_file::{FileSet, LogFile};
use super::manifest::{self, Fingerprint, Manifest};
use super::SyncPolicy;
use crate::data_dir::sync_dir;
use crate::{KvsError, Result};

/// The largest a log file grows before writes move on to a new one. Record offsets are kept
/// in 32 bits in memory (see `index.rs`), so no record may start past 4 GiB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// How far ahead of its records the active file is allocated (`fallocate`), a step at a time.
/// Inside the allocated part a record is appended by copying it into the file's writable map
/// ([`LogFile::write_mapped`]): a set is then a `memcpy` into the page cache, no system call
/// (measured: the `pwrite` of a 116-byte record was more than half of a set). Allocating
/// first is what makes that safe: a store to a page of the map past the end of the file, or
/// to a page the file system then finds no room for, would raise SIGBUS; with the blocks
/// allocated, a full disk is an error of `fallocate`, and the write falls back to `pwrite`,
/// which fails cleanly. It also serves durable writes: most fsyncs have no change of file size
/// to commit (measured on ext4, 6.0-6.5k appends+fdatasync per second when every write grows
/// the file, 7.8-8.9k when it does not).
///
/// The zeros past the last record are cut off when the file is sealed (a closed file ends with
/// its seal) or the store closed; after a crash, recovery takes an all-zero tail of the newest
/// file for the end of the log and cuts it off. So at most this many bytes of zeros are there
/// to read when a store that was not closed opens again.
const ALLOCATE_STEP: u64 = 8 << 20;

/// The largest append copied through the map; a larger one (a large value, a large batch) is
/// written with `pwrite`, whose system call costs nothing next to the copy, and which leaves
/// its pages in the page cache only, where a copy through the map would make all of them
/// resident in the process until the next [`LogWriter::drop_written_pages`].
const MAX_MAPPED_APPEND: usize = 1 << 20;

/// The page size [`LogWriter::drop_written_pages`] rounds to: 4 KiB, the smallest there is,
/// so that with larger pages it drops a little less than it could, never the page written.
const PAGE_BYTES: u64 = 4096;

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
    max_file_bytes + SEAL_RECORD_LEN as u64
}

/// One record of an atomic batch, for [`LogWriter::append_batch`].
#[derive(Debug, Clone, Copy)]
pub enum BatchRecord<'a> {
    Set {
        key: &'a [u8],
        value: &'a [u8],
        deadline: Option<u64>,
    },
    Remove {
        key: &'a [u8],
    },
}

/// Creates log file `id` (of the current format version) with its header and syncs the
/// directory, ready for appending and
/// mapped for reads as a file of at most `max_len` bytes (see [`active_map_len`]).
///
/// If any step fails, the file is removed again: the caller retries with the same id later
/// (the next write, the next compaction), and a leftover would make that retry fail for good.
/// A file already there by that name is not the store's (the manifest does not list it): it
/// is left alone, and the error says so.
pub fn create_log(dir: &Path, id: u32, max_len: u64) -> Result<Arc<LogFile>> {
    let path = log_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KvsError::io_at(
                &path,
                std::io::Error::new(
                    e.kind(),
                    "a file the store does not list has the name of its next log file; move \
                     it out of the data directory",
                ),
            ),
            _ => KvsError::io_at(&path, e),
        })?;
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
    /// The store's sync policy: with [`SyncPolicy::Always`], a file system that cannot
    /// allocate ahead still gets the file extended ahead (sparse), for cheaper fsyncs.
    sync: SyncPolicy,
    /// The active file's length on disk: `offset`, or more when it was extended ahead.
    file_len: u64,
    /// The end of the part of the active file allocated ahead (see [`ALLOCATE_STEP`]): records
    /// that end at or before it are copied into the map. `offset` when nothing is.
    allocated: u64,
    /// Cleared when the file system says it cannot allocate ahead (`fallocate` unsupported):
    /// every record is then written with `pwrite`.
    can_allocate: bool,
    /// Pages of the active file's map below this offset were dropped from the process (see
    /// [`LogWriter::drop_written_pages`]).
    dropped: u64,
    /// How many appends (records, or batches) there have been: what a sync covers is counted
    /// in appends (see `durability.rs`).
    appends: u64,
    active_id: u32,
    active: Arc<LogFile>,
    /// The active file's format version. Records are only ever written in version 2: a
    /// version-1 active file (release 0.1.0) is sealed and left before the first write.
    active_version: Version,
    /// Where the next record goes in the active file.
    offset: u64,
    /// The fingerprint of the active file's records so far (see `manifest.rs`).
    fingerprint: Fingerprint,
    /// The store's files as its `MANIFEST` lists them. Changed only under the writer lock, so
    /// rotations and compaction commits write it one at a time.
    manifest: Manifest,
    /// Scratch space for encoding records, reused across writes.
    buf: Vec<u8>,
    /// Size in bytes of each log file.
    sizes: BTreeMap<u32, u64>,
    /// Bytes of each log file that no longer matter (overwritten, removed, tombstones).
    stale: BTreeMap<u32, u64>,
    /// The sums of `sizes` and of `stale`, kept as they change: every overwrite asks whether
    /// to compact, and summing the maps made each write cost O(files), which a store of many
    /// small files paid on every write.
    total_sum: u64,
    stale_sum: u64,
    /// Set when a failed fsync left the state of the file unknown: no more writes.
    poisoned: Option<String>,
    /// Set for a store opened read-only: no writes at all (see [`LogWriter::set_read_only`]).
    read_only: bool,
    /// Whether the active file ends with a seal and is synced: once writes move on, it is
    /// closed, and gives up its descriptor.
    sealed: bool,
}

impl LogWriter {
    /// `fingerprint` is that of the active file's records, `manifest` what the store's
    /// `MANIFEST` says (already on disk).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        sync: SyncPolicy,
        max_file_bytes: u64,
        active_id: u32,
        active: Arc<LogFile>,
        sizes: BTreeMap<u32, u64>,
        stale: BTreeMap<u32, u64>,
        fingerprint: u32,
        manifest: Manifest,
    ) -> LogWriter {
        let offset = sizes
            .get(&active_id)
            .copied()
            .unwrap_or(FILE_MAGIC.len() as u64);
        LogWriter {
            dir,
            max_file_bytes: max_file_bytes.clamp(1 << 12, MAX_FILE_BYTES),
            sync,
            // Recovery cut the file back to its last record.
            file_len: offset,
            allocated: offset,
            can_allocate: true,
            dropped: offset,
            appends: 0,
            active_id,
            active,
            active_version: Version::V2,
            offset,
            fingerprint: Fingerprint::resume(fingerprint),
            manifest,
            buf: Vec::with_capacity(4096),
            total_sum: sizes.values().sum(),
            stale_sum: stale.values().sum(),
            sizes,
            stale,
            poisoned: None,
            read_only: false,
            sealed: false,
        }
    }

    /// Fails if an earlier failure made writing unsafe.
    pub fn check_usable(&self) -> Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        match &self.poisoned {
            Some(reason) => Err(KvsError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    pub fn active_id(&self) -> u32 {
        self.active_id
    }

    /// Tells the writer the active file it was given is of `version` (see `active_version`).
    pub fn set_active_version(&mut self, version: Version) {
        self.active_version = version;
    }

    /// Moves writes on to a new version-2 file if the active file is of an older version.
    pub fn leave_old_version(&mut self, files: &FileSet, index: &Index) -> Result<()> {
        if self.active_version != Version::V2 {
            self.check_usable()?;
            self.rotate(files, index)?;
        }
        Ok(())
    }

    /// Appends a record setting `key` to `value`, with `deadline` if any; returns where it
    /// lies. Sizes must have passed [`check_sizes`](super::format::check_sizes).
    pub fn append_set(
        &mut self,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
        files: &FileSet,
        index: &Index,
    ) -> Result<RecordPos> {
        self.buf.clear();
        encode_set(&mut self.buf, key, value, deadline);
        self.append(files, index, HEADER_LEN)
    }

    /// Appends a tombstone for `key`; returns where it lies.
    pub fn append_remove(
        &mut self,
        key: &[u8],
        files: &FileSet,
        index: &Index,
    ) -> Result<RecordPos> {
        self.buf.clear();
        encode_remove(&mut self.buf, key);
        self.append(files, index, HEADER_LEN)
    }

    /// Appends `records` as one atomic batch (see `format.rs`): a batch record framing them,
    /// then every one of them, back to back in one write, all in the same file (which grows
    /// past its size limit for a batch larger than it). A single record needs no frame and
    /// is written alone. Returns where each record lies, in order; the frame is counted stale
    /// at once. Sizes must have passed [`check_sizes`](super::format::check_sizes), and a
    /// framed batch [`MAX_BATCH_BYTES`] (checked again here: over it, nothing is written).
    pub fn append_batch(
        &mut self,
        records: &[BatchRecord<'_>],
        files: &FileSet,
        index: &Index,
    ) -> Result<Vec<RecordPos>> {
        self.buf.clear();
        let framed = records.len() > 1;
        if framed {
            self.buf.resize(BATCH_RECORD_LEN, 0);
        }
        let mut ends = Vec::with_capacity(records.len());
        let mut members_crc = MembersChecksum::default();
        for record in records {
            let start = self.buf.len();
            match *record {
                BatchRecord::Set {
                    key,
                    value,
                    deadline,
                } => encode_set(&mut self.buf, key, value, deadline),
                BatchRecord::Remove { key } => encode_remove(&mut self.buf, key),
            }
            let crc = &self.buf[start..start + 4];
            members_crc.add(u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]));
            ends.push(self.buf.len());
        }
        let frame_len = if framed { BATCH_RECORD_LEN } else { 0 };
        let members_len = self.buf.len() - frame_len;
        if framed && members_len > MAX_BATCH_BYTES {
            self.buf.clear();
            return Err(batch_too_large(members_len));
        }
        if framed {
            let mut frame = Vec::with_capacity(BATCH_RECORD_LEN);
            // Fits: members_len is at most MAX_BATCH_BYTES (1 GiB) and each record is at least
            // one header long.
            encode_batch(
                &mut frame,
                records.len() as u32,
                members_len as u32,
                members_crc.value(),
            );
            self.buf[..BATCH_RECORD_LEN].copy_from_slice(&frame);
        }
        // The frame first: it declares the extent of the whole batch (see `write_mapped`).
        let head = if framed { BATCH_RECORD_LEN } else { HEADER_LEN };
        let batch = self.append(files, index, head)?;
        if framed {
            self.add_stale(batch.file, frame_len as u64);
        }
        let mut start = frame_len;
        Ok(ends
            .into_iter()
            .map(|end| {
                let pos = RecordPos {
                    file: batch.file,
                    offset: batch.offset + start as u32,
                    len: (end - start) as u32,
                };
                start = end;
                pos
            })
            .collect())
    }

    /// Appends the records encoded in `self.buf` to the active file, first moving on to a new
    /// file if this one is full; the first `head` bytes of `self.buf` are the header that
    /// declares the extent of the rest (see [`LogFile::write_mapped`]). When this returns
    /// `Ok`, the bytes are in the operating system (the page cache: copied through the map,
    /// or written with `pwrite`); with [`SyncPolicy::Always`] the caller then waits for a sync
    /// covering them (group commit, see `durability.rs`).
    ///
    /// A buffer grown past [`KEEP_BUF_BYTES`] for a large record is released afterwards: it
    /// would otherwise stay allocated (and resident) for the life of the store.
    fn append(&mut self, files: &FileSet, index: &Index, head: usize) -> Result<RecordPos> {
        let result = self.append_buf(files, index, head);
        if self.buf.capacity() > KEEP_BUF_BYTES {
            self.buf = Vec::with_capacity(4096);
        }
        result
    }

    fn append_buf(&mut self, files: &FileSet, index: &Index, head: usize) -> Result<RecordPos> {
        self.check_usable()?;
        let len = self.buf.len();
        let full =
            self.offset > FILE_MAGIC.len() as u64 && self.offset + len as u64 > self.max_file_bytes;
        if full || self.active_version != Version::V2 {
            // Version-2 records never go into an older version's file (one file, one version).
            self.rotate(files, index)?;
        }
        let offset = self.offset;
        let end = offset + len as u64;
        if end > self.allocated {
            self.allocate_ahead(end);
        }
        let mapped = end <= self.allocated && len <= MAX_MAPPED_APPEND;
        if crash_point::armed("write:mid-record") {
            let half = &self.buf[..len / 2];
            // SAFETY: as below, for a part of the same range.
            if !(mapped && unsafe { self.active.write_mapped(half, offset, head) }) {
                let _ = self.active.write_all_at(half, offset);
            }
            crash_point::die("write:mid-record");
        }
        // SAFETY: `offset..end` lies below `allocated`, which `allocate_ahead` set only once
        // `fallocate` had allocated every block up to it (and grown the file to cover it), and
        // which `cut_back` brings down with the file; the writer (this `&mut self`) is the only
        // one writing the file, and the index points to nothing at or past `offset` yet.
        let copied = mapped && unsafe { self.active.write_mapped(&self.buf, offset, head) };
        if !copied {
            if let Err(e) = self.active.write_all_at(&self.buf, offset) {
                // A partial record may be in the file. Cut it off, so the next record lands
                // right after the last good one; if even that fails, the next write overwrites
                // it, and a crash in between leaves it as a torn tail that recovery cuts off.
                let _ = self.cut_back();
                return Err(KvsError::io_at(log_path(&self.dir, self.active_id), e));
            }
            self.file_len = self.file_len.max(end);
        }
        self.appends += 1;
        self.offset += len as u64;
        if copied && self.offset - self.dropped >= ALLOCATE_STEP {
            self.drop_written_pages();
        }
        self.fingerprint.add_all(&self.buf);
        self.sealed = false;
        self.set_size(self.active_id, self.offset);
        crash_point::hit("write:before-return");
        Ok(RecordPos {
            file: self.active_id,
            // Both fit: offsets stay under max_file_bytes (<= 1 GiB) and records are at most
            // MAX_KEY_LEN + MAX_VALUE_LEN + header, far under 4 GiB.
            offset: offset as u32,
            len: len as u32,
        })
    }

    /// Allocates the active file ahead of its records (see [`ALLOCATE_STEP`]) so that a record
    /// ending at `end` fits: up to a step past it, within the file's map and the process's
    /// file-size limit. Only an optimization: if it cannot (a full disk, the file-size limit,
    /// a file system without `fallocate`, a record larger than the map), `allocated` stays
    /// below `end` and the record is written with `pwrite`, which says whether there is room.
    ///
    /// Where a whole step does not fit (a disk with less than a step free), the record alone
    /// is allocated: records keep going through the map, a system call or two each, until the
    /// disk is full.
    fn allocate_ahead(&mut self, end: u64) {
        let limit = active_map_len(self.max_file_bytes).min(file_size_limit());
        let step = end.saturating_add(ALLOCATE_STEP).min(limit);
        // A step, then the record alone; nothing past the limit.
        let targets = [Some(step), (step != end).then_some(end)];
        for target in targets
            .into_iter()
            .flatten()
            .filter(|&t| t >= end && t <= limit)
        {
            if !self.can_allocate {
                break;
            }
            match self.active.allocate(self.offset, target - self.offset) {
                Ok(()) => {
                    self.allocated = target;
                    self.file_len = self.file_len.max(target);
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    log::debug!(
                        "{}: cannot allocate ahead ({e}); records are written with pwrite",
                        log_path(&self.dir, self.active_id).display()
                    );
                    self.can_allocate = false;
                }
                Err(e) => {
                    log::debug!(
                        "{}: allocating {} bytes ahead failed ({e})",
                        log_path(&self.dir, self.active_id).display(),
                        target - self.offset
                    );
                    // A failed fallocate may have allocated (and grown the file by) part of
                    // the range: cut it back, so the file ends at its last record again.
                    let _ = self.cut_back();
                }
            }
        }
        if self.sync == SyncPolicy::Always && !self.can_allocate && end > self.file_len {
            // No fallocate: a sparse extension still spares most fsyncs a change of size.
            let target = (end + ALLOCATE_STEP).min(self.max_file_bytes.max(end));
            if self.active.set_len(target).is_ok() {
                self.file_len = target;
            }
        }
    }

    /// Drops the pages of the records copied through the map since the last time from this
    /// process's memory: a page written through a shared map stays resident in the process
    /// (as after a read through it), and a whole active file of them, up to 1 GiB, would show
    /// as the store's memory, where `pwrite` leaves pages in the page cache only. Done once
    /// per [`ALLOCATE_STEP`] written, it bounds that to about a step; the bytes stay in the
    /// page cache, and a read of them faults them back in.
    fn drop_written_pages(&mut self) {
        let len = self.offset - self.dropped;
        // The page holding `offset` is left alone: the next record goes there. (Dropping it
        // would be harmless too, see `Mapping::drop_pages`, only wasted.)
        let whole = len - self.offset % PAGE_BYTES;
        if let Ok(whole_len) = usize::try_from(whole) {
            self.active.drop_pages(self.dropped, whole_len);
            self.dropped += whole;
        }
    }

    /// Starts a new active file, `active + 1` (every compaction output sorts before the active
    /// file, so this is the highest id), or the next id after it whose name no file the store
    /// does not list has taken.
    fn rotate(&mut self, files: &FileSet, index: &Index) -> Result<()> {
        let exhausted = || {
            KvsError::InvalidArgument("log file ids exhausted; copy the data to a new store".into())
        };
        let mut id = self.active_id.checked_add(1).ok_or_else(exhausted)?;
        while log_path(&self.dir, id).symlink_metadata().is_ok() {
            log::warn!(
                "{}: not one of the store's files, skipping its name",
                log_path(&self.dir, id).display()
            );
            id = id.checked_add(1).ok_or_else(exhausted)?;
        }
        self.rotate_to(id, files, index)
    }

    /// Moves writes on to a new file `id`, higher than every id in the store: seals the active
    /// file, creates `id` with its header, and writes the manifest listing the old file closed
    /// and `id` active. A crash before the manifest is written leaves `id` unlisted, holding
    /// at most its header: open removes it. If this fails before the manifest is written,
    /// writes go on in the old file (after its seal, see `format.rs`).
    pub fn rotate_to(&mut self, id: u32, files: &FileSet, index: &Index) -> Result<()> {
        self.seal_active()?;
        crash_point::hit("rotate:sealed");
        let file = create_log(&self.dir, id, self.max_file_bytes)?;
        crash_point::hit("rotate:created");
        let mut next = self.manifest.clone();
        next.set_closed(self.active_id, self.offset, self.fingerprint.value());
        next.set_active(id);
        if let Err(e) = manifest::replace(&self.dir, &next) {
            // The manifest does not list the new file: it is not part of the store.
            drop(file);
            let _ = std::fs::remove_file(log_path(&self.dir, id));
            return Err(e);
        }
        self.manifest = next;
        crash_point::hit("rotate:manifest-written");
        files.update(index, |files| {
            files.insert(id, Arc::clone(&file));
        });
        self.switch_to(id, file);
        self.sync_manifest()
    }

    /// Makes a manifest just renamed into place durable (syncs the directory). A failure
    /// poisons the writer: the manifest on disk may be the new one or the old one, and writes
    /// must not go on into files it may not list.
    fn sync_manifest(&mut self) -> Result<()> {
        if let Err(e) = sync_dir(&self.dir) {
            self.poison(format!(
                "syncing {} after writing its manifest failed: {e}",
                self.dir.display()
            ));
            return Err(e);
        }
        Ok(())
    }

    /// The compaction commit point (see `compaction.rs`): writes the manifest with `outputs`
    /// (id, length, fingerprint) listed closed and `replaced` obsolete. On error the manifest
    /// is unchanged, unless the writer is now poisoned (the directory sync failed).
    pub fn commit_compaction(
        &mut self,
        outputs: &[(u32, u64, u32)],
        replaced: &[u32],
    ) -> Result<()> {
        self.check_usable()?;
        let mut next = self.manifest.clone();
        for &id in replaced {
            next.set_obsolete(id);
        }
        for &(id, len, fingerprint) in outputs {
            next.set_closed(id, len, fingerprint);
        }
        manifest::replace(&self.dir, &next)?;
        self.manifest = next;
        self.sync_manifest()
    }

    /// Drops deleted obsolete files from the manifest; the next manifest written leaves them
    /// out.
    pub fn forget_obsolete(&mut self, ids: &[u32]) {
        for id in ids {
            self.manifest.forget(*id);
        }
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
        let mut seal = Vec::with_capacity(SEAL_RECORD_LEN);
        match self.active_version {
            Version::V1 => encode_seal_v1(&mut seal, self.offset),
            Version::V2 => encode_seal(&mut seal, self.offset),
        }
        if let Err(e) = self.active.write_all_at(&seal, self.offset) {
            let _ = self.cut_back();
            return Err(KvsError::io_at(log_path(&self.dir, self.active_id), e));
        }
        self.offset += seal.len() as u64;
        self.fingerprint.add(&seal);
        self.set_size(self.active_id, self.offset);
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
        // No more copying into the map past `offset`, whatever happens to the file below.
        self.allocated = self.allocated.min(self.offset);
        self.active.set_len(self.offset)?;
        self.file_len = self.offset;
        Ok(())
    }

    /// The active file and the end of its last record: what a group-commit sync covers.
    pub fn sync_target(&self) -> (Arc<LogFile>, LogEnd) {
        let end = LogEnd {
            file: self.active_id,
            offset: self.offset,
        };
        (Arc::clone(&self.active), end)
    }

    /// How many appends (records, or batches) this writer has made.
    pub fn appends(&self) -> u64 {
        self.appends
    }

    /// Refuses further writes after a failed fsync (see [`LogWriter::sync_active`]).
    pub fn poison(&mut self, reason: String) {
        self.poisoned.get_or_insert(reason);
    }

    /// Makes `file` (already created with its header, and listed) the active file. The file
    /// left behind, sealed and synced, closes its descriptor: reads of it go through its map.
    fn switch_to(&mut self, id: u32, file: Arc<LogFile>) {
        let left = std::mem::replace(&mut self.active, file);
        if self.sealed {
            left.release_descriptor(self.offset);
        }
        self.sealed = false;
        self.active_id = id;
        self.active_version = Version::V2;
        self.fingerprint = Fingerprint::default();
        self.offset = FILE_MAGIC.len() as u64;
        self.file_len = self.offset;
        self.allocated = self.offset;
        self.can_allocate = true;
        self.dropped = self.offset;
        self.set_size(id, self.offset);
    }

    /// Counts `len` bytes of file `file` as stale.
    pub fn add_stale(&mut self, file: u32, len: u64) {
        *self.stale.entry(file).or_insert(0) += len;
        self.stale_sum += len;
    }

    /// Forgets the counts of a file that compaction deleted.
    pub fn forget_file(&mut self, id: u32) {
        self.total_sum -= self.sizes.remove(&id).unwrap_or(0);
        self.stale_sum -= self.stale.remove(&id).unwrap_or(0);
    }

    /// Records the size of a file that compaction wrote.
    pub fn add_file(&mut self, id: u32, size: u64) {
        self.set_size(id, size);
    }

    /// Sets the size of file `id`, keeping the total in step.
    fn set_size(&mut self, id: u32, size: u64) {
        let old = self.sizes.insert(id, size).unwrap_or(0);
        self.total_sum = self.total_sum - old + size;
    }

    /// Total bytes in all log files.
    pub fn total_bytes(&self) -> u64 {
        self.total_sum
    }

    /// Stale bytes in all log files.
    pub fn stale_bytes(&self) -> u64 {
        self.stale_sum
    }

    /// The cut of a checkpoint (see `checkpoint.rs`): the files as the manifest lists them and
    /// the end of the last record appended (the active file holds nothing else before it, and
    /// what lies before it never changes).
    pub fn checkpoint_cut(&self) -> (Manifest, LogEnd) {
        (self.manifest.clone(), self.sync_target().1)
    }
}

impl LogWriter {
    /// Refuses every write from now on (a store opened read-only): [`check_usable`], which
    /// every append, sync, seal and compaction commit calls first, fails.
    ///
    /// [`check_usable`]: LogWriter::check_usable
    pub fn set_read_only(&mut self) {
        self.read_only = true;
    }
}

/// The soft limit on the size of a file this process may write (`RLIMIT_FSIZE`): allocating
/// past it would fail (and raise SIGXFSZ), where a `pwrite` of the records themselves may fit.
fn file_size_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return u64::MAX;
    }
    limit.rlim_cur
}

/// The error for a batch over [`MAX_BATCH_BYTES`].
pub fn batch_too_large(len: usize) -> KvsError {
    KvsError::InvalidArgument(format!(
        "batch is {len} bytes of records; the limit is {MAX_BATCH_BYTES} (a batch goes whole \
         into one log file): split it"
    ))
}

/// The error of a write to a store opened read-only.
pub fn read_only_error() -> KvsError {
    KvsError::InvalidArgument("the store is open read-only".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::log::format::verify_record;

    fn writer(dir: &Path, max_file_bytes: u64) -> (LogWriter, FileSet, Index) {
        let active = create_log(dir, 1, max_file_bytes).unwrap();
        let index = Index::new();
        let files = FileSet::new(BTreeMap::from([(1, Arc::clone(&active))]), &index);
        let writer = LogWriter::new(
            dir.to_path_buf(),
            SyncPolicy::Os,
            max_file_bytes,
            1,
            active,
            BTreeMap::new(),
            BTreeMap::new(),
            0,
            Manifest::default(),
        );
        (writer, files, index)
    }

    /// The bytes of the record at `pos`, checked.
    fn record_at(dir: &Path, pos: RecordPos) -> Vec<u8> {
        let bytes = std::fs::read(log_path(dir, pos.file)).unwrap();
        let record = bytes[pos.offset as usize..(pos.offset + pos.len) as usize].to_vec();
        verify_record(&record).unwrap();
        record
    }

    fn set<'a>(key: &'a [u8], value: &'a [u8]) -> BatchRecord<'a> {
        BatchRecord::Set {
            key,
            value,
            deadline: None,
        }
    }

    #[test]
    fn appends_return_where_each_record_lies() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut writer, files, index) = writer(dir.path(), 1 << 20);
        let first = writer
            .append_set(b"a", b"one", None, &files, &index)
            .unwrap();
        let sets = writer
            .append_batch(
                &[
                    set(b"bb", b"two"),
                    BatchRecord::Set {
                        key: b"c",
                        value: b"",
                        deadline: Some(77),
                    },
                    BatchRecord::Remove { key: b"bb" },
                ],
                &files,
                &index,
            )
            .unwrap();
        let removed = writer.append_remove(b"a", &files, &index).unwrap();
        assert_eq!(sets.len(), 3);
        // The batch's frame lies between the first record and its members, and is stale.
        assert_eq!(writer.stale_bytes(), BATCH_RECORD_LEN as u64);
        let header = HEADER_LEN as u32;
        let expected = [
            (first, 0x11, b"a".as_slice(), b"one".as_slice(), 8),
            (
                sets[0],
                0x11,
                b"bb",
                b"two",
                8 + header + 4 + BATCH_RECORD_LEN as u32,
            ),
            (sets[1], 0x14, b"c", b"", sets[0].offset + sets[0].len),
            (sets[2], 0x12, b"bb", b"", sets[1].offset + sets[1].len),
            (removed, 0x12, b"a", b"", sets[2].offset + sets[2].len),
        ];
        for (pos, kind, key, value, offset) in expected {
            let deadline = if kind == 0x14 { 8 } else { 0 };
            assert_eq!(
                pos,
                RecordPos {
                    file: 1,
                    offset,
                    len: header + deadline + (key.len() + value.len()) as u32
                }
            );
            let record = record_at(dir.path(), pos);
            assert_eq!(record[4], kind);
            let at = HEADER_LEN + deadline as usize;
            assert_eq!(&record[at..], [key, value].concat());
        }
        assert_eq!(writer.sync_target().1, removed.end());
        // A batch of one record needs no frame.
        let one = writer
            .append_batch(&[set(b"z", b"1")], &files, &index)
            .unwrap();
        assert_eq!(one[0].offset as u64, removed.end().offset);
        assert_eq!(writer.stale_bytes(), BATCH_RECORD_LEN as u64);
    }

    #[test]
    fn the_active_file_is_allocated_ahead_and_a_sealed_file_ends_at_its_seal() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::TempDir::new().unwrap();
        let max = 1 << 20;
        let (mut writer, files, index) = writer(dir.path(), max);
        let first = writer
            .append_set(b"k", b"value", None, &files, &index)
            .unwrap();
        let path = log_path(dir.path(), 1);
        // Allocated ahead, as far as the map reaches (less than a step here): blocks, not a
        // sparse extension, so that writes through the map cannot run out of space.
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), active_map_len(max));
        assert!(meta.blocks() * 512 >= active_map_len(max), "{meta:?}");
        assert_eq!(writer.allocated, active_map_len(max));
        // The record is in the file, through the map, where the writer said.
        assert_eq!(record_at(dir.path(), first)[HEADER_LEN..], *b"kvalue");
        // Fill the file until writes move on: the closed file ends with its seal, its
        // allocated tail cut off.
        let value = vec![9u8; 10_000];
        let mut last = first;
        let mut appends = 1;
        while writer.active_id() == 1 {
            appends += 1;
            let pos = writer
                .append_set(b"k", &value, None, &files, &index)
                .unwrap();
            if pos.file == 1 {
                last = pos;
            }
        }
        let closed = std::fs::read(&path).unwrap();
        let seal_at = last.end().offset as usize;
        assert_eq!(closed.len(), seal_at + SEAL_RECORD_LEN);
        verify_record(&closed[seal_at..]).unwrap();
        assert_eq!(closed[seal_at + 4], 0x13, "a seal record");
        assert_eq!(writer.sizes[&1], closed.len() as u64);
        // Every record of the closed file reads back.
        record_at(dir.path(), last);
        // The new active file is allocated ahead from its first record on.
        assert!(std::fs::metadata(log_path(dir.path(), 2)).unwrap().len() > max);
        // Appends are counted (for what a sync covers); the seal is not one.
        assert_eq!(writer.appends(), appends);
    }

    #[test]
    fn a_batch_that_does_not_fit_goes_whole_into_the_next_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut writer, files, index) = writer(dir.path(), 4096);
        let big = vec![7u8; 3000];
        writer
            .append_set(b"first", &big, None, &files, &index)
            .unwrap();
        let sets = writer
            .append_batch(&[set(b"x", &big), set(b"y", b"small")], &files, &index)
            .unwrap();
        assert_eq!(sets[0].file, 2);
        assert_eq!(sets[0].offset, (FILE_MAGIC.len() + BATCH_RECORD_LEN) as u32);
        assert_eq!(sets[1].file, 2);
        assert_eq!(sets[1].offset, sets[0].offset + sets[0].len);
        for pos in &sets {
            record_at(dir.path(), *pos);
        }
        // A batch larger than a whole file still goes into one file, which grows past its
        // limit.
        let many: Vec<BatchRecord<'_>> = (0..3).map(|_| set(b"x", &big)).collect();
        let grown = writer.append_batch(&many, &files, &index).unwrap();
        assert!(grown.iter().all(|p| p.file == 3), "{grown:?}");
        assert!(grown[2].end().offset > 4096);
    }

    #[test]
    fn running_totals_match_the_per_file_counts() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut writer, files, index) = writer(dir.path(), 4096);
        let check = |w: &LogWriter| {
            assert_eq!(w.total_bytes(), w.sizes.values().sum::<u64>());
            assert_eq!(w.stale_bytes(), w.stale.values().sum::<u64>());
        };
        // Enough 300-byte records to rotate through several files, each counted stale later.
        let value = [7u8; 300];
        let mut positions = Vec::new();
        for i in 0..40u32 {
            positions.push(
                writer
                    .append_set(&i.to_le_bytes(), &value, None, &files, &index)
                    .unwrap(),
            );
            check(&writer);
        }
        assert!(writer.active_id() > 2, "the writes rotated");
        for pos in &positions[..20] {
            writer.add_stale(pos.file, pos.len as u64);
            check(&writer);
        }
        writer.add_file(1000, 12345);
        check(&writer);
        writer.add_file(1000, 99);
        check(&writer);
        for id in [1, 2, 1000, 424242] {
            writer.forget_file(id);
            check(&writer);
        }
        assert!(writer.total_bytes() > 0 && writer.stale_bytes() > 0);
    }

    #[test]
    fn a_read_only_writer_refuses_every_write_and_leaves_the_file_alone() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut writer, files, index) = writer(dir.path(), 4096);
        let path = log_path(dir.path(), 1);
        let before = std::fs::read(&path).unwrap();
        writer.set_read_only();
        let refused = |result: Result<()>, what: &str| match result {
            Err(KvsError::InvalidArgument(message)) => {
                assert!(message.contains("read-only"), "{what}: {message}")
            }
            other => panic!("{what} on a read-only writer: {other:?}"),
        };
        refused(writer.check_usable(), "check_usable");
        refused(
            writer
                .append_set(b"k", b"v", None, &files, &index)
                .map(|_| ()),
            "append_set",
        );
        refused(
            writer.append_remove(b"k", &files, &index).map(|_| ()),
            "append_remove",
        );
        refused(
            writer
                .append_batch(&[set(b"a", b"1"), set(b"b", b"2")], &files, &index)
                .map(|_| ()),
            "append_batch",
        );
        refused(writer.seal_active(), "seal_active");
        refused(writer.sync_active(), "sync_active");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
