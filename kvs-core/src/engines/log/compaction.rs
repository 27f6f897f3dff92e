//! Compaction: rewriting the live records of the log into new files and deleting the old ones.
//!
//! The steps, and why a crash at any point leaves a store that opens correctly:
//!
//! 1. **Rotate** (under the writer lock): with `A` the active file, writes move on to a new
//!    file `A+n+1`. Files `<= A` are now immutable; ids `A+1..=A+n` are reserved for the
//!    output, so that on replay it sorts after everything it replaces and before everything
//!    written since.
//! 2. **Copy** every live record that sits in a file `<= A` into `A+1.log.compacting` (then
//!    `A+2...` as each fills up), checking each record's checksum on the way. Writers and
//!    readers carry on meanwhile. A crash here leaves `.compacting` files, which open deletes:
//!    the old files are intact.
//! 3. **Sync** the outputs, then **commit**: write the `MANIFEST` (see `manifest.rs`) listing
//!    the outputs as closed and the old files as obsolete. A crash before this leaves the old
//!    files in charge (open deletes the unlisted `.compacting` files); a crash after it leaves
//!    the outputs in charge (open renames any output still `.compacting` into place, and
//!    deletes the obsolete files). Then **rename** the outputs to `<id>.log` and sync the
//!    directory.
//! 4. **Switch** the index entries that still point where the copy was taken from. An entry
//!    overwritten or removed meanwhile keeps its newer position (in file `A+n+1` or later).
//! 5. **Delete** the old files, oldest first, then sync the directory; the next manifest written
//!    no longer lists them. Open never replays an obsolete file, so a crash in the middle of
//!    this cannot bring back a removed key. (Stores written without a manifest, by release
//!    0.1.0, replayed whatever files were there; deleting oldest first kept that safe too: the
//!    surviving old files are the newest ones, so no tombstone is deleted while an older value
//!    of its key survives.)
//!
//! Readers that located a record in an old file before step 4 read it under their index shard's
//! lock, and the files are only dropped from the shards' file maps (which needs every shard's
//! lock) after step 4: a read that found an old file finishes before that file is closed, and
//! the file's data stays readable after it is unlinked until then.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::crash_point;
use super::format::{
    decode_header, encode_seal, encode_set, verify_record, Version, FILE_MAGIC, HEADER_LEN,
    SEAL_RECORD_LEN,
};
use super::index::RecordPos;
use super::log_file::{FileMap, LogFile, SeqReader};
use super::manifest::Fingerprint;
use super::recovery::COMPACTING_SUFFIX;
use super::writer::log_path;
use super::{Shared, SWEEP_CHUNK};
use crate::data_dir::sync_dir;
use crate::{KvsError, Result};

/// One live record moved by compaction: positions only, no key (24 bytes a record, one flat
/// `Vec` for all of them). The switch reads each key back from the output.
#[derive(Clone, Copy)]
struct Moved {
    from: RecordPos,
    to: RecordPos,
}

