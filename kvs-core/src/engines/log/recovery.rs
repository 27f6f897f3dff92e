//! Opening a `kvs` log: finding its files, replaying every one into the index, and deciding
//! what a bad record means.
//!
//! The files are those the `MANIFEST` lists (see `manifest.rs` for what open checks against
//! it and does with the files it does not list); a store without one (written by release
//! 0.1.0, or a new directory) is made of the canonical `<id>.log` files in its directory.
//!
//! A record that fails its checks (see `format.rs`) is handled by where it sits:
//! - in the newest file, when it is the record that was being written when the process died,
//!   it is a **torn tail**. With [`RecoveryMode::TolerateTornTail`] (the default) the file is
//!   cut back to the end of the last good record, with a warning; every earlier record survives.
//!   With [`RecoveryMode::Strict`] open fails instead.
//! - anywhere else it is **corruption**: open fails with [`KvsError::Corruption`] naming the file
//!   and offset, and nothing is changed on disk.
//!
//! Zeros from the bad record's offset to the end of the newest file are not a record at all:
//! the file was extended ahead of its records (`SyncPolicy::Always`, see `writer.rs`). They are
//! cut off in either mode.
//!
//! **Read-only** (`KvStoreOptions::read_only`): the same decisions, but nothing on disk is
//! changed. A torn or zero tail is left in place and the log is served up to it (a torn tail
//! with a warning); unfinished compaction outputs, obsolete files and empty leftovers of a
//! rotation are left where they are; a newest file cut short in its header serves nothing. The
//! one repair that cannot be skipped is the rename of a committed compaction's output (its
//! records are only under the `.compacting` name): open refuses, asking for one read-write open.
//!
//! # Torn tail or corruption
//!
//! Each record (or batch: its batch record and every member, see `format.rs`) is written with
//! one `pwrite`, header first, at the end of the newest file; a crash leaves a prefix of it,
//! followed by nothing or (file extended ahead) by zeros. So after
//! a crash nothing valid starts after the end of the record being written, while the bytes
//! *inside* it are its key and value, which may hold anything, kvs records included (a value
//! may be a copy of a log file). What the bad record's header says decides where to look:
//! - The header decodes (kind and lengths in range) and declares an extent
//!   `[offset, offset + record_len)` that runs past the end of the file: the record was being
//!   written. A torn tail, whatever its size: values may be up to `MAX_VALUE_LEN` (512 MiB).
//! - The header decodes and the extent lies inside the file, but the checksum fails: a partial
//!   write into a file extended ahead. A torn tail only if no valid record starts at or after
//!   the end of the extent; otherwise corruption.
//! - The header does not decode (or fewer bytes than a header are left, or, version 2, it fails
//!   its own checksum): garbage of unknown length. A torn tail only if no valid record starts
//!   anywhere after its first byte.
//! - A batch is judged as one record whose extent is the batch record and its members: one that
//!   runs past the end of the file is torn; a bad member inside the file makes the batch bad
//!   with that extent. Either way all of the batch goes, or open fails at the batch's offset.
//!
//! Before any of this, a whole valid record of the *other* format version where the bad record
//! starts means the file header's version byte is damaged: corruption, never a torn tail.
//!
//! The scan for a valid record has no size limit and does not hold the rest of the file: it
//! reads chunks, and checks a candidate's checksum by reading its extent in chunks too. A file
//! crafted to be full of bytes that decode as headers makes it slow, never wrong.
//!
//! Replay itself reads each record through a window of a few MiB, its checksum computed on the
//! way, so a 512 MiB value is not held in memory to be checked (see `reader.rs`, which reads
//! the records and says what is wrong with a bad one; this file decides what that means).
//!
//! **Damaged headers.** In format version 2 every header has its own checksum: a bit flip in a
//! length field fails it, so the header is garbage of unknown length, and the records after it
//! make it corruption; it never passes for a long record being written. Version 1 has no such
//! check, and keeps its **blind spot** (for files of release 0.1.0 until compaction rewrites
//! them): a flip in a length field of one of the last records of the newest file (those within
//! one maximum record length of its end) that declares an extent running past the end of the
//! file, or over every record after it, is indistinguishable from a torn write of that record:
//! it is cut off with the records its extent covers, with a warning, where a perfect check would
//! refuse to open. In either version a flip anywhere else fails a checksum: corruption if any
//! record follows it, a torn tail (that record lost, nothing else) if it is the last.
//!
//! A set record is replayed with its deadline, one that has passed included: the index hides
//! it from every read, and the sweeper removes it once the store is open (see `mod.rs`).
//!
//! # Hints
//!
//! A closed file with a usable hint (see `hint.rs` for what makes one usable) is not replayed:
//! its hint's entries go into the index instead. The hints are checked first, several files at
//! once; the index is then sized once for all their keys; then the files are taken in id order,
//! each run of consecutive hinted files applied split by index shard over the cores (every
//! entry of a key on one thread, in file and log order, so the newest record wins, removes
//! included), and every other file replayed between the runs as above. A missing hint is
//! replayed at `info`, an unusable one with a warning naming it. `<id>.hint.tmp` files (a crash
//! while a hint was written) are removed, unless read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::format::{RecordKind, Version, FILE_MAGIC, FILE_MAGIC_V1};
use super::hint::{self, FileIdentity, Hint, Loaded};
use super::index::{Index, RecordPos};
use super::manifest::{
    self, parse_id, FileState, Fingerprint, Manifest, MANIFEST_FILE, MANIFEST_TMP,
};
use super::reader::{
    find_valid_record, valid_record_at, Batch, Damage, Extent, LogReader, Record, Step,
};
use super::writer::log_path;
use super::RecoveryMode;
use crate::data_dir::{sync_dir, ENGINE_FILE, LOCK_FILE};
use crate::{KvsError, Result};

