//! A RESP connection's request loop: cuts requests out of the received bytes, has the command
//! table ([`commands`](super::commands)) carry them out in order, and appends their replies.
//! The server's connection owns the buffers and the socket; this owns the parsing state between
//! reads, and the [`Batch`] of writes held back while one input is served.

use std::ops::Range;
use std::time::Instant;

use super::commands::transactions::{run_requests, Multi};
use super::commands::{dispatch, Context};
use super::frame::{write_error, write_simple, Limits, RequestParser, RequestStatus};
use super::request::{Args, Client, Outcome};
use crate::server::state::{ClientInfo, ServerState};
use crate::{KvsEngine, KvsError, Result};

/// The RESP state of one connection.
#[derive(Debug, Clone)]
pub struct Session {
    parser: RequestParser,
    /// The limits of an authenticated client (or of any, without a server password).
    limits: Limits,
    client: Client,
    /// Bytes the request being received needs at least, once known.
    needed: Option<usize>,
    /// `MULTI`'s queue and the watched keys. Dropped with the session: closing the
    /// connection discards the transaction.
    multi: Multi,
}

/// What [`Session::serve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of input used up by the requests carried out.
    pub consumed: usize,
    /// How many requests were carried out.
    pub requests: usize,
    /// A `QUIT` was carried out: send the replies, then close. Input after it is ignored.
    pub close: bool,
    /// How many `SET`s, the last requests carried out, were handed to the [`GroupWrite`]
    /// instead of being written: their replies are appended by [`answer_group`] once the
    /// group is written, and nothing more of this connection's input may be carried out
    /// before.
    pub deferred: usize,
}

/// Plain `SET`s of several connections, held to be written together with one
/// `set_many_bytes` (one system call for the kvs engine) instead of one write per connection.
///
/// Without pipelining, each of many connections sends one `SET` and waits for its reply; a
/// worker woken for several of them at once would otherwise write the log once for each.
/// Only the run of `SET`s that ends a connection's input joins the group (any other request
/// writes the `SET`s before it first), so its replies are the last ones of that input, and the
/// connection carries out nothing more until the group is written and answered. Keys and
/// values are copied, as each connection's input is its own.
#[derive(Debug, Default)]
pub(crate) struct GroupWrite {
    /// Keys and values, one after the other...
    buf: Vec<u8>,
    /// ... and each pair's, as ranges of `buf`.
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl GroupWrite {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        let key_at = self.buf.len()..self.buf.len() + key.len();
        self.buf.extend_from_slice(key);
        let value_at = self.buf.len()..self.buf.len() + value.len();
        self.buf.extend_from_slice(value);
        self.pairs.push((key_at, value_at));
    }

    /// Writes every held `SET` with one `set_many_bytes` and empties the group. An error is
    /// the reply for every one of them (some may have been written then, as after a lost
    /// connection).
    pub(crate) fn write<E: KvsEngine>(&mut self, engine: &E) -> std::result::Result<(), String> {
        let pairs: Vec<(&[u8], &[u8])> = self
            .pairs
            .iter()
            .map(|(key, value)| (&self.buf[key.clone()], &self.buf[value.clone()]))
            .collect();
        let result = engine.set_many_bytes(&pairs);
        self.pairs.clear();
        self.buf.clear();
        if self.buf.capacity() > GROUP_KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        result.map_err(|e| {
            log::error!("command failed: {e}");
            format!("ERR {e}")
        })
    }
}

/// The most bytes of keys and values a [`GroupWrite`] takes (1 MiB); a connection whose
/// `SET`s would take it past that writes them itself. Grouping pays for small writes, where the
/// system call is most of the cost, and the copy it makes stays small.
///
/// It also keeps every `SET` of a group within the engines' limits on keys and values, so
/// that no `SET` of a group can be refused for its own sake (which would fail the other
/// connections' `SET`s with it): the group fails only when the store does (read-only, I/O).
const GROUP_MAX_BYTES: usize = 1 << 20;
const _: () =
    assert!(GROUP_MAX_BYTES <= crate::MAX_KEY_LEN && GROUP_MAX_BYTES <= crate::MAX_VALUE_LEN);

