//! Hint files: what replaying a closed log file puts in the index, without its values, so that
//! open reads a few bytes per key instead of every byte of the log (as Riak's bitcask does).
//!
//! A hint is **advisory**. It is only ever used in place of replaying a *closed* log file
//! (sealed, listed in the `MANIFEST` with its length and fingerprint, see `manifest.rs`), and
//! only when its header names that very file (id, sealed length, fingerprint, all equal to the
//! `MANIFEST` entry; and the inode number and modification time of the `<id>.log` there now,
//! so that a closed file swapped with another, replaced by a copy or written to since its hint
//! was made is replayed, and its fingerprint checked, as without hints), its checksum holds
//! and its entries are in order inside the file. Anything
//! else (missing, cut short, a flipped bit, a newer format, the hint of another file, one left
//! from a file since replaced) and open replays the log file, as it would without hints, and
//! the hint is written again. The active file is always replayed. Reads check every record they
//! return (its checksums, and that it holds the key looked up), so even a hint that passed every
//! check but lied would make a read fail with a corruption error naming the log file, never
//! serve a value that is not in the log.
//!
//! # Layout
//!
//! `<id>.hint` beside `<id>.log` (canonical ids only, as for log files), all integers
//! little-endian:
//!
//! ```text
//! offset  size  field
//!      0     7  magic: the ASCII bytes "kvs-hnt"
//!      7     1  hint format version: 1
//!      8     1  format version of the log file (1 or 2)
//!      9     3  zero
//!     12     4  id: the log file is `<id>.log` (u32)
//!     16     8  sealed length of the log file, as the MANIFEST lists it (u64)
//!     24     4  fingerprint of the log file, as the MANIFEST lists it (u32)
//!     28     8  inode number of the log file the hint was written from (u64)
//!     36     8  its modification time: seconds since the Unix epoch (i64)
//!     44     4  and nanoseconds (u32)
//!     48     4  CRC-32 (IEEE) of bytes 0..48
//!     52     .  entries, one per set or remove record of the log file, in log order (batch
//!               members included; the seal and batch frame records are not entries), each:
//!                 +0   1  kind: 1 = set, 2 = set with a deadline, 3 = remove
//!                 +1   4  key length k (u32)
//!                 +5   4  offset of the record in the log file (u32)
//!                 +9   4  length of the record, header included (u32)
//!                +13   8  kind 2 only: the deadline, milliseconds since the Unix epoch (u64)
//!            13 or 21  k  the key
//! end-32     8  number of entries (u64)
//! end-24     8  total bytes of the entries' keys (u64)
//! end-16     8  framing bytes: the length of the seal and of every batch frame record, which
//!               replay counts as stale from the start (u64)
//! end-8      4  the ASCII bytes "kvsH"
//! end-4      4  CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Offsets strictly increase from entry to entry, each record lies inside
//! `[8, sealed length)`, and nothing but the trailer follows the last entry; a hint that breaks
//! any of this is damaged. The counts let open size the index once for every key the hints
//! hold (`Index::reserve`).
//!
//! # Who writes them
//!
//! Never the writer: a background thread, the **hinter**, one per store opened read-write.
//! Every `MANIFEST` written (rotation, compaction commit, open) is handed to it (see
//! [`CommitHook`](super::manifest::CommitHook)); for every file the manifest lists as closed
//! and that has no hint yet it reads the log file sequentially (just written, so in the page
//! cache), checks it ends where the manifest says with the fingerprint it says, and writes
//! `<id>.hint.tmp`, fsyncs it and renames it to `<id>.hint`. Hints of files the manifest no
//! longer lists as closed (compaction replaced them) are deleted. The directory is not synced
//! for a hint: a rename lost in a crash only means a replay. Open removes `<id>.hint.tmp`
//! leftovers. A read-only open writes none; a child of `fork()` never does either (the thread
//! is not in it, and the handle it inherits touches nothing).
//!
//! Files a compaction under way is replacing get no hint (the compaction marks the ids it
//! replaces before the manifest of its rotation is written): they are about to be deleted,
//! and a store whose few keys are overwritten without end would otherwise have every file it
//! seals read through once more, only to be compacted away at once. Their outputs get hints
//! as any closed file. A compaction that stops half-way (the store closing, an error) leaves
//! the files it did not replace to the next manifest, or to the close.
//!
//! Closing the store stops the hinter between two records (a hint half written is removed),
//! then writes what hints are left if their log files hold at most 256 MiB in all, and
//! otherwise only the hint of the file sealed by the close itself (see `KvStore`'s drop in
//! `mod.rs`), so that the next open needs to replay almost nothing and a close never waits
//! for the hints of a whole store of an older release (the next open goes on with those).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::format::{RecordKind, Version, FILE_MAGIC, MAX_KEY_LEN};
use super::log_file::LogFile;
use super::manifest::{parse_id, FileState, Fingerprint, Manifest};
use super::reader::{LogReader, Step};
use super::recovery::COMPACTING_SUFFIX;
use super::writer::log_path;
use crate::{KvsError, Result};