/// Runs one compaction of every file but the active one (see the module docs).
pub(super) fn compact(shared: &Shared) -> Result<()> {
    // One compaction at a time: the background thread and `KvStore::compact` both come here.
    let _running = shared
        .compaction_running
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let started = std::time::Instant::now();
    let bytes_before = shared.lock_writer().total_bytes();

    // 1. Rotate, reserving ids for the output (see `output_ids_needed`).
    let (old_ids, out_ids) = {
        let mut writer = shared.lock_writer();
        writer.check_usable()?;
        let last = writer.active_id();
        // An upper bound of the bytes step 2 copies: it copies the records the index points
        // to in files `<= last`, and every record the index points to is counted in
        // `total_bytes` (the sizes of the files) and not in `stale_bytes`, which counts only
        // records the index no longer points to (overwritten, removed, or copied by a
        // compaction after being overwritten), tombstones and seals. The index can only
        // move away from files `<= last` from here on: new writes go to the new active file.
        let live = writer.total_bytes().saturating_sub(writer.stale_bytes());
        // Version-1 records are copied re-encoded, 4 bytes longer each (a version-2 header is
        // 17 bytes, a version-1 one 13): at most a third longer, as every record is at least
        // 13 bytes. Unused ids are skipped.
        let live = live.saturating_add(live / 3);
        let outputs =
            output_ids_needed(live, writer.max_file_bytes()).min(u32::MAX as u64 / 2) as u32;
        let new_id = last.checked_add(outputs + 1).ok_or_else(|| {
            KvsError::InvalidArgument("log file ids exhausted; copy the data to a new store".into())
        })?;
        writer.rotate_to(new_id, &shared.files, &shared.index)?;
        let old_ids: Vec<u32> = shared
            .files
            .snapshot()
            .keys()
            .copied()
            .filter(|&id| id <= last)
            .collect();
        (old_ids, (last + 1)..new_id)
    };
    let Some(&last_old) = old_ids.last() else {
        return Ok(());
    };

    // 2. Copy.
    let mut output = Output::new(shared, out_ids);
    let copied = copy_live_records(shared, last_old, &mut output);
    // Every key the copy did not list because it had expired is due by now (see
    // `sweep_after_copy`).
    let listed_by = crate::now_millis();
    let moved = match copied {
        Ok(Some(moved)) => moved,
        Ok(None) => {
            // The store is closing; the old files are untouched.
            output.discard();
            return Ok(());
        }
        Err(e) => {
            output.discard();
            return Err(e);
        }
    };

    // 3. Commit: the outputs replace the old files from here on.
    let written = output.commit(&old_ids)?;
    crash_point::hit("compaction:committed");

    // 4. Switch the index, and take out the expired keys the copy left behind.
    let stale_in_out = switch_index(shared, &moved)?;
    sweep_after_copy(shared, listed_by)?;
    {
        let mut writer = shared.lock_writer();
        for &(id, size) in &written {
            writer.add_file(id, size);
        }
        for (id, stale) in stale_in_out {
            writer.add_stale(id, stale);
        }
        for id in &old_ids {
            writer.forget_file(*id);
        }
    }

    // 5. Delete, oldest first.
    // After this no shard's file map holds them: reads that found them have ended.
    shared.files.update(&shared.index, |files| {
        for id in &old_ids {
            files.remove(id);
        }
    });
    for id in &old_ids {
        let path = log_path(&shared.dir, *id);
        fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
        crash_point::hit("compaction:deleted-one");
    }
    sync_dir(&shared.dir)?;
    // Gone: the next manifest written no longer lists them.
    shared.lock_writer().forget_obsolete(&old_ids);
    crash_point::hit("compaction:done");
    let bytes_after = shared.lock_writer().total_bytes();
    log::info!(
        "compacted {}: {} log files into {} ({} live records), {} bytes of log before, {} after \
         (writes meanwhile included), in {:.2} s",
        shared.dir.display(),
        old_ids.len(),
        written.len(),
        moved.len(),
        bytes_before,
        bytes_after,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How many output files step 2 may need to copy `live` bytes of records (an upper bound) into
/// files of at most `max_file_bytes` each.
///
/// [`Output::append`] starts a new file only when the current one holds at least one record
/// and the next record would take it past `max_file_bytes`. Let `D = max_file_bytes -
/// FILE_MAGIC.len()` (the room for records in a file) and `R_j` the bytes of records in output
/// file `j` of `F`. For `j < F`, file `j + 1` was started because `R_j + r > D`, where `r` is
/// the first record of file `j + 1`, so `R_j + R_{j+1} >= R_j + r > D`: any two consecutive
/// files hold more than `D` bytes of records together. The pairs (1, 2), (3, 4), ... are
/// `floor(F / 2)` disjoint such pairs, so `live > floor(F / 2) * D`, hence
/// `floor(F / 2) <= live / D` (integer division) and `F <= 2 * (live / D) + 1`.
///
/// The bound is tight up to one file: records of just over `D / 2` bytes take a file each, so
/// `F` approaches `2 * live / D`. It no longer assumes files end up nearly full, which failed
/// every compaction of a log of such records ("outgrew its reserved file ids") after it had
/// rewritten all live data, so the log was never reclaimed. Unused ids are simply skipped.
fn output_ids_needed(live: u64, max_file_bytes: u64) -> u64 {
    // `max_file_bytes` is at least 4 KiB (see `LogWriter::new`): `room` is never 0.
    let room = max_file_bytes
        .saturating_sub(FILE_MAGIC.len() as u64)
        .max(1);
    2 * (live / room) + 1
}

/// Part of step 4: removes from the index every key whose deadline is `listed_by` or earlier
/// (counting its record stale), as the sweep does (see `mod.rs`). The copy listed only keys
/// that had not expired: a key it left out because it had expired still points into a file
/// about to be deleted, and must be gone from the index first. Its record carries its
/// deadline, so no replay brings it back. (The clock read after the listing is at least every
/// reading taken during it, unless the system clock was set back meanwhile.)
fn sweep_after_copy(shared: &Shared, listed_by: u64) -> Result<()> {
    let now = crate::now_millis().max(listed_by);
    // Not `sweep_all`: it stops when the store starts closing, and these keys must go before
    // their files are deleted.
    while shared.sweep_chunk(now)? == SWEEP_CHUNK {}
    Ok(())
}

/// Step 2: writes every live record in files `<= last_old` to the output, in log order.
/// Only keys that have not expired are copied, each record with its deadline; version-1
/// records are re-encoded in version 2 (the output files are of version 2).
/// Returns `None` if the store started closing meanwhile.
///
/// The old files are read with chunked `pread` ([`SeqReader`]), one file at a time, not
/// through their maps: compaction reads all of the live data once, and through the maps every
/// page of it would become resident in this process.
fn copy_live_records(
    shared: &Shared,
    last_old: u32,
    output: &mut Output<'_>,
) -> Result<Option<Vec<Moved>>> {
    let mut moved: Vec<Moved> = Vec::with_capacity(shared.index.len());
    shared.index.for_each(|_, pos| {
        if pos.file <= last_old {
            moved.push(Moved { from: pos, to: pos });
        }
    });
    // Copy in log order: sequential reads of the old files, and the output keeps the order.
    moved.sort_unstable_by_key(|m| (m.from.file, m.from.offset));

    let files = shared.files.snapshot();
    let mut reader: Option<(u32, SeqReader<'_>)> = None;
    let mut reencoded = Vec::new();
    for m in &mut moved {
        if shared.closing.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let record = read_checked(shared, &files, &mut reader, m.from, m.from.len as usize)?;
        let header =
            verify_record(record).map_err(|e| corruption(shared, m.from, e.to_string()))?;
        m.to = match header.version {
            Version::V2 => output.append(record)?,
            Version::V1 => {
                // Version 1 has no deadlines: the key has none.
                reencoded.clear();
                let key = &record[header.key_start()..header.value_start()];
                encode_set(&mut reencoded, key, &record[header.value_start()..], None);
                output.append(&reencoded)?
            }
        };
    }
    Ok(Some(moved))
}

/// Step 4: points every key that still has the position compaction copied it from to its
/// copy. Returns, per output file, the bytes of copies that are stale already (their key was
/// overwritten or removed during the copy).
///
/// The keys are read back from the outputs, in the order they were written, with chunked
/// `pread`: the outputs were just written, so their pages are in the page cache.
fn switch_index(shared: &Shared, moved: &[Moved]) -> Result<BTreeMap<u32, u64>> {
    let files = shared.files.snapshot();
    let mut reader: Option<(u32, SeqReader<'_>)> = None;
    let mut stale = BTreeMap::<u32, u64>::new();
    for m in moved {
        let header = read_checked(shared, &files, &mut reader, m.to, HEADER_LEN)?;
        if header.len() < HEADER_LEN {
            return Err(corruption(shared, m.to, "short record header".into()));
        }
        let header = decode_header(header, Version::V2)
            .map_err(|e| corruption(shared, m.to, e.to_string()))?;
        if header.record_len() != m.to.len as usize {
            return Err(corruption(
                shared,
                m.to,
                format!(
                    "compaction wrote a {}-byte record here, the header says {}",
                    m.to.len,
                    header.record_len()
                ),
            ));
        }
        let record = read_checked(shared, &files, &mut reader, m.to, header.value_start())?;
        if !shared
            .index
            .replace_if(&record[header.key_start()..], m.from, m.to)
        {
            *stale.entry(m.to.file).or_insert(0) += m.to.len as u64;
        }
    }
    Ok(stale)
}

/// The first `len` bytes of the record at `pos`, through `reader`, which is moved on to
/// `pos`'s file first if it reads another one.
fn read_checked<'f, 'r>(
    shared: &Shared,
    files: &'f FileMap,
    reader: &'r mut Option<(u32, SeqReader<'f>)>,
    pos: RecordPos,
    len: usize,
) -> Result<&'r [u8]> {
    if reader.as_ref().map(|(id, _)| *id) != Some(pos.file) {
        let Some(file) = files.get(&pos.file) else {
            return Err(corruption(
                shared,
                pos,
                "the index points into a log file that is not open".into(),
            ));
        };
        *reader = Some((
            pos.file,
            SeqReader::new(file, &log_path(&shared.dir, pos.file)),
        ));
    }
    let Some((_, reader)) = reader else {
        unreachable!("a reader was set above");
    };
    reader
        .read(pos.offset as u64, len)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                corruption(shared, pos, "file ends before the record".into())
            }
            _ => KvsError::io_at(log_path(&shared.dir, pos.file), e),
        })
}

