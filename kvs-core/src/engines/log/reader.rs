//! Reading a log file in order: its header, then its records, one at a time, each checked
//! (see `format.rs`), with what is wrong with the first bad one said as a [`Damage`]. What the
//! damage means (a torn tail, corruption, the zeros of a file extended ahead) is for the
//! caller to decide: see `recovery.rs`.
//!
//! The file is read through a window of a few MiB ([`Window`]), and a record longer than that
//! goes through it a chunk at a time, its checksum computed on the way: a 512 MiB value is
//! never held in memory to be checked. Only the key (for a seal, its value) is kept.
//!
//! [`find_valid_record`] looks for a valid record at any byte offset (not only where the
//! records before it end), to tell whether the log goes on past a bad record.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::format::{
    decode_header, ChecksumMismatch, HeaderError, RecordChecksum, RecordHeader, RecordKind,
    FILE_MAGIC, HEADER_LEN, SEAL_VALUE_LEN,
};

/// One valid record, as [`LogReader::next`] yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'r> {
    pub kind: RecordKind,
    /// Where the record starts in the file.
    pub offset: u64,
    /// Its length, header included.
    pub len: usize,
    /// The checksum its header stores (and its bytes have).
    pub crc: u32,
    /// Its key (empty for a seal).
    pub key: &'r [u8],
    /// For a seal, the offset its value says it was written at.
    pub sealed_at: Option<u64>,
}

/// What a bad record's header says about where the record ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The header is cut short or does not decode: the record's length is unknown.
    Unknown,
    /// The header decodes, and the record it declares runs past the end of the file.
    PastEnd,
    /// The header decodes and the record it declares, of this many bytes, lies inside the file.
    Inside(u64),
}

/// What is wrong with a log file where [`LogReader`] stopped. Offsets are from the start of
/// the file; `Display` gives the reason an error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file is shorter than its header.
    ShortFile { file_len: u64 },
    /// The magic is right but the version is not one this kvs reads.
    UnsupportedVersion { version: u8 },
    /// The file does not start with the magic.
    BadMagic,
    /// Fewer bytes than a record header are left at `offset`.
    ShortHeader { offset: u64, remaining: u64 },
    /// The bytes at `offset` do not decode as a record header.
    BadHeader { offset: u64, error: HeaderError },
    /// The header at `offset` declares a record of `len` bytes; only `remaining` are left.
    PastEnd {
        offset: u64,
        len: usize,
        remaining: u64,
    },
    /// The file ended inside the record at `offset`, short of the length it had when the
    /// reader was opened: it shrank meanwhile.
    Shrank { offset: u64 },
    /// The record of `len` bytes at `offset` does not have the checksum its header stores.
    Checksum {
        offset: u64,
        len: usize,
        mismatch: ChecksumMismatch,
    },
}

impl Damage {
    /// Where the damage is: the bad record's offset, or 0 for a bad file header.
    pub fn offset(&self) -> u64 {
        match *self {
            Damage::ShortFile { .. } | Damage::UnsupportedVersion { .. } | Damage::BadMagic => 0,
            Damage::ShortHeader { offset, .. }
            | Damage::BadHeader { offset, .. }
            | Damage::PastEnd { offset, .. }
            | Damage::Shrank { offset }
            | Damage::Checksum { offset, .. } => offset,
        }
    }

