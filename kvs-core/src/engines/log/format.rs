//! The on-disk format of the `kvs` engine's log files.
//!
//! A data directory holds log files named `<id>.log`, where `<id>` is a decimal number; files
//! are replayed in increasing id order, and within a file from the first record to the last.
//! Which files make up the store is listed in its `MANIFEST` (see `manifest.rs`).
//!
//! Each log file starts with an 8-byte header:
//!
//! ```text
//! offset  size  field
//!      0     7  magic: the ASCII bytes "kvs-log"
//!      7     1  format version: 1 or 2
//! ```
//!
//! followed by records of that version, back to back: one file, one version. kvs writes new
//! records in version 2 only; it reads version 1 files (release 0.1.0) as they are, and when
//! the active file of a store it opens for writing is of version 1, it seals it and moves on
//! to a new version-2 file. Compaction writes version 2 (the version-1 records it copies are
//! re-encoded).
//!
//! # Version 1
//!
//! Each record (all integers little-endian):
//!
//! ```text
//! offset  size       field
//!      0     4       crc: CRC-32 (IEEE) of every byte of the record after this field
//!      4     1       kind: 1 = set, 2 = remove, 3 = seal
//!      5     4       key_len: length of the key in bytes (at most MAX_KEY_LEN)
//!      9     4       value_len: length of the value in bytes (0 for remove; at most MAX_VALUE_LEN)
//!     13     key_len   key bytes
//!  13+kl     value_len value bytes
//! ```
//!
//! Its blind spot: nothing checks the length fields before the record they declare is read,
//! so a damaged length at the end of the newest file looks like a torn write (see
//! `recovery.rs`). Version 2 closes it.
//!
//! # Version 2
//!
//! Each record has a 17-byte fixed header with its own checksum, then a body with another:
//!
//! ```text
//! offset  size       field
//!      0     4       header_crc: CRC-32 (IEEE) of bytes 4..17 (kind, lengths, body_crc)
//!      4     1       kind: 0x11 = set, 0x12 = remove, 0x13 = seal, 0x14 = set with deadline,
//!                    0x15 = batch
//!      5     4       key_len (at most MAX_KEY_LEN)
//!      9     4       value_len (0 for remove; at most MAX_VALUE_LEN)
//!     13     4       body_crc: CRC-32 (IEEE) of every byte of the record from offset 17 on
//!     17     8       deadline (kind 0x14 only): u64, milliseconds since the Unix epoch
//!  17(+8)    key_len   key bytes
//!  ...       value_len value bytes
//! ```
//!
//! A set record without a deadline (kind 0x11) has no deadline field: a deadline costs 8
//! bytes, only on the records that have one. The version-2 kind bytes differ from the
//! version-1 ones, so a record's bytes say which version they are.
//!
//! A **seal** (v1 kind 3, v2 kind 0x13) has an empty key and an 8-byte value: its own offset
//! in the file (u64). Writes leave a file only after sealing it, and compaction seals each
//! file it writes, so every log file but the newest ends with a seal: a closed file that does
//! not was cut short, even if exactly at a record boundary. (Seals may also appear earlier in
//! a file, when moving on to a new file failed and writes went on in the old one.)
//!
//! A **batch** (kind 0x15, version 2 only) frames the records of one atomic batch: an empty
//! key and a 12-byte value
//!
//! ```text
//! offset  size  field (of the value)
//!      0     4  count: how many member records follow (at least 1)
//!      4     4  members_len: their total length in bytes (at most MAX_BATCH_BYTES)
//!      8     4  members_crc: CRC-32 of the members' header_crc fields, in order
//! ```
//!
//! followed at once by its `count` member records (set, set with deadline, remove), written
//! together with it in one `pwrite`. Replay applies a batch only when the whole of it is there
//! and valid; a batch cut anywhere at the end of the newest file is a torn write and is
//! dropped whole. Each member is an ordinary record the index may point to.
//!
//! A record is valid only if its kind and lengths are in range, it lies wholly inside the file
//! and its checksums match. Anything else is a torn write (at the end of the newest file) or
//! corruption (anywhere else); see `recovery.rs`.

use std::fmt;

use crate::{KvsError, Result};

