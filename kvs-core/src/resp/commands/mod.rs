//! The commands kvs answers over RESP, as one table: a [`Row`] per command says its name, its
//! arity, its flags, its key positions and its documentation, and points at the code that
//! parses and runs it. Dispatch ([`dispatch`]) and `COMMAND` (in [`server`]) both read the
//! table, so a name can never answer differently from how `COMMAND` describes it.
//!
//! One module per family, each with its rows ([`Row`]) in a `COMMANDS` slice at the top and a
//! [`Command`] impl per command below:
//! - [`strings`]: `SET` (with every option of Redis 7), `GET`, `SETEX`, `PSETEX`, `SETNX`,
//!   `GETSET`, `GETDEL`, `GETEX`, `MGET`, `MSET`, `MSETNX`, `APPEND`, `STRLEN`, `GETRANGE`,
//!   `SUBSTR`, `SETRANGE`, `INCR`, `DECR`, `INCRBY`, `DECRBY`, `INCRBYFLOAT`, `LCS`;
//! - [`expire`]: `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `TTL`, `PTTL`, `EXPIRETIME`,
//!   `PEXPIRETIME`, `PERSIST`;
//! - [`keys`]: `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `KEYS`, `SCAN`, `RANDOMKEY`, `TYPE`,
//!   `RENAME`, `RENAMENX`, `COPY`, `FLUSHDB`, `FLUSHALL`, `DBSIZE`, `OBJECT`;
//! - [`connection`]: `AUTH`, `HELLO`, `PING`, `ECHO`, `SELECT`, `CLIENT`, `RESET`, `QUIT`;
//! - [`server`]: `INFO`, `COMMAND`, `CONFIG`, `TIME`, `SAVE`, `BGSAVE`, `LASTSAVE`, `SHUTDOWN`;
//! - [`cluster`]: `CLUSTER` (Redis Cluster's view: one node owning every slot, when emulated);
//! - [`transactions`]: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` (between `MULTI` and
//!   `EXEC`, [`dispatch`] queues requests instead of running them).
//!
//! This module holds only the row type, the table and dispatch. Dispatch also keeps the
//! connection's state that every command shares: with a server password, a command without
//! the `no_auth` flag is answered `NOAUTH` until the connection has given it; and
//! `CLIENT REPLY OFF|SKIP` drops replies.
//!
//! # Adding a command
//!
//! In its family's file only:
//! 1. a unit struct and an `impl Command` for it: `parse` turns the arguments into its parsed
//!    form or an error reply, `run` carries that out on the [`Context`] (engine, server state,
//!    client, replies); a write that is nothing but "set this key to this value" may also say
//!    so in `batch`, and is then written in a batch with its neighbours;
//! 2. a [`Row`] in the family's `COMMANDS`, with `handler: handler::<TheStruct>()`.
//!
//! Dispatch, `COMMAND` and the table's tests pick the row up from there. The table is sorted
//! and checked when kvs is compiled: a name used twice, a name not in lower case, an arity of
//! 0, or a `write` or `readonly` flag (which `COMMAND` takes from the row's class) is a
//! compile error. A new family is a new file, its `mod` line and its entry in [`FAMILIES`].
//!
//! # The hot path
//!
//! Looking a name up is a binary search of the sorted table, comparing bytes folded to lower
//! case as it goes (no allocation). A row's handler is a plain function pointer, one
//! monomorphised [`handle`] per command; commands reach the engine through [`Engine`], the
//! byte-level part of [`KvsEngine`] as a trait object, so that one table serves every engine
//! type (one indirect call per engine operation).

pub(crate) mod cluster;
pub(crate) mod connection;
pub(crate) mod expire;
pub(crate) mod keys;
pub(crate) mod server;
pub(crate) mod strings;
#[cfg(test)]
mod testing;
pub(crate) mod transactions;

