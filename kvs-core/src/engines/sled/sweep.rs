//! The active sweep of a `SledKvsEngine`: a background thread that removes keys whose deadline
//! has passed, found through the `kvs-expiry` tree (ordered by deadline) without reading every
//! key.
//!
//! Reads never depend on it (every read hides an expired record at once); it frees the space
//! of keys nobody reads again. Each round reads the entries due by now, at most
//! [`SWEEP_CHUNK`] at a time, and for each one, in one transaction over both trees, removes
//! the record if its own deadline is the entry's (the record decides: a stale entry, which a
//! crash can leave behind, is only dropped). Its removals are not flushed: one
//! lost in a crash leaves an expired record, hidden, and its entry, swept again.
//!
//! The thread is started by the engine's constructor and stopped (and joined) when the last
//! clone of the handle drops in the process that opened it. In a child of `fork()` the thread
//! does not exist: the handle there leaks it untouched, as it leaks the database.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::layout::{self, transaction_error};
use crate::{is_expired, now_millis, KvsError, Result};

/// How often the sweep looks for due keys (Redis's active expiry runs 10 times a second).
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// How many due entries one transaction of the sweep handles: the transaction holds sled's
/// process-wide write lock, so every read of the process waits for it.
pub(crate) const SWEEP_CHUNK: usize = 256;

/// The sweep thread; stop it with [`Sweeper::stop`].
pub(crate) struct Sweeper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Sweeper {
    /// Starts the sweep of `data` and `expiry`. It holds `locks` (the engine's write lock,
    /// then its mutation lock) shared while it removes, as every write of the engine does (a
    /// checkpoint holds the first exclusively, `get_many_bytes` the second).
    pub(crate) fn start(
        data: sled::Tree,
        expiry: sled::Tree,
        locks: [Arc<RwLock<()>>; 2],
        sled_dir: Option<Arc<Path>>,
    ) -> Result<Sweeper> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kvs-sled-sweep".into())
            .spawn(move || loop {
                match stopped.recv_timeout(SWEEP_INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let sweep = || {
                    let [writes, mutations] = &locks;
                    let _write = writes.read().unwrap_or_else(|p| p.into_inner());
                    let _mutation = mutations.read().unwrap_or_else(|p| p.into_inner());
                    sweep_due(&data, &expiry, now_millis(), sled_dir.as_deref())
                };
                // Chunk after chunk while entries are due, checking for a stop in between.
                loop {
                    match sweep() {
                        Ok(n) if n == SWEEP_CHUNK => match stopped.try_recv() {
                            Err(mpsc::TryRecvError::Empty) => continue,
                            _ => return,
                        },
                        Ok(_) => break,
                        Err(e) => {
                            log::warn!("the sweep of expired keys failed, retrying later: {e}");
                            break;
                        }
                    }
                }
            })
            .map_err(KvsError::Io)?;
        Ok(Sweeper { stop, thread })
    }

    /// Stops the thread and waits for it (at most the end of the chunk it is on).
    pub(crate) fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            log::error!("the sweep of expired keys panicked");
        }
    }
}

/// Handles up to [`SWEEP_CHUNK`] entries of `expiry` due at `now`; returns how many it read.
pub(crate) fn sweep_due(
    data: &sled::Tree,
    expiry: &sled::Tree,
    now: u64,
    sled_dir: Option<&Path>,
) -> Result<usize> {
    let err = |e| super::to_kvs_error(e, sled_dir);
    // Entries due at `now` are those whose deadline is at most `now`: all before `now + 1`.
    let due: Vec<sled::IVec> = match now.checked_add(1) {
        Some(end) => expiry.range(..end.to_be_bytes()),
        None => expiry.iter(),
    }
    .keys()
    .take(SWEEP_CHUNK)
    .collect::<std::result::Result<_, _>>()
    .map_err(err)?;
    if due.is_empty() {
        return Ok(0);
    }
    (data, expiry)
        .transaction(|(data, expiry)| {
            for entry in &due {
                expiry.remove(entry)?;
                let Some((deadline, key)) = layout::split_expiry_entry(entry) else {
                    continue;
                };
                let Some(raw) = data.get(key)? else {
                    continue;
                };
                // A damaged record is left for a read to report; only its entry goes.
                let expired = layout::decode(&raw, key, sled_dir)
                    .is_ok_and(|r| r.deadline == Some(deadline) && is_expired(deadline, now));
                if expired {
                    data.remove(key)?;
                }
            }
            Ok::<_, ConflictableTransactionError<KvsError>>(())
        })
        .map_err(|e| transaction_error(e, sled_dir))?;
    Ok(due.len())
}
