//! Online checkpoints of a [`KvStore`](super::KvStore): a consistent copy of a live store.
//!
//! The copy is an ordinary store (no format of its own: `MANIFEST`, `<id>.log` files, the
//! `engine` file), holding exactly the writes appended before one point, the **cut**:
//!
//! 1. Compaction is held off for the whole checkpoint (`compaction_running`; a compaction in
//!    progress is waited for), so that no file the cut lists is deleted or renamed meanwhile.
//! 2. **Cut**, under the writer lock: the manifest as the writer has it (the closed files with
//!    their lengths and fingerprints, and the active file) and the end of the last record
//!    appended to the active file. The lock is held only for this (a copy of the manifest,
//!    a few hundred bytes for a store of tens of files): writers wait microseconds, not for
//!    the copy. A write acknowledged before the checkpoint started was appended before the
//!    cut, so it is in the copy; a write appended after the cut is not, and every write in
//!    the copy was appended (so issued) before the call returned. Appends are serialized, so
//!    the copy is a prefix of the log: never a later write without an earlier one.
//! 3. **Closed files** never change once sealed (see `format.rs`, `manifest.rs`): each is
//!    hard-linked into the copy, or copied (its listed length) where a link cannot be made
//!    (another file system, a file system without links). The copy and the source then share
//!    the file, which neither writes again; either may delete its own link (compaction).
//! 4. **The active file** is copied up to the cut, and becomes the copy's active file: the
//!    source goes on appending past the cut (and, with [`SyncPolicy::Always`](super::SyncPolicy),
//!    may have extended the file ahead with zeros), but the bytes before the cut never change
//!    (the writer only ever cuts the file back to its last record, which is at or past the
//!    cut). The copy's newest file is thus a valid active file, unsealed, ending at its last
//!    record, as after a clean close; its first write appends after it.
//! 5. The copy's `MANIFEST` lists the closed files as the cut had them and the copied active
//!    file as active (obsolete files, still awaiting deletion after a failed compaction, are
//!    left out); every copied file is fsynced, then the `MANIFEST`, the `engine` file and the
//!    directory.
//!
//! Opening the copy checks every closed file's length and fingerprint against its `MANIFEST`,
//! as for any store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use super::manifest::{self, FileState, Manifest};
use super::recovery::COMPACTING_SUFFIX;
use super::writer::log_path;
use super::Shared;
use crate::data_dir::{self, EngineKind};
use crate::{KvsError, Result};

/// Writes the checkpoint of the store into `dest`, an empty directory the caller holds.
pub(super) fn checkpoint(shared: &Shared, dest: &Path) -> Result<()> {
    // 1. No compaction until the files are linked and copied.
    let _no_compaction = shared
        .compaction_running
        .lock()
        .unwrap_or_else(|p| p.into_inner());

    // 2. The cut.
    let (cut_manifest, end) = {
        let writer = shared.lock_writer();
        writer.check_usable()?;
        writer.checkpoint_cut()
    };

    // 3. The closed files.
    let mut copy = Manifest::default();
    for (&id, state) in cut_manifest.files() {
        if let FileState::Closed { len, fingerprint } = *state {
            link_or_copy(&shared.dir, id, len, dest)?;
            copy.set_closed(id, len, fingerprint);
        }
    }

    // 4. The active file, up to the cut.
    let from = log_path(&shared.dir, end.file);
    let to = log_path(dest, end.file);
    copy_prefix(&from, &to, end.offset)?;
    copy.set_active(end.file);

    // 5. The manifest, the engine, the directory.
    manifest::replace(dest, &copy)?;
    data_dir::record_engine(dest, EngineKind::Kvs)?;
    data_dir::sync_dir(dest)
}

/// Puts closed file `id` (`len` bytes) of `dir` into `dest`: a hard link, or a copy where
/// the link cannot be made.
fn link_or_copy(dir: &Path, id: u32, len: u64, dest: &Path) -> Result<()> {
    let to = log_path(dest, id);
    let mut from = log_path(dir, id);
    if !from.exists() {
        // A compaction that failed between its commit and its rename left its output under
        // the temporary name (open of the store would finish the rename).
        let compacting = dir.join(format!("{id}{COMPACTING_SUFFIX}"));
        if compacting.exists() {
            from = compacting;
        }
    }
    match fs::hard_link(&from, &to) {
        Ok(()) => Ok(()),
        Err(e) if cannot_link(&e) => copy_prefix(&from, &to, len),
        Err(e) => Err(KvsError::io_at(&from, e)),
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

/// Copies the first `len` bytes of `from` into a new file `to`, and fsyncs it.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<()> {
    let source = File::open(from).map_err(|e| KvsError::io_at(from, e))?;
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| KvsError::io_at(to, e))?;
    let copied = io::copy(&mut source.take(len), &mut target).map_err(|e| {
        // Which side failed is not known: name both.
        KvsError::io_at(
            to,
            io::Error::new(
                e.kind(),
                format!("copying from {}: {e}", from.display()),
            ),
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
