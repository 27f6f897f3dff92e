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
//! 3. **Sync** the outputs and **rename** them to `<id>.log`, then sync the directory. The
//!    renames are the commit point. A crash after any of them leaves old files and (some)
//!    outputs side by side; replay reads the outputs after the old files, and both agree on
//!    every live key.
//! 4. **Switch** the index entries that still point where the copy was taken from. An entry
//!    overwritten or removed meanwhile keeps its newer position (in file `A+n+1` or later).
//! 5. **Delete** the old files, oldest first, then sync the directory. Oldest first matters: at
//!    any moment the surviving old files are the newest ones, so a tombstone can never be
//!    deleted while an older value of its key survives, and no removed key comes back.
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
    decode_header, encode_seal, verify_record, FILE_MAGIC, HEADER_LEN, SEAL_VALUE_LEN,
};
use super::index::RecordPos;
use super::log_file::{FileMap, LogFile, SeqReader};
use super::recovery::COMPACTING_SUFFIX;
use super::writer::{create_log, log_path};
use super::Shared;
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

    // 1. Rotate, reserving ids for the output: one file per `max_file_bytes` of live data
    //    (plus one, as each file may end up to one record short of full).
    let (old_ids, out_ids) = {
        let mut writer = shared.lock_writer();
        writer.check_usable()?;
        let last = writer.active_id();
        let live = writer.total_bytes().saturating_sub(writer.stale_bytes());
        let outputs = (live / writer.max_file_bytes() + 2).min(u32::MAX as u64 / 2) as u32;
        let new_id = last.checked_add(outputs + 1).ok_or_else(|| {
            KvsError::InvalidArgument("log file ids exhausted; copy the data to a new store".into())
        })?;
        writer.seal_active()?;
        let new_file = create_log(&shared.dir, new_id, writer.max_file_bytes())?;
        shared.files.update(&shared.index, |files| {
            files.insert(new_id, Arc::clone(&new_file));
        });
        writer.switch_to(new_id, new_file);
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
    let moved = match copy_live_records(shared, last_old, &mut output) {
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
    let written = output.commit()?;
    crash_point::hit("compaction:committed");

    // 4. Switch the index.
    let stale_in_out = switch_index(shared, &moved)?;
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
    crash_point::hit("compaction:done");
    log::debug!(
        "compacted {} files of {} into {} ({} live records)",
        old_ids.len(),
        shared.dir.display(),
        written.len(),
        moved.len()
    );
    Ok(())
}

/// Step 2: writes every live record in files `<= last_old` to the output, in log order.
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
    for m in &mut moved {
        if shared.closing.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let record = read_checked(shared, &files, &mut reader, m.from, m.from.len as usize)?;
        verify_record(record).map_err(|reason| corruption(shared, m.from, reason))?;
        m.to = output.append(record)?;
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
        let header: &[u8; HEADER_LEN] = header
            .try_into()
            .map_err(|_| corruption(shared, m.to, "short record header".into()))?;
        let header = decode_header(header).map_err(|reason| corruption(shared, m.to, reason))?;
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
        let record = read_checked(
            shared,
            &files,
            &mut reader,
            m.to,
            HEADER_LEN + header.key_len,
        )?;
        if !shared.index.replace_if(&record[HEADER_LEN..], m.from, m.to) {
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
    /// Finished (synced) files: id and size.
    done: Vec<(u32, u64)>,
}

impl<'a> Output<'a> {
    fn new(shared: &'a Shared, ids: std::ops::Range<u32>) -> Output<'a> {
        Output {
            shared,
            ids,
            current: None,
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
        }
        let tmp = self.current.as_ref().map(|(id, _, _)| self.tmp_path(*id));
        let Some((id, out, size)) = &mut self.current else {
            unreachable!("an output file was opened above");
        };
        out.write_all(record)
            .map_err(|e| KvsError::io_at(tmp.unwrap_or_default(), e))?;
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
            let mut seal = Vec::with_capacity(HEADER_LEN + SEAL_VALUE_LEN);
            encode_seal(&mut seal, size);
            size += seal.len() as u64;
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
            self.done.push((id, size));
        }
        Ok(())
    }

    /// Syncs the last file, opens every file for reading, renames them into place and syncs the
    /// directory. Returns the ids and sizes written.
    ///
    /// The files are opened *before* the renames: a renamed output is part of the log, so the
    /// store must hold it in its file set, or no later compaction would delete it, and a key it
    /// holds would come back on the next open once its tombstone was compacted away. So nothing
    /// that can fail for want of a descriptor comes between a rename and the file set.
    fn commit(mut self) -> Result<Vec<(u32, u64)>> {
        if let Err(e) = self.finish_current() {
            self.discard();
            return Err(e);
        }
        crash_point::hit("compaction:output-synced");
        let mut opened = Vec::with_capacity(self.done.len());
        for &(id, size) in &self.done {
            let path = self.tmp_path(id);
            match File::open(&path) {
                Ok(file) => opened.push((id, Arc::new(LogFile::new(file, size)))),
                Err(e) => {
                    self.discard();
                    return Err(KvsError::io_at(&path, e));
                }
            }
        }
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
        if let Err(e) = result {
            // Outputs not renamed are not part of the log: remove them.
            self.discard();
            return Err(e);
        }
        sync_dir(&self.shared.dir)?;
        Ok(std::mem::take(&mut self.done))
    }

    /// Removes every file written so far (compaction gave up before committing).
    fn discard(mut self) {
        if let Some((id, _, _)) = self.current.take() {
            let _ = fs::remove_file(self.tmp_path(id));
        }
        for &(id, _) in &self.done {
            let _ = fs::remove_file(self.tmp_path(id));
        }
    }
}
