//! Commands about the connection itself: `PING`, `ECHO`, `HELLO`, `QUIT`.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use super::{handler, Class, Command, Context, Keys, Row};
use crate::resp::frame::{
    write_array_len, write_bulk, write_integer, write_map_len, write_simple, Version,
};
use crate::resp::info::REDIS_VERSION;
use crate::resp::request::{truncate, wrong_arity, Args, ErrorReply, Outcome};
use crate::Result;

pub(super) const COMMANDS: &[Row] = &[
    Row {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "1.0.0",
        summary: "Ping the server",
        handler: handler::<Ping>(),
    },
    Row {
        name: "echo",
        arity: 2,
        flags: &["fast"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "1.0.0",
        summary: "Echo the given string",
        handler: handler::<Echo>(),
    },
    Row {
        name: "hello",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "6.0.0",
        summary: "Handshake with the server, choosing RESP2 or RESP3",
        handler: handler::<Hello>(),
    },
    Row {
        name: "quit",
        arity: -1,
        flags: &["fast"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "1.0.0",
        summary: "Close the connection",
        handler: handler::<Quit>(),
    },
];

/// `PING [message]`
struct Ping;

impl Command for Ping {
    type Parsed<'a, 'r> = Option<&'a [u8]>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<Option<&'a [u8]>, ErrorReply> {
        match args.len() {
            1 => Ok(None),
            2 => Ok(Some(args.get(1))),
            _ => Err(wrong_arity("ping")),
        }
    }

    fn run(message: Option<&[u8]>, cx: &mut Context<'_>) -> Result<Outcome> {
        match message {
            None => write_simple(cx.out, "PONG"),
            Some(message) => write_bulk(cx.out, message),
        }
        Ok(Outcome::Continue)
    }
}

/// `ECHO message`
struct Echo;

impl Command for Echo {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(message: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        write_bulk(cx.out, message);
        Ok(Outcome::Continue)
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`: switch to RESP2 or 3 and
/// describe the server. kvs has no users: `AUTH` is accepted with any password, like Redis's
/// default user without a password; the name is not kept.
struct Hello;

impl Command for Hello {
    /// The version asked for, if any.
    type Parsed<'a, 'r> = Option<Version>;

    fn parse(args: Args<'_, '_>) -> std::result::Result<Option<Version>, ErrorReply> {
        if args.len() == 1 {
            return Ok(None);
        }
        let version = match args.get(1) {
            b"2" => Version::Resp2,
            b"3" => Version::Resp3,
            other if other.iter().all(u8::is_ascii_digit) && !other.is_empty() => {
                return Err("NOPROTO unsupported protocol version".to_string())
            }
            _ => return Err("ERR Protocol version is not an integer or out of range".to_string()),
        };
        let mut i = 2;
        while i < args.len() {
            let option = args.get(i);
            let remaining = args.len() - i - 1;
            if option.eq_ignore_ascii_case(b"auth") && remaining >= 2 {
                i += 3;
            } else if option.eq_ignore_ascii_case(b"setname") && remaining >= 1 {
                i += 2;
            } else {
                return Err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    truncate(&String::from_utf8_lossy(option), 128)
                ));
            }
        }
        Ok(Some(version))
    }

    fn run(wanted: Option<Version>, cx: &mut Context<'_>) -> Result<Outcome> {
        if let Some(wanted) = wanted {
            cx.client.version = wanted;
        }
        let proto = match cx.client.version {
            Version::Resp2 => 2,
            Version::Resp3 => 3,
        };
        let out = &mut *cx.out;
        write_map_len(out, 7, cx.client.version);
        write_bulk(out, b"server");
        write_bulk(out, b"redis");
        write_bulk(out, b"version");
        write_bulk(out, REDIS_VERSION.as_bytes());
        write_bulk(out, b"proto");
        write_integer(out, proto);
        write_bulk(out, b"id");
        write_integer(out, cx.client.id as i64);
        write_bulk(out, b"mode");
        write_bulk(out, b"standalone");
        write_bulk(out, b"role");
        write_bulk(out, b"master");
        write_bulk(out, b"modules");
        write_array_len(out, 0);
        Ok(Outcome::Continue)
    }
}

/// `QUIT`: reply `OK`, then close the connection.
struct Quit;

impl Command for Quit {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        write_simple(cx.out, "OK");
        Ok(Outcome::Close)
    }
}
