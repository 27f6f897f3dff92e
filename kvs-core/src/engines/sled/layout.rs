//! How a `SledKvsEngine` lays its data out inside the sled database, and the migration of a
//! store written by release 0.1.0.
//!
//! # Format 2 (release 0.2.0)
//!
//! Three sled trees:
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `kvs-meta` | `format` (6 bytes, ASCII) | the format version, u32 big-endian: `00 00 00 02` |
//! | `kvs-data` | the user's key | a *record*, below |
//! | `kvs-expiry` | the deadline, u64 big-endian (8 bytes), then the user's key | empty |
//!
//! A record is:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | flags: bit 0 set = the key has a deadline; the other bits are 0 |
//! | 1 | 8 | only with bit 0: the deadline, milliseconds since the Unix epoch, u64 big-endian |
//! | 1 or 9 | rest | the value |
//!
//! So `set(b"k", b"v")` stores `00 76` and a deadline of 1,700,000,000,000 ms stores
//! `01 00 00 01 8b cf e5 68 00 76` (pinned by a test below).
//!
//! The record is the truth about a key's deadline. `kvs-expiry` is an index ordered by
//! deadline for the active sweep: every record with a deadline has its entry there. A write
//! that replaces or removes a record with a deadline removes its entry too (in the same
//! transaction, or, for the single-operation writes, in one right after), so an entry is
//! *stale* (its key since removed, set without a deadline, or given another deadline) only
//! after a crash between the two: the sweep compares each entry with the record and drops the
//! stale ones. A record whose deadline has passed is hidden from every read until the sweep
//! removes it.
//!
//! A record with a flag bit other than bit 0 set, or too short for its deadline, is refused as
//! corruption of that key (a newer release would raise the format version first).
//!
//! # Format 1 (release 0.1.0)
//!
//! No `kvs-meta` tree: the user's keys and raw values (no record header) in sled's default
//! tree. Opening such a store migrates it: the default tree is moved into `kvs-data` in chunks
//! of [`MIGRATION_CHUNK_KEYS`] keys (or [`MIGRATION_CHUNK_BYTES`], whichever is fewer), each
//! chunk one sled transaction over both trees (insert
//! the record, remove the old key), then `format` is written. A crash in the middle leaves
//! every key in exactly one of the two trees (a transaction is atomic across a crash), and the
//! next open moves the rest: nothing is lost or doubled. Every open moves whatever the default
//! tree holds, so a store half-migrated always finishes.
//!
//! A `format` above [`FORMAT_VERSION`] is refused by version, with nothing changed.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::{KvsError, Result};

/// The tree holding the format version.
pub(crate) const META_TREE: &str = "kvs-meta";
/// The tree holding the records.
pub(crate) const DATA_TREE: &str = "kvs-data";
/// The tree ordering keys by deadline.
pub(crate) const EXPIRY_TREE: &str = "kvs-expiry";
/// The key of the format version in [`META_TREE`].
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// The format this release writes.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// How many keys of a 0.1.0 store one migration transaction moves at most. A transaction
/// holds sled's process-wide write lock and its writes in memory: small enough to keep both
/// short, large enough that a store of a million keys takes a thousand of them.
pub(crate) const MIGRATION_CHUNK_KEYS: usize = 1000;
/// How many bytes of keys and values one migration transaction moves at most (past the first
/// key, which moves whatever its size): large values make smaller chunks.
pub(crate) const MIGRATION_CHUNK_BYTES: usize = 8 << 20;

/// Flag bit 0 of a record: a deadline follows.
const HAS_DEADLINE: u8 = 0x01;

/// A record's fields, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) deadline: Option<u64>,
    pub(crate) value: &'a [u8],
}

/// The bytes of a record of `value` with `deadline`.
pub(crate) fn encode(value: &[u8], deadline: Option<u64>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(value.len() + 9);
    match deadline {
        None => bytes.push(0),
        Some(deadline) => {
            bytes.push(HAS_DEADLINE);
            bytes.extend_from_slice(&deadline.to_be_bytes());
        }
    }
    bytes.extend_from_slice(value);
    bytes
}

/// The record in `bytes`, the value of `key` in `kvs-data` of the database in `sled_dir`
/// (named in the error).
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    key: &[u8],
    sled_dir: Option<&Path>,
) -> Result<Record<'a>> {
    let damaged = |reason: String| KvsError::Corruption {
        path: sled_dir.map_or_else(|| "sled database".into(), Path::to_path_buf),
        offset: 0,
        reason: format!(
            "the record of key {:?} in sled tree {DATA_TREE} {reason}",
            String::from_utf8_lossy(key)
        ),
    };
    match bytes.split_first() {
        None => Err(damaged("is empty (it has no flags byte)".into())),
        Some((0, value)) => Ok(Record {
            deadline: None,
            value,
        }),
        Some((&HAS_DEADLINE, rest)) => match rest.split_first_chunk::<8>() {
            Some((deadline, value)) => Ok(Record {
                deadline: Some(u64::from_be_bytes(*deadline)),
                value,
            }),
            None => Err(damaged(format!(
                "is {} bytes long, too short for the deadline its flags announce",
                bytes.len()
            ))),
        },
        Some((flags, _)) => Err(damaged(format!(
            "has unknown flags {flags:#04x} (written by a newer release?)"
        ))),
    }
}

/// The key of `key`'s entry in `kvs-expiry` for `deadline`.
pub(crate) fn expiry_entry(deadline: u64, key: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(8 + key.len());
    entry.extend_from_slice(&deadline.to_be_bytes());
    entry.extend_from_slice(key);
    entry
}

