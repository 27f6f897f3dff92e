//! RESP frames on the wire: cutting requests out of a byte stream, and writing replies.
//!
//! The request parser ([`RequestParser`], with its [`Limits`]) is public: it is the code a
//! server runs on every byte a RESP client sends, and tools and fuzzers drive it as the server
//! does. The writers of replies are the server's own.
//!
//! # The frames, byte by byte
//!
//! Every line ends with `\r\n`; `<n>` is a decimal integer, `-` allowed where a count or length
//! may be -1.
//!
//! ```text
//! +<text>\r\n                      simple string   +OK\r\n
//! -<text>\r\n                      error           -ERR unknown command 'x', with args ...\r\n
//! :<n>\r\n                         integer         :1\r\n
//! $<n>\r\n<n bytes>\r\n            bulk string     $3\r\nfoo\r\n   (binary-safe)
//! $-1\r\n                          null bulk       (GET of a missing key)
//! *<n>\r\n<n frames>               array           *2\r\n$3\r\nGET\r\n$1\r\nk\r\n
//! *-1\r\n                          null array
//! _\r\n                            null (RESP3, after HELLO 3)
//! %<n>\r\n<n keys and values>      map (RESP3; a flat array of 2n in RESP2)
//! ```
//!
//! A *request* is an array of bulk strings (the command name, then its arguments), or an
//! *inline command*: one line of words separated by blanks, split as redis-server splits them
//! (blanks are C's `isspace` bytes: space, `\t`, `\n`, `\v`, `\f`, `\r`; `PING\r\n`, as typed
//! into telnet; no quoting; a line of blanks only is an empty request, which the server skips). Requests follow each other with nothing in between (pipelining).
//!
//! # Limits
//!
//! [`RequestParser`] refuses, as soon as the offending header line is in and before anything is
//! allocated for it: a multibulk count over [`Limits::max_args`], a bulk length over
//! [`Limits::max_bulk_len`], bulk lengths adding up to more than [`Limits::max_request_len`],
//! a header line longer than [`MAX_HEADER_LINE`], and an inline line longer than
//! [`MAX_INLINE_LEN`]. After such an error the stream cannot be resynchronised: the server
//! answers with the error and closes that connection.

use std::ops::Range;

use crate::{KvsError, Result};

/// Longest `*<count>` or `$<length>` line, `\r\n` included (a 64-bit number has 20 digits).
pub const MAX_HEADER_LINE: usize = 32;

/// Longest inline command line (64 KiB, as Redis).
pub const MAX_INLINE_LEN: usize = 64 << 10;

/// Default most arguments of one request, the command name included (1,048,576, as Redis).
pub const DEFAULT_MAX_ARGS: usize = 1 << 20;

/// What a [`RequestParser`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bulk strings in one request (command name included).
    pub max_args: usize,
    /// The longest bulk string.
    pub max_bulk_len: usize,
    /// The most bytes of bulk strings in one request, all of them together.
    pub max_request_len: usize,
}

impl Limits {
    /// The limits that match a kvs-protocol frame limit of `max_frame_len` bytes: no bulk
    /// string, and no request's bulk strings together, longer than that.
    pub fn for_frame_len(max_frame_len: usize) -> Limits {
        Limits {
            max_args: DEFAULT_MAX_ARGS,
            max_bulk_len: max_frame_len,
            max_request_len: max_frame_len,
        }
    }
}

/// What [`RequestParser::parse`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStatus {
    /// Not a whole request yet: read more bytes. `needed` is the least total length the
    /// request can have given what is in (so a reader may reserve room for a long bulk string).
    Incomplete {
        /// Bytes the request needs at least, counted from its start.
        needed: usize,
    },
    /// A whole request ending at `end`; its arguments are [`RequestParser::args`]. It may have
    /// no arguments at all (`*0\r\n`, or an empty inline line): Redis ignores those.
    Complete {
        /// Where the request ends in the buffer.
        end: usize,
    },
}

/// Where a partly parsed request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing parsed yet.
    Start,
    /// Inside a multibulk request: `remaining` bulk strings to go.
    Array { remaining: usize },
    /// An inline line: `\n` not found in `buf[..scanned]`.
    Inline { scanned: usize },
}

