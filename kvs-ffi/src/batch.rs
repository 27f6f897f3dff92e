//! Batches: writes gathered in a [`kvs_batch`] and applied all or nothing by
//! `kvs_apply_batch()` (over [`kvs::KvsEngine::apply_batch`]).

use kvs::{KvsEngine, WriteBatch};

use crate::panic::guard;
use crate::status::kvs_status;
use crate::{bytes, clear_out, handle, kvs_db, null_argument};

/// A list of writes (sets, sets with a deadline, removals) that `kvs_apply_batch()` applies
/// to a store all at once.
///
/// Opaque: create it with `kvs_batch_new()`, fill it with `kvs_batch_set()`,
/// `kvs_batch_set_with_deadline()` and `kvs_batch_remove()`, apply it with
/// `kvs_apply_batch()`, release it with `kvs_batch_free()`. It is the caller's, and belongs to
/// no store: applying does not consume or change it, so one batch may be applied again, or to
/// another store, and must be freed by the caller in every case (`kvs_batch_clear()` empties
/// it for reuse). The operations apply in the order they were added: a key written twice ends
/// with the later write.
///
/// A batch holds copies of its keys and values in memory until it is cleared or freed. It is
/// not locked: only one thread at a time may change it; `kvs_apply_batch()` only reads it, so
/// any number of threads may apply one batch at the same time while none changes it.
pub struct kvs_batch {
    batch: WriteBatch,
}

/// Creates an empty batch. On `KVS_OK`, `*batch_out` receives it, owned by the caller, to be
/// released with `kvs_batch_free()`; on failure, `*batch_out` is set to NULL (if `batch_out`
/// is not NULL itself).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `batch_out`).
///
/// # Safety
/// `batch_out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn kvs_batch_new(batch_out: *mut *mut kvs_batch) -> kvs_status {
    // SAFETY: batch_out is NULL or writable, as the caller guarantees.
    unsafe { clear_out(batch_out) };
    guard(|| {
        if batch_out.is_null() {
            return Err(null_argument("batch_out"));
        }
        let batch = Box::into_raw(Box::new(kvs_batch {
            batch: WriteBatch::new(),
        }));
        // SAFETY: non-NULL (checked above) and writable, as the caller guarantees.
        unsafe { *batch_out = batch };
        Ok(())
    })
}

/// Adds to `batch` a set of `key` to `value`, without a deadline (as `kvs_set()`, it clears
/// any deadline the key has when the batch is applied).
///
/// Keys and values are as in `kvs_set()` (bytes, NULL with a length of 0 for empty ones);
/// they are copied into the batch, so the caller's buffers may be reused at once. Their
/// sizes are checked when the batch is applied: a key or value over the limits fails that
/// `kvs_apply_batch()`, which then writes nothing.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `batch`, NULL data with a length).
///
/// # Safety
/// `batch` is NULL or a batch from `kvs_batch_new()` not yet freed, that no other thread is
/// using; `key` points to `key_len` readable bytes (or is NULL with `key_len` 0), and
/// likewise `value`.
#[no_mangle]
pub unsafe extern "C" fn kvs_batch_set(
    batch: *mut kvs_batch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> kvs_status {
    guard(|| {
        // SAFETY: the caller guarantees batch, key and value as documented above.
        let (batch, key, value) = unsafe {
            (
                batch_mut(batch)?,
                bytes(key, key_len, "key")?,
                bytes(value, value_len, "value")?,
            )
        };
        batch.batch.set(key, value);
        Ok(())
    })
}

/// Adds to `batch` a set of `key` to `value` that expires at `deadline`, in milliseconds
/// since the Unix epoch (see `kvs_now_millis()`). A deadline that has passed when the batch
/// is applied removes the key. Otherwise as `kvs_batch_set()`.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `batch`, NULL data with a length).
///
/// # Safety
/// As `kvs_batch_set()`.
#[no_mangle]
pub unsafe extern "C" fn kvs_batch_set_with_deadline(
    batch: *mut kvs_batch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    deadline: u64,
) -> kvs_status {
    guard(|| {
        // SAFETY: the caller guarantees batch, key and value as documented above.
        let (batch, key, value) = unsafe {
            (
                batch_mut(batch)?,
                bytes(key, key_len, "key")?,
                bytes(value, value_len, "value")?,
            )
        };
        batch.batch.set_with_deadline(key, value, deadline);
        Ok(())
    })
}

/// Adds to `batch` a removal of `key` (copied into the batch). Unlike `kvs_remove()`,
/// removing a key that is not set is not an error in a batch: it does nothing.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `batch`, NULL key with a length).
///
/// # Safety
/// `batch` is as in `kvs_batch_set()`; `key` points to `key_len` readable bytes (or is NULL
/// with `key_len` 0).
#[no_mangle]
pub unsafe extern "C" fn kvs_batch_remove(
    batch: *mut kvs_batch,
    key: *const u8,
    key_len: usize,
) -> kvs_status {
    guard(|| {
        // SAFETY: the caller guarantees batch and key as documented above.
        let (batch, key) = unsafe { (batch_mut(batch)?, bytes(key, key_len, "key")?) };
        batch.batch.remove(key);
        Ok(())
    })
}

/// Sets `*len_out` to the number of operations in `batch` (0 on failure, when `len_out` is
/// not NULL).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `batch` or `len_out`).
///
/// # Safety
/// `batch` is NULL or a batch from `kvs_batch_new()` not yet freed, that no other thread
/// changes meanwhile; `len_out` is NULL or valid for writing a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn kvs_batch_len(batch: *const kvs_batch, len_out: *mut usize) -> kvs_status {
    if !len_out.is_null() {
        // SAFETY: non-NULL, and writable as the caller guarantees.
        unsafe { *len_out = 0 };
    }
    guard(|| {
        // SAFETY: batch is NULL or a live batch, as the caller guarantees.
        let batch = unsafe { batch_ref(batch)? };
        if len_out.is_null() {
            return Err(null_argument("len_out"));
        }
        // SAFETY: checked non-NULL above; the caller guarantees it is writable.
        unsafe { *len_out = batch.batch.len() };
        Ok(())
    })
}

