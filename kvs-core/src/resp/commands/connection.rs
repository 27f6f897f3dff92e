//! Commands about the connection itself: `AUTH`, `HELLO`, `PING`, `ECHO`, `SELECT`,
//! `CLIENT` (`ID`, `GETNAME`, `SETNAME`, `SETINFO`, `INFO`, `LIST`, `KILL`, `NO-EVICT`,
//! `NO-TOUCH`, `REPLY`), `RESET`, `QUIT`.
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).
//!
//! # Passwords
//!
//! A server with a password ([`ServerConfig::requirepass`](crate::ServerConfig::requirepass))
//! answers `-NOAUTH Authentication required.` to every command without the `no_auth` flag
//! (`AUTH`, `HELLO`, `QUIT`, `RESET`) until the connection gives it: `AUTH password`,
//! `AUTH default password` or `HELLO 3 AUTH default password`. kvs has one user, Redis's
//! `default`; any other name is a wrong password. Without a password every connection is
//! authenticated from the start, as with Redis's `default` user without one.

use std::sync::Arc;
use std::time::Instant;

use super::{handler, Class, Command, Context, Keys, Row, NO_AUTH};
use crate::resp::frame::{
    write_array_len, write_bulk, write_integer, write_map_len, write_nil, write_simple, Version,
};
use crate::resp::info::REDIS_VERSION;
use crate::resp::request::{
    integer_arg, truncate, unknown_subcommand, wrong_arity, Args, ErrorReply, Outcome, ReplyMode,
};
use crate::server::state::ClientInfo;
use crate::Result;

/// The flags of the commands allowed before the password (Redis 7's).
const NO_AUTH_FLAGS: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    NO_AUTH,
    "allow_busy",
];

/// Redis's reply to a wrong password, or a user other than `default`.
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

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
        flags: &["loading", "stale", "fast"],
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
        flags: NO_AUTH_FLAGS,
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "6.0.0",
        summary: "Handshake with the server, choosing RESP2 or RESP3",
        handler: handler::<Hello>(),
    },
    Row {
        name: "auth",
        arity: -2,
        flags: NO_AUTH_FLAGS,
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "1.0.0",
        summary: "Authenticate to the server",
        handler: handler::<Auth>(),
    },
    Row {
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "1.0.0",
        summary: "Change the selected database for the current connection (kvs has only 0)",
        handler: handler::<Select>(),
    },
    Row {
        name: "client",
        arity: -2,
        flags: &[],
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "2.4.0",
        summary: "A container for client connection commands",
        handler: handler::<ClientCommand>(),
    },
    Row {
        name: "reset",
        arity: 1,
        flags: NO_AUTH_FLAGS,
        class: Class::Connection,
        keys: Keys::NONE,
        group: "connection",
        since: "6.2.0",
        summary: "Reset the connection",
        handler: handler::<Reset>(),
    },
    Row {
        name: "quit",
        arity: -1,
        flags: NO_AUTH_FLAGS,
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

/// `HELLO [protover [AUTH username password] [SETNAME name]]`: switch to RESP2 or 3,
/// authenticate and name the connection, and describe the server. Without the password
/// given, before or in it, only `HELLO ... AUTH` succeeds.
struct Hello;

/// A `HELLO`, understood.
struct HelloArgs<'a> {
    version: Option<Version>,
    auth: Option<(&'a [u8], &'a [u8])>,
    name: Option<&'a [u8]>,
}

