//! The settings of a [`KvStore`](super::KvStore).

use std::time::Duration;

use super::writer::MAX_FILE_BYTES;
use crate::data_dir;

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// A write returns once it is in the operating system (`write(2)`): it survives a crash or
    /// `kill -9` of the process, but not a power loss or kernel crash. The default.
    #[default]
    Os,
    /// A write returns once it is on disk (`fdatasync(2)` after every write): it also survives
    /// power loss. Much slower.
    Always,
}

/// What open does with a damaged record at the end of the newest log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut off a torn or garbage tail (what a crash mid-write leaves) with a warning. Damage
    /// anywhere else still fails the open. The default.
    #[default]
    TolerateTornTail,
    /// Refuse to open on any damaged record, tail included; change nothing on disk. (Zeros
    /// after the last record of the newest file are not damage: with [`SyncPolicy::Always`]
    /// the file is extended ahead of its records, and after a crash the zeros are still
    /// there. They are cut off in either mode.)
    Strict,
}

/// Settings of a [`KvStore`](super::KvStore).
#[derive(Debug, Clone)]
pub struct KvStoreOptions {
    pub(super) sync: SyncPolicy,
    pub(super) recovery: RecoveryMode,
    pub(super) compaction_min_stale: u64,
    pub(super) max_file_bytes: u64,
    pub(super) lock_wait: Duration,
}

impl Default for KvStoreOptions {
    fn default() -> Self {
        KvStoreOptions {
            sync: SyncPolicy::Os,
            recovery: RecoveryMode::TolerateTornTail,
            compaction_min_stale: 4 << 20,
            max_file_bytes: MAX_FILE_BYTES,
            lock_wait: data_dir::DEFAULT_LOCK_WAIT,
        }
    }
}

impl KvStoreOptions {
    /// When a write counts as done (default [`SyncPolicy::Os`]).
    pub fn sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// What to do with a damaged tail on open (default [`RecoveryMode::TolerateTornTail`]).
    pub fn recovery(mut self, recovery: RecoveryMode) -> Self {
        self.recovery = recovery;
        self
    }

    /// Compaction starts once at least this many bytes are stale *and* they are at least half
    /// of the log (default 4 MiB).
    pub fn compaction_min_stale(mut self, bytes: u64) -> Self {
        self.compaction_min_stale = bytes;
        self
    }

    /// The size at which writes move on to a new log file (default and maximum 1 GiB, minimum
    /// 4 KiB). Compaction writes files of the same size.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// How long open waits for another handle to release the directory (default 2 s).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }
}