use self::transactions::Multi;
use super::frame::write_error;
use super::request::{unknown_command, wrong_arity, Args, Client, ErrorReply, Outcome, ReplyMode};
use super::session::Batch;
use crate::server::state::ServerState;
use crate::{
    ErrorKind, KeyExpiry, KvsEngine, KvsError, Result, ScanFilter, ScanPage, Transaction,
    WriteBatch,
};

/// kvs's own class of a command: what it may touch. `COMMAND` shows Redis's `write` or
/// `readonly` flag from it, so the two cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Reads keys, changes none (Redis's `readonly`).
    Read,
    /// Changes keys (Redis's `write`).
    Write,
    /// Reads or describes the server, touches no key.
    Admin,
    /// Concerns only the connection that sends it.
    Connection,
}

impl Class {
    /// The Redis flag that says the same, if any.
    pub(crate) const fn redis_flag(self) -> Option<&'static str> {
        match self {
            Class::Read => Some("readonly"),
            Class::Write => Some("write"),
            Class::Admin | Class::Connection => None,
        }
    }
}

/// Where a command's keys are among its arguments, as `COMMAND` reports them: the first, the
/// last (-1: the last argument) and the step between two keys; all 0 for a command without
/// keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keys {
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) step: i64,
}

impl Keys {
    /// No key.
    pub(crate) const NONE: Keys = Keys::new(0, 0, 0);
    /// One key, the first argument.
    pub(crate) const FIRST: Keys = Keys::new(1, 1, 1);
    /// Every argument is a key.
    pub(crate) const ALL: Keys = Keys::new(1, -1, 1);
    /// Key, value, key, value...
    pub(crate) const PAIRS: Keys = Keys::new(1, -1, 2);

    const fn new(first: i64, last: i64, step: i64) -> Keys {
        Keys { first, last, step }
    }
}

/// One command of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    /// In lower case (ASCII letters and `_`), as `COMMAND` shows it; requests may use any
    /// case.
    pub(crate) name: &'static str,
    /// Redis's arity, the name included: `n` exactly n arguments, `-n` at least n. Checked
    /// before the command parses its arguments.
    pub(crate) arity: i64,
    /// Redis's flags, as `COMMAND` shows them after the class's own (`write` or `readonly`),
    /// which are not repeated here.
    pub(crate) flags: &'static [&'static str],
    /// kvs's class.
    pub(crate) class: Class,
    /// Its keys, as `COMMAND` shows them.
    pub(crate) keys: Keys,
    /// `COMMAND DOCS`: Redis's group, the Redis version that introduced the command, and a
    /// line on what it does.
    pub(crate) group: &'static str,
    pub(crate) since: &'static str,
    pub(crate) summary: &'static str,
    /// Parses and runs it: [`handler`]`::<C>()` for its [`Command`] `C`.
    pub(crate) handler: Handler,
}

impl Row {
    /// Whether a request of `n` arguments (the name included) has the number the arity allows.
    pub(crate) fn accepts(&self, n: usize) -> bool {
        let n = n as i64;
        if self.arity < 0 {
            n >= -self.arity
        } else {
            n == self.arity
        }
    }
}

/// A row's entry point: runs a request whose name and number of arguments are the row's.
pub(crate) type Handler = for<'a> fn(Args<'a, '_>, &mut Context<'_>, &mut Batch<'a>) -> Outcome;

/// The handler of the command `C`.
pub(crate) const fn handler<C: Command>() -> Handler {
    handle::<C>
}

/// A command: how it understands its arguments, and how it carries them out.
pub(crate) trait Command {
    /// The request, understood (e.g. a key, or `SET`'s key, value and options). It may borrow
    /// the request's bytes (`'a`) and its list of arguments (`'r`).
    type Parsed<'a, 'r>;

    /// Understands `args` (the name included; their number already agrees with the row's
    /// arity). Anything else wrong with them is the error reply to send.
    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Self::Parsed<'a, 'r>, ErrorReply>;