impl Command for Hello {
    type Parsed<'a, 'r> = HelloArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<HelloArgs<'a>, ErrorReply> {
        let mut hello = HelloArgs {
            version: None,
            auth: None,
            name: None,
        };
        if args.len() == 1 {
            return Ok(hello);
        }
        hello.version = Some(match args.get(1) {
            b"2" => Version::Resp2,
            b"3" => Version::Resp3,
            other => match integer_arg(other) {
                Ok(_) => return Err("NOPROTO unsupported protocol version".to_string()),
                Err(_) => {
                    return Err("ERR Protocol version is not an integer or out of range".to_string())
                }
            },
        });
        let mut i = 2;
        while i < args.len() {
            let option = args.get(i);
            let remaining = args.len() - i - 1;
            if option.eq_ignore_ascii_case(b"auth") && remaining >= 2 {
                hello.auth = Some((args.get(i + 1), args.get(i + 2)));
                i += 3;
            } else if option.eq_ignore_ascii_case(b"setname") && remaining >= 1 {
                hello.name = Some(args.get(i + 1));
                i += 2;
            } else {
                return Err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    truncate(&String::from_utf8_lossy(option), 128)
                ));
            }
        }
        Ok(hello)
    }

    fn run(hello: HelloArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        if let Some((user, password)) = hello.auth {
            if let Err(reply) = authenticate(cx, Some(user), password) {
                write_error_reply(cx, &reply);
                return Ok(Outcome::Continue);
            }
        }
        if !is_authenticated(cx) {
            write_error_reply(
                cx,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO AUTH <user> <pass> option can be used to authenticate the client and \
                 select the RESP protocol version at the same time",
            );
            return Ok(Outcome::Continue);
        }
        if let Some(name) = hello.name {
            if let Err(reply) = set_name(&cx.client.info, name) {
                write_error_reply(cx, &reply);
                return Ok(Outcome::Continue);
            }
        }
        if let Some(wanted) = hello.version {
            set_version(cx, wanted);
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

fn write_error_reply(cx: &mut Context<'_>, reply: &str) {
    crate::resp::frame::write_error(cx.out, reply);
}

/// Whether the connection may run any command: it gave the password, or there is none.
fn is_authenticated(cx: &Context<'_>) -> bool {
    cx.client.authenticated || !cx.state.requires_password()
}

/// Checks `user` (`None`: `default`) and `password` as Redis's `AUTH` does, and marks the
/// connection authenticated if they are right. Without a server password, user `default`
/// takes any password (Redis's `nopass`).
fn authenticate(
    cx: &mut Context<'_>,
    user: Option<&[u8]>,
    password: &[u8],
) -> std::result::Result<(), ErrorReply> {
    let default_user = user.is_none_or(|u| u == b"default");
    if !cx.state.requires_password() {
        return if default_user {
            Ok(())
        } else {
            Err(WRONGPASS.to_string())
        };
    }
    // The password is compared even for a wrong user, so that the time taken does not say
    // which was wrong.
    let matches = cx.state.password_matches(password);
    if matches && default_user {
        cx.client.authenticated = true;
        Ok(())
    } else {
        log::info!(
            "client {} gave a wrong password or user",
            cx.client
                .info
                .peer
                .map_or_else(String::new, |a| a.to_string())
        );
        Err(WRONGPASS.to_string())
    }
}

/// Switches the connection to RESP `version`.
fn set_version(cx: &mut Context<'_>, version: Version) {
    cx.client.version = version;
    cx.client.info.details().resp = match version {
        Version::Resp2 => 2,
        Version::Resp3 => 3,
    };
}

/// Names the connection (an empty name removes it), refusing the names Redis refuses.
fn set_name(info: &ClientInfo, name: &[u8]) -> std::result::Result<(), ErrorReply> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(
            "ERR Client names cannot contain spaces, newlines or special characters.".to_string(),
        );
    }
    info.details().name = if name.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(name).into_owned())
    };
    Ok(())
}

/// `AUTH [username] password`
struct Auth;

impl Command for Auth {
    /// The user, if named, and the password.
    type Parsed<'a, 'r> = (Option<&'a [u8]>, &'a [u8]);

