//! What every connection of one server shares, whichever protocol it speaks: the counters that
//! `INFO` shows (connections, commands, key hits and misses, uptime, port) and the numbering
//! of RESP clients.
//!
//! The server makes one [`ServerState`] when it starts serving and hands it to every worker,
//! which updates the connection counts as it accepts and closes connections, and passes it to
//! each RESP session. It lives here, with the server, because its lifetime and its sharing are
//! the server's: one per [`KvsServer::serve`](crate::KvsServer::serve), across all workers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

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
        }
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