    /// The batchable-write hook: a request that is just "set this key to this value" says so
    /// here, and the session may then hold it back and write a run of them with one
    /// [`set_many_bytes`](KvsEngine::set_many_bytes), answering `+OK` to each once the write
    /// has returned (see [`Batch`]). Nothing else of the command then runs.
    fn batch<'a>(_parsed: &Self::Parsed<'a, '_>) -> Option<(&'a [u8], &'a [u8])> {
        None
    }

    /// Carries the command out, appending its reply to `cx.out`. An error (only before
    /// anything was appended) becomes an `ERR` reply; the connection goes on.
    fn run(parsed: Self::Parsed<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome>;
}

/// What a command runs on: the engine, what the server's connections share, its own
/// connection, the replies being written, and the connection's transaction state.
pub(crate) struct Context<'c> {
    pub(crate) engine: &'c dyn Engine,
    pub(crate) state: &'c ServerState,
    pub(crate) client: &'c mut Client,
    pub(crate) out: &'c mut Vec<u8>,
    /// `MULTI`'s queue and the `WATCH`ed keys (see [`transactions`]).
    pub(crate) multi: &'c mut Multi,
}

/// The function of [`Engine::update_bytes`], as a trait object.
pub(crate) type UpdateFn<'f> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'f;

/// The function of [`Engine::transaction`], as a trait object.
pub(crate) type TransactionFn<'f> = dyn FnMut(&mut dyn Transaction) -> Result<()> + 'f;

/// The engine as commands use it: the byte-level part of [`KvsEngine`] (which, being `Clone`,
/// cannot be a trait object itself). Every engine is one. Each method is the [`KvsEngine`]
/// method of the same name, with its contract; generic ones take a trait object.
pub(crate) trait Engine {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()>;
    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn read_bytes(&self, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        f(self.get_bytes(key)?.as_deref());
        Ok(())
    }
    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()>;
    fn remove_bytes(&self, key: &[u8]) -> Result<()>;
    fn contains_key(&self, key: &[u8]) -> Result<bool>;
    fn len(&self) -> Result<usize>;
    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool>;
    fn update_bytes(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<Option<Vec<u8>>>;
    fn keys(&self) -> Result<Vec<Vec<u8>>>;
    fn apply_batch(&self, batch: &WriteBatch) -> Result<()>;
    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>>;
    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()>;
    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool>;
    fn persist_bytes(&self, key: &[u8]) -> Result<bool>;
    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry>;
    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage>;
    /// [`KvsEngine::transaction`]: `f` may run more than once (sled), and only its last run's
    /// writes are kept; what it finds out goes to variables it captures.
    fn transaction(&self, f: &mut TransactionFn<'_>) -> Result<()>;
    fn flush(&self) -> Result<()>;
}

/// Runs `f` as one [`Engine::transaction`] and returns what its last run returned.
pub(crate) fn transact<R>(
    engine: &dyn Engine,
    mut f: impl FnMut(&mut dyn Transaction) -> Result<R>,
) -> Result<R> {
    let mut result = None;
    engine.transaction(&mut |tx| {
        result = Some(f(tx)?);
        Ok(())
    })?;
    // A transaction that returned `Ok` ran `f` to an `Ok` at least once.
    result.ok_or_else(|| KvsError::InvalidArgument("the transaction never ran".to_string()))
}

impl<E: KvsEngine> Engine for E {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        KvsEngine::set_bytes(self, key, value)
    }
    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        KvsEngine::get_bytes(self, key)
    }
    fn read_bytes(&self, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        KvsEngine::read_bytes(self, key, f)
    }
    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        KvsEngine::set_many_bytes(self, pairs)
    }
    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        KvsEngine::remove_bytes(self, key)
    }
    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        KvsEngine::contains_key(self, key)
    }
    fn len(&self) -> Result<usize> {
        KvsEngine::len(self)
    }
    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        KvsEngine::compare_and_set_bytes(self, key, expected, new)
    }
    fn update_bytes(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<Option<Vec<u8>>> {
        KvsEngine::update_bytes(self, key, f)
    }
    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        KvsEngine::keys(self)
    }
    fn apply_batch(&self, batch: &WriteBatch) -> Result<()> {
        KvsEngine::apply_batch(self, batch)
    }
    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        KvsEngine::get_many_bytes(self, keys)
    }
    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()> {
        KvsEngine::set_with_deadline_bytes(self, key, value, deadline)
    }
    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool> {
        KvsEngine::expire_at_bytes(self, key, deadline)
    }
    fn persist_bytes(&self, key: &[u8]) -> Result<bool> {
        KvsEngine::persist_bytes(self, key)
    }
    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry> {
        KvsEngine::expiry_bytes(self, key)
    }
    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage> {
        KvsEngine::scan_bytes(self, cursor, count, filter)
    }
    fn transaction(&self, f: &mut TransactionFn<'_>) -> Result<()> {
        KvsEngine::transaction(self, |tx| f(tx))
    }
    fn flush(&self) -> Result<()> {
        KvsEngine::flush(self)
    }
}