/// An incremental parser of requests.
///
/// Feed it the bytes of the request being received, from its first byte, each time more
/// arrive; it resumes where it stopped, so a request trickling in is never re-parsed from its
/// start. Once it says [`RequestStatus::Complete`], read [`args`](RequestParser::args), drop
/// the request's bytes and call [`reset`](RequestParser::reset).
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    /// The next byte to parse, relative to the request's start.
    pos: usize,
    /// Bulk bytes announced so far, for [`Limits::max_request_len`].
    total: usize,
    args: Vec<Range<usize>>,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> RequestParser {
        RequestParser {
            limits,
            state: State::Start,
            pos: 0,
            total: 0,
            args: Vec::new(),
        }
    }

    /// Parses on from where the last call stopped. `buf` starts at the request's first byte
    /// and holds at least the bytes given last time.
    ///
    /// "Not enough bytes yet" is [`RequestStatus::Incomplete`]; malformed or oversized input
    /// is [`KvsError::Protocol`], with Redis's wording for the message.
    pub fn parse(&mut self, buf: &[u8]) -> Result<RequestStatus> {
        loop {
            match self.state {
                State::Start => {
                    let Some(&first) = buf.first() else {
                        return Ok(RequestStatus::Incomplete { needed: 1 });
                    };
                    if first != b'*' {
                        self.state = State::Inline { scanned: 0 };
                        continue;
                    }
                    let Some((count, next)) = header_line(buf, 0)? else {
                        return Ok(RequestStatus::Incomplete {
                            needed: buf.len() + 1,
                        });
                    };
                    if count > self.limits.max_args as i64 {
                        return Err(protocol("invalid multibulk length"));
                    }
                    self.pos = next;
                    if count <= 0 {
                        // `*0` and `*-1` are empty requests.
                        return Ok(RequestStatus::Complete { end: next });
                    }
                    // Reserve for at most what one read could hold, so that a count alone
                    // never makes the parser allocate much.
                    self.args.reserve((count as usize).min(1024));
                    self.state = State::Array {
                        remaining: count as usize,
                    };
                }
                State::Array { remaining: 0 } => {
                    return Ok(RequestStatus::Complete { end: self.pos });
                }
                State::Array { remaining } => {
                    let start = self.pos;
                    let Some(&marker) = buf.get(start) else {
                        return Ok(RequestStatus::Incomplete { needed: start + 1 });
                    };
                    if marker != b'$' {
                        return Err(protocol(&format!(
                            "expected '$', got '{}'",
                            char::from(marker).escape_default()
                        )));
                    }
                    let Some((len, data)) = header_line(buf, start)? else {
                        return Ok(RequestStatus::Incomplete {
                            needed: buf.len() + 1,
                        });
                    };
                    let len = match usize::try_from(len) {
                        Ok(len) if len <= self.limits.max_bulk_len => len,
                        _ => return Err(protocol("invalid bulk length")),
                    };
                    if self.total + len > self.limits.max_request_len {
                        return Err(protocol(&format!(
                            "request over the limit of {} bytes",
                            self.limits.max_request_len
                        )));
                    }
                    let end = data + len + 2;
                    if buf.len() < end {
                        // Stay before the header, so the bulk is parsed in one go once in.
                        return Ok(RequestStatus::Incomplete { needed: end });
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(protocol("bulk string not followed by CRLF"));
                    }
                    self.total += len;
                    self.args.push(data..data + len);
                    self.pos = end;
                    self.state = State::Array {
                        remaining: remaining - 1,
                    };
                }
                State::Inline { scanned } => {
                    let Some(newline) = buf[scanned..].iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_INLINE_LEN {
                            return Err(protocol("too big inline request"));
                        }
                        self.state = State::Inline { scanned: buf.len() };
                        return Ok(RequestStatus::Incomplete {
                            needed: buf.len() + 1,
                        });
                    };
                    let end = scanned + newline + 1;
                    if end > MAX_INLINE_LEN {
                        return Err(protocol("too big inline request"));
                    }
                    let line_end = if end >= 2 && buf[end - 2] == b'\r' {
                        end - 2
                    } else {
                        end - 1
                    };
                    // As redis-server's `sdssplitargs` (without its quoting): blanks before a
                    // word are skipped, and a word runs to a space, tab, CR or LF.
                    let mut i = 0;
                    while i < line_end {
                        if is_blank(buf[i]) {
                            i += 1;
                            continue;
                        }
                        let from = i;
                        while i < line_end && !matches!(buf[i], b' ' | b'\t' | b'\r' | b'\n') {
                            i += 1;
                        }
                        self.args.push(from..i);
                    }
                    self.pos = end;
                    return Ok(RequestStatus::Complete { end });
                }
            }
        }
    }

    /// Where the arguments of the complete request lie in its buffer.
    pub fn args(&self) -> &[Range<usize>] {
        &self.args
    }

    /// Forgets the request parsed, to parse the next one from its first byte. Keeps the
    /// argument list's memory unless it grew large.
    pub fn reset(&mut self) {
        self.state = State::Start;
        self.pos = 0;
        self.total = 0;
        self.args.clear();
        if self.args.capacity() > 1024 {
            self.args = Vec::new();
        }
    }

    /// Whether part of a request has been parsed.
    pub fn is_started(&self) -> bool {
        self.state != State::Start
    }

    /// Enforces `limits` from the next request on; only between requests (before the first
    /// byte of one is parsed), so that a request is checked against one set of limits.
    pub fn set_limits(&mut self, limits: Limits) {
        debug_assert!(!self.is_started());
        self.limits = limits;
    }
}

