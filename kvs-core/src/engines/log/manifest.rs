//! The `MANIFEST`: the list of the log files that make up a `kvs` store.
//!
//! Without it a store would be whatever `<id>.log` files sit in its directory, and a closed
//! file deleted, cut back to a record boundary, swapped with another or replaced by a copy would
//! go unnoticed: an older value would be served silently. With it, open checks that the
//! directory holds exactly the files the store wrote.
//!
//! # Layout
//!
//! `MANIFEST` in the data directory, all integers little-endian:
//!
//! ```text
//! offset     size  field
//!      0        7  magic: the ASCII bytes "kvs-man"
//!      7        1  format version: 1
//!      8        4  n: number of entries (u32)
//!     12     17*n  entries, by increasing id, each:
//!                    +0   4  id: the file is `<id>.log` (u32)
//!                    +4   1  state: 1 = closed, 2 = active, 3 = obsolete
//!                    +5   8  length: closed files: the exact length they were sealed at;
//!                            0 for the others (u64)
//!                   +13   4  fingerprint: closed files: see below; 0 for the others (u32)
//!  12+17*n        4  CRC-32 (IEEE) of every byte before it
//! ```
//!
//! - **closed**: sealed (see `format.rs`) and never written again.
//! - **active**: the newest file, the one writes append to. Exactly one, with the highest id of
//!   all entries: replay reads files by increasing id, and only the active file may end in a
//!   torn write.
//! - **obsolete**: replaced by a compaction whose output is listed as closed; open deletes it
//!   if it is still there, and it is dropped from the next manifest written.
//!
//! The **fingerprint** of a closed file is the CRC-32 of the sequence of its records' stored
//! checksums (the first 4 bytes of each record: version 1's crc, version 2's header_crc, which
//! covers the body's checksum; the seal, batch records and batch members included), in file
//! order. Every record's checksum covers its bytes, so a file with other records, or the same records in
//! another order, has another fingerprint; and computing it costs a 4-byte CRC update per
//! record where the record is at hand anyway (the writer appending it, compaction copying it,
//! replay checking it), never an extra read.
//!
//! # When it is written
//!
//! Always whole and atomically: `MANIFEST.tmp` is written and fsynced, renamed over
//! `MANIFEST`, and the directory fsynced. Only when the set of files changes, never per write:
//! - **rotation** (`writer.rs`): the active file is sealed, the next one created with its
//!   header, then the manifest written with the old file closed and the new one active. A crash
//!   between the create and the manifest leaves an unlisted file newer than the active one,
//!   holding at most its header: open removes it.
//! - **compaction commit** (`compaction.rs`): the outputs, written as `<id>.log.compacting` and
//!   synced, are listed as closed and the files they replace as obsolete. This write is the
//!   commit point. The outputs are then renamed into place and the obsolete files deleted; a
//!   crash in between leaves a listed file missing but its `.compacting` present (open finishes
//!   the rename) and obsolete files present (open deletes them).
//! - **open of a store without a manifest** (written by release 0.1.0, or a new directory):
//!   the canonical `<id>.log` files are replayed as that release did, and the manifest then
//!   written, so that from then on the store is guarded.
//!
//! Every manifest [`replace`] writes into the directory of a store open read-write is then
//! handed to that store's hinter (a [`CommitHook`] the manifest carries, and every manifest
//! cloned from it), which writes the hints of closed files that have none and deletes those of
//! files no longer listed as closed (see `hint.rs`). So whoever writes the manifest (rotation,
//! compaction) gets hints without knowing of them.
//!
//! # What open checks
//!
//! Every closed file must exist, be a regular file, have exactly its listed length and give
//! its listed fingerprint on replay (a file loaded from its hint is not replayed: the hint
//! holds the length and fingerprint, and the inode and modification time of the file it was
//! written from, see `hint.rs`); the active file must exist and be a regular file.
//! Anything else fails the open with [`KvsError::Corruption`] naming the file and saying what
//! is wrong with it. A missing or non-regular file is found before anything is changed on
//! disk; a wrong length or fingerprint is found by the replay, after open has finished what a
//! crash interrupted (the renames and deletions above), and the files themselves are never
//! changed. A damaged or unreadable `MANIFEST` fails the open too: it is never rebuilt from
//! the files, as that would bless whatever happens to be there.
//!
//! Files the manifest does not list are not the store's: they are ignored with a warning and
//! never deleted. Only canonical names are ids: decimal digits, no sign, no leading zero, so
//! `003.log` and `+3.log` are not file 3. The exceptions are files that can only come from a
//! crash, which open removes (unlisted `<id>.log.compacting` files, and an unlisted file newer
//! than the active one that holds at most a log header: neither holds data), and an unlisted
//! regular `<id>.log` newer than the active one that holds more than a header. kvs never
//! writes to a file before listing it, so that one was written by something else, most likely
//! a kvs that keeps no manifest (release 0.1.0) opened on the directory; it may hold
//! acknowledged writes, so open refuses rather than ignore them, and says what to do.
//!
//! Release 0.1.0 does not know this file: it opens a store that has one, ignores it, and
//! replays the `<id>.log` files as before (unguarded), which is acceptable. Going back to a
//! newer release afterwards: if 0.1.0 only appended to the active file, the store opens with
//! those writes; if it moved on to new files or compacted, its new files are unlisted and
//! newer than the listed ones, or listed files are gone, and the newer release refuses to open
//! the store, naming the file. Removing `MANIFEST` then makes it open the store as one written
//! by 0.1.0 and list its files anew.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::format::record_len_unchecked;
use super::hint::ManifestSender;
use crate::{KvsError, Result};

