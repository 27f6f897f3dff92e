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
//!      7     1  format version: 1
//! ```
//!
//! followed by records, back to back, each laid out as (all integers little-endian):
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
//! A **seal** record (kind 3) has an empty key and an 8-byte value: its own offset in the file
//! (u64, little-endian). Writes leave a file only after sealing it, and compaction seals each
//! file it writes, so every log file but the newest ends with a seal: a closed file that does
//! not was cut short, even if exactly at a record boundary. (Seals may also appear earlier in
//! a file, when moving on to a new file failed and writes went on in the old one.)
//!
//! A record is valid only if its kind and lengths are in range, it lies wholly inside the file
//! and its checksum matches. Anything else is a torn write (at the end of the newest file) or
//! corruption (anywhere else); see `recovery.rs`.

use std::fmt;

use crate::{KvsError, Result};

/// The first 8 bytes of every log file.
pub const FILE_MAGIC: [u8; 8] = *b"kvs-log\x01";
/// Size of the record header (crc, kind, key_len, value_len).
pub const HEADER_LEN: usize = 13;
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1 << 20;
/// Longest value accepted, in bytes (the same limit Redis puts on a bulk string).
pub const MAX_VALUE_LEN: usize = 512 << 20;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Sets the key to the value.
    Set = 1,
    /// Removes the key; the value is empty.
    Remove = 2,
    /// Marks the end of a closed file; the key is empty, the value is the record's offset.
    Seal = 3,
}

/// The parsed fixed-size part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub kind: RecordKind,
    pub key_len: usize,
    pub value_len: usize,
}

impl RecordHeader {
    /// Total length of the record, header included.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.key_len + self.value_len
    }
}

/// Length of a seal record's value (its own offset, u64).
pub const SEAL_VALUE_LEN: usize = 8;

/// Appends a seal record for a file whose records end at `offset` to `buf`.
pub fn encode_seal(buf: &mut Vec<u8>, offset: u64) {
    encode_record(buf, RecordKind::Seal, b"", &offset.to_le_bytes());
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

/// Appends one encoded record to `buf`. Sizes must have passed [`check_sizes`].
pub fn encode_record(buf: &mut Vec<u8>, kind: RecordKind, key: &[u8], value: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind as u8);
    // Lengths fit in u32: check_sizes bounds them far below u32::MAX.
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let mut checksum = RecordChecksum::new();
    checksum.update(&buf[start..]);
    buf[start..start + 4].copy_from_slice(&checksum.value().to_le_bytes());
}

/// Why 13 bytes are not a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    UnknownKind(u8),
    KeyTooLong(usize),
    ValueTooLong(usize),
    RemoveWithValue(usize),
    MalformedSeal { key_len: usize, value_len: usize },
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
        }
    }
}

/// Parses a record header: kind and lengths in range, and the shape its kind requires.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> std::result::Result<RecordHeader, HeaderError> {
    let crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let kind = match bytes[4] {
        1 => RecordKind::Set,
        2 => RecordKind::Remove,
        3 => RecordKind::Seal,
        other => return Err(HeaderError::UnknownKind(other)),
    };
    let key_len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let value_len = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
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
    Ok(RecordHeader {
        crc,
        kind,
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

/// The checksum of a record, fed its bytes in order from its first byte on, in one piece or
/// in many: the crc field itself (the first 4 bytes) is skipped. The one place a record's
/// checksum is computed, for writing it and for every check of it (a whole record in memory,
/// one read in chunks by replay, a candidate of the scan after a bad record).
pub struct RecordChecksum {
    hasher: crc32fast::Hasher,
    /// How many bytes of the record were fed so far.
    seen: usize,
}

impl RecordChecksum {
    pub fn new() -> RecordChecksum {
        RecordChecksum {
            hasher: crc32fast::Hasher::new(),
            seen: 0,
        }
    }

    /// Feeds the next `bytes` of the record.
    pub fn update(&mut self, bytes: &[u8]) {
        let skip = 4usize.saturating_sub(self.seen).min(bytes.len());
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
        if computed != header.crc {
            return Err(ChecksumMismatch {
                stored: header.crc,
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

/// Checks a whole record (header included) held in `record`: header, length and checksum.
pub fn verify_record(record: &[u8]) -> std::result::Result<RecordHeader, RecordError> {
    let header_bytes: &[u8; HEADER_LEN] = record
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(RecordError::Short)?;
    let header = decode_header(header_bytes).map_err(RecordError::Header)?;
    if record.len() != header.record_len() {
        return Err(RecordError::LengthMismatch {
            len: record.len(),
            declared: header.record_len(),
        });
    }
    let mut checksum = RecordChecksum::new();
    checksum.update(record);
    checksum.check(&header).map_err(RecordError::Checksum)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_record_has_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordKind::Set, b"ab", b"xyz");
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
        encode_record(&mut buf, RecordKind::Remove, b"k", b"");
        assert_eq!(&buf[4..], &[2, 1, 0, 0, 0, 0, 0, 0, 0, b'k']);
        assert_eq!(verify_record(&buf).unwrap().kind, RecordKind::Remove);
    }

    #[test]
    fn seal_record_has_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_seal(&mut buf, 0x0102_0304);
        assert_eq!(
            &buf[4..],
            &[3, 0, 0, 0, 0, 8, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]
        );
        assert_eq!(verify_record(&buf).unwrap().kind, RecordKind::Seal);
        let mut bad = [0u8; HEADER_LEN];
        bad[4] = 3;
        bad[5] = 1;
        assert!(decode_header(&bad).is_err(), "a seal with a key");
    }

    #[test]
    fn any_flipped_bit_fails_verification() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordKind::Set, b"key", b"value");
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
        encode_record(&mut buf, RecordKind::Set, b"key", b"a value of some length");
        let header = verify_record(&buf).unwrap();
        for first in 0..buf.len() {
            for second in first..buf.len() {
                let mut checksum = RecordChecksum::new();
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
        let mut short = RecordChecksum::new();
        short.update(&buf[..buf.len() - 1]);
        assert!(short.check(&header).is_err());
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordKind::Set, b"k", b"v");
        let reason = |bytes: &[u8]| verify_record(bytes).unwrap_err().to_string();
        assert_eq!(reason(&buf[..5]), "record shorter than its header");
        assert_eq!(
            reason(&buf[..buf.len() - 1]),
            "record is 14 bytes, its header says 15"
        );
        let mut bad = buf.clone();
        bad[14] ^= 1;
        let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let mut checksum = RecordChecksum::new();
        checksum.update(&bad);
        assert_eq!(
            reason(&bad),
            format!(
                "checksum mismatch (stored {stored:#010x}, computed {:#010x})",
                checksum.value()
            )
        );
        let mut header = [0u8; HEADER_LEN];
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
        let mut header = [0u8; HEADER_LEN];
        header[4] = 1;
        header[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header(&header).is_err());
        assert!(check_sizes(&vec![0; MAX_KEY_LEN + 1], b"").is_err());
    }
}
