//! libkvs: the kvs key/value store as a C library.
//!
//! The C API is declared in `include/kvs.h`, which cbindgen generates from this crate (the doc
//! comments below become the header's comments, so they are written for C programmers). Every
//! call goes to [`kvs::AnyEngine`] through its `*_bytes` methods: there is no second copy of
//! engine logic here.
//!
//! # Layout
//! - `lib.rs`: the exported functions on single keys, opening and closing, and the opaque
//!   [`kvs_db`] handle.
//! - `batch.rs`: [`kvs_batch`](batch::kvs_batch), writes applied all or nothing.
//! - `expiry.rs`: deadlines (keys that expire) and the clock they are compared with.
//! - `scan.rs`: walking the keys, a page at a time: `kvs_scan()` and the `kvs_iter` iterator.
//! - `status.rs`: [`kvs_status`] and the one mapping from `KvsError` to it.
//! - `panic.rs`: the guard every call runs in; no panic crosses into C.
//! - `last_error.rs`: the thread-local message behind `kvs_last_error()`.
//!
//! # Names
//! The items are named exactly as C sees them (`kvs_db`, `KVS_OK`), hence the allowed
//! non-Rust naming.
#![deny(missing_docs)]
#![allow(non_camel_case_types)]

mod batch;
mod expiry;
mod last_error;
mod panic;
mod scan;
mod status;

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::{ptr, slice};

use kvs::{AnyEngine, EngineKind, KvStoreOptions, KvsEngine, KvsError, SyncPolicy};

pub use crate::batch::{
    kvs_apply_batch, kvs_batch, kvs_batch_clear, kvs_batch_free, kvs_batch_len, kvs_batch_new,
    kvs_batch_remove, kvs_batch_set, kvs_batch_set_with_deadline,
};
pub use crate::expiry::{
    kvs_expire_at, kvs_expiry, kvs_now_millis, kvs_persist, kvs_set_with_deadline,
};
use crate::panic::guard;
pub use crate::scan::{
    kvs_bytes, kvs_iter, kvs_iter_free, kvs_iter_new, kvs_iter_next, kvs_scan, kvs_scan_page,
    kvs_scan_page_free,
};
pub use crate::status::kvs_status;

/// An open store.
///
/// Opaque: create it with `kvs_open()` or `kvs_open_engine()`, release it with `kvs_close()`.
/// One handle may be used by any number of threads at the same time (every function but
/// `kvs_close()` may be called concurrently on it); only one open handle per directory may
/// exist at a time, in this process or any other (except read-only handles, any number of
/// which may be open together: see `kvs_options.read_only`). `kvs_close()` must not run while another
/// thread is still using the handle, and the handle must not be used after it.
///
/// A handle belongs to the process that opened it. In a child made by `fork()`, every call on
/// an inherited handle returns `KVS_FORKED` (touching nothing), and `kvs_close()` on it only
/// frees the child's copy; the parent goes on unharmed. To use the store in the child, open
/// it there once the parent has closed it, or in a fresh process.
pub struct kvs_db {
    engine: AnyEngine,
}

/// Opens the store in directory `path`, creating the directory if needed, with the engine
/// recorded there by an earlier open, or the `kvs` engine for a new directory.
///
/// `path` is a NUL-terminated path (any bytes; it is not required to be UTF-8), only read
/// during the call. On `KVS_OK`, `*db_out` receives a new handle, owned by the caller, to be
/// released with `kvs_close()`. On any other status, `*db_out` is set to NULL (if `db_out`
/// itself is not NULL).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `path` or `db_out`, empty path), `KVS_IO_ERROR`
/// (`path` is a regular file, cannot be created, or the store is open elsewhere),
/// `KVS_CORRUPTION` (damaged data), `KVS_FORKED` (a `sled` store, in a forked child of a
/// process that uses sled).
///
/// # Safety
/// `path` is NULL or a valid NUL-terminated string; `db_out` is NULL or valid for writing a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn kvs_open(path: *const c_char, db_out: *mut *mut kvs_db) -> kvs_status {
    // SAFETY: forwarded with the caller's guarantees; no engine name means the recorded one.
    unsafe { open(path, None, KvStoreOptions::default(), db_out) }
}

