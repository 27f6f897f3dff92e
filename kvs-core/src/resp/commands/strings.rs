//! String commands, as redis-server 7 answers them: `SET` (`EX`, `PX`, `EXAT`, `PXAT`,
//! `KEEPTTL`, `NX`, `XX`, `GET`), `GET`, `SETEX`, `PSETEX`, `SETNX`, `GETSET`, `GETDEL`,
//! `GETEX`, `MGET`, `MSET`, `MSETNX`, `APPEND`, `STRLEN`, `GETRANGE`, `SUBSTR`, `SETRANGE`,
//! `INCR`, `DECR`, `INCRBY`, `DECRBY`, `INCRBYFLOAT`, `LCS`.
//!
//! Every command that reads a key and then writes it is one atomic step of the engine, so it
//! is atomic against every other write of the key (RESP, kvs protocol or library): a
//! [`transaction`](super::Engine::transaction) (`SET` with options, `GETSET`, `GETEX` with
//! options, `MSETNX`), an [`update_bytes`](super::Engine::update_bytes) (`INCR` and friends,
//! `APPEND`, `SETRANGE`, `GETDEL`: an update keeps the key's deadline, as Redis's do), a
//! compare-and-set (`SETNX`) or one batch (`MSET`). `MGET` and `LCS` read their keys at one
//! instant. Where a function may run more than once (sled), what it found out is assigned
//! afresh on every run.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use super::{handler, transact, Class, Command, Context, Keys, Row};
use crate::resp::frame::{
    write_array_len, write_bulk, write_error, write_integer, write_map_len, write_nil, write_simple,
};
use crate::resp::request::{
    integer_arg, invalid_expire_time, is_option, parse_i64, wrong_arity, Args, ErrorReply, Outcome,
    NOT_AN_INTEGER, SYNTAX_ERROR,
};
use crate::{now_millis, KeyExpiry, Result, WriteBatch};

/// The longest string Redis makes (its default `proto-max-bulk-len`, 512 MiB), which is also
/// the kvs engine's largest value: `APPEND` and `SETRANGE` refuse to grow a value past it.
const MAX_STRING_LEN: usize = 512 << 20;

/// The most cells the table of an `LCS` may have (4 bytes each: 256 MiB); Redis allocates
/// what it needs and answers the same error when it cannot.
const MAX_LCS_CELLS: u64 = 64 << 20;

const STRING_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

const fn row(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    class: Class,
    summary: &'static str,
    since: &'static str,
    handler: super::Handler,
) -> Row {
    Row {
        name,
        arity,
        flags,
        class,
        keys: Keys::FIRST,
        group: "string",
        since,
        summary,
        handler,
    }
}

pub(super) const COMMANDS: &[Row] = &[
    row(
        "set",
        -3,
        &["denyoom"],
        Class::Write,
        "Set the string value of a key",
        "1.0.0",
        handler::<Set>(),
    ),
    row(
        "get",
        2,
        &["fast"],
        Class::Read,
        "Get the value of a key",
        "1.0.0",
        handler::<Get>(),
    ),
    row(
        "setex",
        4,
        &["denyoom"],
        Class::Write,
        "Set the value and expiration of a key",
        "2.0.0",
        handler::<SetEx>(),
    ),
    row(
        "psetex",
        4,
        &["denyoom"],
        Class::Write,
        "Set the value and expiration in milliseconds of a key",
        "2.6.0",
        handler::<PSetEx>(),
    ),
    row(
        "setnx",
        3,
        &["denyoom", "fast"],
        Class::Write,
        "Set the value of a key, only if the key does not exist",
        "1.0.0",
        handler::<SetNx>(),
    ),
    row(
        "getset",
        3,
        &["denyoom", "fast"],
        Class::Write,
        "Set the string value of a key and return its old value",
        "1.0.0",
        handler::<GetSet>(),
    ),
    row(
        "getdel",
        2,
        &["fast"],
        Class::Write,
        "Get the value of a key and delete the key",
        "6.2.0",
        handler::<GetDel>(),
    ),
    row(
        "getex",
        -2,
        &["fast"],
        Class::Write,
        "Get the value of a key and optionally set its expiration",
        "6.2.0",
        handler::<GetEx>(),
    ),
    Row {
        keys: Keys::ALL,
        ..row(
            "mget",
            -2,
            &["fast"],
            Class::Read,
            "Get the values of all the given keys",
            "1.0.0",
            handler::<MGet>(),
        )
    },
    Row {
        keys: Keys::PAIRS,
        ..row(
            "mset",
            -3,
            &["denyoom"],
            Class::Write,
            "Set multiple keys to multiple values",
            "1.0.1",
            handler::<MSet>(),
        )
    },
    Row {
        keys: Keys::PAIRS,
        ..row(
            "msetnx",
            -3,
            &["denyoom"],
            Class::Write,
            "Set multiple keys to multiple values, only if none of the keys exist",
            "1.0.1",
            handler::<MSetNx>(),
        )
    },
    row(
        "append",
        3,
        &["denyoom", "fast"],
        Class::Write,
        "Append a value to a key",
        "2.0.0",
        handler::<Append>(),
    ),
    row(
        "strlen",
        2,
        &["fast"],
        Class::Read,
        "Get the length of the value stored in a key",
        "2.2.0",
        handler::<StrLen>(),
    ),
    row(
        "getrange",
        4,
        &[],
        Class::Read,
        "Get a substring of the string stored at a key",
        "2.4.0",
        handler::<GetRange>(),
    ),
    row(
        "substr",
        4,
        &[],
        Class::Read,
        "Get a substring of the string stored at a key",
        "1.0.0",
        handler::<Substr>(),
    ),
    row(
        "setrange",
        4,
        &["denyoom"],
        Class::Write,
        "Overwrite part of a string at key starting at the specified offset",
        "2.2.0",
        handler::<SetRange>(),
    ),
    row(
        "incr",
        2,
        &["denyoom", "fast"],
        Class::Write,
        "Increment the integer value of a key by one",
        "1.0.0",
        handler::<Incr>(),
    ),
    row(
        "decr",
        2,
        &["denyoom", "fast"],
        Class::Write,
        "Decrement the integer value of a key by one",
        "1.0.0",
        handler::<Decr>(),
    ),
    row(
        "incrby",
        3,
        &["denyoom", "fast"],
        Class::Write,
        "Increment the integer value of a key by the given amount",
        "1.0.0",
        handler::<IncrBy>(),
    ),
    row(
        "decrby",
        3,
        &["denyoom", "fast"],
        Class::Write,
        "Decrement the integer value of a key by the given number",
        "1.0.0",
        handler::<DecrBy>(),
    ),
    row(
        "incrbyfloat",
        3,
        &["denyoom", "fast"],
        Class::Write,
        "Increment the float value of a key by the given amount",
        "2.6.0",
        handler::<IncrByFloat>(),
    ),
    Row {
        keys: Keys::new(1, 2, 1),
        ..row(
            "lcs",
            -3,
            &[],
            Class::Read,
            "Find longest common substring",
            "7.0.0",
            handler::<Lcs>(),
        )
    },
];

