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
//! Request
//!   0x00 Get              key: bytes
//!   0x01 Set              key: bytes, value: bytes
//!   0x02 Remove           key: bytes
//!   0x03 CompareAndSet    key: bytes
//!                         expected: 0x00 (the key must not be set) / 0x01 bytes (its value)
//!                         new:      0x00 (remove the key) / 0x01 bytes (set it to these bytes)
//!   0x04 ApplyBatch       ops: list of op
//!   0x05 GetMany          keys: list of bytes
//!   0x06 SetWithDeadline  key: bytes, value: bytes, deadline: varint
//!   0x07 ExpireAt         key: bytes, deadline: varint
//!   0x08 Persist          key: bytes
//!   0x09 Expiry           key: bytes
//!   0x0a Scan             cursor: varint (0 starts a walk)
//!                         count: varint (how many keys to look at)
//!                         prefix: bytes (empty: every key)
//!                         pattern: 0x00 (none) / 0x01 bytes (a glob, Redis's rules)
//!   0x0b Checkpoint       path: str (a path on the server's machine)
//!   0x0c Auth             password: bytes
//!
//! Response
//!   0x00 Ok               (to Set, Remove, ApplyBatch, SetWithDeadline, Checkpoint, Auth)
//!   0x01 Value            0x00 (Get: the key is not set) / 0x01 bytes (Get: the value)
//!   0x02 Error            kind: u8 (one raw byte, see code_of), message: str
//!   0x03 Swapped          0x00 / 0x01 (CompareAndSet: false / true)
//!   0x04 Values           list of: 0x00 (not set) / 0x01 bytes (the value)   (to GetMany)
//!   0x05 Expiry           0x00 (the key is not set) / 0x01 (set, no deadline)
//!                         / 0x02 varint (set, expiring at this deadline)
//!   0x06 Page             cursor: varint (0: the walk is over), keys: list of bytes  (to Scan)
//!   0x07 Bool             0x00 / 0x01 (ExpireAt: the key was set; Persist: it had a deadline)
//!
//! op:    0x00 (set)     key: bytes, value: bytes, deadline: 0x00 (never) / 0x01 varint
//!        0x01 (remove)  key: bytes
//! list:  a varint byte length, then the items encoded back to back; no count (the items
//!        fill exactly that many bytes)
//! ```
//!
//! Deadlines are milliseconds since the Unix epoch. So `Set { key: "k", value: "v" }` in its
//! frame is `00 00 00 05 01 01 6b 01 76`, `Value(Some("v"))` is `00 00 00 04 01 01 01 76`,
//! `CompareAndSet { key: "k", expected: None, new: Some("v") }` is
//! `00 00 00 07 03 01 6b 00 01 01 76` and `Swapped(true)` is `00 00 00 02 03 01`. A batch
//! that sets "k" to "v" and removes "j" is `00 00 00 0b 04 09 00 01 6b 01 76 00 01 01 6a`
//! (9 bytes of ops). A payload must be exactly one message: trailing bytes are a protocol
//! error.
//!
//! Variants are only ever appended, so the tags above never change. Everything after the first
//! three (`Get`, `Set`, `Remove`) came later: a client never sends a newer request unless its
//! user asks for it, and a server older than a request answers it with an `Error` of kind
//! `Protocol` (unknown variant) and closes the connection; [`KvsClient`](crate::KvsClient)
//! then names the request the server does not know.
//!
//! `Auth` gives the server's password (`kvs-server --requirepass`): `Auth { password: "pw" }`
//! is `00 00 00 04 0c 02 70 77`. A server with a password answers every other request, until
//! the connection has given it, with an `Error` of kind `InvalidArgument` saying that a
//! password is required (the connection stays open); a wrong password is answered the same
//! way, saying so. A server without a password answers `Auth` with `Ok`, whatever the
//! password. The password is never shown by `Debug` ([`Password`]).
//!
//! `Checkpoint`'s path is a path on the server's machine, written by the server's process:
//! the server's user must be able to create it, and a relative path starts in the server's
//! working directory.
//!
//! Decoding borrows keys, values and messages from the payload, so a length inside a payload
//! can never make the decoder allocate: it can only point past the end, which is an error.
//! Lists are borrowed too (see [`List`]): they carry no count, only their byte length, and
//! their items are decoded one at a time from the payload as they are walked.

use serde::{Deserialize, Serialize, Serializer};

