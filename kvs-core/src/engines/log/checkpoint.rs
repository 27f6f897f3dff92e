//! Online checkpoints of a [`KvStore`](super::KvStore): a consistent copy of a live store.
//!
//! The copy is an ordinary store (no format of its own: `MANIFEST`, `<id>.log` files, the
//! `engine` file), holding exactly the writes appended before one point, the **cut**:
//!
//! 1. **Cut**, under the writer lock: the manifest as the writer has it (the closed files with
//!    their lengths and fingerprints, and the active file) and the end of the last record
//!    appended to the active file. A write acknowledged before the checkpoint started was
//!    appended before the cut, so it is in the copy; a write appended after the cut is not,
//!    and every write in the copy was appended (so issued) before the call returned. Appends
//!    are serialized, so the copy is a prefix of the log: never a later write without an
//!    earlier one.
//! 2. **Closed files**, still under the writer lock: they never change once sealed (see
//!    `format.rs`, `manifest.rs`), so each is hard-linked into the copy. Where a link cannot
//!    be made (another file system, a file system without links) the file is opened instead,
//!    and copied (its listed length) after the lock is released. Doing this under the lock is
//!    what keeps compaction from deleting them first: a closed file the cut lists is deleted
//!    only after a later compaction commit has listed it obsolete, and that commit needs the
//!    writer lock. (A compaction that committed before the cut may still be renaming its
//!    outputs from `<id>.log.compacting` to `<id>.log`: either name is taken, whichever is
//!    there.) Compaction is never waited for: a checkpoint does not depend on how busy it is.
//!    Writers wait for one `link` per closed file, and one `open`: measured (ext4, a busy
//!    2-core machine) 35 µs for 2 closed files, 0.3-4 ms for 20-100, 11 ms for 670 (about
//!    16 µs a link). Stores with files of the default size have few files.
//! 3. **The active file** is opened under the lock too (the descriptor keeps its bytes
//!    readable even if a compaction deletes the file meanwhile), then, with writers going on,
//!    copied up to the cut, and becomes the copy's active file. The source goes on appending
//!    past the cut (and, with [`SyncPolicy::Always`](super::SyncPolicy), may have extended the
//!    file ahead with zeros), but the bytes before the cut never change (the writer only ever
//!    cuts the file back to its last record, which is at or past the cut). The copy's newest
//!    file is thus a valid active file, unsealed, ending at its last record, as after a clean
//!    close; its first write appends after it.
//!    Once the lock is released, a linked closed file's hint (`hint.rs`) is linked too, so
//!    that the copy opens from it (its `<id>.log` is the same inode).
//! 4. The copy's `MANIFEST` lists the closed files as the cut had them and the copied active
//!    file as active (obsolete files, awaiting deletion, are left out); every copied file is
//!    fsynced (linked ones are the source's sealed files, already synced), then the
//!    `MANIFEST`, the `engine` file and the directory.
//!
//! Opening the copy checks every closed file's length and fingerprint against its `MANIFEST`,
//! as for any store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::hint::hint_path;
use super::manifest::{self, FileState, Manifest};
use super::recovery::COMPACTING_SUFFIX;
use super::writer::log_path;
use super::Shared;
use crate::data_dir::{self, EngineKind};
use crate::{KvsError, Result};

