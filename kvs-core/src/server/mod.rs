//! [`KvsServer`]: serves a [`KvsEngine`] over TCP.
//!
//! # Why this design
//!
//! The targets were: 1,000 idle connections must cost little and must not keep a new client
//! waiting; one slow or stalled client must not hold up anyone else; and a single client doing
//! requests back to back must not pay for handing each request to another thread (a cross-core
//! wake-up costs about 100 us on a small machine, several times the work of a request).
//!
//! - A thread per connection (the classic design: each connection served on a pool
//!   thread) ties a pool thread to every idle connection: 1,000 idle clients need 1,000
//!   threads, or starve everyone else.
//! - One event loop that hands each request to the pool keeps idle connections cheap, but
//!   every request then crosses threads twice: the wake-up the single-client target forbids.
//!
//! So the server runs a few *workers*, each an event loop (readiness-based I/O through `mio`:
//! epoll on Linux, kqueue on the BSDs and macOS) that owns a set of connections and carries
//! out their requests itself, on the thread that read them. The workers are long-running jobs
//! on the [`ThreadPool`], one per CPU by default ([`ServerConfig::workers`]). An accepting loop
//! on the thread that called [`KvsServer::run`] hands each new connection to the worker with
//! the fewest. Then:
//! - an idle connection is a socket in an epoll set and two empty buffers: no thread, no
//!   stack, and a worker never waits on it;
//! - sockets are non-blocking, so a client that sends slowly or does not read its replies
//!   never blocks a worker; a frame left half-sent, or replies left unread, for longer than
//!   [`ServerConfig::client_timeout`] get the connection closed;
//! - a request is answered by the thread the kernel woke for it, exactly as in a
//!   single-threaded event loop such as redis, while several workers use several cores.
//!
//! What a worker does not protect against is a slow *engine* call (an fsync with
//! `SyncPolicy::Always`, say): the other connections of that worker wait for it, as they would
//! for any request before theirs. Engine calls are short and the other workers go on.
//!
//! # Protocols
//!
//! Each connection speaks the kvs protocol ([`crate::protocol`]) or RESP, the Redis protocol
//! ([`crate::resp`]), told apart by its first byte; both go through the same workers, buffers,
//! limits and timeouts. A RESP connection buffers at most one incomplete command (its bulk
//! strings within the frame limit) plus one read.
//!
//! # Memory
//!
//! A connection buffers at most one incomplete request frame (at most
//! [`ServerConfig::max_frame_len`] plus one read) and stops reading, and so stops taking
//! requests, while more than [`OUTPUT_HIGH_WATER`] bytes of replies wait to be sent. Buffers
//! shrink back once drained, so an idle connection holds a few hundred bytes. The number of
//! connections is capped by [`ServerConfig::max_connections`].
//!
//! # Shutdown
//!
//! [`ShutdownHandle::shutdown`] (the `kvs-server` binary calls it on SIGINT and SIGTERM) stops
//! the accepting loop, then each worker stops reading, carries out the requests it has already
//! received in full and sends their replies, with the same back-pressure as when serving (a
//! connection's requests are carried out while less than [`OUTPUT_HIGH_WATER`] of its replies
//! wait). It waits at most [`ServerConfig::drain_timeout`] (1 s by default) for clients to
//! read them, then closes every connection: a client that sent many requests and reads none
//! of the replies, its socket buffers full, cannot hold up the shutdown. `run` then flushes the
//! engine and returns, so every write carried out, acknowledged or not, is kept.

mod connection;
mod metrics;
pub(crate) mod sniff;
pub(crate) mod state;
mod worker;

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::{Events, Interest, Poll, Token, Waker};

use self::sniff::MAX_KVS_FRAME_LEN;
use self::state::ServerState;
use self::worker::Worker;
use crate::protocol::DEFAULT_MAX_FRAME_LEN;
use crate::thread_pool::ThreadPool;
use crate::{KvsEngine, KvsError, Result};

pub use self::metrics::MetricsEndpoint;

/// Replies waiting to be sent beyond which a connection stops reading requests (256 KiB).
pub const OUTPUT_HIGH_WATER: usize = 256 << 10;

/// How long a shutdown waits, by default, for clients to read their last replies (1 s): see
/// [`ServerConfig::drain_timeout`].
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a server answers Redis Cluster's `CLUSTER` commands (see
/// [`ServerConfig::cluster_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterMode {
    /// `CLUSTER` answers as a Redis server without cluster support does (the default).
    #[default]
    Off,
    /// The server presents itself as a Redis Cluster of one node owning all 16384 hash
    /// slots, so that cluster-aware clients use it unchanged. No gossip, failover or slot
    /// migration: there is no other node.
    Emulated,
}