use super::frame;
use crate::{BatchOp, ErrorKind, KeyExpiry, KvsError, Result};

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
    /// Apply every operation of a batch as one atomic write
    /// ([`KvsEngine::apply_batch`](crate::KvsEngine::apply_batch)): answered with
    /// [`Response::Ok`] once all of it is written, or an error when none of it is.
    ApplyBatch {
        /// The operations, in the order they apply.
        #[serde(borrow)]
        ops: List<'a, Op<'a>>,
    },
    /// The values of several keys read at one instant: answered with [`Response::Values`].
    GetMany {
        /// The keys.
        #[serde(borrow)]
        keys: List<'a, &'a [u8]>,
    },
    /// Set `key` to `value`, expiring at `deadline` (milliseconds since the Unix epoch):
    /// answered with [`Response::Ok`].
    SetWithDeadline {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
        /// The value.
        #[serde(serialize_with = "bytes")]
        value: &'a [u8],
        /// When the key expires.
        deadline: u64,
    },
    /// Give the existing `key` the deadline `deadline`: answered with [`Response::Bool`],
    /// `true` when the key was set.
    ExpireAt {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
        /// When the key expires.
        deadline: u64,
    },
    /// Remove the deadline of `key`: answered with [`Response::Bool`], `true` when it had
    /// one.
    Persist {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
    },
    /// Whether `key` is set and when it expires: answered with [`Response::Expiry`].
    Expiry {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
    },
    /// One page of a walk over the keys
    /// ([`KvsEngine::scan_bytes`](crate::KvsEngine::scan_bytes)): answered with
    /// [`Response::Page`].
    Scan {
        /// 0 to start a walk, else the cursor of the page before.
        cursor: u64,
        /// How many keys to look at (the server may look at fewer, see `KvsServer`).
        count: u64,
        /// Only keys starting with these bytes (empty: every key).
        #[serde(serialize_with = "bytes")]
        prefix: &'a [u8],
        /// Only keys matching this glob pattern (Redis's rules).
        #[serde(borrow, serialize_with = "optional_bytes")]
        pattern: Option<&'a [u8]>,
    },
    /// Write an online checkpoint of the server's store into `path`
    /// ([`KvsEngine::checkpoint`](crate::KvsEngine::checkpoint)): answered with
    /// [`Response::Ok`] once the copy is durable. `path` is on the **server's** file system
    /// (relative paths start in the server's working directory), and the server's user must
    /// be able to create it.
    Checkpoint {
        /// Where the checkpoint goes, on the server's machine.
        path: &'a str,
    },
    /// Give the server's password: answered with [`Response::Ok`] if it is right (or the
    /// server has none), else an error of kind [`ErrorKind::InvalidArgument`]. Until then, a
    /// server with a password answers every other request with that error.
    Auth {
        /// The password.
        #[serde(borrow)]
        password: Password<'a>,
    },
}

/// A password on the wire: its bytes, which `Debug` does not show, so that a request logged
/// or printed never shows it.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password<'a>(#[serde(borrow, serialize_with = "bytes")] pub &'a [u8]);

impl std::fmt::Debug for Password<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
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
    /// The answer to a `GetMany`: each key's value, in the order asked, `None` when not set.
    Values(#[serde(borrow)] List<'a, Option<&'a [u8]>>),
    /// The answer to an `Expiry`.
    Expiry(#[serde(with = "expiry_wire")] KeyExpiry),
    /// The answer to a `Scan`: the cursor of the next page (0: the walk is over) and the keys
    /// of this one.
    Page {
        /// The cursor to pass to the next `Scan`; 0 when the walk is complete.
        cursor: u64,
        /// The keys found.
        #[serde(borrow)]
        keys: List<'a, &'a [u8]>,
    },
    /// The answer to `ExpireAt` (whether the key was set) and `Persist` (whether it had a
    /// deadline).
    Bool(bool),
}

/// One operation of an `ApplyBatch` request: the borrowed form of a
/// [`BatchOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op<'a> {
    /// Set `key` to `value`, expiring at `deadline` (`None`: never).
    Set {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
        /// The value.
        #[serde(serialize_with = "bytes")]
        value: &'a [u8],
        /// When the key expires, milliseconds since the Unix epoch; `None` for never.
        deadline: Option<u64>,
    },
    /// Remove `key` (nothing happens when it is not set).
    Remove {
        /// The key.
        #[serde(serialize_with = "bytes")]
        key: &'a [u8],
    },
}

