//! Group commit for [`SyncPolicy::Always`](super::SyncPolicy::Always).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::index::LogEnd;
use super::writer::log_path;
use super::Shared;
use crate::{KvsError, Result};

/// Group commit: with [`SyncPolicy::Always`](super::SyncPolicy::Always), a writer appends under the writer lock, lets
/// go of it, and then waits here until an fsync covers its record. The first waiter to find no
/// sync running becomes the leader: it syncs the active file up to its current end, which
/// covers every record appended so far, by any thread. While it syncs, other threads append
/// and queue up for the next sync. With 8 writers this turns 8 fsyncs into about 2.
///
/// A record becomes visible to readers when it is appended, a moment before it is durable;
/// the writer's call returns only once it is durable.
///
/// Appends copy records into the active file's writable map (see `writer.rs`); `fdatasync` of
/// the file writes back the pages dirtied through a shared map as it does those written with
/// `pwrite` (on Linux, `msync(MS_SYNC)` of a range is that same `fdatasync`), so no `msync` is
/// needed. The file is allocated ahead of its records, so most syncs have no change of size
/// or block allocation to commit.
///
/// Before it syncs, the leader yields to writers still arriving (see [`Shared::gather`]): on a
/// busy machine the writers a sync just released need a moment to be scheduled and append
/// again, and without it each sync covered the few that had. Measured with 8 writers
/// (`kvs-bench --profile durable --threads 8`, alternating runs on a shared 2-core machine):
/// 13.8k, 2.3k, 9.1k writes/s without, 16.9k, 9.3k, 22.8k with. Waiting for as many appends
/// as there were writers waiting when the last sync ended took a sync from 5.9 writes to 7.9
/// of 8.
///
/// Writers waiting for a sync under way yield the processor for up to [`SPIN_LIMIT`] before
/// they sleep, so the end of a sync reaches them without a futex wake-up each. With 8
/// writers that took 30.5k writes/s (mean of 6 runs) to 36.9k (5 runs), for about one more
/// core kept busy while they wait; a sync itself (`fdatasync` of 8 records) took about
/// 170 us of each sync's 220 us. With one writer nothing spins: nobody waits for a sync
/// another thread runs.
///
/// Each sync counts the appends (records or batches) it covered: [`Shared::sync_counts`]
/// gives the number of group-commit syncs and of appends they covered, so their ratio is the
/// mean group size.
#[derive(Default)]
pub(super) struct Durability {
    state: Mutex<SyncState>,
    synced: Condvar,
    /// Bumped, under the state's lock, at the end of every sync (and on failure): what
    /// waiters watch while they spin (see [`SPIN_LIMIT`]).
    done: AtomicU64,
}

#[derive(Default)]
struct SyncState {
    /// Every record up to this point is on disk. Files older than the active one are synced
    /// whole before writes leave them (`LogWriter::seal_active`).
    durable: LogEnd,
    /// How many appends `durable` covers (see `LogWriter::appends`).
    durable_appends: u64,
    leader_running: bool,
    failure: Option<String>,
    /// Group-commit syncs that succeeded, and the appends they covered between them.
    syncs: u64,
    synced_appends: u64,
    /// Writers inside [`Shared::wait_durable`] now, the leader included.
    waiting: usize,
    /// How many writers were waiting when the last sync ended: those it released and those
    /// that appended during it. The next leader expects as many appends (each writer has at
    /// most one append not yet durable) before it syncs.
    expected: usize,
}

