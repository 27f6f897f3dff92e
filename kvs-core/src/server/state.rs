//! What every connection of one server shares, whichever protocol it speaks: the counters that
//! `INFO` shows (connections, commands, key hits and misses, uptime, port), the numbering
//! of RESP clients, and the node ID `CLUSTER` shows in emulated cluster mode.
//!
//! The server makes one [`ServerState`] when it starts serving and hands it to every worker,
//! which updates the connection counts as it accepts and closes connections, and passes it to
//! each RESP session. It lives here, with the server, because its lifetime and its sharing are
//! the server's: one per [`KvsServer::serve`](crate::KvsServer::serve), across all workers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::ClusterMode;

/// State shared by every connection of one server.
#[derive(Debug)]
pub(crate) struct ServerState {
    started: Instant,
    port: u16,
    connections_received: AtomicU64,
    connected: AtomicUsize,
    commands: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    next_id: AtomicU64,
    /// In [`ClusterMode::Emulated`], the node's ID (40 hex digits, as Redis's), else `None`.
    cluster_node: Option<String>,
}

impl ServerState {
    /// State for a server listening on `port` (shown by `INFO`).
    pub(crate) fn new(port: u16) -> ServerState {
        ServerState {
            started: Instant::now(),
            port,
            connections_received: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            commands: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            cluster_node: None,
        }
    }

    /// The same, answering `CLUSTER` as `mode` says; an emulated node gets a new random ID,
    /// as a Redis node does when it first starts.
    pub(crate) fn with_cluster_mode(mut self, mode: ClusterMode) -> ServerState {
        self.cluster_node = match mode {
            ClusterMode::Off => None,
            ClusterMode::Emulated => Some(random_node_id()),
        };
        self
    }

    /// The emulated cluster node's ID, if [`ClusterMode::Emulated`].
    pub(crate) fn cluster_node_id(&self) -> Option<&str> {
        self.cluster_node.as_deref()
    }

    /// A connection (of either protocol) was accepted.
    pub(crate) fn connection_opened(&self) {
        self.connections_received.fetch_add(1, Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// A number for a new RESP connection, unique within the server (from 1).
    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A connection (of either protocol) was closed.
    pub(crate) fn connection_closed(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn command_processed(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lookup(&self, found: bool) {
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
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

/// 40 random hex digits: three 64-bit hashes keyed by std's per-process random keys (each
/// [`RandomState`](std::collections::hash_map::RandomState) differs), of the time and the
/// process.
fn random_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut id = String::with_capacity(48);
    for round in 0u8..3 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(now);
        hasher.write_u32(std::process::id());
        hasher.write_u8(round);
        id += &format!("{:016x}", hasher.finish());
    }
    id.truncate(40);
    id
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