/// Answers `reply`, an error, and goes on with the connection.
pub(super) fn refuse(cx: &mut Context<'_>, reply: &str) -> Result<Outcome> {
    write_error(cx.out, reply);
    Ok(Outcome::Continue)
}

/// Answers a value, or "no value".
fn write_value(cx: &mut Context<'_>, value: Option<&[u8]>) {
    match value {
        Some(value) => write_bulk(cx.out, value),
        None => write_nil(cx.out, cx.client.version),
    }
}

/// How an expiry option gives its time: relative or absolute, in seconds or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExpireKind {
    /// `EX seconds`
    Ex,
    /// `PX milliseconds`
    Px,
    /// `EXAT unix-time-seconds`
    ExAt,
    /// `PXAT unix-time-milliseconds`
    PxAt,
}

impl ExpireKind {
    fn of(option: &[u8]) -> Option<ExpireKind> {
        [
            ("ex", ExpireKind::Ex),
            ("px", ExpireKind::Px),
            ("exat", ExpireKind::ExAt),
            ("pxat", ExpireKind::PxAt),
        ]
        .into_iter()
        .find(|(name, _)| is_option(option, name))
        .map(|(_, kind)| kind)
    }
}

/// An expiry option and its (not yet checked) number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expire<'a> {
    pub(super) kind: ExpireKind,
    pub(super) arg: &'a [u8],
}

impl Expire<'_> {
    /// The deadline in milliseconds since the Unix epoch, checked as Redis checks it
    /// (`getExpireMillisecondsOrReply`): the number must be a positive integer (else
    /// `ERR invalid expire time in '<command>' command`), and not overflow once in
    /// milliseconds and added to `now`. An absolute deadline may be in the past.
    pub(super) fn deadline(self, now: u64, command: &str) -> std::result::Result<u64, ErrorReply> {
        let invalid = || invalid_expire_time(command);
        let mut ms = integer_arg(self.arg)?;
        let seconds = matches!(self.kind, ExpireKind::Ex | ExpireKind::ExAt);
        if ms <= 0 || (seconds && ms > i64::MAX / 1000) {
            return Err(invalid());
        }
        if seconds {
            ms *= 1000;
        }
        if matches!(self.kind, ExpireKind::Ex | ExpireKind::Px) {
            let now = i64::try_from(now).map_err(|_| invalid())?;
            ms = ms.checked_add(now).ok_or_else(invalid)?;
        }
        u64::try_from(ms).map_err(|_| invalid())
    }
}

/// The options of `SET` and `GETEX`, as Redis's `parseExtendedStringArgumentsOrReply` takes
/// them: `NX`, `XX`, `GET` and `KEEPTTL` for `SET` only, `PERSIST` for `GETEX` only, at most
/// one of the expiry options (the same one repeated: the last wins), and `KEEPTTL` or
/// `PERSIST` not with one. Anything else is `ERR syntax error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Extended<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    expire: Option<Expire<'a>>,
}

impl<'a> Extended<'a> {
    /// Parses the options from `args[from]` on; `set`: those of `SET`, else of `GETEX`.
    fn parse(args: Args<'a, '_>, from: usize, set: bool) -> std::result::Result<Self, ErrorReply> {
        let mut o = Extended::default();
        let mut j = from;
        while j < args.len() {
            let opt = args.get(j);
            let has_next = j + 1 < args.len();
            let kind = ExpireKind::of(opt);
            let other_expire = o.expire.is_some_and(|e| Some(e.kind) != kind);
            if set && is_option(opt, "nx") && !o.xx {
                o.nx = true;
            } else if set && is_option(opt, "xx") && !o.nx {
                o.xx = true;
            } else if set && is_option(opt, "get") {
                o.get = true;
            } else if set && is_option(opt, "keepttl") && !o.persist && o.expire.is_none() {
                o.keepttl = true;
            } else if !set && is_option(opt, "persist") && o.expire.is_none() && !o.keepttl {
                o.persist = true;
            } else if let (Some(kind), true, false) =
                (kind, has_next && !o.keepttl && !o.persist, other_expire)
            {
                o.expire = Some(Expire {
                    kind,
                    arg: args.get(j + 1),
                });
                j += 1;
            } else {
                return Err(SYNTAX_ERROR.to_string());
            }
            j += 1;
        }
        Ok(o)
    }
}

/// `SET key value [NX | XX] [GET] [EX seconds | PX milliseconds | EXAT unix-time-seconds |
/// PXAT unix-time-milliseconds | KEEPTTL]`
struct Set;