/// The families whose rows make up the table.
const FAMILIES: &[&[Row]] = &[
    strings::COMMANDS,
    expire::COMMANDS,
    keys::COMMANDS,
    connection::COMMANDS,
    server::COMMANDS,
    cluster::COMMANDS,
    transactions::COMMANDS,
];

/// Every command, sorted by name: the order `COMMAND` lists them in, and what [`find`]
/// searches.
pub(crate) static TABLE: [Row; count(FAMILIES)] = sorted(FAMILIES);

/// The command named `name`, in any case.
///
/// Looked up on every request: the name is lower-cased once into a small buffer on the stack
/// and looked up in a hash map of the table built on first use, one hash and one comparison
/// (a binary search of the table, eight comparisons for a `SET`, took 8% of a worker's time
/// under `redis-benchmark -P 16 SET`).
pub(crate) fn find(name: &[u8]) -> Option<&'static Row> {
    static BY_NAME: std::sync::OnceLock<hashbrown::HashMap<&'static [u8], &'static Row>> =
        std::sync::OnceLock::new();
    let mut buf = [0u8; 32];
    // Longer than any command name: no such command.
    let lower = buf.get_mut(..name.len())?;
    for (to, from) in lower.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    let by_name =
        BY_NAME.get_or_init(|| TABLE.iter().map(|row| (row.name.as_bytes(), row)).collect());
    by_name.get(&*lower).copied()
}

