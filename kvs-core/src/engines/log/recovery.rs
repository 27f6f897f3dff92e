//! Opening a `kvs` log: finding its files, replaying every one into the index, and deciding
//! what a bad record means.
//!
//! The files are those the `MANIFEST` lists (see `manifest.rs` for what open checks against
//! it and does with the files it does not list); a store without one (written by release
//! 0.1.0, or a new directory) is made of the canonical `<id>.log` files in its directory.
//!
//! A record that fails its checks (see `format.rs`) is handled by where it sits:
//! - in the newest file, when it is the record that was being written when the process died,
//!   it is a **torn tail**. With [`RecoveryMode::TolerateTornTail`] (the default) the file is
//!   cut back to the end of the last good record, with a warning; every earlier record survives.
//!   With [`RecoveryMode::Strict`] open fails instead.
//! - anywhere else it is **corruption**: open fails with [`KvsError::Corruption`] naming the file
//!   and offset, and nothing is changed on disk.
//!
//! Zeros from the bad record's offset to the end of the newest file are not a record at all:
//! the file was extended ahead of its records (`SyncPolicy::Always`, see `writer.rs`). They are
//! cut off in either mode.
//!
//! # Torn tail or corruption
//!
//! Each record is written with one `pwrite`, header first, at the end of the newest file; a
//! crash leaves a prefix of it, followed by nothing or (file extended ahead) by zeros. So after
//! a crash nothing valid starts after the end of the record being written, while the bytes
//! *inside* it are its key and value, which may hold anything, kvs records included (a value
//! may be a copy of a log file). What the bad record's header says decides where to look:
//! - The header decodes (kind and lengths in range) and declares an extent
//!   `[offset, offset + record_len)` that runs past the end of the file: the record was being
//!   written. A torn tail, whatever its size: values may be up to `MAX_VALUE_LEN` (512 MiB).
//! - The header decodes and the extent lies inside the file, but the checksum fails: a partial
//!   write into a file extended ahead. A torn tail only if no valid record starts at or after
//!   the end of the extent; otherwise corruption.
//! - The header does not decode (or fewer bytes than a header are left): garbage of unknown
//!   length. A torn tail only if no valid record starts anywhere after its first byte.
//!
//! The scan for a valid record has no size limit and does not hold the rest of the file: it
//! reads chunks, and checks a candidate's checksum by reading its extent in chunks too. A file
//! crafted to be full of bytes that decode as headers makes it slow, never wrong.
//!
//! Replay itself reads each record through a window of a few MiB, its checksum computed on the
//! way, so a 512 MiB value is not held in memory to be checked.
//!
//! **The blind spot** of format version 1: nothing checks a header before the record it
//! declares is read. A bit flip in a length field of one of the last records of the newest file
//! (those within one maximum record length of its end) that declares an extent running past
//! the end of the file, or over every record after it, is indistinguishable from a torn write
//! of that record: it is cut off with the records its extent covers, with a warning, where a
//! perfect check would refuse to open. A future format version with a checksum over the header
//! closes it. A flip anywhere else fails the record's checksum: corruption if any record
//! follows it, a torn tail (that record lost, nothing else) if it is the last.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{decode_header, RecordKind, FILE_MAGIC, HEADER_LEN, SEAL_VALUE_LEN};
use super::index::{Index, RecordPos};
use super::manifest::{
    self, parse_id, FileState, Fingerprint, Manifest, MANIFEST_FILE, MANIFEST_TMP,
};
use super::writer::log_path;
use super::RecoveryMode;
use crate::data_dir::{sync_dir, ENGINE_FILE, LOCK_FILE};
use crate::{KvsError, Result};

/// Suffix of a compaction output not yet renamed into place. Open renames it if the manifest
/// lists it (its compaction committed) and deletes it otherwise.
pub const COMPACTING_SUFFIX: &str = ".log.compacting";