/// Suffix of a compaction output not yet renamed into place. Open renames it if the manifest
/// lists it (its compaction committed) and deletes it otherwise.
pub const COMPACTING_SUFFIX: &str = ".log.compacting";

/// How long an open goes before it logs its progress, and how often it does after that.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What replay learned besides the index.
pub struct Recovered {
    /// Ids of the log files, oldest first.
    pub ids: Vec<u32>,
    pub sizes: BTreeMap<u32, u64>,
    pub stale: BTreeMap<u32, u64>,
    /// The fingerprint of each file's records (see `manifest.rs`), as replayed.
    pub fingerprints: BTreeMap<u32, u32>,
    /// The format version of each file (a file whose header was rewritten, or that serves
    /// nothing, counts as version 2).
    pub versions: BTreeMap<u32, Version>,
    /// The store's manifest, obsolete files dropped (they are deleted); `None` if the store had
    /// none, and the caller writes one.
    pub manifest: Option<Manifest>,
    /// The closed files loaded from a good hint (the others need one written).
    pub hinted: BTreeSet<u32>,
}

/// Finds the log files of `dir` (from its manifest, or for a store without one, by name),
/// finishes what a crash interrupted (unfinished compaction outputs, renames, deletions), and
/// replays every file into `index`. With a manifest, checks that every listed file is the one
/// the store wrote (see `manifest.rs`).
///
/// With `read_only`, changes nothing on disk (see the module docs).
pub fn recover(
    dir: &Path,
    mode: RecoveryMode,
    read_only: bool,
    index: &Index,
) -> Result<Recovered> {
    let manifest = manifest::read(dir)?;
    let listing = list_dir(dir)?;
    let ids = match &manifest {
        Some(manifest) => prepare_listed(dir, manifest, &listing, read_only)?,
        None => prepare_unlisted(dir, &listing, read_only)?,
    };

    let mut recovered = Recovered {
        ids: ids.clone(),
        sizes: BTreeMap::new(),
        stale: BTreeMap::new(),
        fingerprints: BTreeMap::new(),
        versions: BTreeMap::new(),
        manifest: None,
        hinted: BTreeSet::new(),
    };
    // Closed files with a usable hint are loaded from it instead of replayed (see `hint.rs`).
    let listed_of = |i: usize, id: u32| -> Option<(u64, u32)> {
        if i + 1 == ids.len() {
            // The active file is always replayed.
            return None;
        }
        match manifest.as_ref()?.files().get(&id) {
            Some(&FileState::Closed { len, fingerprint }) => Some((len, fingerprint)),
            _ => None,
        }
    };
    let candidates: Vec<(u32, u64, u32)> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, &id)| listed_of(i, id).map(|(len, fp)| (id, len, fp)))
        .collect();
    let loading = Instant::now();
    let mut hints = load_hints(dir, &candidates, read_only);
    let loaded_in = loading.elapsed();
    let (keys, key_bytes) = hints.values().fold((0u64, 0u64), |(k, b), hint| {
        (k + hint.counts.entries, b + hint.counts.key_bytes)
    });
    let reserving = Instant::now();
    index.reserve(keys, key_bytes);
    let reserved_in = reserving.elapsed();
    recovered.hinted = hints.keys().copied().collect();

    // An open that takes long says how far it got, every second or so, and what it did.
    let started = Instant::now();
    let mut last_progress = started;
    let mut run: Vec<Hint> = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            log::info!(
                "opening {}: {i} of {} log files replayed, {} keys, {:.1} s",
                dir.display(),
                ids.len(),
                index.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let is_newest = i + 1 == ids.len();
        let listed = manifest.as_ref().and_then(|m| match m.files().get(&id) {
            Some(&FileState::Closed { len, fingerprint }) => Some((len, fingerprint)),
            _ => None,
        });
        if let Some(hint) = hints.remove(&id) {
            // Its header matched the manifest entry: the file is the one listed.
            if let Some((len, fingerprint)) = listed {
                recovered.versions.insert(id, hint.log_version);
                recovered.sizes.insert(id, len);
                recovered.fingerprints.insert(id, fingerprint);
                *recovered.stale.entry(id).or_insert(0) += hint.counts.framing_bytes;
                run.push(hint);
                continue;
            }
        }
        // The files loaded from hints before this one go in first: newer files win.
        apply_hints(dir, &run, index, &mut recovered.stale, keys)?;
        run.clear();
        let mut fingerprint = Fingerprint::default();
        let replayed = replay_file(
            dir,
            id,
            is_newest,
            mode,
            read_only,
            index,
            &mut recovered.stale,
            &mut fingerprint,
        );
        let size = match (replayed, listed) {
            (Ok((size, version)), _) => {
                recovered.versions.insert(id, version);
                size
            }
            (Err(e), Some((len, _))) => return Err(with_listed_len(dir, id, len, e)),
            (Err(e), None) => return Err(e),
        };
        if let Some((len, expected)) = listed {
            check_closed(dir, id, len, expected, size, fingerprint.value())?;
        }
        recovered.sizes.insert(id, size);
        recovered.fingerprints.insert(id, fingerprint.value());
    }
    apply_hints(dir, &run, index, &mut recovered.stale, keys)?;
    log::debug!(
        "opened {}: {} of {} log files from hints ({keys} entries, checked in {:.1} ms, index \
         sized in {:.1} ms), {} keys, in {:.1} ms",
        dir.display(),
        recovered.hinted.len(),
        ids.len(),
        loaded_in.as_secs_f64() * 1e3,
        reserved_in.as_secs_f64() * 1e3,
        index.len(),
        (loaded_in + reserved_in + started.elapsed()).as_secs_f64() * 1e3
    );
    if started.elapsed() >= PROGRESS_EVERY {
        log::info!(
            "opened {}: {} log files replayed or loaded from hints, {} keys, in {:.1} s",
            dir.display(),
            ids.len(),
            index.len(),
            started.elapsed().as_secs_f64()
        );
    }
    recovered.manifest = manifest.map(|mut m| {
        let obsolete: Vec<u32> = m
            .files()
            .iter()
            .filter(|(_, state)| **state == FileState::Obsolete)
            .map(|(&id, _)| id)
            .collect();
        for id in obsolete {
            m.forget(id);
        }
        m
    });
    Ok(recovered)
}

