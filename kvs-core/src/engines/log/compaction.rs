//! Compaction: rewriting the live records of the log into one new file and deleting the old
//! files.
//!
//! The steps, and why a crash at any point leaves a store that opens correctly:
//!
//! 1. **Rotate** (under the writer lock): with `A` the active file, writes move on to a new
//!    file `A+2`. Files `<= A` are now immutable; `A+1` is reserved for the output, so that on
//!    replay it sorts after everything it replaces and before everything written since.
//! 2. **Copy** every live record that sits in a file `<= A` into `A+1.log.compacting`,
//!    checking each record's checksum on the way. Writers and readers carry on meanwhile.
//!    A crash here leaves a `.compacting` file, which open deletes: the old files are intact.
//! 3. **Sync** the output and **rename** it to `A+1.log`, then sync the directory. The rename is
//!    the commit point. A crash after it leaves old files and output side by side; replay
//!    reads the output after the old files, and both agree on every live key.
//! 4. **Switch** the index entries that still point where the copy was taken from. An entry
//!    overwritten or removed meanwhile keeps its newer position (in a file `>= A+2`).
//! 5. **Delete** the old files, oldest first, then sync the directory. Oldest first matters: at
//!    any moment the surviving old files are the newest ones, so a tombstone can never be
//!    deleted while an older value of its key survives, and no removed key comes back.
//!
//! Readers that located a record in an old file before step 4 hold an `Arc<File>` of it, so
//! their read succeeds even after the file is unlinked in step 5.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::format::FILE_MAGIC;
use super::index::RecordPos;
use super::recovery::COMPACTING_SUFFIX;
use super::writer::{create_log, log_path};
use super::Shared;
use crate::data_dir::sync_dir;
use crate::{KvsError, Result};

/// One live record moved by compaction.
struct Moved {
    key: Box<[u8]>,
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

    // 1. Rotate.
    let (old_ids, out_id) = {
        let mut writer = shared.lock_writer();
        writer.check_usable()?;
        let last = writer.active_id();
        let (out_id, new_id) = match last.checked_add(2) {
            Some(new_id) => (last + 1, new_id),
            None => {
                return Err(KvsError::InvalidArgument(
                    "log file ids exhausted; copy the data to a new store".into(),
                ))
            }
        };
        let new_file = create_log(&shared.dir, new_id)?;
        sync_dir(&shared.dir)?;
        shared.write_files().insert(new_id, Arc::clone(&new_file));
        writer.switch_to(new_id, new_file);
        let old_ids: Vec<u32> = shared
            .read_files()
            .keys()
            .copied()
            .filter(|&id| id <= last)
            .collect();
        (old_ids, out_id)
    };
    let Some(&last_old) = old_ids.last() else {
        return Ok(());
    };

    // 2. Copy.
    let tmp_path = shared.dir.join(format!("{out_id}{COMPACTING_SUFFIX}"));
    let out_path = log_path(&shared.dir, out_id);
    let copied = match copy_live_records(shared, last_old, out_id, &tmp_path) {
        Ok(Some(copied)) => copied,
        Ok(None) => {
            // The store is closing; the old files are untouched.
            let _ = fs::remove_file(&tmp_path);
            return Ok(());
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    let (moved, out_size) = copied;

    // 3. Commit: the output replaces the old files from here on.
    fs::rename(&tmp_path, &out_path).map_err(|e| KvsError::io_at(&out_path, e))?;
    sync_dir(&shared.dir)?;
    let out_file = File::open(&out_path).map_err(|e| KvsError::io_at(&out_path, e))?;
    shared.write_files().insert(out_id, Arc::new(out_file));

    // 4. Switch the index.
    let mut stale_in_out = 0u64;
    for m in &moved {
        let mut shard = shared.index.write(&m.key);
        match shard.get_mut(&m.key) {
            Some(pos) if *pos == m.from => *pos = m.to,
            _ => stale_in_out += m.to.len as u64,
        }
    }
    {
        let mut writer = shared.lock_writer();
        writer.add_file(out_id, out_size);
        writer.add_stale(out_id, stale_in_out);
        for id in &old_ids {
            writer.forget_file(*id);
        }
    }

    // 5. Delete, oldest first.
    {
        let mut files = shared.write_files();
        for id in &old_ids {
            files.remove(id);
        }
    }
    for id in &old_ids {
        let path = log_path(&shared.dir, *id);
        fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
    }
    sync_dir(&shared.dir)?;
    log::debug!(
        "compacted {} files of {} into {out_id}.log ({} live records, {out_size} bytes)",
        old_ids.len(),
        shared.dir.display(),
        moved.len()
    );
    Ok(())
}

/// Step 2: writes every live record in files `<= last_old` to `tmp_path`, synced.
/// Returns `None` if the store started closing meanwhile.
fn copy_live_records(
    shared: &Shared,
    last_old: u32,
    out_id: u32,
    tmp_path: &std::path::Path,
) -> Result<Option<(Vec<Moved>, u64)>> {
    let io_err = |e| KvsError::io_at(tmp_path, e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp_path)
        .map_err(io_err)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&FILE_MAGIC).map_err(io_err)?;
    let mut offset = FILE_MAGIC.len() as u64;

    let mut live: Vec<(Box<[u8]>, RecordPos)> = Vec::new();
    shared.index.for_each_shard(|shard| {
        live.extend(
            shard
                .iter()
                .filter(|(_, pos)| pos.file <= last_old)
                .map(|(k, pos)| (k.clone(), *pos)),
        )
    });
    // Copy in log order: sequential reads of the old files, and the output keeps the order.
    live.sort_unstable_by_key(|(_, pos)| (pos.file, pos.offset));

    let files: Vec<(u32, Arc<File>)> = shared
        .read_files()
        .range(..=last_old)
        .map(|(id, f)| (*id, Arc::clone(f)))
        .collect();
    let mut moved = Vec::with_capacity(live.len());
    for (key, from) in live {
        if shared.closing.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let Some((_, file)) = files.iter().find(|(id, _)| *id == from.file) else {
            return Err(KvsError::Corruption {
                path: log_path(&shared.dir, from.file),
                offset: from.offset,
                reason: "the index points into a log file that is not open".into(),
            });
        };
        let record = shared.read_record(file, from)?;
        out.write_all(&record).map_err(io_err)?;
        let to = RecordPos {
            file: out_id,
            len: from.len,
            offset,
        };
        offset += from.len as u64;
        moved.push(Moved { key, from, to });
    }
    let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok(Some((moved, offset)))
}