/// Opens the store in directory `path` with the engine named `engine`: `"kvs"` or `"sled"`.
///
/// A new directory records the engine; opening a directory that records another engine fails
/// with `KVS_INVALID_ARGUMENT` and touches nothing. A directory whose `engine` file is lost is
/// judged by the data files in it: the other engine's data is refused the same way. Otherwise as `kvs_open()`; an unknown
/// engine name or a NULL `engine` is `KVS_INVALID_ARGUMENT`.
///
/// # Safety
/// `path` and `engine` are NULL or valid NUL-terminated strings; `db_out` is NULL or valid for
/// writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn kvs_open_engine(
    path: *const c_char,
    engine: *const c_char,
    db_out: *mut *mut kvs_db,
) -> kvs_status {
    if engine.is_null() {
        // SAFETY: db_out is NULL or writable, as the caller guarantees.
        unsafe { clear_out(db_out) };
        return guard(|| Err(null_argument("engine")));
    }
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { open(path, Some(engine), KvStoreOptions::default(), db_out) }
}

/// Sets `key` to `value`, replacing any previous value.
///
/// Keys and values are arbitrary bytes (embedded NULs are fine), only read during the call.
/// A NULL pointer with a length of 0 is an empty key or value; a NULL pointer with a non-zero
/// length is `KVS_INVALID_ARGUMENT`. When this returns `KVS_OK`, the write has reached the
/// operating system and survives a crash of the process.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db`, NULL data with a length, key or value too
/// large), `KVS_IO_ERROR`, `KVS_ERROR`, `KVS_FORKED` (`db` was opened by the parent of this
/// process).
///
/// # Safety
/// `db` is NULL or a handle from `kvs_open*()` not yet closed; `key` points to `key_len`
/// readable bytes (or is NULL with `key_len` 0), and likewise `value`.
#[no_mangle]
pub unsafe extern "C" fn kvs_set(
    db: *mut kvs_db,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
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
        db.engine.set_bytes(key, value)
    })
}

/// Looks up `key`.
///
/// On `KVS_OK`, `*value_out` receives a new copy of the value and `*value_len_out` its length
/// in bytes. The copy is owned by the caller, is not NUL-terminated, stays valid until it is
/// passed to `kvs_value_free()` with the same length (even after `kvs_close()`), and must not be
/// passed to `free()`. An empty value gives `*value_out` = NULL and `*value_len_out` = 0.
///
/// A missing key gives `KVS_NOT_FOUND` with `*value_out` = NULL and `*value_len_out` = 0, as
/// does every other failure (when those pointers are not NULL themselves).
///
/// Statuses: `KVS_NOT_FOUND`, `KVS_INVALID_ARGUMENT` (NULL `db`, `value_out` or
/// `value_len_out`, NULL key with a length), `KVS_IO_ERROR`, `KVS_CORRUPTION` (the stored value
/// failed its checksum: a value never comes back wrong), `KVS_FORKED` (`db` was opened by the
/// parent of this process).
///
/// # Safety
/// `db` is NULL or an open handle; `key` points to `key_len` readable bytes (or is NULL with
/// `key_len` 0); `value_out` and `value_len_out` are NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn kvs_get(
    db: *mut kvs_db,
    key: *const u8,
    key_len: usize,
    value_out: *mut *mut u8,
    value_len_out: *mut usize,
) -> kvs_status {
    // Set the outputs first, so that every failure (even a panic) leaves them NULL / 0.
    // SAFETY: each is NULL or valid for writing, as the caller guarantees.
    unsafe {
        clear_out(value_out);
        if !value_len_out.is_null() {
            *value_len_out = 0;
        }
    }
    guard(|| {
        // SAFETY: the caller guarantees db and key as documented above.
        let (db, key) = unsafe { (handle(db)?, bytes(key, key_len, "key")?) };
        if value_out.is_null() {
            return Err(null_argument("value_out"));
        }
        if value_len_out.is_null() {
            return Err(null_argument("value_len_out"));
        }
        let value = db.engine.get_bytes(key)?.ok_or(KvsError::KeyNotFound)?;
        if value.is_empty() {
            return Ok(());
        }
        let len = value.len();
        // A boxed slice has exactly `len` bytes allocated, so kvs_value_free can rebuild it
        // from the pointer and the length alone.
        let value = Box::into_raw(value.into_boxed_slice()).cast::<u8>();
        // SAFETY: both checked non-NULL above; the caller guarantees they are writable.
        unsafe {
            *value_out = value;
            *value_len_out = len;
        }
        Ok(())
    })
}