/// Removes every operation from `batch`, which can then be filled again (it keeps its memory
/// for the next operations).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `batch`).
///
/// # Safety
/// `batch` is as in `kvs_batch_set()`.
#[no_mangle]
pub unsafe extern "C" fn kvs_batch_clear(batch: *mut kvs_batch) -> kvs_status {
    guard(|| {
        // SAFETY: batch is NULL or a live batch used by this thread only, as guaranteed.
        let batch = unsafe { batch_mut(batch)? };
        batch.batch.clear();
        Ok(())
    })
}

/// Frees a batch from `kvs_batch_new()`, applied or not. `kvs_batch_free(NULL)` does nothing.
/// May be called before or after the stores it was applied to are closed.
///
/// # Safety
/// `batch` is NULL or a batch from `kvs_batch_new()` not yet freed, that no other thread is
/// using; it must not be used again.
#[no_mangle]
pub unsafe extern "C" fn kvs_batch_free(batch: *mut kvs_batch) {
    if batch.is_null() {
        return;
    }
    // Dropping plain memory cannot panic (allocation failures abort), so no guard is needed.
    // SAFETY: batch came from Box::into_raw in kvs_batch_new and the caller hands it back
    // once.
    drop(unsafe { Box::from_raw(batch) });
}

/// Applies every operation of `batch` to the store, in order, as one atomic write: on
/// `KVS_OK` all of it is in the store, acknowledged as `kvs_set()` is (it has reached the
/// operating system); on any other status none of it is. If the process dies during the call,
/// reopening the store finds all of the batch or none of it, never a part. Other threads
/// reading the store see it before the batch or after it, never in between.
///
/// `batch` is only read: it is not consumed, emptied or freed (the caller still frees it with
/// `kvs_batch_free()`, and may apply it again). An empty batch writes nothing.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db` or `batch`, a key or value in the batch over
/// the size limits, a batch of several operations over the engine's limit (with `kvs`, 64 MiB
/// of records), a read-only store), `KVS_IO_ERROR`, `KVS_ERROR`, `KVS_FORKED` (`db` was
/// opened by the parent of this process).
///
/// # Safety
/// `db` is NULL or an open handle; `batch` is NULL or a batch from `kvs_batch_new()` not yet
/// freed, that no thread changes during the call.
#[no_mangle]
pub unsafe extern "C" fn kvs_apply_batch(db: *mut kvs_db, batch: *const kvs_batch) -> kvs_status {
    guard(|| {
        // SAFETY: the caller guarantees db and batch as documented above.
        let (db, batch) = unsafe { (handle(db)?, batch_ref(batch)?) };
        db.engine.apply_batch(&batch.batch)
    })
}

/// The batch behind `batch`, for reading; an invalid-argument error for NULL.
///
/// # Safety
/// `batch` is NULL or a live batch from `kvs_batch_new()` that nobody changes while the
/// returned reference is used.
unsafe fn batch_ref<'a>(batch: *const kvs_batch) -> kvs::Result<&'a kvs_batch> {
    // SAFETY: non-NULL batches are live boxes from kvs_batch_new, as the caller guarantees.
    unsafe { batch.as_ref() }.ok_or_else(|| null_argument("batch"))
}

/// The batch behind `batch`, for changing; an invalid-argument error for NULL.
///
/// # Safety
/// `batch` is NULL or a live batch from `kvs_batch_new()` that no other thread uses while
/// the returned reference is used.
unsafe fn batch_mut<'a>(batch: *mut kvs_batch) -> kvs::Result<&'a mut kvs_batch> {
    // SAFETY: non-NULL batches are live boxes from kvs_batch_new, used by one thread at a
    // time, as the caller guarantees.
    unsafe { batch.as_mut() }.ok_or_else(|| null_argument("batch"))
}
