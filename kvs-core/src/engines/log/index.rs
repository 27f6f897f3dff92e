//! The in-memory index of the `kvs` engine: key to the position of its latest record.
//!
//! Only keys and positions live in memory, never values. The index is split into shards, each
//! behind its own `RwLock`, so that readers never wait for each other and a writer only holds
//! up the readers of one shard, for the time of a hash-map insert.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Where a record lives: which log file, at which byte offset, and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    pub file: u32,
    pub len: u32,
    pub offset: u64,
}

type Shard = HashMap<Box<[u8]>, RecordPos>;

const SHARDS: usize = 32;

/// A sharded map from key to [`RecordPos`].
pub struct Index {
    hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
}

impl Index {
    pub fn new() -> Index {
        Index {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn shard_of(&self, key: &[u8]) -> &RwLock<Shard> {
        let hash = self.hasher.hash_one(key) as usize;
        // The low bits feed the hash map's own buckets; take the shard from the high bits.
        &self.shards[(hash >> 27) % SHARDS]
    }

    /// Read access to the shard holding `key`. A poisoned lock is recovered: the maps are only
    /// ever changed by single, complete insert/remove calls, so they are never half-updated.
    pub fn read(&self, key: &[u8]) -> RwLockReadGuard<'_, Shard> {
        self.shard_of(key)
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write access to the shard holding `key`.
    pub fn write(&self, key: &[u8]) -> RwLockWriteGuard<'_, Shard> {
        self.shard_of(key)
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of keys (a sum over shards, each read at a slightly different moment).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Calls `f` with each shard in turn, under its read lock.
    pub fn for_each_shard(&self, mut f: impl FnMut(&Shard)) {
        for shard in self.shards.iter() {
            f(&shard.read().unwrap_or_else(|p| p.into_inner()));
        }
    }
}