/// What replay learned besides the index.
pub struct Recovered {
    /// Ids of the log files, oldest first.
    pub ids: Vec<u32>,
    pub sizes: BTreeMap<u32, u64>,
    pub stale: BTreeMap<u32, u64>,
    /// The fingerprint of each file's records (see `manifest.rs`), as replayed.
    pub fingerprints: BTreeMap<u32, u32>,
    /// The store's manifest, obsolete files dropped (they are deleted); `None` if the store had
    /// none, and the caller writes one.
    pub manifest: Option<Manifest>,
}

/// Finds the log files of `dir` (from its manifest, or for a store without one, by name),
/// finishes what a crash interrupted (unfinished compaction outputs, renames, deletions), and
/// replays every file into `index`. With a manifest, checks that every listed file is the one
/// the store wrote (see `manifest.rs`).
pub fn recover(dir: &Path, mode: RecoveryMode, index: &Index) -> Result<Recovered> {
    let manifest = manifest::read(dir)?;
    let listing = list_dir(dir)?;
    let ids = match &manifest {
        Some(manifest) => prepare_listed(dir, manifest, &listing)?,
        None => prepare_unlisted(dir, &listing)?,
    };

    let mut recovered = Recovered {
        ids: ids.clone(),
        sizes: BTreeMap::new(),
        stale: BTreeMap::new(),
        fingerprints: BTreeMap::new(),
        manifest: None,
    };
    for (i, &id) in ids.iter().enumerate() {
        let is_newest = i + 1 == ids.len();
        let listed = manifest.as_ref().and_then(|m| match m.files().get(&id) {
            Some(&FileState::Closed { len, fingerprint }) => Some((len, fingerprint)),
            _ => None,
        });
        let mut fingerprint = Fingerprint::default();
        let replayed = replay_file(
            dir,
            id,
            is_newest,
            mode,
            index,
            &mut recovered.stale,
            &mut fingerprint,
        );
        let size = match (replayed, listed) {
            (Ok(size), _) => size,
            (Err(e), Some((len, _))) => return Err(with_listed_len(dir, id, len, e)),
            (Err(e), None) => return Err(e),
        };
        if let Some((len, expected)) = listed {
            check_closed(dir, id, len, expected, size, fingerprint.value())?;
        }
        recovered.sizes.insert(id, size);
        recovered.fingerprints.insert(id, fingerprint.value());
    }
    recovered.manifest = manifest.map(|mut m| {
        let obsolete: Vec<u32> = m
            .files()
            .iter()
            .filter(|(_, state)| **state == FileState::Obsolete)
            .map(|(&id, _)| id)
            .collect();
        for id in obsolete {
            m.forget(id);
        }
        m
    });
    Ok(recovered)
}

/// What a directory entry is to the store.
enum Listed {
    /// `<id>.log`, with a canonical id.
    Log(u32),
    /// `<id>.log.compacting`, with a canonical id.
    Compacting(u32),
    /// The store's own bookkeeping (`MANIFEST`, `engine`, `LOCK`, their temporary files).
    Own,
    /// Anything else.
    Other,
}

/// The entries of `dir`, by name, with what each is.
fn list_dir(dir: &Path) -> Result<Vec<(String, Listed)>> {
    let mut listing = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| KvsError::io_at(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| KvsError::io_at(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let what = if let Some(id) = name.strip_suffix(COMPACTING_SUFFIX).and_then(parse_id) {
            Listed::Compacting(id)
        } else if let Some(id) = name.strip_suffix(".log").and_then(parse_id) {
            Listed::Log(id)
        } else if [
            MANIFEST_FILE,
            MANIFEST_TMP,
            ENGINE_FILE,
            LOCK_FILE,
            "engine.tmp",
        ]
        .contains(&name.as_str())
        {
            Listed::Own
        } else {
            Listed::Other
        };
        listing.push((name, what));
    }
    listing.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

/// Whether `path` is a regular file (following symbolic links); `None` if it does not exist.
fn is_regular_file(path: &Path) -> Result<Option<bool>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.is_file())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KvsError::io_at(path, e)),
    }
}

