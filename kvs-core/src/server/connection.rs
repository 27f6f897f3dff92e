//! One client connection inside a worker: its buffers, and the requests it carries.
//!
//! A connection speaks the kvs protocol or RESP, as its first byte says (see [`super::sniff`]);
//! buffering, back-pressure, timeouts and shutdown are the same for both.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::sniff::is_resp_start;
use super::state::ServerState;
use super::OUTPUT_HIGH_WATER;
use crate::protocol::{frame, FrameStatus, List, Request, Response};
use crate::resp::session::{answer_group, GroupWrite};
use crate::resp::{self, Session};
use crate::{BatchOp, ErrorKind, KvsEngine, KvsError, Result, ScanFilter, WriteBatch};

/// Buffers larger than this are given back once empty, so idle connections stay small.
const KEEP_CAPACITY: usize = 64 << 10;

/// What a worker does with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Keep it; it waits for the socket to become readable or writable.
    Wait,
    /// Keep it; it has more to do but used up its turn (see [`TURN_BYTES`]): drive it again
    /// soon, without waiting for the socket (no new readiness edge may come).
    Yield,
    /// Close it.
    Close,
    /// Its last `SET`s joined the worker's [`GroupWrite`]: it carries out nothing more until
    /// the worker has written the group and called [`Connection::answer_group`], then drives
    /// it again.
    Deferred,
}

/// The most reply bytes one connection produces in one turn before the worker moves on to
/// its other connections. Without it, a client pipelining large gets and a roomy socket
/// buffer could keep a worker on one connection for many megabytes while others wait.
pub(super) const TURN_BYTES: usize = 256 << 10;

/// The protocol a connection speaks.
enum Protocol {
    /// Not known until its first byte arrives.
    Unknown,
    /// kvs's own frames (`protocol/`); `authenticated` once the client has given the
    /// server's password (only looked at when the server has one).
    Kvs { authenticated: bool },
    /// RESP (2, or 3 after `HELLO 3`), with the state of the request being parsed.
    Resp(Box<Session>),
}

pub(super) struct Connection {
    pub(super) stream: mio::net::TcpStream,
    pub(super) peer: SocketAddr,
    protocol: Protocol,
    /// Bytes received and not yet carried out: at most one incomplete frame, plus one read.
    input: Vec<u8>,
    /// Replies not yet sent; `output[..sent]` is already on the wire.
    output: Vec<u8>,
    sent: usize,
    /// When bytes last moved in either direction.
    last_progress: Instant,
    /// The client has closed its side: no more requests will come.
    read_closed: bool,
    /// `SET`s of this connection in the worker's [`GroupWrite`], not yet answered.
    deferred: usize,
    /// What the turn that deferred knew of the socket, for the turn that resumes after the
    /// group write: its last read was short (its queue was empty), and the peer had closed.
    resume_drained: bool,
    resume_peer_closed: bool,
}

impl Connection {
    pub(super) fn new(stream: mio::net::TcpStream, peer: SocketAddr) -> Connection {
        Connection {
            stream,
            peer,
            protocol: Protocol::Unknown,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            last_progress: Instant::now(),
            read_closed: false,
            deferred: 0,
            resume_drained: false,
            resume_peer_closed: false,
        }
    }