/// Name of the manifest in the data directory.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Name of the manifest while it is being written.
pub const MANIFEST_TMP: &str = "MANIFEST.tmp";
/// The first 8 bytes of the manifest: magic and format version.
pub const MANIFEST_MAGIC: [u8; 8] = *b"kvs-man\x01";
/// Size of one entry.
const ENTRY_LEN: usize = 17;
/// Size of the fixed part before the entries (magic, count).
const HEAD_LEN: usize = 12;

/// What a listed file is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Sealed and immutable, with its exact length and fingerprint.
    Closed { len: u64, fingerprint: u32 },
    /// The newest file, the one writes go to.
    Active,
    /// Replaced by a compaction; to be deleted.
    Obsolete,
}

/// The files of a store, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    files: BTreeMap<u32, FileState>,
    /// Told of every write of this manifest (or of one derived from it) into its store's
    /// directory; not part of what is written, nor of what makes two manifests equal.
    hook: Option<CommitHook>,
}

/// What [`replace`] tells after writing a manifest into `dir`: the hinter of the store that
/// lives there (see `hint.rs`), so that every file a manifest lists as closed gets a hint,
/// whoever wrote the manifest (a rotation, a compaction commit, an open), and the hints of
/// files that left the store are deleted.
#[derive(Clone)]
pub struct CommitHook {
    dir: PathBuf,
    hinter: ManifestSender,
}

impl CommitHook {
    pub fn new(dir: PathBuf, hinter: ManifestSender) -> CommitHook {
        CommitHook { dir, hinter }
    }
}

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommitHook({})", self.dir.display())
    }
}

/// Hooks do not make manifests differ.
impl PartialEq for CommitHook {
    fn eq(&self, _: &CommitHook) -> bool {
        true
    }
}

impl Eq for CommitHook {}

impl Manifest {
    /// Tells `hook` of every later write of this manifest, and of those derived from it
    /// (clones), into the hook's directory.
    pub fn set_hook(&mut self, hook: CommitHook) {
        self.hook = Some(hook);
    }

    /// Every listed file, by id.
    pub fn files(&self) -> &BTreeMap<u32, FileState> {
        &self.files
    }

    /// Lists file `id` as closed at `len` bytes with `fingerprint`.
    pub fn set_closed(&mut self, id: u32, len: u64, fingerprint: u32) {
        self.files
            .insert(id, FileState::Closed { len, fingerprint });
    }

    /// Lists file `id` as the active file. The caller closes the previous one first.
    pub fn set_active(&mut self, id: u32) {
        self.files.insert(id, FileState::Active);
    }

    /// Lists file `id` as obsolete.
    pub fn set_obsolete(&mut self, id: u32) {
        self.files.insert(id, FileState::Obsolete);
    }

    /// Drops file `id` from the list (an obsolete file, once deleted).
    pub fn forget(&mut self, id: u32) {
        self.files.remove(&id);
    }

    /// The id of the active file, if one is listed.
    pub fn active(&self) -> Option<u32> {
        self.files
            .iter()
            .find(|(_, state)| **state == FileState::Active)
            .map(|(&id, _)| id)
    }

