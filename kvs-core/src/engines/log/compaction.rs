//! Compaction: rewriting the live records of the log into new files and deleting the old ones,
//! in bounded steps.
//!
//! One compaction starts with a rotation, then goes through the files it replaces oldest first,
//! in **steps** of at most [`KvStoreOptions::compaction_step_records`] live records (default
//! `DEFAULT_COMPACTION_STEP_RECORDS`, 131,072): each step copies the live records of its
//! stretch of the log, commits, switches the index for just those records and deletes the
//! files it has read to the end. What compaction holds in memory is bounded by the step, not
//! by the store: the step's list of moves (24 bytes a record, 3 MiB by default), the read
//! window of the file being read and a chunked reader of it (4 MiB each), a 1 MiB write
//! buffer, and during the switch a chunked reader of the outputs (4 MiB). (Listing every live
//! record of the store at once would cost 24 bytes a key on top of the index.)
//!
//! [`KvStoreOptions::compaction_step_records`]: super::KvStoreOptions::compaction_step_records
//!
//! 1. **Rotate** (under the writer lock): with `A` the active file, writes move on to a new
//!    file `A+n+1`. Files `<= A` (the *old* files) are now immutable; ids `A+1..=A+n` are
//!    reserved for the outputs of every step, so that on replay they sort after every old file
//!    and before everything written since (see `output_ids_needed` for `n`).
//!
//! Then, step after step, until every old file is deleted:
//!
//! 2. **Copy.** The old files are read in log order, each record checked (`reader.rs`,
//!    through a descriptor of compaction's own and `pread`, never through the store's maps).
//!    A set record is *live* if the index points at it (and its key has not expired): it is
//!    then the newest record of its key in the whole log. It is copied into
//!    `<id>.log.compacting`, the next reserved id (a new one as each fills up), and its move
//!    (from, to) noted. Tombstones, seals and records the index no longer points at are not
//!    copied. The step ends after `compaction_step_records` live records (in the middle of a
//!    file, or of a batch, if need be) or at the end of the last old file. Writers and readers
//!    carry on meanwhile. A crash here leaves `.compacting` files, which open deletes: the
//!    files of the step are intact, and earlier steps are committed.
//!
//!    When every key of the store fits in one step (the index holds at most
//!    `compaction_step_records` keys at the rotation), the live records are listed from the
//!    index instead: what it points at in the old files, copied in log order, each read and
//!    checked on its own; that one step then replaces every old file. Its cost follows the
//!    live records, not the bytes of the old files, which for a few keys overwritten without
//!    end (counters, sessions, a cache) are nearly all stale.
//! 3. **Sync** the step's outputs, then **commit**: write the `MANIFEST` (see `manifest.rs`)
//!    listing the step's outputs as closed and the old files it read to the end as obsolete.
//!    A crash before this leaves the store as the previous step left it (open deletes the
//!    unlisted `.compacting` files); a crash after it leaves the step's outputs in charge
//!    (open renames any output still `.compacting` into place, and deletes the obsolete
//!    files). Then **rename** the outputs to `<id>.log` and sync the directory.
//! 4. **Switch** the index entries of the step's moves that still point where the copy was
//!    taken from, one key per hold of its shard's write lock: readers and writers go on
//!    between any two. An entry overwritten or removed meanwhile keeps its newer position (in
//!    file `A+n+1` or later). Keys left out of the copy because they had expired are taken out
//!    of the index ([`SWEEP_CHUNK`] at a time under the writer lock, as the sweep does).
//! 5. **Delete** the old files the step read to the end, oldest first, then sync the
//!    directory; the next manifest written no longer lists them. Open never replays an
//!    obsolete file, so a crash in the middle of this cannot bring back a removed key.
//!
//! **Why the order of ids stays right between steps.** After a step, its outputs (ids above
//! `A`) sort after old files that no step has read yet, and after the rest of a file the step
//! stopped in. Replay reads by increasing id, so the copies win over whatever those files hold
//! of the same keys; that is correct because a copied record was the newest of its key when it
//! was copied: no record of that key in any old file is newer (the old files are immutable, and
//! everything written since goes to `A+n+1` or later, which sorts after the outputs). So an
//! old file left behind holds of a copied key only older records, which the copy rightly
//! overrides, or the very record copied (a file a step stopped in), which gives the same value
//! twice. Tombstones are never copied: a tombstone in an old file covers records of its key in
//! the same or older files, which are read by the same step or an earlier one, oldest first,
//! and were not live (the tombstone is newer), so none was copied; the tombstone goes with its
//! file, once every older record it hides is gone. A key that had expired is not copied
//! either: its record carries its deadline, so the records left in files not yet deleted
//! never bring it back, and older records of its key are in the same or older files.
//!
//! **Why a crash between any two steps opens correctly.** Each step has its own commit point,
//! the manifest write of step 3, and between two steps the manifest lists: outputs of the
//! steps done (closed), old files not yet read to the end (closed), and the active file. That
//! is a log whose replay gives every key its newest value, by the argument above; the
//! reserved ids a crash leaves unused are simply never used (the next compaction reserves new
//! ones above the active file). A file a step stopped in is listed whole; its records that
//! were copied count as stale on replay, and the next compaction reclaims them.
//!
//! **Stores of release 0.1.0**, written without a manifest, replayed whatever files were
//! there; they get a manifest on their first open, before any compaction. Deleting oldest
//! first also keeps them safe: the surviving old files are the newest ones, so no tombstone is
//! deleted while an older value of its key survives.
//!
//! Readers that located a record in an old file before step 4 read it under their index
//! shard's lock, and the files are only dropped from the shards' file maps (which needs every
//! shard's lock) after step 4: a read that found an old file finishes before that file is
//! closed, and the file's data stays readable after it is unlinked until then.
//!
//! **Locks held.** The writer lock only for the rotation, each step's manifest write (as a
//! rotation does), the counts and sweeps of [`SWEEP_CHUNK`] keys; a shard's write lock for one
//! key of the switch, or to publish the file set. Nothing holds a lock for a whole step.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::crash_point;
use super::format::{
    decode_header, encode_seal, encode_set, verify_record, RecordKind, Version, FILE_MAGIC,
    HEADER_LEN, SEAL_RECORD_LEN,
};
use super::index::RecordPos;
use super::log_file::{FileMap, LogFile, SeqReader};
use super::manifest::{FileState, Fingerprint};
use super::reader::{Damage, LogReader, Step};
use super::recovery::COMPACTING_SUFFIX;
use super::writer::log_path;
use super::{Shared, SWEEP_CHUNK};
use crate::data_dir::sync_dir;
use crate::{KvsError, Result};