impl Shared {
    /// Waits until every record up to `end` is on disk.
    pub(super) fn wait_durable(&self, end: LogEnd) -> Result<()> {
        let lock = || {
            self.durability
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        let mut state = lock();
        state.waiting += 1;
        let (mut state, result) = self.wait_durable_counted(state, end, lock);
        state.waiting -= 1;
        result
    }

    /// [`wait_durable`](Shared::wait_durable) once counted among the waiting writers:
    /// returns with the state locked again.
    fn wait_durable_counted<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, SyncState>,
        end: LogEnd,
        lock: impl Fn() -> std::sync::MutexGuard<'a, SyncState>,
    ) -> (std::sync::MutexGuard<'a, SyncState>, Result<()>) {
        loop {
            if let Some(reason) = &state.failure {
                let reason = reason.clone();
                return (state, Err(KvsError::Poisoned(reason)));
            }
            if state.durable >= end {
                return (state, Ok(()));
            }
            if state.leader_running {
                let seen = self.durability.done.load(Ordering::Acquire);
                drop(state);
                let started = Instant::now();
                while self.durability.done.load(Ordering::Acquire) == seen
                    && started.elapsed() < SPIN_LIMIT
                {
                    std::thread::yield_now();
                }
                state = lock();
                // `done` moves only under the lock, with a notification: unchanged now, the
                // wait cannot miss the end of the sync.
                if self.durability.done.load(Ordering::Acquire) == seen {
                    state = self
                        .durability
                        .synced
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                continue;
            }
            state.leader_running = true;
            let (expected, covered) = (state.expected, state.durable_appends);
            drop(state);
            self.gather(expected, covered);
            let ((active, upto), appends) = {
                let writer = self.lock_writer();
                (writer.sync_target(), writer.appends())
            };
            let result = active.sync_data();
            state = lock();
            state.leader_running = false;
            match result {
                Ok(()) => {
                    if upto > state.durable {
                        state.durable = upto;
                        state.syncs += 1;
                        state.synced_appends += appends.saturating_sub(state.durable_appends);
                        state.durable_appends = appends;
                    }
                    state.expected = state.waiting;
                }
                Err(e) => {
                    let reason = format!(
                        "fsync of {} failed: {e}",
                        log_path(&self.dir, upto.file).display()
                    );
                    self.lock_writer().poison(reason.clone());
                    state.failure = Some(reason);
                }
            }
            self.durability.done.fetch_add(1, Ordering::Release);
            self.durability.synced.notify_all();
        }
    }
}

/// How long a writer waiting for a sync under way yields the processor, watching for its
/// end, before it sleeps on the condition variable: about one fsync of the development
/// machine's disk. Sleeping at once cost each wait a futex wake-up and, on a virtual machine
/// with idle cores, the core's own wake-up: with 8 writers a sync took about 240 us from one
/// to the next, of which the `fdatasync` was about 170.
const SPIN_LIMIT: std::time::Duration = std::time::Duration::from_micros(250);

/// The most times a group-commit leader yields to writers still arriving before it syncs,
/// when it has no count of writers to expect (one writer, or the first sync).
const MAX_GATHER_YIELDS: usize = 8;

/// The longest a group-commit leader waits for the writers it expects: a fraction of an
/// fsync (150-250 us on the development machine's disk), so that one writer that stopped
/// writing costs the next sync little.
const GATHER_LIMIT: std::time::Duration = std::time::Duration::from_micros(60);

impl Shared {
    /// Before a leader syncs: lets writers that are about to append (woken by the last sync,
    /// or waiting for the writer lock) do so, so that this sync covers them too instead of
    /// the next one. `expected` writers were waiting when the last sync ended, and `covered`
    /// appends are durable: each of those writers that writes again appends once before it
    /// waits, so the leader yields the processor until `expected` appends are not yet
    /// durable, for at most [`GATHER_LIMIT`], and syncs as soon as they are. With no such
    /// count to go by (the first sync, or a lone writer) it yields as long as each yield saw
    /// new appends, at most [`MAX_GATHER_YIELDS`] times: a lone writer pays one yield, next
    /// to an fsync of a millisecond or more.
    ///
    /// Measured with 8 writers (`kvs-bench --profile durable --threads 8`, 2-core machine):
    /// the yields alone gave 5.9 appends per sync; waiting for the expected ones,
    /// [`DiskStats::synced_writes`](super::DiskStats::synced_writes) over `syncs` is close to 8.
    fn gather(&self, expected: usize, covered: u64) {
        let started = std::time::Instant::now();
        let mut seen = self.lock_writer().appends();
        if expected > 1 {
            while (seen.saturating_sub(covered) as usize) < expected {
                if started.elapsed() >= GATHER_LIMIT {
                    return;
                }
                std::thread::yield_now();
                seen = self.lock_writer().appends();
            }
            return;
        }
        for _ in 0..MAX_GATHER_YIELDS {
            std::thread::yield_now();
            let now = self.lock_writer().appends();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// How many group-commit syncs succeeded, and how many appends they covered between them.
    pub(super) fn sync_counts(&self) -> (u64, u64) {
        let state = self
            .durability
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (state.syncs, state.synced_appends)
    }
}
