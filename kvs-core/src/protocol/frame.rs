//! Framing: how messages are cut out of a byte stream.
//!
//! # The frame, byte by byte
//!
//! ```text
//! offset  size  field
//!      0     4  length: u32, big-endian: the number of payload bytes that follow (0..=limit)
//!      4  length payload: one bincode-encoded message (see `message.rs`)
//! ```
//!
//! Nothing else: no magic, no padding, no checksum (TCP already checks the bytes). A frame is
//! complete once `4 + length` bytes have arrived; the next frame starts right after it.
//!
//! # Limits
//!
//! Each side has a maximum payload length ([`DEFAULT_MAX_FRAME_LEN`] unless configured). A
//! length prefix over the limit is refused as soon as its 4 bytes are in, before anything is
//! allocated for the payload, so a peer can never make the reader hold more than one frame of
//! at most the limit. A writer refuses to send a frame over its own limit.

use std::ops::Range;

use crate::{KvsError, Result};

/// Size of the length prefix of a frame.
pub const HEADER_LEN: usize = 4;

/// Default maximum payload length of a frame: 32 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 32 << 20;

/// What the start of a buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameStatus {
    /// Not a whole frame yet: read more bytes. `needed` is the total length of the frame when
    /// its header is in (so the reader may reserve it), else the header length.
    Incomplete {
        /// Bytes the whole frame (header included) needs.
        needed: usize,
    },
    /// A whole frame: its payload is `buf[payload]`, and the frame ends at `payload.end`.
    Complete {
        /// Where the payload lies in the buffer.
        payload: Range<usize>,
    },
}

/// Looks for a frame at the start of `buf`, refusing a length over `max_len`.
///
/// "Not enough bytes yet" is an ordinary answer ([`FrameStatus::Incomplete`]); only an
/// oversized length prefix is an error ([`KvsError::Protocol`]).
pub fn check(buf: &[u8], max_len: usize) -> Result<FrameStatus> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(FrameStatus::Incomplete { needed: HEADER_LEN });
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > max_len {
        return Err(oversized(len, max_len));
    }
    let end = HEADER_LEN + len;
    if buf.len() < end {
        Ok(FrameStatus::Incomplete { needed: end })
    } else {
        Ok(FrameStatus::Complete {
            payload: HEADER_LEN..end,
        })
    }
}

/// Starts a frame at the end of `out`: appends a placeholder header and returns where the frame
/// starts. Append the payload, then call [`finish`].
pub fn start(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    start
}

/// Finishes the frame begun at `start` by writing its length. A payload over `max_len` is
/// removed from `out` again and refused with [`KvsError::Protocol`].
pub fn finish(out: &mut Vec<u8>, start: usize, max_len: usize) -> Result<()> {
    let len = out.len() - start - HEADER_LEN;
    if len > max_len || u32::try_from(len).is_err() {
        out.truncate(start);
        return Err(oversized(len, max_len));
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes a frame's length prefix, checking it against `max_len`.
pub fn payload_len(header: [u8; HEADER_LEN], max_len: usize) -> Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max_len {
        return Err(oversized(len, max_len));
    }
    Ok(len)
}

fn oversized(len: usize, max_len: usize) -> KvsError {
    KvsError::Protocol(format!(
        "frame of {len} bytes is over the limit of {max_len} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_four_byte_big_endian_length() {
        let mut out = vec![0xaa];
        let begin = start(&mut out);
        out.extend_from_slice(b"hello");
        finish(&mut out, begin, 16).unwrap();
        assert_eq!(out, [0xaa, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(
            check(&out[1..], 16).unwrap(),
            FrameStatus::Complete { payload: 4..9 }
        );
    }

    #[test]
    fn partial_frames_ask_for_more_bytes() {
        assert_eq!(
            check(&[0, 0], 16).unwrap(),
            FrameStatus::Incomplete { needed: 4 }
        );
        assert_eq!(
            check(&[0, 0, 0, 3, 1], 16).unwrap(),
            FrameStatus::Incomplete { needed: 7 }
        );
    }

    #[test]
    fn oversized_length_prefix_is_refused_from_the_header_alone() {
        let err = check(&[0xff, 0xff, 0xff, 0xff], 1024).unwrap_err();
        assert!(matches!(err, KvsError::Protocol(_)), "{err}");
        assert!(payload_len([0, 0, 4, 1], 1024).is_err());
        assert_eq!(payload_len([0, 0, 4, 0], 1024).unwrap(), 1024);
    }

    #[test]
    fn writer_refuses_an_oversized_payload_and_leaves_buffer_as_it_was() {
        let mut out = b"keep".to_vec();
        let begin = start(&mut out);
        out.extend_from_slice(&[7; 20]);
        assert!(finish(&mut out, begin, 10).is_err());
        assert_eq!(out, b"keep");
    }
}
