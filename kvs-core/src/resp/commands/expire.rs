//! Key expiry commands, as redis-server 7 answers them: `EXPIRE`, `PEXPIRE`, `EXPIREAT`,
//! `PEXPIREAT` (with `NX`, `XX`, `GT`, `LT`), `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`,
//! `PERSIST`.
//!
//! Deadlines are the engine's ([`KeyExpiry`]): milliseconds since the Unix epoch, kept on disk
//! with the key, so they count on across a restart. A deadline that has passed removes the
//! key, as in Redis. `EXPIRE` without a condition is one
//! [`expire_at_bytes`](super::Engine::expire_at_bytes); with `NX`, `XX`, `GT` or `LT`, the
//! check and the write are one [`transaction`](super::Engine::transaction).
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use super::strings::refuse;
use super::{handler, transact, Class, Command, Context, Keys, Row};
use crate::resp::frame::write_integer;
use crate::resp::request::{
    integer_arg, invalid_expire_time, is_option, Args, ErrorReply, Outcome,
};
use crate::{now_millis, KeyExpiry, Result};

const fn row(
    name: &'static str,
    arity: i64,
    class: Class,
    summary: &'static str,
    since: &'static str,
    handler: super::Handler,
) -> Row {
    Row {
        name,
        arity,
        flags: &["fast"],
        class,
        keys: Keys::FIRST,
        group: "generic",
        since,
        summary,
        handler,
    }
}

pub(super) const COMMANDS: &[Row] = &[
    row(
        "expire",
        -3,
        Class::Write,
        "Set a key's time to live in seconds",
        "1.0.0",
        handler::<Expire<false, false>>(),
    ),
    row(
        "pexpire",
        -3,
        Class::Write,
        "Set a key's time to live in milliseconds",
        "2.6.0",
        handler::<Expire<true, false>>(),
    ),
    row(
        "expireat",
        -3,
        Class::Write,
        "Set the expiration for a key as a UNIX timestamp",
        "1.2.0",
        handler::<Expire<false, true>>(),
    ),
    row(
        "pexpireat",
        -3,
        Class::Write,
        "Set the expiration for a key as a UNIX timestamp specified in milliseconds",
        "2.6.0",
        handler::<Expire<true, true>>(),
    ),
    row(
        "ttl",
        2,
        Class::Read,
        "Get the time to live for a key in seconds",
        "1.0.0",
        handler::<Ttl<false, false>>(),
    ),
    row(
        "pttl",
        2,
        Class::Read,
        "Get the time to live for a key in milliseconds",
        "2.6.0",
        handler::<Ttl<true, false>>(),
    ),
    row(
        "expiretime",
        2,
        Class::Read,
        "Get the expiration Unix timestamp for a key",
        "7.0.0",
        handler::<Ttl<false, true>>(),
    ),
    row(
        "pexpiretime",
        2,
        Class::Read,
        "Get the expiration Unix timestamp for a key in milliseconds",
        "7.0.0",
        handler::<Ttl<true, true>>(),
    ),
    row(
        "persist",
        2,
        Class::Write,
        "Remove the expiration from a key",
        "2.2.0",
        handler::<Persist>(),
    ),
];

/// When an `EXPIRE` applies, compared with the key's current deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Conditions {
    /// `NX`: only if the key has no deadline.
    nx: bool,
    /// `XX`: only if it has one.
    xx: bool,
    /// `GT`: only if the new deadline is later (no deadline counts as infinitely late).
    gt: bool,
    /// `LT`: only if the new deadline is earlier.
    lt: bool,
}

impl Conditions {
    /// The options from `args[3]` on, as Redis's `parseExtendedExpireArgumentsOrReply`.
    fn parse(args: Args<'_, '_>) -> std::result::Result<Conditions, ErrorReply> {
        let mut c = Conditions::default();
        for opt in args.skip(3).iter() {
            if is_option(opt, "nx") {
                c.nx = true;
            } else if is_option(opt, "xx") {
                c.xx = true;
            } else if is_option(opt, "gt") {
                c.gt = true;
            } else if is_option(opt, "lt") {
                c.lt = true;
            } else {
                return Err(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                ));
            }
        }
        if c.nx && (c.xx || c.gt || c.lt) {
            return Err(
                "ERR NX and XX, GT or LT options at the same time are not compatible".to_string(),
            );
        }
        if c.gt && c.lt {
            return Err("ERR GT and LT options at the same time are not compatible".to_string());
        }
        Ok(c)
    }

    fn any(self) -> bool {
        self != Conditions::default()
    }

    /// Whether a key whose deadline is `current` takes the deadline `when`.
    fn allow(self, current: Option<i64>, when: i64) -> bool {
        !((self.nx && current.is_some())
            || (self.xx && current.is_none())
            || (self.gt && current.is_none_or(|c| when <= c))
            || (self.lt && current.is_some_and(|c| when >= c)))
    }
}