/// The first 8 bytes of every log file kvs writes (version 2).
pub const FILE_MAGIC: [u8; 8] = *b"kvs-log\x02";
/// The first 8 bytes of a log file of version 1 (release 0.1.0), still read.
pub const FILE_MAGIC_V1: [u8; 8] = *b"kvs-log\x01";
/// Size of a version-1 record header (crc, kind, key_len, value_len).
pub const HEADER_LEN_V1: usize = 13;
/// Size of a version-2 record header (header_crc, kind, key_len, value_len, body_crc).
pub const HEADER_LEN: usize = 17;
/// Size of the deadline field of a version-2 set record with a deadline.
pub const DEADLINE_LEN: usize = 8;
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1 << 20;
/// Longest value accepted, in bytes (the same limit Redis puts on a bulk string).
pub const MAX_VALUE_LEN: usize = 512 << 20;
/// Most bytes of member records one batch may hold (encoded): 64 MiB. A batch always goes
/// whole into one file, growing it past its size limit if need be; this bounds how far, and
/// how much memory a batch takes to write (it is encoded in one buffer) and to replay.
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Length of a batch record's value (count, members_len, members_crc).
pub const BATCH_VALUE_LEN: usize = 12;
/// Length of a whole batch record, the frame in front of the members.
pub const BATCH_RECORD_LEN: usize = HEADER_LEN + BATCH_VALUE_LEN;

/// A log file's format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1 = 1,
    V2 = 2,
}

impl Version {
    /// The version of a file whose first 8 bytes are `magic`: `Err(Some(v))` for the magic
    /// of an unknown version `v`, `Err(None)` for no kvs magic at all.
    pub fn from_magic(magic: &[u8]) -> std::result::Result<Version, Option<u8>> {
        if magic == FILE_MAGIC {
            Ok(Version::V2)
        } else if magic == FILE_MAGIC_V1 {
            Ok(Version::V1)
        } else if magic.len() == FILE_MAGIC.len() && magic[..7] == FILE_MAGIC[..7] {
            Err(Some(magic[7]))
        } else {
            Err(None)
        }
    }

    /// Size of this version's record header.
    pub fn header_len(self) -> usize {
        match self {
            Version::V1 => HEADER_LEN_V1,
            Version::V2 => HEADER_LEN,
        }
    }
}

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Sets the key to the value (version 2: with a deadline, if the record has one).
    Set,
    /// Removes the key; the value is empty.
    Remove,
    /// Marks the end of a closed file; the key is empty, the value is the record's offset.
    Seal,
    /// Frames the member records of an atomic batch (version 2 only).
    Batch,
}

/// The parsed fixed-size part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub version: Version,
    /// The checksum the file's fingerprint is made of: version 1's crc, version 2's
    /// header_crc (which covers the body's checksum).
    pub crc: u32,
    /// The checksum of the body: version 1's crc (its body is everything after it), version
    /// 2's body_crc.
    pub body_crc: u32,
    pub kind: RecordKind,
    /// Version 2 set records only: whether the record has a deadline field.
    pub has_deadline: bool,
    pub key_len: usize,
    pub value_len: usize,
}

impl RecordHeader {
    /// Where the part the body checksum covers starts.
    pub fn body_start(&self) -> usize {
        match self.version {
            Version::V1 => 4,
            Version::V2 => HEADER_LEN,
        }
    }

    /// Where the key starts (after the header and any deadline).
    pub fn key_start(&self) -> usize {
        self.version.header_len() + if self.has_deadline { DEADLINE_LEN } else { 0 }
    }

    /// Where the value starts.
    pub fn value_start(&self) -> usize {
        self.key_start() + self.key_len
    }

    /// Total length of the record, header included.
    pub fn record_len(&self) -> usize {
        self.value_start() + self.value_len
    }

