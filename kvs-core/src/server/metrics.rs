//! [`MetricsEndpoint`]: the server's figures over HTTP, in Prometheus's text exposition format
//! (version 0.0.4), for a Prometheus server (or anything that reads that format) to scrape.
//!
//! `GET /metrics` answers `200` with one `# HELP` line, one `# TYPE` line and the samples of
//! each metric, every name prefixed `kvs_`, counters ending in `_total`. The figures are the
//! ones `INFO` shows, read from the same places at the time of the scrape: the server's
//! shared counters ([`ServerState`]), the keyspace summary and the resident memory of
//! [`crate::resp::info`]. There is no second copy of any counter. Besides them: the engine
//! and kvs's version (as labels of `kvs_info`), and the bytes of the files in the data
//! directory, when the endpoint was told the directory.
//!
//! Any other path is `404 Not Found`, any other method on `/metrics` `405 Method Not Allowed`,
//! a request that is not HTTP `400 Bad Request`; every answer closes its connection.
//!
//! # Isolation
//!
//! The endpoint runs on a thread of its own, apart from the workers that serve clients, and
//! answers each scrape on a short-lived thread, at most [`MAX_SCRAPES`] at once (further
//! connections are closed on arrival). A scrape has [`SCRAPE_DEADLINE`] in all to send its
//! request head (at most [`MAX_REQUEST_HEAD`] bytes) and read the answer, then its connection
//! is closed: a scraper that connects and sends nothing, dribbles a byte at a time, sends an
//! endless header, or never reads, costs one thread for at most that long and cannot reach
//! the workers. A scrape reads the engine as `INFO` does (a key count and one page of a scan).
//!
//! The endpoint stops with the server: the same [`ShutdownHandle`] wakes its thread, which
//! closes the listener, cuts the connections of the scrapes in flight (so that a scraper
//! cannot hold up the shutdown) and waits for their threads, before
//! [`KvsServer::serve`](super::KvsServer::serve) returns.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::state::ServerState;
use super::ShutdownHandle;
use crate::resp::info;
use crate::KvsEngine;

/// How long one scrape may take in all, from its connection to the end of the answer (5 s):
/// Prometheus's default scrape timeout is 10 s, and an answer takes milliseconds.
pub const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);

/// The longest request head (request line and headers) read, in bytes (8 KiB); a longer one
/// is answered `431`.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;

/// The most scrapes answered at once (4); connections beyond are closed on arrival.
pub const MAX_SCRAPES: usize = 4;

/// The `Content-Type` of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An HTTP listener that serves a [`KvsServer`](super::KvsServer)'s metrics at `/metrics`
/// (see [`KvsServer::with_metrics`](super::KvsServer::with_metrics)).
///
/// ```no_run
/// use std::net::TcpListener;
/// use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};
/// use kvs::{KvStore, KvsServer, MetricsEndpoint};
///
/// # fn main() -> kvs::Result<()> {
/// let engine = KvStore::open("data")?;
/// let metrics = MetricsEndpoint::new(TcpListener::bind("127.0.0.1:9121")?)
///     .engine("kvs")
///     .data_dir("data");
/// KvsServer::new(engine, SharedQueueThreadPool::new(2)?)
///     .with_metrics(metrics)
///     .run("127.0.0.1:4000")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
    labels: Labels,
}

/// What a scrape says beside the server's counters.
#[derive(Debug, Clone, Default)]
struct Labels {
    engine: Option<String>,
    data_dir: Option<PathBuf>,
}

impl MetricsEndpoint {
    /// An endpoint answering on `listener`.
    pub fn new(listener: TcpListener) -> MetricsEndpoint {
        MetricsEndpoint {
            listener,
            labels: Labels::default(),
        }
    }

    /// The same, naming `engine` (`kvs`, `sled`) in the `engine` label of `kvs_info`.
    pub fn engine(mut self, engine: impl Into<String>) -> MetricsEndpoint {
        self.labels.engine = Some(engine.into());
        self
    }