/// The first 8 bytes of a hint file: magic and hint format version.
pub const HINT_MAGIC: [u8; 8] = *b"kvs-hnt\x01";
/// Suffix of a hint file.
pub const HINT_SUFFIX: &str = ".hint";
/// Suffix of a hint file being written.
pub const HINT_TMP_SUFFIX: &str = ".hint.tmp";
/// Size of the header.
pub const HEADER_LEN: usize = 52;
/// Size of the trailer.
pub const TRAILER_LEN: usize = 32;
/// The bytes before a trailer's checksum.
const TRAILER_TAG: [u8; 4] = *b"kvsH";
/// Size of an entry without its key and deadline.
const ENTRY_FIXED: usize = 13;

const KIND_SET: u8 = 1;
const KIND_SET_DEADLINE: u8 = 2;
const KIND_REMOVE: u8 = 3;

/// Path of the hint of log file `id`.
pub fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}{HINT_SUFFIX}"))
}

fn hint_tmp_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}{HINT_TMP_SUFFIX}"))
}

/// The header fields of a hint (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintHeader {
    pub log_version: Version,
    pub id: u32,
    pub sealed_len: u64,
    pub fingerprint: u32,
    pub identity: FileIdentity,
}

/// Which file a log file is: its inode number and modification time. A closed file is never
/// written again, so both stay as they were when its hint was written, unless the file is
/// replaced (another inode), or written to (another time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileIdentity {
    pub inode: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl FileIdentity {
    pub fn of(meta: &fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            inode: meta.ino(),
            mtime_secs: meta.mtime(),
            // Always in 0..1_000_000_000.
            mtime_nanos: meta.mtime_nsec() as u32,
        }
    }
}

impl HintHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        buf[..8].copy_from_slice(&HINT_MAGIC);
        buf[8] = self.log_version as u8;
        buf[12..16].copy_from_slice(&self.id.to_le_bytes());
        buf[16..24].copy_from_slice(&self.sealed_len.to_le_bytes());
        buf[24..28].copy_from_slice(&self.fingerprint.to_le_bytes());
        buf[28..36].copy_from_slice(&self.identity.inode.to_le_bytes());
        buf[36..44].copy_from_slice(&self.identity.mtime_secs.to_le_bytes());
        buf[44..48].copy_from_slice(&self.identity.mtime_nanos.to_le_bytes());
        let crc = crc32fast::hash(&buf[..48]);
        buf[48..52].copy_from_slice(&crc.to_le_bytes());
        buf
    }
}

/// The trailer fields of a hint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintCounts {
    pub entries: u64,
    pub key_bytes: u64,
    pub framing_bytes: u64,
}

/// One entry: a set or remove record of the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// [`RecordKind::Set`] or [`RecordKind::Remove`].
    pub kind: RecordKind,
    pub key: &'a [u8],
    pub offset: u32,
    pub len: u32,
    pub deadline: Option<u64>,
}

/// Writes a hint: the header, then entries, then the trailer; the checksum is computed on the
/// way.
pub struct Encoder<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    counts: HintCounts,
}