fn corruption(path: PathBuf, offset: u64, reason: String) -> KvsError {
    KvsError::Corruption {
        path,
        offset,
        reason,
    }
}

/// A store without a manifest (written by release 0.1.0, or a new directory): its files are
/// the canonical `<id>.log` names. Deletes unfinished compaction outputs. Returns the ids.
fn prepare_unlisted(dir: &Path, listing: &[(String, Listed)]) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for (name, what) in listing {
        let path = dir.join(name);
        match *what {
            Listed::Compacting(_) => {
                // Compaction crashed before its output was complete; the files it was
                // compacting are all still here.
                log::info!("removing unfinished compaction output {name}");
                fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
            }
            Listed::Log(id) => {
                if is_regular_file(&path)? == Some(true) {
                    ids.push(id);
                } else {
                    log::warn!("{}: not a regular file, ignored", path.display());
                }
            }
            Listed::Own => {}
            Listed::Other => log::warn!("{}: not a kvs file, ignored", path.display()),
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A store with a manifest: checks that every listed file is there, finishes the renames of a
/// committed compaction, deletes obsolete files and crash leftovers, and warns about (and
/// leaves alone) every other file. Returns the ids to replay: the closed files and the active
/// one. Fails, having changed nothing, if a listed file is missing or not a regular file.
fn prepare_listed(
    dir: &Path,
    manifest: &Manifest,
    listing: &[(String, Listed)],
) -> Result<Vec<u32>> {
    let compacting: Vec<u32> = listing
        .iter()
        .filter_map(|(_, what)| match what {
            Listed::Compacting(id) => Some(*id),
            _ => None,
        })
        .collect();
    let mut ids = Vec::new();
    let mut renames = Vec::new();
    let mut obsolete = Vec::new();
    for (&id, state) in manifest.files() {
        let path = log_path(dir, id);
        let name = format!("{id}.log");
        match (*state, is_regular_file(&path)?) {
            (FileState::Obsolete, Some(true)) => obsolete.push(path),
            (FileState::Obsolete, Some(false)) => log::warn!(
                "{}: not a regular file (the store's {name} was deleted), ignored",
                path.display()
            ),
            (FileState::Obsolete, None) => {}
            (FileState::Closed { .. }, None) if compacting.contains(&id) => {
                // Compaction committed, then crashed before renaming this output into place.
                renames.push(id);
                ids.push(id);
            }
            (FileState::Closed { .. }, None) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} is missing: the store lists it as holding data (restore it \
                         from a backup of the whole directory)"
                    ),
                ))
            }
            (FileState::Active, None) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} is missing: the store lists it as the active file, holding \
                         the newest writes (restore it from a backup of the whole directory)"
                    ),
                ))
            }
            (_, Some(false)) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} is not a regular file, but the store lists it as one of its \
                         log files"
                    ),
                ))
            }
            (_, Some(true)) => ids.push(id),
        }
    }
    // The active file has the highest listed id (`Manifest::decode` checks it).
    let active = manifest.active().unwrap_or(u32::MAX);
    // An unlisted file newer than the active one. A rotation that crashed before writing the
    // manifest leaves one holding at most a header: removed below. One holding more was not
    // written by this store since it has had a manifest (kvs lists a file before writing to
    // it), but most likely by a kvs that keeps none (release 0.1.0) opened on this directory:
    // ignoring it could hide acknowledged writes, so open refuses.
    let mut leftovers = Vec::new();
    for (name, what) in listing {
        let Listed::Log(id) = *what else { continue };
        if id <= active {
            continue;
        }
        let path = dir.join(name);
        match holds_more_than_a_header(&path)? {
            Some(false) => leftovers.push(id),
            Some(true) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} holds data but the store's {MANIFEST_FILE} does not list it, \
                         though it is newer than every file listed: it was written by a kvs \
                         that keeps no {MANIFEST_FILE} (release 0.1.0), or copied in. If it \
                         holds writes of this store, remove {MANIFEST_FILE} and open the store \
                         again (kvs then rebuilds it from the log files); otherwise move \
                         {name} out of the data directory"
                    ),
                ))
            }
            // A directory or the like: it holds no log records.
            None => {}
        }
    }

    let mut changed = false;
    for &id in &renames {
        let from = dir.join(format!("{id}{COMPACTING_SUFFIX}"));
        let to = log_path(dir, id);
        log::info!(
            "finishing the rename of compaction output {}",
            from.display()
        );
        fs::rename(&from, &to).map_err(|e| KvsError::io_at(&to, e))?;
        changed = true;
    }
    for path in obsolete {
        // Its compaction committed: every live record of it is in the outputs.
        log::info!("removing {}, replaced by a compaction", path.display());
        fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
        changed = true;
    }
    for (name, what) in listing {
        let path = dir.join(name);
        match *what {
            Listed::Compacting(id) if renames.contains(&id) => {}
            Listed::Compacting(_) => {
                // Compaction crashed before committing; the files it was compacting are all
                // still listed.
                log::info!("removing unfinished compaction output {name}");
                fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
                changed = true;
            }
            Listed::Log(id) if manifest.files().contains_key(&id) => {}
            Listed::Log(id) if leftovers.contains(&id) => {
                // Created by a rotation that crashed before writing the manifest: nothing was
                // ever written to it.
                log::info!("removing {name}, a log file created by an unfinished rotation");
                fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
                changed = true;
            }
            Listed::Own => {}
            Listed::Log(_) | Listed::Other => log::warn!(
                "{}: not one of the store's files (its {MANIFEST_FILE} does not list it), \
                 ignored",
                path.display()
            ),
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Whether the regular file `path` holds more than (a prefix of) a log file header; `None` if
/// it is not a regular file.
fn holds_more_than_a_header(path: &Path) -> Result<Option<bool>> {
    let meta = fs::metadata(path).map_err(|e| KvsError::io_at(path, e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > FILE_MAGIC.len() as u64 {
        return Ok(Some(true));
    }
    let bytes = fs::read(path).map_err(|e| KvsError::io_at(path, e))?;
    Ok(Some(!FILE_MAGIC.starts_with(&bytes)))
}

/// Checks a replayed closed file against its manifest entry.
fn check_closed(
    dir: &Path,
    id: u32,
    listed_len: u64,
    listed_fingerprint: u32,
    len: u64,
    fingerprint: u32,
) -> Result<()> {
    if len != listed_len {
        return Err(corruption(
            log_path(dir, id),
            len.min(listed_len),
            format!(
                "{id}.log is {len} bytes, the store sealed it at {listed_len}: it was \
                 truncated, extended or replaced"
            ),
        ));
    }
    if fingerprint != listed_fingerprint {
        return Err(corruption(
            log_path(dir, id),
            0,
            format!(
                "{id}.log is not the file the store wrote (its records differ): it was \
                 replaced or swapped with another file"
            ),
        ));
    }
    Ok(())
}

/// Adds what the manifest says to an error found replaying closed file `id`, if its length
/// is not the one it was sealed at.
fn with_listed_len(dir: &Path, id: u32, listed_len: u64, err: KvsError) -> KvsError {
    let len = fs::metadata(log_path(dir, id)).map(|m| m.len());
    match (err, len) {
        (
            KvsError::Corruption {
                path,
                offset,
                reason,
            },
            Ok(len),
        ) if len != listed_len => KvsError::Corruption {
            path,
            offset,
            reason: format!(
                "{reason} ({id}.log is {len} bytes, the store sealed it at {listed_len}: it \
                 was truncated, extended or replaced)"
            ),
        },
        (err, _) => err,
    }
}

/// Replays one file; returns its size after any torn tail was cut off.
fn replay_file(
    dir: &Path,
    id: u32,
    is_newest: bool,
    mode: RecoveryMode,
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    fingerprint: &mut Fingerprint,
) -> Result<u64> {
    let path = log_path(dir, id);
    let file = File::open(&path).map_err(|e| KvsError::io_at(&path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| KvsError::io_at(&path, e))?
        .len();
    if file_len > u32::MAX as u64 {
        return Err(KvsError::Corruption {
            path,
            offset: u32::MAX as u64,
            reason: format!("log file is {file_len} bytes; kvs never writes one over 4 GiB"),
        });
    }
    let mut window = Window::new(&file, file_len);

    let magic_ok = window
        .fill(FILE_MAGIC.len())
        .map_err(|e| KvsError::io_at(&path, e))?;
    if !magic_ok || window.bytes()[..FILE_MAGIC.len()] != FILE_MAGIC {
        let header = window.bytes();
        let reason = if !magic_ok {
            format!("file is {file_len} bytes, shorter than its header")
        } else if header[..FILE_MAGIC.len() - 1] == FILE_MAGIC[..FILE_MAGIC.len() - 1] {
            // The magic is right and the version byte is not one this release writes: a file
            // of a newer kvs (or a damaged version byte). Never read as version 1.
            format!(
                "unsupported format version {} (this kvs reads version {}): the file was \
                 written by a newer kvs, or its header is damaged",
                header[FILE_MAGIC.len() - 1],
                FILE_MAGIC[FILE_MAGIC.len() - 1]
            )
        } else {
            "not a kvs log file (bad magic)".to_string()
        };
        if !magic_ok && is_newest && mode == RecoveryMode::TolerateTornTail {
            // Crashed while creating the file: nothing in it was ever acknowledged.
            log::warn!("{}: {reason}; rewriting its header", path.display());
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0).map(|()| f))
                .and_then(|f| f.write_all_at(&FILE_MAGIC, 0).map(|()| f))
                .and_then(|f| f.sync_all())
                .map_err(|e| KvsError::io_at(&path, e))?;
            return Ok(FILE_MAGIC.len() as u64);
        }
        return Err(KvsError::Corruption {
            path,
            offset: 0,
            reason,
        });
    }
    window.consume(FILE_MAGIC.len());

    let mut offset = FILE_MAGIC.len() as u64;
    let mut sealed = false;
    // The key of the record just read (or a seal's value), reused across records.
    let mut payload = Vec::new();
    loop {
        if offset == file_len {
            if !is_newest && !sealed {
                // Every closed file ends with a seal (format.rs): this one was cut short,
                // maybe exactly at a record boundary, and its last records are gone.
                return Err(KvsError::Corruption {
                    path,
                    offset,
                    reason: "a closed log file ends without its seal record: it was cut short"
                        .into(),
                });
            }
            return Ok(offset);
        }
        let (bad, extent) = match next_record(&mut window, file_len - offset, &mut payload) {
            Ok((RecordKind::Seal, len, crc)) => {
                let mut value = [0u8; SEAL_VALUE_LEN];
                value.copy_from_slice(&payload[..SEAL_VALUE_LEN]);
                if u64::from_le_bytes(value) != offset {
                    // A seal says where it was written: one elsewhere means records before it
                    // were removed or the file was pieced together.
                    return Err(KvsError::Corruption {
                        path,
                        offset,
                        reason: format!(
                            "seal record written at offset {}, found at {offset}",
                            u64::from_le_bytes(value)
                        ),
                    });
                }
                *stale.entry(id).or_insert(0) += len as u64;
                fingerprint.add(&crc.to_le_bytes());
                offset += len as u64;
                sealed = true;
                continue;
            }
            Ok((kind, len, crc)) => {
                sealed = false;
                let pos = RecordPos {
                    file: id,
                    // Fits: the file is under 4 GiB (checked above).
                    offset: offset as u32,
                    len: len as u32,
                };
                apply(index, stale, kind, &payload, pos)?;
                fingerprint.add(&crc.to_le_bytes());
                offset += len as u64;
                continue;
            }
            Err(ReadError::Io(e)) => return Err(KvsError::io_at(&path, e)),
            Err(ReadError::Bad { reason, extent }) => (reason, extent),
        };
        if is_newest && all_zeros(&file, offset, file_len).map_err(|e| KvsError::io_at(&path, e))? {
            // Extended ahead of its records (`SyncPolicy::Always`, see `writer.rs`) and not cut
            // back, as the store was not closed: the log ends here. Nothing was written there.
            log::debug!(
                "{}: {} zero bytes past the last record, cut off",
                path.display(),
                file_len - offset
            );
            return cut_at(&path, offset);
        }
        if !is_newest || mode == RecoveryMode::Strict {
            return Err(KvsError::Corruption {
                path,
                offset,
                reason: bad,
            });
        }
        // Where a valid record would prove that the log goes on past this bad one (see the
        // module docs). The bytes of the bad record's own extent are its payload: a value may
        // hold anything, kvs records included, so they prove nothing.
        let scan_from = match extent {
            Extent::PastEnd => None,
            Extent::Inside(len) => Some(offset + len),
            Extent::Unknown => Some(offset + 1),
        };
        if let Some(from) = scan_from {
            if let Some(found) = find_valid_record(&file, &path, from, file_len)? {
                return Err(KvsError::Corruption {
                    path,
                    offset,
                    reason: format!("{bad}; a valid record follows at offset {found}"),
                });
            }
        }
        log::warn!(
            "{}: cutting off a torn tail of {} bytes at offset {offset} ({bad})",
            path.display(),
            file_len - offset
        );
        return cut_at(&path, offset);
    }
}

/// Cuts the file at `path` back to `offset` bytes, durably; returns the new length.
fn cut_at(path: &Path, offset: u64) -> Result<u64> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(offset).and_then(|()| f.sync_all()))
        .map_err(|e| KvsError::io_at(path, e))?;
    Ok(offset)
}

/// Applies one valid record to the index and the stale-byte counts.
fn apply(
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    kind: RecordKind,
    key: &[u8],
    pos: RecordPos,
) -> Result<()> {
    let old = match kind {
        RecordKind::Set => index.insert(key, pos).map_err(|_| {
            KvsError::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the in-memory index is full (over 4 GiB of keys in one shard)",
            ))
        })?,
        RecordKind::Remove => {
            // A tombstone only matters until the next compaction.
            *stale.entry(pos.file).or_insert(0) += pos.len as u64;
            index.remove(key)
        }
        // Handled by the caller; never reaches here.
        RecordKind::Seal => None,
    };
    if let Some(old) = old {
        *stale.entry(old.file).or_insert(0) += old.len as u64;
    }
    Ok(())
}