    /// The same, reporting the bytes of the files under `dir` (the store's data directory) as
    /// `kvs_disk_bytes`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> MetricsEndpoint {
        self.labels.data_dir = Some(dir.into());
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);

/// Starts the endpoint's thread, which answers scrapes from the figures of `state` and
/// `engine` until `shutdown`.
pub(crate) fn spawn<E: KvsEngine>(
    endpoint: MetricsEndpoint,
    engine: E,
    state: Arc<ServerState>,
    shutdown: &ShutdownHandle,
) -> io::Result<JoinHandle<()>> {
    endpoint.listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(endpoint.listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    shutdown.add_waker(Arc::new(Waker::new(poll.registry(), WAKE)?));
    let scrape = Arc::new(Scrape {
        engine,
        state,
        labels: endpoint.labels,
    });
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("kvs-metrics".to_string())
        .spawn(move || accept_loop(poll, listener, scrape, shutdown))
}

/// What a scrape reads.
struct Scrape<E> {
    engine: E,
    state: Arc<ServerState>,
    labels: Labels,
}

fn accept_loop<E: KvsEngine>(
    mut poll: Poll,
    listener: mio::net::TcpListener,
    scrape: Arc<Scrape<E>>,
    shutdown: ShutdownHandle,
) {
    let mut events = Events::with_capacity(4);
    // Each scrape's thread, and its connection to cut at shutdown.
    let mut scrapes: Vec<(JoinHandle<()>, TcpStream)> = Vec::new();
    // After an accept error (out of file descriptors, say), retry after a pause instead of
    // waiting for an edge that will not come.
    let mut retry: Option<Duration> = None;
    while !shutdown.is_shutdown() {
        match poll.poll(&mut events, retry) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("metrics endpoint stopped: {e}");
                break;
            }
        }
        retry = None;
        loop {
            if shutdown.is_shutdown() {
                break;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    scrapes.retain(|(thread, _)| !thread.is_finished());
                    if scrapes.len() >= MAX_SCRAPES {
                        log::warn!(
                            "metrics: refusing a scrape from {peer}: {MAX_SCRAPES} in progress"
                        );
                        continue;
                    }
                    let stream = TcpStream::from(stream);
                    let cut = match stream.try_clone() {
                        Ok(cut) => cut,
                        Err(e) => {
                            log::warn!("metrics: cannot answer a scrape from {peer}: {e}");
                            continue;
                        }
                    };
                    let scrape = scrape.clone();
                    let spawned = std::thread::Builder::new()
                        .name("kvs-metrics-scrape".to_string())
                        .spawn(move || answer(stream, &scrape));
                    match spawned {
                        Ok(thread) => scrapes.push((thread, cut)),
                        Err(e) => log::warn!("metrics: cannot answer a scrape from {peer}: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    log::warn!("metrics: accept failed: {e}; retrying shortly");
                    retry = Some(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
    drop(listener);
    // A scrape still waiting for its request (or for its peer to read) would hold up the
    // server's shutdown until its deadline: cutting its connection ends its reads and writes
    // at once.
    for (thread, cut) in scrapes {
        let _ = cut.shutdown(Shutdown::Both);
        let _ = thread.join();
    }
}

/// Reads one request from `stream` and answers it, within [`SCRAPE_DEADLINE`], then ends
/// the connection (explicitly: the endpoint's thread holds a clone of the socket until it
/// next accepts, and dropping this one would not close it).
fn answer<E: KvsEngine>(mut stream: TcpStream, scrape: &Scrape<E>) {
    exchange(&mut stream, scrape);
    let _ = stream.shutdown(Shutdown::Both);
}

/// The request and answer of [`answer`].
fn exchange<E: KvsEngine>(stream: &mut TcpStream, scrape: &Scrape<E>) {
    let deadline = Instant::now() + SCRAPE_DEADLINE;
    // The listener was non-blocking; what it accepts may be too on some systems.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let response = match read_head(stream, deadline) {
        Ok(Head::Complete(head)) => respond(&head, scrape),
        Ok(Head::TooLong) => Response::text(431, "Request Header Fields Too Large", ""),
        // Closed, timed out or broken: nothing to answer.
        Ok(Head::Closed) | Err(_) => return,
    };
    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
        return;
    };
    if stream
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .is_err()
    {
        return;
    }
    if stream.write_all(&response.bytes()).is_ok() {
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Write);
        drain(stream, deadline);
    }
}

/// Reads and drops what the peer still sends (at most [`MAX_DRAIN`] bytes, until
/// `deadline`) before the connection is closed: closing a socket with unread bytes sends a
/// reset, which may destroy the answer before the peer read it (a request with a body, or a
/// head over [`MAX_REQUEST_HEAD`]).
fn drain(stream: &mut TcpStream, deadline: Instant) {
    const MAX_DRAIN: usize = 64 << 10;
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
        else {
            return;
        };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The head of a request as read.
enum Head {
    /// The request line and headers, up to the empty line that ends them.
    Complete(Vec<u8>),
    /// Longer than [`MAX_REQUEST_HEAD`] without its end.
    TooLong,
    /// The peer closed the connection first.
    Closed,
}

/// Reads up to the end of the request head (an empty line), by `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Where to look for the end: from a little before the new bytes, in case it straddles
        // two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_end(&head[from..]) {
            head.truncate(from + end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(Head::TooLong);
        }
    }
}

/// Where the empty line ending a request head ends in `bytes` (`\r\n\r\n`, or `\n\n` from a
/// lax client), if it is there.
fn find_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An answer to send.
struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            reason,
            headers: vec![("Content-Type", "text/plain; charset=utf-8")],
            body: body.into(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        for (name, value) in &self.headers {
            out += &format!("{name}: {value}\r\n");
        }
        out += &format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        );
        out += &self.body;
        out.into_bytes()
    }
}

