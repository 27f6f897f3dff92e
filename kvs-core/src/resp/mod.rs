//! RESP2 and RESP3, the Redis protocol: so that `redis-cli`, `redis-benchmark` and every Redis client
//! library can use a [`KvsServer`](crate::KvsServer).
//!
//! # Same port as the kvs protocol
//!
//! The server tells the two protocols apart by the first byte a connection sends:
//! - a RESP request starts with `*` (0x2A: an array, which is what client libraries send) or,
//!   as an inline command typed into telnet, with the command's name, an ASCII letter. Before
//!   either may come empty lines (`\r\n` or a bare `\n`) and blanks: redis-server's inline
//!   parser (`processInlineBuffer`) takes everything up to a `\n` as one line, skips C's
//!   `isspace` bytes before each word of it (`sdssplitargs`), and skips a line with no words,
//!   so `\r\n\n PING\r\n` is one `PING` to Redis, at the start of a connection as between
//!   its commands. So the `isspace` bytes start RESP too: `\t` (0x09), `\n` (0x0A), `\v`
//!   (0x0B), `\f` (0x0C), `\r` (0x0D) and ` ` (0x20);
//! - a kvs frame starts with its length as a 4-byte big-endian number (see
//!   [`protocol::frame`](crate::protocol::frame): `length: u32 BE`, then the payload; no magic
//!   byte comes first), so its first byte is `length >> 24`. The server caps its frame limit
//!   at [`MAX_KVS_FRAME_LEN`] (under 0x0900_0000 bytes, 144 MiB; the default is 32 MiB), so
//!   the first byte of a frame it accepts is at most 0x08: below every byte above, `\t`
//!   (0x09) being the lowest of them. A larger cap would let a frame of 144 MiB or more start
//!   with `\t` or `\n` and be taken for RESP.
//!
//! So: first byte `*`, `A`-`Z`/`a`-`z` or an `isspace` byte → RESP for the rest of the
//! connection; anything else → the kvs protocol. The choice is made once, and a connection
//! never switches. A kvs client uses the same rule the other way round: a reply whose length
//! prefix is over [`MAX_KVS_FRAME_LEN`] (first byte 0x09 or more, as the text of any
//! line-based protocol: `HTTP`, `-ERR`, `+OK`, `220 `) does not come from a kvs server.
//!
//! # Layers
//!
//! As in [`protocol`](crate::protocol), kept apart:
//! - [`frame`]: bytes on the wire. An incremental request parser (arrays of bulk strings, and
//!   inline commands) that checks every length against its [`Limits`] before allocating, and
//!   the writers of replies; plus [`Frame`], a whole value as a client reads it.
//! - `request`: what every command sees of a request: its arguments (slices of the input
//!   buffer), the client that sent it, and Redis's wording for the error replies they share.
//! - `commands`: the command table, one row per command (name, arity, flags, kvs's class, key
//!   positions, `COMMAND DOCS` fields, and how it parses and runs), and the dispatch that
//!   finds a request's row, checks its arity and runs it on a
//!   [`KvsEngine`](crate::KvsEngine). One module per family of commands: `strings` (`SET`
//!   with `NX`, `XX`, `GET`; `GET`, `MGET`, `MSET`), `keys` (`DEL`, `EXISTS`, `DBSIZE`),
//!   `connection` (`PING`, `ECHO`, `HELLO`, `QUIT`), `server` (`INFO`, `COMMAND` with
//!   `COUNT`, `LIST`, `INFO`, `DOCS`, answered from the table; `CONFIG GET` of `save` and
//!   `appendonly`). Replies and error strings are Redis's. Adding a command touches only its
//!   family's file.
//! - `session`: a connection's request loop between the server's buffers and the commands.
//!   Requests pipelined in one write are answered in order; the writes that a command marks
//!   as batchable (plain `SET`s) are held and written together.
//! - `state`: what all connections of a server share (`INFO` counters, key locks).
//! - `info`: the text of `INFO`.
//!
//! # RESP3
//!
//! Connections start in RESP2. A client that sends `HELLO 3` (redis-py 8 does, by default)
//! gets RESP3 from then on; for kvs's commands only two things change: "no value" is `_`
//! instead of `$-1`, and maps (`HELLO`, `CONFIG GET`, `COMMAND DOCS`) are `%` maps instead of
//! flat arrays.
//!
//! The connection itself (buffers, timeouts, back-pressure, shutdown) is the server's, the
//! same for both protocols.
//!
//! # Limits
//!
//! The same as the kvs protocol's: no bulk string, and no request's bulk strings together,
//! longer than the server's frame limit; at most [`frame::DEFAULT_MAX_ARGS`] arguments; all
//! checked before allocating. A malformed or oversized request gets `-ERR Protocol error: ...`
//! and that connection is closed; nothing else is affected.

mod commands;
pub mod frame;
mod info;
mod request;
pub(crate) mod session;
mod state;

pub use self::frame::{Frame, Limits, Version};
pub(crate) use self::session::Session;
pub(crate) use self::state::ServerState;

/// The largest kvs-protocol frame a server accepts when it also speaks RESP on the same port
/// (144 MiB - 1): any larger length would start with the byte `\t` (0x09) or higher, as a
/// blank or an empty line before a RESP command does.
pub const MAX_KVS_FRAME_LEN: usize = 0x0900_0000 - 1;

/// Whether a connection whose first byte is `first` speaks RESP (else: the kvs protocol).
pub fn is_resp_start(first: u8) -> bool {
    first == b'*' || first.is_ascii_alphabetic() || frame::is_blank(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_kvs_frame_under_the_cap_starts_like_resp() {
        for len in [0, 1, 32 << 20, MAX_KVS_FRAME_LEN] {
            let first = (len as u32).to_be_bytes()[0];
            assert!(!is_resp_start(first), "{len}");
        }
        for first in 0..=(MAX_KVS_FRAME_LEN >> 24) as u8 {
            assert!(!is_resp_start(first));
        }
        for first in [b'*', b'P', b'g', b'\t', b'\n', 0x0b, 0x0c, b'\r', b' '] {
            assert!(is_resp_start(first), "{first:#04x}");
        }
        // The first byte above every kvs frame's is the first that can start RESP.
        assert_eq!((MAX_KVS_FRAME_LEN + 1) >> 24, usize::from(b'\t'));
    }
}