/// Carries out the request `args` (at least a name), appending its reply to `cx.out`, or holds
/// it in `batch` if it is a batchable write. Before anything else is answered, the writes held
/// in `batch` are written and answered, so replies keep the order of the requests. Between
/// `MULTI` and `EXEC`, requests are queued instead ([`transactions::queue`]).
pub(crate) fn dispatch<'a>(
    args: Args<'a, '_>,
    cx: &mut Context<'_>,
    batch: &mut Batch<'a>,
) -> Outcome {
    if cx.multi.is_queuing() {
        return transactions::queue(find(args.get(0)), args, cx, batch);
    }
    let Some(row) = find(args.get(0)) else {
        return refuse(&unknown_command(args), cx, batch);
    };
    if !row.accepts(args.len()) {
        if row.name == "exec" {
            batch.write(cx);
            return transactions::refuse_exec(&wrong_arity(row.name), cx);
        }
        return refuse(&wrong_arity(row.name), cx, batch);
    }
    // As in Redis, an unknown command or a wrong arity is said before a missing password.
    if !cx.client.authenticated && cx.state.requires_password() && !row.flags.contains(&NO_AUTH) {
        return refuse(NOAUTH, cx, batch);
    }
    // Shown by `CLIENT LIST` once this input is served; at once for `CLIENT` itself, whose
    // `LIST` and `INFO` show this connection's own command as `client`.
    cx.client.note_command(row.name);
    if row.name == "client" {
        cx.client.publish();
    }
    // `CLIENT REPLY OFF` or `SKIP`: the replies of this request are dropped. Only then (and
    // for `CLIENT`, which may turn them off) are the held writes answered first, so that
    // what is dropped is this request's reply alone.
    let before = cx.client.reply;
    // Counter updates pipelined with their neighbours are held and run together (with their
    // replies kept on), as batchable sets are.
    if before == ReplyMode::On && batch.holds(row.name) {
        batch.hold_request(args, cx);
        return Outcome::Continue;
    }
    if before == ReplyMode::On && row.name != "client" {
        return (row.handler)(args, cx, batch);
    }
    batch.write(cx);
    let start = cx.out.len();
    let outcome = (row.handler)(args, cx, batch);
    batch.write(cx);
    let after = cx.client.reply;
    if after != ReplyMode::On || before == ReplyMode::SkipNext {
        cx.out.truncate(start);
    }
    if before == ReplyMode::SkipNext && after == ReplyMode::SkipNext {
        cx.client.reply = ReplyMode::On;
    }
    outcome
}

/// The flag of the commands a client may send before giving the server's password (`AUTH`,
/// `HELLO`, `QUIT`, `RESET`), as Redis's `COMMAND` shows it.
pub(crate) const NO_AUTH: &str = "no_auth";

/// The reply to any other command before the password is given.
pub(crate) const NOAUTH: &str = "NOAUTH Authentication required.";

/// Answers `reply`, an error, after the held writes.
fn refuse(reply: &str, cx: &mut Context<'_>, batch: &mut Batch<'_>) -> Outcome {
    batch.write(cx);
    write_error(cx.out, reply);
    Outcome::Continue
}

/// Parses and runs a request of the command `C`.
fn handle<'a, C: Command>(
    args: Args<'a, '_>,
    cx: &mut Context<'_>,
    batch: &mut Batch<'a>,
) -> Outcome {
    let parsed = match C::parse(args) {
        Ok(parsed) => parsed,
        Err(reply) => return refuse(&reply, cx, batch),
    };
    if let Some((key, value)) = C::batch(&parsed) {
        batch.hold(key, value);
        return Outcome::Continue;
    }
    batch.write(cx);
    cx.state.command_processed();
    match C::run(parsed, cx) {
        Ok(outcome) => outcome,
        // Engine failures become `ERR` replies: one failed command does not end the
        // connection.
        Err(e) => {
            if e.kind() != ErrorKind::InvalidArgument {
                log::error!("command failed: {e}");
            }
            write_error(cx.out, &format!("ERR {e}"));
            Outcome::Continue
        }
    }
}

/// How many rows `families` have together.
const fn count(families: &[&[Row]]) -> usize {
    let mut n = 0;
    let mut f = 0;
    while f < families.len() {
        n += families[f].len();
        f += 1;
    }
    n
}

