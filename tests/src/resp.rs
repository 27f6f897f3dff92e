//! [`Frame`]: a whole RESP value as a client reads it, for the tests that talk RESP to a real
//! `kvs-server` (or `redis-server`) over TCP and compare what comes back.
//!
//! This is the one reader of RESP replies in the repository, written for tests: it builds each
//! value whole, and is kept apart from kvs's own RESP code (the server's request parser and
//! reply writers in `kvs::resp`), so that a test of kvs's replies does not read them back with
//! kvs's own code. It reads RESP2 and the RESP3 types kvs sends (`_` null, `%` map).
//!
//! ```text
//! +<text>\r\n                      simple string
//! -<text>\r\n                      error
//! :<n>\r\n                         integer
//! $<n>\r\n<n bytes>\r\n            bulk string, or $-1\r\n: null bulk
//! *<n>\r\n<n values>               array, or *-1\r\n: null array
//! _\r\n                            null (RESP3)
//! %<n>\r\n<n keys and values>      map (RESP3)
//! ```

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use crate::server::PATIENCE;

/// A RESP connection as the tests use one: each request sent whole as an array of bulk
/// strings, each reply read whole as a [`Frame`] (waiting at most [`PATIENCE`] for it).
/// `stream` is open for tests that send raw bytes or look at the socket.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> Conn {
        let stream =
            TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect to {addr:?}: {e}"));
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.try_send(args).unwrap();
    }

    /// `send`, failing if the server has gone (killed).
    pub fn try_send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut out = Vec::new();
        Frame::request(args).encode(&mut out);
        self.stream.write_all(&out)
    }

    /// The next reply; `None` if the connection was closed (or reset) first.
    pub fn reply(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, len)) = Frame::parse(&self.buf, 1 << 30)
                .unwrap_or_else(|e| panic!("malformed reply {:?}: {e}", self.buf))
            {
                self.buf.drain(..len);
                return Some(frame);
            }
            let mut chunk = [0; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // A server killed with replies unread resets the connection.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no reply: {e}"),
            }
        }
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Frame {
        self.send(args);
        self.reply()
            .unwrap_or_else(|| panic!("connection closed before a reply to {args:?}"))
    }

    /// `call` with the arguments of a line split on spaces.
    pub fn line(&mut self, line: &str) -> Frame {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.call(&args)
    }

    /// Whether the server closes the connection before any further reply.
    pub fn closed(&mut self) -> bool {
        self.reply().is_none()
    }
}

/// How deep arrays and maps may nest (replies of kvs nest at most 3 deep).
const MAX_DEPTH: usize = 32;