impl<W: Write> Encoder<W> {
    pub fn new(mut out: W, header: &HintHeader) -> io::Result<Encoder<W>> {
        let bytes = header.encode();
        out.write_all(&bytes)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes);
        Ok(Encoder {
            out,
            crc,
            counts: HintCounts::default(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    pub fn entry(&mut self, entry: &Entry<'_>) -> io::Result<()> {
        let kind = match (entry.kind, entry.deadline) {
            (RecordKind::Remove, _) => KIND_REMOVE,
            (_, Some(_)) => KIND_SET_DEADLINE,
            (_, None) => KIND_SET,
        };
        let mut fixed = [0u8; ENTRY_FIXED + 8];
        fixed[0] = kind;
        // Keys are at most MAX_KEY_LEN (1 MiB): the length fits.
        fixed[1..5].copy_from_slice(&(entry.key.len() as u32).to_le_bytes());
        fixed[5..9].copy_from_slice(&entry.offset.to_le_bytes());
        fixed[9..13].copy_from_slice(&entry.len.to_le_bytes());
        let fixed_len = match (kind, entry.deadline) {
            (KIND_SET_DEADLINE, Some(deadline)) => {
                fixed[13..21].copy_from_slice(&deadline.to_le_bytes());
                ENTRY_FIXED + 8
            }
            _ => ENTRY_FIXED,
        };
        self.put(&fixed[..fixed_len])?;
        self.put(entry.key)?;
        self.counts.entries += 1;
        self.counts.key_bytes += entry.key.len() as u64;
        Ok(())
    }

    pub fn add_framing(&mut self, bytes: u64) {
        self.counts.framing_bytes += bytes;
    }

    /// Writes the trailer; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let mut trailer = [0u8; TRAILER_LEN - 4];
        trailer[..8].copy_from_slice(&self.counts.entries.to_le_bytes());
        trailer[8..16].copy_from_slice(&self.counts.key_bytes.to_le_bytes());
        trailer[16..24].copy_from_slice(&self.counts.framing_bytes.to_le_bytes());
        trailer[24..28].copy_from_slice(&TRAILER_TAG);
        self.put(&trailer)?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        Ok(self.out)
    }
}

/// What the header of `bytes` says, checked against what the manifest lists for file `id`;
/// the error says what is wrong. Reads only the header.
fn check_header(
    bytes: &[u8],
    id: u32,
    sealed_len: u64,
    fingerprint: u32,
    identity: FileIdentity,
) -> std::result::Result<Version, String> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(format!(
            "it is {} bytes, shorter than the smallest hint ({}): cut short",
            bytes.len(),
            HEADER_LEN + TRAILER_LEN
        ));
    }
    if bytes[..7] != HINT_MAGIC[..7] {
        return Err("not a kvs hint file (bad magic)".into());
    }
    if bytes[7] != HINT_MAGIC[7] {
        return Err(format!(
            "hint format version {}; this kvs reads version {}",
            bytes[7], HINT_MAGIC[7]
        ));
    }
    let le32 =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let stored = le32(48);
    let actual = crc32fast::hash(&bytes[..48]);
    if stored != actual {
        return Err(format!(
            "header checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let log_version = match bytes[8] {
        1 => Version::V1,
        2 => Version::V2,
        other => return Err(format!("unknown log file version {other}")),
    };
    let le64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let len = le64(16);
    let (hint_id, hint_fp) = (le32(12), le32(24));
    let written_from = FileIdentity {
        inode: le64(28),
        mtime_secs: le64(36) as i64,
        mtime_nanos: le32(44),
    };
    if hint_id != id {
        return Err(format!("it is the hint of {hint_id}.log, not of {id}.log"));
    }
    if len != sealed_len || hint_fp != fingerprint {
        return Err(format!(
            "stale: it describes a {id}.log of {len} bytes with fingerprint {hint_fp:#010x}, \
             the store lists one of {sealed_len} bytes with fingerprint {fingerprint:#010x}"
        ));
    }
    if written_from != identity {
        return Err(format!(
            "stale: it was written from another {id}.log (inode {}, modified at {}.{:09}; the \
             file there now: inode {}, modified at {}.{:09}): the log file was replaced, copied \
             or written to since",
            written_from.inode,
            written_from.mtime_secs,
            written_from.mtime_nanos,
            identity.inode,
            identity.mtime_secs,
            identity.mtime_nanos
        ));
    }
    Ok(log_version)
}

/// Checks a whole hint (header against the manifest entry of `id`, checksum, entries in order
/// inside the file) and returns its log version and counts; the error says what is wrong.
pub fn check(
    bytes: &[u8],
    id: u32,
    sealed_len: u64,
    fingerprint: u32,
    identity: FileIdentity,
) -> std::result::Result<(Version, HintCounts), String> {
    let version = check_header(bytes, id, sealed_len, fingerprint, identity)?;
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x}): damaged or \
             cut short"
        ));
    }
    let trailer = &body[body.len() - (TRAILER_LEN - 4)..];
    if trailer[24..28] != TRAILER_TAG {
        return Err("bad trailer tag".into());
    }
    let le64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&trailer[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let counts = HintCounts {
        entries: le64(0),
        key_bytes: le64(8),
        framing_bytes: le64(16),
    };
    let mut seen = HintCounts {
        framing_bytes: counts.framing_bytes,
        ..HintCounts::default()
    };
    for_each_entry_unchecked(
        &bytes[HEADER_LEN..bytes.len() - TRAILER_LEN],
        sealed_len,
        |entry| {
            seen.entries += 1;
            seen.key_bytes += entry.key.len() as u64;
        },
    )?;
    if seen != counts {
        return Err(format!(
            "its trailer counts {} entries of {} key bytes, it holds {} of {}",
            counts.entries, counts.key_bytes, seen.entries, seen.key_bytes
        ));
    }
    Ok((version, counts))
}