/// A `SET`, understood.
#[derive(Debug, Clone, Copy)]
struct SetArgs<'a> {
    key: &'a [u8],
    value: &'a [u8],
    options: Extended<'a>,
}

impl Command for Set {
    type Parsed<'a, 'r> = SetArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<SetArgs<'a>, ErrorReply> {
        Ok(SetArgs {
            key: args.get(1),
            value: args.get(2),
            options: Extended::parse(args, 3, true)?,
        })
    }

    /// A plain `SET key value` is batchable; with options it is not.
    fn batch<'a>(set: &Self::Parsed<'a, '_>) -> Option<(&'a [u8], &'a [u8])> {
        (set.options == Extended::default()).then_some((set.key, set.value))
    }

    fn run(set: SetArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let SetArgs {
            key,
            value,
            options: o,
        } = set;
        // The expiry is checked before anything else, as Redis does.
        let deadline = match o.expire.map(|e| e.deadline(now_millis(), "set")) {
            None => None,
            Some(Ok(deadline)) => Some(deadline),
            Some(Err(reply)) => return refuse(cx, &reply),
        };
        if !(o.nx || o.xx || o.get || o.keepttl) {
            // No condition and nothing to keep: one write, which replaces any deadline.
            match deadline {
                None => cx.engine.set_bytes(key, value)?,
                Some(deadline) => cx.engine.set_with_deadline_bytes(key, value, deadline)?,
            }
            write_simple(cx.out, "OK");
            return Ok(Outcome::Continue);
        }
        if o.nx && !o.get && deadline.is_none() {
            // Only a missing key is set, and a new key has no deadline to keep: one
            // compare-and-set.
            let set = cx.engine.compare_and_set_bytes(key, None, Some(value))?;
            match set {
                true => write_simple(cx.out, "OK"),
                false => write_nil(cx.out, cx.client.version),
            }
            return Ok(Outcome::Continue);
        }
        // `old`: the value replaced (or kept), read only when `GET` asks for it.
        let (written, old) = transact(cx.engine, |tx| {
            let old = if o.get { tx.get(key)? } else { None };
            let found = if o.get {
                old.is_some()
            } else {
                tx.expiry(key)? != KeyExpiry::Missing
            };
            if (o.nx && found) || (o.xx && !found) {
                return Ok((false, old));
            }
            let deadline = if o.keepttl {
                match tx.expiry(key)? {
                    KeyExpiry::At(deadline) => Some(deadline),
                    KeyExpiry::Never | KeyExpiry::Missing => None,
                }
            } else {
                deadline
            };
            tx.set(key, value, deadline)?;
            Ok((true, old))
        })?;
        if o.get {
            write_value(cx, old.as_deref());
        } else if written {
            write_simple(cx.out, "OK");
        } else {
            write_nil(cx.out, cx.client.version);
        }
        Ok(Outcome::Continue)
    }
}

/// `GET key`
struct Get;

impl Command for Get {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        // Copied once, from the engine straight into the reply.
        let engine = cx.engine;
        let mut found = false;
        engine.read_bytes(key, &mut |value| {
            found = value.is_some();
            write_value(cx, value);
        })?;
        cx.state.lookup(found);
        Ok(Outcome::Continue)
    }
}

/// `SETEX key seconds value` and `PSETEX key milliseconds value`: a `SET` with `EX` or `PX`.
fn set_expiring(
    args: Args<'_, '_>,
    kind: ExpireKind,
    name: &str,
    cx: &mut Context<'_>,
) -> Result<Outcome> {
    let expire = Expire {
        kind,
        arg: args.get(2),
    };
    let deadline = match expire.deadline(now_millis(), name) {
        Ok(deadline) => deadline,
        Err(reply) => return refuse(cx, &reply),
    };
    cx.engine
        .set_with_deadline_bytes(args.get(1), args.get(3), deadline)?;
    write_simple(cx.out, "OK");
    Ok(Outcome::Continue)
}

/// `SETEX key seconds value`
struct SetEx;

impl Command for SetEx {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args)
    }

    fn run(args: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        set_expiring(args, ExpireKind::Ex, "setex", cx)
    }
}

/// `PSETEX key milliseconds value`
struct PSetEx;

impl Command for PSetEx {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args)
    }

    fn run(args: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        set_expiring(args, ExpireKind::Px, "psetex", cx)
    }
}

/// `SETNX key value`: `1` if it set the key, `0` if the key was set already.
struct SetNx;

impl Command for SetNx {
    type Parsed<'a, 'r> = (&'a [u8], &'a [u8]);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], &'a [u8]), ErrorReply> {
        Ok((args.get(1), args.get(2)))
    }

    fn run((key, value): (&[u8], &[u8]), cx: &mut Context<'_>) -> Result<Outcome> {
        let set = cx.engine.compare_and_set_bytes(key, None, Some(value))?;
        write_integer(cx.out, i64::from(set));
        Ok(Outcome::Continue)
    }
}

/// `GETSET key value`: `SET key value GET`, which clears the deadline.
struct GetSet;

impl Command for GetSet {
    type Parsed<'a, 'r> = (&'a [u8], &'a [u8]);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], &'a [u8]), ErrorReply> {
        Ok((args.get(1), args.get(2)))
    }

    fn run((key, value): (&[u8], &[u8]), cx: &mut Context<'_>) -> Result<Outcome> {
        let old = transact(cx.engine, |tx| {
            let old = tx.get(key)?;
            tx.set(key, value, None)?;
            Ok(old)
        })?;
        write_value(cx, old.as_deref());
        Ok(Outcome::Continue)
    }
}

/// `GETDEL key`
struct GetDel;

impl Command for GetDel {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        let mut old = None;
        cx.engine.update_bytes(key, &mut |current| {
            old = current.map(<[u8]>::to_vec);
            None
        })?;
        write_value(cx, old.as_deref());
        Ok(Outcome::Continue)
    }
}