/// Looks up `count` keys at one instant: no write (nor batch) lands between two of the
/// reads. Key `i` is the `key_lens[i]` bytes at `keys[i]` (NULL with a length of 0 is the
/// empty key), only read during the call.
///
/// The three output arrays have room for `count` entries each, written by kvs. On `KVS_OK`,
/// for each key `i`: `found_out[i]` is 1 if it is set, with `values_out[i]` and
/// `value_lens_out[i]` a new copy of its value exactly as `kvs_get()` gives one (owned by the
/// caller, freed with `kvs_value_free(values_out[i], value_lens_out[i])`; NULL and 0 for an
/// empty value); `found_out[i]` is 0 if it is not set, with NULL and 0. On any other status,
/// every entry is NULL, 0 and 0 (nothing to free; when the arrays are not NULL). A `count`
/// of 0 reads nothing (the array pointers may then be NULL).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db`, NULL array with a non-zero `count`, a NULL
/// key with a length, `count` too large), `KVS_IO_ERROR`, `KVS_CORRUPTION` (a stored value
/// failed its checksum), `KVS_ERROR`, `KVS_FORKED` (`db` was opened by the parent of this
/// process).
///
/// # Safety
/// `db` is NULL or an open handle; `keys` and `key_lens` are NULL or point to `count`
/// readable entries, each `keys[i]` pointing to `key_lens[i]` readable bytes (or NULL with
/// length 0); `values_out`, `value_lens_out` and `found_out` are NULL or point to `count`
/// writable entries.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kvs_get_many(
    db: *mut kvs_db,
    count: usize,
    keys: *const *const u8,
    key_lens: *const usize,
    values_out: *mut *mut u8,
    value_lens_out: *mut usize,
    found_out: *mut c_int,
) -> kvs_status {
    // No slice of more than isize::MAX bytes may exist; a pointer is the largest entry.
    if count > isize::MAX as usize / std::mem::size_of::<*const u8>() {
        return guard(|| {
            Err(KvsError::InvalidArgument(format!(
                "count {count} is too large"
            )))
        });
    }
    // Clear the outputs first, so that every failure (even a panic) leaves them NULL / 0.
    // SAFETY: each array is NULL or has `count` writable entries, as the caller guarantees;
    // count fits in isize for them (checked above).
    let (mut values, mut value_lens, mut found) = unsafe {
        (
            out_slice(values_out, count),
            out_slice(value_lens_out, count),
            out_slice(found_out, count),
        )
    };
    if let Some(slots) = values.as_deref_mut() {
        slots.fill(ptr::null_mut());
    }
    if let Some(slots) = value_lens.as_deref_mut() {
        slots.fill(0);
    }
    if let Some(slots) = found.as_deref_mut() {
        slots.fill(0);
    }
    guard(move || {
        // SAFETY: db is NULL or an open handle, as the caller guarantees.
        let db = unsafe { handle(db)? };
        if count == 0 {
            return Ok(());
        }
        let (Some(values), Some(value_lens), Some(found)) = (values, value_lens, found) else {
            return Err(null_argument(
                match (values_out.is_null(), value_lens_out.is_null()) {
                    (true, _) => "values_out",
                    (false, true) => "value_lens_out",
                    (false, false) => "found_out",
                },
            ));
        };
        if keys.is_null() {
            return Err(null_argument("keys"));
        }
        if key_lens.is_null() {
            return Err(null_argument("key_lens"));
        }
        // SAFETY: both non-NULL with `count` readable entries, as the caller guarantees;
        // count fits in isize for them (checked above).
        let (key_ptrs, lens) = unsafe {
            (
                slice::from_raw_parts(keys, count),
                slice::from_raw_parts(key_lens, count),
            )
        };
        let mut key_slices = Vec::with_capacity(count);
        for (i, (&key, &len)) in key_ptrs.iter().zip(lens).enumerate() {
            // SAFETY: keys[i] points to key_lens[i] readable bytes (or is NULL with 0), as
            // the caller guarantees.
            key_slices.push(unsafe { bytes(key, len, &format!("keys[{i}]"))? });
        }
        let read = db.engine.get_many_bytes(&key_slices)?;
        if read.len() != count {
            // Not the caller's fault: the engine broke its contract.
            return Err(KvsError::Engine {
                engine: db.engine.kind().name(),
                message: format!("answered {} values for {count} keys", read.len()),
            });
        }
        for (i, value) in read.into_iter().enumerate() {
            let Some(value) = value else { continue };
            found[i] = 1;
            if value.is_empty() {
                continue;
            }
            value_lens[i] = value.len();
            // A boxed slice of exactly its length, as kvs_get hands out (see there).
            values[i] = Box::into_raw(value.into_boxed_slice()).cast::<u8>();
        }
        Ok(())
    })
}