/// One live record moved by compaction: positions only, no key (24 bytes a record, one `Vec`
/// for a step). The switch reads each key back from the output.
#[derive(Clone, Copy)]
struct Moved {
    from: RecordPos,
    to: RecordPos,
}

/// A copy buffer larger than this is freed after its record (a large value is not held on to
/// for the rest of the compaction).
const KEEP_BUFFER_BYTES: usize = 4 << 20;

/// Runs one compaction of every file but the active one (see the module docs).
pub(super) fn compact(shared: &Shared) -> Result<()> {
    // One compaction at a time: the background thread and `KvStore::compact` both come here.
    let _running = shared
        .compaction_running
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let started = std::time::Instant::now();
    let bytes_before = shared.lock_writer().total_bytes();
    let step_records = shared.options.compaction_step_records.max(1);

    // 1. Rotate, reserving ids for the outputs (see `output_ids_needed`).
    flush_ahead_of_lock(shared)?;
    let replacing = Replacing(shared);
    let (old_ids, out_ids, from_index) = {
        let mut writer = shared.lock_writer();
        writer.check_usable()?;
        let last = writer.active_id();
        // An upper bound of the bytes the steps copy: they copy records the index points to
        // in files `<= last`, and every record the index points to is counted in
        // `total_bytes` (the sizes of the files) and not in `stale_bytes`, which counts only
        // records the index no longer points to (overwritten, removed, or copied by a
        // compaction after being overwritten), tombstones and seals. The index can only
        // move away from files `<= last` from here on: new writes go to the new active file.
        let live = writer.total_bytes().saturating_sub(writer.stale_bytes());
        // Version-1 records are copied re-encoded, 4 bytes longer each (a version-2 header is
        // 17 bytes, a version-1 one 13): at most a third longer, as every record is at least
        // 13 bytes. Unused ids are skipped.
        let live = live.saturating_add(live / 3);
        // Each step but the last copies `step_records` records, of keys the index holds now
        // (no key written from here on points into files `<= last`).
        let keys = shared.index.len();
        let steps = (keys / step_records) as u64 + 1;
        let outputs =
            output_ids_needed(live, writer.max_file_bytes(), steps).min(u32::MAX as u64 / 2) as u32;
        let new_id = last.checked_add(outputs + 1).ok_or_else(|| {
            KvsError::InvalidArgument("log file ids exhausted; copy the data to a new store".into())
        })?;
        // Before the rotation's manifest reaches the hinter: no hints for files about to go.
        replacing.mark(last);
        writer.rotate_to(new_id, &shared.files, &shared.index)?;
        // Each with the length it was sealed at, as the manifest lists it: the copy reads
        // that much, and a file found shorter is reported, not read as a shorter log.
        let (manifest, _) = writer.checkpoint_cut();
        let old: Vec<(u32, u64)> = shared
            .files
            .snapshot()
            .keys()
            .copied()
            .filter(|&id| id <= last)
            .map(|id| match manifest.files().get(&id) {
                Some(&FileState::Closed { len, .. }) => Ok((id, len)),
                _ => Err(KvsError::Io(std::io::Error::other(format!(
                    "{}: compaction found it not listed as closed in the manifest",
                    log_path(&shared.dir, id).display()
                )))),
            })
            .collect::<Result<_>>()?;
        // Every key fits in one step: list the live records from the index.
        (old, (last + 1)..new_id, keys <= step_records)
    };
    if old_ids.is_empty() {
        return Ok(());
    }
    let old_files = old_ids.len();

    // 2 to 5, step after step.
    let mut run = Run {
        shared,
        output: Output::new(shared, out_ids),
        step_records,
        moved: Vec::with_capacity(step_records.min(shared.index.len()).max(1)),
        read_through: Vec::new(),
        steps: 0,
        records: 0,
        written: 0,
    };
    let copied = if from_index {
        run.copy_from_index(&old_ids)
    } else {
        run.copy_all(&old_ids)
    };
    match copied {
        Ok(true) => {}
        Ok(false) => {
            // The store is closing: the files of the step under way are untouched, and the
            // steps done are committed.
            run.output.discard();
            return Ok(());
        }
        Err(e) => {
            run.output.discard();
            return Err(e);
        }
    }
    crash_point::hit("compaction:done");
    let bytes_after = shared.lock_writer().total_bytes();
    log::info!(
        "compacted {}: {} log files into {} ({} live records) in {} steps, {} bytes of log \
         before, {} after (writes meanwhile included), reclaimed {}, in {:.2} s",
        shared.dir.display(),
        old_files,
        run.written,
        run.records,
        run.steps,
        bytes_before,
        bytes_after,
        bytes_before.saturating_sub(bytes_after),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Marks the files a compaction replaces for the hinter (`Shared::replacing`), for as long
/// as the compaction runs, however it ends.
struct Replacing<'a>(&'a Shared);

impl Replacing<'_> {
    /// Files up to `last` are being replaced.
    fn mark(&self, last: u32) {
        self.0
            .replacing
            .store(u64::from(last) + 1, Ordering::SeqCst);
    }
}

