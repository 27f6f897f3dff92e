//! A worker: an event loop that owns a set of connections and carries out their requests.
//!
//! Each round waits for readiness events, drives every connection they name (sends pending
//! replies, carries out the complete requests received, reads until the socket would block),
//! then writes the round's group: the plain `SET`s that ended the inputs of its RESP
//! connections, with one engine call for all of them (see
//! [`GroupWrite`](crate::resp::session::GroupWrite)), and answers each of those connections,
//! which then go on. Without pipelining, 50 connections each waiting for the reply to one `SET`
//! cost one write to the log per round instead of one per connection.
//!
//! A worker that had events in its last round looks for more without sleeping for a moment
//! (see `Worker::wait_for_events`) before it waits in `epoll_wait`: measured with
//! `redis-benchmark -c 1` GETs against the same store, alternating binaries, 12.4k-14.7k
//! requests/s sleeping at once, 24.2k-34.2k with it; with 50 connections and no pipelining
//! 80k against 88-91k; an idle server stays idle.

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
use crate::resp::session::GroupWrite;
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
    /// The `SET`s that ended the inputs of this round's connections, written together at the
    /// end of the round (see [`GroupWrite`]), and the connections waiting for it.
    group: GroupWrite,
    deferred: Vec<usize>,
    /// The last round had events (see [`Worker::wait_for_events`]).
    busy: bool,
}