fn corruption(shared: &Shared, pos: RecordPos, reason: String) -> KvsError {
    KvsError::Corruption {
        path: log_path(&shared.dir, pos.file),
        offset: pos.offset as u64,
        reason,
    }
}

/// The files compaction writes: `<id>.log.compacting`, one after another as each fills up,
/// renamed to `<id>.log` together by [`Output::commit`].
struct Output<'a> {
    shared: &'a Shared,
    ids: std::ops::Range<u32>,
    current: Option<(u32, BufWriter<File>, u64)>,
    /// The fingerprint of the records of `current` (see `manifest.rs`).
    fingerprint: Fingerprint,
    /// Finished (synced) files: id, size and fingerprint.
    done: Vec<(u32, u64, u32)>,
}

impl<'a> Output<'a> {
    fn new(shared: &'a Shared, ids: std::ops::Range<u32>) -> Output<'a> {
        Output {
            shared,
            ids,
            current: None,
            fingerprint: Fingerprint::default(),
            done: Vec::new(),
        }
    }

    fn tmp_path(&self, id: u32) -> PathBuf {
        self.shared.dir.join(format!("{id}{COMPACTING_SUFFIX}"))
    }

    fn append(&mut self, record: &[u8]) -> Result<RecordPos> {
        let max = self.shared.lock_writer().max_file_bytes();
        let full = matches!(&self.current, Some((_, _, size))
            if *size > FILE_MAGIC.len() as u64 && size + record.len() as u64 > max);
        if full {
            self.finish_current()?;
        }
        if self.current.is_none() {
            let id = self.ids.next().ok_or_else(|| {
                KvsError::Io(std::io::Error::other(
                    "compaction output outgrew its reserved file ids",
                ))
            })?;
            let path = self.tmp_path(id);
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .map_err(|e| KvsError::io_at(&path, e))?;
            out.write_all(&FILE_MAGIC)
                .map_err(|e| KvsError::io_at(&path, e))?;
            self.current = Some((id, out, FILE_MAGIC.len() as u64));
            self.fingerprint = Fingerprint::default();
        }
        let tmp = self.current.as_ref().map(|(id, _, _)| self.tmp_path(*id));
        let Some((id, out, size)) = &mut self.current else {
            unreachable!("an output file was opened above");
        };
        out.write_all(record)
            .map_err(|e| KvsError::io_at(tmp.unwrap_or_default(), e))?;
        self.fingerprint.add(record);
        let pos = RecordPos {
            file: *id,
            // Fits: output files stay under max_file_bytes (<= 1 GiB).
            offset: *size as u32,
            len: record.len() as u32,
        };
        *size += record.len() as u64;
        Ok(pos)
    }

    /// Seals the file being written (see `format.rs`), flushes and syncs it.
    fn finish_current(&mut self) -> Result<()> {
        if let Some((id, mut out, mut size)) = self.current.take() {
            let path = self.tmp_path(id);
            let mut seal = Vec::with_capacity(SEAL_RECORD_LEN);
            encode_seal(&mut seal, size);
            size += seal.len() as u64;
            self.fingerprint.add(&seal);
            let finished = out
                .write_all(&seal)
                .and_then(|()| out.into_inner().map_err(|e| e.into_error()))
                .and_then(|file| {
                    crash_point::hit("compaction:output-written");
                    file.sync_all()
                });
            if let Err(e) = finished {
                // No longer `current` nor `done`: `discard` would not find it. On a full disk,
                // leaving it would hold on to the very space compaction was meant to free.
                let _ = fs::remove_file(&path);
                return Err(KvsError::io_at(&path, e));
            }
            self.done.push((id, size, self.fingerprint.value()));
        }
        Ok(())
    }

    /// Syncs the last file and opens every file for reading; then commits: writes the manifest
    /// listing the outputs as closed and `replaced` as obsolete. Then renames the outputs into
    /// place and syncs the directory. Returns the ids and sizes written.
    ///
    /// The files are opened *before* the renames: a renamed output is part of the log, so the
    /// store must hold it in its file set, or no later compaction would delete it, and a key it
    /// holds would come back on the next open once its tombstone was compacted away. So nothing
    /// that can fail for want of a descriptor comes between a rename and the file set.
    ///
    /// Once the manifest is written, the outputs are the store's and the replaced files are
    /// not, whatever happens next: a failed rename poisons the writer (reopening finishes it).
    fn commit(mut self, replaced: &[u32]) -> Result<Vec<(u32, u64)>> {
        if let Err(e) = self.finish_current() {
            self.discard();
            return Err(e);
        }
        crash_point::hit("compaction:output-synced");
        let mut opened = Vec::with_capacity(self.done.len());
        for &(id, size, _) in &self.done {
            let path = self.tmp_path(id);
            match File::open(&path) {
                Ok(file) => opened.push((id, Arc::new(LogFile::new(file, size)))),
                Err(e) => {
                    self.discard();
                    return Err(KvsError::io_at(&path, e));
                }
            }
        }
        // A rename would replace a file of that name: one the store does not list, and so
        // must leave alone.
        for &(id, _, _) in &self.done {
            let out_path = log_path(&self.shared.dir, id);
            if out_path.symlink_metadata().is_ok() {
                self.discard();
                return Err(KvsError::io_at(
                    &out_path,
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file the store does not list has the name of a compaction output; \
                         move it out of the data directory",
                    ),
                ));
            }
        }
        let committed = {
            let mut writer = self.shared.lock_writer();
            match writer.check_usable() {
                Err(e) => Err((e, true)),
                Ok(()) => writer
                    .commit_compaction(&self.done, replaced)
                    .map_err(|e| (e, writer.check_usable().is_ok())),
            }
        };
        if let Err((e, unchanged)) = committed {
            if unchanged {
                // The manifest does not list the outputs: they are not part of the store.
                self.discard();
            }
            return Err(e);
        }
        crash_point::hit("compaction:manifest-written");
        let mut renamed = Vec::with_capacity(opened.len());
        let mut result = Ok(());
        for (id, file) in opened {
            let out_path = log_path(&self.shared.dir, id);
            if let Err(e) = fs::rename(self.tmp_path(id), &out_path) {
                result = Err(KvsError::io_at(&out_path, e));
                break;
            }
            renamed.push((id, file));
        }
        self.shared
            .files
            .update(&self.shared.index, |files| files.extend(renamed));
        let synced = result.and_then(|()| sync_dir(&self.shared.dir));
        if let Err(e) = synced {
            // The manifest lists the outputs: reopening renames the rest into place and deletes
            // the replaced files. Until then the index keeps reading the replaced files, and
            // nothing may write a manifest that would forget the outputs.
            self.shared.lock_writer().poison(format!(
                "compaction of {} failed after its commit: {e}",
                self.shared.dir.display()
            ));
            return Err(e);
        }
        Ok(self.done.iter().map(|&(id, size, _)| (id, size)).collect())
    }

    /// Removes every file written so far (compaction gave up before committing).
    fn discard(mut self) {
        if let Some((id, _, _)) = self.current.take() {
            let _ = fs::remove_file(self.tmp_path(id));
        }
        for &(id, _, _) in &self.done {
            let _ = fs::remove_file(self.tmp_path(id));
        }
    }
}
