//! Transactions, as Redis 7 has them: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one). A connection's transaction
//! state is a [`Multi`], which the session keeps between requests and hands to every command
//! in [`Context::multi`].
//!
//! # Queuing
//!
//! After `MULTI`, [`dispatch`](super::dispatch) hands every request to [`queue`]: one that
//! names no command, or has the wrong number of arguments, is answered with the error it
//! would get outside a transaction and marks the transaction aborted (`EXEC` then answers
//! `-EXECABORT Transaction discarded because of previous errors.`, as Redis does; an `EXEC`
//! with arguments, in a transaction or not, is refused with `-EXECABORT Transaction
//! discarded because of: ...` and ends any transaction); `EXEC`,
//! `DISCARD`, `MULTI`, `WATCH`, `QUIT` and `RESET` run at once (the last two end the
//! transaction, as the connection or its state goes away); anything else is copied into the
//! queue and answered `+QUEUED`. As in Redis, the other errors of a command (a bad option, a
//! value that is not an integer) come at `EXEC`, in its reply.
//!
//! The queue is bounded: at most [`MAX_QUEUED_BYTES`] bytes of arguments (counting 16 more per
//! argument for its place in the list), the size of the largest batch the kvs engine writes
//! at once, so that a transaction that fits can also be written. A request past that is
//! answered `-ERR MULTI queue is full ...` and aborts the transaction, as any queuing error
//! does; Redis itself only bounds it by the client's query buffer.
//!
//! # EXEC
//!
//! `EXEC` runs the queued commands in order as ONE [`Engine::transaction`]: every command
//! runs unchanged on [`InTransaction`], an [`Engine`] whose reads and writes go through the
//! transaction, so what they write is applied as one atomic batch (all of it or none, on disk
//! and for readers), and no other write of the store (another client's, or an embedded user's
//! of the same engine in this process) lands between the transaction's first read and its
//! write. A command that fails at run time puts its error in `EXEC`'s array and the others
//! still apply, as in Redis; a failure of the transaction itself (the batch is refused, or
//! the disk fails) is `EXEC`'s reply, an `ERR`, and nothing is written. Replies are collected
//! per run: with an engine that runs a transaction again after a conflict (sled), only the
//! last run's replies are sent. A command that runs its own transaction inside (`SET ... GET`,
//! `RENAME`, ...) gets one nested in `EXEC`'s: its writes reach `EXEC`'s transaction only if
//! it succeeds.
//!
//! What does not go through the transaction: `SCAN`, `KEYS`, `RANDOMKEY`, `DBSIZE` (and
//! `FLUSHALL`/`FLUSHDB`, which walk the keys) see the store as of before the transaction,
//! not the keys it has set or removed so far: a [`Transaction`] has no walk, and sled's
//! cannot even walk the store from inside one (its transaction holds a lock its walks need).
//! So walks are read on the engine outside the transaction ([`Walks`]): a run of the
//! transaction that asks for one not read yet writes nothing; the walk is read (with the pages
//! that follow it, up to [`READ_AHEAD_KEYS`] keys), and the transaction runs again. An `EXEC`
//! without walks runs once.
//!
//! # WATCH
//!
//! `WATCH` remembers, for each key, a fingerprint of what the key was then: whether it was
//! set, its deadline, the length of its value and a 64-bit hash of it (keyed at random per
//! process). `EXEC` reads each watched key again inside its transaction, before running
//! anything, and answers a null array (RESP2 `*-1`, RESP3 `_`), writing nothing, if one
//! differs: a key set to another value, removed, given another deadline, or expired, by
//! anyone (this or another client, or an embedded user of the engine). What it cannot see is
//! a change that leaves the key as it was: a write of the same value with the same deadline
//! (Redis aborts then; kvs runs the transaction, which finds what `WATCH` saw), or, with
//! odds of 2^-64 per changed key, a different value of the same length and hash. The engines
//! keep no version per key, so there is nothing else to compare. `EXEC`, `DISCARD`, `UNWATCH`
//! and the end of the connection forget the watched keys.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::OnceLock;

use super::{
    dispatch, handler, transact, Class, Command, Context, Engine, Keys, Row, TransactionFn,
    UpdateFn,
};
use crate::resp::frame::{write_array_len, write_error, write_simple, Version};
use crate::resp::request::{unknown_command, wrong_arity, Args, ErrorReply, Outcome};
use crate::resp::session::Batch;
use crate::{
    is_expired, now_millis, BatchOp, KeyExpiry, KvsError, Result, ScanFilter, ScanPage,
    Transaction, WriteBatch, MAX_BATCH_BYTES,
};