/// Walks the entries of a hint's entry bytes, checking that each is whole, of a known kind,
/// in order and inside a log file of `sealed_len` bytes.
fn for_each_entry_unchecked(
    mut entries: &[u8],
    sealed_len: u64,
    mut f: impl FnMut(&Entry<'_>),
) -> std::result::Result<(), String> {
    let mut next_free = FILE_MAGIC.len() as u64;
    let mut at = HEADER_LEN;
    while !entries.is_empty() {
        let (entry, used) =
            decode_entry(entries).ok_or_else(|| format!("bad entry at offset {at}"))?;
        let start = entry.offset as u64;
        let end = start + entry.len as u64;
        if start < next_free || end > sealed_len || entry.len == 0 {
            return Err(format!(
                "entry at offset {at} points to bytes {start}..{end} of the log file, out of \
                 order or outside its records"
            ));
        }
        next_free = end;
        f(&entry);
        entries = &entries[used..];
        at += used;
    }
    Ok(())
}

/// One entry at the start of `bytes`, and its length; `None` if it is not a whole, valid one.
#[inline]
fn decode_entry(bytes: &[u8]) -> Option<(Entry<'_>, usize)> {
    let fixed = bytes.get(..ENTRY_FIXED)?;
    let le32 =
        |at: usize| u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let key_len = le32(1) as usize;
    if key_len > MAX_KEY_LEN {
        return None;
    }
    let (kind, deadline, key_at) = match fixed[0] {
        KIND_SET => (RecordKind::Set, None, ENTRY_FIXED),
        KIND_REMOVE => (RecordKind::Remove, None, ENTRY_FIXED),
        KIND_SET_DEADLINE => {
            let d = bytes.get(ENTRY_FIXED..ENTRY_FIXED + 8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(d);
            (
                RecordKind::Set,
                Some(u64::from_le_bytes(b)),
                ENTRY_FIXED + 8,
            )
        }
        _ => return None,
    };
    let key = bytes.get(key_at..key_at + key_len)?;
    Some((
        Entry {
            kind,
            key,
            offset: le32(5),
            len: le32(9),
            deadline,
        },
        key_at + key_len,
    ))
}

/// A hint that passed [`check`]: its bytes (mapped) and what it holds.
pub struct Hint {
    pub id: u32,
    pub log_version: Version,
    pub counts: HintCounts,
    map: LogFile,
    len: usize,
}

impl Hint {
    /// Calls `f` with the bytes of the entries, checked by [`load`]: read them with
    /// [`entry_at`].
    pub fn with_entries<R>(&self, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        self.map.with_bytes(0, self.len, |bytes| {
            f(&bytes[HEADER_LEN..self.len - TRAILER_LEN])
        })
    }
}

/// The entry at byte `at` of the entry bytes of a checked hint (see [`Hint::with_entries`]),
/// and where the next one starts; `None` at the end.
#[inline]
pub fn entry_at(entries: &[u8], at: usize) -> Option<(Entry<'_>, usize)> {
    decode_entry(entries.get(at..)?).map(|(entry, used)| (entry, at + used))
}

/// What [`load`] found.
pub enum Loaded {
    /// No hint: the log file is replayed.
    Missing,
    /// A hint that cannot be used, and why: the log file is replayed, with a warning.
    Unusable(String),
    Usable(Hint),
}

/// Loads and checks the hint of closed file `id`, which the manifest lists at `sealed_len`
/// bytes with `fingerprint`, and whose `<id>.log` is `identity`.
pub fn load(
    dir: &Path,
    id: u32,
    sealed_len: u64,
    fingerprint: u32,
    identity: FileIdentity,
) -> Loaded {
    let path = hint_path(dir, id);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Unusable(format!("cannot be read: {e}")),
    };
    let len = match file.metadata() {
        Ok(meta) if !meta.is_file() => return Loaded::Unusable("not a regular file".into()),
        Ok(meta) => meta.len(),
        Err(e) => return Loaded::Unusable(format!("cannot be read: {e}")),
    };
    let Ok(len) = usize::try_from(len) else {
        return Loaded::Unusable(format!("it is {len} bytes: too large"));
    };
    let map = LogFile::new(file, len as u64);
    match map.with_bytes(0, len, |bytes| {
        check(bytes, id, sealed_len, fingerprint, identity)
    }) {
        Ok(Ok((log_version, counts))) => Loaded::Usable(Hint {
            id,
            log_version,
            counts,
            map,
            len,
        }),
        Ok(Err(reason)) => Loaded::Unusable(reason),
        Err(e) => Loaded::Unusable(format!("cannot be read: {e}")),
    }
}

/// Checks the hint of closed file `id` for `verify_dir`: `None` if there is none or it is
/// good, else what is wrong with it.
pub fn verify(dir: &Path, id: u32, sealed_len: u64, fingerprint: u32) -> Option<String> {
    let identity = match fs::metadata(log_path(dir, id)) {
        Ok(meta) => FileIdentity::of(&meta),
        // The log file's own check reports it.
        Err(_) => return None,
    };
    match load(dir, id, sealed_len, fingerprint, identity) {
        Loaded::Missing | Loaded::Usable(_) => None,
        Loaded::Unusable(reason) => Some(reason),
    }
}

/// Why building a hint stopped.
enum BuildError {
    /// The store is closing.
    Stopped,
    Failed(KvsError),
}

impl From<KvsError> for BuildError {
    fn from(e: KvsError) -> BuildError {
        BuildError::Failed(e)
    }
}

/// Reads closed log file `id` (at `<id>.log`, or at its `.compacting` name if a compaction
/// committed it and has not renamed it yet) and writes its hint, checking on the way that the
/// file is what the manifest lists (`sealed_len`, `fingerprint`). Stops, removing what it
/// wrote, when `stop` is set.
fn build(
    dir: &Path,
    id: u32,
    sealed_len: u64,
    fingerprint: u32,
    stop: &AtomicBool,
) -> std::result::Result<(), BuildError> {
    let named = log_path(dir, id);
    let (file, path) = match File::open(&named) {
        Ok(file) => (file, named),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let compacting = dir.join(format!("{id}{COMPACTING_SUFFIX}"));
            match File::open(&compacting) {
                Ok(file) => (file, compacting),
                Err(_) => return Err(KvsError::io_at(&named, e).into()),
            }
        }
        Err(e) => return Err(KvsError::io_at(&named, e).into()),
    };
    let io_err = |e| KvsError::io_at(&path, e);
    let meta = file.metadata().map_err(io_err)?;
    let file_len = meta.len();
    let not_listed = |what: String| {
        BuildError::Failed(KvsError::Corruption {
            path: path.clone(),
            offset: 0,
            reason: format!("{what}; no hint written for it"),
        })
    };
    if file_len != sealed_len {
        return Err(not_listed(format!(
            "it is {file_len} bytes, the store sealed it at {sealed_len}"
        )));
    }
    let mut reader = match LogReader::open(&file, file_len).map_err(io_err)? {
        Ok(reader) => reader,
        Err(damage) => return Err(not_listed(damage.to_string())),
    };
    let header = HintHeader {
        log_version: reader.version(),
        id,
        sealed_len,
        fingerprint,
        identity: FileIdentity::of(&meta),
    };
    let tmp = hint_tmp_path(dir, id);
    let tmp_err = |e| KvsError::io_at(&tmp, e);
    let out = File::create(&tmp).map_err(tmp_err)?;
    let result = (|| {
        let mut enc =
            Encoder::new(BufWriter::with_capacity(1 << 20, out), &header).map_err(tmp_err)?;
        let mut seen = Fingerprint::default();
        let mut sealed = false;
        let mut records = 0u64;
        loop {
            records += 1;
            if records.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
                return Err(BuildError::Stopped);
            }
            match reader.next().map_err(io_err)? {
                Step::Record(record) => {
                    seen.add(&record.crc.to_le_bytes());
                    sealed = record.sealed_at.is_some();
                    if let Some(at) = record.sealed_at {
                        if at != record.offset {
                            return Err(not_listed(format!("misplaced seal at {}", record.offset)));
                        }
                        enc.add_framing(record.len as u64);
                    } else {
                        enc.entry(&Entry {
                            kind: record.kind,
                            key: record.key,
                            // Fit: a log file is under 4 GiB.
                            offset: record.offset as u32,
                            len: record.len as u32,
                            deadline: record.deadline,
                        })
                        .map_err(tmp_err)?;
                    }
                }
                Step::Batch(batch) => {
                    sealed = false;
                    seen.add(&batch.crc.to_le_bytes());
                    enc.add_framing(batch.frame_len as u64);
                    for member in batch.members {
                        seen.add(&member.crc.to_le_bytes());
                        enc.entry(&Entry {
                            kind: member.kind,
                            key: &member.key,
                            offset: member.offset as u32,
                            len: member.len as u32,
                            deadline: member.deadline,
                        })
                        .map_err(tmp_err)?;
                    }
                }
                Step::End => break,
                Step::Damage(damage) => return Err(not_listed(damage.to_string())),
            }
        }
        if !sealed || seen.value() != fingerprint {
            return Err(not_listed(
                "its records are not those the store listed (unsealed, or another fingerprint)"
                    .into(),
            ));
        }
        crate::engines::log::crash_point::hit("hint:entries-written");
        let out = enc.finish().map_err(tmp_err)?;
        let out = out.into_inner().map_err(|e| tmp_err(e.into_error()))?;
        out.sync_all().map_err(tmp_err)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let final_path = hint_path(dir, id);
    fs::rename(&tmp, &final_path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        KvsError::io_at(&final_path, e).into()
    })
}