/// Settings of a [`KvsServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    max_frame_len: usize,
    workers: usize,
    client_timeout: Duration,
    max_connections: usize,
    drain_timeout: Duration,
    cluster_mode: ClusterMode,
    password: Option<Secret>,
}

/// A password, kept out of `Debug` output (and so out of logs), compared in constant time.
#[derive(Clone)]
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    /// Whether `attempt` is this password. The time taken depends only on the attempt's
    /// length, never on where it first differs or on the password's length, so that timing
    /// replies tells a client nothing about the password.
    pub(crate) fn matches(&self, attempt: &[u8]) -> bool {
        let secret = &self.0;
        // Lengths that differ make `diff` non-zero without a shortcut.
        let mut diff = u8::from(secret.len() != attempt.len());
        for (i, &byte) in attempt.iter().enumerate() {
            // An empty password is refused when configured, so `secret` is not empty; the
            // index wraps so that every byte of the attempt is compared with something.
            let expected = secret.get(i % secret.len().max(1)).copied().unwrap_or(0);
            diff |= std::hint::black_box(byte ^ expected);
        }
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            client_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            cluster_mode: ClusterMode::Off,
            password: None,
        }
    }
}

impl ServerConfig {
    /// The largest frame limit a server takes, in bytes (144 MiB - 1):
    /// [`max_frame_len`](ServerConfig::max_frame_len) caps its argument here.
    ///
    /// The server tells a kvs-protocol connection from a RESP one by its first byte, which for
    /// a kvs frame is the top byte of the frame's 4-byte big-endian length. Every length up to
    /// this one starts with 0x08 or less; a larger one could start with `\t` (0x09) or `\n`,
    /// as a blank or an empty line before a RESP command does, and be taken for RESP.
    pub const MAX_FRAME_LEN: usize = MAX_KVS_FRAME_LEN;

    /// The largest request or reply payload, in bytes (default
    /// [`DEFAULT_MAX_FRAME_LEN`], 32 MiB). A client
    /// announcing a larger request is disconnected; a value too large to send back is answered
    /// with an error. RESP requests have the same limit on their bulk strings.
    ///
    /// At most [`MAX_FRAME_LEN`](ServerConfig::MAX_FRAME_LEN) (144 MiB - 1): larger kvs
    /// frames could not be told apart from RESP requests.
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes.min(MAX_KVS_FRAME_LEN);
        self
    }

    /// How many event loops serve connections (default: one per CPU). Each runs as one
    /// long-running job on the server's thread pool, so the pool needs at least this many
    /// threads.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// How long a client may leave a request half-sent, or replies unread, before it is
    /// disconnected (default 30 s). Idle connections, with nothing half-done, are kept.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The most connections served at once (default 10,000); more are closed on arrival.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// How long a shutdown waits for clients to read the replies to the requests they sent
    /// before it (default 1 s). Clients that read get every reply
    /// well within it; the connections of clients that do not read are closed when it runs
    /// out, so such a client cannot hold up the shutdown (the client timeout does not apply
    /// then). Their requests that were carried out are in the engine, which is flushed.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Whether RESP clients see a Redis Cluster of one node (default [`ClusterMode::Off`]).
    /// In [`ClusterMode::Emulated`], `CLUSTER SLOTS`, `SHARDS`, `NODES`, `INFO`, `MYID` and
    /// `KEYSLOT` describe one node owning every hash slot, at the address each client
    /// connected to.
    pub fn cluster_mode(mut self, mode: ClusterMode) -> Self {
        self.cluster_mode = mode;
        self
    }

    /// A password every client must give before anything else (default: none). RESP clients
    /// give it with `AUTH [default] password` or `HELLO 3 AUTH default password`, and get
    /// `-NOAUTH Authentication required.` for other commands until then. It is compared in
    /// constant time, and never shown by `Debug`.
    ///
    /// An empty password is refused ([`KvsError::InvalidArgument`]): Redis would take it
    /// as "no password", a server that looks protected and is not.
    pub fn requirepass(mut self, password: impl Into<Vec<u8>>) -> Result<Self> {
        let password = password.into();
        if password.is_empty() {
            return Err(KvsError::InvalidArgument(
                "the password is empty: give a non-empty password, or none".to_string(),
            ));
        }
        self.password = Some(Secret(password));
        Ok(self)
    }

    /// Whether clients must give a password ([`requirepass`](ServerConfig::requirepass)).
    pub fn requires_password(&self) -> bool {
        self.password.is_some()
    }
}

/// Stops a running [`KvsServer`]. Cheap to clone; usable from any thread.
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownState>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("requested", &self.is_shutdown())
            .finish()
    }
}