    /// What the bad record's header says about where it ends.
    pub fn extent(&self) -> Extent {
        match *self {
            Damage::PastEnd { .. } | Damage::Shrank { .. } => Extent::PastEnd,
            Damage::Checksum { len, .. } => Extent::Inside(len as u64),
            Damage::ShortFile { .. }
            | Damage::UnsupportedVersion { .. }
            | Damage::BadMagic
            | Damage::ShortHeader { .. }
            | Damage::BadHeader { .. } => Extent::Unknown,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::ShortFile { file_len } => {
                write!(f, "file is {file_len} bytes, shorter than its header")
            }
            Damage::UnsupportedVersion { version } => write!(
                f,
                "unsupported format version {version} (this kvs reads version {}): the file \
                 was written by a newer kvs, or its header is damaged",
                FILE_MAGIC[FILE_MAGIC.len() - 1]
            ),
            Damage::BadMagic => f.write_str("not a kvs log file (bad magic)"),
            Damage::ShortHeader { remaining, .. } => write!(
                f,
                "truncated record header ({remaining} of {HEADER_LEN} bytes)"
            ),
            Damage::BadHeader { error, .. } => error.fmt(f),
            Damage::PastEnd { len, remaining, .. } => write!(
                f,
                "record of {len} bytes runs past the end of the file ({remaining} bytes left)"
            ),
            Damage::Shrank { .. } => f.write_str("file ended inside a record"),
            Damage::Checksum { mismatch, .. } => mismatch.fmt(f),
        }
    }
}

/// What [`LogReader::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'r> {
    Record(Record<'r>),
    /// The first bad record; the reader goes no further.
    Damage(Damage),
    /// The file ends right after the last record.
    End,
}

/// Reads one log file's records in order (see the module docs).
pub struct LogReader<'a> {
    window: Window<'a>,
    file_len: u64,
    /// Where the next record starts: the end of the last valid one.
    offset: u64,
    /// The key of the record just read (or a seal's value), reused across records.
    payload: Vec<u8>,
    /// Set at the first bad record, returned again by every later call.
    damage: Option<Damage>,
}

impl<'a> LogReader<'a> {
    /// Checks the file header of `file`, which is `file_len` bytes long.
    pub fn open(file: &'a File, file_len: u64) -> io::Result<Result<LogReader<'a>, Damage>> {
        let mut window = Window::new(file, file_len);
        if !window.fill(FILE_MAGIC.len())? {
            return Ok(Err(Damage::ShortFile { file_len }));
        }
        let magic = &window.bytes()[..FILE_MAGIC.len()];
        let version = FILE_MAGIC.len() - 1;
        if magic != FILE_MAGIC {
            // The magic is right and the version byte is not one this release writes: a file
            // of a newer kvs (or a damaged version byte). Never read as version 1.
            let damage = if magic[..version] == FILE_MAGIC[..version] {
                Damage::UnsupportedVersion {
                    version: magic[version],
                }
            } else {
                Damage::BadMagic
            };
            return Ok(Err(damage));
        }
        window.consume(FILE_MAGIC.len());
        Ok(Ok(LogReader {
            window,
            file_len,
            offset: FILE_MAGIC.len() as u64,
            payload: Vec::new(),
            damage: None,
        }))
    }

    /// Where the next record starts: the end of the last valid record read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Checks the next record and moves past it.
    pub fn next(&mut self) -> io::Result<Step<'_>> {
        if let Some(damage) = self.damage {
            return Ok(Step::Damage(damage));
        }
        if self.offset == self.file_len {
            return Ok(Step::End);
        }
        let header = match self.read_record()? {
            Ok(header) => header,
            Err(damage) => {
                self.damage = Some(damage);
                return Ok(Step::Damage(damage));
            }
        };
        let offset = self.offset;
        let len = header.record_len();
        self.offset += len as u64;
        let (key, sealed_at) = match header.kind {
            RecordKind::Seal => {
                let mut value = [0u8; SEAL_VALUE_LEN];
                value.copy_from_slice(&self.payload[..SEAL_VALUE_LEN]);
                (&[][..], Some(u64::from_le_bytes(value)))
            }
            RecordKind::Set | RecordKind::Remove => (&self.payload[..], None),
        };
        Ok(Step::Record(Record {
            kind: header.kind,
            offset,
            len,
            crc: header.crc,
            key,
            sealed_at,
        }))
    }