    /// The deadline of a valid record, given (at least) its bytes up to its key.
    #[cfg(test)]
    pub fn deadline(&self, record: &[u8]) -> Option<u64> {
        if !self.has_deadline {
            return None;
        }
        let at = self.version.header_len();
        record
            .get(at..at + DEADLINE_LEN)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
}

/// Length of a seal record's value (its own offset, u64).
pub const SEAL_VALUE_LEN: usize = 8;
/// Length of a version-2 seal record.
pub const SEAL_RECORD_LEN: usize = HEADER_LEN + SEAL_VALUE_LEN;

const KIND_SET: u8 = 0x11;
const KIND_REMOVE: u8 = 0x12;
const KIND_SEAL: u8 = 0x13;
const KIND_SET_DEADLINE: u8 = 0x14;
const KIND_BATCH: u8 = 0x15;

/// Appends a version-2 seal record for a file whose records end at `offset` to `buf`.
pub fn encode_seal(buf: &mut Vec<u8>, offset: u64) {
    encode_v2(buf, KIND_SEAL, &[], b"", &offset.to_le_bytes());
}

/// Checks key and value sizes against the format's limits.
pub fn check_sizes(key: &[u8], value: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvsError::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(KvsError::InvalidArgument(format!(
            "value is {} bytes; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

/// The length of the version-2 set record of `key` and `value` (with a deadline or not).
pub fn set_record_len(key: &[u8], value: &[u8], deadline: Option<u64>) -> usize {
    HEADER_LEN + deadline.map_or(0, |_| DEADLINE_LEN) + key.len() + value.len()
}

/// Appends a version-2 set record to `buf`. Sizes must have passed [`check_sizes`].
pub fn encode_set(buf: &mut Vec<u8>, key: &[u8], value: &[u8], deadline: Option<u64>) {
    match deadline {
        None => encode_v2(buf, KIND_SET, &[], key, value),
        Some(d) => encode_v2(buf, KIND_SET_DEADLINE, &d.to_le_bytes(), key, value),
    }
}

/// Appends a version-2 remove record (tombstone) to `buf`.
pub fn encode_remove(buf: &mut Vec<u8>, key: &[u8]) {
    encode_v2(buf, KIND_REMOVE, &[], key, b"");
}

/// Appends the version-2 batch record framing `count` members of `members_len` bytes whose
/// header checksums, in order, have the CRC-32 `members_crc` (see [`MembersChecksum`]).
pub fn encode_batch(buf: &mut Vec<u8>, count: u32, members_len: u32, members_crc: u32) {
    let mut value = [0u8; BATCH_VALUE_LEN];
    value[..4].copy_from_slice(&count.to_le_bytes());
    value[4..8].copy_from_slice(&members_len.to_le_bytes());
    value[8..].copy_from_slice(&members_crc.to_le_bytes());
    encode_v2(buf, KIND_BATCH, &[], b"", &value);
}

/// The fields of a batch record's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFrame {
    pub count: u32,
    pub members_len: u32,
    pub members_crc: u32,
}

impl BatchFrame {
    /// Parses a batch record's 12-byte value.
    pub fn decode(value: &[u8]) -> Option<BatchFrame> {
        let field = |at: usize| {
            value
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        Some(BatchFrame {
            count: field(0)?,
            members_len: field(4)?,
            members_crc: field(8)?,
        })
    }
}

/// The checksum of a batch's members: CRC-32 of their header_crc fields in order.
#[derive(Default)]
pub struct MembersChecksum(crc32fast::Hasher);

impl MembersChecksum {
    pub fn add(&mut self, header_crc: u32) {
        self.0.update(&header_crc.to_le_bytes());
    }

    pub fn value(&self) -> u32 {
        self.0.clone().finalize()
    }
}

/// Appends one version-2 record: `extra` (the deadline field, or nothing), key and value.
fn encode_v2(buf: &mut Vec<u8>, kind: u8, extra: &[u8], key: &[u8], value: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    // Lengths fit in u32: check_sizes bounds them far below u32::MAX.
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(extra);
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let body_crc = crc32fast::hash(&buf[start + HEADER_LEN..]);
    buf[start + 13..start + HEADER_LEN].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&buf[start + 4..start + HEADER_LEN]);
    buf[start..start + 4].copy_from_slice(&header_crc.to_le_bytes());
}

/// Appends a version-1 seal record for a file whose records end at `offset` to `buf`: what
/// seals a version-1 active file (release 0.1.0) before writes move on to a version-2 one.
pub fn encode_seal_v1(buf: &mut Vec<u8>, offset: u64) {
    encode_record_v1(buf, RecordKind::Seal, b"", &offset.to_le_bytes());
}

/// Appends one version-1 record to `buf` (seals, and tests that build files of release
/// 0.1.0).
pub fn encode_record_v1(buf: &mut Vec<u8>, kind: RecordKind, key: &[u8], value: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(match kind {
        RecordKind::Set => 1,
        RecordKind::Remove => 2,
        RecordKind::Seal => 3,
        RecordKind::Batch => panic!("version 1 has no batch records"),
    });
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at a record's start are not a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    UnknownKind(u8),
    KeyTooLong(usize),
    ValueTooLong(usize),
    RemoveWithValue(usize),
    MalformedSeal {
        key_len: usize,
        value_len: usize,
    },
    MalformedBatch {
        key_len: usize,
        value_len: usize,
    },
    /// Version 2: the header's own checksum does not match (a damaged header).
    HeaderChecksum(ChecksumMismatch),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeaderError::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            HeaderError::KeyTooLong(len) => write!(f, "key length {len} over the limit"),
            HeaderError::ValueTooLong(len) => write!(f, "value length {len} over the limit"),
            HeaderError::RemoveWithValue(len) => {
                write!(f, "remove record with a {len}-byte value")
            }
            HeaderError::MalformedSeal { key_len, value_len } => write!(
                f,
                "seal record with a {key_len}-byte key and a {value_len}-byte value"
            ),
            HeaderError::MalformedBatch { key_len, value_len } => write!(
                f,
                "batch record with a {key_len}-byte key and a {value_len}-byte value"
            ),
            HeaderError::HeaderChecksum(e) => write!(f, "damaged record header: {e}"),
        }
    }
}

/// The version a record's kind byte (its fifth byte) belongs to.
pub fn version_of_kind(kind: u8) -> Option<Version> {
    match kind {
        1..=3 => Some(Version::V1),
        KIND_SET..=KIND_BATCH => Some(Version::V2),
        _ => None,
    }
}

/// Parses a record header of `version` from the first `version.header_len()` bytes of
/// `bytes` (which must hold that many): header checksum (version 2), kind and lengths in
/// range, and the shape its kind requires.
pub fn decode_header(
    bytes: &[u8],
    version: Version,
) -> std::result::Result<RecordHeader, HeaderError> {
    parse_header(bytes, version, true)
}

/// [`decode_header`], checking the version-2 header checksum only if `check_header_crc`.
fn parse_header(
    bytes: &[u8],
    version: Version,
    check_header_crc: bool,
) -> std::result::Result<RecordHeader, HeaderError> {
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let crc = u32_at(0);
    let (kind, has_deadline, body_crc) = match version {
        Version::V1 => {
            let kind = match bytes[4] {
                1 => RecordKind::Set,
                2 => RecordKind::Remove,
                3 => RecordKind::Seal,
                other => return Err(HeaderError::UnknownKind(other)),
            };
            (kind, false, crc)
        }
        Version::V2 => {
            let computed = if check_header_crc {
                crc32fast::hash(&bytes[4..HEADER_LEN])
            } else {
                crc
            };
            if computed != crc {
                return Err(HeaderError::HeaderChecksum(ChecksumMismatch {
                    stored: crc,
                    computed,
                }));
            }
            let (kind, has_deadline) = match bytes[4] {
                KIND_SET => (RecordKind::Set, false),
                KIND_REMOVE => (RecordKind::Remove, false),
                KIND_SEAL => (RecordKind::Seal, false),
                KIND_SET_DEADLINE => (RecordKind::Set, true),
                KIND_BATCH => (RecordKind::Batch, false),
                other => return Err(HeaderError::UnknownKind(other)),
            };
            (kind, has_deadline, u32_at(13))
        }
    };
    let key_len = u32_at(5) as usize;
    let value_len = u32_at(9) as usize;
    if key_len > MAX_KEY_LEN {
        return Err(HeaderError::KeyTooLong(key_len));
    }
    if value_len > MAX_VALUE_LEN {
        return Err(HeaderError::ValueTooLong(value_len));
    }
    if kind == RecordKind::Remove && value_len != 0 {
        return Err(HeaderError::RemoveWithValue(value_len));
    }
    if kind == RecordKind::Seal && (key_len != 0 || value_len != SEAL_VALUE_LEN) {
        return Err(HeaderError::MalformedSeal { key_len, value_len });
    }
    if kind == RecordKind::Batch && (key_len != 0 || value_len != BATCH_VALUE_LEN) {
        return Err(HeaderError::MalformedBatch { key_len, value_len });
    }
    Ok(RecordHeader {
        version,
        crc,
        body_crc,
        kind,
        has_deadline,
        key_len,
        value_len,
    })
}

/// A record whose bytes do not have the checksum its header stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumMismatch {
    pub stored: u32,
    pub computed: u32,
}

impl fmt::Display for ChecksumMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checksum mismatch (stored {:#010x}, computed {:#010x})",
            self.stored, self.computed
        )
    }
}

