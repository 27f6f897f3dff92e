//! What RESP connections of one server share: counters for `INFO`, and the key locks that make
//! `SET NX`/`XX`/`GET` check-then-set steps atomic among RESP clients.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Number of key-lock stripes. Writers of different keys rarely share one: with a worker per
/// core, a few dozen stripes make a collision rare and cost under 4 KiB.
const STRIPES: usize = 64;

/// State shared by every connection of one server.
#[derive(Debug)]
pub struct ServerState {
    started: Instant,
    port: u16,
    connections_received: AtomicU64,
    connected: AtomicUsize,
    commands: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    next_id: AtomicU64,
    locks: KeyLocks,
}

impl ServerState {
    /// State for a server listening on `port` (shown by `INFO`).
    pub fn new(port: u16) -> ServerState {
        ServerState {
            started: Instant::now(),
            port,
            connections_received: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            commands: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            locks: KeyLocks::new(),
        }
    }

    /// A connection (of either protocol) was accepted.
    pub fn connection_opened(&self) {
        self.connections_received.fetch_add(1, Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// A number for a new RESP connection, unique within the server (from 1).
    pub fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A connection (of either protocol) was closed.
    pub fn connection_closed(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn command_processed(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lookup(&self, found: bool) {
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.locks.lock(key)
    }

    /// The key locks of several keys at once (a batch of SETs).
    pub(crate) fn lock_many<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Vec<MutexGuard<'_, ()>> {
        self.locks.lock_many(keys)
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            uptime_secs: self.started.elapsed().as_secs(),
            port: self.port,
            connections_received: self.connections_received.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`ServerState`]'s counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) uptime_secs: u64,
    pub(crate) port: u16,
    pub(crate) connections_received: u64,
    pub(crate) connected: usize,
    pub(crate) commands: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

/// Striped locks over keys. Every RESP write of a key holds its stripe while it checks and
/// writes, so `SET k v NX` cannot interleave with another RESP client's `SET k`, `DEL k` or
/// `SET k NX`. Writes through the kvs protocol or the library do not take these locks: the
/// engine has no compare-and-set for them to share.
#[derive(Debug)]
struct KeyLocks {
    hasher: hashbrown::DefaultHashBuilder,
    stripes: Vec<Mutex<()>>,
}

impl KeyLocks {
    fn new() -> KeyLocks {
        KeyLocks {
            hasher: hashbrown::DefaultHashBuilder::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the stripes of every key, in ascending stripe order. Everyone else holds at most
    /// one stripe at a time, so this order is enough to rule out deadlock.
    fn lock_many<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .map(|key| self.hasher.hash_one(key) as usize % STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|stripe| {
                self.stripes[stripe]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect()
    }

    fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one(key) as usize % STRIPES;
        // The lock guards no data, so a panic while it was held left nothing half-done.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
