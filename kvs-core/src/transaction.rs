//! The [`Transaction`] the engines hand to the function given to
//! [`KvsEngine::transaction`](crate::KvsEngine::transaction): reads from the store as of the
//! transaction with the transaction's own writes on top, and the writes collected as one
//! [`WriteBatch`] for the engine to apply.

use std::collections::HashMap;

use crate::{is_expired, now_millis, BatchOp, KeyExpiry, Result, Transaction, WriteBatch};

/// A key's value and deadline, as a transaction reads it from the store.
pub(crate) type Entry = (Vec<u8>, Option<u64>);

/// A transaction over an engine whose current state `read` returns (`None`: the key is not
/// set; an expired key is not set).
pub(crate) struct Overlay<R> {
    read: R,
    /// What the transaction wrote, per key: the last write wins (`None`: removed).
    written: HashMap<Vec<u8>, Option<Entry>>,
    batch: WriteBatch,
}

impl<R> Overlay<R>
where
    R: FnMut(&[u8]) -> Result<Option<Entry>>,
{
    pub(crate) fn new(read: R) -> Overlay<R> {
        Overlay {
            read,
            written: HashMap::new(),
            batch: WriteBatch::new(),
        }
    }

    /// The writes, in the order they were made, for the engine to apply as one batch.
    pub(crate) fn into_batch(self) -> WriteBatch {
        self.batch
    }

    fn entry(&mut self, key: &[u8]) -> Result<Option<Entry>> {
        match self.written.get(key) {
            Some(written) => Ok(written.clone()),
            None => (self.read)(key),
        }
    }
}

impl<R> Transaction for Overlay<R>
where
    R: FnMut(&[u8]) -> Result<Option<Entry>>,
{
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.entry(key)?.map(|(value, _)| value))
    }

    fn expiry(&mut self, key: &[u8]) -> Result<KeyExpiry> {
        Ok(match self.entry(key)? {
            None => KeyExpiry::Missing,
            Some((_, None)) => KeyExpiry::Never,
            Some((_, Some(deadline))) => KeyExpiry::At(deadline),
        })
    }

    fn set(&mut self, key: &[u8], value: &[u8], deadline: Option<u64>) -> Result<()> {
        if deadline.is_some_and(|d| is_expired(d, now_millis())) {
            self.remove(key)?;
            return Ok(());
        }
        self.written
            .insert(key.to_vec(), Some((value.to_vec(), deadline)));
        self.batch.push(BatchOp::Set {
            key: key.to_vec(),
            value: value.to_vec(),
            deadline,
        });
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        let was_set = self.entry(key)?.is_some();
        self.written.insert(key.to_vec(), None);
        if was_set {
            self.batch.push(BatchOp::Remove { key: key.to_vec() });
        }
        Ok(was_set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> impl FnMut(&[u8]) -> Result<Option<Entry>> {
        |key: &[u8]| {
            Ok(match key {
                b"a" => Some((b"1".to_vec(), None)),
                b"t" => Some((b"x".to_vec(), Some(u64::MAX))),
                _ => None,
            })
        }
    }

    #[test]
    fn reads_see_the_store_then_the_transactions_own_writes() {
        let mut tx = Overlay::new(store());
        assert_eq!(tx.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(tx.expiry(b"t").unwrap(), KeyExpiry::At(u64::MAX));
        assert_eq!(tx.expiry(b"missing").unwrap(), KeyExpiry::Missing);
        tx.set(b"a", b"2", Some(u64::MAX - 1)).unwrap();
        assert_eq!(tx.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(tx.expiry(b"a").unwrap(), KeyExpiry::At(u64::MAX - 1));
        assert!(tx.remove(b"a").unwrap());
        assert!(
            !tx.remove(b"a").unwrap(),
            "already removed by the transaction"
        );
        assert_eq!(tx.get(b"a").unwrap(), None);
        assert!(!tx.remove(b"missing").unwrap());
        tx.set(b"gone", b"v", Some(1)).unwrap();
        assert_eq!(
            tx.get(b"gone").unwrap(),
            None,
            "a passed deadline removes the key"
        );
        let batch = tx.into_batch();
        assert_eq!(
            batch.ops(),
            &[
                BatchOp::Set {
                    key: b"a".to_vec(),
                    value: b"2".to_vec(),
                    deadline: Some(u64::MAX - 1)
                },
                BatchOp::Remove { key: b"a".to_vec() },
            ],
            "removes of keys that are not set write nothing"
        );
    }
}