/// Writes the checkpoint of the store into `dest`, an empty directory the caller holds.
pub(super) fn checkpoint(shared: &Shared, dest: &Path) -> Result<()> {
    // 1-3. The cut, the links, and the files to copy, under the writer lock.
    let (copy, to_copy, linked) = {
        let writer = shared.lock_writer();
        let locked = Instant::now();
        writer.check_usable()?;
        let (cut_manifest, end) = writer.checkpoint_cut();
        let mut copy = Manifest::default();
        let mut to_copy = Vec::new();
        let mut linked = Vec::new();
        for (&id, state) in cut_manifest.files() {
            if let FileState::Closed { len, fingerprint } = *state {
                match link_closed(&shared.dir, id, dest)? {
                    Some(file) => to_copy.push((file, id, len)),
                    None => linked.push(id),
                }
                copy.set_closed(id, len, fingerprint);
            }
        }
        let active = log_path(&shared.dir, end.file);
        let file = File::open(&active).map_err(|e| KvsError::io_at(&active, e))?;
        to_copy.push(((file, active), end.file, end.offset));
        copy.set_active(end.file);
        log::debug!(
            "checkpoint of {}: writes held {:?} for the cut and {} closed files",
            shared.dir.display(),
            locked.elapsed(),
            copy.files().len() - 1
        );
        (copy, to_copy, linked)
    };
    // After the lock: a hint is of one file for good (ids are never reused), and if
    // compaction deleted it meanwhile, the copy's first open replays that file.
    for id in linked {
        link_hint(&shared.dir, id, dest);
    }
    for ((file, from), id, len) in to_copy {
        copy_prefix(file, &from, &log_path(dest, id), len)?;
    }

    // 4. The manifest, the engine, the directory.
    manifest::replace(dest, &copy)?;
    data_dir::record_engine(dest, EngineKind::Kvs)?;
    data_dir::sync_dir(dest)
}

/// Hard-links closed file `id` of `dir` into `dest`; where no link can be made, opens it and
/// returns it (with its path) to be copied. Called under the writer lock (see the module docs).
fn link_closed(dir: &Path, id: u32, dest: &Path) -> Result<Option<(File, PathBuf)>> {
    let to = log_path(dest, id);
    let named = log_path(dir, id);
    let compacting = dir.join(format!("{id}{COMPACTING_SUFFIX}"));
    // The file is `<id>.log`, or a compaction output being renamed from `.compacting` to it
    // (one way only): one of the three attempts finds it.
    for from in [&named, &compacting] {
        match link_or_open(from, &to) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            found => return found.map_err(|e| KvsError::io_at(from, e)),
        }
    }
    link_or_open(&named, &to).map_err(|e| KvsError::io_at(&named, e))
}

/// Hard-links the hint of closed file `id`, if it has one, beside its linked log file in
/// `dest`: the copy's `<id>.log` is the same inode, so the hint serves the copy's first open
/// too (see `hint.rs`). A hint is advisory: if there is none, or no link can be made, the
/// copy's first open replays the file and writes it.
fn link_hint(dir: &Path, id: u32, dest: &Path) {
    let _ = fs::hard_link(hint_path(dir, id), hint_path(dest, id));
}

/// Links `from` as `to`: `None` when linked, the opened file where no link can be made.
fn link_or_open(from: &Path, to: &Path) -> io::Result<Option<(File, PathBuf)>> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(None),
        Err(e) if cannot_link(&e) => Ok(Some((File::open(from)?, from.to_path_buf()))),
        Err(e) => Err(e),
    }
}

/// Whether a failed `link` means "no link possible here" (a copy will do) rather than a
/// problem with the file.
fn cannot_link(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV) | Some(libc::EPERM) | Some(libc::EMLINK) | Some(libc::EOPNOTSUPP)
    )
}

/// Copies the first `len` bytes of `source` (the file at `from`) into a new file `to`, and
/// fsyncs it.
fn copy_prefix(source: File, from: &Path, to: &Path, len: u64) -> Result<()> {
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| KvsError::io_at(to, e))?;
    let copied = io::copy(&mut source.take(len), &mut target).map_err(|e| {
        // Which side failed is not known: name both.
        KvsError::io_at(
            to,
            io::Error::new(e.kind(), format!("copying from {}: {e}", from.display())),
        )
    })?;
    if copied != len {
        return Err(KvsError::Corruption {
            path: from.to_path_buf(),
            offset: copied,
            reason: format!(
                "the file ends at {copied} bytes, but the store's records go on to {len}"
            ),
        });
    }
    target.sync_all().map_err(|e| KvsError::io_at(to, e))
}