    fn parse<'a>(
        args: Args<'a, '_>,
    ) -> std::result::Result<(Option<&'a [u8]>, &'a [u8]), ErrorReply> {
        match args.len() {
            2 => Ok((None, args.get(1))),
            3 => Ok((Some(args.get(1)), args.get(2))),
            _ => Err("ERR syntax error".to_string()),
        }
    }

    fn run((user, password): (Option<&[u8]>, &[u8]), cx: &mut Context<'_>) -> Result<Outcome> {
        if user.is_none() && !cx.state.requires_password() {
            write_error_reply(
                cx,
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            );
            return Ok(Outcome::Continue);
        }
        match authenticate(cx, user, password) {
            Ok(()) => write_simple(cx.out, "OK"),
            Err(reply) => write_error_reply(cx, &reply),
        }
        Ok(Outcome::Continue)
    }
}

/// `SELECT index`: kvs has one database, 0.
struct Select;

impl Command for Select {
    type Parsed<'a, 'r> = ();

    fn parse(args: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        let index = integer_arg(args.get(1))?;
        if i32::try_from(index).is_err() {
            return Err(
                "ERR value is out of range, value must between -2147483648 and 2147483647"
                    .to_string(),
            );
        }
        if index != 0 {
            return Err("ERR DB index is out of range".to_string());
        }
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        write_simple(cx.out, "OK");
        Ok(Outcome::Continue)
    }
}

/// `RESET`: the connection as new: RESP2, no name, replies on, and (with a server password)
/// not authenticated.
struct Reset;

impl Command for Reset {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        set_version(cx, Version::Resp2);
        // No transaction, no watched key: RESET inside MULTI never gets here (queuing clears
        // it first), but WATCHed keys outside one do.
        cx.multi.clear();
        cx.client.authenticated = false;
        cx.client.reply = ReplyMode::On;
        {
            let mut details = cx.client.info.details();
            details.name = None;
            details.no_evict = false;
            details.no_touch = false;
        }
        write_simple(cx.out, "RESET");
        Ok(Outcome::Continue)
    }
}

/// `CLIENT subcommand ...`
struct ClientCommand;

/// The sub-commands of `CLIENT`.
enum ClientQuery<'a> {
    Id,
    GetName,
    SetName(&'a [u8]),
    /// `SETINFO LIB-NAME|LIB-VER value`: `true` for the name.
    SetInfo(bool, &'a [u8]),
    Info,
    /// `LIST [TYPE normal] [ID id ...]`: the ids asked for, if any.
    List(Option<Vec<u64>>),
    Kill(Kill<'a>),
    NoEvict(bool),
    NoTouch(bool),
    Reply(ReplyMode),
}

/// Which connections `CLIENT KILL` closes.
struct Kill<'a> {
    /// The old form `CLIENT KILL addr`: answers `OK` or `No such client`.
    old_form: bool,
    id: Option<u64>,
    addr: Option<&'a [u8]>,
    laddr: Option<&'a [u8]>,
    /// `SKIPME yes` (the default of the new form): the connection itself is spared.
    skip_me: bool,
}

const SYNTAX: &str = "ERR syntax error";

/// `on` or `off`, in any case.
fn on_off(arg: &[u8]) -> std::result::Result<bool, ErrorReply> {
    if arg.eq_ignore_ascii_case(b"on") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"off") {
        Ok(false)
    } else {
        Err(SYNTAX.to_string())
    }
}

/// A client id as `CLIENT KILL ID` and `CLIENT LIST ID` take it.
fn client_id(arg: &[u8]) -> std::result::Result<u64, ErrorReply> {
    match integer_arg(arg) {
        Ok(id) if id > 0 => Ok(id as u64),
        _ => Err("ERR client-id should be greater than 0".to_string()),
    }
}