    /// Does all the work the socket allows now: sends pending replies, carries out every
    /// complete request, reads more. Sockets are edge-triggered, so this goes on until the
    /// socket would block (or until replies pile up, in which case the next writable event
    /// resumes it).
    ///
    /// `peer_closed` says the readiness event reported the peer's end closed (or an error):
    /// then the socket is read until it says so, even after a short read. `now` is the
    /// worker's clock reading for this turn, used for every timestamp the turn records (one
    /// clock read per turn instead of several per request).
    ///
    /// With a `group`, the `SET`s that end a RESP input may join it ([`Next::Deferred`]).
    // The worker's parts come one by one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn drive<E: KvsEngine>(
        &mut self,
        engine: &E,
        state: &ServerState,
        scratch: &mut [u8],
        max_frame_len: usize,
        peer_closed: bool,
        now: Instant,
        mut group: Option<&mut GroupWrite>,
    ) -> Next {
        if self.deferred > 0 {
            // Driven again before its group is written (another event in the same round):
            // nothing may be carried out yet; the turn after the group write does the rest.
            self.resume_peer_closed |= peer_closed;
            return Next::Wait;
        }
        let peer_closed = peer_closed || std::mem::take(&mut self.resume_peer_closed);
        // Set after a short read: that read emptied the socket's queue, and anything that
        // arrives later comes with a new readiness edge, so the read that would only say
        // "would block" is skipped. A close that came before this wake-up brings no new edge,
        // which is what `peer_closed` covers.
        let mut drained = std::mem::take(&mut self.resume_drained);
        let mut produced = 0;
        loop {
            if let Err(e) = self.flush(now) {
                return self.broken(e);
            }
            if self.pending_output() >= OUTPUT_HIGH_WATER {
                return Next::Wait;
            }
            if produced >= TURN_BYTES {
                return Next::Yield;
            }
            let before = self.output.len();
            match self.carry_out(engine, state, max_frame_len, now, group.as_deref_mut()) {
                Ok(_) if self.deferred > 0 => {
                    // The replies so far go out with those of the group, in one write.
                    self.resume_drained = drained;
                    self.resume_peer_closed = peer_closed;
                    return Next::Deferred;
                }
                Ok(0) => {}
                Ok(_) => {
                    produced += self.output.len().saturating_sub(before);
                    continue;
                }
                Err(e) => return self.refuse(e, max_frame_len),
            }
            if self.read_closed {
                if !self.input.is_empty() {
                    log::warn!(
                        "{}: connection closed in the middle of a request ({} bytes of it \
                         received); request dropped",
                        self.peer,
                        self.input.len()
                    );
                    self.input.clear();
                }
                return if self.pending_output() == 0 {
                    Next::Close
                } else {
                    Next::Wait
                };
            }
            if drained {
                return Next::Wait;
            }
            let want = self.read_size(scratch.len(), state, max_frame_len);
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => self.read_closed = true,
                Ok(n) => {
                    self.input.extend_from_slice(&scratch[..n]);
                    self.last_progress = now;
                    drained = n < want && !peer_closed;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.broken(e),
            }
        }
    }

    /// How many bytes to read next. While a frame larger than a read is coming in, its
    /// buffer is allocated once at its announced size and reads stop at its end, so the
    /// buffer never grows past the frame (a growing `Vec` could double past the limit).
    fn read_size(&mut self, chunk: usize, state: &ServerState, max_frame_len: usize) -> usize {
        let needed = match &self.protocol {
            Protocol::Unknown => None,
            &Protocol::Kvs { authenticated } => match frame::check(
                &self.input,
                kvs_frame_limit(state, authenticated, max_frame_len),
            ) {
                Ok(FrameStatus::Incomplete { needed }) => Some(needed),
                _ => None,
            },
            // The RESP parser has checked `needed` against its limits already.
            Protocol::Resp(session) => session.needed(),
        };
        if let Some(needed) = needed {
            if needed > chunk {
                self.input.reserve_exact(needed - self.input.len());
                return (needed - self.input.len()).min(chunk);
            }
        }
        chunk
    }

    /// On shutdown: carries out the requests received in full and sends their replies, as far
    /// as the client reads them; nothing more is read. Returns `true` once the connection is
    /// done with (everything answered and sent, or broken), `false` while replies wait for the
    /// client to read them. As when serving, requests are carried out only while less than
    /// [`OUTPUT_HIGH_WATER`] of replies wait, so a client that pipelined many requests and
    /// reads nothing cannot make the server produce all their replies at once.
    pub(super) fn drain<E: KvsEngine>(
        &mut self,
        engine: &E,
        state: &ServerState,
        max_frame_len: usize,
    ) -> bool {
        let now = Instant::now();
        loop {
            match self.flush(now) {
                Ok(_) => {}
                Err(e) => {
                    log::debug!("{}: connection error: {e}", self.peer);
                    return true;
                }
            }
            if self.pending_output() >= OUTPUT_HIGH_WATER {
                return false;
            }
            match self.carry_out(engine, state, max_frame_len, now, None) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("{}: {e}", self.peer);
                    break;
                }
            }
        }
        // Nothing left that can be carried out: done once the last replies are sent.
        if !self.input.is_empty() && self.pending_output() == 0 {
            log::debug!(
                "{}: shutting down with {} bytes of a request received; request dropped",
                self.peer,
                self.input.len()
            );
            self.input.clear();
        }
        // A broken connection is done with too.
        self.flush(now).unwrap_or(true)
    }

    /// Sends as much pending output as the socket takes. Returns whether all of it is sent.
    /// `now` is recorded as the time of the last progress if anything was sent.
    pub(super) fn flush(&mut self, now: Instant) -> io::Result<bool> {
        while self.sent < self.output.len() {
            match self.stream.write(&self.output[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    self.last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.sent = 0;
        if self.output.capacity() > KEEP_CAPACITY {
            self.output = Vec::new();
        }
        Ok(true)
    }

    /// Whether some of its `SET`s wait in the worker's [`GroupWrite`].
    pub(super) fn is_deferred(&self) -> bool {
        self.deferred > 0
    }

    /// Appends the replies to its `SET`s in the group just written (`result`: what
    /// [`GroupWrite::write`] returned). The worker then drives it again.
    pub(super) fn answer_group(
        &mut self,
        state: &ServerState,
        result: &std::result::Result<(), String>,
    ) {
        answer_group(&mut self.output, state, self.deferred, result);
        self.deferred = 0;
    }

    /// Whether `CLIENT KILL` asked for this connection to be closed.
    pub(super) fn is_killed(&self) -> bool {
        match &self.protocol {
            Protocol::Resp(session) => session.client_info().is_killed(),
            _ => false,
        }
    }

    /// The RESP client id of this connection, if it speaks RESP.
    pub(super) fn resp_client_id(&self) -> Option<u64> {
        match &self.protocol {
            Protocol::Resp(session) => Some(session.client_info().id),
            _ => None,
        }
    }

    /// Whether the client has left a request half-sent, or replies unread, for longer than
    /// `timeout`.
    pub(super) fn is_stalled(&self, now: Instant, timeout: Duration) -> bool {
        let half_done = !self.input.is_empty() || self.pending_output() > 0;
        half_done && now.duration_since(self.last_progress) > timeout
    }

    pub(super) fn pending_output(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Carries out complete requests until the input holds none or replies pile up. Returns
    /// how many it carried out. The first byte decides the protocol.
    fn carry_out<E: KvsEngine>(
        &mut self,
        engine: &E,
        state: &ServerState,
        max_frame_len: usize,
        now: Instant,
        group: Option<&mut GroupWrite>,
    ) -> Result<usize> {
        if let Protocol::Unknown = self.protocol {
            match self.input.first() {
                None => return Ok(0),
                Some(&first) if is_resp_start(first) => {
                    let limits = resp::Limits::for_frame_len(max_frame_len);
                    let id = state.next_client_id();
                    let session = Session::new(limits, id)
                        .with_addrs(Some(self.peer), self.stream.local_addr().ok());
                    state.client_opened(session.client_info());
                    self.protocol = Protocol::Resp(Box::new(session));
                }
                Some(_) => {
                    self.protocol = Protocol::Kvs {
                        authenticated: false,
                    }
                }
            }
        }
        match &mut self.protocol {
            Protocol::Resp(session) => {
                let budget = OUTPUT_HIGH_WATER.saturating_sub(self.output.len() - self.sent);
                let progress = session.serve(
                    engine,
                    state,
                    &self.input,
                    &mut self.output,
                    budget,
                    now,
                    group,
                );
                // Even after an error, the requests before it were answered.
                let consumed = match &progress {
                    Ok(progress) => progress.consumed,
                    Err(_) => 0,
                };
                self.consume(consumed);
                let progress = progress?;
                self.deferred = progress.deferred;
                if progress.close {
                    // QUIT: whatever followed it is ignored; close once the replies are out.
                    self.input.clear();
                    self.read_closed = true;
                }
                Ok(progress.requests)
            }
            _ => self.carry_out_kvs(engine, state, max_frame_len),
        }
    }

    /// Drops the first `n` bytes of input, giving back a large buffer once it is empty.
    fn consume(&mut self, n: usize) {
        if n == self.input.len() {
            self.input.clear();
            if self.input.capacity() > KEEP_CAPACITY {
                self.input = Vec::new();
            }
        } else if n > 0 {
            self.input.drain(..n);
        }
    }

    /// [`carry_out`](Connection::carry_out) for the kvs protocol.
    fn carry_out_kvs<E: KvsEngine>(
        &mut self,
        engine: &E,
        state: &ServerState,
        max_frame_len: usize,
    ) -> Result<usize> {
        let mut authenticated = match self.protocol {
            Protocol::Kvs { authenticated } => authenticated,
            _ => false,
        };
        let mut done = 0;
        let mut start = 0;
        let result = loop {
            if self.output.len() - self.sent >= OUTPUT_HIGH_WATER {
                break Ok(done);
            }
            let limit = kvs_frame_limit(state, authenticated, max_frame_len);
            match frame::check(&self.input[start..], limit) {
                Ok(FrameStatus::Incomplete { .. }) => break Ok(done),
                Ok(FrameStatus::Complete { payload }) => {
                    let payload_bytes = &self.input[start + payload.start..start + payload.end];
                    let mut cx = KvsContext {
                        state,
                        authenticated: &mut authenticated,
                        peer: self.peer,
                    };
                    if let Err(e) = answer(
                        engine,
                        &mut cx,
                        payload_bytes,
                        &mut self.output,
                        max_frame_len,
                    ) {
                        break Err(e);
                    }
                    start += payload.end;
                    done += 1;
                }
                Err(e) if limit < max_frame_len => {
                    break Err(KvsError::Protocol(format!(
                        "{e}: before the password is given (an Auth request), frames are \
                         limited to {limit} bytes"
                    )))
                }
                Err(e) => break Err(e),
            }
        };
        if start == self.input.len() {
            self.input.clear();
            if self.input.capacity() > KEEP_CAPACITY {
                self.input = Vec::new();
            }
        } else if start > 0 {
            self.input.drain(..start);
        }
        self.protocol = Protocol::Kvs { authenticated };
        result
    }

    /// The client broke the protocol: say why (best effort) and close.
    fn refuse(&mut self, err: KvsError, max_frame_len: usize) -> Next {
        log::warn!("{}: {err}; closing the connection", self.peer);
        if let Protocol::Resp(_) = self.protocol {
            resp::session::write_refusal(&mut self.output, &err);
        } else {
            let message = err.to_string();
            let _ = Response::Error {
                kind: ErrorKind::Protocol,
                message: &message,
            }
            .encode_frame(&mut self.output, max_frame_len);
        }
        let _ = self.flush(Instant::now());
        let _ = self.stream.shutdown(Shutdown::Both);
        Next::Close
    }

    fn broken(&mut self, err: io::Error) -> Next {
        log::debug!("{}: connection error: {err}", self.peer);
        Next::Close
    }
}

/// The largest request frame a kvs-protocol connection that has not given the server's
/// password may send (64 KiB: an `Auth` is a few bytes), so that a client without it cannot
/// make the server buffer frames of the full limit. As RESP's limits for unauthenticated
/// clients.
const UNAUTHENTICATED_FRAME_LEN: usize = 64 << 10;

/// The frame limit of a kvs-protocol connection: [`UNAUTHENTICATED_FRAME_LEN`] until it has
/// given the server's password, if there is one.
fn kvs_frame_limit(state: &ServerState, authenticated: bool, max_frame_len: usize) -> usize {
    if state.requires_password() && !authenticated {
        max_frame_len.min(UNAUTHENTICATED_FRAME_LEN)
    } else {
        max_frame_len
    }
}

/// What [`answer`] knows of its kvs-protocol connection.
struct KvsContext<'c> {
    state: &'c ServerState,
    /// Whether the connection has given the server's password; set by a right `Auth`.
    authenticated: &'c mut bool,
    peer: SocketAddr,
}

/// Decodes one request, carries it out on `engine` and appends the framed reply to `out`.
/// With a server password, every request but `Auth` is refused until the connection has
/// given it.
/// Fails only when the request is malformed (or no reply at all fits in a frame): the
/// connection cannot go on then.
fn answer<E: KvsEngine>(
    engine: &E,
    cx: &mut KvsContext<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
    max_frame_len: usize,
) -> Result<()> {
    let request = Request::decode(payload)?;
    let needs_password = cx.state.requires_password() && !*cx.authenticated;
    let result = match request {
        Request::Auth { password } => {
            if !cx.state.requires_password() || cx.state.password_matches(password.0) {
                *cx.authenticated = true;
                Ok(())
            } else {
                log::info!("{}: a kvs-protocol client gave a wrong password", cx.peer);
                Err(KvsError::InvalidArgument(
                    "wrong password: the server refused the password given".to_string(),
                ))
            }
        }
        _ if needs_password => Err(KvsError::InvalidArgument(
            "authentication required: this server has a password; give it first \
             (KvsClient::auth, kvs.Client(password=...), kvs-client --password)"
                .to_string(),
        )),
        Request::Get { key } => {
            // The value goes from the engine straight into the reply, copied once.
            let mut too_large = None;
            let read = engine.read_bytes(key, &mut |value| {
                // Room for the value and its framing, so a large reply is not regrown.
                let len = value.map_or(0, <[u8]>::len);
                if len <= max_frame_len {
                    out.reserve(len + 16);
                }
                if Response::Value(value)
                    .encode_frame(out, max_frame_len)
                    .is_err()
                {
                    too_large = Some(len);
                }
            });
            match (read, too_large) {
                (Ok(()), None) => return Ok(()),
                (Ok(()), Some(len)) => Err(KvsError::InvalidArgument(format!(
                    "the value is {len} bytes, too large for a reply frame (limit \
                     {max_frame_len} bytes)"
                ))),
                (Err(e), _) => Err(e),
            }
        }
        Request::Set { key, value } => engine.set_bytes(key, value),
        Request::Remove { key } => engine.remove_bytes(key),
        // Durable as a Set: the reply is encoded only once the engine has carried it out.
        Request::CompareAndSet { key, expected, new } => {
            match engine.compare_and_set_bytes(key, expected, new) {
                Ok(swapped) => return Response::Swapped(swapped).encode_frame(out, max_frame_len),
                Err(e) => Err(e),
            }
        }
        Request::ApplyBatch { ops } => {
            let batch = WriteBatch::from(ops.iter().map(BatchOp::from).collect::<Vec<_>>());
            engine.apply_batch(&batch)
        }
        Request::GetMany { keys } => {
            let keys: Vec<&[u8]> = keys.iter().collect();
            match engine.get_many_bytes(&keys) {
                Ok(values) => match answer_values(&values, out, max_frame_len) {
                    Ok(()) => return Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Request::SetWithDeadline {
            key,
            value,
            deadline,
        } => engine.set_with_deadline_bytes(key, value, deadline),
        Request::ExpireAt { key, deadline } => match engine.expire_at_bytes(key, deadline) {
            Ok(was_set) => return Response::Bool(was_set).encode_frame(out, max_frame_len),
            Err(e) => Err(e),
        },
        Request::Persist { key } => match engine.persist_bytes(key) {
            Ok(had_deadline) => {
                return Response::Bool(had_deadline).encode_frame(out, max_frame_len)
            }
            Err(e) => Err(e),
        },
        Request::Expiry { key } => match engine.expiry_bytes(key) {
            Ok(expiry) => return Response::Expiry(expiry).encode_frame(out, max_frame_len),
            Err(e) => Err(e),
        },
        Request::Scan {
            cursor,
            count,
            prefix,
            pattern,
        } => {
            let filter = ScanFilter {
                prefix: prefix.to_vec(),
                pattern: pattern.map(<[u8]>::to_vec),
            };
            match answer_scan(engine, cursor, count, &filter, out, max_frame_len) {
                Ok(()) => return Ok(()),
                Err(e) => Err(e),
            }
        }
        Request::Checkpoint { path } => {
            let result = engine.checkpoint(Path::new(path));
            if result.is_ok() {
                log::info!("checkpoint written to {path}");
            }
            result
        }
    };
    match result {
        Ok(()) => Response::Ok.encode_frame(out, max_frame_len),
        Err(e) => {
            // The client's mistakes are answered, not logged: the server is fine.
            match e.kind() {
                ErrorKind::KeyNotFound | ErrorKind::InvalidArgument => {}
                _ => log::error!("request failed: {e}"),
            }
            let message = e.to_string();
            Response::error(&e, &message).encode_frame(out, max_frame_len)
        }
    }
}

/// The most keys one `Scan` request looks at, whatever count it asks for: the engine holds
/// memory for about that many keys while it answers, and a page is sent whole. A walk still
/// visits every key; it takes more pages.
pub(super) const MAX_SCAN_COUNT: usize = 1 << 16;

/// Appends the `Values` reply to a `GetMany`, or fails with [`KvsError::InvalidArgument`]
/// (and appends nothing) when the values do not fit in one reply frame.
fn answer_values(
    values: &[Option<Vec<u8>>],
    out: &mut Vec<u8>,
    max_frame_len: usize,
) -> Result<()> {
    let too_large = |total: usize| {
        KvsError::InvalidArgument(format!(
            "the {} values asked for are {total} bytes in all, too large for a reply frame \
             (limit {max_frame_len} bytes); ask for fewer keys at a time",
            values.len()
        ))
    };
    let total = values
        .iter()
        .map(|v| v.as_ref().map_or(0, Vec::len))
        .fold(0usize, usize::saturating_add);
    if total > max_frame_len {
        // Not even encoded: the reply could only be refused.
        return Err(too_large(total));
    }
    let views: Vec<Option<&[u8]>> = values.iter().map(Option::as_deref).collect();
    // Room for the values and their framing, so a large reply is copied once.
    out.reserve(total + 16 + 10 * values.len());
    Response::Values(List::new(&views))
        .encode_frame(out, max_frame_len)
        .map_err(|_| too_large(total))
}

/// Appends the `Page` reply to a `Scan`. A page too large for one reply frame is asked for
/// again from the same cursor with half the count, until it fits: the walk goes on in
/// smaller pages. Only a single key too large for a frame is refused
/// ([`KvsError::InvalidArgument`]).
fn answer_scan<E: KvsEngine>(
    engine: &E,
    cursor: u64,
    count: u64,
    filter: &ScanFilter,
    out: &mut Vec<u8>,
    max_frame_len: usize,
) -> Result<()> {
    let mut count = usize::try_from(count).map_or(MAX_SCAN_COUNT, |c| c.min(MAX_SCAN_COUNT));
    loop {
        let page = engine.scan_bytes(cursor, count, filter)?;
        let keys: Vec<&[u8]> = page.keys.iter().map(Vec::as_slice).collect();
        let response = Response::Page {
            cursor: page.cursor,
            keys: List::new(&keys),
        };
        match response.encode_frame(out, max_frame_len) {
            Ok(()) => return Ok(()),
            Err(_) if count > 1 => count /= 2,
            Err(_) => {
                return Err(KvsError::InvalidArgument(format!(
                    "the key after cursor {cursor} is too large for a reply frame (limit \
                     {max_frame_len} bytes)"
                )))
            }
        }
    }
}