/// The rows of `families` (`N` of them), sorted by name; compiling kvs fails if two have the
/// same name, if a name is not lower-case ASCII letters and `_`, if an arity is 0, or if a row
/// repeats its class's flag.
const fn sorted<const N: usize>(families: &[&[Row]]) -> [Row; N] {
    // Every slot is overwritten below; they start as a copy of the first row there is.
    let mut first = 0;
    while families[first].is_empty() {
        first += 1;
    }
    let mut table = [families[first][0]; N];
    let mut n = 0;
    let mut f = 0;
    while f < families.len() {
        let mut r = 0;
        while r < families[f].len() {
            let row = families[f][r];
            assert!(row.arity != 0, "a command's arity is never 0");
            let mut i = 0;
            while i < row.flags.len() {
                assert!(
                    !same(row.flags[i], "write") && !same(row.flags[i], "readonly"),
                    "`write` and `readonly` come from the row's class"
                );
                i += 1;
            }
            let name = row.name.as_bytes();
            let mut i = 0;
            while i < name.len() {
                assert!(
                    name[i].is_ascii_lowercase() || name[i] == b'_',
                    "a command's name is lower-case ASCII letters and `_`"
                );
                i += 1;
            }
            // Insertion sort: a compile-time loop over a few dozen rows.
            let mut at = n;
            while at > 0 && precedes(row.name, table[at - 1].name) {
                table[at] = table[at - 1];
                at -= 1;
            }
            assert!(
                at == 0 || !same(row.name, table[at - 1].name),
                "two commands have the same name"
            );
            table[at] = row;
            n += 1;
            r += 1;
        }
        f += 1;
    }
    table
}