/// What a bad record's header says about where the record ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extent {
    /// The header is cut short or does not decode: the record's length is unknown.
    Unknown,
    /// The header decodes, and the record it declares runs past the end of the file.
    PastEnd,
    /// The header decodes and the record it declares, of this many bytes, lies inside the file,
    /// but its checksum fails.
    Inside(u64),
}

enum ReadError {
    Io(io::Error),
    Bad { reason: String, extent: Extent },
}

impl ReadError {
    fn bad(reason: String, extent: Extent) -> ReadError {
        ReadError::Bad { reason, extent }
    }
}

/// Checks the next record in `window` (with `remaining` bytes left in the file) and consumes
/// it; returns its kind, length and stored checksum, and leaves its key (for a seal, its value) in `payload`.
///
/// The record goes through the window a chunk at a time, its checksum computed on the way, so
/// a value of hundreds of MiB is never held in memory whole. After an error the window is left
/// anywhere inside the bad record: the caller only looks at the file from then on.
fn next_record(
    window: &mut Window<'_>,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> std::result::Result<(RecordKind, usize, u32), ReadError> {
    if !window.fill(HEADER_LEN).map_err(ReadError::Io)? {
        return Err(ReadError::bad(
            format!("truncated record header ({remaining} of {HEADER_LEN} bytes)"),
            Extent::Unknown,
        ));
    }
    let header_bytes: [u8; HEADER_LEN] = window.bytes()[..HEADER_LEN]
        .try_into()
        .map_err(|_| ReadError::bad("short header".into(), Extent::Unknown))?;
    let header = decode_header(&header_bytes).map_err(|e| ReadError::bad(e, Extent::Unknown))?;
    let len = header.record_len();
    if len as u64 > remaining {
        return Err(ReadError::bad(
            format!("record of {len} bytes runs past the end of the file ({remaining} bytes left)"),
            Extent::PastEnd,
        ));
    }
    // What replay keeps: the key, or a seal's value (a seal's key is empty).
    let keep_len = match header.kind {
        RecordKind::Seal => SEAL_VALUE_LEN,
        RecordKind::Set | RecordKind::Remove => header.key_len,
    };
    let keep = HEADER_LEN..HEADER_LEN + keep_len;
    payload.clear();
    let mut hasher = crc32fast::Hasher::new();
    // `window.bytes()` starts `at` bytes into the record.
    let mut at = 0;
    while at < len {
        if !window.fill((len - at).min(CHUNK)).map_err(ReadError::Io)? {
            // The file shrank since its length was read.
            return Err(ReadError::bad(
                "file ended inside a record".into(),
                Extent::PastEnd,
            ));
        }
        let n = window.bytes().len().min(len - at);
        let piece = &window.bytes()[..n];
        // The checksum covers every byte after the crc field.
        hasher.update(&piece[4usize.saturating_sub(at).min(n)..]);
        let (lo, hi) = (keep.start.max(at), keep.end.min(at + n));
        if lo < hi {
            payload.extend_from_slice(&piece[lo - at..hi - at]);
        }
        window.consume(n);
        at += n;
    }
    let actual = hasher.finalize();
    if actual != header.crc {
        return Err(ReadError::bad(
            format!(
                "checksum mismatch (stored {:#010x}, computed {actual:#010x})",
                header.crc
            ),
            Extent::Inside(len as u64),
        ));
    }
    Ok((header.kind, len, header.crc))
}