/// The deadline and user key of an entry of `kvs-expiry`, `None` for an entry shorter than a
/// deadline (never written by kvs).
pub(crate) fn split_expiry_entry(entry: &[u8]) -> Option<(u64, &[u8])> {
    let (deadline, key) = entry.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*deadline), key))
}

/// The trees of an open store, after [`prepare`].
pub(crate) struct Trees {
    pub(crate) data: sled::Tree,
    pub(crate) expiry: sled::Tree,
}

/// Opens the trees of `db`, migrating a 0.1.0 store (or finishing a migration a crash cut
/// short) and recording the format of a new one. `sled_dir` names the database in errors.
pub(crate) fn prepare(db: &sled::Db, sled_dir: Option<&Path>) -> Result<Trees> {
    let err = |e| super::to_kvs_error(e, sled_dir);
    let meta = db.open_tree(META_TREE).map_err(err)?;
    if let Some(version) = meta.get(FORMAT_KEY).map_err(err)? {
        let known = <[u8; 4]>::try_from(version.as_ref())
            .ok()
            .map(u32::from_be_bytes);
        if known != Some(FORMAT_VERSION) {
            let shown = known.map_or_else(|| format!("{:?}", version.as_ref()), |v| v.to_string());
            return Err(KvsError::InvalidArgument(format!(
                "{} holds a sled store of kvs format version {shown} (tree {META_TREE}, key \
                 {}); this release reads version {FORMAT_VERSION}: open it with the release \
                 that wrote it",
                sled_dir.map_or_else(|| "the sled database".into(), |d| d.display().to_string()),
                String::from_utf8_lossy(FORMAT_KEY),
            )));
        }
    }
    let trees = Trees {
        data: db.open_tree(DATA_TREE).map_err(err)?,
        expiry: db.open_tree(EXPIRY_TREE).map_err(err)?,
    };
    migrate_default_tree(db, &trees.data, sled_dir)?;
    if meta.get(FORMAT_KEY).map_err(err)?.is_none() {
        meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
            .map_err(err)?;
    }
    db.flush().map_err(err)?;
    Ok(trees)
}

/// Moves every key of sled's default tree (format 1: raw values) into `data` as a record
/// without deadline, a chunk of keys per transaction (see [`MIGRATION_CHUNK_KEYS`]), each
/// chunk flushed before the next.
fn migrate_default_tree(db: &sled::Db, data: &sled::Tree, sled_dir: Option<&Path>) -> Result<()> {
    let err = |e| super::to_kvs_error(e, sled_dir);
    let old: &sled::Tree = db;
    loop {
        let mut chunk: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        let mut bytes = 0;
        for pair in old.iter().take(MIGRATION_CHUNK_KEYS) {
            let (key, value) = pair.map_err(err)?;
            bytes += key.len() + value.len();
            if !chunk.is_empty() && bytes > MIGRATION_CHUNK_BYTES {
                break;
            }
            chunk.push((key, value));
        }
        if chunk.is_empty() {
            return Ok(());
        }
        (old, data)
            .transaction(|(old, data)| {
                for (key, value) in &chunk {
                    data.insert(key, encode(value, None))?;
                    old.remove(key)?;
                }
                Ok::<_, ConflictableTransactionError<KvsError>>(())
            })
            .map_err(|e| transaction_error(e, sled_dir))?;
        db.flush().map_err(err)?;
        crate::engines::log::crash_point::hit("sled-migration:chunk-committed");
    }
}

/// A failed transaction as a kvs error: sled's own, or the one the transaction aborted with.
pub(crate) fn transaction_error(
    err: TransactionError<KvsError>,
    sled_dir: Option<&Path>,
) -> KvsError {
    match err {
        TransactionError::Storage(e) => super::to_kvs_error(e, sled_dir),
        TransactionError::Abort(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_documented_bytes() {
        assert_eq!(encode(b"v", None), [0x00, b'v']);
        assert_eq!(
            encode(b"v", Some(1_700_000_000_000)),
            [0x01, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, b'v']
        );
        assert_eq!(encode(b"", None), [0x00]);
        assert_eq!(
            expiry_entry(1_700_000_000_000, b"k"),
            [0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, b'k']
        );
        assert_eq!(FORMAT_VERSION.to_be_bytes(), [0, 0, 0, 2]);
        assert_eq!(FORMAT_KEY, b"format");
    }

    #[test]
    fn records_round_trip() {
        for deadline in [None, Some(0), Some(1), Some(u64::MAX)] {
            for value in [&b""[..], b"v", &[0xff; 300]] {
                let bytes = encode(value, deadline);
                assert_eq!(
                    decode(&bytes, b"k", None).unwrap(),
                    Record { deadline, value }
                );
            }
        }
        let entry = expiry_entry(42, b"key");
        assert_eq!(split_expiry_entry(&entry), Some((42, &b"key"[..])));
        assert_eq!(split_expiry_entry(b"short"), None);
    }

    #[test]
    fn damaged_records_are_corruption_of_their_key() {
        let dir = Path::new("/data/sled");
        for (bytes, says) in [
            (&[][..], "is empty"),
            (&[0x01, 0, 0, 0][..], "is 4 bytes long, too short"),
            (&[0x02, b'v'][..], "unknown flags 0x02"),
        ] {
            let err = decode(bytes, b"the-key", Some(dir)).unwrap_err();
            assert!(err.is_corruption(), "{err:?}");
            assert_eq!(err.path(), Some(dir));
            let message = err.to_string();
            assert!(
                message.contains("\"the-key\"") && message.contains(says),
                "{message}"
            );
        }
    }
}
