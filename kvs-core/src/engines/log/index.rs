//! The in-memory index of the `kvs` engine: key to the position of its latest record.
//!
//! Only keys and positions live in memory, never values. The index is split into shards, each
//! behind its own `RwLock`, so that readers never wait for each other and a writer only holds
//! up the readers of one shard, for the time of a hash-table insert.
//!
//! Memory per key is kept small on purpose (a store of a hundred million keys should fit in a
//! laptop): a shard keeps its keys back to back, each after a one-byte length (for keys under
//! 128 bytes), in an arena that grows 16 KiB at a time, and its hash table holds 16-byte slots
//! (where the key is in the arena, and where the record is on disk) and a control byte each.
//! A table's load is 44% to 87.5% (it doubles when full); the shards take staggered shares of
//! the keys (the largest twice the smallest) so that they double one after another, and the
//! index's average stays near 28 bytes of table per key at every size. A key costs its length
//! and about 30 bytes more (`cargo bench -p kvs --bench index_memory`). Hashing is done once
//! per operation with a seeded hash (foldhash), which picks the shard from bits the table
//! itself does not use.
//!
//! **Gets.** A get compares the key it looks up with the copy in the record it is about to
//! read rather than with the arena's (the hash table's 7-bit tags make a compare with another
//! key rare), so a hit costs the table and the record, not the arena too; the arena is what
//! puts, removes, rehashes, scans and the sweep compare with. Each shard's lock has cache
//! lines of its own.
//!
//! **Deadlines.** A key with a deadline has a flag bit set in its slot, and its deadline lives
//! in two side tables of its shard: by arena offset (for lookups) and ordered by deadline (for
//! the sweep and for counting the keys that are due). A key without a deadline costs nothing
//! more; the clock is read only when a lookup finds a flagged slot. A key whose deadline has
//! passed is absent for every lookup at once, and stays in the table until
//! [`Index::remove_expired`] (the sweep) or a write of the key takes it out.
//!
//! **Several keys at once.** [`Index::apply`] (batches) write-locks every shard its changes
//! touch, and [`Index::get_many_with`] read-locks every shard its keys live in, both in
//! increasing shard order (so that they cannot deadlock each other), so that a reader sees a
//! batch whole or not at all.
//!
//! **Scans.** A cursor names a shard and a bucket of its hash table: a walk visits the buckets in
//! order, shard after shard. Inserting and removing keys never moves the others within a table;
//! only growing it (or rehashing it in place) does, and each shard counts those moves in a
//! generation that cursors carry: a cursor of an older generation restarts its shard from its
//! first bucket. So every key present for a whole walk is returned (once, or more than once
//! after a move), and a walk costs O(keys) plus the restarts, which the table's doubling keeps
//! in proportion.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::format::{record_key_unchecked, DEADLINE_LEN, HEADER_LEN};
use super::log_file::{FileMap, LogFile};
use crate::{is_expired, now_millis, KeyExpiry, ScanFilter};

/// Where a record lives: which log file, at which byte offset, and how long it is.
///
/// Offsets fit in 32 bits because the writer starts a new file before one reaches
/// `MAX_FILE_BYTES` (see `writer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    /// The log file's id.
    pub file: u32,
    /// Where the record starts in the file.
    pub offset: u32,
    /// The record's length, header included.
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
///
/// 16 bytes: the key's length is in the arena, in front of the key, and the deadline flag is
/// the top bit of the arena offset.
#[derive(Clone, Copy)]
struct Slot {
    /// Where the key is in the shard's arena (see [`Arena`]), and [`HAS_DEADLINE`] when the
    /// key has a deadline (arena offsets are below 2^31: see [`MAX_ARENA`]).
    key_at: u32,
    pos: RecordPos,
}

/// The flag of [`Slot::key_at`] saying that the key has a deadline in its shard's side tables.
const HAS_DEADLINE: u32 = 1 << 31;

impl Slot {
    /// The key's offset in its shard's arena.
    fn at(&self) -> u32 {
        self.key_at & !HAS_DEADLINE
    }

    fn has_deadline(&self) -> bool {
        self.key_at & HAS_DEADLINE != 0
    }
}

/// Whether the record at `pos` holds `key`, read from its copy of the key (unchecked: the
/// read that follows checks the record). `false` when the record cannot be read or holds
/// another key; the caller then compares with the arena, so that a damaged record is still
/// found, and reported by that read, rather than taken for a missing key.
fn record_holds(files: &FileMap, pos: RecordPos, key: &[u8]) -> bool {
    let Some(file) = files.get(&pos.file) else {
        return false;
    };
    // The header, a deadline and the key: no more of the record is needed.
    let len = (pos.len as usize).min(HEADER_LEN + DEADLINE_LEN + key.len());
    file.with_bytes(pos.offset as u64, len, |bytes| {
        record_key_unchecked(bytes) == Some(key)
    })
    .unwrap_or(false)
}

/// Bytes per arena chunk (16 KiB).
const CHUNK_BITS: u32 = 14;
const CHUNK: usize = 1 << CHUNK_BITS;

/// The most arena bytes one shard addresses (offsets have 31 bits, the 32nd is
/// [`HAS_DEADLINE`]): 2 GiB, 64 GiB in all.
const MAX_ARENA: usize = 1 << 31;

/// The keys of a shard, back to back, each after its length (LEB128: one byte for a key
/// shorter than 128 bytes, at most three for [`MAX_KEY_LEN`](super::format::MAX_KEY_LEN)).
///
/// The arena grows a fixed-size chunk at a time: it never copies its keys to grow, never holds
/// twice their size while it does, and wastes at most the rest of its last chunk (plus the end
/// of a chunk too short for the next key). Offset `at` is byte `at % CHUNK` of chunk
/// `at / CHUNK`. A key longer than a chunk gets a chunk of its own, a whole number of chunks
/// long, at the start of which it lies; the chunk numbers it spans after the first are empty.
struct Arena {
    chunks: Vec<Box<[u8]>>,
    /// Where the next key goes: every chunk before it is in use, none after it.
    end: usize,
}

/// The most bytes a key's length takes in front of it.
const MAX_LEN_PREFIX: usize = 3;

fn len_prefix_len(len: usize) -> usize {
    match len {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        _ => 3,
    }
}

impl Arena {
    fn new() -> Arena {
        Arena {
            chunks: Vec::new(),
            end: 0,
        }
    }