/// On close, the hinter finishes every hint still to write if their log files hold at most this
/// many bytes in all (reading them takes a fraction of a second); otherwise only that of the
/// file the close sealed.
const CLOSE_BUDGET_BYTES: u64 = 256 << 20;

/// What the hinter is told.
enum Msg {
    /// A manifest was written.
    Manifest(Manifest),
    /// The store is closing: write the hint of this file, if the latest manifest lists it as
    /// closed, then stop.
    Close(Option<u32>),
}

/// The background thread that writes hints (see the module docs).
pub struct Hinter {
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Hands each manifest written to the hinter (see `manifest.rs`).
#[derive(Clone)]
pub struct ManifestSender(Sender<Msg>);

impl ManifestSender {
    pub fn send(&self, manifest: &Manifest) {
        // The hinter may be gone (it stopped on close): nothing more to hint.
        let _ = self.0.send(Msg::Manifest(manifest.clone()));
    }
}

impl Hinter {
    /// Starts the hinter of `dir`, whose files `have` already have a good hint.
    /// `replacing`: while a compaction is under way, one more than the newest id it replaces
    /// (0 when none is); files below it get no hint.
    pub fn spawn(dir: PathBuf, have: BTreeSet<u32>, replacing: Arc<AtomicU64>) -> Result<Hinter> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("kvs-hinter".into())
                .spawn(move || run(&dir, have, &rx, &stop, &replacing))
                .map_err(KvsError::Io)?
        };
        Ok(Hinter {
            tx,
            stop,
            thread: Some(thread),
        })
    }

    /// What manifest writes use to reach this hinter.
    pub fn sender(&self) -> ManifestSender {
        ManifestSender(self.tx.clone())
    }

    /// Stops the hinter: the hint being written is abandoned, and the hint of `finish` (the file
    /// the close sealed, if any) is written. Waits for the thread.
    pub fn close(mut self, finish: Option<u32>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Close(finish));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Forgets the thread without waiting for it (a child of `fork()`: it is not in this
    /// process).
    pub fn forget(mut self) {
        std::mem::forget(self.thread.take());
    }
}