/// The answer to the request whose head is `head`.
fn respond<E: KvsEngine>(head: &[u8], scrape: &Scrape<E>) -> Response {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request", "not an HTTP request\n");
    };
    if !version.starts_with(b"HTTP/1.") {
        return Response::text(400, "Bad Request", "not an HTTP/1 request\n");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path != b"/metrics" {
        return Response::text(404, "Not Found", "kvs serves its metrics at /metrics\n");
    }
    if method != b"GET" {
        let mut response = Response::text(405, "Method Not Allowed", "only GET /metrics\n");
        response.headers.push(("Allow", "GET"));
        return response;
    }
    match render(scrape) {
        Ok(body) => Response {
            status: 200,
            reason: "OK",
            headers: vec![("Content-Type", CONTENT_TYPE)],
            body,
        },
        Err(e) => {
            log::warn!("metrics: cannot read the store's figures: {e}");
            Response::text(
                500,
                "Internal Server Error",
                format!("cannot read the store's figures: {e}\n"),
            )
        }
    }
}

/// Writes the metrics of a scrape as the text exposition format.
struct Exposition {
    text: String,
}

impl Exposition {
    /// One metric: its `# HELP` and `# TYPE` lines and one sample without labels.
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, kind, help);
        self.text += &format!("{name} {value}\n");
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        self.text += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }
}

/// A label value as the exposition format quotes it: `\`, `"` and line feeds escaped.
fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out += "\\\\",
            '"' => out += "\\\"",
            '\n' => out += "\\n",
            c => out.push(c),
        }
    }
    out
}

