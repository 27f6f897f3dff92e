//! [`verify_dir`]: reads and checks every record of every log file of a [`KvStore`]
//! directory with the engine's own reader (`reader.rs`), and says where each file is damaged,
//! without opening the store, replaying it into an index, or changing a byte. This is what
//! `kvs-admin check` runs.
//!
//! Each file is read from its header to its end: every record's header and checksum, every
//! batch whole. A file's first bad record is judged as opening the store judges it
//! (`recovery.rs`, [`RecoveryMode::TolerateTornTail`], the default): in the newest file, a
//! torn tail (a record cut short, with no valid record after it) or a tail of zeros is what a
//! crash leaves and what opening the store cuts off, reported as a torn tail, not as damage;
//! anything else is damage, reported with the offset of the next valid record after it, if
//! the file holds one (the records from there on are lost to a store that stops at it).
//!
//! Hint files (`hint.rs`) are checked too, each against the `MANIFEST` entry of its log file:
//! a damaged or stale one is reported in [`VerifyReport::hint_warnings`], never as damage. A
//! hint only saves open a replay; opening the store replays the log file instead of using a
//! bad one, and writes it again.
//!
//! [`KvStore`]: super::KvStore

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::manifest::{self, parse_id, FileState};
use super::reader::{Damage, LogReader, Step};
use super::recovery::{judge_bad_record, other_version_reason, valid_record_after, Verdict};
use super::RecoveryMode;
use crate::data_dir::{self, DirLock, EngineKind};
use crate::{KvsError, Result};

/// What [`verify_dir`] found in a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every log file checked, oldest first.
    pub files: Vec<FileCheck>,
    /// Log files the store's `MANIFEST` marks as replaced by a compaction (to be deleted on the
    /// next open): not part of the store, not checked.
    pub obsolete: Vec<PathBuf>,
    /// Hint files that cannot be used (damaged, cut short, stale, of another file), each with
    /// what is wrong: warnings, not damage (open replays the log file instead).
    pub hint_warnings: Vec<(PathBuf, String)>,
}

impl VerifyReport {
    /// Whether any file is damaged (a torn tail of the newest file is not damage).
    pub fn is_damaged(&self) -> bool {
        self.files.iter().any(|f| f.damage.is_some())
    }

    /// Every record checked, in all files (a batch counts as one record per member).
    pub fn records(&self) -> u64 {
        self.files.iter().map(|f| f.records).sum()
    }
}

/// What [`verify_dir`] found in one log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// The file.
    pub path: PathBuf,
    /// Its id (the `<id>` of `<id>.log`).
    pub id: u32,
    /// Its format version (from its header), `None` if the header is bad.
    pub version: Option<u8>,
    /// Its length in bytes.
    pub len: u64,
    /// Valid records read (batch members count one each; seals and batch frames do not).
    pub records: u64,
    /// Where the valid records end.
    pub checked_to: u64,
    /// The first bad record, if the file is damaged.
    pub damage: Option<FileDamage>,
    /// A torn tail of the newest file, from this offset to the end: what a crash leaves, cut
    /// off when the store is next opened read-write.
    pub torn_tail: Option<u64>,
}

/// The first bad record of a damaged log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDamage {
    /// Byte offset of the bad record (0: the file header).
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
    /// The offset of the next valid record after it, if the file holds one: the records from
    /// there on are lost to a store that stops at the damage.
    pub valid_after: Option<u64>,
}

impl FileCheck {
    /// The damage as the engine's own error: [`KvsError::Corruption`], naming the file and
    /// offset.
    pub fn error(&self) -> Option<KvsError> {
        self.damage.as_ref().map(|d| KvsError::Corruption {
            path: self.path.clone(),
            offset: d.offset,
            reason: d.reason.clone(),
        })
    }
}