impl Drop for Replacing<'_> {
    fn drop(&mut self) {
        self.0.replacing.store(0, Ordering::SeqCst);
    }
}

/// The state of one compaction going through its steps.
struct Run<'a> {
    shared: &'a Shared,
    output: Output<'a>,
    step_records: usize,
    /// The moves of the step under way, in log order.
    moved: Vec<Moved>,
    /// The old files the step under way has read to the end, oldest first.
    read_through: Vec<u32>,
    /// Totals for the log line.
    steps: u64,
    records: u64,
    written: usize,
}

impl Run<'_> {
    /// Goes through `old_ids`, oldest first, copying their live records and ending a step
    /// every `step_records` of them and after the last file. Returns `false` if the store
    /// started closing meanwhile (the step under way is not committed).
    fn copy_all(&mut self, old: &[(u32, u64)]) -> Result<bool> {
        let shared = self.shared;
        let mut reencoded = Vec::new();
        for &(id, len) in old {
            let path = log_path(&shared.dir, id);
            // Held for this file only: once a step has deleted it, nothing of compaction's
            // keeps its space.
            let Some(log_file) = shared.files.snapshot().get(&id).cloned() else {
                return Err(KvsError::Io(std::io::Error::other(format!(
                    "{}: compaction found it no longer open",
                    path.display()
                ))));
            };
            // Records are checked and listed through one descriptor, and the live ones read
            // again, to be copied, through another, in chunks: each is read once from disk.
            let file = File::open(&path).map_err(|e| KvsError::io_at(&path, e))?;
            let mut bytes = SeqReader::new(&log_file, &path);
            let mut reader = match LogReader::open(&file, len) {
                Ok(Ok(reader)) => reader,
                Ok(Err(damage)) => return Err(damaged(&file, &path, len, damage)),
                Err(e) => return Err(KvsError::io_at(&path, e)),
            };
            loop {
                if shared.closing.load(Ordering::SeqCst) {
                    return Ok(false);
                }
                let step = reader.next().map_err(|e| KvsError::io_at(&path, e))?;
                match step {
                    Step::End => break,
                    Step::Damage(damage) => return Err(damaged(&file, &path, len, damage)),
                    Step::Record(record) => {
                        if record.kind == RecordKind::Set {
                            let pos = record_pos(id, record.offset, record.len);
                            self.copy_if_live(&mut bytes, record.key, pos, &mut reencoded)?;
                        }
                    }
                    Step::Batch(batch) => {
                        for member in batch.members {
                            if member.kind == RecordKind::Set {
                                let pos = record_pos(id, member.offset, member.len);
                                self.copy_if_live(&mut bytes, &member.key, pos, &mut reencoded)?;
                            }
                        }
                    }
                }
            }
            self.read_through.push(id);
        }
        self.end_step()?;
        Ok(true)
    }

    /// The copy of step 2 for a store whose keys all fit in one step: the live records of the
    /// old files are listed from the index (what the index points at in them) instead of by
    /// reading those files through, and copied in log order, each read and checked on its own.
    /// What this costs grows with the live records, not with the bytes of the old files: a
    /// small set of keys overwritten without end (counters, sessions, a cache) leaves files
    /// that are nearly all stale, which the other way reads to the end, record by record, to
    /// find the few records still live. Ends with the one step, which deletes every old file.
    /// Returns `false` if the store started closing meanwhile.
    ///
    /// The moves are those the other way would find: a record in an old file is live exactly
    /// when the index points at it (old files are immutable, and nothing written since the
    /// rotation points into them), and what is overwritten or removed between the listing
    /// and the switch keeps its newer position, as in a step of the other way. Records no key
    /// points at are not read, so damage in them is not reported; they are deleted with their
    /// files.
    fn copy_from_index(&mut self, old: &[(u32, u64)]) -> Result<bool> {
        let shared = self.shared;
        let sealed: BTreeMap<u32, u64> = old.iter().copied().collect();
        let mut live = Vec::new();
        shared.index.for_each(|_, pos| {
            if sealed.contains_key(&pos.file) {
                live.push(pos);
            }
        });
        live.sort_unstable_by_key(|pos| (pos.file, pos.offset));
        let mut file: Option<(u32, File)> = None;
        let mut record = Vec::new();
        let mut reencoded = Vec::new();
        for pos in live {
            if shared.closing.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let end = pos.offset as u64 + pos.len as u64;
            if sealed.get(&pos.file).is_none_or(|&len| end > len) {
                return Err(corruption(
                    shared,
                    pos,
                    "the index points past the length the file was sealed at".into(),
                ));
            }
            let file = match &mut file {
                Some((id, file)) if *id == pos.file => file,
                slot => {
                    let path = log_path(&shared.dir, pos.file);
                    let opened = File::open(&path).map_err(|e| KvsError::io_at(&path, e))?;
                    &mut slot.insert((pos.file, opened)).1
                }
            };
            record.resize(pos.len as usize, 0);
            file.read_exact_at(&mut record, pos.offset as u64)
                .map_err(|e| read_error(shared, pos, e))?;
            self.copy_record(pos, &record, &mut reencoded)?;
            if record.capacity() > KEEP_BUFFER_BYTES {
                record = Vec::new();
            }
        }
        self.read_through = old.iter().map(|&(id, _)| id).collect();
        self.end_step()?;
        Ok(true)
    }

    /// Copies the set record of `key` at `pos` (read through `bytes`) to the output if the
    /// index points at it, and ends the step once it holds `step_records` moves.
    fn copy_if_live(
        &mut self,
        bytes: &mut SeqReader<'_>,
        key: &[u8],
        pos: RecordPos,
        reencoded: &mut Vec<u8>,
    ) -> Result<()> {
        // An expired key is absent here: it is not copied (see `sweep_after_copy`).
        if self.shared.index.position(key) != Some(pos) {
            return Ok(());
        }
        let shared = self.shared;
        let record = bytes
            .read(pos.offset as u64, pos.len as usize)
            .map_err(|e| read_error(shared, pos, e))?;
        // Checked again: these bytes were read apart from the ones the reader checked.
        self.copy_record(pos, record, reencoded)
    }

    /// Copies `record`, the bytes of the live set record at `pos`, to the output once its
    /// checksums hold, notes its move, and ends the step once it holds `step_records` moves.
    fn copy_record(
        &mut self,
        pos: RecordPos,
        record: &[u8],
        reencoded: &mut Vec<u8>,
    ) -> Result<()> {
        let shared = self.shared;
        let header = verify_record(record).map_err(|e| corruption(shared, pos, e.to_string()))?;
        let to = match header.version {
            Version::V2 => self.output.append(record)?,
            Version::V1 => {
                // Version 1 has no deadlines: the key has none.
                reencoded.clear();
                let key = &record[header.key_start()..header.value_start()];
                encode_set(reencoded, key, &record[header.value_start()..], None);
                self.output.append(reencoded)?
            }
        };
        if reencoded.capacity() > KEEP_BUFFER_BYTES {
            *reencoded = Vec::new();
        }
        self.moved.push(Moved { from: pos, to });
        if self.moved.len() >= self.step_records {
            self.end_step()?;
        }
        Ok(())
    }

    /// Steps 3 to 5 for the step under way: commits its outputs and the files it read to the
    /// end, switches the index for its moves, and deletes those files.
    fn end_step(&mut self) -> Result<()> {
        let shared = self.shared;
        if self.moved.is_empty() && self.read_through.is_empty() {
            return Ok(());
        }
        // Every key the copy did not list because it had expired is due by now (see
        // `sweep_after_copy`).
        let listed_by = crate::now_millis();

        // 3. Commit: the outputs replace the files read to the end from here on.
        let written = self.output.commit(&self.read_through)?;
        crash_point::hit("compaction:committed");

        // 4. Switch the index, and take out the expired keys the copy left behind.
        let stale = switch_index(shared, &self.moved)?;
        sweep_after_copy(shared, listed_by)?;
        {
            let mut writer = shared.lock_writer();
            for &(id, size) in &written {
                writer.add_file(id, size);
            }
            for (id, stale) in stale {
                writer.add_stale(id, stale);
            }
            for id in &self.read_through {
                writer.forget_file(*id);
            }
        }

        // 5. Delete, oldest first.
        if !self.read_through.is_empty() {
            // After this no shard's file map holds them: reads that found them have ended.
            shared.files.update(&shared.index, |files| {
                for id in &self.read_through {
                    files.remove(id);
                }
            });
            for id in &self.read_through {
                let path = log_path(&shared.dir, *id);
                fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
                crash_point::hit("compaction:deleted-one");
            }
            sync_dir(&shared.dir)?;
            // Gone: the next manifest written no longer lists them.
            shared.lock_writer().forget_obsolete(&self.read_through);
        }
        crash_point::hit("compaction:step-done");
        self.steps += 1;
        self.records += self.moved.len() as u64;
        self.written += written.len();
        self.moved.clear();
        self.read_through.clear();
        Ok(())
    }
}