/// The metrics now, as the text exposition format.
fn render<E: KvsEngine>(scrape: &Scrape<E>) -> crate::Result<String> {
    let state = &scrape.state;
    let stats = state.stats();
    let keyspace = info::keyspace(&scrape.engine)?;
    let mut out = Exposition {
        text: String::with_capacity(4096),
    };
    out.header(
        "kvs_info",
        "gauge",
        "The kvs server: its version and storage engine in labels; always 1.",
    );
    out.text += &format!(
        "kvs_info{{version=\"{}\",engine=\"{}\"}} 1\n",
        label_value(crate::VERSION),
        label_value(scrape.labels.engine.as_deref().unwrap_or("unknown")),
    );
    out.metric(
        "kvs_uptime_seconds",
        "gauge",
        "Seconds since the server started serving (INFO uptime_in_seconds).",
        stats.uptime_secs,
    );
    out.metric(
        "kvs_connected_clients",
        "gauge",
        "Client connections open now, of either protocol (INFO connected_clients).",
        stats.connected,
    );
    out.metric(
        "kvs_max_clients",
        "gauge",
        "The most connections served at once (INFO maxclients, --max-connections).",
        state.settings().max_connections,
    );
    out.metric(
        "kvs_connections_received_total",
        "counter",
        "Client connections accepted since the start (INFO total_connections_received).",
        stats.connections_received,
    );
    out.metric(
        "kvs_commands_processed_total",
        "counter",
        "Commands carried out since the start (INFO total_commands_processed).",
        stats.commands,
    );
    out.metric(
        "kvs_keyspace_hits_total",
        "counter",
        "Key lookups that found the key (INFO keyspace_hits).",
        stats.hits,
    );
    out.metric(
        "kvs_keyspace_misses_total",
        "counter",
        "Key lookups that found no key (INFO keyspace_misses).",
        stats.misses,
    );
    out.metric(
        "kvs_keyspace_keys",
        "gauge",
        "Keys in the store (INFO keyspace, db0 keys).",
        keyspace.keys,
    );
    out.metric(
        "kvs_keyspace_expires",
        "gauge",
        "Keys with a deadline, estimated from a sample in a large store (INFO keyspace, db0 \
         expires).",
        keyspace.expires,
    );
    out.metric(
        "kvs_keyspace_avg_ttl_seconds",
        "gauge",
        "Average time to live of the keys with a deadline; 0 if none (INFO keyspace, db0 \
         avg_ttl).",
        keyspace.avg_ttl_ms as f64 / 1000.0,
    );
    out.metric(
        "kvs_memory_used_bytes",
        "gauge",
        "Resident memory of the server process (INFO used_memory).",
        info::resident_bytes(),
    );
    out.metric(
        "kvs_last_save_timestamp_seconds",
        "gauge",
        "When the engine was last flushed to disk, in seconds since the Unix epoch (INFO \
         rdb_last_save_time).",
        state.last_save(),
    );
    if let Some(dir) = &scrape.labels.data_dir {
        match dir_bytes(dir, 0) {
            Ok(bytes) => out.metric(
                "kvs_disk_bytes",
                "gauge",
                "Bytes of the files in the data directory.",
                bytes,
            ),
            Err(e) => log::warn!("metrics: cannot measure {}: {e}", dir.display()),
        }
    }
    Ok(out.text)
}

/// The bytes of the regular files under `dir`, at most [`MAX_DEPTH`] levels down (a kvs
/// store is flat; sled's has a subdirectory or two). Symbolic links are not followed.
fn dir_bytes(dir: &Path, depth: usize) -> io::Result<u64> {
    const MAX_DEPTH: usize = 4;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            // A file removed since the listing (compaction) counts for nothing.
            total += entry.metadata().map_or(0, |m| m.len());
        } else if kind.is_dir() && depth < MAX_DEPTH {
            total += dir_bytes(&entry.path(), depth + 1)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_request_head_is_found_however_it_is_written() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(find_end(b"\r\n\r\nrest"), Some(4));
    }

    #[test]
    fn label_values_are_escaped_as_the_exposition_format_says() {
        assert_eq!(label_value("kvs"), "kvs");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