    /// The documented byte layout (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(HEAD_LEN + ENTRY_LEN * self.files.len() + 4);
        buf.extend_from_slice(&MANIFEST_MAGIC);
        // A store has far fewer than 4 billion files: ids are u32 and every one is a file.
        buf.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for (&id, state) in &self.files {
            let (code, len, fingerprint) = match *state {
                FileState::Closed { len, fingerprint } => (1u8, len, fingerprint),
                FileState::Active => (2, 0, 0),
                FileState::Obsolete => (3, 0, 0),
            };
            buf.extend_from_slice(&id.to_le_bytes());
            buf.push(code);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&fingerprint.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Parses and checks a manifest; the error is the offset and what is wrong.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Manifest, (u64, String)> {
        if bytes.len() < HEAD_LEN + 4 {
            return Err((
                0,
                format!(
                    "the file is {} bytes, shorter than the smallest manifest ({})",
                    bytes.len(),
                    HEAD_LEN + 4
                ),
            ));
        }
        if bytes[..7] != MANIFEST_MAGIC[..7] {
            return Err((0, "not a kvs manifest (bad magic)".into()));
        }
        if bytes[7] != MANIFEST_MAGIC[7] {
            return Err((
                7,
                format!(
                    "manifest format version {}; this kvs reads version {}: it was written by \
                     a newer kvs",
                    bytes[7], MANIFEST_MAGIC[7]
                ),
            ));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err((
                body.len() as u64,
                format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"),
            ));
        }
        let count = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let expected = count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(HEAD_LEN + 4));
        if expected != Some(bytes.len()) {
            return Err((
                8,
                format!("{count} entries do not fit a {}-byte manifest", bytes.len()),
            ));
        }
        let mut files = BTreeMap::new();
        let mut last_id = None;
        for (i, entry) in body[HEAD_LEN..].chunks_exact(ENTRY_LEN).enumerate() {
            let at = (HEAD_LEN + i * ENTRY_LEN) as u64;
            let id = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let mut len = [0u8; 8];
            len.copy_from_slice(&entry[5..13]);
            let len = u64::from_le_bytes(len);
            let fingerprint = u32::from_le_bytes([entry[13], entry[14], entry[15], entry[16]]);
            let state = match entry[4] {
                1 => FileState::Closed { len, fingerprint },
                2 => FileState::Active,
                3 => FileState::Obsolete,
                other => return Err((at + 4, format!("unknown file state {other} for {id}.log"))),
            };
            if last_id.is_some_and(|last| last >= id) {
                return Err((at, format!("entries out of order at {id}.log")));
            }
            last_id = Some(id);
            files.insert(id, state);
        }
        let manifest = Manifest { files, hook: None };
        match manifest.active() {
            None => return Err((HEAD_LEN as u64, "no active file listed".into())),
            Some(active) => {
                let actives = manifest
                    .files
                    .values()
                    .filter(|s| **s == FileState::Active)
                    .count();
                if actives > 1 {
                    return Err((HEAD_LEN as u64, format!("{actives} active files listed")));
                }
                if last_id != Some(active) {
                    return Err((
                        HEAD_LEN as u64,
                        format!("the active file {active}.log is not the newest listed"),
                    ));
                }
            }
        }
        Ok(manifest)
    }
}

/// Path of the manifest of `dir`.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

/// Reads the manifest of `dir`: `None` if there is none (a store written by release 0.1.0, or
/// a new directory).
pub fn read(dir: &Path) -> Result<Option<Manifest>> {
    let path = manifest_path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KvsError::io_at(&path, e)),
    };
    Manifest::decode(&bytes)
        .map(Some)
        .map_err(|(offset, reason)| KvsError::Corruption {
            path,
            offset,
            reason: format!(
                "{reason}; the manifest lists the store's log files, and kvs does not open the \
                 store without it (restore it from a backup)"
            ),
        })
}

/// Replaces the manifest of `dir` with `manifest`: writes and fsyncs `MANIFEST.tmp`, then
/// renames it over `MANIFEST`. On error `MANIFEST` is unchanged. The caller then syncs the
/// directory (see [`crate::data_dir::sync_dir`]), which makes the rename durable.
pub fn replace(dir: &Path, manifest: &Manifest) -> Result<()> {
    let tmp = dir.join(MANIFEST_TMP);
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&manifest.encode())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(KvsError::io_at(&tmp, e));
    }
    let path = manifest_path(dir);
    fs::rename(&tmp, &path).map_err(|e| KvsError::io_at(&path, e))?;
    if let Some(hook) = manifest.hook.as_ref().filter(|hook| hook.dir == dir) {
        let mut written = manifest.clone();
        written.hook = None;
        hook.hinter.send(&written);
    }
    Ok(())
}

/// The running fingerprint of a log file (see the module docs).
#[derive(Clone, Default)]
pub struct Fingerprint(crc32fast::Hasher);

impl Fingerprint {
    /// Resumes from the fingerprint of the records so far.
    pub fn resume(value: u32) -> Fingerprint {
        Fingerprint(crc32fast::Hasher::new_with_initial(value))
    }