/// The error for `damage` found reading the old file `file` (at `path`), sealed at `len`
/// bytes. A file shorter than that was cut behind the store's back: that is what it says.
fn damaged(file: &File, path: &Path, len: u64, damage: Damage) -> KvsError {
    let now = file.metadata().map(|m| m.len()).unwrap_or(len);
    let reason = if now < len {
        format!(
            "file ends before the record: it is {now} bytes, it was sealed at {len} (was it cut \
             short by another program?)"
        )
    } else {
        damage.to_string()
    };
    KvsError::Corruption {
        path: path.to_path_buf(),
        offset: damage.offset(),
        reason,
    }
}

/// Makes what writers have appended so far durable, and the directory, before a manifest
/// write or a rotation under the writer lock. Their fsyncs then have little else to push
/// out with them (on ext4, the journal commit of an fsync also writes out the data of files
/// that grew, here the active file's), so writers wait for the manifest write alone: measured
/// on a store of 10M keys with a writer overwriting keys beside the compaction, a step's
/// commit held the writer lock for 10 ms to 1.3 s without this. A failed fsync poisons the
/// writer, as the group commit does (see `durability.rs`).
fn flush_ahead_of_lock(shared: &Shared) -> Result<()> {
    let (_, end) = shared.lock_writer().sync_target();
    shared.wait_durable(end)?;
    sync_dir(&shared.dir)
}

