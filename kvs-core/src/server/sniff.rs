//! Which protocol a connection speaks: RESP or the kvs protocol, on the same port.
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
//! The blanks are RESP's own definition ([`resp::frame::is_blank`](crate::resp::frame::is_blank)),
//! the bytes its inline parser skips, so that what starts RESP here is what the RESP parser
//! then reads as a request. The cap is public as
//! [`ServerConfig::MAX_FRAME_LEN`](crate::ServerConfig::MAX_FRAME_LEN).

use crate::resp::frame::is_blank;

/// The largest kvs-protocol frame a server accepts when it also speaks RESP on the same port
/// (144 MiB - 1): any larger length would start with the byte `\t` (0x09) or higher, as a
/// blank or an empty line before a RESP command does.
pub(crate) const MAX_KVS_FRAME_LEN: usize = 0x0900_0000 - 1;

/// Whether a connection whose first byte is `first` speaks RESP (else: the kvs protocol).
pub(crate) fn is_resp_start(first: u8) -> bool {
    first == b'*' || first.is_ascii_alphabetic() || is_blank(first)
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