/// `GETEX key [EX seconds | PX milliseconds | EXAT unix-time-seconds |
/// PXAT unix-time-milliseconds | PERSIST]`
struct GetEx;

impl Command for GetEx {
    type Parsed<'a, 'r> = (&'a [u8], Extended<'a>);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], Extended<'a>), ErrorReply> {
        Ok((args.get(1), Extended::parse(args, 2, false)?))
    }

    fn run((key, o): (&[u8], Extended<'_>), cx: &mut Context<'_>) -> Result<Outcome> {
        if o.expire.is_none() && !o.persist {
            let value = cx.engine.get_bytes(key)?;
            write_value(cx, value.as_deref());
            return Ok(Outcome::Continue);
        }
        let now = now_millis();
        // A missing key is answered before the expiry is checked, as Redis does.
        let found = transact(cx.engine, |tx| {
            let Some(value) = tx.get(key)? else {
                return Ok(Ok(None));
            };
            match o.expire.map(|e| e.deadline(now, "getex")) {
                Some(Err(reply)) => return Ok(Err(reply)),
                Some(Ok(deadline)) if deadline <= now => {
                    tx.remove(key)?;
                }
                Some(Ok(deadline)) => tx.set(key, &value, Some(deadline))?,
                None => {
                    if let KeyExpiry::At(_) = tx.expiry(key)? {
                        tx.set(key, &value, None)?;
                    }
                }
            }
            Ok(Ok(Some(value)))
        })?;
        match found {
            Ok(value) => write_value(cx, value.as_deref()),
            Err(reply) => write_error(cx.out, &reply),
        }
        Ok(Outcome::Continue)
    }
}

/// `MGET key [key ...]`: the values read at one instant.
struct MGet;

impl Command for MGet {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(keys: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let keys: Vec<&[u8]> = keys.iter().collect();
        let values = cx.engine.get_many_bytes(&keys)?;
        write_array_len(cx.out, values.len());
        for value in values {
            cx.state.lookup(value.is_some());
            write_value(cx, value.as_deref());
        }
        Ok(Outcome::Continue)
    }
}

/// `key value [key value ...]` from the first argument on, or Redis's arity error for `name`.
fn pairs<'a, 'r>(args: Args<'a, 'r>, name: &str) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
    if args.len() % 2 == 1 {
        Ok(args.skip(1))
    } else {
        Err(wrong_arity(name))
    }
}

/// `MSET key value [key value ...]`: one atomic batch (a key given twice: the last value).
struct MSet;

impl Command for MSet {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        pairs(args, "mset")
    }

    fn run(pairs: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let mut batch = WriteBatch::new();
        for i in (0..pairs.len()).step_by(2) {
            batch.set(pairs.get(i), pairs.get(i + 1));
        }
        cx.engine.apply_batch(&batch)?;
        write_simple(cx.out, "OK");
        Ok(Outcome::Continue)
    }
}

/// `MSETNX key value [key value ...]`: all of them, atomically, if none is set (`1`); else
/// nothing (`0`).
struct MSetNx;

impl Command for MSetNx {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        pairs(args, "msetnx")
    }

    fn run(pairs: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let set = transact(cx.engine, |tx| {
            for i in (0..pairs.len()).step_by(2) {
                if tx.expiry(pairs.get(i))? != KeyExpiry::Missing {
                    return Ok(false);
                }
            }
            for i in (0..pairs.len()).step_by(2) {
                tx.set(pairs.get(i), pairs.get(i + 1), None)?;
            }
            Ok(true)
        })?;
        write_integer(cx.out, i64::from(set));
        Ok(Outcome::Continue)
    }
}

/// Runs `f` on the value of `key` as one [`update_bytes`](super::Engine::update_bytes): `f`
/// returns the new value and the reply, or an error reply (the key is then left as it was).
/// The deadline of the key is kept.
fn update<T>(
    cx: &mut Context<'_>,
    key: &[u8],
    mut f: impl FnMut(Option<&[u8]>) -> std::result::Result<(Option<Vec<u8>>, T), ErrorReply>,
) -> Result<std::result::Result<T, ErrorReply>> {
    let mut outcome = None;
    cx.engine
        .update_bytes(key, &mut |current| match f(current) {
            Ok((new, reply)) => {
                outcome = Some(Ok(reply));
                new
            }
            Err(reply) => {
                outcome = Some(Err(reply));
                current.map(<[u8]>::to_vec)
            }
        })?;
    Ok(outcome.unwrap_or_else(|| Err("ERR the update never ran".to_string())))
}

/// `APPEND key value`: the new length.
struct Append;

impl Command for Append {
    type Parsed<'a, 'r> = (&'a [u8], &'a [u8]);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], &'a [u8]), ErrorReply> {
        Ok((args.get(1), args.get(2)))
    }

    fn run((key, tail): (&[u8], &[u8]), cx: &mut Context<'_>) -> Result<Outcome> {
        let len = update(cx, key, |current| {
            let Some(current) = current else {
                return Ok((Some(tail.to_vec()), tail.len()));
            };
            if current.len() + tail.len() > MAX_STRING_LEN {
                return Err(STRING_TOO_LONG.to_string());
            }
            let mut value = Vec::with_capacity(current.len() + tail.len());
            value.extend_from_slice(current);
            value.extend_from_slice(tail);
            let len = value.len();
            Ok((Some(value), len))
        })?;
        match len {
            Ok(len) => write_integer(cx.out, len as i64),
            Err(reply) => write_error(cx.out, &reply),
        }
        Ok(Outcome::Continue)
    }
}

/// `STRLEN key`
struct StrLen;

impl Command for StrLen {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        let len = cx.engine.get_bytes(key)?.map_or(0, |v| v.len());
        write_integer(cx.out, len as i64);
        Ok(Outcome::Continue)
    }
}