/// Checks every record of every log file of the [`KvStore`](super::KvStore) in `dir` (see the
/// module docs), calling `progress(file, bytes_done, bytes_total)` after each file, with
/// totals over all files.
///
/// Takes the directory's lock shared, as a read-only open does, and creates and writes
/// nothing: fails with [`KvsError::Locked`] while a process has the store open for writing,
/// and with [`KvsError::EngineMismatch`] for a directory of another engine. Damage is not an
/// error: it is in the report. Errors are for what stops the check (a file that cannot be
/// read, a damaged `MANIFEST`).
pub fn verify_dir_with_progress(
    dir: &Path,
    progress: &mut dyn FnMut(&Path, u64, u64),
) -> Result<VerifyReport> {
    data_dir::check_engine(dir, EngineKind::Kvs)?;
    let _lock = DirLock::acquire_shared(dir, data_dir::DEFAULT_LOCK_WAIT)?;
    let (ids, obsolete_ids, closed) = log_files(dir)?;
    let mut report = VerifyReport::default();
    let mut sizes = Vec::new();
    for &id in &ids {
        let path = super::writer::log_path(dir, id);
        if obsolete_ids.contains(&id) {
            report.obsolete.push(path);
            continue;
        }
        let len = fs::metadata(&path)
            .map_err(|e| KvsError::io_at(&path, e))?
            .len();
        sizes.push((id, path, len));
    }
    let total: u64 = sizes.iter().map(|(_, _, len)| len).sum();
    let newest = sizes.last().map(|&(id, _, _)| id);
    let mut done = 0;
    for (id, path, len) in sizes {
        let check = check_file(&path, id, len, Some(id) == newest)?;
        done += len;
        progress(&path, done, total);
        report.files.push(check);
    }
    for (id, len, fingerprint) in closed {
        if let Some(reason) = super::hint::verify(dir, id, len, fingerprint) {
            report
                .hint_warnings
                .push((super::hint::hint_path(dir, id), reason));
        }
    }
    Ok(report)
}

/// The format version of each log file of the store in `dir`, oldest first, from its header
/// alone (`None` for a header that is not a kvs log file's): cheap, for statistics. Obsolete
/// files are left out, as [`verify_dir`] leaves them.
pub fn log_file_versions(dir: &Path) -> Result<Vec<(PathBuf, Option<u8>)>> {
    let (ids, obsolete, _) = log_files(dir)?;
    let mut versions = Vec::new();
    for id in ids.into_iter().filter(|id| !obsolete.contains(id)) {
        let path = super::writer::log_path(dir, id);
        let io = |e| KvsError::io_at(&path, e);
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let version = match LogReader::open(&file, len).map_err(io)? {
            Ok(reader) => Some(reader.version() as u8),
            Err(_) => None,
        };
        versions.push((path, version));
    }
    Ok(versions)
}

/// The ids of the `<id>.log` files in `dir`, sorted, those the `MANIFEST` says are
/// obsolete, and those it lists as closed (id, length, fingerprint).
#[allow(clippy::type_complexity)]
fn log_files(dir: &Path) -> Result<(Vec<u32>, Vec<u32>, Vec<(u32, u64, u32)>)> {
    let manifest = manifest::read(dir)?;
    let files = manifest.as_ref().map(|m| m.files().iter());
    let obsolete: Vec<u32> = files
        .clone()
        .into_iter()
        .flatten()
        .filter(|(_, state)| matches!(state, FileState::Obsolete))
        .map(|(&id, _)| id)
        .collect();
    let closed: Vec<(u32, u64, u32)> = files
        .into_iter()
        .flatten()
        .filter_map(|(&id, state)| match *state {
            FileState::Closed { len, fingerprint } => Some((id, len, fingerprint)),
            _ => None,
        })
        .collect();
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| KvsError::io_at(dir, e))? {
        let entry = entry.map_err(|e| KvsError::io_at(dir, e))?;
        let name = entry.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(parse_id)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok((ids, obsolete, closed))
}

/// [`verify_dir_with_progress`] without progress.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport> {
    verify_dir_with_progress(dir, &mut |_, _, _| {})
}

