//! Reading a log file in order: its header (format version 1 or 2), then its records, one at
//! a time, each checked (see `format.rs`), with what is wrong with the first bad one said as a
//! [`Damage`]. A batch comes out whole or not at all: its batch record and every member are
//! read and checked before it is yielded ([`Step::Batch`]), and a bad member is damage of the
//! whole batch, at the batch's offset. What the
//! damage means (a torn tail, corruption, the zeros of a file extended ahead) is for the
//! caller to decide: see `recovery.rs`.
//!
//! The file is read through a window of a few MiB ([`Window`]), and a record longer than that
//! goes through it a chunk at a time, its checksum computed on the way: a 512 MiB value is
//! never held in memory to be checked. Only the key and deadline (for a seal or a batch
//! record, its value) are kept.
//!
//! [`find_valid_record`] looks for a valid record at any byte offset (not only where the
//! records before it end), to tell whether the log goes on past a bad record.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::format::{
    decode_header, BatchFrame, ChecksumMismatch, HeaderError, MembersChecksum, RecordChecksum,
    RecordHeader, RecordKind, Version, DEADLINE_LEN, FILE_MAGIC, MAX_BATCH_BYTES, SEAL_VALUE_LEN,
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
    /// For a set record of version 2 with one, its deadline.
    pub deadline: Option<u64>,
}

/// One member record of a batch, as [`LogReader::next`] yields it in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Set or remove.
    pub kind: RecordKind,
    pub offset: u64,
    pub len: usize,
    pub crc: u32,
    pub key: Vec<u8>,
    pub deadline: Option<u64>,
}

/// A whole, valid batch: its frame record and every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'r> {
    /// Where the batch record starts.
    pub offset: u64,
    /// The length of the batch record and its members together.
    pub len: u64,
    /// The batch record's checksum (for the fingerprint).
    pub crc: u32,
    /// The length of the batch record alone.
    pub frame_len: usize,
    pub members: &'r [Member],
}

/// What is wrong inside a batch whose extent lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFault {
    /// The frame says it holds no records.
    Empty,
    /// The frame says its members take more than `MAX_BATCH_BYTES`.
    TooLarge(u64),
    /// Fewer bytes than a record header are left in the batch.
    MemberShort { remaining: u64 },
    /// The member's header does not decode.
    MemberHeader(HeaderError),
    /// The member declares `len` bytes; only `remaining` are left in the batch.
    MemberOverruns { len: usize, remaining: u64 },
    /// The member's body has the wrong checksum.
    MemberChecksum(ChecksumMismatch),
    /// A seal or a batch record inside a batch.
    MemberKind(RecordKind),
    /// The file ended inside the batch, short of the length it had when the reader opened it.
    Shrank,
    /// The members end at `members` bytes, the frame says `declared`.
    Length { members: u64, declared: u64 },
    /// The members' header checksums do not have the CRC the frame stores.
    MembersChecksum(ChecksumMismatch),
}

impl fmt::Display for BatchFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchFault::Empty => f.write_str("the batch frame declares no records"),
            BatchFault::TooLarge(len) => write!(
                f,
                "the batch frame declares {len} bytes of records, over the limit of \
                 {MAX_BATCH_BYTES}"
            ),
            BatchFault::MemberShort { remaining } => write!(
                f,
                "truncated record header ({remaining} bytes left in the batch)"
            ),
            BatchFault::MemberHeader(e) => e.fmt(f),
            BatchFault::MemberOverruns { len, remaining } => write!(
                f,
                "record of {len} bytes runs past the end of its batch ({remaining} bytes left)"
            ),
            BatchFault::MemberChecksum(e) => e.fmt(f),
            BatchFault::MemberKind(kind) => write!(f, "a {kind:?} record inside a batch"),
            BatchFault::Shrank => f.write_str("file ended inside the batch"),
            BatchFault::Length { members, declared } => write!(
                f,
                "the batch's records take {members} bytes, its frame says {declared}"
            ),
            BatchFault::MembersChecksum(e) => write!(f, "members' {e}"),
        }
    }
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
    /// The batch at `offset`, of `len` bytes with its members (all inside the file), is bad:
    /// `fault`, found at `member_offset`.
    Batch {
        offset: u64,
        len: u64,
        member_offset: u64,
        fault: BatchFault,
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
            | Damage::Checksum { offset, .. }
            | Damage::Batch { offset, .. } => offset,
        }
    }

    /// What the bad record's header says about where it ends.
    pub fn extent(&self) -> Extent {
        match *self {
            Damage::PastEnd { .. } | Damage::Shrank { .. } => Extent::PastEnd,
            Damage::Checksum { len, .. } => Extent::Inside(len as u64),
            Damage::Batch { len, .. } => Extent::Inside(len),
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
                "unsupported format version {version} (this kvs reads versions 1 to {}): the \
                 file was written by a newer kvs, or its header is damaged",
                FILE_MAGIC[FILE_MAGIC.len() - 1]
            ),
            Damage::BadMagic => f.write_str("not a kvs log file (bad magic)"),
            Damage::ShortHeader { remaining, .. } => {
                write!(f, "truncated record header ({remaining} bytes left)")
            }
            Damage::BadHeader { error, .. } => error.fmt(f),
            Damage::PastEnd { len, remaining, .. } => write!(
                f,
                "record of {len} bytes runs past the end of the file ({remaining} bytes left)"
            ),
            Damage::Shrank { .. } => f.write_str("file ended inside a record"),
            Damage::Checksum { mismatch, .. } => mismatch.fmt(f),
            Damage::Batch {
                len,
                member_offset,
                fault,
                ..
            } => write!(
                f,
                "bad batch of {len} bytes: {fault} (at offset {member_offset})"
            ),
        }
    }
}