/// The part of a value of `len` bytes that `GETRANGE start end` returns, by Redis's rules:
/// negative indexes count from the end, both ends are clamped into the value, and a range
/// that ends before it starts is empty.
fn range(len: usize, start: i64, end: i64) -> std::ops::Range<usize> {
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return 0..0;
    }
    let len = len as i128;
    let (mut start, mut end) = (i128::from(start), i128::from(end));
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0).min(len - 1);
    if start > end {
        return 0..0;
    }
    // Both are within 0..len now.
    start as usize..end as usize + 1
}

/// `GETRANGE key start end` (and `SUBSTR`, the same under its old name).
struct GetRange;
/// `SUBSTR key start end`
struct Substr;

/// A `GETRANGE`, understood.
type RangeArgs<'a> = (&'a [u8], i64, i64);

fn parse_range<'a>(args: Args<'a, '_>) -> std::result::Result<RangeArgs<'a>, ErrorReply> {
    Ok((
        args.get(1),
        integer_arg(args.get(2))?,
        integer_arg(args.get(3))?,
    ))
}

fn run_range((key, start, end): RangeArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
    let value = cx.engine.get_bytes(key)?.unwrap_or_default();
    write_bulk(cx.out, &value[range(value.len(), start, end)]);
    Ok(Outcome::Continue)
}

impl Command for GetRange {
    type Parsed<'a, 'r> = RangeArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<RangeArgs<'a>, ErrorReply> {
        parse_range(args)
    }

    fn run(parsed: RangeArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        run_range(parsed, cx)
    }
}

impl Command for Substr {
    type Parsed<'a, 'r> = RangeArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<RangeArgs<'a>, ErrorReply> {
        parse_range(args)
    }

    fn run(parsed: RangeArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        run_range(parsed, cx)
    }
}

/// `SETRANGE key offset value`: the new length. Bytes between the old end and `offset` are
/// zeros; an empty `value` changes nothing (and creates no key).
struct SetRange;

impl Command for SetRange {
    type Parsed<'a, 'r> = (&'a [u8], usize, &'a [u8]);

    fn parse<'a>(
        args: Args<'a, '_>,
    ) -> std::result::Result<(&'a [u8], usize, &'a [u8]), ErrorReply> {
        let offset = integer_arg(args.get(2))?;
        let offset =
            usize::try_from(offset).map_err(|_| "ERR offset is out of range".to_string())?;
        Ok((args.get(1), offset, args.get(3)))
    }

    fn run((key, offset, patch): (&[u8], usize, &[u8]), cx: &mut Context<'_>) -> Result<Outcome> {
        let len = update(cx, key, |current| {
            if patch.is_empty() {
                // Nothing to write: the length as it is (0 for a missing key, left missing).
                return Ok((current.map(<[u8]>::to_vec), current.map_or(0, <[u8]>::len)));
            }
            let end = offset
                .checked_add(patch.len())
                .filter(|&end| end <= MAX_STRING_LEN)
                .ok_or_else(|| STRING_TOO_LONG.to_string())?;
            let mut value = current.map(<[u8]>::to_vec).unwrap_or_default();
            if value.len() < end {
                value.resize(end, 0);
            }
            value[offset..end].copy_from_slice(patch);
            let len = value.len();
            Ok((Some(value), len))
        })?;
        match len {
            Ok(len) => write_integer(cx.out, len as i64),
            Err(reply) => write_error(cx.out, &reply),
        }
        Ok(Outcome::Continue)
    }
}

/// Adds `by` to the integer value of `key` (a missing key counts as 0) as one update, keeping
/// its deadline, and answers the new value; Redis's errors for a value that is not an integer
/// and for an overflow.
fn increment(cx: &mut Context<'_>, key: &[u8], by: i64) -> Result<Outcome> {
    let n = update(cx, key, |current| {
        let old = match current {
            None => 0,
            Some(value) => parse_i64(value).ok_or_else(|| NOT_AN_INTEGER.to_string())?,
        };
        let new = old
            .checked_add(by)
            .ok_or_else(|| "ERR increment or decrement would overflow".to_string())?;
        Ok((Some(new.to_string().into_bytes()), new))
    })?;
    match n {
        Ok(n) => write_integer(cx.out, n),
        Err(reply) => write_error(cx.out, &reply),
    }
    Ok(Outcome::Continue)
}

/// `INCR key`
struct Incr;
/// `DECR key`
struct Decr;
/// `INCRBY key increment`
struct IncrBy;
/// `DECRBY key decrement`
struct DecrBy;

impl Command for Incr {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        increment(cx, key, 1)
    }
}

impl Command for Decr {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        increment(cx, key, -1)
    }
}

impl Command for IncrBy {
    type Parsed<'a, 'r> = (&'a [u8], i64);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], i64), ErrorReply> {
        Ok((args.get(1), integer_arg(args.get(2))?))
    }

    fn run((key, by): (&[u8], i64), cx: &mut Context<'_>) -> Result<Outcome> {
        increment(cx, key, by)
    }
}

impl Command for DecrBy {
    type Parsed<'a, 'r> = (&'a [u8], i64);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], i64), ErrorReply> {
        let by = integer_arg(args.get(2))?;
        // Its negation would overflow.
        if by == i64::MIN {
            return Err("ERR decrement would overflow".to_string());
        }
        Ok((args.get(1), -by))
    }

    fn run((key, by): (&[u8], i64), cx: &mut Context<'_>) -> Result<Outcome> {
        increment(cx, key, by)
    }
}

const NOT_A_FLOAT: &str = "ERR value is not a valid float";

