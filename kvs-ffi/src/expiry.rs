//! Deadlines: keys that expire (`kvs_set_with_deadline()`, `kvs_expire_at()`,
//! `kvs_persist()`, `kvs_expiry()`), and the clock they are compared with
//! (`kvs_now_millis()`).

use std::ffi::c_int;

use kvs::{KeyExpiry, KvsEngine, KvsError};

use crate::panic::guard;
use crate::status::kvs_status;
use crate::{bytes, handle, kvs_db, null_argument};

/// The current time in milliseconds since the Unix epoch (the system's real-time clock):
/// the clock every deadline is compared with. A deadline is the first millisecond at which
/// its key is gone, so a key set to expire at `kvs_now_millis() + 1000` lives for a second.
/// A clock set before 1970 reads as 0. Safe to call from any thread at any time.
#[no_mangle]
pub extern "C" fn kvs_now_millis() -> u64 {
    kvs::now_millis()
}

/// Sets `key` to `value`, expiring at `deadline`, in milliseconds since the Unix epoch (see
/// `kvs_now_millis()`): from then on the key is gone for every read, as if removed. A
/// deadline that has passed removes the key. A plain `kvs_set()` later clears the deadline;
/// `kvs_compare_and_set()` keeps it.
///
/// Keys and values are as in `kvs_set()`; durable as `kvs_set()` is.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db`, NULL data with a length, key or value too
/// large, a read-only store), `KVS_IO_ERROR`, `KVS_ERROR`, `KVS_FORKED` (`db` was opened by
/// the parent of this process).
///
/// # Safety
/// As `kvs_set()`.
#[no_mangle]
pub unsafe extern "C" fn kvs_set_with_deadline(
    db: *mut kvs_db,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    deadline: u64,
) -> kvs_status {
    guard(|| {
        // SAFETY: the caller guarantees db, key and value as documented above.
        let (db, key, value) = unsafe {
            (
                handle(db)?,
                bytes(key, key_len, "key")?,
                bytes(value, value_len, "value")?,
            )
        };
        db.engine.set_with_deadline_bytes(key, value, deadline)
    })
}

/// Gives the existing `key` the deadline `deadline` (milliseconds since the Unix epoch),
/// keeping its value, and sets `*found_out` to 1; if the key is not set, writes nothing and
/// sets `*found_out` to 0. Both are `KVS_OK`. A deadline that has passed removes the key
/// (`*found_out` is 1). `*found_out` is 0 on every failure (when `found_out` is not NULL).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db` or `found_out`, NULL key with a length, a
/// read-only store), `KVS_IO_ERROR`, `KVS_ERROR`, `KVS_FORKED`.
///
/// # Safety
/// `db` is NULL or an open handle; `key` points to `key_len` readable bytes (or is NULL with
/// `key_len` 0); `found_out` is NULL or valid for writing an `int`.
#[no_mangle]
pub unsafe extern "C" fn kvs_expire_at(
    db: *mut kvs_db,
    key: *const u8,
    key_len: usize,
    deadline: u64,
    found_out: *mut c_int,
) -> kvs_status {
    // SAFETY: found_out is NULL or writable, as the caller guarantees.
    unsafe { clear_flag(found_out) };
    guard(|| {
        // SAFETY: the caller guarantees db and key as documented above.
        let (db, key) = unsafe { (handle(db)?, bytes(key, key_len, "key")?) };
        if found_out.is_null() {
            return Err(null_argument("found_out"));
        }
        let found = db.engine.expire_at_bytes(key, deadline)?;
        // SAFETY: checked non-NULL above; the caller guarantees it is writable.
        unsafe { *found_out = c_int::from(found) };
        Ok(())
    })
}