pub(super) const COMMANDS: &[Row] = &[
    Row {
        name: "multi",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "transactions",
        since: "1.2.0",
        summary: "Mark the start of a transaction block",
        handler: handler::<MultiCommand>(),
    },
    Row {
        name: "exec",
        arity: 1,
        flags: &["noscript", "loading", "stale", "skip_slowlog"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "transactions",
        since: "1.2.0",
        summary: "Execute all commands issued after MULTI",
        handler: handler::<Exec>(),
    },
    Row {
        name: "discard",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "transactions",
        since: "2.0.0",
        summary: "Discard all commands issued after MULTI",
        handler: handler::<Discard>(),
    },
    Row {
        name: "watch",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        class: Class::Connection,
        keys: Keys::ALL,
        group: "transactions",
        since: "2.2.0",
        summary: "Watch the given keys to determine execution of the MULTI/EXEC block",
        handler: handler::<Watch>(),
    },
    Row {
        name: "unwatch",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "transactions",
        since: "2.2.0",
        summary: "Forget about all watched keys",
        handler: handler::<Unwatch>(),
    },
];

/// How many bytes of arguments a `MULTI` queue holds at most (see the module docs).
pub(crate) const MAX_QUEUED_BYTES: usize = MAX_BATCH_BYTES;

/// What a queued argument costs beyond its bytes: its range in the list.
const ARG_OVERHEAD: usize = 16;

/// A connection's transaction state: the queue while in `MULTI`, and the watched keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Multi {
    /// `Some` between `MULTI` and `EXEC` or `DISCARD`.
    queue: Option<Queue>,
    /// Each watched key and what it was when watched.
    watched: HashMap<Vec<u8>, Fingerprint>,
}

impl Multi {
    /// Whether the connection is between `MULTI` and `EXEC`/`DISCARD`.
    pub(crate) fn is_queuing(&self) -> bool {
        self.queue.is_some()
    }

    /// Forgets the queue and the watched keys (`DISCARD`, `RESET`).
    pub(crate) fn clear(&mut self) {
        self.queue = None;
        self.watched.clear();
    }
}

/// The commands queued since `MULTI`.
#[derive(Debug, Clone, Default)]
struct Queue {
    /// The arguments of every queued request, one after the other.
    buf: Vec<u8>,
    /// Each request's arguments, as ranges of `buf`.
    requests: Vec<Vec<Range<usize>>>,
    /// What the queue holds, counted as [`MAX_QUEUED_BYTES`] counts it.
    bytes: usize,
    /// A request was refused while queuing: `EXEC` aborts.
    aborted: bool,
}

/// What a watched key was: `None` if it was not set, else its deadline and its value's length
/// and hash.
pub(crate) type Fingerprint = Option<(Option<u64>, usize, u64)>;

/// The fingerprint of `key` as `tx` sees it.
fn fingerprint(tx: &mut dyn Transaction, key: &[u8]) -> Result<Fingerprint> {
    let deadline = match tx.expiry(key)? {
        KeyExpiry::Missing => return Ok(None),
        KeyExpiry::Never => None,
        KeyExpiry::At(deadline) => Some(deadline),
    };
    Ok(tx
        .get(key)?
        .map(|value| (deadline, value.len(), hasher().hash_one(&value))))
}

/// The process's hash keys for fingerprints, drawn at random once.
fn hasher() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

/// A request made while queuing (see the module docs): queued and answered `+QUEUED`, refused
/// (aborting the transaction), or run at once. `row` is the command it names, if any.
pub(super) fn queue<'a>(
    row: Option<&'static Row>,
    args: Args<'a, '_>,
    cx: &mut Context<'_>,
    batch: &mut Batch<'a>,
) -> Outcome {
    batch.write(cx);
    let refused = match row {
        None => unknown_command(args),
        Some(row) if !row.accepts(args.len()) && row.name == "exec" => {
            return refuse_exec(&wrong_arity(row.name), cx);
        }
        Some(row) if !row.accepts(args.len()) => wrong_arity(row.name),
        Some(row) => match row.name {
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset" => {
                if matches!(row.name, "quit" | "reset") {
                    cx.multi.clear();
                }
                return (row.handler)(args, cx, batch);
            }
            _ => {
                let Some(queue) = cx.multi.queue.as_mut() else {
                    return (row.handler)(args, cx, batch);
                };
                let bytes: usize = args.iter().map(|arg| arg.len() + ARG_OVERHEAD).sum();
                if queue.bytes + bytes <= MAX_QUEUED_BYTES {
                    let mut ranges = Vec::with_capacity(args.len());
                    for arg in args.iter() {
                        ranges.push(queue.buf.len()..queue.buf.len() + arg.len());
                        queue.buf.extend_from_slice(arg);
                    }
                    queue.requests.push(ranges);
                    queue.bytes += bytes;
                    write_simple(cx.out, "QUEUED");
                    return Outcome::Continue;
                }
                format!(
                    "ERR MULTI queue is full: the commands queued take more than \
                     {MAX_QUEUED_BYTES} bytes; the transaction is discarded at EXEC"
                )
            }
        },
    };
    if let Some(queue) = cx.multi.queue.as_mut() {
        queue.aborted = true;
    }
    write_error(cx.out, &refused);
    Outcome::Continue
}