/// `EXPIRE key seconds [NX | XX | GT | LT]` (`MILLIS`: `PEXPIRE`, in milliseconds; `AT`:
/// `EXPIREAT` and `PEXPIREAT`, a Unix time): `1` if the deadline was set (or, being in the
/// past, removed the key), `0` if the key is not set or a condition failed.
struct Expire<const MILLIS: bool, const AT: bool>;

/// An `EXPIRE`, understood: key, the time as given, conditions.
type ExpireArgs<'a> = (&'a [u8], i64, Conditions);

impl<const MILLIS: bool, const AT: bool> Expire<MILLIS, AT> {
    fn name() -> &'static str {
        match (MILLIS, AT) {
            (false, false) => "expire",
            (true, false) => "pexpire",
            (false, true) => "expireat",
            (true, true) => "pexpireat",
        }
    }
}

impl<const MILLIS: bool, const AT: bool> Command for Expire<MILLIS, AT> {
    type Parsed<'a, 'r> = ExpireArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<ExpireArgs<'a>, ErrorReply> {
        let conditions = Conditions::parse(args)?;
        let when = integer_arg(args.get(2))?;
        Ok((args.get(1), when, conditions))
    }

    fn run((key, when, conditions): ExpireArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let invalid = invalid_expire_time(Self::name());
        // Negative times are allowed (they are in the past); overflows are not.
        let when = if MILLIS {
            Some(when)
        } else {
            when.checked_mul(1000)
        };
        let now = now_millis();
        let base = if AT {
            0
        } else {
            i64::try_from(now).unwrap_or(i64::MAX)
        };
        let Some(when) = when.and_then(|w| w.checked_add(base)) else {
            return refuse(cx, &invalid);
        };
        // A deadline at or before now removes the key.
        let deadline = u64::try_from(when).unwrap_or(0);
        let set = if !conditions.any() {
            cx.engine.expire_at_bytes(key, deadline)?
        } else {
            transact(cx.engine, |tx| {
                let current = match tx.expiry(key)? {
                    KeyExpiry::Missing => return Ok(false),
                    KeyExpiry::Never => None,
                    KeyExpiry::At(at) => Some(i64::try_from(at).unwrap_or(i64::MAX)),
                };
                if !conditions.allow(current, when) {
                    return Ok(false);
                }
                if deadline <= now {
                    tx.remove(key)?;
                } else if let Some(value) = tx.get(key)? {
                    tx.set(key, &value, Some(deadline))?;
                }
                Ok(true)
            })?
        };
        write_integer(cx.out, i64::from(set));
        Ok(Outcome::Continue)
    }
}

/// `TTL key` (`MILLIS`: `PTTL`; `ABSOLUTE`: `EXPIRETIME`, `PEXPIRETIME`): `-2` for a missing
/// key, `-1` for a key without a deadline, else the time left or the deadline (in seconds
/// rounded to the nearest, as Redis does).
struct Ttl<const MILLIS: bool, const ABSOLUTE: bool>;

impl<const MILLIS: bool, const ABSOLUTE: bool> Command for Ttl<MILLIS, ABSOLUTE> {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        let expiry = cx.engine.expiry_bytes(key)?;
        let reply = match expiry {
            KeyExpiry::Missing => -2,
            KeyExpiry::Never => -1,
            KeyExpiry::At(deadline) => {
                let ms = if ABSOLUTE {
                    i64::try_from(deadline).unwrap_or(i64::MAX)
                } else {
                    expiry.ttl_millis(now_millis())
                };
                match (MILLIS, ABSOLUTE) {
                    (true, _) => ms,
                    (false, _) => ms.saturating_add(500) / 1000,
                }
            }
        };
        write_integer(cx.out, reply);
        Ok(Outcome::Continue)
    }
}

