//! TEMPORARY: the index's deadline API, stood in for until it lands in `index.rs`.
#![allow(dead_code)]

use super::index::{Index, IndexFull, RecordPos};
use crate::KeyExpiry;

pub enum Change<'a> {
    Put {
        key: &'a [u8],
        pos: RecordPos,
        deadline: Option<u64>,
    },
    Remove {
        key: &'a [u8],
    },
}

pub trait IndexV2 {
    fn insert_with_deadline(
        &self,
        key: &[u8],
        pos: RecordPos,
        deadline: Option<u64>,
    ) -> Result<Option<RecordPos>, IndexFull>;
    fn apply(&self, changes: &[Change<'_>]) -> Result<Vec<Option<RecordPos>>, IndexFull>;
    fn deadline(&self, key: &[u8]) -> KeyExpiry;
    fn for_each_entry(&self, f: impl FnMut(&[u8], RecordPos, Option<u64>));
    fn remove_expired(&self, now: u64, max: usize, f: impl FnMut(&[u8], RecordPos)) -> usize;
    fn expiring_len(&self) -> usize;
}

impl IndexV2 for Index {
    fn insert_with_deadline(
        &self,
        key: &[u8],
        pos: RecordPos,
        _deadline: Option<u64>,
    ) -> Result<Option<RecordPos>, IndexFull> {
        self.insert(key, pos)
    }
    fn apply(&self, changes: &[Change<'_>]) -> Result<Vec<Option<RecordPos>>, IndexFull> {
        let mut out = Vec::new();
        for c in changes {
            out.push(match c {
                Change::Put { key, pos, .. } => self.insert(key, *pos)?,
                Change::Remove { key } => self.remove(key),
            });
        }
        Ok(out)
    }
    fn deadline(&self, key: &[u8]) -> KeyExpiry {
        if self.contains(key) {
            KeyExpiry::Never
        } else {
            KeyExpiry::Missing
        }
    }
    fn for_each_entry(&self, mut f: impl FnMut(&[u8], RecordPos, Option<u64>)) {
        self.for_each(|k, p| f(k, p, None))
    }
    fn remove_expired(&self, _now: u64, _max: usize, _f: impl FnMut(&[u8], RecordPos)) -> usize {
        0
    }
    fn expiring_len(&self) -> usize {
        0
    }
}