/// What [`LogReader::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'r> {
    Record(Record<'r>),
    /// A whole, valid batch.
    Batch(Batch<'r>),
    /// The first bad record; the reader goes no further.
    Damage(Damage),
    /// The file ends right after the last record.
    End,
}

/// Reads one log file's records in order (see the module docs).
pub struct LogReader<'a> {
    window: Window<'a>,
    version: Version,
    file_len: u64,
    /// Where the next record starts: the end of the last valid one.
    offset: u64,
    /// The key of the record just read (or a seal's value), reused across records.
    payload: Vec<u8>,
    /// Set at the first bad record, returned again by every later call.
    damage: Option<Damage>,
    /// The members of the batch just read, reused across batches.
    members: Vec<Member>,
}

impl<'a> LogReader<'a> {
    /// Checks the file header of `file`, which is `file_len` bytes long.
    pub fn open(file: &'a File, file_len: u64) -> io::Result<Result<LogReader<'a>, Damage>> {
        let mut window = Window::new(file, file_len);
        if !window.fill(FILE_MAGIC.len())? {
            return Ok(Err(Damage::ShortFile { file_len }));
        }
        let version = match Version::from_magic(&window.bytes()[..FILE_MAGIC.len()]) {
            Ok(version) => version,
            // The magic is right and the version byte is not one this release reads: a file
            // of a newer kvs (or a damaged version byte). Never read as another version.
            Err(Some(version)) => return Ok(Err(Damage::UnsupportedVersion { version })),
            Err(None) => return Ok(Err(Damage::BadMagic)),
        };
        window.consume(FILE_MAGIC.len());
        Ok(Ok(LogReader {
            window,
            version,
            file_len,
            offset: FILE_MAGIC.len() as u64,
            payload: Vec::new(),
            damage: None,
            members: Vec::new(),
        }))
    }

    /// The file's format version.
    pub fn version(&self) -> Version {
        self.version
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
        let header = match self.read_record(self.file_len)? {
            Ok(header) => header,
            Err(damage) => {
                self.damage = Some(damage);
                return Ok(Step::Damage(damage));
            }
        };
        let offset = self.offset;
        if header.kind == RecordKind::Batch {
            return match self.read_batch(offset, &header)? {
                Ok(()) => Ok(Step::Batch(Batch {
                    offset,
                    len: self.offset - offset,
                    crc: header.crc,
                    frame_len: header.record_len(),
                    members: &self.members,
                })),
                Err(damage) => {
                    self.offset = offset;
                    self.damage = Some(damage);
                    Ok(Step::Damage(damage))
                }
            };
        }
        let len = header.record_len();
        self.offset += len as u64;
        let (key, sealed_at, deadline) = match header.kind {
            RecordKind::Seal => {
                let mut value = [0u8; SEAL_VALUE_LEN];
                value.copy_from_slice(&self.payload[..SEAL_VALUE_LEN]);
                (&[][..], Some(u64::from_le_bytes(value)), None)
            }
            _ => {
                let (deadline, key) = split_deadline(&header, &self.payload);
                (key, None, deadline)
            }
        };
        Ok(Step::Record(Record {
            kind: header.kind,
            offset,
            len,
            crc: header.crc,
            key,
            sealed_at,
            deadline,
        }))
    }

    /// Reads the members of the batch whose frame record, at `offset`, was just read (its
    /// value is in `payload`) into `members`, checking the batch as a whole; moves past it.
    fn read_batch(&mut self, offset: u64, header: &RecordHeader) -> io::Result<Result<(), Damage>> {
        let Some(frame) = BatchFrame::decode(&self.payload) else {
            unreachable!("decode_header checked a batch record's value length");
        };
        let frame_len = header.record_len() as u64;
        let total = frame_len + frame.members_len as u64;
        let remaining = self.file_len - offset;
        if total > remaining {
            return Ok(Err(Damage::PastEnd {
                offset,
                len: usize::try_from(total).unwrap_or(usize::MAX),
                remaining,
            }));
        }
        let fault = |member_offset: u64, fault: BatchFault| {
            Ok(Err(Damage::Batch {
                offset,
                len: total,
                member_offset,
                fault,
            }))
        };
        if frame.count == 0 {
            return fault(offset, BatchFault::Empty);
        }
        if frame.members_len as usize > MAX_BATCH_BYTES {
            return fault(offset, BatchFault::TooLarge(frame.members_len as u64));
        }
        let end = offset + total;
        self.offset = offset + frame_len;
        self.members.clear();
        let mut members_crc = MembersChecksum::default();
        for _ in 0..frame.count {
            let at = self.offset;
            let member = match self.read_record(end)? {
                Ok(member) => member,
                Err(damage) => {
                    let why = match damage {
                        Damage::ShortHeader { remaining, .. } => {
                            BatchFault::MemberShort { remaining }
                        }
                        Damage::BadHeader { error, .. } => BatchFault::MemberHeader(error),
                        Damage::PastEnd { len, remaining, .. } => {
                            BatchFault::MemberOverruns { len, remaining }
                        }
                        Damage::Checksum { mismatch, .. } => BatchFault::MemberChecksum(mismatch),
                        _ => BatchFault::Shrank,
                    };
                    return fault(at, why);
                }
            };
            if !matches!(member.kind, RecordKind::Set | RecordKind::Remove) {
                return fault(at, BatchFault::MemberKind(member.kind));
            }
            members_crc.add(member.crc);
            let (deadline, key) = split_deadline(&member, &self.payload);
            self.members.push(Member {
                kind: member.kind,
                offset: at,
                len: member.record_len(),
                crc: member.crc,
                key: key.to_vec(),
                deadline,
            });
            self.offset += member.record_len() as u64;
        }
        if self.offset != end {
            return fault(
                self.offset,
                BatchFault::Length {
                    members: self.offset - offset - frame_len,
                    declared: frame.members_len as u64,
                },
            );
        }
        let computed = members_crc.value();
        if computed != frame.members_crc {
            return fault(
                offset,
                BatchFault::MembersChecksum(ChecksumMismatch {
                    stored: frame.members_crc,
                    computed,
                }),
            );
        }
        Ok(Ok(()))
    }

    /// Checks the record at `self.offset` and consumes it from the window, leaving its key
    /// (for a seal, its value) in `payload`.
    ///
    /// The record goes through the window a chunk at a time, its checksum computed on the way,
    /// so a value of hundreds of MiB is never held in memory whole. After damage the window is
    /// left anywhere inside the bad record; the reader reads no further.
    ///
    /// The record must end by `end` (the end of the file, or of the batch it is a member of).
    fn read_record(&mut self, end: u64) -> io::Result<Result<RecordHeader, Damage>> {
        let offset = self.offset;
        let remaining = end - offset;
        let header_len = self.version.header_len();
        if remaining < header_len as u64 || !self.window.fill(header_len)? {
            return Ok(Err(Damage::ShortHeader { offset, remaining }));
        }
        let header = match decode_header(&self.window.bytes()[..header_len], self.version) {
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
        // What is kept: the deadline and key, or the value of a seal or a batch (their key is
        // empty).
        let keep = match header.kind {
            RecordKind::Seal | RecordKind::Batch => header.value_start()..header.record_len(),
            RecordKind::Set | RecordKind::Remove => {
                header.version.header_len()..header.value_start()
            }
        };
        self.payload.clear();
        let mut checksum = RecordChecksum::new(&header);
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
pub fn find_valid_record(
    file: &File,
    version: Version,
    from: u64,
    file_len: u64,
) -> io::Result<Option<u64>> {
    let header_len = version.header_len();
    let span = (file_len.saturating_sub(from) as usize).min(SCAN_CHUNK + header_len);
    let mut buf = vec![0u8; span];
    let mut extent_buf = Vec::new();
    // `buf[..n]` holds the file's bytes from `start` on.
    let mut start = from;
    while start + header_len as u64 <= file_len {
        let n = ((file_len - start) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], start)?;
        // Candidates start in `buf[..=last]`; the next chunk starts right after `last`, so
        // chunks overlap by a header's length less one byte and no position is missed.
        let last = n - header_len;
        for i in 0..=last {
            // Most positions fail here, on the header checksum (version 2) or the kind byte.
            let Ok(header) = decode_header(&buf[i..i + header_len], version) else {
                continue;
            };
            let at = start + i as u64;
            let len = header.record_len();
            if at + len as u64 > file_len {
                continue;
            }
            let mut checksum = RecordChecksum::new(&header);
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

/// Whether a valid record of `version` starts at `at` (reading its extent in chunks).
pub fn valid_record_at(file: &File, version: Version, at: u64, file_len: u64) -> io::Result<bool> {
    let header_len = version.header_len();
    if at + header_len as u64 > file_len {
        return Ok(false);
    }
    let mut header = vec![0u8; header_len];
    file.read_exact_at(&mut header, at)?;
    let Ok(header) = decode_header(&header, version) else {
        return Ok(false);
    };
    let end = at + header.record_len() as u64;
    if end > file_len {
        return Ok(false);
    }
    let mut checksum = RecordChecksum::new(&header);
    feed_extent(file, at, end, &mut checksum, &mut Vec::new())?;
    Ok(checksum.check(&header).is_ok())
}

/// Splits the kept payload of a set or remove record into its deadline and its key.
fn split_deadline<'p>(header: &RecordHeader, payload: &'p [u8]) -> (Option<u64>, &'p [u8]) {
    match payload.split_first_chunk::<DEADLINE_LEN>() {
        Some((deadline, key)) if header.has_deadline => (Some(u64::from_le_bytes(*deadline)), key),
        _ => (None, payload),
    }
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
    use crate::engines::log::format::{
        encode_record_v1 as encode_record, FILE_MAGIC_V1, HEADER_LEN_V1,
    };

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
        std::fs::write(&path, [&FILE_MAGIC_V1[..], body].concat()).unwrap();
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
                Step::Batch(b) => panic!("a batch in a version-1 file: {b:?}"),
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
        crate::engines::log::format::encode_seal_v1(&mut body, seal_at);
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
        assert_eq!(damage.to_string(), "truncated record header (5 bytes left)");

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
            header_damage(b"kvs-log\x03"),
            Damage::UnsupportedVersion { version: 3 }
        );
        assert_eq!(
            header_damage(b"kvs-log\x03").to_string(),
            "unsupported format version 3 (this kvs reads versions 1 to 2): the file was \
             written by a newer kvs, or its header is damaged"
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
            SCAN_CHUNK - HEADER_LEN_V1,
            SCAN_CHUNK - 5,
            SCAN_CHUNK,
            SCAN_CHUNK + 1,
            SCAN_CHUNK + 7,
            2 * SCAN_CHUNK + 3,
            len - small.len(),
        ] {
            let (_dir, file) = file_with(len, &[(at, &small)]);
            let found = find_valid_record(&file, Version::V1, 0, len as u64).unwrap();
            assert_eq!(found, Some(at as u64), "record at {at}");
            // Not before where the scan starts.
            let after = find_valid_record(&file, Version::V1, at as u64 + 1, len as u64).unwrap();
            assert_eq!(after, None, "scan from past the record at {at}");
        }
    }

    #[test]
    fn the_scan_checks_records_longer_than_its_chunks() {
        let big = record(3 * SCAN_CHUNK);
        let len = big.len() + SCAN_CHUNK;
        let (_dir, file) = file_with(len, &[(100, &big)]);
        assert_eq!(
            find_valid_record(&file, Version::V1, 0, len as u64).unwrap(),
            Some(100)
        );
        // The same record with one byte of its value changed is no record.
        let mut bad = big.clone();
        bad[2 * SCAN_CHUNK] ^= 1;
        let (_dir, file) = file_with(len, &[(100, &bad)]);
        assert_eq!(
            find_valid_record(&file, Version::V1, 0, len as u64).unwrap(),
            None
        );
        // Nor is one cut short by the end of the file.
        let (_dir, file) = file_with(len, &[(100, &big)]);
        let short = (100 + big.len() - 1) as u64;
        assert_eq!(
            find_valid_record(&file, Version::V1, 0, short).unwrap(),
            None
        );
    }

    // Version 2.

    use crate::engines::log::format::{
        encode_batch, encode_remove, encode_seal, encode_set, BATCH_RECORD_LEN,
    };

    /// A version-2 log file: the header, then `body`.
    fn log_v2(body: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("1.log");
        std::fs::write(&path, [&FILE_MAGIC[..], body].concat()).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    /// What the reader yields from a version-2 `body`: one line per record or batch member
    /// (`offset kind key deadline`, members prefixed by `batch@offset`), then the damage.
    fn walk_v2(body: &[u8]) -> (Vec<String>, Option<Damage>) {
        let (_dir, file) = log_v2(body);
        let mut reader = open(&file).unwrap();
        assert_eq!(reader.version(), Version::V2);
        let mut seen = Vec::new();
        loop {
            match reader.next().unwrap() {
                Step::Record(r) => seen.push(format!(
                    "{} {:?} {} {:?}",
                    r.offset,
                    r.kind,
                    String::from_utf8_lossy(r.key),
                    r.deadline
                )),
                Step::Batch(b) => {
                    assert_eq!(
                        b.len,
                        (b.frame_len + b.members.iter().map(|m| m.len).sum::<usize>()) as u64
                    );
                    for m in b.members {
                        seen.push(format!(
                            "batch@{} {} {:?} {} {:?}",
                            b.offset,
                            m.offset,
                            m.kind,
                            String::from_utf8_lossy(&m.key),
                            m.deadline
                        ));
                    }
                }
                Step::End => return (seen, None),
                Step::Damage(damage) => {
                    assert_eq!(reader.next().unwrap(), Step::Damage(damage));
                    assert_eq!(reader.offset(), damage.offset());
                    return (seen, Some(damage));
                }
            }
        }
    }

    /// A batch of `members` (already encoded records), framed.
    fn batch(members: &[Vec<u8>]) -> Vec<u8> {
        let mut crc = MembersChecksum::default();
        let mut body = Vec::new();
        for m in members {
            crc.add(u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
            body.extend_from_slice(m);
        }
        let mut out = Vec::new();
        encode_batch(
            &mut out,
            members.len() as u32,
            body.len() as u32,
            crc.value(),
        );
        out.extend_from_slice(&body);
        out
    }

    fn set(key: &[u8], value: &[u8], deadline: Option<u64>) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_set(&mut buf, key, value, deadline);
        buf
    }

    fn remove(key: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_remove(&mut buf, key);
        buf
    }

    #[test]
    fn the_reader_yields_v2_records_and_whole_batches() {
        let mut body = set(b"a", b"one", Some(42));
        let batch_at = 8 + body.len() as u64;
        body.extend(batch(&[
            set(b"b", b"two", None),
            remove(b"a"),
            set(b"c", b"", Some(7)),
        ]));
        let seal_at = 8 + body.len() as u64;
        encode_seal(&mut body, seal_at);
        body.extend(set(b"big", &vec![3u8; 2 * CHUNK], None));
        let (seen, damage) = walk_v2(&body);
        assert_eq!(damage, None);
        let m1 = batch_at + BATCH_RECORD_LEN as u64;
        let m2 = m1 + 17 + 1 + 3;
        let m3 = m2 + 17 + 1;
        assert_eq!(
            seen,
            vec![
                "8 Set a Some(42)".to_string(),
                format!("batch@{batch_at} {m1} Set b None"),
                format!("batch@{batch_at} {m2} Remove a None"),
                format!("batch@{batch_at} {m3} Set c Some(7)"),
                format!("{seal_at} Seal  None"),
                format!("{} Set big None", seal_at + 25),
            ]
        );
    }

    #[test]
    fn a_batch_cut_anywhere_is_damage_at_its_start_running_past_the_end() {
        let first = set(b"k0", b"v0", None);
        let whole = batch(&[
            set(b"k1", b"v1", None),
            set(b"k2", b"v2", Some(9)),
            remove(b"k0"),
        ]);
        let at = 8 + first.len() as u64;
        for cut in 0..whole.len() {
            let body = [&first[..], &whole[..cut]].concat();
            let (seen, damage) = walk_v2(&body);
            assert_eq!(
                seen.len(),
                1,
                "cut at {cut}: only the record before the batch"
            );
            match damage {
                None if cut == 0 => {}
                Some(d) => {
                    assert_eq!(d.offset(), at, "cut at {cut}: {d}");
                    assert!(
                        matches!(d.extent(), Extent::PastEnd | Extent::Unknown),
                        "cut at {cut}: {d:?}"
                    );
                    if cut >= BATCH_RECORD_LEN {
                        assert_eq!(d.extent(), Extent::PastEnd, "cut at {cut}: {d:?}");
                    }
                }
                None => panic!("cut at {cut}: no damage"),
            }
        }
        let (seen, damage) = walk_v2(&[&first[..], &whole[..]].concat());
        assert_eq!((seen.len(), damage), (4, None));
    }

    #[test]
    fn a_bad_member_is_damage_of_the_whole_batch() {
        let members = [set(b"k1", b"v1", None), set(b"k2", b"v2", None)];
        let whole = batch(&members);
        let len = whole.len() as u64;
        // Any flip anywhere in the batch (frame or member) is damage at the batch's start.
        for byte in 0..whole.len() {
            let mut bad = whole.clone();
            bad[byte] ^= 0x08;
            let (seen, damage) = walk_v2(&bad);
            assert!(seen.is_empty(), "flip in byte {byte}");
            let damage = damage.unwrap_or_else(|| panic!("flip in byte {byte}: no damage"));
            assert_eq!(damage.offset(), 8, "flip in byte {byte}: {damage}");
        }
        // A flipped value byte of the second member.
        let mut bad = whole.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let damage = walk_v2(&bad).1.unwrap();
        let Damage::Batch {
            len: damage_len,
            member_offset,
            fault: BatchFault::MemberChecksum(_),
            ..
        } = damage
        else {
            panic!("{damage:?}");
        };
        assert_eq!(damage_len, len);
        assert_eq!(
            member_offset,
            8 + (BATCH_RECORD_LEN + members[0].len()) as u64
        );
        assert_eq!(damage.extent(), Extent::Inside(len));
        assert!(damage.to_string().starts_with("bad batch of"), "{damage}");
        // Members swapped: each is valid, the frame's checksum of them is not.
        let swapped = batch(&members);
        let mut swapped_body = swapped[..BATCH_RECORD_LEN].to_vec();
        swapped_body.extend_from_slice(&members[1]);
        swapped_body.extend_from_slice(&members[0]);
        let damage = walk_v2(&swapped_body).1.unwrap();
        assert!(
            matches!(
                damage,
                Damage::Batch {
                    fault: BatchFault::MembersChecksum(_),
                    ..
                }
            ),
            "{damage:?}"
        );
        // A seal inside a batch.
        let mut seal = Vec::new();
        encode_seal(&mut seal, 0);
        let damage = walk_v2(&batch(&[set(b"a", b"1", None), seal])).1.unwrap();
        assert!(
            matches!(
                damage,
                Damage::Batch {
                    fault: BatchFault::MemberKind(RecordKind::Seal),
                    ..
                }
            ),
            "{damage:?}"
        );
    }

    #[test]
    fn a_damaged_v2_length_is_a_bad_header_of_unknown_extent() {
        let first = set(b"a", b"1", None);
        let mut second = set(b"b", b"2", None);
        // The value length now says the record runs past the end of the file: in version 1
        // this looked like a torn write. The header checksum says it is damage.
        second[9..13].copy_from_slice(&1000u32.to_le_bytes());
        let third = set(b"c", b"3", None);
        let body = [&first[..], &second, &third].concat();
        let (seen, damage) = walk_v2(&body);
        assert_eq!(seen.len(), 1);
        let damage = damage.unwrap();
        assert!(
            matches!(
                damage,
                Damage::BadHeader {
                    error: HeaderError::HeaderChecksum(_),
                    ..
                }
            ),
            "{damage:?}"
        );
        assert_eq!(damage.extent(), Extent::Unknown);
        // The scan after it finds the third record.
        let (_dir, file) = log_v2(&body);
        let len = file.metadata().unwrap().len();
        let third_at = 8 + (first.len() + second.len()) as u64;
        assert_eq!(
            find_valid_record(&file, Version::V2, damage.offset() + 1, len).unwrap(),
            Some(third_at)
        );
    }
}