/// The `count` entries at `out` as a mutable slice, or `None` for NULL (or a count of 0).
///
/// # Safety
/// `out` is NULL or points to `count` writable entries, not used otherwise while the slice
/// lives; `count * size_of::<T>()` fits in `isize`.
unsafe fn out_slice<'a, T>(out: *mut T, count: usize) -> Option<&'a mut [T]> {
    if out.is_null() || count == 0 {
        return None;
    }
    // SAFETY: non-NULL with `count` writable entries, as the caller guarantees.
    Some(unsafe { slice::from_raw_parts_mut(out, count) })
}

/// Removes `key`. A missing key is `KVS_NOT_FOUND`.
///
/// `key` is as in `kvs_set()`. When this returns `KVS_OK`, the removal has reached the
/// operating system.
///
/// Statuses: `KVS_NOT_FOUND`, `KVS_INVALID_ARGUMENT` (NULL `db`, NULL key with a length),
/// `KVS_IO_ERROR`, `KVS_ERROR`, `KVS_FORKED` (`db` was opened by the parent of this process).
///
/// # Safety
/// `db` is NULL or an open handle; `key` points to `key_len` readable bytes (or is NULL with
/// `key_len` 0).
#[no_mangle]
pub unsafe extern "C" fn kvs_remove(db: *mut kvs_db, key: *const u8, key_len: usize) -> kvs_status {
    guard(|| {
        // SAFETY: the caller guarantees db and key as documented above.
        let (db, key) = unsafe { (handle(db)?, bytes(key, key_len, "key")?) };
        db.engine.remove_bytes(key)
    })
}

/// Frees a value returned by `kvs_get()` or `kvs_get_many()`. `value_len` must be the length
/// returned with it. `kvs_value_free(NULL, 0)` does nothing. May be called from any thread,
/// before or after the handle is closed.
///
/// # Safety
/// `value` is NULL or a value from `kvs_get()` or `kvs_get_many()` not yet freed, with its
/// length.
#[no_mangle]
pub unsafe extern "C" fn kvs_value_free(value: *mut u8, value_len: usize) {
    if value.is_null() {
        return;
    }
    // Freeing cannot panic (allocation failures abort), so no guard is needed here.
    // SAFETY: kvs_get leaked exactly a Box<[u8]> of `value_len` bytes at `value`, and the caller
    // passes it back once.
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(value, value_len)) });
}

/// Closes a handle: waits for the store's background work to stop and releases the directory,
/// which can be opened again right away. Every acknowledged write is already on its way to
/// disk. An iterator from `kvs_iter_new()` still alive keeps the store open until it is freed
/// (free iterators first); pages, values and batches do not. `kvs_close(NULL)` does nothing.
/// In a child of `fork()`, closing a handle the parent opened only frees the child's copy: it
/// waits for nothing and touches neither the files nor the parent's lock.
///
/// # Safety
/// `db` is NULL or an open handle that no other thread is using; it must not be used again.
#[no_mangle]
pub unsafe extern "C" fn kvs_close(db: *mut kvs_db) {
    if db.is_null() {
        return;
    }
    // SAFETY: db came from Box::into_raw in open() and the caller hands it back once.
    let db = unsafe { Box::from_raw(db) };
    // A panic while the engine shuts down is reported through kvs_last_error(); the handle is
    // gone either way.
    let _ = guard(move || {
        drop(db);
        Ok(())
    });
}

/// The message of the calling thread's last failed kvs call (any status other than `KVS_OK`),
/// or NULL if no kvs call has failed on this thread.
///
/// The string is owned by kvs, thread-local, and valid until the next kvs call on the same
/// thread (other than `kvs_last_error()` and `kvs_version()`) or the thread's exit; copy it to
/// keep it. Successful calls do not clear it. Its wording is for people, not for parsing: test
/// the returned status instead.
#[no_mangle]
pub extern "C" fn kvs_last_error() -> *const c_char {
    last_error::get()
}

/// The version of kvs, e.g. `"0.1.0"`: a static NUL-terminated string owned by kvs, never to
/// be freed. Safe to call from any thread at any time.
#[no_mangle]
pub extern "C" fn kvs_version() -> *const c_char {
    VERSION.as_ptr()
}