/// Reads the `*<n>` or `$<n>` line starting at `buf[start]`: the number and where the next line
/// starts, or `None` if the line is not all in.
fn header_line(buf: &[u8], start: usize) -> Result<Option<(i64, usize)>> {
    let window = &buf[start..buf.len().min(start + MAX_HEADER_LINE)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if window.len() == MAX_HEADER_LINE {
            return Err(protocol(if buf[start] == b'*' {
                "invalid multibulk length"
            } else {
                "invalid bulk length"
            }));
        }
        return Ok(None);
    };
    let line = &window[..newline];
    let digits = line
        .strip_suffix(b"\r")
        .map(|l| &l[1..])
        .and_then(parse_integer);
    match digits {
        Some(n) => Ok(Some((n, start + newline + 1))),
        None if buf[start] == b'*' => Err(protocol("invalid multibulk length")),
        None => Err(protocol("invalid bulk length")),
    }
}

/// A strict decimal integer: an optional `-`, then 1 to 19 digits.
fn parse_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

fn protocol(message: &str) -> KvsError {
    KvsError::Protocol(format!("Protocol error: {message}"))
}

// Writing replies. Each function appends one frame to `out`.

/// The RESP version a connection speaks: RESP2 until the client asks for RESP3 with
/// `HELLO 3`. Only nulls and maps differ in what kvs sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Version {
    /// RESP2: null is `$-1`, a map is a flat array of keys and values.
    #[default]
    Resp2,
    /// RESP3: null is `_`, a map is `%count` followed by keys and values.
    Resp3,
}

