//! What every connection of one server shares, whichever protocol it speaks: the counters that
//! `INFO` shows (connections, commands, key hits and misses, uptime, port), the numbering
//! of RESP clients and the registry of those open (`CLIENT LIST`, `CLIENT KILL`), the node ID
//! `CLUSTER` shows in emulated cluster mode, the password clients must give, the settings
//! `CONFIG GET` shows, when the engine was last flushed (`LASTSAVE`), and the handle that
//! `SHUTDOWN` stops the server with.
//!
//! The server makes one [`ServerState`] when it starts serving and hands it to every worker,
//! which updates the connection counts as it accepts and closes connections, and passes it to
//! each RESP session. It lives here, with the server, because its lifetime and its sharing are
//! the server's: one per [`KvsServer::serve`](crate::KvsServer::serve), across all workers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{ClusterMode, Secret, ShutdownHandle};

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
    /// A random ID for `INFO`'s `run_id`.
    run_id: String,
    /// The password clients must give (`AUTH`, `HELLO ... AUTH`, the kvs protocol's `Auth`)
    /// before anything else, if any.
    password: Option<Secret>,
    /// Stops the server (`SHUTDOWN`), once it serves.
    shutdown: Option<ShutdownHandle>,
    /// The settings `CONFIG GET` shows.
    settings: Settings,
    /// When the engine was last flushed to disk (`SAVE`, `LASTSAVE`), in seconds since the
    /// Unix epoch; the start of the server before the first one.
    last_save: AtomicU64,
    /// Every RESP connection open now (`CLIENT LIST`, `CLIENT KILL`), by id.
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
}

/// The server's settings as `CONFIG GET` shows them, in Redis's terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// The address it listens on, if known.
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) max_connections: usize,
    pub(crate) max_frame_len: usize,
}

/// What the server knows of one RESP connection, shared between its session and `CLIENT
/// LIST` or `CLIENT KILL` run by any other.
#[derive(Debug)]
pub(crate) struct ClientInfo {
    pub(crate) id: u64,
    /// The client's address and the server's, if known.
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) since: Instant,
    /// Set by `CLIENT KILL`: the worker serving the connection closes it.
    killed: AtomicBool,
    pub(crate) details: Mutex<ClientDetails>,
}

/// The parts of [`ClientInfo`] its connection changes as it goes.
#[derive(Debug, Clone)]
pub(crate) struct ClientDetails {
    /// `CLIENT SETNAME`, `HELLO ... SETNAME`.
    pub(crate) name: Option<String>,
    /// `CLIENT SETINFO LIB-NAME` and `LIB-VER`.
    pub(crate) lib_name: Option<String>,
    pub(crate) lib_ver: Option<String>,
    /// The last command carried out (`cmd=` of `CLIENT LIST`) and when.
    pub(crate) last_command: &'static str,
    pub(crate) last_active: Instant,
    /// 2 or 3.
    pub(crate) resp: u8,
    pub(crate) no_evict: bool,
    pub(crate) no_touch: bool,
}

impl ClientInfo {
    /// A connection numbered `id`, from `peer` to `local`.
    pub(crate) fn new(id: u64, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> ClientInfo {
        let now = Instant::now();
        ClientInfo {
            id,
            peer,
            local,
            since: now,
            killed: AtomicBool::new(false),
            details: Mutex::new(ClientDetails {
                name: None,
                lib_name: None,
                lib_ver: None,
                last_command: "NULL",
                last_active: now,
                resp: 2,
                no_evict: false,
                no_touch: false,
            }),
        }
    }

    /// Its details, to read or change.
    pub(crate) fn details(&self) -> std::sync::MutexGuard<'_, ClientDetails> {
        self.details.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the worker serving it to close the connection.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
    }

    /// Whether `CLIENT KILL` asked for the connection to be closed.
    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// A line of `CLIENT LIST` (and `CLIENT INFO`), with Redis's fields (those without a
    /// meaning in kvs at their neutral value), ending in `\n`.
    pub(crate) fn line(&self, now: Instant) -> String {
        let d = self.details();
        let addr = |a: Option<SocketAddr>| a.map_or_else(String::new, |a| a.to_string());
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 \
             ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
             omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} \
             lib-ver={}\n",
            self.id,
            addr(self.peer),
            addr(self.local),
            d.name.as_deref().unwrap_or(""),
            now.duration_since(self.since).as_secs(),
            now.duration_since(d.last_active).as_secs(),
            d.last_command,
            d.resp,
            d.lib_name.as_deref().unwrap_or(""),
            d.lib_ver.as_deref().unwrap_or(""),
        )
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
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
            run_id: random_node_id(),
            password: None,
            shutdown: None,
            settings: Settings::default(),
            last_save: AtomicU64::new(unix_now().as_secs()),
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    /// The same, requiring `password` of every client before anything else, if any.
    pub(crate) fn with_password(mut self, password: Option<Secret>) -> ServerState {
        self.password = password;
        self
    }

    /// The same, stopped by `handle` when a client says `SHUTDOWN`.
    pub(crate) fn with_shutdown(mut self, handle: ShutdownHandle) -> ServerState {
        self.shutdown = Some(handle);
        self
    }

    /// The same, showing `settings` to `CONFIG GET`.
    pub(crate) fn with_settings(mut self, settings: Settings) -> ServerState {
        self.settings = settings;
        self
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether clients must give a password before anything else.
    pub(crate) fn requires_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether `attempt` is the password (compared in constant time); `false` if there is
    /// none.
    pub(crate) fn password_matches(&self, attempt: &[u8]) -> bool {
        self.password.as_ref().is_some_and(|p| p.matches(attempt))
    }

    /// Asks the server to stop, as SIGTERM does. `false` if this state serves no server.
    pub(crate) fn shut_down(&self) -> bool {
        match &self.shutdown {
            Some(handle) => {
                handle.shutdown();
                true
            }
            None => false,
        }
    }

    /// The engine was flushed to disk now.
    pub(crate) fn saved(&self) {
        self.last_save
            .store(unix_now().as_secs(), Ordering::Relaxed);
    }

    /// When the engine was last flushed (see [`saved`](ServerState::saved)).
    pub(crate) fn last_save(&self) -> u64 {
        self.last_save.load(Ordering::Relaxed)
    }

    /// Records a RESP connection, for `CLIENT LIST` and `CLIENT KILL`.
    pub(crate) fn client_opened(&self, info: Arc<ClientInfo>) {
        self.client_map().insert(info.id, info);
    }

    /// Forgets the RESP connection numbered `id`.
    pub(crate) fn client_closed(&self, id: u64) {
        self.client_map().remove(&id);
    }

    /// Every RESP connection open, by id.
    pub(crate) fn clients(&self) -> Vec<Arc<ClientInfo>> {
        self.client_map().values().cloned().collect()
    }

    fn client_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientInfo>>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// The server's random ID (40 hex digits), as Redis's `run_id` and `master_replid`: the
    /// emulated cluster node's ID when there is one.
    pub(crate) fn run_id(&self) -> &str {
        self.cluster_node.as_deref().unwrap_or(&self.run_id)
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