/// Reads every record of the log file at `path`, `len` bytes long.
fn check_file(path: &Path, id: u32, len: u64, is_newest: bool) -> Result<FileCheck> {
    let io = |e| KvsError::io_at(path, e);
    let file = File::open(path).map_err(io)?;
    let mut check = FileCheck {
        path: path.to_path_buf(),
        id,
        version: None,
        len,
        records: 0,
        checked_to: 0,
        damage: None,
        torn_tail: None,
    };
    let mut reader = match LogReader::open(&file, len).map_err(io)? {
        Ok(reader) => reader,
        // A newest file cut short inside its header: a crash while it was being created
        // (opening the store writes its header again).
        Err(Damage::ShortFile { .. }) if is_newest => {
            check.torn_tail = Some(0);
            return Ok(check);
        }
        Err(damage) => {
            check.damage = Some(FileDamage {
                offset: 0,
                reason: damage.to_string(),
                valid_after: None,
            });
            return Ok(check);
        }
    };
    let version = reader.version();
    check.version = Some(version as u8);
    let damage: Damage = loop {
        match reader.next().map_err(io)? {
            Step::Record(record) => {
                if record.kind != super::format::RecordKind::Seal {
                    check.records += 1;
                }
            }
            Step::Batch(batch) => check.records += batch.members.len() as u64,
            Step::End => {
                check.checked_to = reader.offset();
                return Ok(check);
            }
            Step::Damage(damage) => break damage,
        }
    };
    let offset = damage.offset();
    check.checked_to = offset;
    // What opening the store (in the default recovery mode) makes of it.
    let at = (&file, version);
    let mode = RecoveryMode::default();
    let (reason, valid_after) =
        match judge_bad_record(at, damage, len, is_newest, mode).map_err(io)? {
            Verdict::ZeroTail | Verdict::TornTail => {
                check.torn_tail = Some(offset);
                return Ok(check);
            }
            Verdict::OtherVersion(other) => (
                other_version_reason(damage, other, version),
                valid_record_after(&file, version, damage, len).map_err(io)?,
            ),
            Verdict::ContinuesAt(found) => (damage.to_string(), Some(found)),
            Verdict::Corrupt => (
                damage.to_string(),
                valid_record_after(&file, version, damage, len).map_err(io)?,
            ),
        };
    check.damage = Some(FileDamage {
        offset,
        reason,
        valid_after,
    });
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KvStore, KvStoreOptions, KvsEngine};

    /// A store of two closed files and an active one, closed.
    fn store_of_three_files(dir: &Path) {
        let store = KvStore::open_with(dir, KvStoreOptions::default().max_file_size(4096)).unwrap();
        for i in 0..300u32 {
            store
                .set_bytes(format!("key{i}").as_bytes(), &[i as u8; 20])
                .unwrap();
        }
    }

    #[test]
    fn a_healthy_store_has_every_record_checked_and_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        store_of_three_files(dir.path());
        let report = verify_dir(dir.path()).unwrap();
        assert!(report.files.len() >= 3, "{report:?}");
        assert!(!report.is_damaged(), "{report:?}");
        assert_eq!(report.records(), 300);
        for f in &report.files {
            assert_eq!(f.checked_to, f.len, "{f:?}");
            assert_eq!(f.version, Some(2));
        }
    }

    #[test]
    fn a_flipped_byte_in_a_closed_file_is_damage_at_its_record() {
        let dir = tempfile::tempdir().unwrap();
        store_of_three_files(dir.path());
        let healthy = verify_dir(dir.path()).unwrap();
        let first = &healthy.files[0];
        // A byte in the value of some record in the middle of the first, closed, file.
        let path = first.path.clone();
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        fs::write(&path, &bytes).unwrap();

        let report = verify_dir(dir.path()).unwrap();
        assert!(report.is_damaged());
        let bad = &report.files[0];
        let damage = bad.damage.as_ref().unwrap();
        assert!(
            damage.offset <= at as u64 && damage.offset > 8,
            "{damage:?}"
        );
        assert!(damage.valid_after.is_some(), "{damage:?}");
        assert!(bad.records < first.records);
        let error = bad.error().unwrap().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(
            error.contains(&format!("offset {}", damage.offset)),
            "{error}"
        );
        // The other files are healthy, and said to be.
        assert!(report.files[1..].iter().all(|f| f.damage.is_none()));
    }

    #[test]
    fn a_torn_tail_of_the_newest_file_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        store_of_three_files(dir.path());
        let report = verify_dir(dir.path()).unwrap();
        let newest = report.files.last().unwrap();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&newest.path)
            .unwrap();
        file.set_len(newest.len - 3).unwrap();
        let report = verify_dir(dir.path()).unwrap();
        assert!(!report.is_damaged(), "{report:?}");
        assert!(report.files.last().unwrap().torn_tail.is_some());
        // The same cut in a closed file is damage.
        let first = &report.files[0];
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&first.path)
            .unwrap();
        file.set_len(first.len - 3).unwrap();
        assert!(verify_dir(dir.path()).unwrap().files[0].damage.is_some());
    }

    #[test]
    fn a_store_of_release_0_1_0_verifies_as_format_version_1_and_is_left_untouched() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0.1.0/kvs");
        let listing = |dir: &Path| {
            let mut names: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = listing(&dir);
        let report = verify_dir(&dir).unwrap();
        assert_eq!(report.files.len(), 8, "{report:?}");
        assert!(!report.is_damaged(), "{report:?}");
        assert!(report.records() > 0);
        assert!(
            report.files.iter().all(|f| f.version == Some(1)),
            "{report:?}"
        );
        let versions = log_file_versions(&dir).unwrap();
        assert_eq!(versions.len(), 8);
        assert!(versions.iter().all(|(_, v)| *v == Some(1)), "{versions:?}");
        // Nothing created (not even a LOCK file), nothing written.
        assert_eq!(listing(&dir), before);
    }

    #[test]
    fn a_batch_cut_short_at_the_end_of_the_newest_file_is_a_torn_tail() {
        // Its members are valid records of their own, inside its extent: they prove nothing.
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        store.set_bytes(b"before", b"1").unwrap();
        let mut batch = crate::WriteBatch::new();
        batch.set(b"a", b"hello").set(b"b", b"world");
        store.apply_batch(&batch).unwrap();
        drop(store);
        let report = verify_dir(dir.path()).unwrap();
        let newest = report.files.last().unwrap().clone();
        assert_eq!(newest.records, 3);
        for cut in 1..=3 {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&newest.path)
                .unwrap();
            file.set_len(newest.len - cut).unwrap();
            let report = verify_dir(dir.path()).unwrap();
            assert!(!report.is_damaged(), "cut {cut}: {report:?}");
            let check = report.files.last().unwrap();
            assert_eq!(check.records, 1, "cut {cut}");
            assert!(check.torn_tail.is_some(), "cut {cut}");
            // As opening the store judges it: the batch is cut off, the record before kept.
            let store =
                KvStore::open_with(dir.path(), KvStoreOptions::default().read_only(true)).unwrap();
            assert_eq!(store.len().unwrap(), 1);
        }
    }

    #[test]
    fn a_newest_file_cut_short_in_its_header_is_a_torn_tail_and_a_closed_one_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        store_of_three_files(dir.path());
        let report = verify_dir(dir.path()).unwrap();
        let newest = report.files.last().unwrap().path.clone();
        fs::write(&newest, b"kvs-").unwrap();
        let report = verify_dir(dir.path()).unwrap();
        assert!(!report.is_damaged(), "{report:?}");
        assert_eq!(report.files.last().unwrap().torn_tail, Some(0));
        fs::write(&report.files[0].path, b"kvs-").unwrap();
        let report = verify_dir(dir.path()).unwrap();
        let damage = report.files[0].damage.as_ref().unwrap();
        assert_eq!(damage.offset, 0);
        assert_eq!(damage.reason, "file is 4 bytes, shorter than its header");
    }

    #[test]
    fn a_store_open_for_writing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _store = KvStore::open(dir.path()).unwrap();
        let err = verify_dir(dir.path()).unwrap_err();
        assert!(matches!(err, KvsError::Locked { .. }), "{err}");
    }
}
