//! Messages: what a frame's payload means.
//!
//! # Encoding, byte by byte
//!
//! Payloads are bincode 2 over serde with `bincode::config::standard()`: little-endian,
//! variable-length integers. A *varint* is one byte for 0..=250; otherwise a marker byte (251:
//! a u16 follows, 252: u32, 253: u64) and the value in little-endian. *bytes* is a varint
//! length followed by that many raw bytes; *str* is the same with UTF-8 bytes.
//!
//! ```text
//! Request                            Response
//!   0x00 Get     key: bytes            0x00 Ok                 (answer to Set and Remove)
//!   0x01 Set     key: bytes            0x01 Value  0x00        (Get: key not set)
//!                value: bytes                      0x01 bytes  (Get: the value)
//!   0x02 Remove  key: bytes            0x02 Error  kind: u8 (one raw byte, see code_of)
//!   0x03 CompareAndSet                             message: str
//!                key: bytes            0x03 Swapped 0x00 / 0x01 (CompareAndSet: false / true)
//!                expected: 0x00        (the key must not be set)
//!                          0x01 bytes  (the key must hold these bytes)
//!                new:      0x00        (remove the key)
//!                          0x01 bytes  (set the key to these bytes)
//! ```
//!
//! So `Set { key: "k", value: "v" }` in its frame is `00 00 00 05 01 01 6b 01 76`,
//! `Value(Some("v"))` is `00 00 00 04 01 01 01 76`, `CompareAndSet { key: "k", expected: None,
//! new: Some("v") }` is `00 00 00 07 03 01 6b 00 01 01 76` and `Swapped(true)` is
//! `00 00 00 02 03 01`. A payload must be exactly one message: trailing bytes are a protocol
//! error.
//!
//! Variants are only ever appended, so the tags above never change. `CompareAndSet` and
//! `Swapped` came after the first three: a client never sends `CompareAndSet` unless its user
//! asks for it, and a server older than them answers it with an `Error` of kind `Protocol`
//! (unknown variant) and closes the connection.
//!
//! Decoding borrows keys, values and messages from the payload, so a length inside a payload
//! can never make the decoder allocate: it can only point past the end, which is an error.

use serde::{Deserialize, Serialize, Serializer};

use super::frame;
use crate::{ErrorKind, KvsError, Result};

/// A request from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// The value of `key`: answered with [`Response::Value`].
    Get {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
    },
    /// Set `key` to `value`: answered with [`Response::Ok`] once the write reached the OS.
    Set {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
        /// The value.
        #[serde(serialize_with = "bytes")]
        value: &'a [u8],
    },
    /// Remove `key`: answered with [`Response::Ok`], or an error of kind
    /// [`ErrorKind::KeyNotFound`].
    Remove {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
    },
    /// Set `key` to `new` (or remove it when `new` is `None`) if and only if its value is
    /// `expected` (`None`: the key is not set), atomically with respect to every other
    /// request: answered with [`Response::Swapped`], `true` when the swap happened.
    CompareAndSet {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
        /// The value the key must hold, or `None` for "not set".
        #[serde(borrow, serialize_with = "optional_bytes")]
        expected: Option<&'a [u8]>,
        /// The value to store, or `None` to remove the key.
        #[serde(borrow, serialize_with = "optional_bytes")]
        new: Option<&'a [u8]>,
    },
}

/// A response from the server, one per request, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// A `Set` or `Remove` succeeded.
    Ok,
    /// The answer to a `Get`: the value, or `None` when the key is not set.
    Value(#[serde(borrow, serialize_with = "optional_bytes")] Option<&'a [u8]>),
    /// The request failed.
    Error {
        /// What kind of failure, so that a client can act on it; travels as its code (see
        /// [`code_of`]).
        #[serde(with = "error_code")]
        kind: ErrorKind,
        /// A message for people.
        message: &'a str,
    },
    /// The answer to a `CompareAndSet`: whether the key held the expected value (and now
    /// holds the new one).
    Swapped(bool),
}

/// The one-byte code of an error kind on the wire.
///
/// ```text
/// code  kind                      sent for
///    0  Other                     anything without a code below: a store that is locked,
///                                 poisoned or inherited through fork() on the server, an
///                                 engine's own failure, ...
///    1  KeyNotFound               Remove of a key that is not set
///    2  InvalidArgument           a request kvs cannot carry out as asked (a key over the
///                                 engine's limit, a value too large for a reply frame)
///    3  Io                        the server's storage failed with an I/O error
///    4  Corruption                the server's storage found damaged data
///    5  Protocol                  the request broke the protocol
/// ```
///
/// The codes never change and are never reused; a new one may only be appended. The kinds
/// without a code of their own are conditions of the server's store that a client cannot
/// remedy (it cannot reopen the server's store); the message says what happened.
pub fn code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::KeyNotFound => 1,
        ErrorKind::InvalidArgument => 2,
        ErrorKind::Io => 3,
        ErrorKind::Corruption => 4,
        ErrorKind::Protocol => 5,
        _ => 0,
    }
}