    /// The key at `at` (an offset [`Arena::push`] returned).
    fn key(&self, at: u32) -> &[u8] {
        let at = at as usize;
        let bytes = &self.chunks[at >> CHUNK_BITS][at & (CHUNK - 1)..];
        let mut len = 0usize;
        let mut i = 0;
        loop {
            let byte = bytes[i];
            len |= ((byte & 0x7f) as usize) << (7 * i);
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        &bytes[i..i + len]
    }

    /// At most how many bytes of the arena `keys` keys of `key_bytes` bytes in all take: the
    /// keys, their lengths, and chunk ends left unused (less than each key's own size, plus at
    /// most a chunk).
    fn worst_case(keys: usize, key_bytes: usize) -> usize {
        key_bytes
            .saturating_add(keys.saturating_mul(MAX_LEN_PREFIX))
            .saturating_mul(2)
            .saturating_add(CHUNK)
    }

    /// Whether `keys` more keys of `key_bytes` bytes in all surely fit.
    fn has_room_for(&self, keys: usize, key_bytes: usize) -> bool {
        self.end.saturating_add(Arena::worst_case(keys, key_bytes)) <= MAX_ARENA
    }

    /// Appends `key`, returning its offset; `None` if the arena is full.
    fn push(&mut self, key: &[u8]) -> Option<u32> {
        let entry = len_prefix_len(key.len()) + key.len();
        let mut at = self.end;
        if at & (CHUNK - 1) != 0 && (at & (CHUNK - 1)) + entry > CHUNK {
            // Not enough left in this chunk: the key starts the next one.
            at = ((at >> CHUNK_BITS) + 1) << CHUNK_BITS;
        }
        let chunk_no = at >> CHUNK_BITS;
        let end = if entry > CHUNK {
            // A chunk of its own, and the next key starts after the chunk numbers it spans.
            at + entry.div_ceil(CHUNK) * CHUNK
        } else {
            at + entry
        };
        if end > MAX_ARENA {
            return None;
        }
        if at & (CHUNK - 1) == 0 {
            let spans = entry.div_ceil(CHUNK).max(1);
            self.chunks.truncate(chunk_no);
            self.chunks
                .push(vec![0u8; spans * CHUNK].into_boxed_slice());
            self.chunks
                .extend((1..spans).map(|_| Vec::new().into_boxed_slice()));
        }
        let bytes = &mut self.chunks[chunk_no][at & (CHUNK - 1)..];
        let mut len = key.len();
        let mut i = 0;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                bytes[i] = byte;
                i += 1;
                break;
            }
            bytes[i] = byte | 0x80;
            i += 1;
        }
        bytes[i..i + key.len()].copy_from_slice(key);
        self.end = end;
        Some(at as u32)
    }

    /// Makes room in the list of chunks for `bytes` more bytes of keys, so that it does not
    /// reallocate while they come in (the chunks themselves are allocated as they fill).
    fn reserve(&mut self, bytes: usize) {
        let chunks = self.end.saturating_add(bytes).div_ceil(CHUNK);
        self.chunks
            .reserve_exact(chunks.saturating_sub(self.chunks.len()));
    }

    /// The bytes its chunks take.
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
}

/// The deadlines of a shard's keys that have one: by arena offset (unique among the live keys
/// of a shard) and in deadline order.
#[derive(Default)]
struct Deadlines {
    by_key: HashMap<u32, u64>,
    by_time: BTreeSet<(u64, u32)>,
}

impl Deadlines {
    fn get(&self, key_at: u32) -> Option<u64> {
        self.by_key.get(&key_at).copied()
    }

    fn set(&mut self, key_at: u32, deadline: u64) {
        if let Some(old) = self.by_key.insert(key_at, deadline) {
            self.by_time.remove(&(old, key_at));
        }
        self.by_time.insert((deadline, key_at));
    }

    fn clear(&mut self, key_at: u32) {
        if let Some(old) = self.by_key.remove(&key_at) {
            self.by_time.remove(&(old, key_at));
        }
    }

    /// How many deadlines are due at `now`.
    fn due(&self, now: u64) -> usize {
        self.by_time.range(..=(now, u32::MAX)).count()
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

struct Shard {
    /// The open log files, as last published (see `FileSet`).
    files: Arc<FileMap>,
    table: HashTable<Slot>,
    /// Every key of the shard. Removed keys leave garbage until the next rebuild.
    arena: Arena,
    /// Bytes of the arena that removed keys hold.
    garbage: usize,
    deadlines: Deadlines,
    /// How many times the table's buckets moved (it grew, or was rehashed in place): scan
    /// cursors of an older generation restart the shard.
    generation: u32,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            files: Arc::new(FileMap::new()),
            table: HashTable::new(),
            arena: Arena::new(),
            garbage: 0,
            deadlines: Deadlines::default(),
            generation: 0,
        }
    }

    fn key(&self, slot: &Slot) -> &[u8] {
        self.arena.key(slot.at())
    }

    /// The slot of `key`, expired or not.
    fn find_any(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        self.table.find(hash, |s| self.key(s) == key)
    }

    /// The slot of `key`, expired or not, for a get: a candidate slot is compared with the key
    /// in its record first (the record the get reads next: one memory access fewer than the
    /// arena when it is the key), with the arena only if that fails.
    fn find_for_read(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        self.table.find(hash, |s| {
            record_holds(&self.files, s.pos, key) || self.key(s) == key
        })
    }

    /// The slot of `key`, unless its deadline has passed.
    fn find(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        self.find_any(hash, key)
            .filter(|slot| self.is_live(slot, None))
    }

    /// The deadline of the key in `slot`, if it has one.
    fn deadline(&self, slot: &Slot) -> Option<u64> {
        if slot.has_deadline() {
            self.deadlines.get(slot.at())
        } else {
            None
        }
    }

    /// Whether the key in `slot` has not expired (at `now`, or at the clock's time when `None`:
    /// the clock is read only for a key that has a deadline).
    fn is_live(&self, slot: &Slot, now: Option<u64>) -> bool {
        match self.deadline(slot) {
            None => true,
            Some(deadline) => !is_expired(deadline, now.unwrap_or_else(now_millis)),
        }
    }

    /// Sets (or clears) the deadline of the key in `slot`, keeping flag and side tables in
    /// step.
    fn set_deadline(deadlines: &mut Deadlines, slot: &mut Slot, deadline: Option<u64>) {
        match deadline {
            Some(deadline) => {
                deadlines.set(slot.at(), deadline);
                slot.key_at |= HAS_DEADLINE;
            }
            None if slot.has_deadline() => {
                deadlines.clear(slot.at());
                slot.key_at &= !HAS_DEADLINE;
            }
            None => {}
        }
    }