/// Loads and checks the hints of the closed files `candidates` (id, listed length, listed
/// fingerprint), several at once: returns the usable ones, by id. A missing hint is said at
/// `info`, an unusable one with a warning naming it (read-write, the hinter writes it again).
fn load_hints(dir: &Path, candidates: &[(u32, u64, u32)], read_only: bool) -> BTreeMap<u32, Hint> {
    let load_one = |&(id, len, fingerprint): &(u32, u64, u32)| -> Option<Hint> {
        // A log file of another length is not the one listed: its replay says what is wrong.
        let identity = match fs::metadata(log_path(dir, id)) {
            Ok(meta) if meta.len() == len => FileIdentity::of(&meta),
            _ => return None,
        };
        match hint::load(dir, id, len, fingerprint, identity) {
            Loaded::Usable(hint) => Some(hint),
            Loaded::Missing => {
                log::info!("{id}.log has no hint: replaying it");
                None
            }
            Loaded::Unusable(reason) => {
                log::warn!(
                    "{}: {reason}; replaying {id}.log instead{}",
                    hint::hint_path(dir, id).display(),
                    if read_only {
                        ""
                    } else {
                        ", and writing its hint again"
                    }
                );
                None
            }
        }
    };
    let threads = apply_threads().min(candidates.len().max(1));
    let mut loaded: Vec<Option<Hint>> = Vec::with_capacity(candidates.len());
    if threads <= 1 {
        loaded.extend(candidates.iter().map(load_one));
    } else {
        // Checking a hint is mostly its checksum: split the files between the threads.
        let chunk = candidates.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = candidates
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(load_one).collect::<Vec<_>>()))
                .collect();
            for (handle, part) in handles.into_iter().zip(candidates.chunks(chunk)) {
                match handle.join() {
                    Ok(hints) => loaded.extend(hints),
                    // A panic in a check is a bug; the files are replayed instead.
                    Err(_) => loaded.extend(part.iter().map(|_| None)),
                }
            }
        });
    }
    candidates
        .iter()
        .zip(loaded)
        .filter_map(|(&(id, _, _), hint)| hint.map(|hint| (id, hint)))
        .collect()
}

/// How many threads apply hints: the cores, up to 4.
fn apply_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Applies the entries of `run`, consecutive closed files loaded from hints, oldest first, to
/// the index and the stale-byte counts, as replaying them would. The work is split by index
/// shard: every entry of one key goes to the same thread, in file and log order, so the newest
/// record of a key wins, removes included, whatever the threads do meanwhile.
///
/// Within one file, a thread applies its entries in the order of the table buckets their keys
/// go to (the low bits of the hash; a stable sort, so the entries of one key keep their log
/// order): inserting keys in log order jumps around tables far larger than the CPU caches,
/// one cache and TLB miss per key, where a sweep in bucket order has the hardware prefetch.
/// `keys` is the number of entries the index was sized for (see `Index::reserve`).
fn apply_hints(
    dir: &Path,
    run: &[Hint],
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    keys: u64,
) -> Result<()> {
    if run.is_empty() {
        return Ok(());
    }
    let entries: u64 = run.iter().map(|h| h.counts.entries).sum();
    // Below this, a thread costs more than it saves.
    let threads = if entries < 1 << 16 {
        1
    } else {
        apply_threads()
    };
    let shards = index.shard_count();
    let bucket_bits = bucket_bits(keys.max(entries), shards);
    let apply_part = |part: usize| -> Result<BTreeMap<u32, u64>> {
        let mut stale = BTreeMap::new();
        let mut sorted: Vec<u8> = Vec::new();
        for hint in run {
            let applied = hint.with_entries(|bytes| -> Result<()> {
                let mine = |entry: &hint::Entry<'_>| {
                    let (hash, shard) = index.hash_and_shard(entry.key);
                    // Neighbouring shards to one thread: their locks may share a cache line.
                    (threads == 1 || shard * threads / shards == part).then_some(hash)
                };
                let mut at = 0;
                while at < bytes.len() {
                    let end = chunk_end(bytes, at);
                    let chunk = &bytes[at..end];
                    by_buckets(chunk, &mut sorted, bucket_bits, &mine);
                    let mut next = 0;
                    while let Some((entry, after)) = hint::entry_at(&sorted, next) {
                        apply_entry(index, &mut stale, hint.id, &entry)?;
                        next = after;
                    }
                    at = end;
                }
                Ok(())
            });
            applied.map_err(|e| KvsError::io_at(hint::hint_path(dir, hint.id), e))??;
        }
        Ok(stale)
    };
    let parts: Vec<Result<BTreeMap<u32, u64>>> = if threads == 1 {
        vec![apply_part(0)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|part| scope.spawn(move || apply_part(part)))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(KvsError::Io(io::Error::other(
                            "a thread applying hint files panicked",
                        )))
                    })
                })
                .collect()
        })
    };
    for part in parts {
        for (id, bytes) in part? {
            *stale.entry(id).or_insert(0) += bytes;
        }
    }
    Ok(())
}

/// Applies one hint entry of file `id` (see [`apply`]).
#[inline]
fn apply_entry(
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    id: u32,
    entry: &hint::Entry<'_>,
) -> Result<()> {
    let pos = RecordPos {
        file: id,
        offset: entry.offset,
        len: entry.len,
    };
    apply(index, stale, entry.kind, entry.key, pos, entry.deadline)
}

