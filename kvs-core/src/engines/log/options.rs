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

/// The default of [`KvStoreOptions::sweep_interval`].
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The default of [`KvStoreOptions::compaction_step_records`]: 131,072 records, 3 MiB of
/// moves held by a compaction step.
pub const DEFAULT_COMPACTION_STEP_RECORDS: usize = 1 << 17;

/// Settings of a [`KvStore`](super::KvStore).
#[derive(Debug, Clone)]
pub struct KvStoreOptions {
    pub(super) sync: SyncPolicy,
    pub(super) recovery: RecoveryMode,
    pub(super) compaction_min_stale: u64,
    pub(super) max_file_bytes: u64,
    pub(super) lock_wait: Duration,
    pub(super) read_only: bool,
    pub(super) sweep_interval: Duration,
    pub(super) write_hints: bool,
    pub(super) compaction_step_records: usize,
}

impl Default for KvStoreOptions {
    fn default() -> Self {
        KvStoreOptions {
            sync: SyncPolicy::Os,
            recovery: RecoveryMode::TolerateTornTail,
            compaction_min_stale: 4 << 20,
            max_file_bytes: MAX_FILE_BYTES,
            lock_wait: data_dir::DEFAULT_LOCK_WAIT,
            read_only: false,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            write_hints: true,
            compaction_step_records: DEFAULT_COMPACTION_STEP_RECORDS,
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

    /// How many live records one step of a compaction copies before it commits, switches
    /// the index for them and deletes the files it has read to the end (default 131,072;
    /// 0 counts as 1). Compaction holds 24 bytes of
    /// memory per record of a step, whatever the size of the store; smaller steps commit
    /// more often (a manifest write each, under the writer lock for as long as a file
    /// rotation takes) and leave smaller output files.
    pub fn compaction_step_records(mut self, records: usize) -> Self {
        self.compaction_step_records = records;
        self
    }

    /// The size at which writes move on to a new log file (default and maximum 1 GiB, minimum
    /// 4 KiB). Compaction writes files of the same size.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// How often the sweeper removes expired keys from the index (default 100 ms; see
    /// [`KvStore::sweep_expired`](super::KvStore::sweep_expired)). Expired keys are hidden
    /// from every read whatever this is; it sets how soon their records count as stale, for
    /// compaction to reclaim.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Whether closed log files get hint files written in the background (default `true`;
    /// see `docs/RELIABILITY.md`, "What hints may and may not do"). With `false` the store
    /// writes no hint and does not seal its active file on close for one; open still loads
    /// the hints that match their files and replays the others. For a process that must not
    /// have a thread opening files behind its back (descriptor or file-size limits it
    /// manages itself), at the price of slower opens.
    pub fn write_hints(mut self, write: bool) -> Self {
        self.write_hints = write;
        self
    }

    /// How long open waits for another handle to release the directory (default 2 s).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Opens the store read-only (default `false`): for a store on read-only media, or a
    /// process that only reads. Open then writes nothing at all: no `engine` file, no
    /// `MANIFEST`, no `LOCK` file if there is none; a torn or zero tail of the newest log file
    /// is left in place (the records before it are served, with a warning), leftovers of an
    /// interrupted compaction are left alone, and no compaction thread runs. Every write
    /// (`set`, `remove`, `set_many`, `compact`) fails with [`KvsError::InvalidArgument`]
    /// (`flush` does nothing).
    ///
    /// Open takes a *shared* lock on the directory's `LOCK` file: any number of read-only
    /// handles, in any processes, coexist, and a writer is kept out while they are open (and
    /// they while a writer is). A directory without a `LOCK` file is opened without a lock,
    /// with a warning. The log must not change while it is open read-only: kvs has no way to
    /// follow another process's writes.
    ///
    /// Fails if the directory does not exist or holds no kvs store, or if a compaction was
    /// interrupted after it committed (finishing it needs a rename: open the store once
    /// read-write).
    ///
    /// [`KvsError::InvalidArgument`]: crate::KvsError::InvalidArgument
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Whether [`read_only`](KvStoreOptions::read_only) is set.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Like [`max_file_size`](KvStoreOptions::max_file_size), but a size outside 4 KiB to
    /// 1 GiB fails with [`KvsError::InvalidArgument`] instead of being brought into the range:
    /// for values that come from users (the C and Python bindings).
    ///
    /// [`KvsError::InvalidArgument`]: crate::KvsError::InvalidArgument
    pub fn try_max_file_size(self, bytes: u64) -> crate::Result<Self> {
        if !(MIN_FILE_BYTES..=MAX_FILE_BYTES).contains(&bytes) {
            return Err(crate::KvsError::InvalidArgument(format!(
                "max_file_size {bytes} is out of range: it must be between {MIN_FILE_BYTES} \
                 (4 KiB) and {MAX_FILE_BYTES} (1 GiB)"
            )));
        }
        Ok(self.max_file_size(bytes))
    }
}

/// The smallest file size [`KvStoreOptions::max_file_size`] takes.
const MIN_FILE_BYTES: u64 = 4096;