/// Refuses an `EXEC` (with or without `MULTI`) whose request is wrong, as Redis does: it ends
/// any transaction and says why, as `EXECABORT`.
pub(super) fn refuse_exec(reason: &str, cx: &mut Context<'_>) -> Outcome {
    cx.multi.clear();
    let reason = reason.strip_prefix("ERR ").unwrap_or(reason);
    write_error(
        cx.out,
        &format!("EXECABORT Transaction discarded because of: {reason}"),
    );
    Outcome::Continue
}

struct MultiCommand;

impl Command for MultiCommand {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        if cx.multi.is_queuing() {
            // As in Redis, this does not abort the transaction.
            write_error(cx.out, "ERR MULTI calls can not be nested");
        } else {
            cx.multi.queue = Some(Queue::default());
            write_simple(cx.out, "OK");
        }
        Ok(Outcome::Continue)
    }
}

struct Discard;

impl Command for Discard {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        if cx.multi.is_queuing() {
            cx.multi.clear();
            write_simple(cx.out, "OK");
        } else {
            write_error(cx.out, "ERR DISCARD without MULTI");
        }
        Ok(Outcome::Continue)
    }
}

struct Watch;

impl Command for Watch {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(keys: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        if cx.multi.is_queuing() {
            // As in Redis, this does not abort the transaction.
            write_error(cx.out, "ERR WATCH inside MULTI is not allowed");
            return Ok(Outcome::Continue);
        }
        // All the keys as of one point in time.
        let seen = transact(cx.engine, |tx| {
            keys.iter()
                .map(|key| Ok((key, fingerprint(tx, key)?)))
                .collect::<Result<Vec<_>>>()
        })?;
        for (key, fingerprint) in seen {
            // A key watched again keeps what it was first watched as, as Redis keeps
            // watching from the first WATCH.
            cx.multi.watched.entry(key.to_vec()).or_insert(fingerprint);
        }
        write_simple(cx.out, "OK");
        Ok(Outcome::Continue)
    }
}

struct Unwatch;

impl Command for Unwatch {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        cx.multi.watched.clear();
        write_simple(cx.out, "OK");
        Ok(Outcome::Continue)
    }
}

struct Exec;

impl Command for Exec {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        let Some(queue) = cx.multi.queue.take() else {
            write_error(cx.out, "ERR EXEC without MULTI");
            return Ok(Outcome::Continue);
        };
        let watched = std::mem::take(&mut cx.multi.watched);
        if queue.aborted {
            write_error(
                cx.out,
                "EXECABORT Transaction discarded because of previous errors.",
            );
            return Ok(Outcome::Continue);
        }
        let mut replies = Vec::new();
        let ran = run_requests(cx, &watched, &queue.buf, &queue.requests, &mut replies);
        match ran {
            Ok(true) => {
                write_array_len(cx.out, queue.requests.len());
                cx.out.extend_from_slice(&replies);
            }
            // A watched key changed: the null array.
            Ok(false) => match cx.client.version {
                Version::Resp2 => cx.out.extend_from_slice(b"*-1\r\n"),
                Version::Resp3 => cx.out.extend_from_slice(b"_\r\n"),
            },
            Err(e) => return Err(e),
        }
        Ok(Outcome::Continue)
    }
}

/// Runs `requests` (each the ranges of its arguments in `buf`) in order as one
/// [`Engine::transaction`] on `cx.engine`, their replies appended to `replies`: what `EXEC`
/// does, and what the session does with a run of held writes ([`Batch`]). `Ok(false)`, with
/// nothing run or written, if a key of `watched` is no longer what it was. Held requests are
/// never `MULTI`, `EXEC`, `DISCARD` or `WATCH`; an `UNWATCH` among them finds nothing to
/// forget.
pub(crate) fn run_requests(
    cx: &mut Context<'_>,
    watched: &HashMap<Vec<u8>, Fingerprint>,
    buf: &[u8],
    requests: &[Vec<Range<usize>>],
    replies: &mut Vec<u8>,
) -> Result<bool> {
    let engine = cx.engine;
    let (state, client) = (cx.state, &mut *cx.client);
    // The walks of the store (SCAN, DBSIZE, ...) the commands asked for, read outside the
    // transaction (see `Walks`): each run that asks for one not read yet writes nothing, and
    // runs again once it has been read.
    let mut walks = Walks::default();
    loop {
        let missing = RefCell::new(None);
        let ran = transact(engine, |tx| {
            // This run's replies only (sled may run it again).
            replies.clear();
            *missing.borrow_mut() = None;
            for (key, seen) in watched {
                if fingerprint(tx, key)? != *seen {
                    return Ok(false);
                }
            }
            let inner = InTransaction {
                tx: RefCell::new(tx),
                walks: &walks,
                missing: &missing,
            };
            let mut multi = Multi::default();
            let mut cx = Context {
                engine: &inner,
                state,
                client: &mut *client,
                out: &mut *replies,
                multi: &mut multi,
            };
            for ranges in requests {
                // A batch that holds nothing but plain SETs: they are written through the
                // transaction anyway.
                let mut batch = Batch::default();
                dispatch(Args::new(buf, ranges), &mut cx, &mut batch);
                batch.write(&mut cx);
            }
            if missing.borrow().is_some() {
                // Nothing of this run is kept.
                return Err(KvsError::InvalidArgument(
                    "EXEC needs a walk of the store first".to_string(),
                ));
            }
            Ok(true)
        });
        match missing.into_inner() {
            Some(walk) => walks.read(engine, walk)?,
            None => return ran,
        }
    }
}