impl Command for ClientCommand {
    type Parsed<'a, 'r> = ClientQuery<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<ClientQuery<'a>, ErrorReply> {
        let sub = args.get(1);
        let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
        let n = args.len();
        let arity = |exact: usize| {
            if n == exact {
                Ok(())
            } else {
                Err(wrong_arity(&format!(
                    "client|{}",
                    String::from_utf8_lossy(sub).to_lowercase()
                )))
            }
        };
        if is("id") {
            arity(2).map(|()| ClientQuery::Id)
        } else if is("getname") {
            arity(2).map(|()| ClientQuery::GetName)
        } else if is("setname") {
            arity(3).map(|()| ClientQuery::SetName(args.get(2)))
        } else if is("setinfo") {
            arity(4)?;
            let attr = args.get(2);
            if attr.eq_ignore_ascii_case(b"lib-name") {
                Ok(ClientQuery::SetInfo(true, args.get(3)))
            } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                Ok(ClientQuery::SetInfo(false, args.get(3)))
            } else {
                Err(format!(
                    "ERR Unrecognized option '{}'",
                    truncate(&String::from_utf8_lossy(attr), 128)
                ))
            }
        } else if is("info") {
            arity(2).map(|()| ClientQuery::Info)
        } else if is("list") {
            let mut ids = None;
            let mut i = 2;
            while i < n {
                let option = args.get(i);
                if option.eq_ignore_ascii_case(b"type") && i + 1 < n {
                    let kind = args.get(i + 1);
                    if ![&b"normal"[..], b"master", b"replica", b"slave", b"pubsub"]
                        .iter()
                        .any(|k| kind.eq_ignore_ascii_case(k))
                    {
                        return Err(format!(
                            "ERR Unknown client type '{}'",
                            String::from_utf8_lossy(kind)
                        ));
                    }
                    // Every kvs connection is a normal one.
                    if !kind.eq_ignore_ascii_case(b"normal") {
                        ids = Some(Vec::new());
                    }
                    i += 2;
                } else if option.eq_ignore_ascii_case(b"id") && i + 1 < n {
                    let mut list = Vec::new();
                    i += 1;
                    while i < n {
                        match integer_arg(args.get(i)) {
                            Ok(id) if id > 0 => list.push(id as u64),
                            _ => return Err("ERR Invalid client ID".to_string()),
                        }
                        i += 1;
                    }
                    ids = Some(list);
                } else {
                    return Err(SYNTAX.to_string());
                }
            }
            Ok(ClientQuery::List(ids))
        } else if is("kill") {
            parse_kill(args).map(ClientQuery::Kill)
        } else if is("no-evict") {
            arity(3)?;
            on_off(args.get(2)).map(ClientQuery::NoEvict)
        } else if is("no-touch") {
            arity(3)?;
            on_off(args.get(2)).map(ClientQuery::NoTouch)
        } else if is("reply") {
            arity(3)?;
            let mode = args.get(2);
            if mode.eq_ignore_ascii_case(b"on") {
                Ok(ClientQuery::Reply(ReplyMode::On))
            } else if mode.eq_ignore_ascii_case(b"off") {
                Ok(ClientQuery::Reply(ReplyMode::Off))
            } else if mode.eq_ignore_ascii_case(b"skip") {
                Ok(ClientQuery::Reply(ReplyMode::SkipNext))
            } else {
                Err(SYNTAX.to_string())
            }
        } else {
            Err(unknown_subcommand(sub, "CLIENT"))
        }
    }

    fn run(query: ClientQuery<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        match query {
            ClientQuery::Id => write_integer(cx.out, cx.client.id as i64),
            ClientQuery::GetName => match cx.client.info.details().name.clone() {
                Some(name) => write_bulk(cx.out, name.as_bytes()),
                None => write_nil(cx.out, cx.client.version),
            },
            ClientQuery::SetName(name) => match set_name(&cx.client.info, name) {
                Ok(()) => write_simple(cx.out, "OK"),
                Err(reply) => write_error_reply(cx, &reply),
            },
            ClientQuery::SetInfo(is_name, value) => {
                if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                    write_error_reply(
                        cx,
                        &format!(
                            "ERR {} cannot contain spaces, newlines or special characters.",
                            if is_name { "lib-name" } else { "lib-ver" }
                        ),
                    );
                } else {
                    let value =
                        Some(String::from_utf8_lossy(value).into_owned()).filter(|v| !v.is_empty());
                    let mut details = cx.client.info.details();
                    if is_name {
                        details.lib_name = value;
                    } else {
                        details.lib_ver = value;
                    }
                    drop(details);
                    write_simple(cx.out, "OK");
                }
            }
            ClientQuery::Info => {
                let line = cx.client.info.line(Instant::now());
                write_bulk(cx.out, line.as_bytes());
            }
            ClientQuery::List(ids) => {
                let now = Instant::now();
                let mut text = String::new();
                for info in cx.state.clients() {
                    if ids.as_ref().is_none_or(|ids| ids.contains(&info.id)) {
                        text.push_str(&info.line(now));
                    }
                }
                write_bulk(cx.out, text.as_bytes());
            }
            ClientQuery::Kill(kill) => {
                let killed = kill_clients(cx, &kill);
                if kill.old_form {
                    if killed == 0 {
                        write_error_reply(cx, "ERR No such client");
                    } else {
                        write_simple(cx.out, "OK");
                    }
                } else {
                    write_integer(cx.out, killed as i64);
                }
            }
            ClientQuery::NoEvict(on) => {
                cx.client.info.details().no_evict = on;
                write_simple(cx.out, "OK");
            }
            ClientQuery::NoTouch(on) => {
                cx.client.info.details().no_touch = on;
                write_simple(cx.out, "OK");
            }
            ClientQuery::Reply(mode) => {
                cx.client.reply = mode;
                // Only `ON` is answered; dispatch drops the reply of `OFF` and `SKIP`.
                write_simple(cx.out, "OK");
            }
        }
        Ok(Outcome::Continue)
    }
}