/// Writes an online checkpoint of the store into directory `dest`: a consistent copy holding
/// exactly the writes acknowledged before one point in time during the call, while other
/// threads go on using `db`. `dest` then opens with `kvs_open()` as an ordinary store of the
/// same engine, independent of this one; the copy is durable when this returns `KVS_OK`.
///
/// `dest` is a NUL-terminated path (any bytes), only read during the call. It must not exist,
/// or be an empty directory: anything else is `KVS_IO_ERROR` and touches nothing. If the call
/// fails, what it wrote is removed; if the process dies during it, `dest` is incomplete and
/// must be deleted. With the `kvs` engine, writers wait only a moment (closed log files are
/// hard-linked, the active one copied up to the point in time); with `sled`, writes through
/// `db` wait for the whole copy.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db` or `dest`, empty `dest`), `KVS_IO_ERROR`
/// (`dest` exists and is not an empty directory, or cannot be written), `KVS_CORRUPTION` (a
/// log file of the store is shorter than its records), `KVS_ERROR` (the store refuses writes
/// after a failed fsync), `KVS_FORKED` (`db` was opened by the parent of this process).
///
/// # Safety
/// `db` is NULL or an open handle; `dest` is NULL or a valid NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn kvs_checkpoint(db: *mut kvs_db, dest: *const c_char) -> kvs_status {
    guard(|| {
        // SAFETY: db is NULL or an open handle, as the caller guarantees.
        let db = unsafe { handle(db)? };
        if dest.is_null() {
            return Err(null_argument("dest"));
        }
        // SAFETY: dest is non-NULL and NUL-terminated, as the caller guarantees.
        let dest = unsafe { CStr::from_ptr(dest) }.to_bytes();
        if dest.is_empty() {
            return Err(KvsError::InvalidArgument("dest is empty".into()));
        }
        db.engine.checkpoint(Path::new(OsStr::from_bytes(dest)))
    })
}

/// The workspace version (the same as `kvs::VERSION`, checked by a test), NUL-terminated at
/// compile time so that kvs_version never allocates or fails.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(version) => version,
        Err(_) => panic!("the crate version contains a NUL byte"),
    };

/// Opens `path` with the named engine (or the recorded one) and hands the handle to `db_out`.
///
/// # Safety
/// As `kvs_open_engine`; `engine` is `None` for `kvs_open`, else a non-NULL name.
unsafe fn open(
    path: *const c_char,
    engine: Option<*const c_char>,
    options: KvStoreOptions,
    db_out: *mut *mut kvs_db,
) -> kvs_status {
    // SAFETY: db_out is NULL or writable, as the caller guarantees.
    unsafe { clear_out(db_out) };
    guard(|| {
        if db_out.is_null() {
            return Err(null_argument("db_out"));
        }
        if path.is_null() {
            return Err(null_argument("path"));
        }
        // SAFETY: path is non-NULL and NUL-terminated, as the caller guarantees.
        let path = unsafe { CStr::from_ptr(path) }.to_bytes();
        if path.is_empty() {
            return Err(KvsError::InvalidArgument("path is empty".into()));
        }
        let path = PathBuf::from(OsStr::from_bytes(path));
        let kind = match engine {
            None => None,
            Some(name) => {
                // SAFETY: the engine name is non-NULL (checked by the caller of this function)
                // and NUL-terminated.
                let name = unsafe { CStr::from_ptr(name) };
                let name = name
                    .to_str()
                    .map_err(|_| KvsError::UnknownEngine(name.to_string_lossy().into_owned()))?;
                Some(name.parse::<EngineKind>()?)
            }
        };
        let engine = AnyEngine::open_with(path, kind, options)?;
        let db = Box::into_raw(Box::new(kvs_db { engine }));
        // SAFETY: db_out is non-NULL (checked above) and writable.
        unsafe { *db_out = db };
        Ok(())
    })
}

/// Sets `*out` to NULL, unless `out` itself is NULL.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
pub(crate) unsafe fn clear_out<T>(out: *mut *mut T) {
    if !out.is_null() {
        // SAFETY: non-NULL, and writable as the caller guarantees.
        unsafe { *out = ptr::null_mut() };
    }
}

/// The handle behind `db`, or an invalid-argument error for NULL.
///
/// # Safety
/// `db` is NULL or an open handle, which outlives the returned reference.
pub(crate) unsafe fn handle<'a>(db: *mut kvs_db) -> kvs::Result<&'a kvs_db> {
    // SAFETY: non-NULL handles are live boxes from open(), as the caller guarantees; only
    // shared references are made, because AnyEngine is Sync and many threads share a handle.
    unsafe { db.cast_const().as_ref() }.ok_or_else(|| null_argument("db"))
}

