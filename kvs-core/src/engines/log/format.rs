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
    let crc = crc32fast::hash(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Parses a record header. Returns a reason string when the bytes cannot be a header.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> std::result::Result<RecordHeader, String> {
    let crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let kind = match bytes[4] {
        1 => RecordKind::Set,
        2 => RecordKind::Remove,
        3 => RecordKind::Seal,
        other => return Err(format!("unknown record kind {other}")),
    };
    let key_len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let value_len = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
    if key_len > MAX_KEY_LEN {
        return Err(format!("key length {key_len} over the limit"));
    }
    if value_len > MAX_VALUE_LEN {
        return Err(format!("value length {value_len} over the limit"));
    }
    if kind == RecordKind::Remove && value_len != 0 {
        return Err(format!("remove record with a {value_len}-byte value"));
    }
    if kind == RecordKind::Seal && (key_len != 0 || value_len != SEAL_VALUE_LEN) {
        return Err(format!(
            "seal record with a {key_len}-byte key and a {value_len}-byte value"
        ));
    }
    Ok(RecordHeader {
        crc,
        kind,
        key_len,
        value_len,
    })
}

/// Checks a whole record (header included) held in `record`: header, length and checksum.
pub fn verify_record(record: &[u8]) -> std::result::Result<RecordHeader, String> {
    let header_bytes: &[u8; HEADER_LEN] = record
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| "record shorter than its header".to_string())?;
    let header = decode_header(header_bytes)?;
    if record.len() != header.record_len() {
        return Err(format!(
            "record is {} bytes, its header says {}",
            record.len(),
            header.record_len()
        ));
    }
    let actual = crc32fast::hash(&record[4..]);
    if actual != header.crc {
        return Err(format!(
            "checksum mismatch (stored {:#010x}, computed {actual:#010x})",
            header.crc
        ));
    }
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
    fn oversized_lengths_are_rejected_before_reading() {
        let mut header = [0u8; HEADER_LEN];
        header[4] = 1;
        header[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header(&header).is_err());
        assert!(check_sizes(&vec![0; MAX_KEY_LEN + 1], b"").is_err());
    }
}
