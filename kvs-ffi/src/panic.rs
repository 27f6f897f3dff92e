//! The boundary every exported function goes through: no panic crosses into C, and every
//! failure becomes a status plus the thread's error message.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use crate::last_error;
use crate::status::kvs_status;

/// Runs `body`, turning its error or panic into a status and the thread's last error message.
pub(crate) fn guard(body: impl FnOnce() -> kvs::Result<()>) -> kvs_status {
    // AssertUnwindSafe: after a panic nothing `body` touched is used again by this call, and
    // the engine's own shared state is protected by its locks (a poisoned lock is an error
    // there, not undefined behaviour).
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => kvs_status::KVS_OK,
        Ok(Err(error)) => {
            last_error::set(&error.to_string());
            kvs_status::of(&error)
        }
        Err(payload) => {
            last_error::set(&format!(
                "internal error in kvs: {}",
                panic_message(&*payload)
            ));
            kvs_status::KVS_ERROR
        }
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic"
    }
}

#[cfg(test)]
mod tests {
    use super::guard;
    use crate::last_error;
    use crate::status::kvs_status;
    use std::ffi::CStr;

    fn last_message() -> String {
        let ptr = last_error::get();
        assert!(!ptr.is_null());
        // SAFETY: a non-NULL pointer from last_error::get is a live NUL-terminated string,
        // and nothing on this thread replaces it before it is copied here.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panic_becomes_kvs_error_with_message() {
        let status = guard(|| panic!("boom {}", 42));
        assert_eq!(status, kvs_status::KVS_ERROR);
        assert_eq!(last_message(), "internal error in kvs: boom 42");
    }

    #[test]
    fn error_sets_status_and_message() {
        let status = guard(|| Err(kvs::KvsError::KeyNotFound));
        assert_eq!(status, kvs_status::KVS_NOT_FOUND);
        assert_eq!(last_message(), "Key not found");
    }

    #[test]
    fn message_with_nul_is_not_truncated() {
        let status = guard(|| Err(kvs::KvsError::InvalidArgument("a\0b".into())));
        assert_eq!(status, kvs_status::KVS_INVALID_ARGUMENT);
        assert_eq!(last_message(), "invalid argument: a\\0b");
    }

    #[test]
    fn success_leaves_no_message_on_a_fresh_thread() {
        let ptr_is_null = std::thread::spawn(|| {
            assert_eq!(guard(|| Ok(())), kvs_status::KVS_OK);
            last_error::get().is_null()
        })
        .join()
        .unwrap_or(false);
        assert!(ptr_is_null);
    }
}