/// The error kind a code on the wire stands for (see [`code_of`]); a code this version does
/// not know is [`ErrorKind::Other`].
pub fn kind_of(code: u8) -> ErrorKind {
    match code {
        1 => ErrorKind::KeyNotFound,
        2 => ErrorKind::InvalidArgument,
        3 => ErrorKind::Io,
        4 => ErrorKind::Corruption,
        5 => ErrorKind::Protocol,
        _ => ErrorKind::Other,
    }
}

/// `Response::Error`'s kind travels as its one-byte code.
mod error_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ErrorKind;

    pub fn serialize<S: Serializer>(kind: &ErrorKind, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(super::code_of(*kind))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ErrorKind, D::Error> {
        u8::deserialize(deserializer).map(super::kind_of)
    }
}

impl<'a> Request<'a> {
    /// Appends this request, framed, to `out`; refuses one whose payload is over `max_len`.
    pub fn encode_frame(&self, out: &mut Vec<u8>, max_len: usize) -> Result<()> {
        encode_frame(self, out, max_len)
    }

    /// Decodes a request from a frame's payload.
    pub fn decode(payload: &'a [u8]) -> Result<Request<'a>> {
        decode(payload)
    }
}

impl<'a> Response<'a> {
    /// Appends this response, framed, to `out`; refuses one whose payload is over `max_len`.
    pub fn encode_frame(&self, out: &mut Vec<u8>, max_len: usize) -> Result<()> {
        encode_frame(self, out, max_len)
    }