/// `CLIENT KILL addr` or `CLIENT KILL <ID id | ADDR addr | LADDR addr | SKIPME yes/no> ...`
fn parse_kill<'a>(args: Args<'a, '_>) -> std::result::Result<Kill<'a>, ErrorReply> {
    let mut kill = Kill {
        old_form: false,
        id: None,
        addr: None,
        laddr: None,
        skip_me: true,
    };
    if args.len() == 2 {
        return Err(wrong_arity("client|kill"));
    }
    if args.len() == 3 {
        kill.old_form = true;
        kill.addr = Some(args.get(2));
        kill.skip_me = false;
        return Ok(kill);
    }
    if args.len() < 3 || !args.len().is_multiple_of(2) {
        return Err(SYNTAX.to_string());
    }
    let mut i = 2;
    while i + 1 < args.len() {
        let (option, value) = (args.get(i), args.get(i + 1));
        if option.eq_ignore_ascii_case(b"id") {
            kill.id = Some(client_id(value)?);
        } else if option.eq_ignore_ascii_case(b"addr") {
            kill.addr = Some(value);
        } else if option.eq_ignore_ascii_case(b"laddr") {
            kill.laddr = Some(value);
        } else if option.eq_ignore_ascii_case(b"skipme") {
            kill.skip_me = if value.eq_ignore_ascii_case(b"yes") {
                true
            } else if value.eq_ignore_ascii_case(b"no") {
                false
            } else {
                return Err(SYNTAX.to_string());
            };
        } else {
            return Err(SYNTAX.to_string());
        }
        i += 2;
    }
    Ok(kill)
}

/// Marks the connections `kill` names to be closed; how many.
fn kill_clients(cx: &Context<'_>, kill: &Kill<'_>) -> usize {
    let shown = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let chosen: Vec<Arc<ClientInfo>> = cx
        .state
        .clients()
        .into_iter()
        .filter(|info| {
            kill.id.is_none_or(|id| info.id == id)
                && kill.addr.is_none_or(|a| shown(info.peer).as_bytes() == a)
                && kill.laddr.is_none_or(|a| shown(info.local).as_bytes() == a)
                && !(kill.skip_me && info.id == cx.client.id)
        })
        .collect();
    for info in &chosen {
        info.kill();
    }
    chosen.len()
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
