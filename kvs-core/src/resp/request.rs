//! What every command sees of a request: its arguments ([`Args`]), the client that sent it
//! ([`Client`]), what the connection does next ([`Outcome`]), and Redis's wording for the
//! error replies that commands share (7.0), so that clients recognise them: e.g.
//! `ERR wrong number of arguments for 'get' command`,
//! `ERR unknown command 'foo', with args beginning with: 'a' `.

use std::ops::Range;

use super::frame::Version;
use crate::server::state::ClientInfo;

/// The arguments of a request: ranges into the buffer that holds it.
///
/// Two lifetimes: `'a` is the request's bytes, which a command's parsed form may borrow for as
/// long as the input is there (the session holds batched `SET`s that long); `'r` is the list of
/// ranges, which the parser reuses for the next request.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a, 'r> {
    buf: &'a [u8],
    ranges: &'r [Range<usize>],
}

impl<'a, 'r> Args<'a, 'r> {
    /// The arguments `buf[r]` for each `r` of `ranges`.
    pub fn new(buf: &'a [u8], ranges: &'r [Range<usize>]) -> Args<'a, 'r> {
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
    pub fn skip(&self, from: usize) -> Args<'a, 'r> {
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

/// What a command may read or change of its connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// The connection's number, unique within the server (`HELLO` shows it).
    pub id: u64,
    /// The RESP version it speaks (`HELLO 3` switches to RESP3).
    pub version: Version,
    /// The server's address this client connected to (what `CLUSTER SLOTS` advertises), if
    /// known.
    pub local_addr: Option<std::net::SocketAddr>,
    /// It gave the server's password (`AUTH`, `HELLO ... AUTH`). Only looked at when the
    /// server has one.
    pub authenticated: bool,
    /// What `CLIENT LIST` shows of it (name, library, last command), shared with the other
    /// connections' `CLIENT LIST` and `CLIENT KILL`.
    pub info: std::sync::Arc<ClientInfo>,
    /// Whether its commands are answered (`CLIENT REPLY`).
    pub reply: ReplyMode,
    /// The last command carried out and when its input arrived, kept here and copied to
    /// `info` (behind a lock) by [`publish`](Client::publish) once per batch of input rather
    /// than once per request.
    pub last_command: &'static str,
    /// When the input being served arrived (the connection's clock reading for it).
    pub active_at: std::time::Instant,
    /// `last_command` changed since it was last published.
    pub unpublished: bool,
}

/// `CLIENT REPLY`: whether a connection's commands are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Every command is (the default).
    On,
    /// None is, until `CLIENT REPLY ON`.
    Off,
    /// The next command is not.
    SkipNext,
}

impl Client {
    /// A RESP2 client numbered `id`, not authenticated, of unknown addresses.
    pub fn new(id: u64) -> Client {
        Client {
            id,
            version: Version::Resp2,
            local_addr: None,
            authenticated: false,
            info: std::sync::Arc::new(ClientInfo::new(id, None, None)),
            reply: ReplyMode::On,
            last_command: "NULL",
            active_at: std::time::Instant::now(),
            unpublished: false,
        }
    }

    /// Notes that `command` is being carried out, for `CLIENT LIST` (see
    /// [`publish`](Client::publish)).
    pub fn note_command(&mut self, command: &'static str) {
        self.last_command = command;
        self.unpublished = true;
    }

    /// Copies the last command and its time to what `CLIENT LIST` shows, if they changed.
    pub fn publish(&mut self) {
        if self.unpublished {
            let mut details = self.info.details();
            details.last_command = self.last_command;
            details.last_active = self.active_at;
            self.unpublished = false;
        }
    }
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

/// `ERR wrong number of arguments for 'name' command` (`name` as Redis spells it: lower case,
/// `command|count` for a sub-command).
pub(crate) fn wrong_arity(name: &str) -> ErrorReply {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// The reply to a command kvs does not know. Redis shows at most 128 bytes of the name and of
/// the arguments.
pub(crate) fn unknown_command(args: Args<'_, '_>) -> ErrorReply {
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

/// The reply to a sub-command `sub` that `command` (upper case) does not have.
pub(crate) fn unknown_subcommand(sub: &[u8], command: &str) -> ErrorReply {
    format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        truncate(&String::from_utf8_lossy(sub), 128)
    )
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Redis's reply to an option it does not take, or options that do not go together.
pub(crate) const SYNTAX_ERROR: &str = "ERR syntax error";

/// Redis's reply to an argument, or a stored value, that should be a 64-bit integer and is
/// not one.
pub(crate) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// `ERR invalid expire time in 'set' command`: a time to live or deadline that is not
/// positive, or that overflows once converted to a deadline in milliseconds.
pub(crate) fn invalid_expire_time(command: &str) -> ErrorReply {
    format!("ERR invalid expire time in '{command}' command")
}

/// `bytes` as a signed 64-bit integer by Redis's rules (its `string2ll`): an optional `-`,
/// then digits without a leading zero (`0` alone is fine), at most 20 bytes in all, within
/// `i64`. No `+`, no blanks, no `-0`.
pub(crate) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut n: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i128::from(d - b'0');
    }
    i64::try_from(if negative { -n } else { n }).ok()
}

/// `bytes` as a 64-bit integer or [`NOT_AN_INTEGER`].
pub(crate) fn integer_arg(bytes: &[u8]) -> Result<i64, ErrorReply> {
    parse_i64(bytes).ok_or_else(|| NOT_AN_INTEGER.to_string())
}

/// Whether two option names are the same, ASCII case folded (Redis's `strcasecmp`).
pub(crate) fn is_option(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_redis_string2ll_does() {
        for (text, want) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("007", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1.0", None),
            ("1e3", None),
            ("000000000000000000001", None),
        ] {
            assert_eq!(parse_i64(text.as_bytes()), want, "{text:?}");
        }
        assert_eq!(integer_arg(b"x").unwrap_err(), NOT_AN_INTEGER);
        assert_eq!(
            invalid_expire_time("setex"),
            "ERR invalid expire time in 'setex' command"
        );
    }
}
