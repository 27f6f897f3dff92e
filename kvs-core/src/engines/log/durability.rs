//! Group commit for [`SyncPolicy::Always`](super::SyncPolicy::Always).

use std::sync::{Condvar, Mutex};

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
/// 13.8k, 2.3k, 9.1k writes/s without, 16.9k, 9.3k, 22.8k with.
///
/// Each sync counts the appends (records or batches) it covered: [`Shared::sync_counts`]
/// gives the number of group-commit syncs and of appends they covered, so their ratio is the
/// mean group size.
#[derive(Default)]
pub(super) struct Durability {
    state: Mutex<SyncState>,
    synced: Condvar,
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
        loop {
            if let Some(reason) = &state.failure {
                return Err(KvsError::Poisoned(reason.clone()));
            }
            if state.durable >= end {
                return Ok(());
            }
            if state.leader_running {
                state = self
                    .durability
                    .synced
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leader_running = true;
            drop(state);
            self.gather();
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
            self.durability.synced.notify_all();
        }
    }
}

/// The most times a group-commit leader yields to writers still arriving before it syncs.
const MAX_GATHER_YIELDS: usize = 8;

impl Shared {
    /// Before a leader syncs: lets writers that are about to append (woken by the last sync,
    /// or waiting for the writer lock) do so, so that this sync covers them too instead of
    /// the next one. Yields the processor as long as each yield saw new appends, at most
    /// [`MAX_GATHER_YIELDS`] times: a lone writer pays one yield, next to an fsync of a
    /// millisecond or more.
    fn gather(&self) {
        let mut seen = self.lock_writer().appends();
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