/// A sliding window over a file, read in large chunks with `pread`: replay parses records in
/// place instead of issuing reads per record.
struct Window<'a> {
    file: &'a File,
    file_len: u64,
    buf: Vec<u8>,
    /// `buf[start..end]` holds the file's bytes from `file_pos - (end - start)` on.
    start: usize,
    end: usize,
    file_pos: u64,
}

const CHUNK: usize = 4 << 20;

impl<'a> Window<'a> {
    fn new(file: &'a File, file_len: u64) -> Window<'a> {
        Window {
            file,
            file_len,
            buf: Vec::new(),
            start: 0,
            end: 0,
            file_pos: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Makes at least `need` bytes available; `false` if the file ends first.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.end - self.start >= need {
            return Ok(true);
        }
        // Slide what is left to the front, and grow the buffer for records over CHUNK.
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        // No bigger than the file: small files (the common case in tests) stay cheap.
        let want = need.max(CHUNK.min(self.file_len as usize));
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.end < need {
            let room = (self.buf.len() - self.end) as u64;
            let to_read = room.min(self.file_len.saturating_sub(self.file_pos)) as usize;
            if to_read == 0 {
                return Ok(false);
            }
            let n = match self
                .file
                .read_at(&mut self.buf[self.end..self.end + to_read], self.file_pos)
            {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += n;
            self.file_pos += n as u64;
        }
        Ok(true)
    }
}

/// Whether every byte of the file from `from` to `to` is zero.
fn all_zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// How much of the file [`find_valid_record`] reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// Looks for a valid record starting at or after `from`; returns the offset of the first.
///
/// Reads the file a chunk at a time, and checks the checksum of a candidate (a position where
/// a header decodes and declares a record that fits in the file) by reading its extent a chunk
/// at a time too: memory stays at two chunks whatever the size of the file or of the records
/// its bytes declare. A file full of bytes that decode as headers makes this slow, never wrong.
fn find_valid_record(file: &File, path: &Path, from: u64, file_len: u64) -> Result<Option<u64>> {
    let io_err = |e| KvsError::io_at(path, e);
    let span = (file_len.saturating_sub(from) as usize).min(SCAN_CHUNK + HEADER_LEN);
    let mut buf = vec![0u8; span];
    let mut extent_buf = Vec::new();
    // `buf[..n]` holds the file's bytes from `start` on.
    let mut start = from;
    while start + HEADER_LEN as u64 <= file_len {
        let n = ((file_len - start) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], start).map_err(io_err)?;
        // Candidates start in `buf[..=last]`; the next chunk starts right after `last`, so
        // chunks overlap by a header's length less one byte and no position is missed.
        let last = n - HEADER_LEN;
        for i in 0..=last {
            let Ok(header) = <&[u8; HEADER_LEN]>::try_from(&buf[i..i + HEADER_LEN]) else {
                break;
            };
            // Most positions fail here, on the kind byte.
            let Ok(header) = decode_header(header) else {
                continue;
            };
            let at = start + i as u64;
            let len = header.record_len();
            if at + len as u64 > file_len {
                continue;
            }
            let crc = if i + len <= n {
                crc32fast::hash(&buf[i + 4..i + len])
            } else {
                crc_of_extent(file, at + 4, at + len as u64, &mut extent_buf).map_err(io_err)?
            };
            if crc == header.crc {
                return Ok(Some(at));
            }
        }
        start += last as u64 + 1;
    }
    Ok(None)
}

/// CRC-32 of the file's bytes `from..to`, read `SCAN_CHUNK` bytes at a time into `buf`.
fn crc_of_extent(file: &File, from: u64, to: u64, buf: &mut Vec<u8>) -> io::Result<u32> {
    buf.resize(SCAN_CHUNK, 0);
    let mut hasher = crc32fast::Hasher::new();
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::engines::log::format::encode_record;

    /// A file of `len` bytes that never decode as a header (kind 0xff), with the records in
    /// `records` at their offsets.
    fn file_with(len: usize, records: &[(usize, &[u8])]) -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("1.log");
        let mut bytes = vec![0xffu8; len];
        for &(at, record) in records {
            bytes[at..at + record.len()].copy_from_slice(record);
        }
        fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        (dir, path, file)
    }

    fn record(value_len: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordKind::Set, b"key", &vec![7u8; value_len]);
        buf
    }