fn run(
    dir: &Path,
    mut have: BTreeSet<u32>,
    rx: &Receiver<Msg>,
    stop: &AtomicBool,
    replacing: &AtomicU64,
) {
    let mut latest: Option<Manifest> = None;
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut close = None;
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Manifest(m) => latest = Some(m),
                Msg::Close(finish) => close = Some(finish),
            }
        }
        let Some(manifest) = &latest else {
            if close.is_some() {
                return;
            }
            continue;
        };
        remove_unlisted(dir, manifest, &mut have);
        // Newest first: the most recently sealed file is the one in the page cache.
        let todo: Vec<(u32, u64, u32)> = manifest
            .files()
            .iter()
            .rev()
            .filter_map(|(&id, state)| match *state {
                FileState::Closed { len, fingerprint } if !have.contains(&id) => {
                    Some((id, len, fingerprint))
                }
                _ => None,
            })
            .collect();
        if let Some(finish) = close {
            // Closing: what is left is written if it is little, else only the hint of the
            // file the close sealed; the next open goes on with the rest.
            let left: u64 = todo.iter().map(|&(_, len, _)| len).sum();
            let never = AtomicBool::new(false);
            for &(id, len, fingerprint) in &todo {
                if left <= CLOSE_BUDGET_BYTES || Some(id) == finish {
                    report(dir, id, build(dir, id, len, fingerprint, &never));
                }
            }
            return;
        }
        for (id, len, fingerprint) in todo {
            if stop.load(Ordering::SeqCst) || !rx.is_empty() {
                // Closing, or a newer manifest: start over from it.
                break;
            }
            if u64::from(id) < replacing.load(Ordering::SeqCst) {
                // A compaction is replacing it; if that stops half-way, a later manifest
                // (or the close) brings the file back here.
                continue;
            }
            match build(dir, id, len, fingerprint, stop) {
                // Stopped: closing.
                Err(BuildError::Stopped) => break,
                // Written, or failed: a failure is not retried until the next open.
                result => {
                    report(dir, id, result);
                    have.insert(id);
                }
            }
        }
    }
}

