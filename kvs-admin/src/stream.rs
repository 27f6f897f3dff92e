//! The stream `kvs-admin dump` writes and `kvs-admin restore` reads: Redis commands in RESP,
//! the form `redis-cli --pipe` sends as it is, so that a dump loads into `kvs-server` or
//! `redis-server` as well as back into a data directory.
//!
//! Byte by byte, for each key, in the order a scan of the store meets them:
//!
//! ```text
//! *3\r\n $3\r\n SET\r\n $<key len>\r\n <key>\r\n $<value len>\r\n <value>\r\n
//! ```
//!
//! (without the spaces), and right after it, for a key with a deadline:
//!
//! ```text
//! *3\r\n $9\r\n PEXPIREAT\r\n $<key len>\r\n <key>\r\n $<digits>\r\n <deadline>\r\n
//! ```
//!
//! Lengths and the deadline (milliseconds since the Unix epoch) are decimal ASCII; keys and
//! values are their raw bytes (binary-safe: a bulk string's length says where it ends). The
//! stream has no header and no end marker: it is the commands, nothing else. A key may appear
//! twice (a scan may meet a key twice); the second `SET` writes the same value again.
//!
//! [`Reader`] reads only these two commands (names in any case), a `PEXPIREAT` only right
//! after the `SET` of its key: anything else is an error naming its byte offset.

use std::fmt;
use std::io::{self, BufRead, Write};

/// The longest key or value [`Reader`] accepts, as the engines do.
const MAX_BULK: u64 = kvs::MAX_VALUE_LEN as u64;

/// Writes one key as `SET` (and `PEXPIREAT` if it has a deadline), see the module docs.
pub fn write_key(
    out: &mut impl Write,
    key: &[u8],
    value: &[u8],
    deadline: Option<u64>,
) -> io::Result<()> {
    write_command(out, b"SET", key, value)?;
    if let Some(deadline) = deadline {
        write_command(out, b"PEXPIREAT", key, deadline.to_string().as_bytes())?;
    }
    Ok(())
}

fn write_command(out: &mut impl Write, name: &[u8], key: &[u8], arg: &[u8]) -> io::Result<()> {
    out.write_all(b"*3\r\n")?;
    for bulk in [name, key, arg] {
        write!(out, "${}\r\n", bulk.len())?;
        out.write_all(bulk)?;
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// One key read from a stream: a `SET`, and the deadline of the `PEXPIREAT` after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub deadline: Option<u64>,
}

/// What is wrong with a stream, at which byte offset.
#[derive(Debug)]
pub enum StreamError {
    /// Reading the stream failed.
    Io(io::Error),
    /// The bytes at `offset` are not what a dump holds there.
    Bad { offset: u64, reason: String },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Io(e) => write!(f, "reading the stream failed: {e}"),
            StreamError::Bad { offset, reason } => write!(f, "at byte offset {offset}: {reason}"),
        }
    }
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> StreamError {
        StreamError::Io(e)
    }
}

/// One command as read: its name (lower case) and arguments, and where it started.
struct Command {
    offset: u64,
    name: Vec<u8>,
    key: Vec<u8>,
    arg: Vec<u8>,
}

/// Reads the entries of a dump stream one at a time, holding one key and value in memory.
pub struct Reader<R> {
    input: R,
    /// Bytes consumed so far.
    offset: u64,
    /// A command read ahead (the one after a `SET`, which was not its `PEXPIREAT`).
    peeked: Option<Command>,
    /// What was wrong with the bytes after a `SET`: the `SET` is returned first, this next.
    failed: Option<StreamError>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Reader<R> {
        Reader {
            input,
            offset: 0,
            peeked: None,
            failed: None,
        }
    }