/// Removes the deadline of `key`, keeping its value, and sets `*persisted_out` to 1 if it had
/// one; to 0 if it had none or is not set (nothing is written). Both are `KVS_OK`.
/// `*persisted_out` is 0 on every failure (when `persisted_out` is not NULL).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db` or `persisted_out`, NULL key with a length, a
/// read-only store), `KVS_IO_ERROR`, `KVS_ERROR`, `KVS_FORKED`.
///
/// # Safety
/// `db` is NULL or an open handle; `key` points to `key_len` readable bytes (or is NULL with
/// `key_len` 0); `persisted_out` is NULL or valid for writing an `int`.
#[no_mangle]
pub unsafe extern "C" fn kvs_persist(
    db: *mut kvs_db,
    key: *const u8,
    key_len: usize,
    persisted_out: *mut c_int,
) -> kvs_status {
    // SAFETY: persisted_out is NULL or writable, as the caller guarantees.
    unsafe { clear_flag(persisted_out) };
    guard(|| {
        // SAFETY: the caller guarantees db and key as documented above.
        let (db, key) = unsafe { (handle(db)?, bytes(key, key_len, "key")?) };
        if persisted_out.is_null() {
            return Err(null_argument("persisted_out"));
        }
        let persisted = db.engine.persist_bytes(key)?;
        // SAFETY: checked non-NULL above; the caller guarantees it is writable.
        unsafe { *persisted_out = c_int::from(persisted) };
        Ok(())
    })
}

/// Whether `key` is set, and its deadline if it has one.
///
/// - The key is set with a deadline: `KVS_OK`, `*has_deadline_out` = 1 and `*deadline_out` =
///   the deadline (milliseconds since the Unix epoch, in the future when read; subtract
///   `kvs_now_millis()` for the time left).
/// - The key is set without a deadline: `KVS_OK`, `*has_deadline_out` = 0, `*deadline_out` = 0.
/// - The key is not set (or has expired): `KVS_NOT_FOUND`, both 0.
///
/// Both outputs are 0 on every failure (those that are not NULL).
///
/// Statuses: `KVS_NOT_FOUND`, `KVS_INVALID_ARGUMENT` (NULL `db`, `has_deadline_out` or
/// `deadline_out`, NULL key with a length), `KVS_IO_ERROR`, `KVS_ERROR`, `KVS_FORKED`.
///
/// # Safety
/// `db` is NULL or an open handle; `key` points to `key_len` readable bytes (or is NULL with
/// `key_len` 0); `has_deadline_out` is NULL or valid for writing an `int`, `deadline_out`
/// NULL or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn kvs_expiry(
    db: *mut kvs_db,
    key: *const u8,
    key_len: usize,
    has_deadline_out: *mut c_int,
    deadline_out: *mut u64,
) -> kvs_status {
    // SAFETY: each is NULL or writable, as the caller guarantees.
    unsafe {
        clear_flag(has_deadline_out);
        if !deadline_out.is_null() {
            *deadline_out = 0;
        }
    }
    guard(|| {
        // SAFETY: the caller guarantees db and key as documented above.
        let (db, key) = unsafe { (handle(db)?, bytes(key, key_len, "key")?) };
        if has_deadline_out.is_null() {
            return Err(null_argument("has_deadline_out"));
        }
        if deadline_out.is_null() {
            return Err(null_argument("deadline_out"));
        }
        match db.engine.expiry_bytes(key)? {
            KeyExpiry::Missing => Err(KvsError::KeyNotFound),
            KeyExpiry::Never => Ok(()),
            KeyExpiry::At(deadline) => {
                // SAFETY: both checked non-NULL above; the caller guarantees they are
                // writable.
                unsafe {
                    *has_deadline_out = 1;
                    *deadline_out = deadline;
                }
                Ok(())
            }
        }
    })
}

/// Sets `*flag` to 0, unless `flag` itself is NULL.
///
/// # Safety
/// `flag` is NULL or valid for writing an `int`.
unsafe fn clear_flag(flag: *mut c_int) {
    if !flag.is_null() {
        // SAFETY: non-NULL, and writable as the caller guarantees.
        unsafe { *flag = 0 };
    }
}
