//! Commands: what a request's arguments mean, and carrying them out on an engine.
//!
//! Replies and error strings are Redis's own (7.0), so that clients recognise them: e.g.
//! `ERR wrong number of arguments for 'get' command`, `ERR syntax error`,
//! `ERR unknown command 'foo', with args beginning with: 'a' `.

use std::ops::Range;

use super::catalog::{find, introspect};
use super::frame::{
    write_array_len, write_bulk, write_error, write_integer, write_map_len, write_nil,
    write_simple, Version,
};
use super::state::ServerState;
use crate::{KvsEngine, KvsError};

/// The arguments of a request: ranges into the buffer that holds it.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// The arguments `buf[r]` for each `r` of `ranges`.
    pub fn new(buf: &'a [u8], ranges: &'a [Range<usize>]) -> Args<'a> {
        Args { buf, ranges }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The `i`th argument (empty if there is none).
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.ranges.get(i).map_or(&[], |r| &self.buf[r.clone()])
    }

    /// The arguments from the `from`th on.
    pub fn skip(&self, from: usize) -> Args<'a> {
        Args {
            buf: self.buf,
            ranges: self.ranges.get(from..).unwrap_or(&[]),
        }
    }

    /// Each argument in turn.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let buf = self.buf;
        self.ranges.iter().map(move |r| &buf[r.clone()])
    }
}

/// What `SET` does with a key that is already set, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `NX`: only if the key is not set.
    NotExists,
    /// `XX`: only if the key is set.
    Exists,
}

/// What a command may read or change of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The connection's number, unique within the server (`HELLO` shows it).
    pub id: u64,
    /// The RESP version it speaks (`HELLO 3` switches to RESP3).
    pub version: Version,
}