/// The `len` bytes at `data`: empty for a length of 0 (whatever `data` is), an error for NULL
/// with a length.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes that outlive the returned slice and are not
/// written meanwhile.
pub(crate) unsafe fn bytes<'a>(data: *const u8, len: usize, what: &str) -> kvs::Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(KvsError::InvalidArgument(format!(
            "{what} is NULL but {what}_len is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(KvsError::InvalidArgument(format!(
            "{what}_len {len} is too large"
        )));
    }
    // SAFETY: non-NULL, len fits in isize, and the caller guarantees len readable bytes.
    Ok(unsafe { slice::from_raw_parts(data, len) })
}

pub(crate) fn null_argument(name: &str) -> KvsError {
    KvsError::InvalidArgument(format!("{name} is NULL"))
}

/// Atomically: if the value of `key` is the expected one, replaces it with the new one and
/// sets `*swapped_out` to 1; otherwise changes nothing and sets `*swapped_out` to 0. Both
/// outcomes are `KVS_OK`: a value that does not match is not an error.
///
/// The expected state is "absent" when `expected_present` is 0 (`expected` and
/// `expected_len` are then not read), else the `expected_len` bytes at `expected`. Likewise
/// the new state: `new_value_present` 0 removes the key, else it is set to the
/// `new_value_len` bytes at `new_value`. Bytes are as in `kvs_set()` (only read during the
/// call; NULL with a length of 0 is an empty value, which is present, not absent). Expecting
/// absence and asking for absence on a missing key succeeds without writing.
///
/// Atomic against every other write of `key` through this handle, from any thread (`kvs_set`,
/// `kvs_remove`, this). A swap is acknowledged as `kvs_set()` is: it has reached the operating
/// system. No swap writes nothing. To increment a counter, read it with `kvs_get()`, compute
/// the new value, and call this with the value read as expected; retry while `*swapped_out`
/// is 0.
///
/// `*swapped_out` is set to 0 on every failure (when `swapped_out` is not NULL).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db` or `swapped_out`, NULL data with a length,
/// key or new value too large), `KVS_IO_ERROR`, `KVS_CORRUPTION` (the stored value failed its
/// checksum), `KVS_ERROR`, `KVS_FORKED` (`db` was opened by the parent of this process).
///
/// # Safety
/// `db` is NULL or an open handle; `key` points to `key_len` readable bytes (or is NULL with
/// `key_len` 0), and likewise `expected` (when `expected_present` is not 0) and `new_value`
/// (when `new_value_present` is not 0); `swapped_out` is NULL or valid for writing an `int`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kvs_compare_and_set(
    db: *mut kvs_db,
    key: *const u8,
    key_len: usize,
    expected: *const u8,
    expected_len: usize,
    expected_present: c_int,
    new_value: *const u8,
    new_value_len: usize,
    new_value_present: c_int,
    swapped_out: *mut c_int,
) -> kvs_status {
    if !swapped_out.is_null() {
        // SAFETY: non-NULL, and writable as the caller guarantees.
        unsafe { *swapped_out = 0 };
    }
    guard(|| {
        // SAFETY: the caller guarantees db, key, and expected and new_value when present, as
        // documented above; absent ones are not read.
        let (db, key, expected, new_value) = unsafe {
            (
                handle(db)?,
                bytes(key, key_len, "key")?,
                match expected_present {
                    0 => None,
                    _ => Some(bytes(expected, expected_len, "expected")?),
                },
                match new_value_present {
                    0 => None,
                    _ => Some(bytes(new_value, new_value_len, "new_value")?),
                },
            )
        };
        if swapped_out.is_null() {
            return Err(null_argument("swapped_out"));
        }
        let swapped = db.engine.compare_and_set_bytes(key, expected, new_value)?;
        // SAFETY: checked non-NULL above; the caller guarantees it is writable.
        unsafe { *swapped_out = c_int::from(swapped) };
        Ok(())
    })
}

/// `kvs_options.sync`: a write returns once it is in the operating system (it survives a crash
/// of the process, not a power loss). The default.
pub const KVS_SYNC_OS: u32 = 0;
/// `kvs_options.sync`: a write returns once it is on disk (`fdatasync`): it also survives a
/// power loss. Much slower.
pub const KVS_SYNC_ALWAYS: u32 = 1;