    /// Sets the position and deadline of `key`, returning the position it replaces.
    fn put(
        &mut self,
        hasher: &DefaultHashBuilder,
        hash: u64,
        key: &[u8],
        pos: RecordPos,
        deadline: Option<u64>,
    ) -> Result<Option<RecordPos>, IndexFull> {
        let (table, arena) = (&mut self.table, &self.arena);
        if let Some(slot) = table.find_mut(hash, |s| arena.key(s.at()) == key) {
            let old = std::mem::replace(&mut slot.pos, pos);
            Shard::set_deadline(&mut self.deadlines, slot, deadline);
            return Ok(Some(old));
        }
        if !self.has_room_for(1, key.len()) {
            return Err(IndexFull);
        }
        let key_at = self.arena.push(key).ok_or(IndexFull)?;
        let mut slot = Slot { key_at, pos };
        Shard::set_deadline(&mut self.deadlines, &mut slot, deadline);
        if self.table.len() == self.table.capacity() {
            // No room left: this insert grows the table (or rehashes it in place), which moves
            // the buckets under any scan in progress.
            self.generation = self.generation.wrapping_add(1);
        }
        let arena = &self.arena;
        self.table
            .insert_unique(hash, slot, |s| hasher.hash_one(arena.key(s.at())));
        Ok(None)
    }

    /// Makes room for `keys` more keys of `key_bytes` bytes in all, so that inserting them
    /// neither grows the table nor the arena's list of chunks.
    fn reserve(&mut self, keys: usize, key_bytes: usize, hasher: &DefaultHashBuilder) {
        if self.table.capacity() - self.table.len() < keys {
            // Growing moves the buckets under any scan in progress.
            self.generation = self.generation.wrapping_add(1);
            let arena = &self.arena;
            self.table
                .reserve(keys, |s| hasher.hash_one(arena.key(s.at())));
        }
        let bytes = key_bytes.saturating_add(keys);
        self.arena.reserve(bytes.min(MAX_ARENA));
    }

    /// Whether the arena can take `keys` more keys of `key_bytes` bytes in all (rebuilding it
    /// first if that helps).
    fn has_room_for(&mut self, keys: usize, key_bytes: usize) -> bool {
        if !self.arena.has_room_for(keys, key_bytes) && self.garbage > 0 {
            self.rebuild_arena();
        }
        self.arena.has_room_for(keys, key_bytes)
    }

    /// Removes `key`, expired or not, returning its position.
    fn take(&mut self, hash: u64, key: &[u8]) -> Option<RecordPos> {
        let arena = &self.arena;
        let entry = self
            .table
            .find_entry(hash, |s| arena.key(s.at()) == key)
            .ok()?;
        let (slot, _) = entry.remove();
        if slot.has_deadline() {
            self.deadlines.clear(slot.at());
        }
        self.garbage += len_prefix_len(key.len()) + key.len();
        // Rebuild once garbage is most of a sizeable arena: amortized O(1) per remove.
        if self.garbage > 1 << 16 && self.garbage * 2 > self.arena.end {
            self.rebuild_arena();
        }
        Some(slot.pos)
    }

    /// Copies the live keys into a fresh arena, dropping the garbage of removed keys (and
    /// moving the deadlines to the keys' new offsets). Keeps the old arena in the unlikely
    /// case that the keys do not fit the new one (chunk ends can fall differently).
    fn rebuild_arena(&mut self) {
        let mut arena = Arena::new();
        let mut moved = Vec::with_capacity(self.table.len());
        for slot in self.table.iter() {
            match arena.push(self.key(slot)) {
                Some(at) => moved.push(at),
                None => return,
            }
        }
        let mut deadlines = Deadlines::default();
        for (slot, &at) in self.table.iter_mut().zip(&moved) {
            if slot.has_deadline() {
                if let Some(deadline) = self.deadlines.get(slot.at()) {
                    deadlines.set(at, deadline);
                }
            }
            slot.key_at = at | (slot.key_at & HAS_DEADLINE);
        }
        self.arena = arena;
        self.garbage = 0;
        self.deadlines = deadlines;
    }
}

const SHARDS: usize = 32;

/// The parts of the hash space that [`Index::shard_of`] maps to shards.
const SHARD_PARTS: usize = 1024;

/// Which shard each of [`SHARD_PARTS`] equal parts of the hash space goes to. Shard `i` takes
/// a share proportional to `2^(i / SHARDS)`: the largest twice the smallest, in even steps.
/// A hash table doubles when it is full, so equal shards would all double at the same moment,
/// and the index's memory per key would swing with them between one slot per key and two.
/// Staggered, they double one after another, and the cost per key stays near the average
/// (1.44 slots per key, at a table load of 7/8 just before it doubles) at every size.
fn shard_parts() -> [u8; SHARD_PARTS] {
    let weight = |i: usize| (i as f64 / SHARDS as f64).exp2();
    let total: f64 = (0..SHARDS).map(weight).sum();
    let mut parts = [0u8; SHARD_PARTS];
    let mut below = 0.0;
    let mut start = 0;
    for shard in 0..SHARDS {
        below += weight(shard);
        let end = if shard == SHARDS - 1 {
            SHARD_PARTS
        } else {
            (below / total * SHARD_PARTS as f64).round() as usize
        };
        parts[start..end].fill(shard as u8);
        start = end;
    }
    parts
}

/// A shard and its lock, alone in its cache lines: a reader writes the lock's state, which
/// must not make other cores reload a neighbouring shard (128 bytes: the pair of lines that
/// x86 prefetches together).
#[repr(align(128))]
struct ShardLock(RwLock<Shard>);

impl std::ops::Deref for ShardLock {
    type Target = RwLock<Shard>;

    fn deref(&self) -> &RwLock<Shard> {
        &self.0
    }
}

/// A sharded map from key to [`RecordPos`].
pub struct Index {
    hasher: DefaultHashBuilder,
    shards: Box<[ShardLock]>,
    parts: [u8; SHARD_PARTS],
}

/// A key the index cannot take: its shard's arena is full.
#[derive(Debug)]
pub struct IndexFull;

/// A change [`Index::apply`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Sets the position (and deadline: `None` for none) of `key`.
    Put {
        key: &'a [u8],
        pos: RecordPos,
        deadline: Option<u64>,
    },
    /// Removes `key`.
    Remove { key: &'a [u8] },
}

