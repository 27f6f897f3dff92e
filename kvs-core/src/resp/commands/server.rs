//! Commands about the server: `INFO`, `COMMAND` (`COUNT`, `LIST`, `INFO`, `DOCS`: answered
//! from the command table, which is what `redis-cli` reads for its `help` and hints),
//! `CONFIG GET` and `SET`, `TIME`, `SAVE`, `BGSAVE`, `LASTSAVE` and `SHUTDOWN`.
//!
//! # Saving
//!
//! kvs has no snapshots: every write is in the engine's log before it is acknowledged. So
//! `SAVE` and `BGSAVE` flush the engine to disk (as a clean shutdown does) and `LASTSAVE` says
//! when that last happened; `BGSAVE` flushes before it answers `Background saving started`,
//! as the flush is short. `SHUTDOWN` (with `SAVE`, `NOSAVE` or neither, all the same for kvs)
//! stops the server as SIGTERM does: it finishes the requests in flight, flushes the engine
//! and exits; the connection that asked is closed without a reply, as Redis does.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use super::{find, handler, Class, Command, Context, Keys, Row, TABLE};
use crate::resp::frame::{
    write_array_len, write_bulk, write_error, write_integer, write_map_len, write_nil,
    write_simple, Version,
};
use crate::resp::info;
use crate::resp::request::{unknown_subcommand, wrong_arity, Args, ErrorReply, Outcome};
use crate::scan::glob_match;
use crate::server::state::unix_now;
use crate::Result;

pub(super) const COMMANDS: &[Row] = &[
    Row {
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "1.0.0",
        summary: "Get information and statistics about the server",
        handler: handler::<Info>(),
    },
    Row {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "2.8.13",
        summary: "Get array of command details",
        handler: handler::<Introspect>(),
    },
    Row {
        name: "config",
        arity: -2,
        flags: &[],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "2.0.0",
        summary: "A container for server configuration commands",
        handler: handler::<Config>(),
    },
    Row {
        name: "time",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "2.6.0",
        summary: "Return the current server time",
        handler: handler::<Time>(),
    },
    Row {
        name: "save",
        arity: 1,
        flags: &["admin", "noscript", "no_async_loading", "no_multi"],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "1.0.0",
        summary: "Flush the store to disk (kvs has no snapshots: every write is already logged)",
        handler: handler::<Save>(),
    },
    Row {
        name: "bgsave",
        arity: -1,
        flags: &["admin", "noscript", "no_async_loading"],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "1.0.0",
        summary: "Flush the store to disk, as SAVE does",
        handler: handler::<BgSave>(),
    },
    Row {
        name: "lastsave",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "1.0.0",
        summary: "Get the UNIX time stamp of the last flush of the store to disk",
        handler: handler::<LastSave>(),
    },
    Row {
        name: "shutdown",
        arity: -1,
        flags: &[
            "admin",
            "noscript",
            "loading",
            "stale",
            "no_multi",
            "allow_busy",
        ],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "1.0.0",
        summary: "Stop the server cleanly, as SIGTERM does",
        handler: handler::<Shutdown>(),
    },
];

const SYNTAX: &str = "ERR syntax error";

/// `TIME`: seconds and microseconds since the Unix epoch.
struct Time;

impl Command for Time {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        let now = unix_now();
        write_array_len(cx.out, 2);
        write_bulk(cx.out, now.as_secs().to_string().as_bytes());
        write_bulk(cx.out, now.subsec_micros().to_string().as_bytes());
        Ok(Outcome::Continue)
    }
}

/// Flushes the engine to disk and records when (`LASTSAVE`).
fn flush(cx: &mut Context<'_>) -> Result<()> {
    cx.engine.flush()?;
    cx.state.saved();
    Ok(())
}

/// `SAVE`: a flush of the engine to disk (see the module doc).
struct Save;

impl Command for Save {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        flush(cx)?;
        write_simple(cx.out, "OK");
        Ok(Outcome::Continue)
    }
}

/// `BGSAVE [SCHEDULE]`: the same flush, done before the reply.
struct BgSave;

impl Command for BgSave {
    type Parsed<'a, 'r> = ();