/// Settings for `kvs_open_with()`. Fill it with `kvs_options_init()`, then change the fields
/// you need:
///
///     kvs_options options;
///     kvs_options_init(&options);
///     options.sync = KVS_SYNC_ALWAYS;
///     kvs_status status = kvs_open_with("/tmp/store", NULL, &options, &db);
///
/// The struct grows at its end in later releases, never changing a field: `size` (set by
/// `kvs_options_init()` to `sizeof(kvs_options)` as the caller's header declares it) tells
/// the library how much of it the caller has, so a program built against this header keeps
/// working with a later libkvs, the fields it does not know taking their defaults. A plain
/// struct rather than an opaque object with setters: it lives on the caller's stack (nothing
/// to allocate or free, no failure path for each setting) and a debugger shows it whole.
///
/// The options other than `read_only` are for the `kvs` engine; `sled` ignores them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kvs_options {
    /// `sizeof(kvs_options)`: set by `kvs_options_init()`. A size smaller than the first
    /// version of the struct (this one), or larger than the library knows, is
    /// `KVS_INVALID_ARGUMENT`.
    pub size: usize,
    /// When a write counts as done: `KVS_SYNC_OS` (the default) or `KVS_SYNC_ALWAYS`. Any
    /// other value is `KVS_INVALID_ARGUMENT`.
    pub sync: u32,
    /// 1 to open the store read-only, 0 (the default) to open it for reading and writing; any
    /// other value is `KVS_INVALID_ARGUMENT`. A read-only open writes nothing at all to the
    /// directory (it may be on read-only media; it must already hold a `kvs` store), takes a
    /// shared lock (any number of read-only handles, in any processes, coexist; a writer is
    /// kept out while one is open, and the reverse), and every `kvs_set()` or `kvs_remove()`
    /// returns `KVS_INVALID_ARGUMENT`. A damaged (torn) end of the log, left by a crash, is
    /// left in place: the records before it are served. The `sled` engine cannot open a store
    /// read-only: `KVS_INVALID_ARGUMENT`. The log must not be written by anyone while it is
    /// open read-only.
    pub read_only: u32,
    /// The size in bytes at which writes move on to a new log file: 4096 (4 KiB) to
    /// 1073741824 (1 GiB, the default); outside that range, `KVS_INVALID_ARGUMENT`.
    pub max_file_size: u64,
    /// Background compaction starts once at least this many bytes of the log are stale
    /// (overwritten or removed data) and they are at least half of it. Default 4194304
    /// (4 MiB); any value is accepted (`UINT64_MAX`: never).
    pub compaction_min_stale: u64,
}

/// The size of the first version of `kvs_options` (this one): the least `size` accepted.
const KVS_OPTIONS_V1_SIZE: usize = std::mem::size_of::<kvs_options>();

impl Default for kvs_options {
    fn default() -> Self {
        kvs_options {
            size: std::mem::size_of::<kvs_options>(),
            sync: KVS_SYNC_OS,
            read_only: 0,
            max_file_size: 1 << 30,
            compaction_min_stale: 4 << 20,
        }
    }
}

impl kvs_options {
    /// The store options these settings ask for, or the first bad value.
    fn to_store_options(self) -> kvs::Result<KvStoreOptions> {
        let sync = match self.sync {
            KVS_SYNC_OS => SyncPolicy::Os,
            KVS_SYNC_ALWAYS => SyncPolicy::Always,
            other => {
                return Err(KvsError::InvalidArgument(format!(
                    "kvs_options.sync is {other}: expected KVS_SYNC_OS (0) or KVS_SYNC_ALWAYS (1)"
                )))
            }
        };
        let read_only = match self.read_only {
            0 => false,
            1 => true,
            other => {
                return Err(KvsError::InvalidArgument(format!(
                    "kvs_options.read_only is {other}: expected 0 or 1"
                )))
            }
        };
        KvStoreOptions::default()
            .sync(sync)
            .read_only(read_only)
            .compaction_min_stale(self.compaction_min_stale)
            .try_max_file_size(self.max_file_size)
            .map_err(|e| match e {
                KvsError::InvalidArgument(message) => {
                    KvsError::InvalidArgument(format!("kvs_options.{message}"))
                }
                other => other,
            })
    }
}

/// Fills `*options` with the defaults and sets `options->size` to `sizeof(kvs_options)`:
/// call it before changing any field. Returns `KVS_INVALID_ARGUMENT` for a NULL `options`.
///
/// # Safety
/// `options` is NULL or valid for writing a `kvs_options`.
#[no_mangle]
pub unsafe extern "C" fn kvs_options_init(options: *mut kvs_options) -> kvs_status {
    guard(|| {
        if options.is_null() {
            return Err(null_argument("options"));
        }
        // SAFETY: non-NULL, and writable for a whole kvs_options as the caller guarantees.
        unsafe { options.write(kvs_options::default()) };
        Ok(())
    })
}

