//! RESP requests as a server reads them: the incremental `resp::frame::RequestParser`, fed the
//! input in pieces of varying size (as reads would deliver it).
//!
//! Checks, besides "no panic, no hang, no huge allocation": the parser gives the same answer
//! whether the bytes come at once or one piece at a time.
#![no_main]

use kvs::resp::frame::{Limits, RequestParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let limits = Limits::for_frame_len(4096);
    let mut whole = RequestParser::new(limits);
    let at_once = format!("{:?}", whole.parse(input));

    let mut pieces = RequestParser::new(limits);
    let step = usize::from(split).max(1);
    let mut end = 0;
    let mut last = format!("{:?}", pieces.parse(&[]));
    while end < input.len() {
        end = (end + step).min(input.len());
        let status = pieces.parse(&input[..end]);
        last = format!("{status:?}");
        if status.is_err() || !last.contains("Incomplete") {
            break;
        }
    }
    if end == input.len() {
        assert_eq!(
            at_once, last,
            "same bytes, different answer when split every {step}"
        );
    }
});