    /// Decodes a response from a frame's payload.
    pub fn decode(payload: &'a [u8]) -> Result<Response<'a>> {
        decode(payload)
    }

    /// The error response for `err`.
    pub fn error(err: &KvsError, message: &'a str) -> Response<'a> {
        Response::Error {
            kind: err.kind(),
            message,
        }
    }
}

fn encode_frame(message: &impl Serialize, out: &mut Vec<u8>, max_len: usize) -> Result<()> {
    let start = frame::start(out);
    if let Err(e) = bincode::serde::encode_into_std_write(message, out, bincode::config::standard())
    {
        out.truncate(start);
        return Err(KvsError::Protocol(format!("cannot encode message: {e}")));
    }
    frame::finish(out, start, max_len)
}

fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T> {
    let (message, read) =
        bincode::serde::borrow_decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| KvsError::Protocol(format!("malformed message: {e}")))?;
    if read != payload.len() {
        return Err(KvsError::Protocol(format!(
            "malformed message: {} bytes left over after it",
            payload.len() - read
        )));
    }
    Ok(message)
}

// `&[u8]` serializes as a sequence of u8 by default (the same bytes in bincode, but one call per
// byte); `serialize_bytes` copies the slice in one go.
fn bytes<S: Serializer>(value: &&[u8], serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_bytes(value)
}

fn optional_bytes<S: Serializer>(
    value: &Option<&[u8]>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    struct Raw<'b>(&'b [u8]);
    impl Serialize for Raw<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }
    match value {
        None => serializer.serialize_none(),
        Some(value) => serializer.serialize_some(&Raw(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DEFAULT_MAX_FRAME_LEN;

    fn framed(encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out).unwrap();
        out
    }

    #[test]
    fn frames_have_the_documented_bytes() {
        let max = DEFAULT_MAX_FRAME_LEN;
        let cases: Vec<(Vec<u8>, &[u8])> = vec![
            (
                framed(|o| Request::Get { key: b"k" }.encode_frame(o, max)),
                &[0, 0, 0, 3, 0x00, 1, b'k'],
            ),
            (
                framed(|o| {
                    Request::Set {
                        key: b"k",
                        value: b"v",
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 5, 0x01, 1, b'k', 1, b'v'],
            ),
            (
                framed(|o| Request::Remove { key: b"" }.encode_frame(o, max)),
                &[0, 0, 0, 2, 0x02, 0],
            ),
            (
                framed(|o| Response::Ok.encode_frame(o, max)),
                &[0, 0, 0, 1, 0x00],
            ),
            (
                framed(|o| Response::Value(None).encode_frame(o, max)),
                &[0, 0, 0, 2, 0x01, 0x00],
            ),
            (
                framed(|o| Response::Value(Some(b"v")).encode_frame(o, max)),
                &[0, 0, 0, 4, 0x01, 0x01, 1, b'v'],
            ),
            (
                framed(|o| {
                    Response::Error {
                        kind: ErrorKind::KeyNotFound,
                        message: "no",
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 5, 0x02, 1, 2, b'n', b'o'],
            ),
            (
                framed(|o| {
                    Request::CompareAndSet {
                        key: b"k",
                        expected: None,
                        new: Some(b"v"),
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 7, 0x03, 1, b'k', 0x00, 0x01, 1, b'v'],
            ),
            (
                framed(|o| {
                    Request::CompareAndSet {
                        key: b"k",
                        expected: Some(b"ab"),
                        new: None,
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 8, 0x03, 1, b'k', 0x01, 2, b'a', b'b', 0x00],
            ),
            (
                framed(|o| Response::Swapped(true).encode_frame(o, max)),
                &[0, 0, 0, 2, 0x03, 0x01],
            ),
            (
                framed(|o| Response::Swapped(false).encode_frame(o, max)),
                &[0, 0, 0, 2, 0x03, 0x00],
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn long_lengths_use_the_varint_marker() {
        let value = vec![7u8; 300];
        let out = framed(|o| {
            Request::Set {
                key: b"",
                value: &value,
            }
            .encode_frame(o, DEFAULT_MAX_FRAME_LEN)
        });
        // 1 (variant) + 1 (empty key) + 3 (251, 300 as u16 LE) + 300.
        assert_eq!(&out[..10], &[0, 0, 1, 49, 1, 0, 251, 0x2c, 0x01, 7]);
    }

    #[test]
    fn messages_round_trip_binary_keys_and_values() {
        let key: &[u8] = &[0, 255, 10, 0];
        let value: &[u8] = &[0xff; 1000];
        let request = Request::Set { key, value };
        let out = framed(|o| request.encode_frame(o, DEFAULT_MAX_FRAME_LEN));
        assert_eq!(Request::decode(&out[4..]).unwrap(), request);
        let response = Response::Value(Some(value));
        let out = framed(|o| response.encode_frame(o, DEFAULT_MAX_FRAME_LEN));
        assert_eq!(Response::decode(&out[4..]).unwrap(), response);
        for (expected, new) in [(None, None), (Some(value), None), (None, Some(key))] {
            let request = Request::CompareAndSet { key, expected, new };
            let out = framed(|o| request.encode_frame(o, DEFAULT_MAX_FRAME_LEN));
            assert_eq!(Request::decode(&out[4..]).unwrap(), request);
        }
        for swapped in [false, true] {
            let out = framed(|o| Response::Swapped(swapped).encode_frame(o, DEFAULT_MAX_FRAME_LEN));
            assert_eq!(
                Response::decode(&out[4..]).unwrap(),
                Response::Swapped(swapped)
            );
        }
    }

    #[test]
    fn error_codes_are_fixed() {
        let codes = [
            (ErrorKind::Other, 0),
            (ErrorKind::KeyNotFound, 1),
            (ErrorKind::InvalidArgument, 2),
            (ErrorKind::Io, 3),
            (ErrorKind::Corruption, 4),
            (ErrorKind::Protocol, 5),
        ];
        for (kind, code) in codes {
            assert_eq!(code_of(kind), code, "{kind}");
            assert_eq!(kind_of(code), kind, "{code}");
            let response = Response::Error { kind, message: "" };
            let out = framed(|o| response.encode_frame(o, DEFAULT_MAX_FRAME_LEN));
            assert_eq!(out, [0, 0, 0, 3, 0x02, code, 0]);
        }
        // The kinds without a code of their own travel as Other.
        for kind in [
            ErrorKind::EngineMismatch,
            ErrorKind::Locked,
            ErrorKind::Poisoned,
            ErrorKind::Forked,
            ErrorKind::Connect,
            ErrorKind::ConnectionLost,
        ] {
            assert_eq!(code_of(kind), 0, "{kind}");
        }
    }

    #[test]
    fn an_error_response_carries_the_errors_kind() {
        let err = KvsError::io_at("/srv/kvs/1.log", std::io::Error::other("disk on fire"));
        assert_eq!(
            Response::error(&err, "m"),
            Response::Error {
                kind: ErrorKind::Io,
                message: "m"
            }
        );
        let poisoned = KvsError::Poisoned("x".into());
        assert_eq!(
            Response::error(&poisoned, "m"),
            Response::Error {
                kind: ErrorKind::Poisoned,
                message: "m"
            }
        );
    }

    #[test]
    fn unknown_error_codes_decode_as_other() {
        let payload = [0x02, 200, 1, b'x'];
        assert_eq!(
            Response::decode(&payload).unwrap(),
            Response::Error {
                kind: ErrorKind::Other,
                message: "x"
            }
        );
    }

    #[test]
    fn malformed_payloads_are_protocol_errors() {
        let bad: &[&[u8]] = &[
            &[],
            &[9],
            &[0x01, 5, b'k'],
            &[0x00, 253, 255, 255, 255, 255, 255, 255, 255, 127],
            &[0x00, 1, b'k', 0],
            &[0x02, 0, 1, 0xff],
            // CompareAndSet: an option tag that is neither 0 nor 1, a missing `new`.
            &[0x03, 1, b'k', 2],
            &[0x03, 1, b'k', 0],
            &[0x04],
        ];
        for payload in bad {
            let err = Request::decode(payload).unwrap_err();
            assert!(matches!(err, KvsError::Protocol(_)), "{payload:?}: {err}");
        }
    }
}
