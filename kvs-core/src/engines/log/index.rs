//! The in-memory index of the `kvs` engine: key to the position of its latest record.
//!
//! Only keys and positions live in memory, never values. The index is split into shards, each
//! behind its own `RwLock`, so that readers never wait for each other and a writer only holds
//! up the readers of one shard, for the time of a hash-table insert.
//!
//! Memory per key is kept small on purpose (a store of a hundred million keys should fit in a
//! laptop): a shard keeps its keys back to back in one byte arena, and its hash table holds
//! 20-byte slots (where the key is in the arena, and where the record is on disk). A key costs
//! its own length plus a slot, divided by the table's load (44% to 87.5%): 24 to 48 bytes more
//! than the key. Hashing is done once per operation with a seeded hash (foldhash), which picks
//! the shard from bits the table itself does not use.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::log_file::{FileMap, LogFile};

/// Where a record lives: which log file, at which byte offset, and how long it is.
///
/// Offsets fit in 32 bits because the writer starts a new file before one reaches
/// [`MAX_FILE_BYTES`](super::writer::MAX_FILE_BYTES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    pub file: u32,
    pub offset: u32,
    pub len: u32,
}

impl RecordPos {
    /// Where the record ends: what a write waits to be durable (see `durability.rs`).
    pub fn end(&self) -> LogEnd {
        LogEnd {
            file: self.file,
            offset: self.offset as u64 + self.len as u64,
        }
    }
}

/// A point in the log: the end of a record, `offset` bytes into file `file`. Points order as
/// the log does: by file, then by offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogEnd {
    pub file: u32,
    pub offset: u64,
}

/// A hash-table slot: the key's place in the shard's arena and the record's place on disk.
#[derive(Clone, Copy)]
struct Slot {
    key_at: u32,
    key_len: u32,
    pos: RecordPos,
}

impl Slot {
    /// The slot's key in its shard's `arena`.
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.key_at as usize..(self.key_at + self.key_len) as usize]
    }
}

struct Shard {
    /// The open log files, as last published (see `FileSet`).
    files: Arc<FileMap>,
    table: HashTable<Slot>,
    /// Every key of the shard, back to back. Removed keys leave garbage until the next rebuild.
    arena: Vec<u8>,
    garbage: usize,
}

impl Shard {
    fn key(&self, slot: &Slot) -> &[u8] {
        slot.key(&self.arena)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        self.table.find(hash, |s| self.key(s) == key)
    }