/// A whole RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+text`
    Simple(String),
    /// `-message`
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len bytes`, or `$-1` (`None`).
    Bulk(Option<Vec<u8>>),
    /// `*len frames`, or `*-1` (`None`).
    Array(Option<Vec<Frame>>),
    /// RESP3 `_`: no value.
    Null,
    /// RESP3 `%len`: key/value pairs.
    Map(Vec<(Frame, Frame)>),
}

impl Frame {
    /// Parses one value at the start of `buf`: `Ok(None)` if it is not all in yet, else the
    /// value and its length. A bulk length or an element count over `max_len` is refused
    /// before anything is allocated for it; an error says what is malformed.
    pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, String> {
        parse_at(buf, 0, max_len, 0)
    }

    /// An array of bulk strings: a request as client libraries send it.
    pub fn request(args: &[&[u8]]) -> Frame {
        Frame::Array(Some(
            args.iter().map(|a| Frame::Bulk(Some(a.to_vec()))).collect(),
        ))
    }

    /// Appends this value, encoded, to `out`. Line breaks in a simple string or an error
    /// become spaces, so that no value can break the stream.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, marker: u8, text: &[u8]| {
            out.push(marker);
            out.extend(
                text.iter()
                    .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Frame::Simple(text) => line(out, b'+', text.as_bytes()),
            Frame::Error(message) => line(out, b'-', message.as_bytes()),
            Frame::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Frame::Bulk(Some(bytes)) => {
                line(out, b'$', bytes.len().to_string().as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Frame::Array(Some(items)) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
            Frame::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Frame::Null => out.extend_from_slice(b"_\r\n"),
            Frame::Map(pairs) => {
                line(out, b'%', pairs.len().to_string().as_bytes());
                for (key, value) in pairs {
                    key.encode(out);
                    value.encode(out);
                }
            }
        }
    }
}

/// The line starting at `buf[start]` without its type byte, and where the next line starts;
/// `None` if its `\r\n` is not in yet.
fn line(buf: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let at = buf[start..].windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[start + 1..start + at], start + at + 2))
}

/// A strict decimal integer: an optional `-`, then 1 to 19 digits.
fn integer(text: &[u8]) -> Result<i64, String> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let invalid = || format!("invalid integer {:?}", String::from_utf8_lossy(text));
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let mut n: i128 = 0;
    for &d in digits {
        n = n * 10 + i128::from(d - b'0');
    }
    // The magnitude of i64::MIN is one more than i64::MAX: convert after the sign.
    i64::try_from(if negative { -n } else { n }).map_err(|_| invalid())
}

/// A length or count header (`$`, `*`, `%`): `Ok(None)` for -1, refused over `max_len`.
fn length(content: &[u8], max_len: usize, what: &str) -> Result<Option<usize>, String> {
    match integer(content)? {
        -1 => Ok(None),
        n => match usize::try_from(n) {
            Ok(n) if n <= max_len => Ok(Some(n)),
            _ => Err(format!("invalid {what} {n} (limit {max_len})")),
        },
    }
}

fn parse_at(
    buf: &[u8],
    start: usize,
    max_len: usize,
    depth: usize,
) -> Result<Option<(Frame, usize)>, String> {
    let Some(&marker) = buf.get(start) else {
        return Ok(None);
    };
    let Some((content, next)) = line(buf, start) else {
        return Ok(None);
    };
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| "reply line is not UTF-8".to_string())
    };
    if matches!(marker, b'*' | b'%') && depth >= MAX_DEPTH {
        return Err(format!("values nested over {MAX_DEPTH} deep"));
    }
    let frame = match marker {
        b'+' => Frame::Simple(text(content)?),
        b'-' => Frame::Error(text(content)?),
        b':' => Frame::Integer(integer(content)?),
        b'_' if content.is_empty() => Frame::Null,
        b'_' => return Err("invalid null".to_string()),
        b'$' => {
            let Some(len) = length(content, max_len, "bulk length")? else {
                return Ok(Some((Frame::Bulk(None), next)));
            };
            let end = next + len + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err("bulk string not followed by CRLF".to_string());
            }
            return Ok(Some((
                Frame::Bulk(Some(buf[next..next + len].to_vec())),
                end,
            )));
        }
        b'*' => {
            let Some(count) = length(content, max_len, "array length")? else {
                return Ok(Some((Frame::Array(None), next)));
            };
            let mut items = Vec::with_capacity(count.min(1024));
            let mut next = next;
            for _ in 0..count {
                let Some((item, after)) = parse_at(buf, next, max_len, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                next = after;
            }
            return Ok(Some((Frame::Array(Some(items)), next)));
        }
        b'%' => {
            let Some(count) = length(content, max_len, "map length")? else {
                return Err("invalid map length -1".to_string());
            };
            let mut pairs = Vec::with_capacity(count.min(1024));
            let mut next = next;
            for _ in 0..count {
                let Some((key, after)) = parse_at(buf, next, max_len, depth + 1)? else {
                    return Ok(None);
                };
                let Some((value, after)) = parse_at(buf, after, max_len, depth + 1)? else {
                    return Ok(None);
                };
                pairs.push((key, value));
                next = after;
            }
            return Ok(Some((Frame::Map(pairs), next)));
        }
        other => {
            return Err(format!(
                "unexpected reply type '{}'",
                char::from(other).escape_default()
            ))
        }
    };
    Ok(Some((frame, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_all_their_bytes() {
        let frame = Frame::Array(Some(vec![
            Frame::Simple("OK".into()),
            Frame::Error("ERR x".into()),
            Frame::Integer(i64::MIN),
            Frame::Bulk(Some(vec![0, 255, b'\r'])),
            Frame::Bulk(None),
            Frame::Array(None),
            Frame::Array(Some(vec![])),
            Frame::Null,
            Frame::Map(vec![(Frame::Simple("proto".into()), Frame::Integer(3))]),
        ]));
        let mut out = Vec::new();
        frame.encode(&mut out);
        for n in 0..out.len() {
            assert_eq!(Frame::parse(&out[..n], 1024).unwrap(), None, "{n}");
        }
        assert_eq!(Frame::parse(&out, 1024).unwrap(), Some((frame, out.len())));
        assert!(Frame::parse(b"?x\r\n", 1024).is_err());
        assert!(Frame::parse(b"$2000\r\n", 1024).is_err());
    }

    #[test]
    fn encoding_has_the_documented_bytes() {
        let mut out = Vec::new();
        Frame::request(&[b"SET", b"k", b"a\r\nb"]).encode(&mut out);
        Frame::Error("ERR bad\r\nline".into()).encode(&mut out);
        Frame::Integer(-42).encode(&mut out);
        Frame::Map(vec![(Frame::Null, Frame::Bulk(None))]).encode(&mut out);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n-ERR bad  line\r\n:-42\r\n\
              %1\r\n_\r\n$-1\r\n"
        );
    }

    #[test]
    fn malformed_replies_are_refused() {
        for bad in [
            &b":12a\r\n"[..],
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"*2000\r\n",
            b"%-1\r\n",
            b"_x\r\n",
            b"+\xff\r\n",
        ] {
            assert!(
                Frame::parse(bad, 1024).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // MAX_DEPTH arrays, one in the other, are read; one more is refused.
        let nested = |arrays: usize| "*1\r\n".repeat(arrays - 1) + "*0\r\n";
        assert!(Frame::parse(nested(MAX_DEPTH).as_bytes(), 1024)
            .unwrap()
            .is_some());
        assert!(Frame::parse(nested(MAX_DEPTH + 1).as_bytes(), 1024).is_err());
    }
}