impl<'a> From<&'a BatchOp> for Op<'a> {
    fn from(op: &'a BatchOp) -> Op<'a> {
        match op {
            BatchOp::Set {
                key,
                value,
                deadline,
            } => Op::Set {
                key,
                value,
                deadline: *deadline,
            },
            BatchOp::Remove { key } => Op::Remove { key },
        }
    }
}

impl From<Op<'_>> for BatchOp {
    fn from(op: Op<'_>) -> BatchOp {
        match op {
            Op::Set {
                key,
                value,
                deadline,
            } => BatchOp::Set {
                key: key.to_vec(),
                value: value.to_vec(),
                deadline,
            },
            Op::Remove { key } => BatchOp::Remove { key: key.to_vec() },
        }
    }
}

/// An item of a [`List`]: how it is encoded on its own.
pub trait ListItem<'a>: Copy + Deserialize<'a> {
    /// Serializes the item as it travels inside a list.
    fn serialize_item<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>;
}

impl<'a> ListItem<'a> for &'a [u8] {
    fn serialize_item<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
}

impl<'a> ListItem<'a> for Option<&'a [u8]> {
    fn serialize_item<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        optional_bytes(self, serializer)
    }
}

impl<'a> ListItem<'a> for Op<'a> {
    fn serialize_item<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.serialize(serializer)
    }
}

/// A list of items inside a message (the ops of a batch, keys, values).
///
/// On the wire it is *bytes*: a varint length, then the items encoded back to back, with no
/// count of its own. A sender builds it from a slice ([`List::new`]); a decoded list borrows
/// its encoded bytes from the payload and decodes an item at a time as it is walked
/// ([`List::iter`]). Decoding checks every item once and allocates nothing, whatever the
/// list holds: its length can only say how many payload bytes it covers, and those must be
/// there.
#[derive(Clone, Copy)]
pub struct List<'a, T> {
    repr: ListRepr<'a, T>,
}

#[derive(Clone, Copy)]
enum ListRepr<'a, T> {
    /// Items to send.
    Items(&'a [T]),
    /// Items as received: encoded, and checked.
    Encoded(&'a [u8]),
}

impl<'a, T: ListItem<'a>> List<'a, T> {
    /// A list of `items`, to send.
    pub fn new(items: &'a [T]) -> List<'a, T> {
        List {
            repr: ListRepr::Items(items),
        }
    }

    /// The items, in order.
    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter { repr: self.repr }
    }

    /// How many items the list holds (for a received list, a walk over it).
    pub fn len(&self) -> usize {
        match self.repr {
            ListRepr::Items(items) => items.len(),
            ListRepr::Encoded(_) => self.iter().count(),
        }
    }

    /// Whether the list holds no item.
    pub fn is_empty(&self) -> bool {
        match self.repr {
            ListRepr::Items(items) => items.is_empty(),
            ListRepr::Encoded(encoded) => encoded.is_empty(),
        }
    }
}

/// The items of a [`List`], in order. A received list was checked when it was decoded, so
/// its walk never fails; should it meet bytes it cannot decode, it stops there.
pub struct ListIter<'a, T> {
    repr: ListRepr<'a, T>,
}

impl<'a, T: ListItem<'a>> Iterator for ListIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            ListRepr::Items(items) => {
                let (first, rest) = items.split_first()?;
                *items = rest;
                Some(*first)
            }
            ListRepr::Encoded(encoded) => match decode_item::<T>(encoded) {
                Ok(Some((item, rest))) => {
                    *encoded = rest;
                    Some(item)
                }
                Ok(None) | Err(_) => {
                    *encoded = &[];
                    None
                }
            },
        }
    }
}

/// The first item encoded in `encoded` and what follows it; `None` when `encoded` is empty.
fn decode_item<'a, T: Deserialize<'a>>(encoded: &'a [u8]) -> Result<Option<(T, &'a [u8])>> {
    if encoded.is_empty() {
        return Ok(None);
    }
    let (item, read) =
        bincode::serde::borrow_decode_from_slice(encoded, bincode::config::standard())
            .map_err(|e| KvsError::Protocol(format!("malformed list item: {e}")))?;
    Ok(Some((item, &encoded[read..])))
}