/// The body checksum of a record, fed its bytes in order from its first byte on, in one piece
/// or in many: the bytes before the body (version 1: the crc field; version 2: the whole
/// header) are skipped. The one place a record's body checksum is computed, for every check of
/// it (a whole record in memory, one read in chunks by replay, a candidate of the scan after a
/// bad record).
pub struct RecordChecksum {
    hasher: crc32fast::Hasher,
    /// How many leading bytes are not part of the body.
    skip: usize,
    /// How many bytes of the record were fed so far.
    seen: usize,
}

impl RecordChecksum {
    /// A checksum of the body of the record `header` describes.
    pub fn new(header: &RecordHeader) -> RecordChecksum {
        RecordChecksum {
            hasher: crc32fast::Hasher::new(),
            skip: header.body_start(),
            seen: 0,
        }
    }

    /// Feeds the next `bytes` of the record.
    pub fn update(&mut self, bytes: &[u8]) {
        let skip = self.skip.saturating_sub(self.seen).min(bytes.len());
        self.hasher.update(&bytes[skip..]);
        self.seen += bytes.len();
    }

    /// The checksum of the bytes fed so far.
    pub fn value(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// Checks the bytes fed so far against the checksum `header` stores.
    pub fn check(&self, header: &RecordHeader) -> std::result::Result<(), ChecksumMismatch> {
        let computed = self.value();
        if computed != header.body_crc {
            return Err(ChecksumMismatch {
                stored: header.body_crc,
                computed,
            });
        }
        Ok(())
    }
}

/// Why bytes held in memory are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than a header.
    Short,
    Header(HeaderError),
    /// The header declares a record of `declared` bytes.
    LengthMismatch {
        len: usize,
        declared: usize,
    },
    Checksum(ChecksumMismatch),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Short => f.write_str("record shorter than its header"),
            RecordError::Header(e) => e.fmt(f),
            RecordError::LengthMismatch { len, declared } => {
                write!(f, "record is {len} bytes, its header says {declared}")
            }
            RecordError::Checksum(e) => e.fmt(f),
        }
    }
}

