//! String commands: `SET` (`NX`, `XX`, `GET`), `GET`, `MGET`, `MSET`.
//!
//! `SET` with `NX`, `XX` or `GET` is one atomic step of the engine (a compare-and-set or an
//! update), so it is atomic against every other write of the key: RESP, kvs protocol or
//! library.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use super::{handler, Class, Command, Context, Keys, Row};
use crate::resp::frame::{write_array_len, write_bulk, write_nil, write_simple};
use crate::resp::request::{wrong_arity, Args, ErrorReply, Outcome};
use crate::Result;

pub(super) const COMMANDS: &[Row] = &[
    Row {
        name: "set",
        arity: -3,
        flags: &["denyoom"],
        class: Class::Write,
        keys: Keys::FIRST,
        group: "string",
        since: "1.0.0",
        summary: "Set the string value of a key",
        handler: handler::<Set>(),
    },
    Row {
        name: "get",
        arity: 2,
        flags: &["fast"],
        class: Class::Read,
        keys: Keys::FIRST,
        group: "string",
        since: "1.0.0",
        summary: "Get the value of a key",
        handler: handler::<Get>(),
    },
    Row {
        name: "mget",
        arity: -2,
        flags: &["fast"],
        class: Class::Read,
        keys: Keys::ALL,
        group: "string",
        since: "1.0.0",
        summary: "Get the values of all the given keys",
        handler: handler::<MGet>(),
    },
    Row {
        name: "mset",
        arity: -3,
        flags: &["denyoom"],
        class: Class::Write,
        keys: Keys::PAIRS,
        group: "string",
        since: "1.0.1",
        summary: "Set multiple keys to multiple values",
        handler: handler::<MSet>(),
    },
];

/// `SET key value [NX | XX] [GET]`
struct Set;

/// What `SET` does with a key that is already set, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// `NX`: only if the key is not set.
    NotExists,
    /// `XX`: only if the key is set.
    Exists,
}

/// A `SET`, understood.
#[derive(Debug, Clone, Copy)]
struct SetArgs<'a> {
    key: &'a [u8],
    value: &'a [u8],
    /// `NX` or `XX`.
    condition: Option<Condition>,
    /// `GET`: reply with the old value.
    get: bool,
}

impl Command for Set {
    type Parsed<'a, 'r> = SetArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<SetArgs<'a>, ErrorReply> {
        let mut condition = None;
        let mut get = false;
        for option in args.skip(3).iter() {
            let is = |name: &str| option.eq_ignore_ascii_case(name.as_bytes());
            if is("nx") && condition.is_none() {
                condition = Some(Condition::NotExists);
            } else if is("xx") && condition.is_none() {
                condition = Some(Condition::Exists);
            } else if is("get") {
                get = true;
            } else if ["ex", "px", "exat", "pxat", "keepttl"]
                .iter()
                .any(|o| is(o))
            {
                return Err(
                    "ERR kvs keys do not expire: SET's EX, PX, EXAT, PXAT and KEEPTTL \
                            options are not supported"
                        .to_string(),
                );
            } else {
                return Err("ERR syntax error".to_string());
            }
        }
        Ok(SetArgs {
            key: args.get(1),
            value: args.get(2),
            condition,
            get,
        })
    }

    /// A plain `SET key value` is batchable; with options it is not.
    fn batch<'a>(set: &Self::Parsed<'a, '_>) -> Option<(&'a [u8], &'a [u8])> {
        match set {
            SetArgs {
                condition: None,
                get: false,
                key,
                value,
            } => Some((key, value)),
            _ => None,
        }
    }

    fn run(set: SetArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let SetArgs {
            key,
            value,
            condition,
            get,
        } = set;
        // `old`: the value replaced (or kept), when `GET` asks for it.
        let (allowed, old) = match (condition, get) {
            (None, false) => {
                cx.engine.set_bytes(key, value)?;
                (true, None)
            }
            (Some(Condition::NotExists), false) => {
                let set = cx.engine.compare_and_set_bytes(key, None, Some(value))?;
                (set, None)
            }
            (Some(Condition::NotExists), true) => loop {
                // A set key is kept (nothing written); a missing one is claimed, or, if
                // another write got there first, looked at again.
                match cx.engine.get_bytes(key)? {
                    Some(old) => break (false, Some(Some(old))),
                    None if cx.engine.compare_and_set_bytes(key, None, Some(value))? => {
                        break (true, Some(None))
                    }
                    None => continue,
                }
            },
            (Some(Condition::Exists) | None, _) => {
                // `XX` replaces a set key and leaves a missing one missing (nothing written),
                // `GET` alone always replaces. The function may run more than once (sled):
                // what its last run saw is what was replaced.
                let mut seen = None;
                let mut allowed = false;
                cx.engine.update_bytes(key, &mut |current| {
                    allowed = condition.is_none() || current.is_some();
                    seen = current.map(<[u8]>::to_vec);
                    allowed.then(|| value.to_vec())
                })?;
                (allowed, Some(seen))
            }
        };
        let version = cx.client.version;
        match (get, old) {
            (true, Some(Some(old))) => write_bulk(cx.out, &old),
            (true, _) => write_nil(cx.out, version),
            (false, _) if allowed => write_simple(cx.out, "OK"),
            (false, _) => write_nil(cx.out, version),
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
        let value = cx.engine.get_bytes(key)?;
        cx.state.lookup(value.is_some());
        match value {
            Some(value) => write_bulk(cx.out, &value),
            None => write_nil(cx.out, cx.client.version),
        }
        Ok(Outcome::Continue)
    }
}

