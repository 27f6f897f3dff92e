//! A worker: an event loop that owns a set of connections and carries out their requests.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::{Events, Interest, Poll, Token, Waker};

use super::connection::{Connection, Next};
use super::state::ServerState;
use super::{ServerConfig, ShutdownHandle};
use crate::{KvsEngine, Result};

/// Token of the worker's waker; connections use their slot index.
const WAKE: Token = Token(usize::MAX);

/// Size of the buffer a worker reads into (one per worker, shared by its connections).
const READ_CHUNK: usize = 64 << 10;

pub(super) struct Worker<E: KvsEngine> {
    id: usize,
    engine: E,
    poll: Poll,
    waker: Arc<Waker>,
    incoming: Receiver<mio::net::TcpStream>,
    config: ServerConfig,
    shutdown: ShutdownHandle,
    /// Connections by token; `free` lists the empty slots.
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    /// Open connections, read by the accepting loop to balance load.
    count: Arc<AtomicUsize>,
    /// Shared by the server's connections: counters, RESP client ids.
    state: Arc<ServerState>,
    /// Connections that used up their turn with work left (`Next::Yield`), to drive again
    /// after the next round of events.
    ready: VecDeque<usize>,
}

impl<E: KvsEngine> Worker<E> {
    pub(super) fn new(
        id: usize,
        engine: E,
        incoming: Receiver<mio::net::TcpStream>,
        config: ServerConfig,
        shutdown: ShutdownHandle,
        state: Arc<ServerState>,
    ) -> Result<Worker<E>> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(Worker {
            id,
            engine,
            poll,
            waker,
            incoming,
            config,
            shutdown,
            connections: Vec::new(),
            free: Vec::new(),
            count: Arc::new(AtomicUsize::new(0)),
            state,
            ready: VecDeque::new(),
        })
    }

    pub(super) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub(super) fn connection_count(&self) -> Arc<AtomicUsize> {
        self.count.clone()
    }

    /// Serves connections until shutdown, then finishes them.
    pub(super) fn run(mut self) {
        log::debug!("worker {} started", self.id);
        let mut events = Events::with_capacity(256);
        let mut scratch = vec![0; READ_CHUNK];
        // Stalled clients are looked for a few times per timeout.
        let tick = (self.config.client_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut last_sweep = Instant::now();
        loop {
            // With connections waiting for another turn, only look for events, don't wait.
            let wait = if self.ready.is_empty() {
                tick
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!(
                        "worker {}: poll failed: {e}; closing its connections",
                        self.id
                    );
                    break;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKE => self.adopt_new(),
                    Token(slot) => self.drive(
                        slot,
                        &mut scratch,
                        event.is_read_closed() || event.is_error(),
                    ),
                }
            }
            for _ in 0..self.ready.len() {
                if let Some(slot) = self.ready.pop_front() {
                    self.drive(slot, &mut scratch, false);
                }
            }
            if self.shutdown.is_shutdown() {
                break;
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= tick {
                self.close_stalled(now);
                last_sweep = now;
            }
        }
        self.finish(&mut events);
        log::debug!("worker {} stopped", self.id);
    }

    /// Registers the connections the accepting loop sent.
    fn adopt_new(&mut self) {
        loop {
            let mut stream = match self.incoming.try_recv() {
                Ok(stream) => stream,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            };
            if self.shutdown.is_shutdown() {
                self.count.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            // Requests and replies are small and latency matters: no Nagle delay.
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("cannot set TCP_NODELAY: {e}");
            }
            let peer = stream
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let slot = self.free.pop().unwrap_or_else(|| {
                self.connections.push(None);
                self.connections.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("{peer}: cannot watch connection: {e}");
                self.free.push(slot);
                self.count.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            self.connections[slot] = Some(Connection::new(stream, peer));
            self.state.connection_opened();
        }
    }

    fn drive(&mut self, slot: usize, scratch: &mut [u8], peer_closed: bool) {
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        // One clock read per turn of a connection: its timestamps (for the client timeout
        // and `CLIENT LIST`) need no finer grain, and the turn is bounded (`TURN_BYTES`).
        let next = connection.drive(
            &self.engine,
            &self.state,
            scratch,
            self.config.max_frame_len,
            peer_closed,
            Instant::now(),
        );
        // A connection that killed itself (`CLIENT KILL` of its own id) has its reply sent
        // by now, or as much of it as the socket took.
        let next = if connection.is_killed() {
            Next::Close
        } else {
            next
        };
        match next {
            Next::Close => self.close(slot),
            Next::Yield if !self.ready.contains(&slot) => self.ready.push_back(slot),
            Next::Yield | Next::Wait => {}
        }
    }

    fn close_stalled(&mut self, now: Instant) {
        let timeout = self.config.client_timeout;
        for slot in 0..self.connections.len() {
            if let Some(connection) = &self.connections[slot] {
                if connection.is_killed() {
                    log::info!("{}: closed by CLIENT KILL", connection.peer);
                    self.close(slot);
                } else if connection.is_stalled(now, timeout) {
                    log::warn!(
                        "{}: no progress for {timeout:?} with a request half-sent or replies \
                         unread; closing the connection",
                        connection.peer
                    );
                    self.close(slot);
                }
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut connection) = self.connections[slot].take() {
            let _ = self.poll.registry().deregister(&mut connection.stream);
            self.free.push(slot);
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.state.connection_closed();
            if let Some(id) = connection.resp_client_id() {
                self.state.client_closed(id);
            }
        }
    }

    /// Shutdown: carry out the requests received in full and send their replies, for at most
    /// the drain timeout ([`ServerConfig::drain_timeout`]); then close every connection,
    /// whatever is left unsent to clients that do not read.
    fn finish(&mut self, events: &mut Events) {
        let deadline = Instant::now() + self.config.drain_timeout;
        loop {
            for slot in 0..self.connections.len() {
                if let Some(connection) = &mut self.connections[slot] {
                    if connection.drain(&self.engine, &self.state, self.config.max_frame_len) {
                        self.close(slot);
                    }
                }
            }
            let now = Instant::now();
            if self.connections.iter().all(Option::is_none) || now >= deadline {
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            if let Err(e) = self.poll.poll(events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
        for connection in self.connections.iter().flatten() {
            log::warn!(
                "{}: still {} bytes of replies unread after the drain timeout ({:?}) of the \
                 shutdown; closing the connection",
                connection.peer,
                connection.pending_output(),
                self.config.drain_timeout
            );
        }
        for slot in 0..self.connections.len() {
            self.close(slot);
        }
        // Connections sent to this worker but never adopted.
        while self.incoming.try_recv().is_ok() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