/// Opens the store in directory `path` with settings: the engine named `engine` (`"kvs"` or
/// `"sled"`, as in `kvs_open_engine()`), or with NULL the engine recorded there (`kvs` for a new
/// directory, as in `kvs_open()`); `options` filled by `kvs_options_init()` and then changed,
/// or NULL for the defaults (then this is `kvs_open()` or `kvs_open_engine()`).
///
/// `*options` is only read during the call. A bad value in it (see `kvs_options`) is
/// `KVS_INVALID_ARGUMENT`, naming the field, and nothing is opened or created. Otherwise as
/// `kvs_open()`: `*db_out` receives the handle, or NULL on failure. A read-only open of a
/// directory that does not exist or holds no store is `KVS_IO_ERROR` (it creates nothing);
/// of a store whose last compaction was interrupted after it committed, `KVS_INVALID_ARGUMENT`
/// (open it once read-write to finish the compaction).
///
/// # Safety
/// `path` is NULL or a valid NUL-terminated string, and so is `engine`; `options` is NULL or
/// points to a `kvs_options` whose first `options->size` bytes are readable; `db_out` is NULL
/// or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn kvs_open_with(
    path: *const c_char,
    engine: *const c_char,
    options: *const kvs_options,
    db_out: *mut *mut kvs_db,
) -> kvs_status {
    // SAFETY: options is NULL or readable for options->size bytes, as the caller guarantees.
    let store_options = match unsafe { read_options(options) } {
        Ok(store_options) => store_options,
        Err(e) => {
            // SAFETY: db_out is NULL or writable, as the caller guarantees.
            unsafe { clear_out(db_out) };
            return guard(|| Err(e));
        }
    };
    let engine = (!engine.is_null()).then_some(engine);
    // SAFETY: forwarded with the caller's guarantees; a NULL engine means the recorded one.
    unsafe { open(path, engine, store_options, db_out) }
}

/// The store options `*options` asks for (the defaults for NULL), or the first bad value.
///
/// # Safety
/// `options` is NULL or points to a `kvs_options` whose first `options->size` bytes are
/// readable.
unsafe fn read_options(options: *const kvs_options) -> kvs::Result<KvStoreOptions> {
    if options.is_null() {
        return Ok(KvStoreOptions::default());
    }
    // SAFETY: non-NULL; `size` is the first field, readable whatever version of the struct
    // the caller has. read_unaligned: the caller may have packed it anywhere.
    let size = unsafe { ptr::addr_of!((*options).size).read_unaligned() };
    if size < KVS_OPTIONS_V1_SIZE {
        return Err(KvsError::InvalidArgument(format!(
            "kvs_options.size is {size}, less than any kvs_options ({KVS_OPTIONS_V1_SIZE}): fill \
             the struct with kvs_options_init()"
        )));
    }
    if size > std::mem::size_of::<kvs_options>() {
        return Err(KvsError::InvalidArgument(format!(
            "kvs_options.size is {size}: this libkvs ({}) knows a kvs_options of at most {} \
             bytes; the program was built against a newer kvs.h than the library it runs with",
            env!("CARGO_PKG_VERSION"),
            std::mem::size_of::<kvs_options>()
        )));
    }
    // The fields the caller's struct has, over the defaults for the rest (none yet: every
    // accepted size is this version's).
    let mut read = kvs_options::default();
    // SAFETY: the caller's struct has `size` readable bytes, and `size` is at most the size
    // of `read`; the two do not overlap (`read` is a local). Every field is a plain integer,
    // valid for any bytes.
    unsafe {
        ptr::copy_nonoverlapping(
            options.cast::<u8>(),
            ptr::addr_of_mut!(read).cast::<u8>(),
            size,
        )
    };
    read.to_store_options()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_options_size_is_explained_in_plain_sentences() {
        let mut options = super::kvs_options::default();
        for size in [0, std::mem::size_of::<super::kvs_options>() + 8] {
            options.size = size;
            // SAFETY: a live local struct: its `size` field, the only one read for a size
            // that is refused, is readable.
            let message = match unsafe { super::read_options(&options) } {
                Ok(_) => String::from("accepted"),
                Err(e) => e.to_string(),
            };
            assert!(message.contains("kvs_options.size is"), "{message}");
            assert!(!message.contains("  "), "a run of spaces in: {message}");
        }
    }

    #[test]
    fn version_is_the_workspace_version() {
        assert_eq!(super::VERSION.to_str().ok(), Some(kvs::VERSION));
    }
}