/// The engine as the commands of an `EXEC` see it: every read and write of a key goes
/// through the transaction `tx` (a transaction begun inside is a [`Nested`] one); walks of the
/// keys and `DBSIZE` are answered from `walks`, read before the transaction (see the module
/// docs), and one not read yet is noted in `missing` and fails.
struct InTransaction<'t, 'w> {
    tx: RefCell<&'t mut dyn Transaction>,
    walks: &'w Walks,
    missing: &'w RefCell<Option<Walk>>,
}

/// A walk of the store a command inside `EXEC` asked for.
#[derive(Debug, Clone)]
enum Walk {
    Len,
    Keys,
    Scan(u64, usize, ScanFilter),
}

/// The key of a page of [`Walks::pages`]: cursor, count, prefix and pattern.
type PageKey = (u64, usize, Vec<u8>, Option<Vec<u8>>);

fn page_key(cursor: u64, count: usize, filter: &ScanFilter) -> PageKey {
    (cursor, count, filter.prefix.clone(), filter.pattern.clone())
}

/// What the commands of an `EXEC` read of the store as a whole, read on the engine outside
/// its transaction: the engine cannot walk its keys from inside one (sled's transactions
/// hold a lock its walks need). Read before the transaction runs (again), so they are the
/// store as of before the transaction's writes.
#[derive(Debug, Default)]
struct Walks {
    len: Option<usize>,
    keys: Option<Vec<Vec<u8>>>,
    pages: HashMap<PageKey, ScanPage>,
}

/// How many keys [`Walks::read`] reads ahead along a walk, at most: the pages after the one
/// asked for, which a command that walks the whole store (`FLUSHALL`, `KEYS` through `SCAN`)
/// asks for next, so that each run of the transaction does not stop at the next page.
const READ_AHEAD_KEYS: usize = 1 << 16;

impl Walks {
    /// Reads `walk` on `engine`, and for a page the pages after it along the walk (up to
    /// [`READ_AHEAD_KEYS`] keys).
    fn read(&mut self, engine: &dyn Engine, walk: Walk) -> Result<()> {
        match walk {
            Walk::Len => self.len = Some(engine.len()?),
            Walk::Keys => self.keys = Some(engine.keys()?),
            Walk::Scan(mut cursor, count, filter) => {
                let mut read = 0;
                loop {
                    let page = engine.scan_bytes(cursor, count, &filter)?;
                    let next = page.cursor;
                    read += page.keys.len().max(1);
                    self.pages.insert(page_key(cursor, count, &filter), page);
                    if next == 0
                        || read >= READ_AHEAD_KEYS
                        || self.pages.contains_key(&page_key(next, count, &filter))
                    {
                        return Ok(());
                    }
                    cursor = next;
                }
            }
        }
        Ok(())
    }
}

impl InTransaction<'_, '_> {
    fn with<R>(&self, f: impl FnOnce(&mut dyn Transaction) -> Result<R>) -> Result<R> {
        // Never borrowed twice: no method calls another while it holds the borrow, and the
        // commands run one at a time on this thread.
        let mut tx = self.tx.try_borrow_mut().map_err(|_| {
            KvsError::InvalidArgument("the transaction is already in use".to_string())
        })?;
        f(&mut **tx)
    }

    /// `found`, or the error that says `walk` must be read first (and notes it).
    fn walked<T: Clone>(&self, found: Option<&T>, walk: Walk) -> Result<T> {
        match found {
            Some(found) => Ok(found.clone()),
            None => {
                *self.missing.borrow_mut() = Some(walk);
                Err(KvsError::InvalidArgument(
                    "EXEC needs a walk of the store first".to_string(),
                ))
            }
        }
    }

    /// The value of `key` and its deadline, `None` if it is not set.
    fn entry(tx: &mut dyn Transaction, key: &[u8]) -> Result<Entry> {
        let deadline = match tx.expiry(key)? {
            KeyExpiry::Missing => return Ok(None),
            KeyExpiry::Never => None,
            KeyExpiry::At(deadline) => Some(deadline),
        };
        Ok(tx.get(key)?.map(|value| (value, deadline)))
    }
}

