//! The key locks of RESP: striped locks that make the check-then-set steps of `SET` with `NX`,
//! `XX` or `GET` atomic among RESP clients. One set serves a whole server; the server's shared
//! state holds it ([`ServerState::key_locks`](crate::server::state::ServerState::key_locks)).

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Number of key-lock stripes. Writers of different keys rarely share one: with a worker per
/// core, a few dozen stripes make a collision rare and cost under 4 KiB.
const STRIPES: usize = 64;

/// Striped locks over keys. Every RESP write of a key holds its stripe while it checks and
/// writes, so `SET k v NX` cannot interleave with another RESP client's `SET k`, `DEL k` or
/// `SET k NX`. Writes through the kvs protocol or the library do not take these locks: the
/// engine has no compare-and-set for them to share.
#[derive(Debug)]
pub(crate) struct KeyLocks {
    hasher: hashbrown::DefaultHashBuilder,
    stripes: Vec<Mutex<()>>,
}

impl KeyLocks {
    /// One unlocked lock per stripe.
    pub(crate) fn new() -> KeyLocks {
        KeyLocks {
            hasher: hashbrown::DefaultHashBuilder::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the stripes of every key, in ascending stripe order. Everyone else holds at most
    /// one stripe at a time, so this order is enough to rule out deadlock.
    pub(crate) fn lock_many<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Vec<MutexGuard<'_, ()>> {
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

    /// Locks the stripe of `key`.
    pub(crate) fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one(key) as usize % STRIPES;
        // The lock guards no data, so a panic while it was held left nothing half-done.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
