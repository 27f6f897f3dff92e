//! The kvs wire protocol as a server reads it: frames cut from a byte stream
//! (`protocol::frame::check`) and each payload decoded as a request (`Request::decode`).
//!
//! Checks, besides "no panic, no hang, no huge allocation": a frame never claims more than the
//! limit, a payload lies inside the buffer, and any request that decodes re-encodes (no longer
//! than it came) to a payload that decodes to the same request.
#![no_main]

use kvs::protocol::{frame, FrameStatus, Request};
use libfuzzer_sys::fuzz_target;

/// A small limit, so that the fuzzer reaches "over the limit" as well as complete frames.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match frame::check(rest, MAX) {
            Ok(FrameStatus::Incomplete { needed }) => {
                assert!(needed > rest.len() && needed <= frame::HEADER_LEN + MAX);
                break;
            }
            Ok(FrameStatus::Complete { payload }) => {
                assert!(payload.end <= rest.len() && payload.len() <= MAX);
                let bytes = &rest[payload.clone()];
                if let Ok(request) = Request::decode(bytes) {
                    // Not byte for byte: bincode also accepts lengths written longer than
                    // needed (251 0 0 for 0), which mean the same.
                    let mut again = Vec::new();
                    request
                        .encode_frame(&mut again, MAX)
                        .expect("a decoded request re-encodes within the limit");
                    assert!(again.len() <= frame::HEADER_LEN + bytes.len());
                    assert_eq!(
                        Request::decode(&again[frame::HEADER_LEN..]).ok(),
                        Some(request)
                    );
                }
                rest = &rest[payload.end..];
            }
            Err(_) => break,
        }
    }
});