/// `PERSIST key`: `1` if the key had a deadline, which is gone; else `0`.
struct Persist;

impl Command for Persist {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        let had = cx.engine.persist_bytes(key)?;
        write_integer(cx.out, i64::from(had));
        Ok(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(line: &str) -> std::result::Result<Conditions, ErrorReply> {
        let mut ranges = Vec::new();
        let mut at = 0;
        for word in line.split(' ') {
            ranges.push(at..at + word.len());
            at += word.len() + 1;
        }
        Conditions::parse(Args::new(line.as_bytes(), &ranges))
    }

    #[test]
    fn conditions_parse_and_decide_as_redis() {
        assert_eq!(conditions("expire k 10"), Ok(Conditions::default()));
        let gt_xx = conditions("expire k 10 gt XX").unwrap();
        assert!(gt_xx.gt && gt_xx.xx);
        assert_eq!(
            conditions("expire k 10 nx xx").unwrap_err(),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            conditions("expire k 10 gt lt").unwrap_err(),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(
            conditions("expire k 10 sometimes").unwrap_err(),
            "ERR Unsupported option sometimes"
        );
        let c = |line| conditions(line).unwrap();
        assert!(c("e k 1 nx").allow(None, 5));
        assert!(!c("e k 1 nx").allow(Some(1), 5));
        assert!(!c("e k 1 xx").allow(None, 5));
        assert!(
            !c("e k 1 gt").allow(None, 5),
            "no deadline is later than any"
        );
        assert!(c("e k 1 gt").allow(Some(4), 5));
        assert!(!c("e k 1 gt").allow(Some(5), 5));
        assert!(c("e k 1 lt").allow(None, 5));
        assert!(c("e k 1 lt").allow(Some(6), 5));
        assert!(!c("e k 1 lt").allow(Some(5), 5));
    }

    /// The commands carried out on an engine that keeps the contracts (replies as
    /// redis-server 7.0 gives them; `tests/tests/redis_strings.rs` compares with it live).
    #[test]
    fn expiry_commands_reply_as_redis() {
        use crate::resp::commands::testing::Server;
        for mut s in Server::both() {
            s.check(&[
                ("SET k v", "+OK\r\n"),
                ("TTL k", ":-1\r\n"),
                ("TTL missing", ":-2\r\n"),
                ("EXPIRE k 100 XX", ":0\r\n"),
                ("EXPIRE k 100 GT", ":0\r\n"),
                ("EXPIRE k 100 LT", ":1\r\n"),
                ("TTL k", ":100\r\n"),
                ("EXPIRE k 50 NX", ":0\r\n"),
                ("EXPIRE k 300 GT", ":1\r\n"),
                ("EXPIRE k 400 LT", ":0\r\n"),
                ("PEXPIRE k 10000 LT", ":1\r\n"),
                ("TTL k", ":10\r\n"),
                ("EXPIREAT k 4102444800", ":1\r\n"),
                ("EXPIRETIME k", ":4102444800\r\n"),
                ("PEXPIREAT k 4102444800500", ":1\r\n"),
                ("EXPIRETIME k", ":4102444801\r\n"),
                ("PEXPIRETIME k", ":4102444800500\r\n"),
                ("PERSIST k", ":1\r\n"),
                ("PERSIST k", ":0\r\n"),
                ("EXPIRE missing 10", ":0\r\n"),
                (
                    "EXPIRE k 9223372036854776",
                    "-ERR invalid expire time in 'expire' command\r\n",
                ),
                (
                    "PEXPIRE k 9223372036854775807",
                    "-ERR invalid expire time in 'pexpire' command\r\n",
                ),
                (
                    "EXPIRE k abc NX XX",
                    "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
                ),
                (
                    "EXPIRE k 1 gt lt",
                    "-ERR GT and LT options at the same time are not compatible\r\n",
                ),
                ("EXPIRE k 1 later", "-ERR Unsupported option later\r\n"),
                ("EXPIRE k -1 GT", ":0\r\n"),
                ("EXISTS k", ":1\r\n"),
                ("EXPIRE k -1", ":1\r\n"),
                ("EXISTS k", ":0\r\n"),
                ("SET k v", "+OK\r\n"),
                ("PEXPIREAT k -5 NX", ":1\r\n"),
                ("EXISTS k", ":0\r\n"),
            ]);
        }
    }
}