    #[test]
    fn the_scan_finds_a_record_wherever_it_falls_against_its_chunks() {
        let small = record(20);
        let len = 2 * SCAN_CHUNK + 64;
        for at in [
            0,
            1,
            SCAN_CHUNK - HEADER_LEN,
            SCAN_CHUNK - 5,
            SCAN_CHUNK,
            SCAN_CHUNK + 1,
            SCAN_CHUNK + 7,
            2 * SCAN_CHUNK + 3,
            len - small.len(),
        ] {
            let (_dir, path, file) = file_with(len, &[(at, &small)]);
            let found = find_valid_record(&file, &path, 0, len as u64).unwrap();
            assert_eq!(found, Some(at as u64), "record at {at}");
            // Not before where the scan starts.
            let after = find_valid_record(&file, &path, at as u64 + 1, len as u64).unwrap();
            assert_eq!(after, None, "scan from past the record at {at}");
        }
    }

    #[test]
    fn the_scan_checks_records_longer_than_its_chunks() {
        let big = record(3 * SCAN_CHUNK);
        let len = big.len() + SCAN_CHUNK;
        let (_dir, path, file) = file_with(len, &[(100, &big)]);
        assert_eq!(
            find_valid_record(&file, &path, 0, len as u64).unwrap(),
            Some(100)
        );
        // The same record with one byte of its value changed is no record.
        let mut bad = big.clone();
        bad[2 * SCAN_CHUNK] ^= 1;
        let (_dir, path, file) = file_with(len, &[(100, &bad)]);
        assert_eq!(
            find_valid_record(&file, &path, 0, len as u64).unwrap(),
            None
        );
        // Nor is one cut short by the end of the file.
        let (_dir, path, file) = file_with(len, &[(100, &big)]);
        let short = (100 + big.len() - 1) as u64;
        assert_eq!(find_valid_record(&file, &path, 0, short).unwrap(), None);
    }
}
