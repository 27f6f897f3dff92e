//! What decoding a kvs protocol message allocates, counted by a global allocator: a list in a
//! request or reply (ops, keys, values) is borrowed from the payload, so however many items a
//! payload holds or claims, the decoder allocates nothing for them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kvs::protocol::{List, Op, Request, Response, DEFAULT_MAX_FRAME_LEN};

/// The system allocator, counting the bytes each thread asks for (per thread, so that tests
/// running side by side do not count each other).
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counter is a thread-local Cell, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: the caller's layout is passed on as it came.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size));
        // SAFETY: as for `dealloc`, and the caller's new size is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The bytes this thread allocates while `f` runs.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

fn payload(encode: impl FnOnce(&mut Vec<u8>) -> kvs::Result<()>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out).unwrap();
    out.split_off(4)
}

#[test]
fn decoding_many_items_allocates_nothing() {
    let keys: Vec<Vec<u8>> = (0..100_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let ops: Vec<Op<'_>> = borrowed
        .iter()
        .map(|key| Op::Set {
            key,
            value: key,
            deadline: Some(1),
        })
        .collect();
    let values: Vec<Option<&[u8]>> = borrowed.iter().map(|k| Some(*k)).collect();
    let max = DEFAULT_MAX_FRAME_LEN;

    let get_many = payload(|o| {
        Request::GetMany {
            keys: List::new(&borrowed),
        }
        .encode_frame(o, max)
    });
    let (decoded, bytes) = allocated_by(|| Request::decode(&get_many));
    assert!(decoded.is_ok());
    assert_eq!(bytes, 0, "GetMany of 100 000 keys");

    let batch = payload(|o| {
        Request::ApplyBatch {
            ops: List::new(&ops),
        }
        .encode_frame(o, max)
    });
    let (decoded, bytes) = allocated_by(|| Request::decode(&batch));
    assert!(decoded.is_ok());
    assert_eq!(bytes, 0, "ApplyBatch of 100 000 ops");

    let reply = payload(|o| Response::Values(List::new(&values)).encode_frame(o, max));
    let (decoded, bytes) = allocated_by(|| Response::decode(&reply));
    assert!(decoded.is_ok());
    assert_eq!(bytes, 0, "Values of 100 000 values");

    let page = payload(|o| {
        Response::Page {
            cursor: 9,
            keys: List::new(&borrowed),
        }
        .encode_frame(o, max)
    });
    let (decoded, bytes) = allocated_by(|| Response::decode(&page));
    let Ok(Response::Page { keys: decoded, .. }) = decoded else {
        panic!("not a page");
    };
    assert_eq!(bytes, 0, "Page of 100 000 keys");
    // Walking the decoded list allocates nothing either.
    let (walked, bytes) = allocated_by(|| decoded.iter().count());
    assert_eq!((walked, bytes), (100_000, 0));
}

#[test]
fn a_length_claiming_more_than_the_payload_holds_allocates_only_the_error() {
    // Lists whose length claims 2^62 bytes (and one claiming 2^32) in a payload of 10 bytes:
    // refused as malformed. The only allocation is the error's message, whatever the claim.
    let claims: [&[u8]; 4] = [
        &[0x04, 253, 0, 0, 0, 0, 0, 0, 0, 0x40],
        &[0x05, 253, 0, 0, 0, 0, 0, 0, 0, 0x40],
        &[0x05, 253, 0, 0, 0, 0, 1, 0, 0, 0],
        &[0x05, 252, 0xff, 0xff, 0xff, 0xff],
    ];
    for claim in claims {
        let (decoded, bytes) = allocated_by(|| Request::decode(claim));
        let err = decoded.unwrap_err();
        assert!(
            matches!(err, kvs::KvsError::Protocol(_)),
            "{claim:?}: {err}"
        );
        assert!(bytes < 1024, "{claim:?}: {bytes} bytes allocated");
    }
    let (decoded, bytes) =
        allocated_by(|| Response::decode(&[0x06, 0, 253, 0, 0, 0, 0, 0, 0, 0, 0x40]));
    assert!(decoded.is_err());
    assert!(bytes < 1024, "{bytes} bytes allocated");
}

/// The counter counts: a decode that fails allocates its error message.
#[test]
fn the_allocation_counter_sees_allocations() {
    let (decoded, bytes) = allocated_by(|| Request::decode(&[0x0c]));
    assert!(decoded.is_err());
    assert!(bytes > 0);
}