/// The position of a record of `len` bytes at `offset` in file `id`.
fn record_pos(id: u32, offset: u64, len: usize) -> RecordPos {
    RecordPos {
        file: id,
        // Both fit: offsets stay under max_file_bytes (<= 1 GiB), records under 4 GiB.
        offset: offset as u32,
        len: len as u32,
    }
}

/// How many output files the steps may need, all together, to copy `live` bytes of records
/// (an upper bound) into files of at most `max_file_bytes` each, in at most `steps` steps.
///
/// [`Output::append`] starts a new file only when the current one holds at least one record
/// and the next record would take it past `max_file_bytes`, and each step starts a new file.
/// Let `D = max_file_bytes - FILE_MAGIC.len()` (the room for records in a file), and take one
/// step that writes `F` files holding `live_s` bytes of records, `R_j` in file `j`. For `j <
/// F`, file `j + 1` was started because `R_j + r > D`, where `r` is the first record of file
/// `j + 1`, so `R_j + R_{j+1} >= R_j + r > D`: any two consecutive files hold more than `D`
/// bytes of records together. The pairs (1, 2), (3, 4), ... are `floor(F / 2)` disjoint such
/// pairs, so `live_s > floor(F / 2) * D`, hence `floor(F / 2) <= live_s / D` (integer
/// division) and `F <= 2 * (live_s / D) + 1`. Summed over the steps (the `live_s` add up to
/// at most `live`, and a sum of integer quotients is at most the quotient of the sum):
/// `2 * (live / D) + steps`.
///
/// The bound is tight up to one file a step: records of just over `D / 2` bytes take a file
/// each, so a step's `F` approaches `2 * live_s / D`. It does not assume files end up nearly
/// full, which failed every compaction of a log of such records ("outgrew its reserved file
/// ids") after it had rewritten all live data, so the log was never reclaimed. Unused ids are
/// simply skipped.
fn output_ids_needed(live: u64, max_file_bytes: u64, steps: u64) -> u64 {
    // `max_file_bytes` is at least 4 KiB (see `LogWriter::new`): `room` is never 0.
    let room = max_file_bytes
        .saturating_sub(FILE_MAGIC.len() as u64)
        .max(1);
    (2 * (live / room)).saturating_add(steps)
}