/// A [`GroupWrite`]'s buffer larger than this is given back once written.
const GROUP_KEEP_CAPACITY: usize = GROUP_MAX_BYTES;

/// Appends the replies to `count` `SET`s of a connection written by a [`GroupWrite`]:
/// `result` is what [`GroupWrite::write`] returned.
pub(crate) fn answer_group(
    out: &mut Vec<u8>,
    state: &ServerState,
    count: usize,
    result: &std::result::Result<(), String>,
) {
    for _ in 0..count {
        state.command_processed();
        match result {
            Ok(()) => write_simple(out, "OK"),
            Err(message) => write_error(out, message),
        }
    }
}

impl Session {
    /// A session for the connection numbered `id`, refusing requests over `limits`. It
    /// speaks RESP2 until the client says `HELLO 3`.
    pub fn new(limits: Limits, id: u64) -> Session {
        Session {
            parser: RequestParser::new(limits),
            limits,
            client: Client::new(id),
            needed: None,
            multi: Multi::default(),
        }
    }

    /// The same, for a connection from `peer` that reached the server at `local`.
    pub fn with_addrs(
        mut self,
        peer: Option<std::net::SocketAddr>,
        local: Option<std::net::SocketAddr>,
    ) -> Session {
        self.client.local_addr = local;
        self.client.info = std::sync::Arc::new(ClientInfo::new(self.client.id, peer, local));
        self
    }

    /// What `CLIENT LIST` shows of this connection.
    pub fn client_info(&self) -> std::sync::Arc<ClientInfo> {
        self.client.info.clone()
    }

    /// Carries out the complete requests at the start of `input`, appending replies to `out`,
    /// until the input holds no complete request, a `QUIT` was seen, or `out` has grown by
    /// `budget` bytes (the rest waits until the client reads its replies).
    ///
    /// `now` is when this input arrived, as `CLIENT LIST` shows it (read once per input by
    /// the caller, not once per request: on some machines reading the clock costs as much as
    /// parsing a request).
    ///
    /// With a `group`, the `SET`s that end the input may be handed to it instead of written
    /// ([`Progress::deferred`] says how many).
    ///
    /// An error means the stream is malformed: [`write_refusal`] says why, and the
    /// connection must be closed (RESP cannot resynchronise).
    // The buffers and limits come from the connection one by one.
    #[allow(clippy::too_many_arguments)]
    pub fn serve<E: KvsEngine>(
        &mut self,
        engine: &E,
        state: &ServerState,
        input: &[u8],
        out: &mut Vec<u8>,
        budget: usize,
        now: Instant,
        group: Option<&mut GroupWrite>,
    ) -> Result<Progress> {
        self.client.active_at = now;
        let mut progress = Progress {
            consumed: 0,
            requests: 0,
            close: false,
            deferred: 0,
        };
        let mut batch = Batch::for_session();
        let mut cx = Context {
            engine,
            state,
            client: &mut self.client,
            out,
            multi: &mut self.multi,
        };
        let served = serve_requests(
            &mut self.parser,
            self.limits,
            &mut self.needed,
            &mut cx,
            &mut batch,
            input,
            budget,
            &mut progress,
        );
        // Whatever ended the loop, the writes held back are written and answered now, or
        // handed to the group to be written with other connections'.
        match group {
            Some(group) if served.is_ok() => progress.deferred = batch.hand_over(group, &mut cx),
            _ => batch.write(&mut cx),
        }
        self.client.publish();
        served.map(|()| progress)
    }

    /// How many bytes the request being received needs, counted from its start, when more
    /// than a header is known (so that the reader can make room for a long value at once).
    pub fn needed(&self) -> Option<usize> {
        self.needed.filter(|_| self.parser.is_started())
    }
}