/// Whether `b` is a blank, skipped before a word of an inline command: C's `isspace` bytes
/// (space, `\t`, `\n`, `\v`, `\f`, `\r`), as in redis-server. A line of blanks only is an
/// empty request, which the server skips. (A word itself ends at a space, tab, CR or LF only:
/// `\v` and `\f` inside a word are part of it, as in Redis.)
pub(crate) fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Appends "no value": `$-1\r\n` in RESP2, `_\r\n` in RESP3.
pub(crate) fn write_nil(out: &mut Vec<u8>, version: Version) {
    match version {
        Version::Resp2 => write_null(out),
        Version::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// Appends a map header for `len` key/value pairs: `*2len` in RESP2, `%len` in RESP3. The
/// keys and values follow, alternating.
pub(crate) fn write_map_len(out: &mut Vec<u8>, len: usize, version: Version) {
    match version {
        Version::Resp2 => write_array_len(out, len * 2),
        Version::Resp3 => {
            out.push(b'%');
            write_decimal(out, len as i64);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends a simple string, `+text\r\n`. `text` must hold no `\r` or `\n`.
pub(crate) fn write_simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error, `-message\r\n`. Line breaks in `message` become spaces, so that no
/// message can break the stream.
pub(crate) fn write_error(out: &mut Vec<u8>, message: &str) {
    out.push(b'-');
    out.extend(
        message
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer, `:n\r\n`.
pub(crate) fn write_integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    write_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string, `$len\r\nbytes\r\n`.
pub(crate) fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    out.push(b'$');
    write_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends a null bulk string, `$-1\r\n`.
pub(crate) fn write_null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header, `*len\r\n`; the `len` elements follow.
pub(crate) fn write_array_len(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    write_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without going through `fmt` (this is on every reply's path).
fn write_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_args: 8,
        max_bulk_len: 16,
        max_request_len: 24,
    };

    /// Parses `buf` whole; returns the arguments and the end.
    fn request(buf: &[u8]) -> Result<Option<(Vec<Vec<u8>>, usize)>> {
        let mut parser = RequestParser::new(LIMITS);
        Ok(match parser.parse(buf)? {
            RequestStatus::Incomplete { .. } => None,
            RequestStatus::Complete { end } => Some((
                parser
                    .args()
                    .iter()
                    .map(|r| buf[r.clone()].to_vec())
                    .collect(),
                end,
            )),
        })
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_request_yields_its_arguments() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\x00x\r\n*1";
        let (args, end) = request(buf).unwrap().unwrap();
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"k".to_vec(), b"v\r\n\x00x".to_vec()]
        );
        assert_eq!(&buf[end..], b"*1");
    }

    #[test]
    fn request_fed_byte_by_byte_resumes_and_completes_once() {
        let buf = b"*2\r\n$4\r\nECHO\r\n$10\r\n0123456789\r\n";
        let mut parser = RequestParser::new(LIMITS);
        for n in 0..buf.len() {
            match parser.parse(&buf[..n]).unwrap() {
                RequestStatus::Incomplete { needed } => assert!(needed > n, "{n}: {needed}"),
                other => panic!("complete after {n} bytes: {other:?}"),
            }
        }
        assert_eq!(
            parser.parse(buf).unwrap(),
            RequestStatus::Complete { end: buf.len() }
        );
        assert_eq!(parser.args(), &[8..12, 19..29]);
        parser.reset();
        assert!(!parser.is_started());
    }

    #[test]
    fn incomplete_bulk_announces_its_full_length() {
        let mut parser = RequestParser::new(LIMITS);
        assert_eq!(
            parser.parse(b"*1\r\n$10\r\n01").unwrap(),
            RequestStatus::Incomplete { needed: 21 }
        );
    }

    #[test]
    fn inline_commands_split_on_spaces_and_tabs() {
        let (args, end) = request(b"  set\tk  v\r\nrest").unwrap().unwrap();
        assert_eq!(args, words(&["set", "k", "v"]));
        assert_eq!(end, 12);
        let (args, _) = request(b"PING\n").unwrap().unwrap();
        assert_eq!(args, words(&["PING"]));
        assert_eq!(request(b"\r\n").unwrap().unwrap().0.len(), 0);
        // As in redis-server: every C `isspace` byte is skipped before a word, and a word ends
        // at a space, tab, CR or LF (so `\v` and `\f` inside a word are part of it).
        let (args, end) = request(b"\r\x0bPING\x0bk \x0cv\rw\r\r\n").unwrap().unwrap();
        assert_eq!(args, words(&["PING\x0bk", "v", "w"]));
        assert_eq!(end, 16);
        assert_eq!(request(b" \t\r\r\n").unwrap().unwrap().0.len(), 0);
        assert_eq!(request(b"PIN").unwrap(), None);
    }

    #[test]
    fn empty_multibulk_is_an_empty_request() {
        assert_eq!(request(b"*0\r\n").unwrap(), Some((vec![], 4)));
        assert_eq!(request(b"*-1\r\n").unwrap(), Some((vec![], 5)));
    }

    #[test]
    fn limits_are_checked_from_the_header_alone() {
        let cases: &[(&[u8], &str)] = &[
            (b"*9\r\n", "invalid multibulk length"),
            (b"*1\r\n$17\r\n", "invalid bulk length"),
            (b"*2\r\n$16\r\n0123456789abcdef\r\n$9\r\n", "over the limit"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*x\r\n", "invalid multibulk length"),
            (b"*1\r\n$1x\r\n", "invalid bulk length"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (b"*1\r\n$1\r\nab\r\n", "not followed by CRLF"),
            (
                b"*1\r\n$00000000000000000000000000000000",
                "invalid bulk length",
            ),
            (b"*99999999999999999999999\r\n", "invalid multibulk length"),
        ];
        for (buf, wanted) in cases {
            let err = request(buf).unwrap_err();
            assert!(
                matches!(&err, KvsError::Protocol(m) if m.contains(wanted)),
                "{buf:?}: {err}"
            );
        }
    }

    #[test]
    fn overlong_inline_line_is_refused() {
        let long = vec![b'a'; MAX_INLINE_LEN + 1];
        assert!(request(&long).is_err());
        let mut parser = RequestParser::new(LIMITS);
        assert!(matches!(
            parser.parse(&long[..100]).unwrap(),
            RequestStatus::Incomplete { .. }
        ));
    }

    #[test]
    fn replies_have_the_documented_bytes() {
        let mut out = Vec::new();
        write_nil(&mut out, Version::Resp2);
        write_nil(&mut out, Version::Resp3);
        write_map_len(&mut out, 2, Version::Resp2);
        write_map_len(&mut out, 2, Version::Resp3);
        assert_eq!(out, b"$-1\r\n_\r\n*4\r\n%2\r\n");
        out.clear();
        write_simple(&mut out, "OK");
        write_error(&mut out, "ERR bad\r\nline");
        write_integer(&mut out, -42);
        write_integer(&mut out, 0);
        write_bulk(&mut out, b"a\r\nb");
        write_null(&mut out);
        write_array_len(&mut out, 2);
        assert_eq!(
            out,
            b"+OK\r\n-ERR bad  line\r\n:-42\r\n:0\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n"
        );
    }
}