    /// The next key, `None` at the end of the stream.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, StreamError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let set = match self.peeked.take() {
            Some(command) => command,
            None => match self.command()? {
                Some(command) => command,
                None => return Ok(None),
            },
        };
        if set.name != b"set" {
            return Err(StreamError::Bad {
                offset: set.offset,
                reason: format!(
                    "{} without a SET of its key before it",
                    String::from_utf8_lossy(&set.name).to_uppercase()
                ),
            });
        }
        let mut entry = Entry {
            key: set.key,
            value: set.arg,
            deadline: None,
        };
        // The command after it, to see whether it is this key's PEXPIREAT. If it is bad, the
        // SET before it is still a whole entry: returned now, the error on the next call.
        let next = match self.command() {
            Ok(next) => next,
            Err(e) => {
                self.failed = Some(e);
                None
            }
        };
        if let Some(next) = next {
            if next.name == b"pexpireat" && next.key == entry.key {
                let deadline = std::str::from_utf8(&next.arg)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| StreamError::Bad {
                        offset: next.offset,
                        reason: format!(
                            "PEXPIREAT deadline {:?} is not a number of milliseconds",
                            String::from_utf8_lossy(&next.arg)
                        ),
                    })?;
                entry.deadline = Some(deadline);
            } else {
                self.peeked = Some(next);
            }
        }
        Ok(Some(entry))
    }

    /// The next command, `None` at the end of the stream (only between commands).
    fn command(&mut self) -> Result<Option<Command>, StreamError> {
        let offset = self.offset;
        if self.input.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let count = self.header(b'*', "an array of 3 bulk strings")?;
        if count != 3 {
            return Err(StreamError::Bad {
                offset,
                reason: format!(
                    "an array of {count} elements: a dump holds only SET and PEXPIREAT, of 3"
                ),
            });
        }
        let name = self.bulk()?.to_ascii_lowercase();
        if name != b"set" && name != b"pexpireat" {
            return Err(StreamError::Bad {
                offset,
                reason: format!(
                    "command {:?}: a dump holds only SET and PEXPIREAT",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
        let key = self.bulk()?;
        let arg = self.bulk()?;
        Ok(Some(Command {
            offset,
            name,
            key,
            arg,
        }))
    }

    /// A bulk string: `$<len>\r\n<bytes>\r\n`.
    fn bulk(&mut self) -> Result<Vec<u8>, StreamError> {
        let len = self.header(b'$', "a bulk string")?;
        if len > MAX_BULK {
            return Err(StreamError::Bad {
                offset: self.offset,
                reason: format!("bulk string of {len} bytes, over the limit of {MAX_BULK}"),
            });
        }
        let at = self.offset;
        let mut bytes = Vec::new();
        let read = (&mut self.input).take(len + 2).read_to_end(&mut bytes)?;
        self.offset += read as u64;
        if read as u64 != len + 2 {
            return Err(StreamError::Bad {
                offset: at,
                reason: format!("stream ends inside a bulk string of {len} bytes"),
            });
        }
        if !bytes.ends_with(b"\r\n") {
            return Err(StreamError::Bad {
                offset: at + len,
                reason: format!("a bulk string of {len} bytes is not followed by \\r\\n"),
            });
        }
        bytes.truncate(len as usize);
        Ok(bytes)
    }

    /// A line `<prefix><decimal>\r\n`, its number.
    fn header(&mut self, prefix: u8, what: &str) -> Result<u64, StreamError> {
        let at = self.offset;
        let mut line = Vec::new();
        // Never more than a prefix, 20 digits and \r\n.
        let read = (&mut self.input).take(24).read_until(b'\n', &mut line)?;
        self.offset += read as u64;
        let bad = || StreamError::Bad {
            offset: at,
            reason: format!(
                "expected {what} ({:?}), found {:?}",
                prefix as char,
                String::from_utf8_lossy(&line)
            ),
        };
        let digits = line
            .strip_prefix(&[prefix])
            .and_then(|rest| rest.strip_suffix(b"\r\n"))
            .ok_or_else(bad)?;
        std::str::from_utf8(digits)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    }
}

use std::io::Read;

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<Entry>, StreamError> {
        let mut reader = Reader::new(bytes);
        let mut entries = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            entries.push(entry);
        }
        Ok(entries)
    }

    #[test]
    fn the_stream_is_pinned_byte_by_byte() {
        let mut out = Vec::new();
        write_key(&mut out, b"k", b"v\r\n", None).unwrap();
        write_key(&mut out, b"\x00b", b"", Some(1700000000123)).unwrap();
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n\
              *3\r\n$3\r\nSET\r\n$2\r\n\x00b\r\n$0\r\n\r\n\
              *3\r\n$9\r\nPEXPIREAT\r\n$2\r\n\x00b\r\n$13\r\n1700000000123\r\n"
                .to_vec()
        );
        assert_eq!(
            read_all(&out).unwrap(),
            vec![
                Entry {
                    key: b"k".to_vec(),
                    value: b"v\r\n".to_vec(),
                    deadline: None
                },
                Entry {
                    key: b"\x00b".to_vec(),
                    value: Vec::new(),
                    deadline: Some(1700000000123)
                },
            ]
        );
    }

    fn bad_offset(bytes: &[u8]) -> (u64, String) {
        match read_all(bytes) {
            Err(StreamError::Bad { offset, reason }) => (offset, reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anything_but_what_dump_writes_is_an_error_at_its_offset() {
        let mut good = Vec::new();
        write_key(&mut good, b"a", b"1", None).unwrap();
        let at = good.len() as u64;
        let with = |tail: &[u8]| [&good[..], tail].concat();

        let (offset, reason) = bad_offset(&with(b"*2\r\n$3\r\nDEL\r\n$1\r\na\r\n"));
        assert_eq!(offset, at);
        assert!(reason.contains("an array of 2"), "{reason}");
        let (offset, reason) = bad_offset(&with(b"*3\r\n$4\r\nHSET\r\n$1\r\na\r\n$1\r\nb\r\n"));
        assert_eq!(offset, at);
        assert!(reason.contains("\"hset\""), "{reason}");
        // A PEXPIREAT of another key than the SET before it.
        let (offset, reason) =
            bad_offset(&with(b"*3\r\n$9\r\nPEXPIREAT\r\n$1\r\nz\r\n$1\r\n5\r\n"));
        assert_eq!(offset, at);
        assert!(reason.contains("without a SET"), "{reason}");
        let (offset, _) = bad_offset(&with(b"*3\r\n$9\r\nPEXPIREAT\r\n$1\r\na\r\n$2\r\n-5\r\n"));
        assert_eq!(offset, at);
        // Inline commands, as redis-cli also takes them, are not what dump writes.
        assert_eq!(bad_offset(&with(b"SET a 1\r\n")).0, at);
        // Cut inside a bulk string.
        assert_eq!(bad_offset(&good[..good.len() - 2]).0, at - 3);
        // A bulk string longer than it says.
        let mut long = good.clone();
        long.insert(long.len() - 2, b'x');
        assert_eq!(bad_offset(&long).0, at - 2);
        // The SET before bad bytes is still read, then the error comes.
        let bad_after = with(b"*1\r\n");
        let mut reader = Reader::new(&bad_after[..]);
        assert_eq!(reader.next_entry().unwrap().unwrap().key, b"a");
        assert!(matches!(
            reader.next_entry(),
            Err(StreamError::Bad { offset, .. }) if offset == at
        ));
        // Commands in lower case are fine.
        assert_eq!(
            read_all(b"*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\n1\r\n").unwrap()[0].key,
            b"a"
        );
    }
}
