//! The cursors of `SledKvsEngine::scan_bytes`: u64 cursors mapped to the key a walk resumes
//! after.
//!
//! sled is ordered by key, so a walk resumes after the last key it looked at. Redis's cursors
//! are integers, so the engine hands out an id for that key and keeps the pair here, shared by
//! every clone of the handle:
//! - ids are never reused in the life of the handle (a counter from 1; it would take 2^64
//!   pages to wrap, and it skips 0); a new handle knows no cursor, so a cursor of an earlier
//!   handle, or of another process, is unknown;
//! - at most [`MAX_OPEN_WALKS`] cursors not yet passed back are kept; past that the oldest
//!   is forgotten (an abandoned walk costs nothing for long);
//! - a cursor passed back stays valid for a retry until [`MAX_USED_CURSORS`] later ones have
//!   been passed back;
//! - an id not kept (forgotten, or never handed out) is [`KvsError::InvalidArgument`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{KvsError, Result};

/// How many walks can be open at once (each holding the cursor of its next page).
pub(crate) const MAX_OPEN_WALKS: usize = 4096;
/// How many cursors already passed back are kept for a retry of the same page.
pub(crate) const MAX_USED_CURSORS: usize = 1024;

#[derive(Debug)]
pub(crate) struct Cursors {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    next_id: u64,
    /// Handed out and not yet passed back: id to the key the walk resumes after.
    open: BTreeMap<u64, Vec<u8>>,
    /// Passed back already, kept for a retry.
    used: BTreeMap<u64, Vec<u8>>,
}

impl Cursors {
    pub(crate) fn new() -> Cursors {
        Cursors::starting_at(1)
    }

    fn starting_at(first: u64) -> Cursors {
        Cursors {
            inner: Mutex::new(Inner {
                next_id: first,
                open: BTreeMap::new(),
                used: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change below leaves the maps consistent between statements.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new cursor for a walk that resumes after `key`.
    pub(crate) fn open(&self, key: Vec<u8>) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id = match id.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        inner.open.insert(id, key);
        while inner.open.len() > MAX_OPEN_WALKS {
            inner.open.pop_first();
        }
        id
    }

    /// The key the walk of `cursor` resumes after.
    pub(crate) fn resume(&self, cursor: u64) -> Result<Vec<u8>> {
        let mut inner = self.lock();
        if let Some(key) = inner.open.remove(&cursor) {
            inner.used.insert(cursor, key.clone());
            while inner.used.len() > MAX_USED_CURSORS {
                inner.used.pop_first();
            }
            return Ok(key);
        }
        match inner.used.get(&cursor) {
            Some(key) => Ok(key.clone()),
            None => Err(KvsError::InvalidArgument(format!(
                "scan cursor {cursor} is unknown to this sled store: it was not returned by \
                 this handle, or its walk was forgotten (at most {MAX_OPEN_WALKS} walks stay \
                 open at once); start the walk again from cursor 0"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_resumes_its_key_and_stays_valid_for_a_retry() {
        let cursors = Cursors::new();
        let a = cursors.open(b"a".to_vec());
        let b = cursors.open(b"b".to_vec());
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(cursors.resume(b).unwrap(), b"b");
        assert_eq!(cursors.resume(b).unwrap(), b"b", "a retry of the same page");
        assert_eq!(cursors.resume(a).unwrap(), b"a");
        let err = cursors.resume(a.wrapping_add(1000)).unwrap_err();
        assert!(matches!(err, KvsError::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("start the walk again"), "{err}");
    }

    #[test]
    fn the_oldest_open_walk_is_forgotten_past_the_limit() {
        let cursors = Cursors::new();
        let first = cursors.open(b"first".to_vec());
        let second = cursors.open(b"second".to_vec());
        for i in 0..MAX_OPEN_WALKS - 1 {
            cursors.open(i.to_string().into_bytes());
        }
        assert!(cursors.resume(first).is_err(), "evicted");
        assert_eq!(cursors.resume(second).unwrap(), b"second");
    }

    #[test]
    fn ids_skip_zero_when_the_counter_wraps() {
        let cursors = Cursors::starting_at(u64::MAX);
        assert_eq!(cursors.open(b"x".to_vec()), u64::MAX);
        assert_eq!(cursors.open(b"y".to_vec()), 1);
    }
}