/// `bytes` as a float as Redis reads one (`string2ld`): what `strtod` takes whole, without a
/// leading blank, and not a NaN (`inf` is a float; 1e400 is too large).
fn parse_float(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty()
        || text.len() >= 5 * 1024
        || text.starts_with(|c: char| c.is_ascii_whitespace())
    {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    let spelled_infinite = text.to_ascii_lowercase().contains("inf");
    (!value.is_nan() && (value.is_finite() || spelled_infinite)).then_some(value)
}

/// `value` as `INCRBYFLOAT` writes it (Redis's `%.17Lf` with the trailing zeros cut): plain
/// decimal, no exponent, at most 17 digits after the point, `0` for minus zero. The shortest
/// decimal that reads back as `value`, when it needs no more than 17 of them.
fn format_float(value: f64) -> String {
    let shortest = format!("{value}");
    let text = match shortest.split_once('.') {
        Some((_, fraction)) if fraction.len() > 17 => {
            let rounded = format!("{value:.17}");
            rounded
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
        _ => shortest,
    };
    if text == "-0" {
        "0".to_string()
    } else {
        text
    }
}

/// `INCRBYFLOAT key increment`: the new value, as a bulk string.
struct IncrByFloat;

impl Command for IncrByFloat {
    type Parsed<'a, 'r> = (&'a [u8], f64);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], f64), ErrorReply> {
        let by = parse_float(args.get(2)).ok_or_else(|| NOT_A_FLOAT.to_string())?;
        Ok((args.get(1), by))
    }

    fn run((key, by): (&[u8], f64), cx: &mut Context<'_>) -> Result<Outcome> {
        let new = update(cx, key, |current| {
            let old = match current {
                None => 0.0,
                Some(value) => parse_float(value).ok_or_else(|| NOT_A_FLOAT.to_string())?,
            };
            let new = old + by;
            if !new.is_finite() {
                return Err("ERR increment would produce NaN or Infinity".to_string());
            }
            let text = format_float(new);
            Ok((Some(text.clone().into_bytes()), text))
        })?;
        match new {
            Ok(text) => write_bulk(cx.out, text.as_bytes()),
            Err(reply) => write_error(cx.out, &reply),
        }
        Ok(Outcome::Continue)
    }
}

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN min-match-len] [WITHMATCHLEN]`
struct Lcs;

/// An `LCS`, understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LcsArgs<'a> {
    a: &'a [u8],
    b: &'a [u8],
    len: bool,
    idx: bool,
    min_match_len: u64,
    with_match_len: bool,
}

impl Command for Lcs {
    type Parsed<'a, 'r> = LcsArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<LcsArgs<'a>, ErrorReply> {
        let mut lcs = LcsArgs {
            a: args.get(1),
            b: args.get(2),
            len: false,
            idx: false,
            min_match_len: 0,
            with_match_len: false,
        };
        let mut j = 3;
        while j < args.len() {
            let opt = args.get(j);
            if is_option(opt, "idx") {
                lcs.idx = true;
            } else if is_option(opt, "len") {
                lcs.len = true;
            } else if is_option(opt, "withmatchlen") {
                lcs.with_match_len = true;
            } else if is_option(opt, "minmatchlen") && j + 1 < args.len() {
                lcs.min_match_len = u64::try_from(integer_arg(args.get(j + 1))?).unwrap_or(0);
                j += 1;
            } else {
                return Err(SYNTAX_ERROR.to_string());
            }
            j += 1;
        }
        if lcs.idx && lcs.len {
            return Err(
                "ERR If you want both the length and indexes, please just use IDX.".to_string(),
            );
        }
        Ok(lcs)
    }

    fn run(lcs: LcsArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let mut values = cx.engine.get_many_bytes(&[lcs.a, lcs.b])?.into_iter();
        let a = values.next().flatten().unwrap_or_default();
        let b = values.next().flatten().unwrap_or_default();
        if a.len() >= u32::MAX as usize - 1 || b.len() >= u32::MAX as usize - 1 {
            return refuse(cx, "ERR String too long for LCS");
        }
        let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1);
        if cells > MAX_LCS_CELLS {
            return refuse(
                cx,
                "ERR Insufficient memory, failed allocating transient memory for LCS",
            );
        }
        write_lcs(cx, &lcs, &a, &b);
        Ok(Outcome::Continue)
    }
}

/// Computes the longest common subsequence of `a` and `b` and answers it as Redis's `LCS`
/// does, walking the table back from the end in the same order, so that the matches come in
/// the same order (last first) and ties break the same way.
fn write_lcs(cx: &mut Context<'_>, lcs: &LcsArgs<'_>, a: &[u8], b: &[u8]) {
    let (alen, blen) = (a.len(), b.len());
    let width = blen + 1;
    let mut dp = vec![0u32; (alen + 1) * width];
    for i in 1..=alen {
        for j in 1..=blen {
            dp[i * width + j] = if a[i - 1] == b[j - 1] {
                dp[(i - 1) * width + j - 1] + 1
            } else {
                dp[(i - 1) * width + j].max(dp[i * width + j - 1])
            };
        }
    }
    let total = dp[alen * width + blen] as usize;
    if lcs.len {
        write_integer(cx.out, total as i64);
        return;
    }
    let mut result = vec![0u8; total];
    // (a start, a end, b start, b end) of each match, as emitted.
    let mut matches: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut current: Option<(usize, usize, usize, usize)> = None;
    let (mut i, mut j, mut idx) = (alen, blen, total);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[idx - 1] = a[i - 1];
            match &mut current {
                None => current = Some((i - 1, i - 1, j - 1, j - 1)),
                Some(range) if range.0 == i && range.2 == j => {
                    range.0 -= 1;
                    range.2 -= 1;
                }
                Some(_) => emit = true,
            }
            if current.is_some_and(|r| r.0 == 0 || r.2 == 0) {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if dp[(i - 1) * width + j] > dp[i * width + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if current.is_some() {
                emit = true;
            }
        }
        if emit {
            if let Some(range) = current.take() {
                let len = (range.1 - range.0 + 1) as u64;
                if lcs.min_match_len == 0 || len >= lcs.min_match_len {
                    matches.push(range);
                }
            }
        }
    }
    if !lcs.idx {
        write_bulk(cx.out, &result);
        return;
    }
    write_map_len(cx.out, 2, cx.client.version);
    write_bulk(cx.out, b"matches");
    write_array_len(cx.out, matches.len());
    for (a_start, a_end, b_start, b_end) in matches {
        write_array_len(cx.out, 2 + usize::from(lcs.with_match_len));
        write_array_len(cx.out, 2);
        write_integer(cx.out, a_start as i64);
        write_integer(cx.out, a_end as i64);
        write_array_len(cx.out, 2);
        write_integer(cx.out, b_start as i64);
        write_integer(cx.out, b_end as i64);
        if lcs.with_match_len {
            write_integer(cx.out, (a_end - a_start + 1) as i64);
        }
    }
    write_bulk(cx.out, b"len");
    write_integer(cx.out, total as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `line` split on spaces, as the arguments of a request.
    fn with_args<'l, T>(line: &'l str, f: impl for<'r> FnOnce(Args<'l, 'r>) -> T) -> T {
        let mut ranges = Vec::new();
        let mut at = 0;
        for word in line.split(' ') {
            ranges.push(at..at + word.len());
            at += word.len() + 1;
        }
        f(Args::new(line.as_bytes(), &ranges))
    }

    fn parse_set(line: &str) -> std::result::Result<Extended<'_>, ErrorReply> {
        with_args(line, |args| Set::parse(args).map(|set| set.options))
    }

    fn parse_getex(line: &str) -> std::result::Result<Extended<'_>, ErrorReply> {
        with_args(line, |args| GetEx::parse(args).map(|(_, options)| options))
    }

    #[test]
    fn set_options_combine_as_redis_allows() {
        let o = parse_set("set k v nx get").unwrap();
        assert!(o.nx && o.get && !o.xx);
        let o = parse_set("SET k v XX px 100").unwrap();
        assert!(o.xx);
        assert_eq!(
            o.expire,
            Some(Expire {
                kind: ExpireKind::Px,
                arg: b"100"
            })
        );
        // The same expiry option twice: the last wins, as in Redis.
        let o = parse_set("set k v EX 1 ex 2").unwrap();
        assert_eq!(o.expire.map(|e| e.arg), Some(&b"2"[..]));
        assert!(parse_set("set k v nx nx keepttl get").is_ok());
        for bad in [
            "set k v nx xx",
            "set k v xx nx",
            "set k v bogus",
            "set k v ex",
            "set k v ex 1 px 1",
            "set k v px 1 exat 1",
            "set k v keepttl ex 1",
            "set k v ex 1 keepttl",
            "set k v persist",
            "set k v pxat",
        ] {
            assert_eq!(parse_set(bad).unwrap_err(), SYNTAX_ERROR, "{bad}");
        }
        assert!(parse_getex("getex k persist").unwrap().persist);
        assert!(parse_getex("getex k exat 10").is_ok());
        for bad in [
            "getex k nx",
            "getex k get",
            "getex k keepttl",
            "getex k persist ex 1",
            "getex k ex 1 persist",
            "getex k ex",
        ] {
            assert_eq!(parse_getex(bad).unwrap_err(), SYNTAX_ERROR, "{bad}");
        }
    }

    /// Only a plain `SET key value` may be held back and written in a batch.
    #[test]
    fn only_plain_sets_are_batchable() {
        with_args("SET key value", |args| {
            let plain = Set::parse(args).unwrap();
            assert_eq!(Set::batch(&plain), Some((&b"key"[..], &b"value"[..])));
        });
        for line in [
            "SET k v NX",
            "SET k v XX",
            "SET k v GET",
            "set k v get xx",
            "set k v ex 10",
            "set k v keepttl",
        ] {
            with_args(line, |args| {
                assert_eq!(Set::batch(&Set::parse(args).unwrap()), None, "{line}")
            });
        }
    }

    #[test]
    fn expiry_numbers_are_checked_as_redis_checks_them() {
        let now = 1_700_000_000_000;
        let deadline = |kind, arg: &str| {
            Expire {
                kind,
                arg: arg.as_bytes(),
            }
            .deadline(now, "set")
        };
        assert_eq!(deadline(ExpireKind::Ex, "10"), Ok(now + 10_000));
        assert_eq!(deadline(ExpireKind::Px, "10"), Ok(now + 10));
        assert_eq!(deadline(ExpireKind::ExAt, "10"), Ok(10_000));
        assert_eq!(deadline(ExpireKind::PxAt, "10"), Ok(10));
        let invalid = Err(invalid_expire_time("set"));
        for (kind, arg) in [
            (ExpireKind::Ex, "0"),
            (ExpireKind::Px, "-1"),
            (ExpireKind::PxAt, "0"),
            (ExpireKind::Ex, "9223372036854776"),
            (ExpireKind::ExAt, "9223372036854776"),
            (ExpireKind::Px, "9223372036854775807"),
        ] {
            assert_eq!(deadline(kind, arg), invalid, "{kind:?} {arg}");
        }
        assert_eq!(
            deadline(ExpireKind::PxAt, "9223372036854775807"),
            Ok(i64::MAX as u64)
        );
        assert_eq!(
            deadline(ExpireKind::Ex, "1.5"),
            Err(NOT_AN_INTEGER.to_string())
        );
    }

    #[test]
    fn ranges_follow_redis_getrange() {
        let s = b"This is a string";
        let cut = |start, end| &s[range(s.len(), start, end)];
        assert_eq!(cut(0, 3), b"This");
        assert_eq!(cut(-3, -1), b"ing");
        assert_eq!(cut(0, -1), s);
        assert_eq!(cut(10, 100), b"string");
        assert_eq!(cut(5, 3), b"");
        assert_eq!(cut(-1, -5), b"");
        assert_eq!(cut(-100, 2), b"Thi");
        assert_eq!(cut(i64::MIN, i64::MAX), s);
        assert_eq!(cut(i64::MAX, i64::MAX), b"");
        assert_eq!(range(0, 0, -1), 0..0);
    }

    #[test]
    fn floats_read_and_print_as_redis_does() {
        for (text, want) in [
            ("10.5", Some(10.5)),
            ("5.0e3", Some(5000.0)),
            ("-.5", Some(-0.5)),
            ("3.", Some(3.0)),
            ("inf", Some(f64::INFINITY)),
            ("nan", None),
            ("", None),
            (" 1", None),
            ("1 ", None),
            ("1e400", None),
            ("abc", None),
        ] {
            assert_eq!(parse_float(text.as_bytes()), want, "{text:?}");
        }
        for (value, want) in [
            (10.6, "10.6"),
            (5000.0, "5000"),
            (-0.0, "0"),
            (3.0e-20, "0"),
            (1.5e-5, "0.000015"),
            (-2.25, "-2.25"),
        ] {
            assert_eq!(format_float(value), want, "{value}");
        }
    }

    /// The commands carried out on an engine that keeps the contracts (replies as
    /// redis-server 7.0 gives them; `tests/tests/redis_strings.rs` compares with it live).
    #[test]
    fn string_commands_reply_as_redis() {
        use crate::resp::commands::testing::Server;
        for mut s in Server::both() {
            s.check(&[
                ("SET k v EX 100", "+OK\r\n"),
                ("TTL k", ":100\r\n"),
                ("SET k w KEEPTTL GET", "$1\r\nv\r\n"),
                ("TTL k", ":100\r\n"),
                ("SET k x XX", "+OK\r\n"),
                ("TTL k", ":-1\r\n"),
                ("SET k y NX EX 10", "$-1\r\n"),
                ("SET n y NX EX 10", "+OK\r\n"),
                ("TTL n", ":10\r\n"),
                ("SET k v EXAT 1", "+OK\r\n"),
                ("EXISTS k", ":0\r\n"),
                (
                    "SET k v EX 0",
                    "-ERR invalid expire time in 'set' command\r\n",
                ),
                (
                    "SETEX k 9223372036854776 v",
                    "-ERR invalid expire time in 'setex' command\r\n",
                ),
                ("PSETEX k 100000 v", "+OK\r\n"),
                ("GETSET k w", "$1\r\nv\r\n"),
                ("TTL k", ":-1\r\n"),
                ("GETEX k PX 200000", "$1\r\nw\r\n"),
                ("TTL k", ":200\r\n"),
                ("GETEX k PERSIST", "$1\r\nw\r\n"),
                ("TTL k", ":-1\r\n"),
                ("GETEX missing EX 0", "$-1\r\n"),
                (
                    "GETEX k EX 0",
                    "-ERR invalid expire time in 'getex' command\r\n",
                ),
                ("GETDEL k", "$1\r\nw\r\n"),
                ("GETDEL k", "$-1\r\n"),
                ("SETNX k 1", ":1\r\n"),
                ("SETNX k 2", ":0\r\n"),
                ("MSETNX k 1 x 2", ":0\r\n"),
                ("MSETNX x 1 y 2", ":1\r\n"),
                ("MSET a 1 a 2", "+OK\r\n"),
                ("MGET a x nope", "*3\r\n$1\r\n2\r\n$1\r\n1\r\n$-1\r\n"),
                ("SET t 10 EX 100", "+OK\r\n"),
                ("INCRBY t 5", ":15\r\n"),
                ("TTL t", ":100\r\n"),
                ("SET big 9223372036854775807", "+OK\r\n"),
                ("INCR big", "-ERR increment or decrement would overflow\r\n"),
                (
                    "DECRBY big -9223372036854775808",
                    "-ERR decrement would overflow\r\n",
                ),
                ("SET s 01", "+OK\r\n"),
                ("INCR s", "-ERR value is not an integer or out of range\r\n"),
                ("INCRBYFLOAT f 10.5", "$4\r\n10.5\r\n"),
                ("INCRBYFLOAT f 0.1", "$4\r\n10.6\r\n"),
                (
                    "INCRBYFLOAT f inf",
                    "-ERR increment would produce NaN or Infinity\r\n",
                ),
                ("APPEND t x", ":3\r\n"),
                ("TTL t", ":100\r\n"),
                ("SETRANGE r 3 ab", ":5\r\n"),
                ("GET r", "$5\r\n\0\0\0ab\r\n"),
                (
                    "SETRANGE r 536870911 xx",
                    "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
                ),
                ("SETRANGE nothing 5 ", ":0\r\n"),
                ("EXISTS nothing", ":0\r\n"),
                ("GETRANGE r -2 -1", "$2\r\nab\r\n"),
                ("STRLEN r", ":5\r\n"),
                ("MSET key1 ohmytext key2 mynewtext", "+OK\r\n"),
                ("LCS key1 key2", "$6\r\nmytext\r\n"),
                (
                    "LCS key1 key2 IDX MINMATCHLEN 4 WITHMATCHLEN",
                    "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n\
                 $3\r\nlen\r\n:6\r\n",
                ),
                (
                    "LCS key1 key2 LEN IDX",
                    "-ERR If you want both the length and indexes, please just use IDX.\r\n",
                ),
            ]);
            s.resp3();
            s.check(&[
                ("GET missing", "_\r\n"),
                (
                    "LCS key1 key2 IDX",
                    "%2\r\n$7\r\nmatches\r\n*2\r\n*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n\
                 *2\r\n*2\r\n:2\r\n:3\r\n*2\r\n:0\r\n:1\r\n$3\r\nlen\r\n:6\r\n",
                ),
            ]);
        }
    }
}
