//! The wire protocol between [`KvsClient`](crate::KvsClient) and
//! [`KvsServer`](crate::KvsServer).
//!
//! Two layers, kept apart:
//! - [`frame`]: bytes on the wire. Every message travels in a frame, a 4-byte big-endian length
//!   followed by that many bytes of payload. The reader refuses a length over its limit before
//!   allocating anything for it.
//! - [`message`]: what a payload means. A [`Request`] (`Get`, `Set`, `Remove`,
//!   `CompareAndSet`, batches, deadlines, scans, checkpoints) or a [`Response`] (`Ok`,
//!   `Value`, `Error` with an [`ErrorKind`], as its one-byte code, and a message, ...),
//!   encoded with bincode 2 over serde. Keys and values are bytes.
//!
//! A connection carries any number of frames in each direction; requests may be pipelined and
//! are answered in order, one response per request.

pub mod frame;
pub mod message;

pub use self::frame::{FrameStatus, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
pub use self::message::{
    code_of, kind_of, List, ListItem, ListIter, Op, Password, Request, Response,
};
/// The error kinds a response carries: [`kvs::ErrorKind`](crate::ErrorKind), under the name
/// this module has always given it.
pub use crate::ErrorKind;