impl Engine for InTransaction<'_, '_> {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.with(|tx| tx.set(key, value, None))
    }
    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|tx| tx.get(key))
    }
    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        self.with(|tx| {
            for (key, value) in pairs {
                tx.set(key, value, None)?;
            }
            Ok(())
        })
    }
    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        self.with(|tx| match tx.remove(key)? {
            true => Ok(()),
            false => Err(KvsError::KeyNotFound),
        })
    }
    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        self.with(|tx| Ok(tx.expiry(key)? != KeyExpiry::Missing))
    }
    fn len(&self) -> Result<usize> {
        self.walked(self.walks.len.as_ref(), Walk::Len)
    }
    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.with(|tx| {
            let entry = Self::entry(tx, key)?;
            if entry.as_ref().map(|(value, _)| value.as_slice()) != expected {
                return Ok(false);
            }
            match new {
                // As the engines do, the key keeps its deadline.
                Some(value) => tx.set(key, value, entry.and_then(|(_, deadline)| deadline))?,
                None => {
                    tx.remove(key)?;
                }
            }
            Ok(true)
        })
    }
    fn update_bytes(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<Option<Vec<u8>>> {
        self.with(|tx| {
            let entry = Self::entry(tx, key)?;
            let new = f(entry.as_ref().map(|(value, _)| value.as_slice()));
            match (&new, entry) {
                // The key keeps its deadline, as with the engines.
                (Some(value), Some((_, deadline))) => tx.set(key, value, deadline)?,
                (Some(value), None) => tx.set(key, value, None)?,
                (None, Some(_)) => {
                    tx.remove(key)?;
                }
                (None, None) => {}
            }
            Ok(new)
        })
    }
    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.walked(self.walks.keys.as_ref(), Walk::Keys)
    }
    fn apply_batch(&self, batch: &WriteBatch) -> Result<()> {
        self.with(|tx| {
            for op in batch.ops() {
                match op {
                    BatchOp::Set {
                        key,
                        value,
                        deadline,
                    } => tx.set(key, value, *deadline)?,
                    BatchOp::Remove { key } => {
                        tx.remove(key)?;
                    }
                }
            }
            Ok(())
        })
    }
    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.with(|tx| keys.iter().map(|key| tx.get(key)).collect())
    }
    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()> {
        self.with(|tx| tx.set(key, value, Some(deadline)))
    }
    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool> {
        self.with(|tx| match Self::entry(tx, key)? {
            None => Ok(false),
            Some((value, _)) => tx.set(key, &value, Some(deadline)).map(|()| true),
        })
    }
    fn persist_bytes(&self, key: &[u8]) -> Result<bool> {
        self.with(|tx| match Self::entry(tx, key)? {
            Some((value, Some(_))) => tx.set(key, &value, None).map(|()| true),
            _ => Ok(false),
        })
    }
    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry> {
        self.with(|tx| tx.expiry(key))
    }
    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage> {
        let page = self.walks.pages.get(&page_key(cursor, count, filter));
        self.walked(page, Walk::Scan(cursor, count, filter.clone()))
    }
    /// `BGSAVE` queued in `MULTI` (`SAVE` may not be): the transaction's own writes are not
    /// applied yet, so a flush from inside it would not cover them; refused.
    fn flush(&self) -> Result<()> {
        Err(KvsError::InvalidArgument(
            "a flush to disk cannot run inside a transaction: send it after EXEC".into(),
        ))
    }
    fn transaction(&self, f: &mut TransactionFn<'_>) -> Result<()> {
        self.with(|tx| {
            // A transaction inside: its writes are held apart and reach `tx` only if `f`
            // returns `Ok`, so that an `Err` writes nothing, as the engines promise.
            let mut nested = Nested {
                outer: tx,
                writes: HashMap::new(),
            };
            f(&mut nested)?;
            for (key, write) in nested.writes {
                match write {
                    Some((value, deadline)) => tx.set(&key, &value, deadline)?,
                    None => {
                        tx.remove(&key)?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// A transaction begun inside an `EXEC`'s: reads see `outer` and the writes made here so far,
/// which are kept in `writes` (each key's last: its value and deadline, or `None` for removed)
/// until the caller applies them.
struct Nested<'o> {
    outer: &'o mut dyn Transaction,
    writes: HashMap<Vec<u8>, Entry>,
}

/// A key as a [`Nested`] transaction left it: its value and deadline, or `None` if removed.
type Entry = Option<(Vec<u8>, Option<u64>)>;

impl Transaction for Nested<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(write) => Ok(write.as_ref().map(|(value, _)| value.clone())),
            None => self.outer.get(key),
        }
    }
    fn expiry(&mut self, key: &[u8]) -> Result<KeyExpiry> {
        match self.writes.get(key) {
            Some(None) => Ok(KeyExpiry::Missing),
            Some(Some((_, None))) => Ok(KeyExpiry::Never),
            Some(Some((_, Some(deadline)))) => Ok(KeyExpiry::At(*deadline)),
            None => self.outer.expiry(key),
        }
    }
    fn set(&mut self, key: &[u8], value: &[u8], deadline: Option<u64>) -> Result<()> {
        let write = match deadline {
            // A deadline that has passed removes the key.
            Some(deadline) if is_expired(deadline, now_millis()) => None,
            _ => Some((value.to_vec(), deadline)),
        };
        self.writes.insert(key.to_vec(), write);
        Ok(())
    }
    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        let was = self.expiry(key)? != KeyExpiry::Missing;
        self.writes.insert(key.to_vec(), None);
        Ok(was)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Server;
    use super::*;
    use crate::resp::frame::Limits;
    use crate::resp::session::Session;
    use crate::server::state::ServerState;
    use crate::{KvStore, KvsEngine};

    /// The replies redis-server 7.0 gives to the same requests (recorded from it; the
    /// end-to-end test `redis_multi` compares the two servers live).
    #[test]
    fn replies_and_errors_are_redis_s() {
        for mut server in Server::both() {
            server.check(&[
                ("MULTI", "+OK\r\n"),
                ("MULTI", "-ERR MULTI calls can not be nested\r\n"),
                ("WATCH a", "-ERR WATCH inside MULTI is not allowed\r\n"),
                ("SET a 1", "+QUEUED\r\n"),
                // Neither error above aborts the transaction.
                ("EXEC", "*1\r\n+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                (
                    "NOPE x",
                    "-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n",
                ),
                (
                    "GET",
                    "-ERR wrong number of arguments for 'get' command\r\n",
                ),
                ("SET a 2", "+QUEUED\r\n"),
                (
                    "EXEC",
                    "-EXECABORT Transaction discarded because of previous errors.\r\n",
                ),
                ("GET a", "$1\r\n1\r\n"),
                ("EXEC", "-ERR EXEC without MULTI\r\n"),
                ("DISCARD", "-ERR DISCARD without MULTI\r\n"),
                ("MULTI", "+OK\r\n"),
                ("SET a 3", "+QUEUED\r\n"),
                ("DISCARD", "+OK\r\n"),
                ("GET a", "$1\r\n1\r\n"),
                ("MULTI", "+OK\r\n"),
                ("SET a x", "+QUEUED\r\n"),
                ("INCR a", "+QUEUED\r\n"),
                ("SET b 1 BOGUS", "+QUEUED\r\n"),
                ("UNWATCH", "+QUEUED\r\n"),
                ("APPEND b 2", "+QUEUED\r\n"),
                (
                    "EXEC",
                    "*5\r\n+OK\r\n-ERR value is not an integer or out of range\r\n\
                     -ERR syntax error\r\n+OK\r\n:1\r\n",
                ),
                ("MGET a b", "*2\r\n$1\r\nx\r\n$1\r\n2\r\n"),
                ("MULTI", "+OK\r\n"),
                ("EXEC", "*0\r\n"),
                ("MULTI", "+OK\r\n"),
                ("SET a 9", "+QUEUED\r\n"),
                (
                    "EXEC x",
                    "-EXECABORT Transaction discarded because of: \
                     wrong number of arguments for 'exec' command\r\n",
                ),
                ("EXEC", "-ERR EXEC without MULTI\r\n"),
                ("GET a", "$1\r\nx\r\n"),
                (
                    "EXEC x",
                    "-EXECABORT Transaction discarded because of: \
                     wrong number of arguments for 'exec' command\r\n",
                ),
            ]);
        }
    }

    /// Nothing queued is applied before EXEC, and EXEC runs the commands in order, each
    /// seeing the writes of the ones before it; with an engine that runs a transaction twice
    /// (as sled may), the reply is the last run's and every write is applied once.
    #[test]
    fn exec_applies_the_queue_in_order_once() {
        for mut server in Server::both() {
            server.check(&[
                ("SET n 10", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("INCR n", "+QUEUED\r\n"),
                ("SET k v", "+QUEUED\r\n"),
                ("SET k w GET", "+QUEUED\r\n"),
                ("INCRBY n 5", "+QUEUED\r\n"),
                ("DEL k", "+QUEUED\r\n"),
                ("GET n", "+QUEUED\r\n"),
            ]);
            assert_eq!(server.engine.get_bytes(b"n").unwrap(), Some(b"10".to_vec()));
            assert_eq!(server.engine.get_bytes(b"k").unwrap(), None);
            server.check(&[(
                "EXEC",
                "*6\r\n:11\r\n+OK\r\n$1\r\nv\r\n:16\r\n:1\r\n$2\r\n16\r\n",
            )]);
            assert_eq!(server.engine.get_bytes(b"n").unwrap(), Some(b"16".to_vec()));
            assert_eq!(server.engine.get_bytes(b"k").unwrap(), None);
        }
    }

    /// A key changed after WATCH, by anyone (here straight on the engine, as an embedded user
    /// would), removed, given a deadline or expired makes EXEC answer the null array and write
    /// nothing; a key left as it was lets EXEC run. EXEC forgets the watched keys.
    #[test]
    fn watch_aborts_exec_when_a_watched_key_changed() {
        for mut server in Server::both() {
            server.check(&[("SET w 1", "+OK\r\n"), ("WATCH w nokey", "+OK\r\n")]);
            server.engine.set_bytes(b"w", b"2").unwrap();
            server.check(&[
                ("MULTI", "+OK\r\n"),
                ("SET out 1", "+QUEUED\r\n"),
                ("EXEC", "*-1\r\n"),
                ("GET out", "$-1\r\n"),
                // Forgotten: the next transaction runs.
                ("MULTI", "+OK\r\n"),
                ("SET out 1", "+QUEUED\r\n"),
                ("EXEC", "*1\r\n+OK\r\n"),
                // Unchanged keys (one set, one missing) let EXEC run.
                ("WATCH w nokey", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("INCR w", "+QUEUED\r\n"),
                ("EXEC", "*1\r\n:3\r\n"),
            ]);
            // A key that appears, a deadline given, a removal: each aborts.
            for change in ["SET nokey 1", "PEXPIRE w 100000", "DEL w"] {
                server.line("DEL nokey");
                server.check(&[("SET w 3", "+OK\r\n"), ("WATCH w nokey", "+OK\r\n")]);
                server.line(change);
                server.check(&[
                    ("MULTI", "+OK\r\n"),
                    ("SET out 2", "+QUEUED\r\n"),
                    ("EXEC", "*-1\r\n"),
                    ("GET out", "$1\r\n1\r\n"),
                ]);
            }
            // Expiry: the key was set with a deadline that passes before EXEC.
            server.check(&[("SET e 1 PX 30", "+OK\r\n"), ("WATCH e", "+OK\r\n")]);
            std::thread::sleep(std::time::Duration::from_millis(60));
            server.check(&[
                ("MULTI", "+OK\r\n"),
                ("SET out 3", "+QUEUED\r\n"),
                ("EXEC", "*-1\r\n"),
                // UNWATCH and DISCARD forget them too.
                ("SET w 1", "+OK\r\n"),
                ("WATCH w", "+OK\r\n"),
                ("UNWATCH", "+OK\r\n"),
                ("SET w 2", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("SET out 4", "+QUEUED\r\n"),
                ("EXEC", "*1\r\n+OK\r\n"),
                ("WATCH w", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("DISCARD", "+OK\r\n"),
                ("SET w 3", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("GET out", "+QUEUED\r\n"),
                ("EXEC", "*1\r\n$1\r\n4\r\n"),
            ]);
            // RESET forgets the watched keys too (and goes back to RESP2).
            server.check(&[
                ("WATCH w", "+OK\r\n"),
                ("RESET", "+RESET\r\n"),
                ("SET w 5", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("GET w", "+QUEUED\r\n"),
                ("EXEC", "*1\r\n$1\r\n5\r\n"),
            ]);
            // RESP3: the null is `_`.
            server.resp3();
            server.check(&[("WATCH w", "+OK\r\n"), ("SET w 4", "+OK\r\n")]);
            server.check(&[
                ("MULTI", "+OK\r\n"),
                ("GET w", "+QUEUED\r\n"),
                ("EXEC", "_\r\n"),
            ]);
        }
    }

    /// The queue is bounded: a request that would take it past `MAX_QUEUED_BYTES` is refused
    /// and aborts the transaction; nothing is written.
    #[test]
    fn the_queue_is_bounded() {
        let mut server = Server::new();
        server.check(&[("MULTI", "+OK\r\n")]);
        let value = vec![b'v'; 1 << 20];
        let mut refused = None;
        for i in 0..(MAX_QUEUED_BYTES >> 20) + 1 {
            let key = format!("k{i}");
            let reply = server.request(&[b"SET", key.as_bytes(), &value]);
            if reply != b"+QUEUED\r\n" {
                refused = Some((i, String::from_utf8(reply).unwrap()));
                break;
            }
        }
        let (at, reply) = refused.expect("the queue refuses a request at some point");
        assert_eq!(at, (MAX_QUEUED_BYTES >> 20) - 1, "{reply}");
        assert!(reply.starts_with("-ERR MULTI queue is full"), "{reply}");
        server.check(&[
            (
                "EXEC",
                "-EXECABORT Transaction discarded because of previous errors.\r\n",
            ),
            ("DBSIZE", ":0\r\n"),
        ]);
    }

    /// A command with its own transaction inside EXEC's that fails writes nothing, and the
    /// other commands still apply.
    #[test]
    fn a_nested_transaction_that_fails_writes_nothing() {
        let mut tx = Nested {
            outer: &mut NoKeys,
            writes: HashMap::new(),
        };
        tx.set(b"a", b"1", None).unwrap();
        assert_eq!(tx.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert!(tx.remove(b"a").unwrap());
        assert_eq!(tx.expiry(b"a").unwrap(), KeyExpiry::Missing);
        assert!(!tx.remove(b"b").unwrap());
        tx.set(b"c", b"1", Some(1)).unwrap();
        assert_eq!(tx.get(b"c").unwrap(), None);
        for mut server in Server::both() {
            server.check(&[
                ("SET s 1", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("RENAME nokey t", "+QUEUED\r\n"),
                ("RENAME s t", "+QUEUED\r\n"),
                ("EXEC", "*2\r\n-ERR no such key\r\n+OK\r\n"),
                ("GET t", "$1\r\n1\r\n"),
                ("EXISTS s", ":0\r\n"),
            ]);
        }
    }

    /// Walks inside EXEC (read outside its transaction, as of before it): DBSIZE, KEYS,
    /// SCAN and FLUSHALL see the keys there were before the transaction, on an engine that
    /// runs each transaction once and on one that runs it twice.
    #[test]
    fn walks_inside_exec_see_the_store_as_before_it() {
        for mut server in Server::both() {
            server.check(&[("SET a 1", "+OK\r\n"), ("SET b 2", "+OK\r\n")]);
            server.check(&[
                ("MULTI", "+OK\r\n"),
                ("SET c 3", "+QUEUED\r\n"),
                ("DBSIZE", "+QUEUED\r\n"),
                ("EXISTS c", "+QUEUED\r\n"),
                ("KEYS *", "+QUEUED\r\n"),
                ("SCAN 0 COUNT 1", "+QUEUED\r\n"),
                ("SCAN 0 MATCH b", "+QUEUED\r\n"),
                ("DEL a", "+QUEUED\r\n"),
                ("DBSIZE", "+QUEUED\r\n"),
            ]);
            let reply = server.line("EXEC");
            let sorted_keys = "*2\r\n$1\r\na\r\n$1\r\nb\r\n";
            let start = "*8\r\n+OK\r\n:2\r\n:1\r\n";
            assert!(reply.starts_with(start), "{reply}");
            assert!(reply[start.len()..].starts_with(sorted_keys), "{reply}");
            assert!(
                reply.ends_with("*2\r\n$1\r\n0\r\n*1\r\n$1\r\nb\r\n:1\r\n:2\r\n"),
                "{reply}"
            );
            // FLUSHALL removes what there was before the transaction.
            server.check(&[
                ("MULTI", "+OK\r\n"),
                ("SET d 4", "+QUEUED\r\n"),
                ("FLUSHALL", "+QUEUED\r\n"),
                ("EXEC", "*2\r\n+OK\r\n+OK\r\n"),
                ("KEYS *", "*1\r\n$1\r\nd\r\n"),
            ]);
        }
    }

    /// A transaction of no keys, for [`Nested`] alone.
    struct NoKeys;

    impl Transaction for NoKeys {
        fn get(&mut self, _: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn expiry(&mut self, _: &[u8]) -> Result<KeyExpiry> {
            Ok(KeyExpiry::Missing)
        }
        fn set(&mut self, _: &[u8], _: &[u8], _: Option<u64>) -> Result<()> {
            panic!("Nested writes only when applied");
        }
        fn remove(&mut self, _: &[u8]) -> Result<bool> {
            panic!("Nested writes only when applied");
        }
    }

    /// Through a session on the kvs engine: a transaction pipelined with other requests in
    /// one input, SCAN and DBSIZE inside EXEC (they see the store as of before the
    /// transaction's writes), and a connection's transaction state kept between inputs.
    #[test]
    fn sessions_keep_the_transaction_between_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvStore::open(dir.path()).unwrap();
        let state = ServerState::new(0);
        let mut session = Session::new(Limits::for_frame_len(1 << 20), 1);
        let mut out = Vec::new();
        let input = b"SET a 1\r\nSET b 2\r\nMULTI\r\nSET c 3\r\n";
        session.serve_all(&engine, &state, input, &mut out).unwrap();
        assert_eq!(out, b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n");
        assert_eq!(KvsEngine::get_bytes(&engine, b"c").unwrap(), None);
        out.clear();
        let input = b"DBSIZE\r\nSCAN 0 COUNT 100\r\nGET c\r\nEXEC\r\nDBSIZE\r\n";
        session.serve_all(&engine, &state, input, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+OK\r\n:2\r\n*2\r\n$1\r\n0\r\n*2\r\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("$1\r\n3\r\n:3\r\n"), "{text}");
    }
}