    fn parse(args: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        match args.len() {
            1 => Ok(()),
            2 if args.get(1).eq_ignore_ascii_case(b"schedule") => Ok(()),
            _ => Err(SYNTAX.to_string()),
        }
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        flush(cx)?;
        write_simple(cx.out, "Background saving started");
        Ok(Outcome::Continue)
    }
}

/// `LASTSAVE`
struct LastSave;

impl Command for LastSave {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        write_integer(cx.out, cx.state.last_save() as i64);
        Ok(Outcome::Continue)
    }
}

/// `SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE]`: a clean stop (see the module doc). `NOW` and
/// `FORCE` change nothing: there are no replicas to wait for, and the final flush is the
/// same either way.
struct Shutdown;

impl Command for Shutdown {
    type Parsed<'a, 'r> = ();

    fn parse(args: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        let (mut save_given, mut abort, mut other) = (false, false, false);
        for option in args.skip(1).iter() {
            let is = |name: &[u8]| option.eq_ignore_ascii_case(name);
            if is(b"save") || is(b"nosave") {
                if save_given {
                    return Err(SYNTAX.to_string());
                }
                save_given = true;
            } else if is(b"abort") {
                abort = true;
            } else if is(b"now") || is(b"force") {
                other = true;
            } else {
                return Err(SYNTAX.to_string());
            }
        }
        if abort && (save_given || other) {
            return Err(SYNTAX.to_string());
        }
        if abort {
            // A shutdown starts at once and cannot be called back.
            return Err("ERR No shutdown in progress.".to_string());
        }
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        let peer = cx.client.info.peer;
        if cx.state.shut_down() {
            log::info!(
                "SHUTDOWN from {}; shutting down",
                peer.map_or_else(|| "a client".to_string(), |a| a.to_string())
            );
            Ok(Outcome::Close)
        } else {
            write_error(cx.out, "ERR Errors trying to SHUTDOWN. Check logs.");
            Ok(Outcome::Continue)
        }
    }
}

/// `INFO [section ...]`
struct Info;

