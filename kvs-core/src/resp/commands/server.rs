//! Commands about the server: `INFO`, `COMMAND` (`COUNT`, `LIST`, `INFO`, `DOCS`: answered
//! from the command table, which is what `redis-cli` reads for its `help` and hints) and
//! `CONFIG GET`.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use super::{find, handler, Class, Command, Context, Keys, Row, TABLE};
use crate::resp::frame::{
    write_array_len, write_bulk, write_integer, write_map_len, write_nil, write_simple, Version,
};
use crate::resp::info;
use crate::resp::request::{unknown_subcommand, wrong_arity, Args, ErrorReply, Outcome};
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
        flags: &["loading", "stale"],
        class: Class::Admin,
        keys: Keys::NONE,
        group: "server",
        since: "2.0.0",
        summary: "Get the value of configuration parameters",
        handler: handler::<Config>(),
    },
];

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
                    None => match version {
                        Version::Resp2 => out.extend_from_slice(b"*-1\r\n"),
                        Version::Resp3 => write_nil(out, version),
                    },
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

/// `CONFIG GET parameter [parameter ...]`: only `save` and `appendonly`, which
/// redis-benchmark asks for before it starts (see [`CONFIG`]).
struct Config;

/// The configuration `CONFIG GET` shows, in Redis's terms: no snapshots (`save` is empty), and
/// every write appended to a log before it is acknowledged (`appendonly yes`). Other names, as
/// in Redis, are simply absent from the reply.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "yes")];

impl Command for Config {
    /// The parameters asked for.
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        if !args.get(1).eq_ignore_ascii_case(b"get") {
            Err(unknown_subcommand(args.get(1), "CONFIG"))
        } else if args.len() < 3 {
            Err(wrong_arity("config|get"))
        } else {
            Ok(args.skip(2))
        }
    }

    fn run(names: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let found: Vec<&(&str, &str)> = CONFIG
            .iter()
            .filter(|(name, _)| {
                names
                    .iter()
                    .any(|n| n == b"*" || n.eq_ignore_ascii_case(name.as_bytes()))
            })
            .collect();
        write_map_len(cx.out, found.len(), cx.client.version);
        for (name, value) in found {
            write_bulk(cx.out, name.as_bytes());
            write_bulk(cx.out, value.as_bytes());
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
