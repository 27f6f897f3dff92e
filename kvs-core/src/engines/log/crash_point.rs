//! Named points where a test can make the process die, to check recovery from exactly there.
//!
//! Built only with the `crash-points` cargo feature (off by default; kvs-core's own tests turn
//! it on). A test process sets `KVS_CRASH_AT=<point>` or `KVS_CRASH_AT=<point>:<n>`; the `n`th
//! time (default: first) that point is reached, the process aborts on the spot: no destructor
//! runs, no buffer is flushed, exactly as if it had been killed there.
//!
//! The points:
//! - `write:mid-record`: half of a record has been written to the log.
//! - `write:before-return`: a whole record has been written, the call has not returned.
//! - `rotate:sealed`: the active file is sealed and synced; the next one is not created.
//! - `rotate:created`: the next file is created with its header; the manifest does not list
//!   it yet.
//! - `rotate:manifest-written`: the manifest lists the next file as active; no write has gone
//!   to it. (Compaction starts with a rotation, so these are also reached there.)
//! - `hint:entries-written`: the hinter (see `hint.rs`) has written every entry of a hint to
//!   `<id>.hint.tmp`, not its trailer; it is neither synced nor renamed.
//! - Compaction goes in steps (see `compaction.rs`); each step reaches these, in order:
//!   - `compaction:output-written`: an output file of the step is written, not yet synced.
//!   - `compaction:output-synced`: the step's outputs are synced; the manifest does not list
//!     them yet.
//!   - `compaction:manifest-written`: the step's commit point: the manifest lists its outputs
//!     as closed and the old files it read to the end as obsolete; the outputs are still
//!     `.compacting`.
//!   - `compaction:committed`: renamed and the directory synced; the index is not switched
//!     and none of the step's old files is deleted.
//!   - `compaction:deleted-one`: the oldest old file of the step is deleted, the others are
//!     not.
//!   - `compaction:step-done`: the step's old files are deleted; the next step is not
//!     started.
//! - `compaction:done`: every step is done, every old file deleted.
//! - `sled-migration:chunk-committed` (the sled engine): one chunk of the migration of a
//!   store of release 0.1.0 is committed and flushed; the next chunk is not started.

/// Whether the process should die at `point` now. Always `false` without the feature.
#[cfg(feature = "crash-points")]
pub fn armed(point: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var("KVS_CRASH_AT").ok()?;
        match spec.rsplit_once(':') {
            Some((name, n)) if n.parse::<u64>().is_ok() => {
                Some((name.to_string(), n.parse().unwrap_or(1)))
            }
            _ => Some((spec, 1)),
        }
    });
    match target {
        Some((name, n)) if name == point => HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        _ => false,
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn armed(_point: &str) -> bool {
    false
}

/// Dies here if the test asked for it.
#[inline(always)]
pub fn hit(point: &str) {
    if armed(point) {
        die(point);
    }
}

/// Aborts the process, as a kill would.
pub fn die(point: &str) -> ! {
    eprintln!("kvs: crash point {point} reached; aborting");
    std::process::abort()
}