#[derive(Default)]
struct ShutdownState {
    requested: AtomicBool,
    /// The wakers of the accepting loop and of every worker.
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl ShutdownHandle {
    /// Asks the server to stop: it stops accepting, finishes the requests it has received,
    /// flushes the engine, and [`KvsServer::run`] returns. Returns at once; calling it again,
    /// or before `run`, is fine.
    pub fn shutdown(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        let wakers = self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for waker in wakers.iter() {
            if let Err(e) = waker.wake() {
                log::error!("cannot wake a server thread for shutdown: {e}");
            }
        }
    }

    /// Whether shutdown has been asked for.
    pub fn is_shutdown(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    fn add_waker(&self, waker: Arc<Waker>) {
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(waker);
    }
}

/// A TCP server for a [`KvsEngine`], running its connections on a [`ThreadPool`].
///
/// ```no_run
/// use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};
/// use kvs::{KvStore, KvsServer};
///
/// # fn main() -> kvs::Result<()> {
/// let engine = KvStore::open("data")?;
/// let server = KvsServer::new(engine, SharedQueueThreadPool::new(2)?);
/// let stop = server.shutdown_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(60));
///     stop.shutdown();
/// });
/// server.run("127.0.0.1:4000")?; // returns after shutdown
/// # Ok(()) }
/// ```
pub struct KvsServer<E: KvsEngine, P: ThreadPool> {
    engine: E,
    pool: P,
    config: ServerConfig,
    shutdown: ShutdownHandle,
    /// Where the metrics are served over HTTP, if anywhere.
    metrics: Option<MetricsEndpoint>,
}

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);

/// What the accepting loop knows of a worker.
struct WorkerSlot {
    sender: Sender<mio::net::TcpStream>,
    waker: Arc<Waker>,
    /// Set when its job starts, cleared when it ends (even by a panic).
    running: AtomicBool,
    connections: Arc<AtomicUsize>,
}

impl<E: KvsEngine, P: ThreadPool> KvsServer<E, P> {
    /// A server for `engine`, with default settings.
    pub fn new(engine: E, pool: P) -> KvsServer<E, P> {
        KvsServer::with_config(engine, pool, ServerConfig::default())
    }

    /// A server for `engine`, with `config`.
    pub fn with_config(engine: E, pool: P, config: ServerConfig) -> KvsServer<E, P> {
        KvsServer {
            engine,
            pool,
            config,
            shutdown: ShutdownHandle::default(),
            metrics: None,
        }
    }

    /// The same, also serving its figures (those `INFO` shows) as Prometheus metrics at
    /// `GET /metrics` on `endpoint`, on a thread of its own, from the start of
    /// [`serve`](KvsServer::serve) until it returns (see [`MetricsEndpoint`]).
    pub fn with_metrics(mut self, endpoint: MetricsEndpoint) -> KvsServer<E, P> {
        self.metrics = Some(endpoint);
        self
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Binds `addr` and serves until shut down (see [`serve`](KvsServer::serve)).
    pub fn run(self, addr: impl ToSocketAddrs) -> Result<()> {
        let listener = TcpListener::bind(addr)?;
        self.serve(listener)
    }

    /// Serves connections from `listener` until [`ShutdownHandle::shutdown`], then finishes the
    /// requests in flight, flushes the engine and returns. Binding the listener yourself lets
    /// you bind port 0 and learn the port before serving.
    pub fn serve(mut self, listener: TcpListener) -> Result<()> {
        listener.set_nonblocking(true)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        self.shutdown
            .add_waker(Arc::new(Waker::new(poll.registry(), WAKE)?));

        let port = listener.local_addr().map_or(0, |a| a.port());
        let settings = state::Settings {
            addr: listener.local_addr().ok(),
            max_connections: self.config.max_connections,
            max_frame_len: self.config.max_frame_len,
        };
        let state = Arc::new(
            ServerState::new(port)
                .with_cluster_mode(self.config.cluster_mode)
                .with_password(self.config.password.clone())
                .with_shutdown(self.shutdown.clone())
                .with_settings(settings),
        );
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started_rx) = crossbeam_channel::unbounded::<()>();
        let mut slots = Vec::with_capacity(self.config.workers);
        for id in 0..self.config.workers {
            let (sender, receiver) = crossbeam_channel::unbounded();
            let worker = Worker::new(
                id,
                self.engine.clone(),
                receiver,
                self.config.clone(),
                self.shutdown.clone(),
                state.clone(),
            )?;
            let slot = Arc::new(WorkerSlot {
                sender,
                waker: worker.waker(),
                running: AtomicBool::new(false),
                connections: worker.connection_count(),
            });
            self.shutdown.add_waker(slot.waker.clone());
            let job_slot = slot.clone();
            let done = done_tx.clone();
            let started = started_tx.clone();
            self.pool.spawn(move || {
                let _running = Running::start(&job_slot.running);
                let _ = started.send(());
                worker.run();
                drop(done);
            });
            slots.push(slot);
        }
        drop(done_tx);
        drop(started_tx);
        let metrics = self
            .metrics
            .take()
            .map(|endpoint| {
                metrics::spawn(endpoint, self.engine.clone(), state.clone(), &self.shutdown)
            })
            .transpose();
        // Connections go only to running workers, so wait for the first one (meanwhile new
        // connections wait in the listen backlog). If the pool has fewer threads than there
        // are workers, the surplus jobs start only as others end, see the shutdown and exit.
        let accepted = match (&metrics, started_rx.recv()) {
            (Err(e), _) => Err(KvsError::Io(io::Error::new(
                e.kind(),
                format!("cannot start the metrics endpoint: {e}"),
            ))),
            (Ok(_), Ok(())) => self.accept_loop(&mut poll, &mut listener, &slots),
            (Ok(_), Err(_)) => Err(KvsError::Io(io::Error::other(
                "the thread pool ran no server worker",
            ))),
        };
        drop(listener);
        self.shutdown.shutdown();
        // Every worker's job holds a `done` sender: this returns once all have ended.
        let _ = done_rx.recv();
        if let Ok(Some(metrics)) = metrics {
            // It stops on the same shutdown; its scrapes end within their deadline.
            let _ = metrics.join();
        }
        let flushed = self.engine.flush();
        accepted?;
        flushed
    }