/// How many low bits of the hash pick a bucket in a shard's table sized for `keys` keys over
/// `shards` shards (what `Index::reserve` asks the table for: an eighth more than its share;
/// the table has a power of two of buckets, at most 7/8 full). A bit or two off only makes
/// the sweep of [`apply_hints`] two or four sweeps.
fn bucket_bits(keys: u64, shards: usize) -> u32 {
    let per_shard = keys / shards.max(1) as u64;
    let capacity = per_shard + per_shard / 8;
    let buckets = (capacity.saturating_mul(8) / 7).max(1).next_power_of_two();
    buckets.trailing_zeros().clamp(1, 32)
}

/// How many bytes of hint entries [`apply_hints`] puts in bucket order at a time (per thread).
const CHUNK_BYTES: usize = 32 << 20;

/// Where the chunk of entries starting at `at` ends: the end of the first entry that reaches
/// [`CHUNK_BYTES`], or of the last one.
fn chunk_end(entries: &[u8], at: usize) -> usize {
    let mut end = at;
    while end - at < CHUNK_BYTES {
        match hint::entry_at(entries, end) {
            Some((_, next)) => end = next,
            None => return entries.len(),
        }
    }
    end
}

/// A group of [`by_buckets`] spans `2^WINDOW_BITS` buckets of each table (512, about 10 KiB of
/// slots): the part of a table the keys of one group go to stays in the CPU's caches, for
/// the 16 or 32 shards a thread fills at once.
const WINDOW_BITS: u32 = 9;

/// At most 16,384 groups: the scatter into more destinations would miss the caches itself.
const MAX_GROUP_BITS: u32 = 14;

/// How many top bits of the bucket [`by_buckets`] groups by, for tables of `2^bucket_bits`
/// buckets.
fn group_bits(bucket_bits: u32) -> u32 {
    bucket_bits
        .saturating_sub(WINDOW_BITS)
        .clamp(1, MAX_GROUP_BITS)
        .min(bucket_bits)
}

/// Copies the entries of `chunk` (whole entries, back to back) that `mine` gives a hash for
/// into `out`, grouped by the top [`group_bits`] of the `bucket_bits` low bits of the hash (the
/// bucket of a table of `2^bucket_bits` buckets), each group in the order of `chunk`: a stable
/// counting sort. Entries of one key have one hash, so they keep their log order.
fn by_buckets(
    chunk: &[u8],
    out: &mut Vec<u8>,
    bucket_bits: u32,
    mine: &dyn Fn(&hint::Entry<'_>) -> Option<u64>,
) {
    let group_bits = group_bits(bucket_bits);
    let shift = bucket_bits - group_bits;
    let group = |hash: u64| ((hash >> shift) & ((1 << group_bits) - 1)) as usize;
    let mut starts = vec![0usize; (1 << group_bits) + 1];
    let mut at = 0;
    while let Some((entry, next)) = hint::entry_at(chunk, at) {
        if let Some(hash) = mine(&entry) {
            starts[group(hash) + 1] += next - at;
        }
        at = next;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    out.clear();
    out.resize(starts[starts.len() - 1], 0);
    let mut at = 0;
    while let Some((entry, next)) = hint::entry_at(chunk, at) {
        if let Some(hash) = mine(&entry) {
            let to = &mut starts[group(hash)];
            out[*to..*to + (next - at)].copy_from_slice(&chunk[at..next]);
            *to += next - at;
        }
        at = next;
    }
}

/// What a directory entry is to the store.
enum Listed {
    /// `<id>.log`, with a canonical id.
    Log(u32),
    /// `<id>.log.compacting`, with a canonical id.
    Compacting(u32),
    /// `<id>.hint.tmp`, with a canonical id: a hint whose writing a crash interrupted.
    HintTmp,
    /// The store's own bookkeeping (`MANIFEST`, `engine`, `LOCK`, their temporary files).
    Own,
    /// Anything else.
    Other,
}

/// The entries of `dir`, by name, with what each is.
fn list_dir(dir: &Path) -> Result<Vec<(String, Listed)>> {
    let mut listing = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| KvsError::io_at(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| KvsError::io_at(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let what = if let Some(id) = name.strip_suffix(COMPACTING_SUFFIX).and_then(parse_id) {
            Listed::Compacting(id)
        } else if let Some(id) = name.strip_suffix(".log").and_then(parse_id) {
            Listed::Log(id)
        } else if let Some((_, tmp)) = hint::parse_name(&name) {
            if tmp {
                Listed::HintTmp
            } else {
                Listed::Own
            }
        } else if [
            MANIFEST_FILE,
            MANIFEST_TMP,
            ENGINE_FILE,
            LOCK_FILE,
            "engine.tmp",
        ]
        .contains(&name.as_str())
        {
            Listed::Own
        } else {
            Listed::Other
        };
        listing.push((name, what));
    }
    listing.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

/// Whether `path` is a regular file (following symbolic links); `None` if it does not exist.
fn is_regular_file(path: &Path) -> Result<Option<bool>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.is_file())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KvsError::io_at(path, e)),
    }
}

fn corruption(path: PathBuf, offset: u64, reason: String) -> KvsError {
    KvsError::Corruption {
        path,
        offset,
        reason,
    }
}