/// Whether `a` sorts before `b`, byte by byte.
const fn precedes(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

const fn same(a: &str, b: &str) -> bool {
    !precedes(a, b) && !precedes(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvStore;

    /// A fresh engine and server state, and a RESP2 client of them.
    struct Server {
        _dir: tempfile::TempDir,
        engine: KvStore,
        state: ServerState,
        client: Client,
    }

    impl Server {
        fn new() -> Server {
            let dir = tempfile::tempdir().unwrap();
            let engine = KvStore::open(dir.path()).unwrap();
            Server {
                _dir: dir,
                engine,
                state: ServerState::new(0),
                client: Client::new(1),
            }
        }

        /// Dispatches `args` as one request; its reply, and what the connection does next.
        fn request(&mut self, args: &[&[u8]]) -> (Vec<u8>, Outcome) {
            let mut buf = Vec::new();
            let mut ranges = Vec::new();
            for arg in args {
                ranges.push(buf.len()..buf.len() + arg.len());
                buf.extend_from_slice(arg);
            }
            let mut out = Vec::new();
            let mut cx = Context {
                engine: &self.engine,
                state: &self.state,
                client: &mut self.client,
                out: &mut out,
                multi: &mut Multi::default(),
            };
            let mut batch = Batch::default();
            let outcome = dispatch(Args::new(&buf, &ranges), &mut cx, &mut batch);
            batch.write(&mut cx);
            (out, outcome)
        }

        /// The reply to `line`, split on spaces, as text.
        fn line(&mut self, line: &str) -> String {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            String::from_utf8(self.request(&args).0).unwrap()
        }
    }

    fn error(message: &str) -> String {
        format!("-{message}\r\n")
    }

    #[test]
    fn every_row_is_found_by_dispatch_and_listed_by_command_list() {
        let mut server = Server::new();
        // COMMAND LIST: an array of every row's name as a bulk string, in table order.
        let mut list = format!("*{}\r\n", TABLE.len());
        for row in &TABLE {
            list += &format!("${}\r\n{}\r\n", row.name.len(), row.name);
        }
        assert_eq!(server.line("COMMAND LIST"), list);
        assert_eq!(
            server.line("COMMAND COUNT"),
            format!(":{}\r\n", TABLE.len())
        );
        for row in &TABLE {
            for name in [
                row.name.to_string(),
                row.name.to_uppercase(),
                row.name[..1].to_uppercase() + &row.name[1..],
            ] {
                let found = find(name.as_bytes()).unwrap_or_else(|| panic!("{name} not found"));
                assert!(std::ptr::eq(found, row), "{name}");
                // Dispatch knows it: the reply, whatever it is, is not "unknown command".
                let reply = server.line(&name);
                assert!(
                    !reply.starts_with("-ERR unknown command"),
                    "{name}: {reply}"
                );
            }
        }
        for name in ["", "ge", "gets", "lpush", "zzz", "aaa", "get\0"] {
            assert!(find(name.as_bytes()).is_none(), "{name:?}");
        }
        // Longer than the lookup's buffer.
        assert!(find("get".repeat(20).as_bytes()).is_none());
    }

    #[test]
    fn the_arity_check_uses_the_rows_arity() {
        let mut server = Server::new();
        for row in &TABLE {
            let wrong = format!("wrong number of arguments for '{}' command", row.name);
            // Redis refuses EXEC, which ends a transaction, with its own prefix.
            let wrong = match row.name {
                "exec" => error(&format!(
                    "EXECABORT Transaction discarded because of: {wrong}"
                )),
                _ => error(&format!("ERR {wrong}")),
            };
            let with = |n: usize| {
                let mut args = vec![row.name.as_bytes()];
                args.resize(n, b"x");
                args
            };
            let least = row.arity.unsigned_abs() as usize;
            // One argument short of the arity is refused...
            if least > 1 {
                assert!(!row.accepts(least - 1), "{}", row.name);
                assert_eq!(server.request(&with(least - 1)).0, wrong.as_bytes());
            }
            // ... as is one more than an exact arity ...
            if row.arity > 0 {
                assert!(!row.accepts(least + 1), "{}", row.name);
                assert_eq!(server.request(&with(least + 1)).0, wrong.as_bytes());
            }
            // ... and the arity itself passes the check.
            assert!(row.accepts(least), "{}", row.name);
            let (reply, _) = server.request(&with(least));
            assert_ne!(reply, wrong.as_bytes(), "{}", row.name);
        }
    }

    #[test]
    fn arity_errors_use_redis_wording() {
        let mut server = Server::new();
        for (line, name) in [
            ("GET", "get"),
            ("get a b", "get"),
            ("SET k", "set"),
            ("mset a b c", "mset"),
            ("DEL", "del"),
            ("echo", "echo"),
            ("ping a b", "ping"),
            ("DBSIZE x", "dbsize"),
            ("COMMAND COUNT x", "command|count"),
            ("CONFIG GET", "config|get"),
        ] {
            assert_eq!(
                server.line(line),
                error(&format!(
                    "ERR wrong number of arguments for '{name}' command"
                )),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_commands_quote_their_arguments() {
        let mut server = Server::new();
        assert_eq!(
            server.line("foo a b"),
            error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
        assert_eq!(
            server.line("LPUSH"),
            error("ERR unknown command 'LPUSH', with args beginning with: ")
        );
        assert_eq!(
            server.line("COMMAND NOPE"),
            error("ERR unknown subcommand 'NOPE'. Try COMMAND HELP.")
        );
    }

    /// `COMMAND` shows a row's class as Redis's `write` or `readonly` flag, before its own.
    #[test]
    fn command_flags_start_with_the_class_flag() {
        let mut server = Server::new();
        for (name, flags) in [
            ("set", "*2\r\n+write\r\n+denyoom\r\n"),
            ("del", "*1\r\n+write\r\n"),
            ("get", "*2\r\n+readonly\r\n+fast\r\n"),
            ("ping", "*1\r\n+fast\r\n"),
            ("info", "*2\r\n+loading\r\n+stale\r\n"),
        ] {
            let reply = server.line(&format!("COMMAND INFO {name}"));
            assert!(reply.contains(flags), "{name}: {reply}");
        }
        for row in &TABLE {
            match row.class {
                Class::Read | Class::Write => assert!(row.class.redis_flag().is_some()),
                Class::Admin | Class::Connection => assert!(row.class.redis_flag().is_none()),
            }
        }
    }

    #[test]
    fn quit_closes_and_the_rest_continue() {
        let mut server = Server::new();
        assert_eq!(
            server.request(&[b"quit"]),
            (b"+OK\r\n".to_vec(), Outcome::Close)
        );
        assert_eq!(
            server.request(&[b"PING"]),
            (b"+PONG\r\n".to_vec(), Outcome::Continue)
        );
    }
}