    fn accept_loop(
        &self,
        poll: &mut Poll,
        listener: &mut mio::net::TcpListener,
        slots: &[Arc<WorkerSlot>],
    ) -> Result<()> {
        let mut events = Events::with_capacity(8);
        // After an accept error (out of file descriptors, say), retry after a pause instead of
        // waiting for an edge that will not come.
        let mut retry: Option<Duration> = None;
        let mut next = 0;
        loop {
            if self.shutdown.is_shutdown() {
                return Ok(());
            }
            match poll.poll(&mut events, retry) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(KvsError::Io(e)),
            }
            retry = None;
            if self.shutdown.is_shutdown() {
                return Ok(());
            }
            loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        self.hand_over(stream, peer, slots, &mut next);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    Err(e) => {
                        log::warn!("accept failed: {e}; retrying shortly");
                        retry = Some(Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
    }

    /// Gives a new connection to the running worker with the fewest connections.
    fn hand_over(
        &self,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        slots: &[Arc<WorkerSlot>],
        next: &mut usize,
    ) {
        let total: usize = slots
            .iter()
            .map(|s| s.connections.load(Ordering::Relaxed))
            .sum();
        if total >= self.config.max_connections {
            log::warn!(
                "refusing connection from {peer}: {total} connections open, the limit is {}",
                self.config.max_connections
            );
            return;
        }
        // Start the search at a rotating index so that equal loads spread round-robin.
        let n = slots.len();
        *next = (*next + 1) % n;
        let Some(chosen) = (0..n)
            .map(|i| &slots[(*next + i) % n])
            .filter(|s| s.running.load(Ordering::SeqCst))
            .min_by_key(|s| s.connections.load(Ordering::Relaxed))
        else {
            log::error!("no server worker is running; dropping connection from {peer}");
            return;
        };
        chosen.connections.fetch_add(1, Ordering::Relaxed);
        log::debug!("connection from {peer}");
        if chosen.sender.send(stream).is_err() {
            chosen.connections.fetch_sub(1, Ordering::Relaxed);
            log::error!("worker gone; dropping connection from {peer}");
            return;
        }
        if let Err(e) = chosen.waker.wake() {
            log::error!("cannot wake worker: {e}");
        }
    }
}

/// Marks a worker as running for as long as it lives, unwinding included.
struct Running<'a>(&'a AtomicBool);

impl<'a> Running<'a> {
    fn start(flag: &'a AtomicBool) -> Running<'a> {
        flag.store(true, Ordering::SeqCst);
        Running(flag)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_itself_only_and_never_shows() {
        let config = ServerConfig::default().requirepass("s3cret").unwrap();
        let secret = config.password.clone().unwrap();
        assert!(secret.matches(b"s3cret"));
        for wrong in [
            &b""[..],
            b"s",
            b"s3cre",
            b"s3cret!",
            b"s3cret\0",
            b"S3cret",
            b"s3cres",
            b"s3crets3cret",
        ] {
            assert!(!secret.matches(wrong), "{wrong:?}");
        }
        assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");
        assert!(config.requires_password());
        assert!(!ServerConfig::default().requires_password());
        let empty = ServerConfig::default().requirepass("").unwrap_err();
        assert_eq!(empty.kind(), crate::ErrorKind::InvalidArgument);
    }
}