/// A store without a manifest (written by release 0.1.0, or a new directory): its files are
/// the canonical `<id>.log` names. Deletes unfinished compaction outputs. Returns the ids.
fn prepare_unlisted(dir: &Path, listing: &[(String, Listed)], read_only: bool) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for (name, what) in listing {
        let path = dir.join(name);
        match *what {
            Listed::Compacting(_) if read_only => {
                log::info!("leaving unfinished compaction output {name} (read-only)");
            }
            Listed::Compacting(_) => {
                // Compaction crashed before its output was complete; the files it was
                // compacting are all still here.
                log::info!("removing unfinished compaction output {name}");
                fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
            }
            Listed::Log(id) => {
                if is_regular_file(&path)? == Some(true) {
                    ids.push(id);
                } else {
                    log::warn!("{}: not a regular file, ignored", path.display());
                }
            }
            Listed::HintTmp => remove_hint_tmp(&path, read_only)?,
            Listed::Own => {}
            Listed::Other => log::warn!("{}: not a kvs file, ignored", path.display()),
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A hint a crash interrupted the writing of (see `hint.rs`): removed, unless read-only.
fn remove_hint_tmp(path: &Path, read_only: bool) -> Result<()> {
    if read_only {
        log::info!("leaving unfinished hint {} (read-only)", path.display());
        return Ok(());
    }
    log::info!("removing unfinished hint {}", path.display());
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KvsError::io_at(path, e)),
    }
}

