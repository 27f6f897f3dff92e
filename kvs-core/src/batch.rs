//! [`WriteBatch`]: sets and removes over any keys that an engine commits all or nothing
//! ([`KvsEngine::apply_batch`](crate::KvsEngine::apply_batch)).

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value`. `deadline` is when the key expires (milliseconds since the Unix
    /// epoch), `None` for never; as with [`KvsEngine::set_bytes`](crate::KvsEngine::set_bytes),
    /// any deadline the key had before is replaced.
    Set {
        /// The key.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
        /// When it expires, `None` for never.
        deadline: Option<u64>,
    },
    /// Removes `key`. Removing a key that is not set is not an error in a batch: it does
    /// nothing.
    Remove {
        /// The key.
        key: Vec<u8>,
    },
}

impl BatchOp {
    /// The key the operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Set { key, .. } | BatchOp::Remove { key } => key,
        }
    }
}

/// A list of writes applied together by [`KvsEngine::apply_batch`](crate::KvsEngine::apply_batch):
/// all of them or none, even across a crash, and seen by readers all at once.
///
/// Operations apply in the order they were added: when a batch writes a key twice, the later
/// operation wins.
///
/// ```
/// use kvs::{KvStore, KvsEngine, WriteBatch};
/// # fn main() -> kvs::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let store = KvStore::open(dir.path())?;
/// store.set_bytes(b"from", b"10")?;
/// let mut batch = WriteBatch::new();
/// batch.set(b"from", b"7").set(b"to", b"3").remove(b"pending");
/// store.apply_batch(&batch)?;
/// assert_eq!(store.get_bytes(b"to")?, Some(b"3".to_vec()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a set of `key` to `value`, without a deadline.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> &mut WriteBatch {
        self.push(BatchOp::Set {
            key: key.to_vec(),
            value: value.to_vec(),
            deadline: None,
        })
    }

    /// Adds a set of `key` to `value` that expires at `deadline` (milliseconds since the Unix
    /// epoch). A deadline that has passed when the batch is applied removes the key.
    pub fn set_with_deadline(
        &mut self,
        key: &[u8],
        value: &[u8],
        deadline: u64,
    ) -> &mut WriteBatch {
        self.push(BatchOp::Set {
            key: key.to_vec(),
            value: value.to_vec(),
            deadline: Some(deadline),
        })
    }

    /// Adds a removal of `key`.
    pub fn remove(&mut self, key: &[u8]) -> &mut WriteBatch {
        self.push(BatchOp::Remove { key: key.to_vec() })
    }

    /// Adds `op`.
    pub fn push(&mut self, op: BatchOp) -> &mut WriteBatch {
        self.ops.push(op);
        self
    }

    /// The operations, in the order they apply.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

impl From<Vec<BatchOp>> for WriteBatch {
    fn from(ops: Vec<BatchOp>) -> WriteBatch {
        WriteBatch { ops }
    }
}

/// A [`BatchOp`] borrowed, as the engines write it: also what their own single writes are
/// made of when they go through the batch path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Set {
        key: &'a [u8],
        value: &'a [u8],
        deadline: Option<u64>,
    },
    Remove {
        key: &'a [u8],
    },
}

impl<'a> From<&'a BatchOp> for Op<'a> {
    fn from(op: &'a BatchOp) -> Op<'a> {
        match op {
            BatchOp::Set {
                key,
                value,
                deadline,
            } => Op::Set {
                key,
                value,
                deadline: *deadline,
            },
            BatchOp::Remove { key } => Op::Remove { key },
        }
    }
}