/// Logs how building the hint of `id` went; returns whether it was written.
fn report(dir: &Path, id: u32, result: std::result::Result<(), BuildError>) -> bool {
    match result {
        Ok(()) => {
            log::debug!("wrote {}", hint_path(dir, id).display());
            true
        }
        Err(BuildError::Stopped) => false,
        Err(BuildError::Failed(e)) => {
            log::warn!("no hint written for {}: {e}", log_path(dir, id).display());
            false
        }
    }
}

/// Deletes the hints of files `manifest` does not list as closed.
fn remove_unlisted(dir: &Path, manifest: &Manifest, have: &mut BTreeSet<u32>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(HINT_SUFFIX))
            .and_then(parse_id)
        else {
            continue;
        };
        if !matches!(manifest.files().get(&id), Some(FileState::Closed { .. })) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => log::debug!("removed {}: its log file left the store", path.display()),
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
            have.remove(&id);
        }
    }
}

/// Whether the directory entry `name` is a canonical hint (`Some(false)`) or hint being
/// written (`Some(true)`), and of which id.
pub fn parse_name(name: &str) -> Option<(u32, bool)> {
    if let Some(id) = name.strip_suffix(HINT_TMP_SUFFIX).and_then(parse_id) {
        return Some((id, true));
    }
    name.strip_suffix(HINT_SUFFIX)
        .and_then(parse_id)
        .map(|id| (id, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = HintHeader {
            log_version: Version::V2,
            id: 7,
            sealed_len: 0x0102,
            fingerprint: 0xaabb_ccdd,
            identity: IDENTITY,
        };
        let mut enc = Encoder::new(Vec::new(), &header).unwrap();
        enc.entry(&Entry {
            kind: RecordKind::Set,
            key: b"ab",
            offset: 8,
            len: 0x20,
            deadline: None,
        })
        .unwrap();
        enc.entry(&Entry {
            kind: RecordKind::Set,
            key: b"c",
            offset: 0x28,
            len: 0x30,
            deadline: Some(0x0807_0605_0403_0201),
        })
        .unwrap();
        enc.entry(&Entry {
            kind: RecordKind::Remove,
            key: b"ab",
            offset: 0x58,
            len: 0x13,
            deadline: None,
        })
        .unwrap();
        enc.add_framing(0x19);
        enc.finish().unwrap()
    }

    #[test]
    fn hint_has_the_documented_bytes() {
        let bytes = sample();
        let mut expected = b"kvs-hnt\x01".to_vec();
        expected.extend_from_slice(&[2, 0, 0, 0]);
        expected.extend_from_slice(&[7, 0, 0, 0]);
        expected.extend_from_slice(&[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0xdd, 0xcc, 0xbb, 0xaa]);
        expected.extend_from_slice(&[0x11, 0x22, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x33, 0x44, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x55, 0x66, 0, 0]);
        let header_crc = crc32fast::hash(&expected);
        expected.extend_from_slice(&header_crc.to_le_bytes());
        // set "ab" at 8, 0x20 bytes
        expected.extend_from_slice(&[1, 2, 0, 0, 0, 8, 0, 0, 0, 0x20, 0, 0, 0]);
        expected.extend_from_slice(b"ab");
        // set "c" with a deadline
        expected.extend_from_slice(&[2, 1, 0, 0, 0, 0x28, 0, 0, 0, 0x30, 0, 0, 0]);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(b"c");
        // remove "ab"
        expected.extend_from_slice(&[3, 2, 0, 0, 0, 0x58, 0, 0, 0, 0x13, 0, 0, 0]);
        expected.extend_from_slice(b"ab");
        // trailer: 3 entries, 5 key bytes, 0x19 framing bytes, tag
        expected.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x19, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(b"kvsH");
        assert_eq!(&bytes[..bytes.len() - 4], &expected[..]);
        // Pinned from an independent CRC-32 (Python zlib.crc32 of the bytes above).
        assert_eq!(&bytes[48..52], &HEADER_CRC.to_le_bytes());
        assert_eq!(&bytes[bytes.len() - 4..], &FILE_CRC.to_le_bytes());
        let (version, counts) = check(&bytes, 7, 0x0102, 0xaabb_ccdd, IDENTITY).unwrap();
        assert_eq!(version, Version::V2);
        assert_eq!(
            counts,
            HintCounts {
                entries: 3,
                key_bytes: 5,
                framing_bytes: 0x19
            }
        );
    }

    const IDENTITY: FileIdentity = FileIdentity {
        inode: 0x2211,
        mtime_secs: 0x4433,
        mtime_nanos: 0x6655,
    };
    const HEADER_CRC: u32 = 0xddf7_a06b;
    const FILE_CRC: u32 = 0xfe09_1a25;

    #[test]
    fn any_flipped_bit_or_cut_fails_the_check() {
        let bytes = sample();
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    check(&bad, 7, 0x0102, 0xaabb_ccdd, IDENTITY).is_err(),
                    "bit {bit} of byte {byte}"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(
                check(&bytes[..len], 7, 0x0102, 0xaabb_ccdd, IDENTITY).is_err(),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn a_hint_of_another_file_or_a_stale_one_is_refused() {
        let bytes = sample();
        let other = check(&bytes, 8, 0x0102, 0xaabb_ccdd, IDENTITY).unwrap_err();
        assert!(other.contains("hint of 7.log, not of 8.log"), "{other}");
        let stale = check(&bytes, 7, 0x0103, 0xaabb_ccdd, IDENTITY).unwrap_err();
        assert!(stale.contains("stale"), "{stale}");
        let stale = check(&bytes, 7, 0x0102, 0xaabb_ccde, IDENTITY).unwrap_err();
        assert!(stale.contains("stale"), "{stale}");
        for other in [
            FileIdentity {
                inode: 0x2212,
                ..IDENTITY
            },
            FileIdentity {
                mtime_secs: 0x4434,
                ..IDENTITY
            },
            FileIdentity {
                mtime_nanos: 0x6656,
                ..IDENTITY
            },
        ] {
            let replaced = check(&bytes, 7, 0x0102, 0xaabb_ccdd, other).unwrap_err();
            assert!(
                replaced.contains("replaced, copied or written to"),
                "{replaced}"
            );
        }
        let mut newer = bytes.clone();
        newer[7] = 2;
        let newer = check(&newer, 7, 0x0102, 0xaabb_ccdd, IDENTITY).unwrap_err();
        assert!(newer.contains("hint format version 2"), "{newer}");
    }

    #[test]
    fn entries_out_of_order_or_outside_the_file_are_refused() {
        // The third entry is moved back before the second one's end, the checksums redone.
        let bytes = sample();
        let mut bad = bytes[..bytes.len() - 4].to_vec();
        let third = HEADER_LEN + 15 + 22;
        assert_eq!(bad[third], 3, "the remove entry");
        bad[third + 5] = 0x30;
        let crc = crc32fast::hash(&bad);
        bad.extend_from_slice(&crc.to_le_bytes());
        let reason = check(&bad, 7, 0x0102, 0xaabb_ccdd, IDENTITY).unwrap_err();
        assert!(reason.contains("out of order"), "{reason}");
    }
    /// Files a compaction under way replaces get no hint; newer files listed by the same
    /// manifest do.
    #[test]
    fn files_being_replaced_by_a_compaction_get_no_hint() {
        use crate::{KvStore, KvStoreOptions, KvsEngine};
        let dir = tempfile::tempdir().unwrap();
        {
            let options = KvStoreOptions::default()
                .write_hints(false)
                .max_file_size(4 << 10);
            let store = KvStore::open_with(dir.path(), options).unwrap();
            for i in 0..100u32 {
                store.set_bytes(&i.to_be_bytes(), &[7; 100]).unwrap();
            }
        }
        let manifest = super::super::manifest::read(dir.path()).unwrap().unwrap();
        let closed: Vec<u32> = manifest
            .files()
            .iter()
            .filter(|(_, state)| matches!(state, FileState::Closed { .. }))
            .map(|(&id, _)| id)
            .collect();
        assert!(closed.len() >= 3, "{closed:?}");
        // A compaction replaces every closed file but the newest.
        let newest = *closed.last().unwrap();
        let replacing = AtomicU64::new(u64::from(newest));
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(Msg::Manifest(manifest.clone())).unwrap();
        // With the sender gone, `run` returns once it has gone through the manifest.
        drop(tx);
        let stop = AtomicBool::new(false);
        run(dir.path(), BTreeSet::new(), &rx, &stop, &replacing);
        for &id in &closed {
            assert_eq!(
                hint_path(dir.path(), id).exists(),
                id == newest,
                "hint of file {id} (files {closed:?}, replacing up to {newest})"
            );
        }
    }
}