impl<'a, T: ListItem<'a> + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &List<'a, T>) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, T: ListItem<'a> + Eq> Eq for List<'a, T> {}

impl<'a, T: ListItem<'a> + std::fmt::Debug> std::fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// An item serialized as it travels in a list.
struct AsItem<'b, T>(&'b T);

impl<'a, T: ListItem<'a>> Serialize for AsItem<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize_item(serializer)
    }
}

impl<'a, T: ListItem<'a>> Serialize for List<'a, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        match self.repr {
            ListRepr::Encoded(encoded) => serializer.serialize_bytes(encoded),
            ListRepr::Items(items) => {
                // *bytes* without copying the items into a buffer first: the length (a varint,
                // as bincode writes a u64) of the items' encoding, then the items themselves.
                let mut size = bincode::enc::write::SizeWriter::default();
                for item in items {
                    bincode::serde::encode_into_writer(
                        AsItem(item),
                        &mut size,
                        bincode::config::standard(),
                    )
                    .map_err(S::Error::custom)?;
                }
                let mut tuple = serializer.serialize_tuple(items.len() + 1)?;
                tuple.serialize_element(&(size.bytes_written as u64))?;
                for item in items {
                    tuple.serialize_element(&AsItem(item))?;
                }
                tuple.end()
            }
        }
    }
}

impl<'de: 'a, 'a, T: ListItem<'a>> Deserialize<'de> for List<'a, T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<List<'a, T>, D::Error> {
        use serde::de::Error;
        let encoded: &'de [u8] = Deserialize::deserialize(deserializer)?;
        // Check every item now, so that a malformed list is refused with its message.
        let mut rest: &'a [u8] = encoded;
        while let Some((_, after)) = decode_item::<T>(rest).map_err(D::Error::custom)? {
            rest = after;
        }
        Ok(List {
            repr: ListRepr::Encoded(encoded),
        })
    }
}