/// A store with a manifest: checks that every listed file is there, finishes the renames of a
/// committed compaction, deletes obsolete files and crash leftovers, and warns about (and
/// leaves alone) every other file. Returns the ids to replay: the closed files and the active
/// one. Fails, having changed nothing, if a listed file is missing or not a regular file.
fn prepare_listed(
    dir: &Path,
    manifest: &Manifest,
    listing: &[(String, Listed)],
    read_only: bool,
) -> Result<Vec<u32>> {
    let compacting: Vec<u32> = listing
        .iter()
        .filter_map(|(_, what)| match what {
            Listed::Compacting(id) => Some(*id),
            _ => None,
        })
        .collect();
    let mut ids = Vec::new();
    let mut renames = Vec::new();
    let mut obsolete = Vec::new();
    for (&id, state) in manifest.files() {
        let path = log_path(dir, id);
        let name = format!("{id}.log");
        match (*state, is_regular_file(&path)?) {
            (FileState::Obsolete, Some(true)) => obsolete.push(path),
            (FileState::Obsolete, Some(false)) => log::warn!(
                "{}: not a regular file (the store's {name} was deleted), ignored",
                path.display()
            ),
            (FileState::Obsolete, None) => {}
            (FileState::Closed { .. }, None) if compacting.contains(&id) => {
                // Compaction committed, then crashed before renaming this output into place.
                renames.push(id);
                ids.push(id);
            }
            (FileState::Closed { .. }, None) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} is missing: the store lists it as holding data (restore it \
                         from a backup of the whole directory)"
                    ),
                ))
            }
            (FileState::Active, None) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} is missing: the store lists it as the active file, holding \
                         the newest writes (restore it from a backup of the whole directory)"
                    ),
                ))
            }
            (_, Some(false)) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} is not a regular file, but the store lists it as one of its \
                         log files"
                    ),
                ))
            }
            (_, Some(true)) => ids.push(id),
        }
    }
    // The active file has the highest listed id (`Manifest::decode` checks it).
    let active = manifest.active().unwrap_or(u32::MAX);
    // An unlisted file newer than the active one. A rotation that crashed before writing the
    // manifest leaves one holding at most a header: removed below. One holding more was not
    // written by this store since it has had a manifest (kvs lists a file before writing to
    // it), but most likely by a kvs that keeps none (release 0.1.0) opened on this directory:
    // ignoring it could hide acknowledged writes, so open refuses.
    let mut leftovers = Vec::new();
    for (name, what) in listing {
        let Listed::Log(id) = *what else { continue };
        if id <= active {
            continue;
        }
        let path = dir.join(name);
        match holds_more_than_a_header(&path)? {
            Some(false) => leftovers.push(id),
            Some(true) => {
                return Err(corruption(
                    path,
                    0,
                    format!(
                        "{name} holds data but the store's {MANIFEST_FILE} does not list it, \
                         though it is newer than every file listed: it was written by a kvs \
                         that keeps no {MANIFEST_FILE} (release 0.1.0), or copied in. If it \
                         holds writes of this store, remove {MANIFEST_FILE} and open the store \
                         again (kvs then rebuilds it from the log files); otherwise move \
                         {name} out of the data directory"
                    ),
                ))
            }
            // A directory or the like: it holds no log records.
            None => {}
        }
    }

    if read_only {
        if let Some(&id) = renames.first() {
            let from = dir.join(format!("{id}{COMPACTING_SUFFIX}"));
            return Err(KvsError::InvalidArgument(format!(
                "cannot open {} read-only: a compaction committed but its output {} was not \
                 renamed into place yet; open the store once read-write to finish it",
                dir.display(),
                from.display()
            )));
        }
        // Obsolete files, unfinished outputs and rotation leftovers stay; none is replayed.
        ids.sort_unstable();
        return Ok(ids);
    }
    let mut changed = false;
    for &id in &renames {
        let from = dir.join(format!("{id}{COMPACTING_SUFFIX}"));
        let to = log_path(dir, id);
        log::info!(
            "finishing the rename of compaction output {}",
            from.display()
        );
        fs::rename(&from, &to).map_err(|e| KvsError::io_at(&to, e))?;
        changed = true;
    }
    for path in obsolete {
        // Its compaction committed: every live record of it is in the outputs.
        log::info!("removing {}, replaced by a compaction", path.display());
        fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
        changed = true;
    }
    for (name, what) in listing {
        let path = dir.join(name);
        match *what {
            Listed::Compacting(id) if renames.contains(&id) => {}
            Listed::Compacting(_) => {
                // Compaction crashed before committing; the files it was compacting are all
                // still listed.
                log::info!("removing unfinished compaction output {name}");
                fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
                changed = true;
            }
            Listed::Log(id) if manifest.files().contains_key(&id) => {}
            Listed::Log(id) if leftovers.contains(&id) => {
                // Created by a rotation that crashed before writing the manifest: nothing was
                // ever written to it.
                log::info!("removing {name}, a log file created by an unfinished rotation");
                fs::remove_file(&path).map_err(|e| KvsError::io_at(&path, e))?;
                changed = true;
            }
            Listed::HintTmp => remove_hint_tmp(&path, false)?,
            Listed::Own => {}
            Listed::Log(_) | Listed::Other => log::warn!(
                "{}: not one of the store's files (its {MANIFEST_FILE} does not list it), \
                 ignored",
                path.display()
            ),
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Whether the regular file `path` holds more than (a prefix of) a log file header; `None` if
/// it is not a regular file.
fn holds_more_than_a_header(path: &Path) -> Result<Option<bool>> {
    let meta = fs::metadata(path).map_err(|e| KvsError::io_at(path, e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > FILE_MAGIC.len() as u64 {
        return Ok(Some(true));
    }
    let bytes = fs::read(path).map_err(|e| KvsError::io_at(path, e))?;
    Ok(Some(
        !FILE_MAGIC.starts_with(&bytes) && !FILE_MAGIC_V1.starts_with(&bytes),
    ))
}

/// Checks a replayed closed file against its manifest entry.
fn check_closed(
    dir: &Path,
    id: u32,
    listed_len: u64,
    listed_fingerprint: u32,
    len: u64,
    fingerprint: u32,
) -> Result<()> {
    if len != listed_len {
        return Err(corruption(
            log_path(dir, id),
            len.min(listed_len),
            format!(
                "{id}.log is {len} bytes, the store sealed it at {listed_len}: it was \
                 truncated, extended or replaced"
            ),
        ));
    }
    if fingerprint != listed_fingerprint {
        return Err(corruption(
            log_path(dir, id),
            0,
            format!(
                "{id}.log is not the file the store wrote (its records differ): it was \
                 replaced or swapped with another file"
            ),
        ));
    }
    Ok(())
}

/// Adds what the manifest says to an error found replaying closed file `id`, if its length
/// is not the one it was sealed at.
fn with_listed_len(dir: &Path, id: u32, listed_len: u64, err: KvsError) -> KvsError {
    let len = fs::metadata(log_path(dir, id)).map(|m| m.len());
    match (err, len) {
        (
            KvsError::Corruption {
                path,
                offset,
                reason,
            },
            Ok(len),
        ) if len != listed_len => KvsError::Corruption {
            path,
            offset,
            reason: format!(
                "{reason} ({id}.log is {len} bytes, the store sealed it at {listed_len}: it \
                 was truncated, extended or replaced)"
            ),
        },
        (err, _) => err,
    }
}

/// Replays one file; returns its size after any torn tail was cut off (or, with `read_only`,
/// the end of its last good record), and its format version.
#[allow(clippy::too_many_arguments)]
fn replay_file(
    dir: &Path,
    id: u32,
    is_newest: bool,
    mode: RecoveryMode,
    read_only: bool,
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    fingerprint: &mut Fingerprint,
) -> Result<(u64, Version)> {
    let path = log_path(dir, id);
    let io_err = |e| KvsError::io_at(&path, e);
    let file = File::open(&path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    if file_len > u32::MAX as u64 {
        return Err(corruption(
            path,
            u32::MAX as u64,
            format!("log file is {file_len} bytes; kvs never writes one over 4 GiB"),
        ));
    }
    let mut reader = match LogReader::open(&file, file_len).map_err(io_err)? {
        Ok(reader) => reader,
        Err(damage) => {
            return bad_file_header(&path, damage, is_newest, mode, read_only)
                .map(|size| (size, Version::V2))
        }
    };
    let version = reader.version();
    let mut sealed = false;
    loop {
        let offset = reader.offset();
        match reader.next().map_err(io_err)? {
            Step::Record(record) => {
                sealed = replay_record(&path, id, &record, index, stale, fingerprint)?;
            }
            Step::Batch(batch) => {
                replay_batch(id, &batch, index, stale, fingerprint)?;
                sealed = false;
            }
            Step::End => {
                check_ends_sealed(&path, offset, is_newest, sealed)?;
                return Ok((offset, version));
            }
            Step::Damage(damage) => {
                let at = (&file, version);
                return bad_record(at, &path, damage, file_len, is_newest, mode, read_only)
                    .map(|size| (size, version));
            }
        }
    }
}

/// A file whose header is bad: a newest file cut short while it was being created gets its
/// header rewritten (in [`RecoveryMode::TolerateTornTail`]); anything else is corruption.
fn bad_file_header(
    path: &Path,
    damage: Damage,
    is_newest: bool,
    mode: RecoveryMode,
    read_only: bool,
) -> Result<u64> {
    let short = matches!(damage, Damage::ShortFile { .. });
    if short && is_newest && mode == RecoveryMode::TolerateTornTail && read_only {
        // As below, but left as it is: the file serves no records.
        log::warn!(
            "{}: {damage}; it holds no records (read-only: left as it is)",
            path.display()
        );
        return Ok(0);
    }
    if short && is_newest && mode == RecoveryMode::TolerateTornTail {
        // Crashed while creating the file: nothing in it was ever acknowledged.
        log::warn!("{}: {damage}; rewriting its header", path.display());
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0).map(|()| f))
            .and_then(|f| f.write_all_at(&FILE_MAGIC, 0).map(|()| f))
            .and_then(|f| f.sync_all())
            .map_err(|e| KvsError::io_at(path, e))?;
        return Ok(FILE_MAGIC.len() as u64);
    }
    Err(corruption(path.to_path_buf(), 0, damage.to_string()))
}

/// Applies one valid record of file `id` (at `path`) to the index, the stale-byte counts and
/// the file's fingerprint. Returns whether it is a seal.
fn replay_record(
    path: &Path,
    id: u32,
    record: &Record<'_>,
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    fingerprint: &mut Fingerprint,
) -> Result<bool> {
    let is_seal = match record.sealed_at {
        Some(sealed_at) => {
            check_seal(path, record.offset, sealed_at)?;
            *stale.entry(id).or_insert(0) += record.len as u64;
            true
        }
        None => {
            let pos = RecordPos {
                file: id,
                // Fits: the file is under 4 GiB (checked by `replay_file`).
                offset: record.offset as u32,
                len: record.len as u32,
            };
            apply(index, stale, record.kind, record.key, pos, record.deadline)?;
            false
        }
    };
    fingerprint.add(&record.crc.to_le_bytes());
    Ok(is_seal)
}

/// Applies a whole, valid batch of file `id`: every member in order (see [`apply`]); the
/// batch record itself only frames them, and is stale at once.
fn replay_batch(
    id: u32,
    batch: &Batch<'_>,
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    fingerprint: &mut Fingerprint,
) -> Result<()> {
    *stale.entry(id).or_insert(0) += batch.frame_len as u64;
    fingerprint.add(&batch.crc.to_le_bytes());
    for member in batch.members {
        let pos = RecordPos {
            file: id,
            // Fits: the file is under 4 GiB (checked by `replay_file`).
            offset: member.offset as u32,
            len: member.len as u32,
        };
        apply(index, stale, member.kind, &member.key, pos, member.deadline)?;
        fingerprint.add(&member.crc.to_le_bytes());
    }
    Ok(())
}

/// A seal says where it was written: one elsewhere means records before it were removed or
/// the file was pieced together.
fn check_seal(path: &Path, offset: u64, sealed_at: u64) -> Result<()> {
    if sealed_at != offset {
        return Err(corruption(
            path.to_path_buf(),
            offset,
            format!("seal record written at offset {sealed_at}, found at {offset}"),
        ));
    }
    Ok(())
}

/// At the end of a file's records, `offset` bytes in: every closed file ends with a seal
/// (format.rs). One that does not was cut short, maybe exactly at a record boundary, and its
/// last records are gone.
fn check_ends_sealed(path: &Path, offset: u64, is_newest: bool, sealed: bool) -> Result<()> {
    if !is_newest && !sealed {
        return Err(corruption(
            path.to_path_buf(),
            offset,
            "a closed log file ends without its seal record: it was cut short".into(),
        ));
    }
    Ok(())
}

/// What the first bad record of a log file means (see the module docs), as
/// [`judge_bad_record`] decides it: for opening the store here, and for `verify.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Zeros from the bad record to the end of the newest file: the end of the log.
    ZeroTail,
    /// A torn tail of the newest file: what a crash mid-write leaves, cut off.
    TornTail,
    /// Corruption: in a closed file, or, in [`RecoveryMode::Strict`], anywhere.
    Corrupt,
    /// Corruption: a whole record of the other format version starts there, so the file's
    /// version byte is damaged (or the file was pieced together).
    OtherVersion(Version),
    /// Corruption: a valid record follows at this offset, so the log goes on past the bad
    /// record.
    ContinuesAt(u64),
}

/// Decides what `damage`, the first bad record of `file` (of `version`, `file_len` bytes),
/// means; changes nothing.
pub(super) fn judge_bad_record(
    (file, version): (&File, Version),
    damage: Damage,
    file_len: u64,
    is_newest: bool,
    mode: RecoveryMode,
) -> io::Result<Verdict> {
    let offset = damage.offset();
    if is_newest && all_zeros(file, offset, file_len)? {
        return Ok(Verdict::ZeroTail);
    }
    if !is_newest || mode == RecoveryMode::Strict {
        return Ok(Verdict::Corrupt);
    }
    let other = match version {
        Version::V1 => Version::V2,
        Version::V2 => Version::V1,
    };
    if valid_record_at(file, other, offset, file_len)? {
        return Ok(Verdict::OtherVersion(other));
    }
    if let Some(found) = valid_record_after(file, version, damage, file_len)? {
        return Ok(Verdict::ContinuesAt(found));
    }
    Ok(Verdict::TornTail)
}

/// Acts on what the first bad record of a file means ([`judge_bad_record`]): the end of the
/// log (a zero tail) or a torn tail is cut off (returns the file's new length); corruption is
/// an error.
fn bad_record(
    (file, version): (&File, Version),
    path: &Path,
    damage: Damage,
    file_len: u64,
    is_newest: bool,
    mode: RecoveryMode,
    read_only: bool,
) -> Result<u64> {
    let io_err = |e| KvsError::io_at(path, e);
    let offset = damage.offset();
    match judge_bad_record((file, version), damage, file_len, is_newest, mode).map_err(io_err)? {
        Verdict::ZeroTail => {
            // Extended ahead of its records (`SyncPolicy::Always`, see `writer.rs`) and not
            // cut back, as the store was not closed: the log ends here. Nothing was written
            // there.
            log::debug!(
                "{}: {} zero bytes past the last record, {}",
                path.display(),
                file_len - offset,
                if read_only {
                    "ignored (read-only)"
                } else {
                    "cut off"
                }
            );
            cut_at(path, offset, read_only)
        }
        Verdict::Corrupt => Err(corruption(path.to_path_buf(), offset, damage.to_string())),
        // Not a record being written: a whole record of the other version.
        Verdict::OtherVersion(other) => Err(corruption(
            path.to_path_buf(),
            offset,
            other_version_reason(damage, other, version),
        )),
        Verdict::ContinuesAt(found) => Err(corruption(
            path.to_path_buf(),
            offset,
            format!("{damage}; a valid record follows at offset {found}"),
        )),
        Verdict::TornTail => {
            if read_only {
                log::warn!(
                    "{}: ignoring a torn tail of {} bytes at offset {offset} ({damage}); \
                     read-only, so it is left in place",
                    path.display(),
                    file_len - offset
                );
            } else {
                log::warn!(
                    "{}: cutting off a torn tail of {} bytes at offset {offset} ({damage})",
                    path.display(),
                    file_len - offset
                );
            }
            cut_at(path, offset, read_only)
        }
    }
}

/// The reason of [`Verdict::OtherVersion`].
pub(super) fn other_version_reason(damage: Damage, other: Version, version: Version) -> String {
    format!(
        "{damage}; a valid version-{} record starts here, but the file header says version {}: \
         the file header is damaged",
        other as u8, version as u8
    )
}

/// The first valid record that proves the log goes on past the bad record `damage` describes
/// (see the module docs). The bytes of the bad record's own extent are its payload: a value
/// may hold anything, kvs records included, so they prove nothing.
pub(super) fn valid_record_after(
    file: &File,
    version: Version,
    damage: Damage,
    file_len: u64,
) -> io::Result<Option<u64>> {
    let offset = damage.offset();
    let scan_from = match damage.extent() {
        Extent::PastEnd => return Ok(None),
        Extent::Inside(len) => offset + len,
        Extent::Unknown => offset + 1,
    };
    find_valid_record(file, version, scan_from, file_len)
}

/// Cuts the file at `path` back to `offset` bytes, durably (unless `read_only`: the file is
/// then left as it is, and served up to `offset`); returns the length of its records.
fn cut_at(path: &Path, offset: u64, read_only: bool) -> Result<u64> {
    if read_only {
        return Ok(offset);
    }
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(offset).and_then(|()| f.sync_all()))
        .map_err(|e| KvsError::io_at(path, e))?;
    Ok(offset)
}

/// Applies one valid record to the index and the stale-byte counts. A set goes in with its
/// deadline, one already past included: the index hides it from every read, and the sweep
/// removes it (counting it stale) once the store is open.
fn apply(
    index: &Index,
    stale: &mut BTreeMap<u32, u64>,
    kind: RecordKind,
    key: &[u8],
    pos: RecordPos,
    deadline: Option<u64>,
) -> Result<()> {
    let old = match kind {
        RecordKind::Set => index
            .insert_with_deadline(key, pos, deadline)
            .map_err(|_| {
                KvsError::Io(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "the in-memory index is full (over 4 GiB of keys in one shard)",
                ))
            })?,
        RecordKind::Remove => {
            // A tombstone only matters until the next compaction.
            *stale.entry(pos.file).or_insert(0) += pos.len as u64;
            index.remove(key)
        }
        // Handled by the caller; never reaches here.
        RecordKind::Seal | RecordKind::Batch => None,
    };
    if let Some(old) = old {
        *stale.entry(old.file).or_insert(0) += old.len as u64;
    }
    Ok(())
}

