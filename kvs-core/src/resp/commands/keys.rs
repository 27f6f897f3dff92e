//! Commands on keys whatever their values: `DEL`, `EXISTS`, `DBSIZE`.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use super::{handler, Class, Command, Context, Keys, Row};
use crate::resp::frame::write_integer;
use crate::resp::request::{Args, ErrorReply, Outcome};
use crate::{KvsError, Result};

pub(super) const COMMANDS: &[Row] = &[
    Row {
        name: "del",
        arity: -2,
        flags: &[],
        class: Class::Write,
        keys: Keys::ALL,
        group: "generic",
        since: "1.0.0",
        summary: "Delete keys",
        handler: handler::<Del>(),
    },
    Row {
        name: "exists",
        arity: -2,
        flags: &["fast"],
        class: Class::Read,
        keys: Keys::ALL,
        group: "generic",
        since: "1.0.0",
        summary: "Count how many of the given keys exist",
        handler: handler::<Exists>(),
    },
    Row {
        name: "dbsize",
        arity: 1,
        flags: &["fast"],
        class: Class::Read,
        keys: Keys::NONE,
        group: "server",
        since: "1.0.0",
        summary: "Return the number of keys",
        handler: handler::<DbSize>(),
    },
];

/// `DEL key [key ...]`
struct Del;

impl Command for Del {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(keys: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let mut removed = 0;
        for key in keys.iter() {
            match cx.engine.remove_bytes(key) {
                Ok(()) => removed += 1,
                Err(KvsError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        write_integer(cx.out, removed);
        Ok(Outcome::Continue)
    }
}

/// `EXISTS key [key ...]`
struct Exists;

impl Command for Exists {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(keys: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let mut found = 0;
        for key in keys.iter() {
            if cx.engine.contains_key(key)? {
                found += 1;
            }
        }
        write_integer(cx.out, found);
        Ok(Outcome::Continue)
    }
}

/// `DBSIZE`
struct DbSize;

impl Command for DbSize {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        write_integer(cx.out, cx.engine.len()? as i64);
        Ok(Outcome::Continue)
    }
}