    /// Adds one record, given its bytes (at least its 4-byte stored checksum).
    pub fn add(&mut self, record: &[u8]) {
        self.0.update(&record[..4]);
    }

    /// Adds every record of `records`, whole records back to back (a batch), walking them by
    /// the lengths in their headers.
    pub fn add_all(&mut self, records: &[u8]) {
        let mut at = 0;
        while let Some(len) = records.get(at..).and_then(record_len_unchecked) {
            self.0.update(&records[at..at + 4]);
            at += len;
        }
    }

    /// The fingerprint of the records added so far.
    pub fn value(&self) -> u32 {
        self.0.clone().finalize()
    }
}

/// The id of a log file named `name` (`<id>.log`), if the name is canonical: decimal digits,
/// no sign, no leading zero (`0.log` is id 0; `003.log` and `+3.log` are not ids).
pub fn parse_id(stem: &str) -> Option<u32> {
    let canonical = !stem.is_empty()
        && stem.bytes().all(|b| b.is_ascii_digit())
        && (stem == "0" || !stem.starts_with('0'));
    if canonical {
        stem.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{encode_remove, encode_seal, encode_set};
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::default();
        m.set_obsolete(2);
        m.set_closed(5, 0x0102_0304_0506_0708, 0xaabb_ccdd);
        m.set_active(7);
        m
    }

    #[test]
    fn manifest_has_the_documented_bytes() {
        let bytes = sample().encode();
        let mut expected = b"kvs-man\x01".to_vec();
        expected.extend_from_slice(&[3, 0, 0, 0]);
        expected.extend_from_slice(&[2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[5, 0, 0, 0, 1, 8, 7, 6, 5, 4, 3, 2, 1, 0xdd, 0xcc, 0xbb]);
        expected.push(0xaa);
        expected.extend_from_slice(&[7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[..bytes.len() - 4], &expected[..]);
        // Pinned from an independent CRC-32 (Python zlib.crc32 of the bytes above), so a change
        // of polynomial or of the covered range fails.
        assert_eq!(&bytes[bytes.len() - 4..], &0x5981_b27cu32.to_le_bytes());
        assert_eq!(Manifest::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn any_flipped_bit_fails_decoding() {
        let bytes = sample().encode();
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(Manifest::decode(&bad).is_err(), "bit {bit} of byte {byte}");
            }
        }
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn inconsistent_lists_are_refused() {
        let reencode = |files: &[(u32, FileState)]| {
            let mut m = Manifest::default();
            for &(id, state) in files {
                m.files.insert(id, state);
            }
            m.encode()
        };
        let closed = FileState::Closed {
            len: 29,
            fingerprint: 1,
        };
        for (files, what) in [
            (vec![(1, closed)], "no active file"),
            (
                vec![(1, FileState::Active), (2, FileState::Active)],
                "2 active",
            ),
            (vec![(3, FileState::Active), (4, closed)], "not the newest"),
        ] {
            let (_, reason) = Manifest::decode(&reencode(&files)).unwrap_err();
            assert!(reason.contains(what), "{reason}");
        }
        let mut newer = sample().encode();
        newer[7] = 2;
        let (_, reason) = Manifest::decode(&newer).unwrap_err();
        assert!(reason.contains("newer kvs"), "{reason}");
    }

    #[test]
    fn fingerprint_is_the_crc_of_the_record_checksums_in_order() {
        let mut records = Vec::new();
        encode_set(&mut records, b"a", b"1", None);
        let second = records.len();
        encode_remove(&mut records, b"b");
        let third = records.len();
        encode_seal(&mut records, 99);
        let mut checksums = Vec::new();
        for start in [0, second, third] {
            checksums.extend_from_slice(&records[start..start + 4]);
        }
        let mut batch = Fingerprint::default();
        batch.add_all(&records);
        assert_eq!(batch.value(), crc32fast::hash(&checksums));
        // One at a time, and resumed halfway, gives the same.
        let mut one = Fingerprint::default();
        one.add(&records[..second]);
        let mut resumed = Fingerprint::resume(one.value());
        resumed.add(&records[second..third]);
        resumed.add(&records[third..]);
        assert_eq!(resumed.value(), batch.value());
        // Another order, another fingerprint.
        let mut swapped = Fingerprint::default();
        swapped.add(&records[second..third]);
        swapped.add(&records[..second]);
        swapped.add(&records[third..]);
        assert_ne!(swapped.value(), batch.value());
    }

    #[test]
    fn only_canonical_names_are_ids() {
        assert_eq!(parse_id("3"), Some(3));
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("4294967295"), Some(u32::MAX));
        for bad in ["003", "+3", "-3", "", " 3", "3 ", "0x3", "4294967296", "00"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