    /// Copies the live keys into a fresh arena, dropping the garbage of removed keys.
    fn rebuild_arena(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for slot in self.table.iter_mut() {
            let start = slot.key_at as usize;
            let at = arena.len() as u32;
            arena.extend_from_slice(&self.arena[start..start + slot.key_len as usize]);
            slot.key_at = at;
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

const SHARDS: usize = 32;

/// The most key bytes one shard holds (arena offsets are 32-bit): 4 GiB, 128 GiB in all.
const MAX_ARENA: usize = u32::MAX as usize;

/// A sharded map from key to [`RecordPos`].
pub struct Index {
    hasher: DefaultHashBuilder,
    shards: Box<[RwLock<Shard>]>,
}

/// A key the index cannot take: its shard's arena is full.
#[derive(Debug)]
pub struct IndexFull;

impl Index {
    pub fn new() -> Index {
        Index {
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        files: Arc::new(FileMap::new()),
                        table: HashTable::new(),
                        arena: Vec::new(),
                        garbage: 0,
                    })
                })
                .collect(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // The table uses the low bits (bucket) and the top 7 bits (tag): take bits 40..45.
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    // A poisoned lock is recovered: a shard is only changed by complete, non-panicking steps
    // (a panic could only come from an allocation failure, which aborts anyway).
    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard> {
        self.shard(hash).read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard> {
        self.shard(hash).write().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with the position of `key` and the log file holding it (`None` if that file
    /// is not open, which would be a bug), while the shard is read-locked: the file stays open
    /// until `f` returns.
    pub fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<(RecordPos, Option<&LogFile>)>) -> R,
    ) -> R {
        let hash = self.hash(key);
        let shard = self.read(hash);
        let found = shard.find(hash, key).map(|s| s.pos);
        f(found.map(|pos| (pos, shard.files.get(&pos.file).map(|f| &**f))))
    }

    /// The position of `key`.
    pub fn position(&self, key: &[u8]) -> Option<RecordPos> {
        let hash = self.hash(key);
        self.read(hash).find(hash, key).map(|s| s.pos)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// Gives every shard `files` (see `FileSet::update`).
    pub fn publish_files(&self, files: &Arc<FileMap>) {
        for shard in self.shards.iter() {
            shard.write().unwrap_or_else(|p| p.into_inner()).files = Arc::clone(files);
        }
    }

    /// Sets the position of `key`, returning the one it replaces.
    pub fn insert(&self, key: &[u8], pos: RecordPos) -> Result<Option<RecordPos>, IndexFull> {
        let hash = self.hash(key);
        let mut guard = self.write(hash);
        let shard = &mut *guard;
        let (table, arena) = (&mut shard.table, &shard.arena);
        if let Some(slot) = table.find_mut(hash, |s| s.key(arena) == key) {
            return Ok(Some(std::mem::replace(&mut slot.pos, pos)));
        }
        if shard.arena.len() + key.len() > MAX_ARENA {
            if shard.garbage > 0 {
                shard.rebuild_arena();
            }
            if shard.arena.len() + key.len() > MAX_ARENA {
                return Err(IndexFull);
            }
        }
        let slot = Slot {
            key_at: shard.arena.len() as u32,
            key_len: key.len() as u32,
            pos,
        };
        shard.arena.extend_from_slice(key);
        let hasher = &self.hasher;
        let arena = &shard.arena;
        shard
            .table
            .insert_unique(hash, slot, |s| hasher.hash_one(s.key(arena)));
        Ok(None)
    }

    /// Removes `key`, returning its position.
    pub fn remove(&self, key: &[u8]) -> Option<RecordPos> {
        let hash = self.hash(key);
        let mut guard = self.write(hash);
        let shard = &mut *guard;
        let arena = &shard.arena;
        let entry = shard.table.find_entry(hash, |s| s.key(arena) == key).ok()?;
        let (slot, _) = entry.remove();
        shard.garbage += slot.key_len as usize;
        // Rebuild once garbage is most of a sizeable arena: amortized O(1) per remove.
        if shard.garbage > 1 << 16 && shard.garbage * 2 > shard.arena.len() {
            shard.rebuild_arena();
        }
        Some(slot.pos)
    }

    /// Moves `key` from `from` to `to`, unless it was changed since (compaction's switch).
    /// Returns whether it moved.
    pub fn replace_if(&self, key: &[u8], from: RecordPos, to: RecordPos) -> bool {
        let hash = self.hash(key);
        let mut guard = self.write(hash);
        let shard = &mut *guard;
        let arena = &shard.arena;
        match shard.table.find_mut(hash, |s| s.key(arena) == key) {
            Some(slot) if slot.pos == from => {
                slot.pos = to;
                true
            }
            _ => false,
        }
    }

    /// Number of keys (a sum over shards, each read at a slightly different moment).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).table.len())
            .sum()
    }

    /// Calls `f` with every key and position, one shard at a time under its read lock.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], RecordPos)) {
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|p| p.into_inner());
            for slot in shard.table.iter() {
                f(shard.key(slot), slot.pos);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(n: u32) -> RecordPos {
        RecordPos {
            file: n,
            offset: n * 10,
            len: n + 1,
        }
    }

    #[test]
    fn a_record_ends_past_its_last_byte_and_ends_order_as_the_log() {
        let last = RecordPos {
            file: 3,
            offset: u32::MAX - 10,
            len: 20,
        };
        // No 32-bit wrap: the end of a record near 4 GiB is past 4 GiB.
        assert_eq!(
            last.end(),
            LogEnd {
                file: 3,
                offset: u32::MAX as u64 + 10
            }
        );
        // Any point of a newer file comes after every point of an older one.
        let early_in_next = RecordPos {
            file: 4,
            offset: 8,
            len: 1,
        };
        assert!(last.end() < early_in_next.end());
        assert!(pos(2).end() < pos(3).end());
        assert!(LogEnd::default() < pos(0).end());
    }

    #[test]
    fn insert_get_overwrite_remove() {
        let index = Index::new();
        assert_eq!(index.insert(b"a", pos(1)).unwrap(), None);
        assert_eq!(index.insert(b"a", pos(2)).unwrap(), Some(pos(1)));
        assert_eq!(index.position(b"a"), Some(pos(2)));
        assert_eq!(index.remove(b"a"), Some(pos(2)));
        assert_eq!(index.remove(b"a"), None);
        assert!(!index.contains(b"a"));
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn arena_rebuild_keeps_every_live_key() {
        let index = Index::new();
        for i in 0..100_000u32 {
            index.insert(format!("key-{i}").as_bytes(), pos(i)).unwrap();
        }
        for i in (0..100_000u32).filter(|i| i % 4 != 0) {
            assert_eq!(index.remove(format!("key-{i}").as_bytes()), Some(pos(i)));
        }
        for i in 0..100_000u32 {
            let expected = (i % 4 == 0).then(|| pos(i));
            assert_eq!(index.position(format!("key-{i}").as_bytes()), expected);
        }
        let mut seen = 0;
        index.for_each(|key, p| {
            assert_eq!(key, format!("key-{}", p.file).as_bytes());
            seen += 1;
        });
        assert_eq!(seen, 25_000);
    }

    #[test]
    fn replace_if_only_moves_an_unchanged_entry() {
        let index = Index::new();
        index.insert(b"k", pos(1)).unwrap();
        assert!(index.replace_if(b"k", pos(1), pos(5)));
        assert!(!index.replace_if(b"k", pos(1), pos(6)));
        assert_eq!(index.position(b"k"), Some(pos(5)));
        assert!(!index.replace_if(b"missing", pos(1), pos(2)));
    }
}
