//! The calling thread's last error message, returned by `kvs_last_error()`.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::ptr;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `message` as this thread's last error, replacing (and freeing) the previous one.
pub(crate) fn set(message: &str) {
    // A message with a NUL in it (a key shown in an error, say) would be cut short in C, so
    // NULs are spelled out; after that, CString::new cannot fail.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // try_with: during thread teardown the slot may already be gone; the message is then lost
    // rather than turned into a panic.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(message));
}

/// This thread's last error message, or NULL. The pointer stays valid until [`set`] replaces
/// the message or the thread exits.
pub(crate) fn get() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| match &*slot.borrow() {
            Some(message) => message.as_ptr(),
            None => ptr::null(),
        })
        .unwrap_or(ptr::null())
}