/// Part of step 4: removes from the index every key whose deadline is `listed_by` or earlier
/// (counting its record stale), as the sweep does (see `mod.rs`). The copy left out keys
/// that had expired: such a key may still point into a file about to be deleted, and must be
/// gone from the index first. Its record carries its deadline, so no replay brings it back.
/// (The clock read after the copy is at least every reading taken during it, unless the
/// system clock was set back meanwhile.)
fn sweep_after_copy(shared: &Shared, listed_by: u64) -> Result<()> {
    let now = crate::now_millis().max(listed_by);
    // Not `sweep_all`: it stops when the store starts closing, and these keys must go before
    // their files are deleted.
    while shared.sweep_chunk(now)? == SWEEP_CHUNK {}
    Ok(())
}

/// Step 4: points every key that still has the position compaction copied it from to its
/// copy, one key per hold of its shard's lock. Returns, per file, the bytes that became
/// stale: the copy, in its output, where the key was overwritten or removed during the copy;
/// the original, in its old file, where the key moved (that file may outlive the step, if
/// the step stopped in it).
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
        let (now_stale, len) =
            if shared
                .index
                .replace_if(&record[header.key_start()..], m.from, m.to)
            {
                (m.from.file, m.from.len)
            } else {
                (m.to.file, m.to.len)
            };
        *stale.entry(now_stale).or_insert(0) += len as u64;
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