    /// Checks the record at `self.offset` and consumes it from the window, leaving its key
    /// (for a seal, its value) in `payload`.
    ///
    /// The record goes through the window a chunk at a time, its checksum computed on the way,
    /// so a value of hundreds of MiB is never held in memory whole. After damage the window is
    /// left anywhere inside the bad record; the reader reads no further.
    fn read_record(&mut self) -> io::Result<Result<RecordHeader, Damage>> {
        let offset = self.offset;
        let remaining = self.file_len - offset;
        if !self.window.fill(HEADER_LEN)? {
            return Ok(Err(Damage::ShortHeader { offset, remaining }));
        }
        let mut header_bytes = [0u8; HEADER_LEN];
        header_bytes.copy_from_slice(&self.window.bytes()[..HEADER_LEN]);
        let header = match decode_header(&header_bytes) {
            Ok(header) => header,
            Err(error) => return Ok(Err(Damage::BadHeader { offset, error })),
        };
        let len = header.record_len();
        if len as u64 > remaining {
            return Ok(Err(Damage::PastEnd {
                offset,
                len,
                remaining,
            }));
        }
        // What is kept: the key, or a seal's value (a seal's key is empty).
        let keep_len = match header.kind {
            RecordKind::Seal => SEAL_VALUE_LEN,
            RecordKind::Set | RecordKind::Remove => header.key_len,
        };
        let keep = HEADER_LEN..HEADER_LEN + keep_len;
        self.payload.clear();
        let mut checksum = RecordChecksum::new();
        // `window.bytes()` starts `at` bytes into the record.
        let mut at = 0;
        while at < len {
            if !self.window.fill((len - at).min(CHUNK))? {
                return Ok(Err(Damage::Shrank { offset }));
            }
            let n = self.window.bytes().len().min(len - at);
            let piece = &self.window.bytes()[..n];
            checksum.update(piece);
            let (lo, hi) = (keep.start.max(at), keep.end.min(at + n));
            if lo < hi {
                self.payload.extend_from_slice(&piece[lo - at..hi - at]);
            }
            self.window.consume(n);
            at += n;
        }
        if let Err(mismatch) = checksum.check(&header) {
            return Ok(Err(Damage::Checksum {
                offset,
                len,
                mismatch,
            }));
        }
        Ok(Ok(header))
    }
}

/// A sliding window over a file, read in large chunks with `pread`: records are parsed in
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

/// How much of the file [`find_valid_record`] reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// Looks for a valid record starting at or after `from`; returns the offset of the first.
///
/// Reads the file a chunk at a time, and checks the checksum of a candidate (a position where
/// a header decodes and declares a record that fits in the file) by reading its extent a chunk
/// at a time too: memory stays at two chunks whatever the size of the file or of the records
/// its bytes declare. A file full of bytes that decode as headers makes this slow, never wrong.
pub fn find_valid_record(file: &File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    let span = (file_len.saturating_sub(from) as usize).min(SCAN_CHUNK + HEADER_LEN);
    let mut buf = vec![0u8; span];
    let mut extent_buf = Vec::new();
    // `buf[..n]` holds the file's bytes from `start` on.
    let mut start = from;
    while start + HEADER_LEN as u64 <= file_len {
        let n = ((file_len - start) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], start)?;
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
            let mut checksum = RecordChecksum::new();
            if i + len <= n {
                checksum.update(&buf[i..i + len]);
            } else {
                feed_extent(file, at, at + len as u64, &mut checksum, &mut extent_buf)?;
            }
            if checksum.check(&header).is_ok() {
                return Ok(Some(at));
            }
        }
        start += last as u64 + 1;
    }
    Ok(None)
}