/// How long a worker that just had work looks for more before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

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
            group: GroupWrite::default(),
            deferred: Vec::new(),
            busy: false,
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
            if let Err(e) = self.round(&mut events, &mut scratch, wait) {
                log::error!(
                    "worker {}: poll failed: {e}; closing its connections",
                    self.id
                );
                break;
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

    /// One round of the event loop: waits at most `wait` for events, drives the connections
    /// they name and those waiting for another turn, then writes the round's group of `SET`s
    /// and answers them. Fails only if polling fails.
    fn round(&mut self, events: &mut Events, scratch: &mut [u8], wait: Duration) -> io::Result<()> {
        match self.wait_for_events(events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        self.busy = !events.is_empty();
        for event in events.iter() {
            match event.token() {
                WAKE => self.adopt_new(),
                Token(slot) => self.drive(
                    slot,
                    scratch,
                    event.is_read_closed() || event.is_error(),
                    true,
                ),
            }
        }
        for _ in 0..self.ready.len() {
            if let Some(slot) = self.ready.pop_front() {
                self.drive(slot, scratch, false, true);
            }
        }
        self.write_group(scratch);
        Ok(())
    }

    /// Waits at most `wait` for events. After a round that had some, it first looks again
    /// without sleeping, yielding the processor in between, for up to [`SPIN`]: a client
    /// that sends its next request as soon as it has its reply finds the worker awake. A
    /// worker that slept instead paid for being woken on every request, which on a virtual
    /// machine with an idle core is the core's own wake-up too (a lone client's round trip
    /// measured 70-80 us here, most of it wake-ups). An idle worker never spins: its rounds
    /// have no events.
    fn wait_for_events(&mut self, events: &mut Events, wait: Duration) -> io::Result<()> {
        if self.busy && !wait.is_zero() {
            let started = Instant::now();
            loop {
                self.poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() || started.elapsed() >= SPIN {
                    break;
                }
                std::thread::yield_now();
            }
            if !events.is_empty() {
                return Ok(());
            }
        }
        self.poll.poll(events, Some(wait))
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

    /// Drives the connection in `slot`; `group`: its last `SET`s may join the round's group
    /// write.
    fn drive(&mut self, slot: usize, scratch: &mut [u8], peer_closed: bool, group: bool) {
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        let group = if group { Some(&mut self.group) } else { None };
        // One clock read per turn of a connection: its timestamps (for the client timeout
        // and `CLIENT LIST`) need no finer grain, and the turn is bounded (`TURN_BYTES`).
        let next = connection.drive(
            &self.engine,
            &self.state,
            scratch,
            self.config.max_frame_len,
            peer_closed,
            Instant::now(),
            group,
        );
        // A connection that killed itself (`CLIENT KILL` of its own id) has its reply sent
        // by now, or as much of it as the socket took. One waiting for the group write is
        // closed after it (its slot must stay its own until its replies are appended).
        let next = if connection.is_killed() && !connection.is_deferred() {
            Next::Close
        } else {
            next
        };
        match next {
            Next::Close => self.close(slot),
            Next::Deferred => self.deferred.push(slot),
            Next::Yield if !self.ready.contains(&slot) => self.ready.push_back(slot),
            Next::Yield | Next::Wait => {}
        }
    }

    /// Writes the `SET`s the round's connections left in the group, with one engine call,
    /// appends each connection's replies and drives it again (now writing its `SET`s itself:
    /// one group per round, so that a round always ends).
    fn write_group(&mut self, scratch: &mut [u8]) {
        if self.deferred.is_empty() {
            return;
        }
        let result = self.group.write(&self.engine);
        for slot in std::mem::take(&mut self.deferred) {
            if let Some(Some(connection)) = self.connections.get_mut(slot) {
                connection.answer_group(&self.state, &result);
            }
            self.drive(slot, scratch, false, false);
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::KvStore;

    /// Write system calls made so far by the calling thread (Linux's per-thread I/O
    /// accounting). Sends on sockets are not counted, writes to the log are.
    fn thread_writes() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|line| line.strip_prefix("syscw: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Without pipelining, many connections each send one SET and wait for its reply. A
    /// worker woken for several of them at once writes all their SETs to the log with one
    /// system call, then answers each connection in order; a connection whose input does
    /// not end with a SET (a GET after it) is answered as before, in one round.
    #[test]
    fn sets_of_connections_ready_together_are_written_with_one_system_call() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvStore::open(dir.path()).unwrap();
        engine.set_bytes(b"warm", b"up").unwrap();
        let (sender, receiver) = crossbeam_channel::unbounded();
        let mut worker = Worker::new(
            0,
            engine.clone(),
            receiver,
            ServerConfig::default(),
            ShutdownHandle::default(),
            Arc::new(ServerState::new(0)),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..8 {
            let client = TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            accepted.set_nonblocking(true).unwrap();
            sender
                .send(mio::net::TcpStream::from_std(accepted))
                .unwrap();
            worker.count.fetch_add(1, Ordering::Relaxed);
            clients.push(client);
        }
        worker.adopt_new();
        // Every request is in the server's socket buffers before the round starts: a send on
        // the loopback device queues the bytes at the receiver before it returns.
        let mut expected = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            let (request, reply) = match i {
                0 => (
                    format!("SET k{i} v{i}\r\nSET k{i}b w{i}\r\n"),
                    "+OK\r\n+OK\r\n",
                ),
                1 => (
                    format!("SET k{i} v{i}\r\nGET k{i}\r\n"),
                    "+OK\r\n$2\r\nv1\r\n",
                ),
                _ => (format!("SET k{i} v{i}\r\n"), "+OK\r\n"),
            };
            client.write_all(request.as_bytes()).unwrap();
            expected.push(reply);
        }
        let mut events = Events::with_capacity(256);
        let mut scratch = vec![0; READ_CHUNK];
        let before = thread_writes();
        // Until every connection was served (the kernel may report them over more than one
        // poll); each round writes one group.
        let mut rounds = 0;
        while rounds < 8 && worker.state.stats().commands < 10 {
            worker
                .round(&mut events, &mut scratch, Duration::from_secs(5))
                .unwrap();
            rounds += 1;
        }
        let writes = thread_writes() - before;
        // One for the group of the seven connections whose input ended with SETs, one for the
        // connection whose SET came before a GET; at most one more per extra round the
        // kernel spread the events over. One per connection (8 or more) without the group.
        assert!(
            writes < 2 + rounds,
            "{writes} write system calls in {rounds} rounds for 8 connections"
        );
        for (client, reply) in clients.iter_mut().zip(expected) {
            let mut got = vec![0; reply.len()];
            client.read_exact(&mut got).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), reply);
        }
        for i in 0..8 {
            let key = format!("k{i}");
            assert_eq!(
                engine.get_bytes(key.as_bytes()).unwrap(),
                Some(format!("v{i}").into_bytes()),
                "{key}"
            );
        }
        assert_eq!(engine.get_bytes(b"k0b").unwrap(), Some(b"w0".to_vec()));
    }
}