/// Checks a whole record (header included) held in `record`, of either version (its kind
/// byte says which): header, length and checksums.
pub fn verify_record(record: &[u8]) -> std::result::Result<RecordHeader, RecordError> {
    check_record(record, true)
}

/// Checks a record a read found where the index says one of `record.len()` bytes lies: as
/// [`verify_record`], but without the version-2 header checksum. That checksum is what tells
/// a damaged header from a record being written, which only replay has to decide (and it
/// checked this header when the index learned of the record). Here any damage to the header
/// still fails: a changed length, kind or deadline flag no longer adds up to `record.len()`
/// or to where the key lies (the caller compares it), and a changed body checksum fails the
/// body. The read path then computes one CRC over the body, as version 1 did.
pub fn verify_record_at_read(record: &[u8]) -> std::result::Result<RecordHeader, RecordError> {
    check_record(record, false)
}

fn check_record(
    record: &[u8],
    check_header_crc: bool,
) -> std::result::Result<RecordHeader, RecordError> {
    let kind = *record.get(4).ok_or(RecordError::Short)?;
    let version =
        version_of_kind(kind).ok_or(RecordError::Header(HeaderError::UnknownKind(kind)))?;
    if record.len() < version.header_len() {
        return Err(RecordError::Short);
    }
    let header = parse_header(record, version, check_header_crc).map_err(RecordError::Header)?;
    if record.len() != header.record_len() {
        return Err(RecordError::LengthMismatch {
            len: record.len(),
            declared: header.record_len(),
        });
    }
    let mut checksum = RecordChecksum::new(&header);
    checksum.update(record);
    checksum.check(&header).map_err(RecordError::Checksum)?;
    Ok(header)
}

/// The length of the record at the start of `bytes`, from its header alone (not checked): for
/// walking records just encoded in memory. `None` if fewer bytes than a header are left or the
/// kind byte is unknown.
pub fn record_len_unchecked(bytes: &[u8]) -> Option<usize> {
    let version = version_of_kind(*bytes.get(4)?)?;
    let header = bytes.get(..version.header_len())?;
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]) as usize
    };
    let deadline = if header[4] == KIND_SET_DEADLINE {
        DEADLINE_LEN
    } else {
        0
    };
    Some(version.header_len() + deadline + u32_at(5) + u32_at(9))
}