/// `Response::Expiry`'s [`KeyExpiry`] on the wire: 0x00 missing, 0x01 never, 0x02 and a
/// varint deadline.
mod expiry_wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::KeyExpiry;

    #[derive(Serialize, Deserialize)]
    enum Wire {
        Missing,
        Never,
        At(u64),
    }

    pub fn serialize<S: Serializer>(expiry: &KeyExpiry, serializer: S) -> Result<S::Ok, S::Error> {
        match *expiry {
            KeyExpiry::Missing => Wire::Missing,
            KeyExpiry::Never => Wire::Never,
            KeyExpiry::At(deadline) => Wire::At(deadline),
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<KeyExpiry, D::Error> {
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Missing => KeyExpiry::Missing,
            Wire::Never => KeyExpiry::Never,
            Wire::At(deadline) => KeyExpiry::At(deadline),
        })
    }
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
    /// The request's name, as the table above gives it (for messages).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Get { .. } => "Get",
            Request::Set { .. } => "Set",
            Request::Remove { .. } => "Remove",
            Request::CompareAndSet { .. } => "CompareAndSet",
            Request::ApplyBatch { .. } => "ApplyBatch",
            Request::GetMany { .. } => "GetMany",
            Request::SetWithDeadline { .. } => "SetWithDeadline",
            Request::ExpireAt { .. } => "ExpireAt",
            Request::Persist { .. } => "Persist",
            Request::Expiry { .. } => "Expiry",
            Request::Scan { .. } => "Scan",
            Request::Checkpoint { .. } => "Checkpoint",
            Request::Auth { .. } => "Auth",
        }
    }

    /// Whether every kvs server knows this request: only `Get`, `Set` and `Remove` were there
    /// from the first release; a server older than any other answers it with a protocol
    /// error.
    pub fn is_original(&self) -> bool {
        matches!(
            self,
            Request::Get { .. } | Request::Set { .. } | Request::Remove { .. }
        )
    }

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
    fn engine_v2_frames_have_the_documented_bytes() {
        let max = DEFAULT_MAX_FRAME_LEN;
        let ops = [
            Op::Set {
                key: b"k",
                value: b"v",
                deadline: None,
            },
            Op::Remove { key: b"j" },
        ];
        let with_deadline = [Op::Set {
            key: b"k",
            value: b"",
            deadline: Some(1000),
        }];
        let keys: [&[u8]; 2] = [b"a", b"bc"];
        let values: [Option<&[u8]>; 2] = [None, Some(b"v")];
        let page_keys: [&[u8]; 1] = [b"a"];
        let cases: Vec<(Vec<u8>, &[u8])> = vec![
            (
                framed(|o| {
                    Request::ApplyBatch {
                        ops: List::new(&ops),
                    }
                    .encode_frame(o, max)
                }),
                &[
                    0, 0, 0, 11, 0x04, 9, 0x00, 1, b'k', 1, b'v', 0x00, 0x01, 1, b'j',
                ],
            ),
            (
                framed(|o| {
                    Request::ApplyBatch {
                        ops: List::new(&with_deadline),
                    }
                    .encode_frame(o, max)
                }),
                &[
                    0, 0, 0, 10, 0x04, 8, 0x00, 1, b'k', 0, 0x01, 251, 0xe8, 0x03,
                ],
            ),
            (
                framed(|o| {
                    Request::ApplyBatch {
                        ops: List::new(&[]),
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 2, 0x04, 0],
            ),
            (
                framed(|o| {
                    Request::GetMany {
                        keys: List::new(&keys),
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 7, 0x05, 5, 1, b'a', 2, b'b', b'c'],
            ),
            (
                framed(|o| {
                    Request::SetWithDeadline {
                        key: b"k",
                        value: b"v",
                        deadline: 300,
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 8, 0x06, 1, b'k', 1, b'v', 251, 0x2c, 0x01],
            ),
            (
                framed(|o| {
                    Request::ExpireAt {
                        key: b"k",
                        deadline: 5,
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 4, 0x07, 1, b'k', 5],
            ),
            (
                framed(|o| Request::Persist { key: b"k" }.encode_frame(o, max)),
                &[0, 0, 0, 3, 0x08, 1, b'k'],
            ),
            (
                framed(|o| Request::Expiry { key: b"k" }.encode_frame(o, max)),
                &[0, 0, 0, 3, 0x09, 1, b'k'],
            ),
            (
                framed(|o| {
                    Request::Scan {
                        cursor: 0,
                        count: 10,
                        prefix: b"p",
                        pattern: Some(b"*"),
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 8, 0x0a, 0, 10, 1, b'p', 0x01, 1, b'*'],
            ),
            (
                framed(|o| {
                    Request::Scan {
                        cursor: 1 << 40,
                        count: 100,
                        prefix: b"",
                        pattern: None,
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 13, 0x0a, 253, 0, 0, 0, 0, 0, 1, 0, 0, 100, 0, 0x00],
            ),
            (
                framed(|o| Request::Checkpoint { path: "/c" }.encode_frame(o, max)),
                &[0, 0, 0, 4, 0x0b, 2, b'/', b'c'],
            ),
            (
                framed(|o| {
                    Request::Auth {
                        password: Password(b"pw"),
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 4, 0x0c, 2, b'p', b'w'],
            ),
            (
                framed(|o| Response::Values(List::new(&values)).encode_frame(o, max)),
                &[0, 0, 0, 6, 0x04, 4, 0x00, 0x01, 1, b'v'],
            ),
            (
                framed(|o| Response::Expiry(KeyExpiry::Missing).encode_frame(o, max)),
                &[0, 0, 0, 2, 0x05, 0x00],
            ),
            (
                framed(|o| Response::Expiry(KeyExpiry::Never).encode_frame(o, max)),
                &[0, 0, 0, 2, 0x05, 0x01],
            ),
            (
                framed(|o| Response::Expiry(KeyExpiry::At(1000)).encode_frame(o, max)),
                &[0, 0, 0, 5, 0x05, 0x02, 251, 0xe8, 0x03],
            ),
            (
                framed(|o| {
                    Response::Page {
                        cursor: 7,
                        keys: List::new(&page_keys),
                    }
                    .encode_frame(o, max)
                }),
                &[0, 0, 0, 5, 0x06, 7, 2, 1, b'a'],
            ),
            (
                framed(|o| Response::Bool(true).encode_frame(o, max)),
                &[0, 0, 0, 2, 0x07, 0x01],
            ),
            (
                framed(|o| Response::Bool(false).encode_frame(o, max)),
                &[0, 0, 0, 2, 0x07, 0x00],
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn engine_v2_messages_round_trip() {
        let big = vec![0xabu8; 70_000];
        let ops = [
            Op::Set {
                key: &[0, 255],
                value: &big,
                deadline: Some(u64::MAX),
            },
            Op::Remove { key: b"" },
            Op::Set {
                key: b"x",
                value: b"",
                deadline: None,
            },
        ];
        let keys: [&[u8]; 3] = [b"", &big, b"\0"];
        let values: [Option<&[u8]>; 3] = [Some(&big), None, Some(b"")];
        let requests = [
            Request::ApplyBatch {
                ops: List::new(&ops),
            },
            Request::GetMany {
                keys: List::new(&keys),
            },
            Request::SetWithDeadline {
                key: b"k",
                value: &big,
                deadline: 0,
            },
            Request::ExpireAt {
                key: &big,
                deadline: u64::MAX,
            },
            Request::Persist { key: b"p" },
            Request::Expiry { key: b"e" },
            Request::Scan {
                cursor: u64::MAX,
                count: 0,
                prefix: &big,
                pattern: None,
            },
            Request::Checkpoint {
                path: "relative/\u{e9}t\u{e9}",
            },
            Request::Auth {
                password: Password(b"\0 any bytes \xff"),
            },
        ];
        for request in requests {
            let out = framed(|o| request.encode_frame(o, DEFAULT_MAX_FRAME_LEN));
            let decoded = Request::decode(&out[4..]).unwrap();
            assert_eq!(decoded, request);
        }
        let responses = [
            Response::Values(List::new(&values)),
            Response::Values(List::new(&[])),
            Response::Expiry(KeyExpiry::At(u64::MAX)),
            Response::Page {
                cursor: 0,
                keys: List::new(&keys),
            },
            Response::Bool(false),
        ];
        for response in responses {
            let out = framed(|o| response.encode_frame(o, DEFAULT_MAX_FRAME_LEN));
            assert_eq!(Response::decode(&out[4..]).unwrap(), response);
        }
        // A decoded list walks the same items, in order, borrowed from the payload.
        let out = framed(|o| {
            Request::ApplyBatch {
                ops: List::new(&ops),
            }
            .encode_frame(o, DEFAULT_MAX_FRAME_LEN)
        });
        let Request::ApplyBatch { ops: decoded } = Request::decode(&out[4..]).unwrap() else {
            panic!("not a batch");
        };
        assert_eq!(decoded.len(), 3);
        assert!(!decoded.is_empty());
        assert_eq!(decoded.iter().collect::<Vec<_>>(), ops);
        let batch_op = BatchOp::from(decoded.iter().next().unwrap());
        assert_eq!(Op::from(&batch_op), ops[0]);
    }

    #[test]
    fn malformed_lists_are_protocol_errors() {
        let bad: &[&[u8]] = &[
            // GetMany whose list length runs past the payload.
            &[0x05, 3, 1, b'a'],
            // ... whose length claims 2^62 bytes: refused without allocating for it.
            &[0x05, 253, 0, 0, 0, 0, 0, 0, 0, 0x40],
            // ... whose last item is cut short inside the list.
            &[0x05, 3, 1, b'a', 5],
            // ApplyBatch with an op tag that is neither set nor remove.
            &[0x04, 2, 0x02, 0],
            // ... a set whose deadline option tag is neither 0 nor 1.
            &[0x04, 4, 0x00, 0, 0, 7],
            // ... a list ending in the middle of an op.
            &[0x04, 3, 0x00, 1, b'k'],
            // Scan without its pattern; Checkpoint whose path is not UTF-8.
            &[0x0a, 0, 1, 0],
            &[0x0b, 1, 0xff],
            // Auth without its password; tags past the last one.
            &[0x0c],
            &[0x0d],
        ];
        for payload in bad {
            let err = Request::decode(payload).unwrap_err();
            assert!(matches!(err, KvsError::Protocol(_)), "{payload:?}: {err}");
        }
        let bad_responses: &[&[u8]] = &[
            &[0x04, 2, 0x01, 5],
            &[0x05, 0x03],
            &[0x06, 0, 2, 1],
            &[0x07, 2],
            &[0x08],
        ];
        for payload in bad_responses {
            let err = Response::decode(payload).unwrap_err();
            assert!(matches!(err, KvsError::Protocol(_)), "{payload:?}: {err}");
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
            &[0x0c],
            &[0x0d],
        ];
        for payload in bad {
            let err = Request::decode(payload).unwrap_err();
            assert!(matches!(err, KvsError::Protocol(_)), "{payload:?}: {err}");
        }
    }
}