/// Feeds the file's bytes `from..to` to `checksum`, read `SCAN_CHUNK` bytes at a time into
/// `buf`.
fn feed_extent(
    file: &File,
    from: u64,
    to: u64,
    checksum: &mut RecordChecksum,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.resize(SCAN_CHUNK, 0);
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        checksum.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::log::format::encode_record;

    /// A file of `len` bytes that never decode as a header (kind 0xff), with the records in
    /// `records` at their offsets.
    fn file_with(len: usize, records: &[(usize, &[u8])]) -> (tempfile::TempDir, File) {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("1.log");
        let mut bytes = vec![0xffu8; len];
        for &(at, record) in records {
            bytes[at..at + record.len()].copy_from_slice(record);
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    fn record(value_len: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordKind::Set, b"key", &vec![7u8; value_len]);
        buf
    }

    /// A log file: the header, then `body`.
    fn log_with(body: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("1.log");
        std::fs::write(&path, [&FILE_MAGIC[..], body].concat()).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    fn open(file: &File) -> Result<LogReader<'_>, Damage> {
        LogReader::open(file, file.metadata().unwrap().len()).unwrap()
    }

    /// The records of `body` (as offset, kind, key, sealed_at), then the damage if any.
    type Walk = (Vec<(u64, RecordKind, Vec<u8>, Option<u64>)>, Option<Damage>);

    fn walk(body: &[u8]) -> Walk {
        let (_dir, file) = log_with(body);
        let mut reader = open(&file).unwrap();
        let mut records = Vec::new();
        loop {
            match reader.next().unwrap() {
                Step::Record(r) => records.push((r.offset, r.kind, r.key.to_vec(), r.sealed_at)),
                Step::End => return (records, None),
                Step::Damage(damage) => {
                    // The reader stops at the first bad record.
                    assert_eq!(reader.next().unwrap(), Step::Damage(damage));
                    assert_eq!(reader.offset(), damage.offset());
                    return (records, Some(damage));
                }
            }
        }
    }

    #[test]
    fn the_reader_yields_every_record_in_order() {
        let mut body = Vec::new();
        encode_record(&mut body, RecordKind::Set, b"a", b"one");
        encode_record(&mut body, RecordKind::Remove, b"a", b"");
        let seal_at = (FILE_MAGIC.len() + body.len()) as u64;
        crate::engines::log::format::encode_seal(&mut body, seal_at);
        encode_record(&mut body, RecordKind::Set, b"bb", &vec![5u8; 3 * CHUNK]);
        let (records, damage) = walk(&body);
        assert_eq!(damage, None);
        assert_eq!(
            records,
            vec![
                (8, RecordKind::Set, b"a".to_vec(), None),
                (8 + 17, RecordKind::Remove, b"a".to_vec(), None),
                (seal_at, RecordKind::Seal, vec![], Some(seal_at)),
                (seal_at + 21, RecordKind::Set, b"bb".to_vec(), None),
            ]
        );
        // A header and nothing else.
        assert_eq!(walk(b""), (vec![], None));
    }

    #[test]
    fn the_reader_names_the_damage_where_it_is() {
        let mut good = Vec::new();
        encode_record(&mut good, RecordKind::Set, b"key", b"value");
        let bad_at = (FILE_MAGIC.len() + good.len()) as u64;
        let damage_after_good = |tail: &[u8]| walk(&[&good[..], tail].concat());

        let (records, damage) = damage_after_good(&good[..5]);
        assert_eq!(records.len(), 1);
        let damage = damage.unwrap();
        assert_eq!(
            damage,
            Damage::ShortHeader {
                offset: bad_at,
                remaining: 5
            }
        );
        assert_eq!(damage.extent(), Extent::Unknown);
        assert_eq!(
            damage.to_string(),
            "truncated record header (5 of 13 bytes)"
        );

        let mut unknown = good.clone();
        unknown[4] = 7;
        let damage = damage_after_good(&unknown).1.unwrap();
        assert_eq!(
            damage,
            Damage::BadHeader {
                offset: bad_at,
                error: HeaderError::UnknownKind(7)
            }
        );
        assert_eq!(damage.extent(), Extent::Unknown);

        let damage = damage_after_good(&good[..good.len() - 1]).1.unwrap();
        assert_eq!(
            damage,
            Damage::PastEnd {
                offset: bad_at,
                len: good.len(),
                remaining: good.len() as u64 - 1
            }
        );
        assert_eq!(damage.extent(), Extent::PastEnd);
        assert_eq!(
            damage.to_string(),
            "record of 21 bytes runs past the end of the file (20 bytes left)"
        );

        // A flip in the value of a record longer than the window, far from its header.
        let mut big = Vec::new();
        encode_record(&mut big, RecordKind::Set, b"big", &vec![1u8; 2 * CHUNK]);
        big[CHUNK + 100] ^= 0x10;
        let damage = damage_after_good(&big).1.unwrap();
        let Damage::Checksum {
            offset,
            len,
            mismatch,
        } = damage
        else {
            panic!("not a checksum mismatch: {damage:?}");
        };
        assert_eq!((offset, len), (bad_at, big.len()));
        assert_eq!(damage.extent(), Extent::Inside(big.len() as u64));
        assert_eq!(
            mismatch.stored,
            u32::from_le_bytes([big[0], big[1], big[2], big[3]])
        );
        assert_ne!(mismatch.computed, mismatch.stored);
    }

    #[test]
    fn a_file_shorter_than_it_was_is_damage_past_its_end() {
        let mut body = Vec::new();
        encode_record(&mut body, RecordKind::Set, b"key", b"value");
        let (_dir, file) = log_with(&body[..body.len() - 3]);
        // Opened when the file was whole; it lost its last bytes since.
        let len = (FILE_MAGIC.len() + body.len()) as u64;
        let mut reader = LogReader::open(&file, len).unwrap().unwrap();
        let damage = Damage::Shrank { offset: 8 };
        assert_eq!(reader.next().unwrap(), Step::Damage(damage));
        assert_eq!(damage.extent(), Extent::PastEnd);
        assert_eq!(damage.to_string(), "file ended inside a record");
    }

    #[test]
    fn the_reader_checks_the_file_header() {
        let header_damage = |bytes: &[u8]| {
            let dir = tempfile::TempDir::new().unwrap();
            let path = dir.path().join("1.log");
            std::fs::write(&path, bytes).unwrap();
            let file = File::open(&path).unwrap();
            let damage = open(&file).err().unwrap();
            assert_eq!(damage.offset(), 0);
            damage
        };
        assert_eq!(header_damage(b"kvs-l"), Damage::ShortFile { file_len: 5 });
        assert_eq!(
            header_damage(b"kvs-log\x02"),
            Damage::UnsupportedVersion { version: 2 }
        );
        assert_eq!(
            header_damage(b"kvs-log\x02").to_string(),
            "unsupported format version 2 (this kvs reads version 1): the file was written by \
             a newer kvs, or its header is damaged"
        );
        assert_eq!(header_damage(b"KVS-log\x01"), Damage::BadMagic);
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
            let (_dir, file) = file_with(len, &[(at, &small)]);
            let found = find_valid_record(&file, 0, len as u64).unwrap();
            assert_eq!(found, Some(at as u64), "record at {at}");
            // Not before where the scan starts.
            let after = find_valid_record(&file, at as u64 + 1, len as u64).unwrap();
            assert_eq!(after, None, "scan from past the record at {at}");
        }
    }

    #[test]
    fn the_scan_checks_records_longer_than_its_chunks() {
        let big = record(3 * SCAN_CHUNK);
        let len = big.len() + SCAN_CHUNK;
        let (_dir, file) = file_with(len, &[(100, &big)]);
        assert_eq!(find_valid_record(&file, 0, len as u64).unwrap(), Some(100));
        // The same record with one byte of its value changed is no record.
        let mut bad = big.clone();
        bad[2 * SCAN_CHUNK] ^= 1;
        let (_dir, file) = file_with(len, &[(100, &bad)]);
        assert_eq!(find_valid_record(&file, 0, len as u64).unwrap(), None);
        // Nor is one cut short by the end of the file.
        let (_dir, file) = file_with(len, &[(100, &big)]);
        let short = (100 + big.len() - 1) as u64;
        assert_eq!(find_valid_record(&file, 0, short).unwrap(), None);
    }
}