/// The key of the record at the start of `bytes`, from its header alone (not checked): for the
/// index, which compares a key it looks up with the copy in the record a get reads anyway.
/// `None` if `bytes` ends before the key or the kind byte is unknown.
pub fn record_key_unchecked(bytes: &[u8]) -> Option<&[u8]> {
    let version = version_of_kind(*bytes.get(4)?)?;
    let key_len = u32::from_le_bytes(*bytes.get(5..9)?.first_chunk::<4>()?) as usize;
    let deadline = if bytes[4] == KIND_SET_DEADLINE {
        DEADLINE_LEN
    } else {
        0
    };
    let start = version.header_len() + deadline;
    bytes.get(start..start.checked_add(key_len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_of_a_record_is_read_from_its_header_in_every_kind_and_version() {
        let mut v1 = Vec::new();
        encode_record_v1(&mut v1, RecordKind::Set, b"ab", b"xyz");
        assert_eq!(record_key_unchecked(&v1), Some(&b"ab"[..]));
        let mut set = Vec::new();
        encode_set(&mut set, b"key", b"value", None);
        assert_eq!(&set[17..20], b"key");
        assert_eq!(record_key_unchecked(&set), Some(&b"key"[..]));
        let mut expiring = Vec::new();
        encode_set(&mut expiring, b"key", b"value", Some(7));
        assert_eq!(&expiring[25..28], b"key");
        assert_eq!(record_key_unchecked(&expiring), Some(&b"key"[..]));
        let mut remove = Vec::new();
        encode_remove(&mut remove, b"gone");
        assert_eq!(record_key_unchecked(&remove), Some(&b"gone"[..]));
        // Only the bytes up to the end of the key are needed; fewer, or a kind no version
        // has, give none.
        assert_eq!(record_key_unchecked(&set[..20]), Some(&b"key"[..]));
        assert_eq!(record_key_unchecked(&set[..19]), None);
        assert_eq!(record_key_unchecked(&set[..4]), None);
        let mut unknown = set.clone();
        unknown[4] = 0x7f;
        assert_eq!(record_key_unchecked(&unknown), None);
    }

    #[test]
    fn set_record_has_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_record_v1(&mut buf, RecordKind::Set, b"ab", b"xyz");
        let crc = crc32fast::hash(&[1, 2, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', b'x', b'y', b'z']);
        let mut expected = crc.to_le_bytes().to_vec();
        expected.extend_from_slice(&[1, 2, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', b'x', b'y', b'z']);
        assert_eq!(buf, expected);
        // Pinned from an independent CRC-32 (Python zlib.crc32), so a change of polynomial fails.
        assert_eq!(&buf[..4], &0x34d7_133fu32.to_le_bytes());
    }

    #[test]
    fn remove_record_has_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_record_v1(&mut buf, RecordKind::Remove, b"k", b"");
        assert_eq!(&buf[4..], &[2, 1, 0, 0, 0, 0, 0, 0, 0, b'k']);
        assert_eq!(verify_record(&buf).unwrap().kind, RecordKind::Remove);
    }

    #[test]
    fn seal_record_has_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_record_v1(
            &mut buf,
            RecordKind::Seal,
            b"",
            &0x0102_0304u64.to_le_bytes(),
        );
        assert_eq!(
            &buf[4..],
            &[3, 0, 0, 0, 0, 8, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]
        );
        assert_eq!(verify_record(&buf).unwrap().kind, RecordKind::Seal);
        let mut bad = [0u8; HEADER_LEN_V1];
        bad[4] = 3;
        bad[5] = 1;
        assert!(
            decode_header(&bad, Version::V1).is_err(),
            "a seal with a key"
        );
    }

    #[test]
    fn any_flipped_bit_fails_verification() {
        let mut buf = Vec::new();
        encode_record_v1(&mut buf, RecordKind::Set, b"key", b"value");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    verify_record(&bad).is_err(),
                    "flip of bit {bit} in byte {byte}"
                );
            }
        }
    }

    #[test]
    fn the_checksum_is_the_same_whatever_the_pieces() {
        let mut buf = Vec::new();
        encode_record_v1(&mut buf, RecordKind::Set, b"key", b"a value of some length");
        let header = verify_record(&buf).unwrap();
        for first in 0..buf.len() {
            for second in first..buf.len() {
                let mut checksum = RecordChecksum::new(&header);
                checksum.update(&buf[..first]);
                checksum.update(&buf[first..second]);
                checksum.update(&buf[second..]);
                assert_eq!(
                    checksum.value(),
                    header.crc,
                    "split at {first} and {second}"
                );
                assert_eq!(checksum.check(&header), Ok(()));
            }
        }
        let mut short = RecordChecksum::new(&header);
        short.update(&buf[..buf.len() - 1]);
        assert!(short.check(&header).is_err());
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let mut buf = Vec::new();
        encode_record_v1(&mut buf, RecordKind::Set, b"k", b"v");
        let reason = |bytes: &[u8]| verify_record(bytes).unwrap_err().to_string();
        assert_eq!(reason(&buf[..5]), "record shorter than its header");
        assert_eq!(
            reason(&buf[..buf.len() - 1]),
            "record is 14 bytes, its header says 15"
        );
        let mut bad = buf.clone();
        bad[14] ^= 1;
        let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let mut checksum = RecordChecksum::new(&verify_record(&buf).unwrap());
        checksum.update(&bad);
        assert_eq!(
            reason(&bad),
            format!(
                "checksum mismatch (stored {stored:#010x}, computed {:#010x})",
                checksum.value()
            )
        );
        let mut header = [0u8; HEADER_LEN_V1];
        header[4] = 9;
        assert_eq!(reason(&header), "unknown record kind 9");
        header[4] = 2;
        header[9] = 1;
        assert_eq!(reason(&header), "remove record with a 1-byte value");
        header[4] = 3;
        header[5] = 2;
        assert_eq!(
            reason(&header),
            "seal record with a 2-byte key and a 1-byte value"
        );
        header[4] = 1;
        header[5..9].copy_from_slice(&(MAX_KEY_LEN as u32 + 1).to_le_bytes());
        assert_eq!(
            reason(&header),
            format!("key length {} over the limit", MAX_KEY_LEN + 1)
        );
        header[5..9].copy_from_slice(&[0; 4]);
        header[9..13].copy_from_slice(&(MAX_VALUE_LEN as u32 + 1).to_le_bytes());
        assert_eq!(
            reason(&header),
            format!("value length {} over the limit", MAX_VALUE_LEN + 1)
        );
    }

    #[test]
    fn oversized_lengths_are_rejected_before_reading() {
        let mut header = [0u8; HEADER_LEN_V1];
        header[4] = 1;
        header[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header(&header, Version::V1).is_err());
        assert!(check_sizes(&vec![0; MAX_KEY_LEN + 1], b"").is_err());
    }

    // Version 2.

    /// The bytes of a version-2 record built by hand from the layout in the module docs,
    /// with CRCs pinned from an independent CRC-32 (Python's zlib.crc32).
    fn v2_by_hand(kind: u8, key_len: u32, value_len: u32, body: &[u8]) -> Vec<u8> {
        let mut header = vec![kind];
        header.extend_from_slice(&key_len.to_le_bytes());
        header.extend_from_slice(&value_len.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        let mut record = crc32fast::hash(&header).to_le_bytes().to_vec();
        record.extend_from_slice(&header);
        record.extend_from_slice(body);
        record
    }

    #[test]
    fn v2_set_record_has_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_set(&mut buf, b"ab", b"xyz", None);
        assert_eq!(
            buf,
            [
                &0x5a02_6319u32.to_le_bytes()[..],
                &[0x11, 2, 0, 0, 0, 3, 0, 0, 0],
                &0xe790_f51du32.to_le_bytes(),
                b"abxyz",
            ]
            .concat()
        );
        assert_eq!(buf, v2_by_hand(0x11, 2, 3, b"abxyz"));
        let header = verify_record(&buf).unwrap();
        assert_eq!(
            (header.version, header.kind, header.has_deadline),
            (Version::V2, RecordKind::Set, false)
        );
        assert_eq!((header.key_start(), header.value_start()), (17, 19));
        assert_eq!(header.deadline(&buf), None);
        assert_eq!(set_record_len(b"ab", b"xyz", None), buf.len());
    }

    #[test]
    fn v2_set_with_deadline_has_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_set(&mut buf, b"k", b"v", Some(0x0102_0304_0506_0708));
        let body = [&[8, 7, 6, 5, 4, 3, 2, 1][..], b"kv"].concat();
        assert_eq!(buf, v2_by_hand(0x14, 1, 1, &body));
        assert_eq!(buf.len(), 17 + 8 + 2);
        let header = verify_record(&buf).unwrap();
        assert_eq!((header.kind, header.has_deadline), (RecordKind::Set, true));
        assert_eq!(header.deadline(&buf), Some(0x0102_0304_0506_0708));
        assert_eq!(&buf[header.key_start()..header.value_start()], b"k");
        assert_eq!(&buf[header.value_start()..], b"v");
        assert_eq!(set_record_len(b"k", b"v", Some(1)), buf.len());
    }

    #[test]
    fn v2_remove_seal_and_batch_records_have_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_remove(&mut buf, b"k");
        assert_eq!(buf, v2_by_hand(0x12, 1, 0, b"k"));
        assert_eq!(verify_record(&buf).unwrap().kind, RecordKind::Remove);

        let mut buf = Vec::new();
        encode_seal(&mut buf, 0x0102_0304);
        assert_eq!(buf, v2_by_hand(0x13, 0, 8, &[4, 3, 2, 1, 0, 0, 0, 0]));
        assert_eq!(buf.len(), SEAL_RECORD_LEN);
        assert_eq!(verify_record(&buf).unwrap().kind, RecordKind::Seal);

        let mut buf = Vec::new();
        encode_batch(&mut buf, 3, 0x100, 0xaabb_ccdd);
        let value = [3, 0, 0, 0, 0, 1, 0, 0, 0xdd, 0xcc, 0xbb, 0xaa];
        assert_eq!(buf, v2_by_hand(0x15, 0, 12, &value));
        assert_eq!(buf.len(), BATCH_RECORD_LEN);
        let header = verify_record(&buf).unwrap();
        assert_eq!(header.kind, RecordKind::Batch);
        assert_eq!(
            BatchFrame::decode(&buf[HEADER_LEN..]),
            Some(BatchFrame {
                count: 3,
                members_len: 0x100,
                members_crc: 0xaabb_ccdd
            })
        );
        // The members' checksum is the CRC-32 of their header checksums, in order.
        let mut members = MembersChecksum::default();
        members.add(0x0403_0201);
        members.add(0x0807_0605);
        assert_eq!(members.value(), crc32fast::hash(&[1, 2, 3, 4, 5, 6, 7, 8]));
    }

    #[test]
    fn a_damaged_v2_length_fails_the_header_checksum() {
        let mut buf = Vec::new();
        encode_set(&mut buf, b"key", b"value", Some(5));
        for byte in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                if byte == 4 && version_of_kind(bad[4]) != Some(Version::V2) {
                    continue; // no longer a version-2 kind byte at all
                }
                match decode_header(&bad, Version::V2) {
                    Err(HeaderError::HeaderChecksum(_)) => {}
                    other => panic!("flip of bit {bit} in header byte {byte}: {other:?}"),
                }
            }
        }
        // Any flip anywhere fails verification.
        for byte in 0..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x40;
            assert!(verify_record(&bad).is_err(), "flip in byte {byte}");
        }
        let mut bad = buf.clone();
        bad[9] ^= 1;
        assert!(verify_record(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("damaged record header: checksum mismatch"));
    }

    #[test]
    fn v2_body_checksum_is_the_same_whatever_the_pieces() {
        let mut buf = Vec::new();
        encode_set(&mut buf, b"key", b"a value of some length", Some(77));
        let header = verify_record(&buf).unwrap();
        for first in 0..buf.len() {
            let mut checksum = RecordChecksum::new(&header);
            checksum.update(&buf[..first]);
            checksum.update(&buf[first..]);
            assert_eq!(checksum.check(&header), Ok(()), "split at {first}");
        }
        assert_eq!(record_len_unchecked(&buf), Some(buf.len()));
        let mut v1 = Vec::new();
        encode_record_v1(&mut v1, RecordKind::Set, b"k", b"vv");
        assert_eq!(record_len_unchecked(&v1), Some(v1.len()));
    }

    #[test]
    fn a_read_catches_any_flipped_bit_without_the_header_checksum() {
        // Flips in the header: the length no longer adds up, the kind or deadline flag is
        // wrong, or the body checksum no longer matches. (The key is compared by the caller.)
        for deadline in [None, Some(99)] {
            let mut buf = Vec::new();
            encode_set(&mut buf, b"key", b"value", deadline);
            assert!(verify_record_at_read(&buf).is_ok());
            for byte in 4..buf.len() {
                for bit in 0..8 {
                    let mut bad = buf.clone();
                    bad[byte] ^= 1 << bit;
                    let caught = match verify_record_at_read(&bad) {
                        Err(_) => true,
                        Ok(h) => bad.get(h.key_start()..h.value_start()) != Some(b"key"),
                    };
                    assert!(caught, "flip of bit {bit} in byte {byte} ({deadline:?})");
                }
            }
        }
    }

    #[test]
    fn file_magics_name_their_version() {
        assert_eq!(Version::from_magic(b"kvs-log\x02"), Ok(Version::V2));
        assert_eq!(Version::from_magic(b"kvs-log\x01"), Ok(Version::V1));
        assert_eq!(Version::from_magic(b"kvs-log\x03"), Err(Some(3)));
        assert_eq!(Version::from_magic(b"KVS-log\x01"), Err(None));
    }
}