/// A request, understood.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// `PING [message]`
    Ping(Option<&'a [u8]>),
    /// `ECHO message`
    Echo(&'a [u8]),
    /// `SET key value [NX | XX] [GET]`
    Set {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// `NX` or `XX`.
        condition: Option<Condition>,
        /// `GET`: reply with the old value.
        get: bool,
    },
    /// `GET key`
    Get(&'a [u8]),
    /// `DEL key [key ...]`
    Del(Args<'a>),
    /// `EXISTS key [key ...]`
    Exists(Args<'a>),
    /// `MGET key [key ...]`
    MGet(Args<'a>),
    /// `MSET key value [key value ...]`
    MSet(Args<'a>),
    /// `DBSIZE`
    DbSize,
    /// `INFO [section ...]`
    Info(Args<'a>),
    /// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO [name ...]`, `COMMAND DOCS [name ...]`,
    /// `COMMAND LIST`
    Introspect(Introspection<'a>),
    /// `CONFIG GET parameter [parameter ...]`: only `save` and `appendonly`, which
    /// redis-benchmark asks for before it starts (see [`CONFIG`]).
    ConfigGet(Args<'a>),
    /// `HELLO [protover [AUTH username password] [SETNAME name]]`: switch to RESP2 or 3 and
    /// describe the server. kvs has no users: `AUTH` is accepted with any password, like
    /// Redis's default user without a password; the name is not kept.
    Hello(Option<Version>),
    /// `QUIT`: reply `OK`, then close the connection.
    Quit,
}

/// The sub-commands of `COMMAND`.
#[derive(Debug, Clone, Copy)]
pub enum Introspection<'a> {
    /// `COMMAND`: information on every command.
    All,
    /// `COMMAND COUNT`
    Count,
    /// `COMMAND LIST`
    List,
    /// `COMMAND INFO [name ...]`
    Info(Args<'a>),
    /// `COMMAND DOCS [name ...]`
    Docs(Args<'a>),
}

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Go on with the next request.
    Continue,
    /// Send the replies so far, then close (`QUIT`).
    Close,
}

/// An error reply's text (without the leading `-`).
pub type ErrorReply = String;

impl<'a> Command<'a> {
    /// Understands a request (`args` holds at least the command name). An unknown command,
    /// a wrong number of arguments or a bad option is the error reply to send.
    pub fn parse(args: Args<'a>) -> Result<Command<'a>, ErrorReply> {
        let name = args.get(0);
        let Some(spec) = find(name) else {
            return Err(unknown_command(args));
        };
        let n = args.len() as i64;
        if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
            return Err(wrong_arity(spec.name));
        }
        Ok(match spec.name {
            "ping" => match args.len() {
                1 => Command::Ping(None),
                2 => Command::Ping(Some(args.get(1))),
                _ => return Err(wrong_arity("ping")),
            },
            "echo" => Command::Echo(args.get(1)),
            "set" => parse_set(args)?,
            "get" => Command::Get(args.get(1)),
            "del" => Command::Del(args.skip(1)),
            "exists" => Command::Exists(args.skip(1)),
            "mget" => Command::MGet(args.skip(1)),
            "mset" if args.len() % 2 == 1 => Command::MSet(args.skip(1)),
            "mset" => return Err(wrong_arity("mset")),
            "dbsize" => Command::DbSize,
            "info" => Command::Info(args.skip(1)),
            "command" => Command::Introspect(parse_introspection(args)?),
            "config" if args.get(1).eq_ignore_ascii_case(b"get") && args.len() >= 3 => {
                Command::ConfigGet(args.skip(2))
            }
            "config" if args.get(1).eq_ignore_ascii_case(b"get") => {
                return Err(wrong_arity("config|get"))
            }
            "config" => return Err(unknown_subcommand(args.get(1), "CONFIG")),
            "hello" => parse_hello(args)?,
            "quit" => Command::Quit,
            // Every name of the catalogue has its arm above.
            _ => return Err(unknown_command(args)),
        })
    }

    /// Carries out the command on `engine` for `client`, appending its reply to `out`.
    ///
    /// Engine failures become `ERR` replies: one failed command does not end the connection.
    pub fn apply<E: KvsEngine>(
        self,
        engine: &E,
        state: &ServerState,
        client: &mut Client,
        out: &mut Vec<u8>,
    ) -> Outcome {
        state.command_processed();
        if let Err(e) = self.apply_or_fail(engine, state, client, out) {
            match &e {
                KvsError::InvalidArgument(_) => {}
                other => log::error!("command failed: {other}"),
            }
            write_error(out, &format!("ERR {e}"));
        }
        match self {
            Command::Quit => Outcome::Close,
            _ => Outcome::Continue,
        }
    }

    fn apply_or_fail<E: KvsEngine>(
        self,
        engine: &E,
        state: &ServerState,
        client: &mut Client,
        out: &mut Vec<u8>,
    ) -> crate::Result<()> {
        let version = client.version;
        match self {
            Command::Ping(None) => write_simple(out, "PONG"),
            Command::Ping(Some(message)) | Command::Echo(message) => write_bulk(out, message),
            Command::Set {
                key,
                value,
                condition,
                get,
            } => {
                // Atomicity: the key's stripe lock is held from the check to the write, so
                // this is atomic against every other RESP command (they all write under the
                // same locks). Writers through the kvs protocol or the library take no lock
                // and can slip in between: the engine offers no compare-and-set to close that
                // gap.
                let _guard = state.lock(key);
                let old = match (condition, get) {
                    (None, false) => None,
                    (Some(_), false) => Some(engine.contains_key(key)?.then(Vec::new)),
                    (_, true) => Some(engine.get_bytes(key)?),
                };
                let allowed = match (condition, &old) {
                    (Some(Condition::NotExists), Some(old)) => old.is_none(),
                    (Some(Condition::Exists), Some(old)) => old.is_some(),
                    _ => true,
                };
                if allowed {
                    engine.set_bytes(key, value)?;
                }
                match (get, old) {
                    (true, Some(Some(old))) => write_bulk(out, &old),
                    (true, _) => write_nil(out, version),
                    (false, _) if allowed => write_simple(out, "OK"),
                    (false, _) => write_nil(out, version),
                }
            }
            Command::Get(key) => {
                let value = engine.get_bytes(key)?;
                state.lookup(value.is_some());
                match value {
                    Some(value) => write_bulk(out, &value),
                    None => write_nil(out, version),
                }
            }
            Command::Del(keys) => {
                let mut removed = 0;
                for key in keys.iter() {
                    let _guard = state.lock(key);
                    match engine.remove_bytes(key) {
                        Ok(()) => removed += 1,
                        Err(KvsError::KeyNotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
                write_integer(out, removed);
            }
            Command::Exists(keys) => {
                let mut found = 0;
                for key in keys.iter() {
                    if engine.contains_key(key)? {
                        found += 1;
                    }
                }
                write_integer(out, found);
            }
            Command::MGet(keys) => {
                // Fetch everything first: a failure must not leave half an array behind.
                let mut values = Vec::with_capacity(keys.len());
                for key in keys.iter() {
                    let value = engine.get_bytes(key)?;
                    state.lookup(value.is_some());
                    values.push(value);
                }
                write_array_len(out, values.len());
                for value in values {
                    match value {
                        Some(value) => write_bulk(out, &value),
                        None => write_nil(out, version),
                    }
                }
            }
            Command::MSet(pairs) => {
                // Not atomic as in Redis: the keys are set one after the other, so a reader
                // can see some set and not others, and a failure leaves the earlier ones set.
                for i in (0..pairs.len()).step_by(2) {
                    let key = pairs.get(i);
                    let _guard = state.lock(key);
                    engine.set_bytes(key, pairs.get(i + 1))?;
                }
                write_simple(out, "OK");
            }
            Command::DbSize => write_integer(out, engine.len()? as i64),
            Command::Info(sections) => {
                let text = super::info::render(sections, engine, state)?;
                write_bulk(out, text.as_bytes());
            }
            Command::Introspect(query) => introspect(query, version, out),
            Command::ConfigGet(names) => {
                let found: Vec<&(&str, &str)> = CONFIG
                    .iter()
                    .filter(|(name, _)| {
                        names
                            .iter()
                            .any(|n| n == b"*" || n.eq_ignore_ascii_case(name.as_bytes()))
                    })
                    .collect();
                write_map_len(out, found.len(), version);
                for (name, value) in found {
                    write_bulk(out, name.as_bytes());
                    write_bulk(out, value.as_bytes());
                }
            }
            Command::Hello(wanted) => {
                if let Some(wanted) = wanted {
                    client.version = wanted;
                }
                let proto = match client.version {
                    Version::Resp2 => 2,
                    Version::Resp3 => 3,
                };
                write_map_len(out, 7, client.version);
                write_bulk(out, b"server");
                write_bulk(out, b"redis");
                write_bulk(out, b"version");
                write_bulk(out, super::info::REDIS_VERSION.as_bytes());
                write_bulk(out, b"proto");
                write_integer(out, proto);
                write_bulk(out, b"id");
                write_integer(out, client.id as i64);
                write_bulk(out, b"mode");
                write_bulk(out, b"standalone");
                write_bulk(out, b"role");
                write_bulk(out, b"master");
                write_bulk(out, b"modules");
                write_array_len(out, 0);
            }
            Command::Quit => write_simple(out, "OK"),
        }
        Ok(())
    }
}

/// The configuration `CONFIG GET` shows, in Redis's terms: no snapshots (`save` is empty), and
/// every write appended to a log before it is acknowledged (`appendonly yes`). Other names, as
/// in Redis, are simply absent from the reply.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "yes")];

fn parse_set(args: Args<'_>) -> Result<Command<'_>, ErrorReply> {
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
    Ok(Command::Set {
        key: args.get(1),
        value: args.get(2),
        condition,
        get,
    })
}

fn parse_hello(args: Args<'_>) -> Result<Command<'_>, ErrorReply> {
    if args.len() == 1 {
        return Ok(Command::Hello(None));
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
    Ok(Command::Hello(Some(version)))
}

fn parse_introspection(args: Args<'_>) -> Result<Introspection<'_>, ErrorReply> {
    if args.len() == 1 {
        return Ok(Introspection::All);
    }
    let sub = args.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("count") && args.len() == 2 {
        Ok(Introspection::Count)
    } else if is("list") && args.len() == 2 {
        Ok(Introspection::List)
    } else if is("info") {
        Ok(Introspection::Info(args.skip(2)))
    } else if is("docs") {
        Ok(Introspection::Docs(args.skip(2)))
    } else if is("count") || is("list") {
        Err(wrong_arity(&format!(
            "command|{}",
            String::from_utf8_lossy(sub).to_lowercase()
        )))
    } else {
        Err(unknown_subcommand(sub, "COMMAND"))
    }
}

fn wrong_arity(name: &str) -> ErrorReply {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// Redis shows at most 128 bytes of the name and of the arguments.
fn unknown_command(args: Args<'_>) -> ErrorReply {
    let mut shown = String::new();
    for arg in args.skip(1).iter() {
        if shown.len() >= 128 {
            break;
        }
        let room = 128 - shown.len();
        shown.push_str(&format!(
            "'{}' ",
            truncate(&String::from_utf8_lossy(arg), room)
        ));
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        truncate(&String::from_utf8_lossy(args.get(0)), 128)
    )
}

fn unknown_subcommand(sub: &[u8], command: &str) -> ErrorReply {
    format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        truncate(&String::from_utf8_lossy(sub), 128)
    )
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::catalog::SPECS;
    use crate::resp::frame::{Frame, Limits};

    /// Splits `line` on spaces and carries it out on a fresh engine-less parse.
    fn parse(line: &str) -> Result<String, ErrorReply> {
        let mut ranges = Vec::new();
        let mut at = 0;
        for word in line.split(' ') {
            ranges.push(at..at + word.len());
            at += word.len() + 1;
        }
        Command::parse(Args::new(line.as_bytes(), &ranges)).map(|c| format!("{c:?}"))
    }

    #[test]
    fn arity_errors_use_redis_wording() {
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
        ] {
            assert_eq!(
                parse(line).unwrap_err(),
                format!("ERR wrong number of arguments for '{name}' command"),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_commands_quote_their_arguments() {
        assert_eq!(
            parse("foo a b").unwrap_err(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            parse("FLUSHALL").unwrap_err(),
            "ERR unknown command 'FLUSHALL', with args beginning with: "
        );
        assert_eq!(
            parse("COMMAND NOPE").unwrap_err(),
            "ERR unknown subcommand 'NOPE'. Try COMMAND HELP."
        );
    }

    #[test]
    fn set_options_are_checked() {
        assert!(parse("set k v nx get").unwrap().contains("NotExists"));
        assert!(parse("SET k v XX").unwrap().contains("Exists"));
        assert_eq!(parse("set k v nx xx").unwrap_err(), "ERR syntax error");
        assert_eq!(parse("set k v bogus").unwrap_err(), "ERR syntax error");
        assert!(parse("set k v EX 10")
            .unwrap_err()
            .contains("do not expire"));
    }

    #[test]
    fn command_docs_and_info_are_well_formed_replies() {
        let limits = Limits::for_frame_len(1 << 20);
        let mut out = Vec::new();
        introspect(Introspection::All, Version::Resp2, &mut out);
        let Some((Frame::Array(Some(all)), end)) = Frame::parse(&out, limits).unwrap() else {
            panic!("COMMAND is an array");
        };
        assert_eq!((all.len(), end), (SPECS.len(), out.len()));
        let ranges = [Range { start: 0, end: 3 }];
        out.clear();
        introspect(
            Introspection::Docs(Args::new(b"get", &ranges)),
            Version::Resp2,
            &mut out,
        );
        let Some((Frame::Array(Some(docs)), _)) = Frame::parse(&out, limits).unwrap() else {
            panic!("COMMAND DOCS is an array");
        };
        assert_eq!(docs[0], Frame::Bulk(Some(b"get".to_vec())));
        assert_eq!(docs.len(), 2);
    }
}