impl Change<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Change::Put { key, .. } | Change::Remove { key } => key,
        }
    }
}

/// A scan cursor: bits 59..64 the shard, 40..59 the shard's generation (its low 19 bits), 0..40
/// the bucket to go on from. Cursor 0 is the start of a walk (shard 0, bucket 0); a walk over
/// returns 0. Every u64 is some cursor (as in Redis, which takes any number): one no walk
/// returned goes on from wherever it points, or restarts its shard.
const CURSOR_SHARD_SHIFT: u32 = 59;
const CURSOR_GENERATION_SHIFT: u32 = 40;
const CURSOR_GENERATION_MASK: u64 = (1 << 19) - 1;
const CURSOR_BUCKET_MASK: u64 = (1 << 40) - 1;

fn encode_cursor(shard: usize, generation: u32, bucket: usize) -> u64 {
    ((shard as u64) << CURSOR_SHARD_SHIFT)
        | ((generation as u64 & CURSOR_GENERATION_MASK) << CURSOR_GENERATION_SHIFT)
        | (bucket as u64 & CURSOR_BUCKET_MASK)
}

impl Default for Index {
    fn default() -> Index {
        Index::new()
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index {
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS)
                .map(|_| ShardLock(RwLock::new(Shard::new())))
                .collect(),
            parts: shard_parts(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a key's hash. The table uses the low bits (bucket) and the top 7 bits
    /// (tag): bits 40..50 pick the part of the hash space (see [`shard_parts`]).
    fn shard_of(&self, hash: u64) -> usize {
        self.parts[(hash >> 40) as usize % SHARD_PARTS] as usize
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[self.shard_of(hash)].0
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
        let found = shard
            .find_for_read(hash, key)
            .filter(|slot| shard.is_live(slot, None))
            .map(|s| s.pos);
        f(found.map(|pos| (pos, shard.files.get(&pos.file).map(|f| &**f))))
    }

    /// The hash of `key` and the shard it lives in: open splits the work of loading hint files
    /// by shard, so that threads working on different shards never touch the same key, and
    /// puts the keys of a shard in the order of their buckets (the low bits of the hash), so
    /// that the inserts sweep the table instead of jumping around it.
    pub fn hash_and_shard(&self, key: &[u8]) -> (u64, usize) {
        let hash = self.hash(key);
        (hash, self.shard_of(hash))
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        SHARDS
    }

    /// The position of `key`.
    pub fn position(&self, key: &[u8]) -> Option<RecordPos> {
        let hash = self.hash(key);
        self.read(hash).find(hash, key).map(|s| s.pos)
    }

    /// Whether `key` is set (and not expired).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// Gives every shard `files` (see `FileSet::update`).
    pub fn publish_files(&self, files: &Arc<FileMap>) {
        for shard in self.shards.iter() {
            shard.write().unwrap_or_else(|p| p.into_inner()).files = Arc::clone(files);
        }
    }

    /// Sets the position of `key`, without a deadline, returning the one it replaces.
    pub fn insert(&self, key: &[u8], pos: RecordPos) -> Result<Option<RecordPos>, IndexFull> {
        self.insert_with_deadline(key, pos, None)
    }

    /// Sets the position and the deadline (`None`: none) of `key`, returning the position it
    /// replaces (that of an expired key too).
    pub fn insert_with_deadline(
        &self,
        key: &[u8],
        pos: RecordPos,
        deadline: Option<u64>,
    ) -> Result<Option<RecordPos>, IndexFull> {
        let hash = self.hash(key);
        self.write(hash).put(&self.hasher, hash, key, pos, deadline)
    }

    /// Removes `key`, expired or not, returning its position.
    pub fn remove(&self, key: &[u8]) -> Option<RecordPos> {
        let hash = self.hash(key);
        self.write(hash).take(hash, key)
    }

    /// Moves `key` from `from` to `to`, unless it was changed since (compaction's switch).
    /// Returns whether it moved.
    pub fn replace_if(&self, key: &[u8], from: RecordPos, to: RecordPos) -> bool {
        let hash = self.hash(key);
        let mut guard = self.write(hash);
        let shard = &mut *guard;
        let arena = &shard.arena;
        match shard.table.find_mut(hash, |s| arena.key(s.at()) == key) {
            Some(slot) if slot.pos == from => {
                slot.pos = to;
                true
            }
            _ => false,
        }
    }

    /// Sizes the index once for `keys` more keys holding `key_bytes` bytes of key in all (what
    /// the files about to be replayed say they hold), instead of letting it double its way up:
    /// each shard takes its share of the hash space (see [`shard_parts`]), with room for the
    /// spread of the hash.
    pub fn reserve(&self, keys: u64, key_bytes: u64) {
        let mut parts = [0usize; SHARDS];
        for &shard in &self.parts {
            parts[shard as usize] += 1;
        }
        for (shard, parts) in self.shards.iter().zip(parts) {
            let share = |n: u64| {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                n / SHARD_PARTS * parts + n % SHARD_PARTS * parts / SHARD_PARTS
            };
            // How many keys a shard gets is binomial: six standard deviations (at most the
            // square root of the share) more, and a few, leave a chance below 1e-9 that it
            // gets more than that. More room would cost memory: a table is sized to a power
            // of two, and an eighth more (as this once took) tips one shard in six over the
            // next one. Key bytes spread more (keys differ in length), but room in the
            // arena's list of chunks costs 16 bytes per chunk: an eighth more.
            // Nothing to come for this shard (an empty store opening): no room either.
            let keys = share(keys);
            if keys == 0 {
                continue;
            }
            let keys = keys.saturating_add(6 * keys.isqrt() + 16);
            let key_bytes = share(key_bytes);
            let key_bytes = key_bytes.saturating_add(key_bytes / 8);
            let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
            shard.reserve(keys, key_bytes, &self.hasher);
        }
    }

    /// Whether no key is set (expired ones not counted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys, expired ones not counted (a sum over shards, each read at a slightly
    /// different moment).
    pub fn len(&self) -> usize {
        let now = now_millis();
        self.shards
            .iter()
            .map(|s| {
                let shard = s.read().unwrap_or_else(|p| p.into_inner());
                shard.table.len() - shard.deadlines.due(now)
            })
            .sum()
    }

    /// How many keys have a deadline that has not passed.
    pub fn expiring_len(&self) -> usize {
        let now = now_millis();
        self.shards
            .iter()
            .map(|s| {
                let shard = s.read().unwrap_or_else(|p| p.into_inner());
                shard.deadlines.len() - shard.deadlines.due(now)
            })
            .sum()
    }

    /// Calls `f` with every key and position, one shard at a time under its read lock; keys
    /// whose deadline has passed are left out.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], RecordPos)) {
        self.for_each_entry(|key, pos, _| f(key, pos));
    }

    /// Calls `f` with every key, its position and its deadline, one shard at a time under its
    /// read lock; keys whose deadline has passed are left out.
    pub fn for_each_entry(&self, mut f: impl FnMut(&[u8], RecordPos, Option<u64>)) {
        let now = now_millis();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|p| p.into_inner());
            for slot in shard.table.iter() {
                let deadline = shard.deadline(slot);
                if deadline.is_none_or(|d| !is_expired(d, now)) {
                    f(shard.key(slot), slot.pos, deadline);
                }
            }
        }
    }

    /// Whether `key` is set, and its deadline.
    pub fn deadline(&self, key: &[u8]) -> KeyExpiry {
        let hash = self.hash(key);
        let shard = self.read(hash);
        let Some(slot) = shard.find_any(hash, key) else {
            return KeyExpiry::Missing;
        };
        match shard.deadline(slot) {
            None => KeyExpiry::Never,
            Some(deadline) if is_expired(deadline, now_millis()) => KeyExpiry::Missing,
            Some(deadline) => KeyExpiry::At(deadline),
        }
    }

    /// Applies `changes` in order, with every shard they touch write-locked together (taken in
    /// increasing shard order): a reader sees none of them or all. Returns, per change, the
    /// position it replaced or removed (that of an expired key too). Fails before changing
    /// anything when a shard's arena cannot take the new keys.
    pub fn apply(&self, changes: &[Change<'_>]) -> Result<Vec<Option<RecordPos>>, IndexFull> {
        let hashes: Vec<u64> = changes.iter().map(|c| self.hash(c.key())).collect();
        let mut guards = self.lock_shards_for_write(hashes.iter().copied());
        // Room first, so that a full arena fails the whole batch rather than part of it.
        let mut needed = [(0usize, 0usize); SHARDS];
        for (change, &hash) in changes.iter().zip(&hashes) {
            if let Change::Put { key, .. } = change {
                needed[self.shard_of(hash)].0 += 1;
                needed[self.shard_of(hash)].1 += key.len();
            }
        }
        for (shard, guard) in guards.iter_mut().enumerate() {
            if let Some(guard) = guard {
                let (keys, key_bytes) = needed[shard];
                if keys > 0 && !guard.has_room_for(keys, key_bytes) {
                    return Err(IndexFull);
                }
            }
        }
        let mut replaced = Vec::with_capacity(changes.len());
        for (change, &hash) in changes.iter().zip(&hashes) {
            let Some(shard) = guards[self.shard_of(hash)].as_mut() else {
                unreachable!("every shard a change touches is locked");
            };
            replaced.push(match *change {
                Change::Put { key, pos, deadline } => {
                    shard.put(&self.hasher, hash, key, pos, deadline)?
                }
                Change::Remove { key } => shard.take(hash, key),
            });
        }
        Ok(replaced)
    }

    /// Calls `f` with, for each of `keys` in order, its position and the log file holding it
    /// (`None`: the key is not set), with every shard the keys live in read-locked together:
    /// no write lands between two of the lookups, and the files stay open until `f` returns.
    pub fn get_with_many<R>(
        &self,
        keys: &[&[u8]],
        f: impl FnOnce(&[Option<(RecordPos, Option<&LogFile>)>]) -> R,
    ) -> R {
        let hashes: Vec<u64> = keys.iter().map(|k| self.hash(k)).collect();
        let mut guards: Vec<Option<RwLockReadGuard<'_, Shard>>> =
            (0..SHARDS).map(|_| None).collect();
        let mut wanted = [false; SHARDS];
        for &hash in &hashes {
            wanted[self.shard_of(hash)] = true;
        }
        for (i, guard) in guards.iter_mut().enumerate() {
            if wanted[i] {
                *guard = Some(self.shards[i].0.read().unwrap_or_else(|p| p.into_inner()));
            }
        }
        let now = now_millis();
        let found: Vec<Option<(RecordPos, Option<&LogFile>)>> = keys
            .iter()
            .zip(&hashes)
            .map(|(key, &hash)| {
                let shard = guards[self.shard_of(hash)].as_ref()?;
                let slot = shard.find_for_read(hash, key)?;
                shard
                    .is_live(slot, Some(now))
                    .then(|| (slot.pos, shard.files.get(&slot.pos.file).map(|f| &**f)))
            })
            .collect();
        f(&found)
    }

    /// Removes up to `max` keys whose deadline is at or before `now`, calling `f` with each
    /// one's key and position; returns how many it removed (fewer than `max`: none is left
    /// due). Writes of the store must be held off meanwhile (call it with the writer lock),
    /// so that a key is not set again between its removal here and its stale accounting.
    pub fn remove_expired(
        &self,
        now: u64,
        max: usize,
        mut f: impl FnMut(&[u8], RecordPos),
    ) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            if removed >= max {
                break;
            }
            let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
            let shard = &mut *guard;
            while removed < max {
                let Some(&(deadline, key_at)) = shard.deadlines.by_time.first() else {
                    break;
                };
                if !is_expired(deadline, now) {
                    break;
                }
                let key = shard.arena.key(key_at).to_vec();
                let hash = self.hash(&key);
                match shard.take(hash, &key) {
                    Some(pos) => f(&key, pos),
                    // A side-table entry without its slot would be a bug: drop the entry
                    // rather than loop on it.
                    None => {
                        shard.deadlines.clear(key_at);
                    }
                }
                removed += 1;
            }
        }
        removed
    }

    /// One page of a walk over the keys that pass `filter` (see the module docs for how
    /// cursors work): looks at about `count` keys (at least one) and returns the next cursor
    /// (0 when the walk is over) and the keys that passed. Expired keys are left out.
    pub fn scan(&self, cursor: u64, count: usize, filter: &ScanFilter) -> (u64, Vec<Vec<u8>>) {
        let mut shard_no = (cursor >> CURSOR_SHARD_SHIFT) as usize;
        let generation = ((cursor >> CURSOR_GENERATION_SHIFT) & CURSOR_GENERATION_MASK) as u32;
        let mut bucket = (cursor & CURSOR_BUCKET_MASK) as usize;
        let count = count.max(1);
        // Empty buckets count too, at a smaller weight, so a sparse table cannot make one
        // call walk far.
        let budget = count.saturating_mul(8);
        let mut spent = 0usize;
        let mut looked_at = 0usize;
        let mut keys = Vec::new();
        let now = now_millis();
        let mut first = true;
        while shard_no < SHARDS {
            let shard = self.shards[shard_no]
                .0
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let buckets = shard.table.num_buckets();
            if !first || bucket == 0 {
                bucket = 0;
            } else if (shard.generation as u64 & CURSOR_GENERATION_MASK) != generation as u64
                || bucket > buckets
            {
                // The table moved its buckets since the cursor was made: walk the shard again.
                bucket = 0;
            }
            first = false;
            while bucket < buckets {
                if looked_at >= count || spent >= budget {
                    return (encode_cursor(shard_no, shard.generation, bucket), keys);
                }
                spent += 1;
                if let Some(slot) = shard.table.get_bucket(bucket) {
                    looked_at += 1;
                    spent += 7;
                    let key = shard.key(slot);
                    if shard.is_live(slot, Some(now)) && filter.matches(key) {
                        keys.push(key.to_vec());
                    }
                }
                bucket += 1;
            }
            shard_no += 1;
            bucket = 0;
        }
        (0, keys)
    }

    /// Write-locks the shards of `hashes`, in increasing shard order; the others stay `None`.
    fn lock_shards_for_write(
        &self,
        hashes: impl Iterator<Item = u64>,
    ) -> Vec<Option<RwLockWriteGuard<'_, Shard>>> {
        let mut wanted = [false; SHARDS];
        for hash in hashes {
            wanted[self.shard_of(hash)] = true;
        }
        (0..SHARDS)
            .map(|i| wanted[i].then(|| self.shards[i].0.write().unwrap_or_else(|p| p.into_inner())))
            .collect()
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
    fn reserving_for_no_keys_allocates_nothing() {
        // What opening an empty store asks for: its tables stay empty, so a SCAN of a few keys
        // written next walks a few buckets, not room for keys that never came.
        let index = Index::new();
        index.reserve(0, 0);
        for shard in index.shards.iter() {
            assert_eq!(shard.0.read().unwrap().table.capacity(), 0);
        }
    }

    #[test]
    fn a_reserved_index_takes_its_keys_without_growing() {
        let index = Index::new();
        let keys: Vec<Vec<u8>> = (0..50_000u32)
            .map(|i| format!("key-{i:08}").into_bytes())
            .collect();
        let key_bytes: usize = keys.iter().map(Vec::len).sum();
        index.reserve(keys.len() as u64, key_bytes as u64);
        let sizes = |index: &Index| -> Vec<(usize, usize, u32)> {
            index
                .shards
                .iter()
                .map(|s| {
                    let s = s.read().unwrap();
                    (s.table.capacity(), s.arena.chunks.capacity(), s.generation)
                })
                .collect()
        };
        let before = sizes(&index);
        assert!(before
            .iter()
            .all(|&(table, arena, _)| table > 0 && arena > 0));
        for (i, key) in keys.iter().enumerate() {
            index.insert(key, pos(i as u32)).unwrap();
        }
        // No table grew (no generation moved), no arena's list of chunks reallocated.
        assert_eq!(sizes(&index), before);
        assert_eq!(index.len(), keys.len());
        assert_eq!(index.position(&keys[123]), Some(pos(123)));
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

    /// The heap bytes of the index's tables and arenas (its side tables are empty here).
    fn heap_bytes(index: &Index) -> usize {
        index
            .shards
            .iter()
            .map(|s| {
                let s = s.read().unwrap();
                s.table.num_buckets() * (std::mem::size_of::<Slot>() + 1)
                    + s.arena.allocated()
                    + s.arena.chunks.capacity() * std::mem::size_of::<Box<[u8]>>()
            })
            .sum()
    }

    fn key16(i: usize) -> [u8; 16] {
        let mut key = *b"key-000000000000";
        key[4..].copy_from_slice(format!("{i:012}").as_bytes());
        key
    }

    #[test]
    fn a_key_costs_at_most_40_bytes_more_than_itself_at_every_size() {
        // Filled one insert at a time, through every table doubling: from 256k keys on (below,
        // the arenas' last chunks, 512 KiB in all, are a larger part).
        let index = Index::new();
        let mut worst = 0f64;
        for i in 0..1_000_000 {
            index.insert(&key16(i), pos(i as u32)).unwrap();
            let keys = i + 1;
            if keys >= 1 << 18 && keys % 8192 == 0 {
                let beyond = heap_bytes(&index) as f64 / keys as f64 - 16.0;
                worst = worst.max(beyond);
                assert!(
                    beyond <= 40.0,
                    "{beyond:.1} bytes per key beyond it at {keys} keys"
                );
            }
        }
        println!("at most {worst:.1} bytes per key beyond the key");
        // Sized once with `reserve`, then filled.
        for keys in [300_000, 1_000_000] {
            let index = Index::new();
            index.reserve(keys as u64, 16 * keys as u64);
            for i in 0..keys {
                index.insert(&key16(i), pos(i as u32)).unwrap();
            }
            let beyond = heap_bytes(&index) as f64 / keys as f64 - 16.0;
            println!("reserved for {keys}: {beyond:.1} bytes per key beyond the key");
            assert!(
                beyond <= 40.0,
                "{beyond:.1} bytes per key at {keys} reserved keys"
            );
        }
    }

    #[test]
    fn shards_take_staggered_shares_of_the_hash_space() {
        let parts = shard_parts();
        let mut counts = [0usize; SHARDS];
        for &shard in &parts {
            counts[shard as usize] += 1;
        }
        assert_eq!(counts.iter().sum::<usize>(), SHARD_PARTS);
        // Each shard a little larger than the one before, the last about twice the first.
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let ratio = counts[SHARDS - 1] as f64 / counts[0] as f64;
        assert!((1.8..=2.1).contains(&ratio), "{counts:?}");
        // The shards really are used that way: keys spread over them in those proportions.
        let index = Index::new();
        for i in 0..200_000 {
            index.insert(&key16(i), pos(i as u32)).unwrap();
        }
        let lens: Vec<usize> = index
            .shards
            .iter()
            .map(|s| s.read().unwrap().table.len())
            .collect();
        for (shard, (&len, &parts)) in lens.iter().zip(&counts).enumerate() {
            let expected = 200_000.0 * parts as f64 / SHARD_PARTS as f64;
            assert!(
                (len as f64 - expected).abs() < expected * 0.1,
                "shard {shard}: {len} keys, expected about {expected}"
            );
        }
    }

    #[test]
    fn an_arena_takes_keys_of_every_length_in_fixed_chunks() {
        let mut arena = Arena::new();
        let lengths = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            CHUNK - 3,
            CHUNK,
            3 * CHUNK + 5,
            1 << 20,
        ];
        let mut placed = Vec::new();
        for round in 0..3u8 {
            for &len in &lengths {
                let key = vec![round.wrapping_add(len as u8); len];
                let at = arena.push(&key).unwrap();
                placed.push((at, key));
            }
        }
        for (at, key) in &placed {
            assert_eq!(
                arena.key(*at),
                &key[..],
                "key of {} bytes at {at}",
                key.len()
            );
        }
        // Every chunk is a whole number of chunks long; no key was copied to grow.
        assert!(arena.chunks.iter().all(|c| c.len() % CHUNK == 0));
        let keys: usize = placed.iter().map(|(_, k)| k.len() + 3).sum();
        assert!(arena.allocated() <= 2 * keys + CHUNK);
        // The offsets say where: the length, then the key.
        let mut small = Arena::new();
        assert_eq!(small.push(b"abc"), Some(0));
        assert_eq!(small.push(&[7u8; 200]), Some(4));
        assert_eq!(&small.chunks[0][..6], &[3, b'a', b'b', b'c', 0xc8, 0x01]);
    }

    #[test]
    fn a_full_arena_refuses_a_key_and_keeps_the_others() {
        let mut arena = Arena::new();
        // Pretend all but the last chunk is in use.
        arena.end = MAX_ARENA - CHUNK;
        arena.chunks = (0..MAX_ARENA / CHUNK - 1)
            .map(|_| Vec::new().into_boxed_slice())
            .collect();
        let at = arena.push(&[1u8; 100]).unwrap();
        assert_eq!(at as usize, MAX_ARENA - CHUNK);
        assert_eq!(arena.push(&[2u8; CHUNK]), None, "past the last offset");
        assert_eq!(arena.key(at), &[1u8; 100][..]);
        assert!(!arena.has_room_for(1, CHUNK));
    }

    #[test]
    fn a_key_without_a_deadline_costs_what_it_did_before_deadlines() {
        // The whole per-key cost of the table is its slot: deadlines live in side tables that
        // only keys with a deadline have an entry in, behind a flag bit of the arena offset.
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        let index = Index::new();
        for i in 0..1_000u32 {
            index.insert(format!("key-{i}").as_bytes(), pos(i)).unwrap();
        }
        for shard in index.shards.iter() {
            let shard = shard.read().unwrap();
            assert_eq!(shard.deadlines.len(), 0);
            assert!(shard.deadlines.by_time.is_empty());
        }
    }

    #[test]
    fn an_expired_key_is_absent_for_every_lookup_until_swept() {
        let index = Index::new();
        let now = now_millis();
        index
            .insert_with_deadline(b"past", pos(1), Some(now - 1))
            .unwrap();
        index
            .insert_with_deadline(b"future", pos(2), Some(now + 3_600_000))
            .unwrap();
        index.insert(b"plain", pos(3)).unwrap();
        assert_eq!(index.position(b"past"), None);
        assert!(!index.contains(b"past"));
        assert_eq!(index.get_with(b"past", |found| found.map(|(p, _)| p)), None);
        assert_eq!(index.deadline(b"past"), KeyExpiry::Missing);
        assert_eq!(index.deadline(b"future"), KeyExpiry::At(now + 3_600_000));
        assert_eq!(index.deadline(b"plain"), KeyExpiry::Never);
        assert_eq!(index.deadline(b"nothing"), KeyExpiry::Missing);
        assert_eq!(index.len(), 2);
        assert_eq!(index.expiring_len(), 1);
        let mut seen = Vec::new();
        index.for_each(|key, _| seen.push(key.to_vec()));
        seen.sort();
        assert_eq!(seen, vec![b"future".to_vec(), b"plain".to_vec()]);

        // The sweep takes out the expired key only, and hands back its position.
        let mut swept = Vec::new();
        assert_eq!(
            index.remove_expired(now, 10, |k, p| swept.push((k.to_vec(), p))),
            1
        );
        assert_eq!(swept, vec![(b"past".to_vec(), pos(1))]);
        assert_eq!(
            index.remove_expired(now, 10, |_, _| panic!("nothing is due")),
            0
        );
        assert_eq!(index.len(), 2);
        assert_eq!(index.remove(b"past"), None);
    }

    #[test]
    fn a_write_replaces_or_clears_the_deadline() {
        let index = Index::new();
        let later = now_millis() + 3_600_000;
        index
            .insert_with_deadline(b"k", pos(1), Some(later))
            .unwrap();
        assert_eq!(
            index
                .insert_with_deadline(b"k", pos(2), Some(later + 5))
                .unwrap(),
            Some(pos(1))
        );
        assert_eq!(index.deadline(b"k"), KeyExpiry::At(later + 5));
        assert_eq!(index.insert(b"k", pos(3)).unwrap(), Some(pos(2)));
        assert_eq!(index.deadline(b"k"), KeyExpiry::Never);
        assert_eq!(index.expiring_len(), 0);
        // An expired key set again is set, with what the new write says.
        index.insert_with_deadline(b"e", pos(4), Some(1)).unwrap();
        assert_eq!(
            index.insert(b"e", pos(5)).unwrap(),
            Some(pos(4)),
            "its old place is stale"
        );
        assert_eq!(index.position(b"e"), Some(pos(5)));
        assert_eq!(
            index.remove_expired(u64::MAX - 1, 10, |_, _| {}),
            0,
            "no deadline left"
        );
    }

    #[test]
    fn deadlines_follow_their_keys_through_an_arena_rebuild() {
        let index = Index::new();
        let later = now_millis() + 3_600_000;
        for i in 0..50_000u32 {
            let key = format!("key-{i:08}");
            let deadline = (i % 3 == 0).then_some(later + i as u64);
            index
                .insert_with_deadline(key.as_bytes(), pos(i), deadline)
                .unwrap();
        }
        // Removing most keys rebuilds the arenas (garbage over half), moving every key.
        for i in (0..50_000u32).filter(|i| i % 5 != 0) {
            index.remove(format!("key-{i:08}").as_bytes());
        }
        for i in (0..50_000u32).filter(|i| i % 5 == 0) {
            let expected = if i % 3 == 0 {
                KeyExpiry::At(later + i as u64)
            } else {
                KeyExpiry::Never
            };
            assert_eq!(
                index.deadline(format!("key-{i:08}").as_bytes()),
                expected,
                "key {i}"
            );
        }
        // And the sweep finds them at their new places.
        let mut swept = 0;
        index.remove_expired(u64::MAX, usize::MAX, |key, p| {
            assert_eq!(key, format!("key-{:08}", p.file).as_bytes());
            swept += 1;
        });
        assert_eq!(swept, (0..50_000u32).filter(|i| i % 15 == 0).count());
        assert_eq!(index.len(), 10_000 - swept);
    }

    #[test]
    fn the_sweep_stops_at_max_and_goes_on_later() {
        let index = Index::new();
        for i in 0..100u32 {
            index
                .insert_with_deadline(format!("{i}").as_bytes(), pos(i), Some(1))
                .unwrap();
        }
        assert_eq!(index.remove_expired(2, 30, |_, _| {}), 30);
        assert_eq!(index.remove_expired(2, 1_000, |_, _| {}), 70);
        assert_eq!(index.remove_expired(2, 1_000, |_, _| {}), 0);
    }

    #[test]
    fn apply_changes_in_order_and_reports_what_it_replaced() {
        let index = Index::new();
        index.insert(b"a", pos(1)).unwrap();
        let replaced = index
            .apply(&[
                Change::Put {
                    key: b"a",
                    pos: pos(2),
                    deadline: None,
                },
                Change::Put {
                    key: b"b",
                    pos: pos(3),
                    deadline: Some(u64::MAX),
                },
                Change::Remove { key: b"a" },
                Change::Put {
                    key: b"b",
                    pos: pos(4),
                    deadline: None,
                },
                Change::Remove { key: b"missing" },
            ])
            .unwrap();
        assert_eq!(
            replaced,
            vec![Some(pos(1)), None, Some(pos(2)), Some(pos(3)), None]
        );
        assert_eq!(index.position(b"a"), None);
        assert_eq!(index.position(b"b"), Some(pos(4)));
        assert_eq!(index.deadline(b"b"), KeyExpiry::Never);
    }

    #[test]
    fn readers_never_see_part_of_an_applied_batch() {
        // Each batch writes the same generation to 64 keys spread over the shards; a reader
        // that looks them all up at one instant must find one generation only, and one that
        // looks them up one after another never an older one after a newer one.
        let index = Arc::new(Index::new());
        let keys: Vec<Vec<u8>> = (0..64).map(|i| format!("key-{i}").into_bytes()).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (index, keys, stop) = (Arc::clone(&index), keys.clone(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                    let mut rounds = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 100 {
                        index.get_with_many(&refs, |found| {
                            let first = found[0].map(|(p, _)| p.file);
                            assert!(found.iter().all(|f| f.map(|(p, _)| p.file) == first));
                        });
                        let mut last = 0;
                        for key in &refs {
                            let generation = index.position(key).map_or(0, |p| p.file);
                            assert!(generation >= last, "saw {generation} after {last}");
                            last = generation;
                        }
                        rounds += 1;
                    }
                })
            })
            .collect();
        for generation in 1..=2_000u32 {
            let changes: Vec<Change<'_>> = keys
                .iter()
                .map(|key| Change::Put {
                    key,
                    pos: pos(generation),
                    deadline: None,
                })
                .collect();
            index.apply(&changes).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
    }

    fn walk(index: &Index, count: usize, filter: &ScanFilter) -> Vec<Vec<u8>> {
        let mut cursor = 0;
        let mut keys = Vec::new();
        loop {
            let (next, page) = index.scan(cursor, count, filter);
            assert!(page.len() <= count, "a page holds at most `count` keys");
            keys.extend(page);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    #[test]
    fn a_walk_returns_every_key_once_when_nothing_changes() {
        let index = Index::new();
        assert!(walk(&index, 10, &ScanFilter::all()).is_empty());
        for i in 0..10_000u32 {
            index.insert(format!("key-{i}").as_bytes(), pos(i)).unwrap();
        }
        index
            .insert_with_deadline(b"gone", pos(1), Some(1))
            .unwrap();
        let mut keys = walk(&index, 100, &ScanFilter::all());
        keys.sort();
        let mut expected: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        expected.sort();
        assert_eq!(
            keys, expected,
            "each key exactly once, the expired one left out"
        );
        let mut some = walk(&index, 7, &ScanFilter::pattern(b"key-99?"));
        some.sort();
        let mut expected: Vec<Vec<u8>> = (990..1000u32)
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        expected.sort();
        assert_eq!(some, expected);
        assert_eq!(walk(&index, 1, &ScanFilter::prefix(b"key-1234")).len(), 1);
    }

    #[test]
    fn a_walk_returns_every_key_present_throughout_while_the_table_grows_and_shrinks() {
        let index = Index::new();
        for i in 0..1_000u32 {
            index
                .insert(format!("stay-{i}").as_bytes(), pos(i))
                .unwrap();
        }
        let mut cursor = 0;
        let mut seen = std::collections::HashSet::new();
        let mut round = 0u32;
        loop {
            let (next, page) = index.scan(cursor, 50, &ScanFilter::all());
            seen.extend(page);
            // Between pages: many new keys (the tables grow, moving buckets), and removals.
            for j in 0..500u32 {
                index
                    .insert(format!("new-{round}-{j}").as_bytes(), pos(j))
                    .unwrap();
            }
            for j in 0..250u32 {
                index.remove(format!("new-{round}-{j}").as_bytes());
            }
            round += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for i in 0..1_000u32 {
            assert!(
                seen.contains(format!("stay-{i}").as_bytes()),
                "stay-{i} missed"
            );
        }
    }

    #[test]
    fn any_cursor_leads_to_the_end_of_a_walk() {
        let index = Index::new();
        for i in 0..1_000u32 {
            index.insert(format!("key-{i}").as_bytes(), pos(i)).unwrap();
        }
        for start in [
            u64::MAX,
            1 << 63,
            12_345,
            encode_cursor(SHARDS - 1, 7, 1 << 39),
        ] {
            let mut cursor = start;
            let mut calls = 0;
            loop {
                let (next, _) = index.scan(cursor, 100, &ScanFilter::all());
                calls += 1;
                assert!(calls < 1_000, "the walk from {start} never ends");
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
}