/// The error of a failed read of the record at `pos`: a file that ends before it is corrupt.
fn read_error(shared: &Shared, pos: RecordPos, e: std::io::Error) -> KvsError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            corruption(shared, pos, "file ends before the record".into())
        }
        _ => KvsError::io_at(log_path(&shared.dir, pos.file), e),
    }
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
    /// The most bytes an output file may hold (the store's file size).
    max_file_bytes: u64,
    current: Option<(u32, BufWriter<File>, u64)>,
    /// The fingerprint of the records of `current` (see `manifest.rs`).
    fingerprint: Fingerprint,
    /// Finished (synced) files: id, size and fingerprint.
    done: Vec<(u32, u64, u32)>,
}

impl<'a> Output<'a> {
    fn new(shared: &'a Shared, ids: std::ops::Range<u32>) -> Output<'a> {
        let max_file_bytes = shared.lock_writer().max_file_bytes();
        Output {
            shared,
            ids,
            max_file_bytes,
            current: None,
            fingerprint: Fingerprint::default(),
            done: Vec::new(),
        }
    }

    fn tmp_path(&self, id: u32) -> PathBuf {
        self.shared.dir.join(format!("{id}{COMPACTING_SUFFIX}"))
    }

    fn append(&mut self, record: &[u8]) -> Result<RecordPos> {
        let max = self.max_file_bytes;
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
    /// The next step's outputs start afresh: the files committed are no longer this output's
    /// to discard.
    fn commit(&mut self, replaced: &[u32]) -> Result<Vec<(u32, u64)>> {
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
        flush_ahead_of_lock(self.shared)?;
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
            } else {
                // The manifest may list them: they are the store's, no later discard may
                // remove them (reopening decides).
                self.done.clear();
            }
            return Err(e);
        }
        // From here on the outputs are the store's: nothing discards them.
        let done = std::mem::take(&mut self.done);
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
        Ok(done.into_iter().map(|(id, size, _)| (id, size)).collect())
    }

    /// Removes every file written since the last commit (compaction gave up before
    /// committing them).
    fn discard(&mut self) {
        if let Some((id, _, _)) = self.current.take() {
            let _ = fs::remove_file(self.tmp_path(id));
        }
        for (id, _, _) in std::mem::take(&mut self.done) {
            let _ = fs::remove_file(self.tmp_path(id));
        }
    }
}