/// The loop of [`Session::serve`]: carries out requests until the input holds no complete
/// one, a `QUIT` was seen, or the replies have grown by `budget` bytes. The session's fields
/// come one by one, as `cx` borrows its client.
// The session's fields come apart (the client is borrowed by `cx`), hence their number.
#[allow(clippy::too_many_arguments)]
fn serve_requests<'a>(
    parser: &mut RequestParser,
    limits: Limits,
    needed: &mut Option<usize>,
    cx: &mut Context<'_>,
    batch: &mut Batch<'a>,
    input: &'a [u8],
    budget: usize,
    progress: &mut Progress,
) -> Result<()> {
    let out_start = cx.out.len();
    while cx.out.len() - out_start < budget {
        let request = &input[progress.consumed..];
        // Before the password, requests are held to Redis's limits for unauthenticated
        // clients, so that a client without it cannot make the server buffer large requests.
        let locked = cx.state.requires_password() && !cx.client.authenticated;
        if !parser.is_started() {
            parser.set_limits(if locked { UNAUTHENTICATED } else { limits });
        }
        let status = match parser.parse(request) {
            Ok(status) => status,
            // Refused only by the tighter limits: said as Redis says it.
            Err(_) if locked && RequestParser::new(limits).parse(request).is_ok() => {
                let what = if multibulk_count(request).is_some_and(|n| n > UNAUTHENTICATED.max_args)
                {
                    "multibulk"
                } else {
                    "bulk"
                };
                return Err(KvsError::Protocol(format!(
                    "Protocol error: unauthenticated {what} length"
                )));
            }
            Err(e) => return Err(e),
        };
        match status {
            RequestStatus::Incomplete { needed: more } => {
                *needed = Some(more);
                break;
            }
            RequestStatus::Complete { end } => {
                *needed = None;
                let args = Args::new(request, parser.args());
                if is_http(args) {
                    return Err(KvsError::Protocol(
                        "Protocol error: an HTTP request, not RESP; closing".to_string(),
                    ));
                }
                let outcome = if args.is_empty() {
                    Outcome::Continue
                } else {
                    dispatch(args, cx, batch)
                };
                parser.reset();
                progress.consumed += end;
                progress.requests += 1;
                if outcome == Outcome::Close {
                    progress.close = true;
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The limits of a request from a client that has not given the server's password (Redis's):
/// at most 10 arguments of at most 16 KiB each. Anything larger is a protocol error, and the
/// connection is closed.
const UNAUTHENTICATED: Limits = Limits {
    max_args: 10,
    max_bulk_len: 16 << 10,
    max_request_len: 10 * (16 << 10),
};

/// The count of a multibulk request (`*<count>\r\n`), if `request` starts with one.
fn multibulk_count(request: &[u8]) -> Option<usize> {
    let rest = request.strip_prefix(b"*")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Whether a request is a line of HTTP (`POST ...` or a `Host:` header): a browser or an HTTP
/// client pointed at the server, or a web page trying to reach it across protocols. Redis
/// closes such connections instead of answering line after line of headers; so does kvs.
fn is_http(args: Args<'_, '_>) -> bool {
    let name = args.get(0);
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

/// Appends the reply to a malformed stream, as Redis sends it before closing: `-ERR
/// Protocol error: ...`.
pub fn write_refusal(out: &mut Vec<u8>, err: &KvsError) {
    match err {
        KvsError::Protocol(message) => write_error(out, &format!("ERR {message}")),
        other => write_error(out, &format!("ERR {other}")),
    }
}

/// Writes held back while an input is served, so that a run of them is written together
/// before the next other request is answered, or at the end of the input. Replies still come
/// in order, and only once the write has returned. Two kinds of run:
///
/// - the (key, value) pairs of requests that a command's batchable-write hook
///   ([`Command::batch`](super::commands::Command::batch)) lets through, today plain
///   `SET key value`s: written with one `set_many_bytes` (one system call for the kvs engine).
///   Keys and values borrow the input.
/// - in a session's batch ([`Batch::for_session`]), counter updates too (`INCR`, `DECR`,
///   `INCRBY`, `DECRBY`, `INCRBYFLOAT`, `APPEND`: [`HELD_UPDATES`]): a run of them, with the
///   `SET`s among them, runs as one engine transaction, each command as it would alone (the
///   same replies, each atomic), and is written as one batch. Copied, as the parser reuses its
///   list of arguments.
#[derive(Debug, Default)]
pub(crate) struct Batch<'a> {
    pairs: Vec<(&'a [u8], &'a [u8])>,
    /// Whether updates are held too (a session's batch; not inside `EXEC`, which is one
    /// transaction already).
    updates: bool,
    /// The held requests of a run of updates: their arguments, one after the other...
    buf: Vec<u8>,
    /// ... and each request's, as ranges of `buf`.
    requests: Vec<Vec<Range<usize>>>,
}

/// The commands a session's batch holds (see [`Batch`]): updates of one key, whose only
/// effect is that key's new value and the reply.
pub(crate) const HELD_UPDATES: &[&str] =
    &["append", "decr", "decrby", "incr", "incrby", "incrbyfloat"];

impl<'a> Batch<'a> {
    /// A batch that also holds updates ([`HELD_UPDATES`]).
    pub(crate) fn for_session() -> Batch<'a> {
        Batch {
            updates: true,
            ..Batch::default()
        }
    }

    /// Whether requests of `row_name` are held (by [`hold_request`](Batch::hold_request)).
    pub(crate) fn holds(&self, row_name: &str) -> bool {
        self.updates && HELD_UPDATES.contains(&row_name)
    }

    /// Holds back setting `key` to `value`, to be answered `+OK` once written.
    pub(crate) fn hold(&mut self, key: &'a [u8], value: &'a [u8]) {
        if self.requests.is_empty() {
            self.pairs.push((key, value));
        } else {
            // In a run of updates: a SET of the same transaction, in its place.
            self.copy(&[b"SET", key, value]);
        }
    }

    /// Holds back the request `args`, of a command [`holds`](Batch::holds) says yes to,
    /// writing any pairs held before it first.
    pub(crate) fn hold_request(&mut self, args: Args<'_, '_>, cx: &mut Context<'_>) {
        if !self.pairs.is_empty() {
            self.write(cx);
        }
        let args: Vec<&[u8]> = args.iter().collect();
        self.copy(&args);
    }

    fn copy(&mut self, args: &[&[u8]]) {
        let mut ranges = Vec::with_capacity(args.len());
        for arg in args {
            ranges.push(self.buf.len()..self.buf.len() + arg.len());
            self.buf.extend_from_slice(arg);
        }
        self.requests.push(ranges);
    }

    /// Hands the held pairs to `group` and returns how many, if nothing else is held and they
    /// fit ([`GROUP_MAX_BYTES`]); else writes them now, as [`write`](Batch::write) does, and
    /// returns 0.
    fn hand_over(&mut self, group: &mut GroupWrite, cx: &mut Context<'_>) -> usize {
        let bytes: usize = self.pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if !self.requests.is_empty() || group.buf.len() + bytes > GROUP_MAX_BYTES {
            self.write(cx);
            return 0;
        }
        let count = self.pairs.len();
        for (key, value) in self.pairs.drain(..) {
            group.push(key, value);
        }
        count
    }

    /// Writes what is held, and appends a reply for each request: for pairs, one
    /// `set_many_bytes` and `+OK`, or the error for all of them if the batch failed (some may
    /// then have been written, as after a lost connection); for a run of updates, one
    /// transaction and each command's reply, or the error for all of them (nothing written).
    pub(crate) fn write(&mut self, cx: &mut Context<'_>) {
        if !self.requests.is_empty() {
            let mut replies = Vec::new();
            let no_watch = Default::default();
            match run_requests(cx, &no_watch, &self.buf, &self.requests, &mut replies) {
                Ok(_) => cx.out.extend_from_slice(&replies),
                Err(e) => {
                    log::error!("command failed: {e}");
                    for _ in &self.requests {
                        write_error(cx.out, &format!("ERR {e}"));
                    }
                }
            }
            self.buf.clear();
            self.requests.clear();
            return;
        }
        if self.pairs.is_empty() {
            return;
        }
        let result = cx.engine.set_many_bytes(&self.pairs);
        if let Err(e) = &result {
            log::error!("command failed: {e}");
        }
        for _ in &self.pairs {
            cx.state.command_processed();
            match &result {
                Ok(()) => write_simple(cx.out, "OK"),
                Err(e) => write_error(cx.out, &format!("ERR {e}")),
            }
        }
        self.pairs.clear();
    }
}

#[cfg(test)]
impl Session {
    /// [`serve`](Session::serve) with no output budget, the clock now and no group: how the
    /// tests drive a session through one input.
    pub(crate) fn serve_all<E: KvsEngine>(
        &mut self,
        engine: &E,
        state: &ServerState,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress> {
        self.serve(engine, state, input, out, usize::MAX, Instant::now(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvStore;

    /// A pipeline mixing plain SETs (held back and written as batches) with other commands:
    /// every reply comes in request order, and reads see the writes before them.
    #[test]
    fn pipelined_sets_are_batched_and_answered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvStore::open(dir.path()).unwrap();
        let state = ServerState::new(0);
        let mut session = Session::new(Limits::for_frame_len(1 << 20), 1);
        let mut input = Vec::new();
        for command in [
            &["SET", "a", "1"][..],
            &["SET", "b", "2"],
            &["GET", "a"],
            &["SET", "a", "3"],
            &["SET", "c", "4", "NX"],
            &["SET", "a", "5"],
            &["GET", "a"],
            &["SET", "d", "6"],
        ] {
            input.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                input.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
            }
        }
        // A half-received request at the end waits; the SET before it is written anyway.
        input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r");
        let mut out = Vec::new();
        let progress = session
            .serve_all(&engine, &state, &input, &mut out)
            .unwrap();
        assert_eq!(progress.requests, 8);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+OK\r\n+OK\r\n$1\r\n1\r\n+OK\r\n+OK\r\n+OK\r\n$1\r\n5\r\n+OK\r\n"
        );
        assert_eq!(engine.get_bytes(b"d").unwrap(), Some(b"6".to_vec()));
        assert_eq!(engine.get_bytes(b"c").unwrap(), Some(b"4".to_vec()));
    }

    /// Pipelined updates (INCR and friends) are held and run together as one transaction,
    /// with the SETs among them: each gets the reply it would get alone (errors included),
    /// in order, and reads after them see their writes.
    #[test]
    fn pipelined_updates_run_together_and_answer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvStore::open(dir.path()).unwrap();
        let state = ServerState::new(0);
        let mut session = Session::new(Limits::for_frame_len(1 << 20), 1);
        let input = b"SET a 1\r\nINCR a\r\nSET b x\r\nINCR b\r\nINCRBY a 10\r\nAPPEND b y\r\n\
                      INCRBYFLOAT f 1.5\r\nDECR n\r\nGET a\r\nINCR a\r\nSET c 3\r\nINCR c\r\n";
        let mut out = Vec::new();
        let progress = session.serve_all(&engine, &state, input, &mut out).unwrap();
        assert_eq!(progress.requests, 12);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+OK\r\n:2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n:12\r\n\
             :2\r\n$3\r\n1.5\r\n:-1\r\n$2\r\n12\r\n:13\r\n+OK\r\n:4\r\n"
        );
        for (key, value) in [
            ("a", "13"),
            ("b", "xy"),
            ("c", "4"),
            ("f", "1.5"),
            ("n", "-1"),
        ] {
            assert_eq!(
                engine.get_bytes(key.as_bytes()).unwrap(),
                Some(value.as_bytes().to_vec()),
                "{key}"
            );
        }
    }

    /// Held SETs are answered before any reply that follows them, errors included: a request
    /// refused by dispatch (unknown, wrong arity) or by its command's parser (a bad option).
    #[test]
    fn held_sets_are_answered_before_errors_that_follow_them() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvStore::open(dir.path()).unwrap();
        let state = ServerState::new(0);
        let mut session = Session::new(Limits::for_frame_len(1 << 20), 1);
        let input = b"SET a 1\r\nNOPE\r\nSET b 2\r\nGET\r\nSET c 3\r\nSET c 4 BOGUS\r\nGET b\r\n";
        let mut out = Vec::new();
        let progress = session.serve_all(&engine, &state, input, &mut out).unwrap();
        assert_eq!(progress.requests, 7);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+OK\r\n-ERR unknown command 'NOPE', with args beginning with: \r\n\
             +OK\r\n-ERR wrong number of arguments for 'get' command\r\n\
             +OK\r\n-ERR syntax error\r\n$1\r\n2\r\n"
        );
        assert_eq!(engine.get_bytes(b"c").unwrap(), Some(b"3".to_vec()));
    }

    /// `CLIENT LIST` shows each connection's last command and its idle time, although the
    /// session publishes them once per input rather than per request: `CLIENT INFO` in the
    /// middle of a pipeline shows `cmd=client`, and after the input the last command of it.
    #[test]
    fn client_list_shows_the_last_command_of_each_input() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvStore::open(dir.path()).unwrap();
        let state = ServerState::new(0);
        let mut session = Session::new(Limits::for_frame_len(1 << 20), 1);
        let info = session.client_info();
        assert!(info.line(Instant::now()).contains(" cmd=NULL "));
        let arrived = Instant::now() - std::time::Duration::from_secs(5);
        let mut out = Vec::new();
        session
            .serve(
                &engine,
                &state,
                b"SET a 1\r\nCLIENT INFO\r\nGET a\r\nSET b 2\r\n",
                &mut out,
                usize::MAX,
                arrived,
                None,
            )
            .unwrap();
        let replies = String::from_utf8(out).unwrap();
        assert!(replies.contains(" cmd=client "), "{replies}");
        // The input arrived 5 s before: the connection has been idle since.
        let line = info.line(arrived + std::time::Duration::from_secs(5));
        assert!(line.contains(" cmd=set "), "{line}");
        assert!(line.contains(" idle=5 "), "{line}");
        // An input of nothing but an unknown command changes neither.
        let mut out = Vec::new();
        session
            .serve_all(&engine, &state, b"NOPE\r\n", &mut out)
            .unwrap();
        let line = info.line(arrived + std::time::Duration::from_secs(5));
        assert!(line.contains(" cmd=set "), "{line}");
        assert!(line.contains(" idle=5 "), "{line}");
    }

    /// The SETs that end an input join a group, unanswered and unwritten until the group is
    /// written; SETs followed by another request, or too large for the group, are written
    /// and answered at once.
    #[test]
    fn only_the_small_sets_that_end_an_input_join_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvStore::open(dir.path()).unwrap();
        let state = ServerState::new(0);
        let mut session = Session::new(Limits::for_frame_len(4 << 20), 1);
        let mut group = GroupWrite::default();
        let mut serve = |input: &[u8], group: &mut GroupWrite| {
            let mut out = Vec::new();
            let progress = session
                .serve(
                    &engine,
                    &state,
                    input,
                    &mut out,
                    usize::MAX,
                    Instant::now(),
                    Some(group),
                )
                .unwrap();
            (progress, String::from_utf8(out).unwrap())
        };
        let (progress, out) = serve(b"SET a 1\r\nSET b 2\r\n", &mut group);
        assert_eq!((progress.requests, progress.deferred), (2, 2));
        assert_eq!(out, "");
        let (progress, out) = serve(b"SET c 3\r\nGET c\r\n", &mut group);
        assert_eq!((progress.requests, progress.deferred), (2, 0));
        assert_eq!(out, "+OK\r\n$1\r\n3\r\n");
        let big = "x".repeat(GROUP_MAX_BYTES);
        let input = format!("*3\r\n$3\r\nSET\r\n$1\r\nd\r\n${}\r\n{big}\r\n", big.len());
        let (progress, out) = serve(input.as_bytes(), &mut group);
        assert_eq!((progress.requests, progress.deferred), (1, 0));
        assert_eq!(out, "+OK\r\n");
        assert_eq!(
            engine.get_bytes(b"d").unwrap().map(|v| v.len()),
            Some(big.len())
        );
        // Not written before the group is.
        assert_eq!(engine.get_bytes(b"a").unwrap(), None);
        let result = group.write(&engine);
        assert_eq!(result, Ok(()));
        assert_eq!(engine.get_bytes(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get_bytes(b"b").unwrap(), Some(b"2".to_vec()));
        let mut replies = Vec::new();
        answer_group(&mut replies, &state, 2, &result);
        assert_eq!(replies, b"+OK\r\n+OK\r\n");
        let mut replies = Vec::new();
        answer_group(&mut replies, &state, 2, &Err("ERR disk full".to_string()));
        assert_eq!(replies, b"-ERR disk full\r\n-ERR disk full\r\n");
    }
}