/// `MGET key [key ...]`
struct MGet;

impl Command for MGet {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(keys: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        // Fetch everything first: a failure must not leave half an array behind.
        let mut values = Vec::with_capacity(keys.len());
        for key in keys.iter() {
            let value = cx.engine.get_bytes(key)?;
            cx.state.lookup(value.is_some());
            values.push(value);
        }
        write_array_len(cx.out, values.len());
        for value in values {
            match value {
                Some(value) => write_bulk(cx.out, &value),
                None => write_nil(cx.out, cx.client.version),
            }
        }
        Ok(Outcome::Continue)
    }
}

/// `MSET key value [key value ...]`
struct MSet;

impl Command for MSet {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        if args.len() % 2 == 1 {
            Ok(args.skip(1))
        } else {
            Err(wrong_arity("mset"))
        }
    }

    fn run(pairs: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        // Not atomic as in Redis: the keys are set one after the other, so a reader can see
        // some set and not others, and a failure leaves the earlier ones set.
        for i in (0..pairs.len()).step_by(2) {
            cx.engine.set_bytes(pairs.get(i), pairs.get(i + 1))?;
        }
        write_simple(cx.out, "OK");
        Ok(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `line` split on spaces, parsed as a `SET`.
    fn parse(line: &str) -> std::result::Result<SetArgs<'_>, ErrorReply> {
        let mut ranges = Vec::new();
        let mut at = 0;
        for word in line.split(' ') {
            ranges.push(at..at + word.len());
            at += word.len() + 1;
        }
        Set::parse(Args::new(line.as_bytes(), &ranges))
    }

    #[test]
    fn set_options_are_checked() {
        let set = parse("set k v nx get").unwrap();
        assert_eq!((set.condition, set.get), (Some(Condition::NotExists), true));
        let set = parse("SET k v XX").unwrap();
        assert_eq!((set.condition, set.get), (Some(Condition::Exists), false));
        assert_eq!(parse("set k v nx xx").unwrap_err(), "ERR syntax error");
        assert_eq!(parse("set k v bogus").unwrap_err(), "ERR syntax error");
        assert!(parse("set k v EX 10")
            .unwrap_err()
            .contains("do not expire"));
    }

    /// Only a plain `SET key value` may be held back and written in a batch.
    #[test]
    fn only_plain_sets_are_batchable() {
        let plain = parse("SET key value").unwrap();
        assert_eq!(Set::batch(&plain), Some((&b"key"[..], &b"value"[..])));
        for line in ["SET k v NX", "SET k v XX", "SET k v GET", "set k v get xx"] {
            assert_eq!(Set::batch(&parse(line).unwrap()), None, "{line}");
        }
    }
}