impl Command for Info {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(sections: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let text = info::render(sections, cx.engine, cx.state)?;
        write_bulk(cx.out, text.as_bytes());
        Ok(Outcome::Continue)
    }
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND LIST`, `COMMAND INFO [name ...]`,
/// `COMMAND DOCS [name ...]`
struct Introspect;

/// The sub-commands of `COMMAND`.
#[derive(Debug, Clone, Copy)]
enum Query<'a, 'r> {
    /// `COMMAND`: information on every command.
    All,
    /// `COMMAND COUNT`
    Count,
    /// `COMMAND LIST`
    List,
    /// `COMMAND INFO [name ...]`
    Info(Args<'a, 'r>),
    /// `COMMAND DOCS [name ...]`
    Docs(Args<'a, 'r>),
}

impl Command for Introspect {
    type Parsed<'a, 'r> = Query<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Query<'a, 'r>, ErrorReply> {
        if args.len() == 1 {
            return Ok(Query::All);
        }
        let sub = args.get(1);
        let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
        if is("count") && args.len() == 2 {
            Ok(Query::Count)
        } else if is("list") && args.len() == 2 {
            Ok(Query::List)
        } else if is("info") {
            Ok(Query::Info(args.skip(2)))
        } else if is("docs") {
            Ok(Query::Docs(args.skip(2)))
        } else if is("count") || is("list") {
            Err(wrong_arity(&format!(
                "command|{}",
                String::from_utf8_lossy(sub).to_lowercase()
            )))
        } else {
            Err(unknown_subcommand(sub, "COMMAND"))
        }
    }

    fn run(query: Query<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        introspect(query, cx.client.version, cx.out);
        Ok(Outcome::Continue)
    }
}

/// Answers `COMMAND` and its sub-commands from [`TABLE`].
fn introspect(query: Query<'_, '_>, version: Version, out: &mut Vec<u8>) {
    match query {
        Query::All => {
            write_array_len(out, TABLE.len());
            for row in &TABLE {
                write_info(out, row);
            }
        }
        Query::Count => write_integer(out, TABLE.len() as i64),
        Query::List => {
            write_array_len(out, TABLE.len());
            for row in &TABLE {
                write_bulk(out, row.name.as_bytes());
            }
        }
        Query::Info(names) if names.is_empty() => introspect(Query::All, version, out),
        Query::Info(names) => {
            write_array_len(out, names.len());
            for name in names.iter() {
                match find(name) {
                    Some(row) => write_info(out, row),
                    // `$-1` in RESP2, as Redis 7 answers.
                    None => write_nil(out, version),
                }
            }
        }
        Query::Docs(names) => {
            // A map of name to a map of fields (in RESP2, flat arrays). Unknown names are left
            // out, as Redis does.
            let rows: Vec<&Row> = if names.is_empty() {
                TABLE.iter().collect()
            } else {
                names.iter().filter_map(find).collect()
            };
            write_map_len(out, rows.len(), version);
            for row in rows {
                write_bulk(out, row.name.as_bytes());
                write_map_len(out, 3, version);
                for (field, value) in [
                    ("summary", row.summary),
                    ("since", row.since),
                    ("group", row.group),
                ] {
                    write_bulk(out, field.as_bytes());
                    write_bulk(out, value.as_bytes());
                }
            }
        }
    }
}

/// One command's entry in `COMMAND`'s reply: the first six fields of Redis's (name, arity,
/// flags, first key, last key, step), which is what clients read. The flags start with the
/// class's `write` or `readonly`.
fn write_info(out: &mut Vec<u8>, row: &Row) {
    write_array_len(out, 6);
    write_bulk(out, row.name.as_bytes());
    write_integer(out, row.arity);
    let class_flag = row.class.redis_flag();
    write_array_len(out, usize::from(class_flag.is_some()) + row.flags.len());
    for flag in class_flag.iter().chain(row.flags) {
        write_simple(out, flag);
    }
    write_integer(out, row.keys.first);
    write_integer(out, row.keys.last);
    write_integer(out, row.keys.step);
}

/// `CONFIG GET pattern [pattern ...]`, `CONFIG SET parameter value [parameter value ...]`,
/// `CONFIG RESETSTAT`: the parameters of [`parameters`].
struct Config;

/// A `CONFIG` request, understood.
enum ConfigQuery<'a, 'r> {
    Get(Args<'a, 'r>),
    Set(Args<'a, 'r>),
}

/// kvs's settings in Redis's terms, as `CONFIG GET` shows them:
/// - `save` empty and `appendonly yes`: no snapshots, every write appended to a log before it
///   is acknowledged;
/// - `port`, `bind`, `maxclients` (`--max-connections`), `proto-max-bulk-len`
///   (`--max-frame-bytes`) as the server was started;
/// - `timeout 0`: idle clients are never closed (kvs's `--client-timeout` is for clients that
///   leave a request half-sent or replies unread, which Redis has no setting for);
/// - `databases 1`, `maxmemory 0` and `maxmemory-policy noeviction`: one database, and keys
///   are never evicted.
///
/// They are fixed when the server starts: `CONFIG SET` takes only a parameter's current value.
fn parameters(cx: &Context<'_>) -> Vec<(&'static str, String)> {
    let settings = cx.state.settings();
    let (port, bind) = match settings.addr {
        Some(addr) => (addr.port().to_string(), addr.ip().to_string()),
        None => ("0".to_string(), String::new()),
    };
    vec![
        ("save", String::new()),
        ("appendonly", "yes".to_string()),
        ("port", port),
        ("bind", bind),
        ("maxclients", settings.max_connections.to_string()),
        ("proto-max-bulk-len", settings.max_frame_len.to_string()),
        ("timeout", "0".to_string()),
        ("databases", "1".to_string()),
        ("maxmemory", "0".to_string()),
        ("maxmemory-policy", "noeviction".to_string()),
    ]
}

impl Command for Config {
    type Parsed<'a, 'r> = ConfigQuery<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<ConfigQuery<'a, 'r>, ErrorReply> {
        let sub = args.get(1);
        if sub.eq_ignore_ascii_case(b"get") {
            if args.len() < 3 {
                return Err(wrong_arity("config|get"));
            }
            Ok(ConfigQuery::Get(args.skip(2)))
        } else if sub.eq_ignore_ascii_case(b"set") {
            if args.len() < 4 {
                return Err(wrong_arity("config|set"));
            }
            if !args.len().is_multiple_of(2) {
                return Err(SYNTAX.to_string());
            }
            Ok(ConfigQuery::Set(args.skip(2)))
        } else {
            Err(unknown_subcommand(sub, "CONFIG"))
        }
    }

    fn run(query: ConfigQuery<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let parameters = parameters(cx);
        match query {
            ConfigQuery::Get(patterns) => {
                // A name without wildcards is answered as it was written (Redis does);
                // the names a pattern matches, in lower case. Each parameter once.
                let mut found: Vec<(&[u8], &str)> = Vec::new();
                for pattern in patterns.iter() {
                    let is_glob = pattern.iter().any(|b| b"*?[".contains(b));
                    for (name, value) in &parameters {
                        let matches = if is_glob {
                            glob_match(&pattern.to_ascii_lowercase(), name.as_bytes())
                        } else {
                            pattern.eq_ignore_ascii_case(name.as_bytes())
                        };
                        if matches
                            && !found
                                .iter()
                                .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                        {
                            let shown = if is_glob { name.as_bytes() } else { pattern };
                            found.push((shown, value));
                        }
                    }
                }
                write_map_len(cx.out, found.len(), cx.client.version);
                for (name, value) in found {
                    write_bulk(cx.out, name);
                    write_bulk(cx.out, value.as_bytes());
                }
            }
            ConfigQuery::Set(pairs) => {
                let mut i = 0;
                while i + 1 < pairs.len() {
                    let (name, value) = (pairs.get(i), pairs.get(i + 1));
                    let shown = String::from_utf8_lossy(name);
                    match parameters
                        .iter()
                        .find(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()))
                    {
                        None => {
                            write_error(
                                cx.out,
                                &format!(
                                    "ERR Unknown option or number of arguments for CONFIG SET \
                                     - '{shown}'"
                                ),
                            );
                            return Ok(Outcome::Continue);
                        }
                        Some((_, current)) if current.as_bytes() != value => {
                            write_error(
                                cx.out,
                                &format!(
                                    "ERR CONFIG SET failed (possibly related to argument \
                                     '{shown}') - can't set immutable config"
                                ),
                            );
                            return Ok(Outcome::Continue);
                        }
                        Some(_) => {}
                    }
                    i += 2;
                }
                write_simple(cx.out, "OK");
            }
        }
        Ok(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    /// The reply to `query` in `version`, as text.
    fn reply(query: Query<'_, '_>, version: Version) -> String {
        let mut out = Vec::new();
        introspect(query, version, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn command_docs_and_info_have_redis_layout() {
        let get = [Range { start: 0, end: 3 }];
        let docs = |version| reply(Query::Docs(Args::new(b"get", &get)), version);
        let fields = "$7\r\nsummary\r\n$22\r\nGet the value of a key\r\n\
                      $5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n";
        assert_eq!(
            docs(Version::Resp2),
            format!("*2\r\n$3\r\nget\r\n*6\r\n{fields}")
        );
        assert_eq!(
            docs(Version::Resp3),
            format!("%1\r\n$3\r\nget\r\n%3\r\n{fields}")
        );
        assert_eq!(
            reply(Query::Info(Args::new(b"get", &get)), Version::Resp2),
            "*1\r\n*6\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
        );
        // COMMAND: every row's entry, as COMMAND INFO gives it, in table order, in one array.
        let mut all = format!("*{}\r\n", TABLE.len());
        for row in &TABLE {
            let name = [Range {
                start: 0,
                end: row.name.len(),
            }];
            let info = reply(
                Query::Info(Args::new(row.name.as_bytes(), &name)),
                Version::Resp2,
            );
            all += info.strip_prefix("*1\r\n").unwrap();
        }
        assert_eq!(reply(Query::All, Version::Resp2), all);
    }
}
