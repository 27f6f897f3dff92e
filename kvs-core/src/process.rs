//! Which process a handle belongs to: the fork guard of stores and clients.
//!
//! A store handle (and a client's connection) is state of the process that opened it: the
//! writer's idea of where the log ends, the in-memory index, the compaction thread, the
//! directory lock, the TCP stream. After `fork()` the child has a copy of that memory and the
//! same open file descriptions, but not the threads; if both processes went on writing through
//! the one handle, their records would interleave in the same log and acknowledged writes
//! would be lost. So a handle records the process it was opened in, and every operation fails
//! with [`KvsError::Forked`] in any other process.
//!
//! # How a handle knows it was inherited, for one atomic load
//!
//! `getpid()` is a real system call in current glibc (the pid is no longer cached), too dear
//! for every `get`. Instead a process-wide *fork generation* counts the forks this process
//! descends from: a `pthread_atfork` child handler, registered once (the first time a store or
//! client is opened), increments it in every child. A handle records the generation at open;
//! an operation compares it with the current one.
//!
//! Why a `Relaxed` load is enough: the child handler runs in the child, on the thread that
//! called `fork()`, before `fork()` returns there, and that thread is the only one the child
//! has. Any later operation in the child runs on that thread or on a thread it started
//! afterwards (thread creation synchronizes), so it sees the incremented value. In the parent
//! the value never changes. The counter only ever grows, so a grandchild never matches its
//! grandparent's handle either.
//!
//! The limit: a child made without libc's `fork()` (a raw `clone` or `syscall(SYS_fork)`,
//! which some sandboxes and runtimes use) runs no atfork handler, so operations in it are not
//! refused. [`ProcessGuard::is_inherited`], which decides whether dropping a handle may touch
//! files, compares the pid as well and so also catches those children.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};

use crate::{KvsError, Result};

/// How many forks separate this process from the first one that loaded kvs.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER_ATFORK: Once = Once::new();

/// Runs in every child of `fork()`, before `fork()` returns there. Only an atomic increment:
/// a child handler of a multi-threaded process may do nothing that takes a lock.
extern "C" fn count_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn register_atfork() {
    REGISTER_ATFORK.call_once(|| {
        // SAFETY: `count_fork_in_child` is an `extern "C" fn()` that lives as long as the
        // program (handlers cannot be unregistered, and this one never needs to be), touches
        // only an atomic, and cannot unwind. NULL prepare/parent handlers are allowed.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
        if rc != 0 {
            // Only ENOMEM is documented. Without the handler, handles cannot see forks:
            // say so rather than fail every open of a store.
            log::error!(
                "pthread_atfork failed ({}): kvs cannot detect a store used after fork()",
                std::io::Error::from_raw_os_error(rc)
            );
        }
    });
}

/// The process a handle was opened in: its pid (for messages, and for drop) and the fork
/// generation at the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessGuard {
    pid: u32,
    generation: u64,
    /// What the handle is, for the error: [`STORE`], [`CLIENT`] or [`SLED_ENGINE`].
    handle: &'static str,
}

/// [`KvsError::Forked`]'s `handle` for a store (`KvStore`, `SledKvsEngine`, `AnyEngine`).
pub(crate) const STORE: &str = "store";
/// [`KvsError::Forked`]'s `handle` for a `KvsClient`.
pub(crate) const CLIENT: &str = "client";
/// [`KvsError::Forked`]'s `handle` for sled itself (see [`check_sled_usable`]).
pub(crate) const SLED_ENGINE: &str = "sled engine";

/// The process that first started sled (opened a sled database through kvs).
static SLED_STARTED: OnceLock<ProcessGuard> = OnceLock::new();

/// Records that this process runs sled: call when a sled database is open.
pub(crate) fn sled_started() {
    SLED_STARTED.get_or_init(|| ProcessGuard::current(SLED_ENGINE));
}

/// Fails with [`KvsError::Forked`] in a child of a process that had started sled.
///
/// sled 0.34 runs its work on a process-wide pool of background threads, counted in
/// statics; `fork()` copies the counts but not the threads, so in such a child `sled::open`
/// queues work that no thread ever runs and hangs for good. A child can only use sled in a
/// fresh process (spawned, not forked).
pub(crate) fn check_sled_usable() -> Result<()> {
    SLED_STARTED.get().map_or(Ok(()), ProcessGuard::check)
}

impl ProcessGuard {
    /// The calling process, for a handle of kind `handle` ([`STORE`] or [`CLIENT`]).
    /// Registers the fork handler on first use, before reading the generation, so that no
    /// fork after this call can go unseen.
    pub(crate) fn current(handle: &'static str) -> ProcessGuard {
        register_atfork();
        ProcessGuard {
            pid: std::process::id(),
            generation: FORK_GENERATION.load(Ordering::Relaxed),
            handle,
        }
    }

    /// Fails with [`KvsError::Forked`] when called in a child of the process that made this
    /// guard. One relaxed atomic load; no system call.
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        if FORK_GENERATION.load(Ordering::Relaxed) == self.generation {
            Ok(())
        } else {
            Err(self.forked())
        }
    }

    /// Whether this is not the process that made the guard: a child of `fork()`, or of a raw
    /// `clone` that skipped the fork handler (the pid tells; one system call, for drops only).
    pub(crate) fn is_inherited(&self) -> bool {
        FORK_GENERATION.load(Ordering::Relaxed) != self.generation || std::process::id() != self.pid
    }

    fn forked(&self) -> KvsError {
        KvsError::Forked {
            opened_by: self.pid,
            handle: self.handle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ProcessGuard, CLIENT, SLED_ENGINE, STORE};

    #[test]
    fn a_guard_passes_in_its_own_process() {
        let guard = ProcessGuard::current(STORE);
        assert!(guard.check().is_ok());
        assert!(!guard.is_inherited());
        assert_eq!(guard.pid, std::process::id());
    }

    #[test]
    fn the_error_names_the_opening_process_and_the_remedy() {
        let forked = |handle| {
            ProcessGuard {
                pid: 1234,
                generation: 0,
                handle,
            }
            .forked()
            .to_string()
        };
        assert_eq!(
            forked(STORE),
            "this store was opened by process 1234; a store handle does not survive fork(): \
             open the store again in this process"
        );
        assert_eq!(
            forked(CLIENT),
            "this client was connected by process 1234; a client connection does not survive \
             fork(): connect again in this process"
        );
        assert_eq!(
            forked(SLED_ENGINE),
            "this process is a fork() child of process 1234, which runs the sled engine: \
             sled's background threads do not survive fork(), so no sled store can be opened \
             here; open it in a fresh process instead"
        );
    }
}