/// Whether every byte of the file from `from` to `to` is zero.
fn all_zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_grouped_by_bucket_and_keep_their_order_within_a_group() {
        use super::super::hint::{Encoder, Entry, HintHeader, HEADER_LEN, TRAILER_LEN};
        let header = HintHeader {
            log_version: Version::V2,
            id: 1,
            sealed_len: u64::MAX,
            fingerprint: 0,
            identity: FileIdentity::default(),
        };
        let mut enc = Encoder::new(Vec::new(), &header).unwrap();
        let keys: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| format!("k{}", i % 700).into_bytes())
            .collect();
        for (i, key) in keys.iter().enumerate() {
            enc.entry(&Entry {
                kind: RecordKind::Set,
                key,
                offset: 8 + 10 * i as u32,
                len: 10,
                deadline: (i % 3 == 0).then_some(i as u64),
            })
            .unwrap();
        }
        let bytes = enc.finish().unwrap();
        let chunk = &bytes[HEADER_LEN..bytes.len() - TRAILER_LEN];
        let hash = |key: &[u8]| crc32fast::hash(key) as u64 * 0x9e37_79b9;
        // Every other group left out, as if another thread's.
        let mine = |entry: &hint::Entry<'_>| Some(hash(entry.key)).filter(|h| h % 7 != 0);
        for bucket_bits in [1, 5, 11, 16, 20, 25, 32] {
            let mut out = Vec::new();
            by_buckets(chunk, &mut out, bucket_bits, &mine);
            let shift = bucket_bits - group_bits(bucket_bits);
            let group_of = |h: u64| (h >> shift) & ((1 << group_bits(bucket_bits)) - 1);
            let mut got = Vec::new();
            let mut at = 0;
            while let Some((entry, next)) = hint::entry_at(&out, at) {
                got.push((group_of(hash(entry.key)), entry.offset, entry.deadline));
                at = next;
            }
            assert_eq!(at, out.len());
            let mut expected = Vec::new();
            let mut at = 0;
            while let Some((entry, next)) = hint::entry_at(chunk, at) {
                if let Some(h) = mine(&entry) {
                    expected.push((group_of(h), entry.offset, entry.deadline));
                }
                at = next;
            }
            // The standard library's stable sort, as the reference.
            expected.sort_by_key(|&(group, _, _)| group);
            assert_eq!(got, expected, "{bucket_bits} bits");
        }
        assert_eq!(chunk_end(chunk, 0), chunk.len());
    }

    #[test]
    fn bucket_bits_follow_the_table_the_index_reserves() {
        // 1M keys over 32 shards: 35,156 a shard with the eighth, 40,178 buckets at 7/8, so a
        // table of 65,536 buckets.
        assert_eq!(bucket_bits(1_000_000, 32), 16);
        assert_eq!(bucket_bits(10_000_000, 32), 19);
        assert_eq!(bucket_bits(0, 32), 1);
    }
}
