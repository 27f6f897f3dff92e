//! The catalogue of commands kvs answers, and `COMMAND`, which describes them to clients
//! (`redis-cli` reads `COMMAND DOCS` for its `help` and hints).

use super::command::Introspection;
use super::frame::{
    write_array_len, write_bulk, write_integer, write_map_len, write_nil, write_simple, Version,
};

/// A command kvs knows, as `COMMAND` describes it.
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    /// Redis's arity: `n` exactly n arguments (name included), `-n` at least n.
    pub(crate) arity: i64,
    flags: &'static [&'static str],
    /// First key argument, last (-1: the last argument), step between keys.
    keys: (i64, i64, i64),
    summary: &'static str,
    group: &'static str,
    since: &'static str,
}

/// Every command, in alphabetical order. Flags, key positions, `since` and `group` are
/// Redis's.
#[rustfmt::skip]
pub(crate) const SPECS: &[Spec] = &[
    spec("command", -1, &["loading", "stale"], (0, 0, 0), "server", "2.8.13", "Get array of command details"),
    spec("config", -2, &["loading", "stale"], (0, 0, 0), "server", "2.0.0", "Get the value of configuration parameters"),
    spec("dbsize", 1, &["readonly", "fast"], (0, 0, 0), "server", "1.0.0", "Return the number of keys"),
    spec("del", -2, &["write"], (1, -1, 1), "generic", "1.0.0", "Delete keys"),
    spec("echo", 2, &["fast"], (0, 0, 0), "connection", "1.0.0", "Echo the given string"),
    spec("exists", -2, &["readonly", "fast"], (1, -1, 1), "generic", "1.0.0", "Count how many of the given keys exist"),
    spec("get", 2, &["readonly", "fast"], (1, 1, 1), "string", "1.0.0", "Get the value of a key"),
    spec("hello", -1, &["noscript", "loading", "stale", "fast"], (0, 0, 0), "connection", "6.0.0", "Handshake with the server, choosing RESP2 or RESP3"),
    spec("info", -1, &["loading", "stale"], (0, 0, 0), "server", "1.0.0", "Get information and statistics about the server"),
    spec("mget", -2, &["readonly", "fast"], (1, -1, 1), "string", "1.0.0", "Get the values of all the given keys"),
    spec("mset", -3, &["write", "denyoom"], (1, -1, 2), "string", "1.0.1", "Set multiple keys to multiple values"),
    spec("ping", -1, &["fast"], (0, 0, 0), "connection", "1.0.0", "Ping the server"),
    spec("quit", -1, &["fast"], (0, 0, 0), "connection", "1.0.0", "Close the connection"),
    spec("set", -3, &["write", "denyoom"], (1, 1, 1), "string", "1.0.0", "Set the string value of a key"),
];

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
    since: &'static str,
    summary: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        summary,
        group,
        since,
    }
}

/// The command named `name`, in any case.
pub(crate) fn find(name: &[u8]) -> Option<&'static Spec> {
    SPECS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Answers `COMMAND` and its sub-commands from [`SPECS`].
pub(crate) fn introspect(query: Introspection<'_>, version: Version, out: &mut Vec<u8>) {
    match query {
        Introspection::All => {
            write_array_len(out, SPECS.len());
            for spec in SPECS {
                write_info(out, spec);
            }
        }
        Introspection::Count => write_integer(out, SPECS.len() as i64),
        Introspection::List => {
            write_array_len(out, SPECS.len());
            for spec in SPECS {
                write_bulk(out, spec.name.as_bytes());
            }
        }
        Introspection::Info(names) if names.is_empty() => {
            introspect(Introspection::All, version, out)
        }
        Introspection::Info(names) => {
            write_array_len(out, names.len());
            for name in names.iter() {
                match find(name) {
                    Some(spec) => write_info(out, spec),
                    None => match version {
                        Version::Resp2 => out.extend_from_slice(b"*-1\r\n"),
                        Version::Resp3 => write_nil(out, version),
                    },
                }
            }
        }
        Introspection::Docs(names) => {
            // A map of name to a map of fields (in RESP2, flat arrays). Unknown names are left
            // out, as Redis does.
            let specs: Vec<&Spec> = if names.is_empty() {
                SPECS.iter().collect()
            } else {
                names.iter().filter_map(find).collect()
            };
            write_map_len(out, specs.len(), version);
            for spec in specs {
                write_bulk(out, spec.name.as_bytes());
                write_map_len(out, 3, version);
                for (field, value) in [
                    ("summary", spec.summary),
                    ("since", spec.since),
                    ("group", spec.group),
                ] {
                    write_bulk(out, field.as_bytes());
                    write_bulk(out, value.as_bytes());
                }
            }
        }
    }
}

/// One command's entry in `COMMAND`'s reply: the first six fields of Redis's (name, arity,
/// flags, first key, last key, step), which is what clients read.
fn write_info(out: &mut Vec<u8>, spec: &Spec) {
    write_array_len(out, 6);
    write_bulk(out, spec.name.as_bytes());
    write_integer(out, spec.arity);
    write_array_len(out, spec.flags.len());
    for flag in spec.flags {
        write_simple(out, flag);
    }
    write_integer(out, spec.keys.0);
    write_integer(out, spec.keys.1);
    write_integer(out, spec.keys.2);
}
