//! Walking the keys of a store a page at a time, over [`kvs::KvsEngine::scan_bytes`]: one
//! page per call with `kvs_scan()`, or one key per call with a [`kvs_iter`].

use std::collections::VecDeque;
use std::ptr;

use kvs::{AnyEngine, KvsEngine, KvsError, ScanFilter};

use crate::last_error;
use crate::panic::guard;
use crate::status::kvs_status;
use crate::{bytes, clear_out, handle, kvs_db, null_argument};

/// How many keys a `kvs_iter` asks the engine to look at per page.
const ITER_PAGE: usize = 256;

/// A byte string owned by kvs: `len` bytes at `data`, not NUL-terminated; `data` is NULL for
/// the empty string.
#[repr(C)]
pub struct kvs_bytes {
    /// The first byte (NULL when `len` is 0).
    pub data: *const u8,
    /// The number of bytes.
    pub len: usize,
}

/// One page of keys from `kvs_scan()`. Owned by the caller, read-only, valid until it is
/// passed to `kvs_scan_page_free()` (even after `kvs_close()`); never `free()` it or its
/// parts.
#[repr(C)]
pub struct kvs_scan_page {
    /// The cursor to pass to the next `kvs_scan()` call; 0 when the walk is over.
    pub cursor: u64,
    /// The keys of this page: `keys[0]` to `keys[count - 1]` (NULL when `count` is 0).
    pub keys: *const kvs_bytes,
    /// How many keys the page holds. Fewer than the count asked for, even none, does not
    /// mean the walk is over: only a `cursor` of 0 does.
    pub count: usize,
}

/// What `kvs_scan()` hands out: the page first (its address is the allocation's), then the
/// memory its pointers point into.
#[repr(C)]
struct OwnedPage {
    page: kvs_scan_page,
    views: Vec<kvs_bytes>,
    keys: Vec<Vec<u8>>,
}

/// The filter of a scan: keys starting with the `prefix_len` bytes at `prefix` and, unless
/// `pattern` is NULL, matching the `pattern_len` bytes at `pattern` as a glob.
///
/// # Safety
/// `prefix` points to `prefix_len` readable bytes (or is NULL with `prefix_len` 0), and
/// likewise `pattern` when it is not NULL.
unsafe fn filter(
    prefix: *const u8,
    prefix_len: usize,
    pattern: *const u8,
    pattern_len: usize,
) -> kvs::Result<ScanFilter> {
    // SAFETY: as the caller guarantees.
    let prefix = unsafe { bytes(prefix, prefix_len, "prefix")? };
    let pattern = if pattern.is_null() {
        if pattern_len != 0 {
            return Err(KvsError::InvalidArgument(format!(
                "pattern is NULL (no pattern) but pattern_len is {pattern_len}"
            )));
        }
        None
    } else {
        // SAFETY: non-NULL, with pattern_len readable bytes, as the caller guarantees.
        Some(unsafe { bytes(pattern, pattern_len, "pattern")? }.to_vec())
    };
    Ok(ScanFilter {
        prefix: prefix.to_vec(),
        pattern,
    })
}

/// One page of a walk over the keys of the store, as Redis's `SCAN`: start with `cursor` 0
/// and pass each page's `cursor` to the next call, until it is 0.
///
///     uint64_t cursor = 0;
///     do {
///         kvs_scan_page *page;
///         if (kvs_scan(db, cursor, 100, NULL, 0, NULL, 0, &page) != KVS_OK)
///             break;
///         for (size_t i = 0; i < page->count; i++)
///             use(page->keys[i].data, page->keys[i].len);
///         cursor = page->cursor;
///         kvs_scan_page_free(page);
///     } while (cursor != 0);
///
/// Only keys that start with the `prefix_len` bytes at `prefix` (NULL with 0, or any pointer
/// with 0: every key) and, if `pattern` is not NULL, match the `pattern_len` bytes at
/// `pattern` as a glob with Redis's rules (`*`, `?`, `[abc]`, `[^a-z]`, `\` escapes; byte for
/// byte, case matters) come back. Unlike keys and values, a NULL `pattern` means "no pattern"
/// (`pattern_len` must then be 0), while a non-NULL one of length 0 is the empty pattern,
/// which matches only the empty key. Both are only read during the call.
///
/// `count` (1 or more) is the work per call, as in Redis: how many keys are looked at, so a
/// page may hold fewer keys, even none, before the walk is over. Every key that is set for
/// the whole walk comes back at least once (maybe more than once); a key set or removed
/// during the walk may or may not. A walk holds nothing of the store between calls: other
/// threads go on writing, and a walk may be abandoned at any point. Each call holds memory
/// for about `count` keys.
///
/// On `KVS_OK`, `*page_out` receives a page owned by the caller, to be released with
/// `kvs_scan_page_free()`; on any other status it is set to NULL (if `page_out` is not NULL).
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db` or `page_out`, NULL prefix with a length, NULL
/// pattern with a length, `count` 0, a cursor this store did not return, where the engine
/// can tell), `KVS_IO_ERROR`, `KVS_CORRUPTION`, `KVS_ERROR`, `KVS_FORKED`.
///
/// # Safety
/// `db` is NULL or an open handle; `prefix` points to `prefix_len` readable bytes (or is NULL
/// with `prefix_len` 0), and likewise `pattern` when it is not NULL; `page_out` is NULL or
/// valid for writing a pointer.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kvs_scan(
    db: *mut kvs_db,
    cursor: u64,
    count: usize,
    prefix: *const u8,
    prefix_len: usize,
    pattern: *const u8,
    pattern_len: usize,
    page_out: *mut *mut kvs_scan_page,
) -> kvs_status {
    // SAFETY: page_out is NULL or writable, as the caller guarantees.
    unsafe { clear_out(page_out) };
    guard(|| {
        // SAFETY: the caller guarantees db, prefix and pattern as documented above.
        let (db, filter) = unsafe {
            (
                handle(db)?,
                filter(prefix, prefix_len, pattern, pattern_len)?,
            )
        };
        if page_out.is_null() {
            return Err(null_argument("page_out"));
        }
        if count == 0 {
            return Err(KvsError::InvalidArgument(
                "count is 0: scan at least 1 key per call".into(),
            ));
        }
        let page = db.engine.scan_bytes(cursor, count, &filter)?;
        let views: Vec<kvs_bytes> = page.keys.iter().map(|key| view(key)).collect();
        let owned = Box::new(OwnedPage {
            page: kvs_scan_page {
                cursor: page.cursor,
                keys: if views.is_empty() {
                    ptr::null()
                } else {
                    views.as_ptr()
                },
                count: views.len(),
            },
            // Moving the vectors moves none of the bytes the views point to.
            views,
            keys: page.keys,
        });
        // SAFETY: non-NULL (checked above) and writable. OwnedPage is repr(C) with the page
        // first, so the allocation's address is the page's.
        unsafe { *page_out = Box::into_raw(owned).cast::<kvs_scan_page>() };
        Ok(())
    })
}

/// Frees a page from `kvs_scan()`, and every key in it. `kvs_scan_page_free(NULL)` does
/// nothing. May be called from any thread, before or after the handle is closed.
///
/// # Safety
/// `page` is NULL or a page from `kvs_scan()` not yet freed; it must not be used again.
#[no_mangle]
pub unsafe extern "C" fn kvs_scan_page_free(page: *mut kvs_scan_page) {
    if page.is_null() {
        return;
    }
    // Freeing cannot panic (allocation failures abort), so no guard is needed here.
    // SAFETY: kvs_scan made `page` from Box::into_raw of an OwnedPage (whose first field it
    // is), and the caller hands it back once.
    drop(unsafe { Box::from_raw(page.cast::<OwnedPage>()) });
}

/// An iterator over the keys of a store that pass a filter, walking it a page at a time (as
/// `kvs_scan()` does, with its guarantees): it holds one page of keys, never the whole key
/// set.
///
/// Opaque: create it with `kvs_iter_new()`, take keys with `kvs_iter_next()`, release it with
/// `kvs_iter_free()`. It may be used by one thread at a time. It holds its own reference to
/// the store: the store stays open until both `kvs_close()` has been called and every
/// iterator on it is freed, so free iterators before `kvs_close()` to release the directory
/// at once.
pub struct kvs_iter {
    engine: AnyEngine,
    filter: ScanFilter,
    /// The cursor of the next page.
    cursor: u64,
    /// Whether the engine returned the last page.
    done: bool,
    /// Keys of the current page not yet handed out.
    page: VecDeque<Vec<u8>>,
    /// The key the last `kvs_iter_next()` handed out, which its pointer points into.
    current: Vec<u8>,
}

/// Creates an iterator over the keys of `db` that start with the `prefix_len` bytes at
/// `prefix` and, if `pattern` is not NULL, match the `pattern_len` bytes at `pattern` (as in
/// `kvs_scan()`, NULL `pattern`: no pattern). Prefix and pattern are copied.
///
/// On `KVS_OK`, `*iter_out` receives an iterator owned by the caller, to be released with
/// `kvs_iter_free()`; on any other status, NULL (if `iter_out` is not NULL). Creating it reads
/// nothing yet.
///
/// Statuses: `KVS_INVALID_ARGUMENT` (NULL `db` or `iter_out`, NULL prefix or pattern with a
/// length).
///
/// # Safety
/// `db` is NULL or an open handle; `prefix` and `pattern` as in `kvs_scan()`; `iter_out` is
/// NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn kvs_iter_new(
    db: *mut kvs_db,
    prefix: *const u8,
    prefix_len: usize,
    pattern: *const u8,
    pattern_len: usize,
    iter_out: *mut *mut kvs_iter,
) -> kvs_status {
    // SAFETY: iter_out is NULL or writable, as the caller guarantees.
    unsafe { clear_out(iter_out) };
    guard(|| {
        // SAFETY: the caller guarantees db, prefix and pattern as documented above.
        let (db, filter) = unsafe {
            (
                handle(db)?,
                filter(prefix, prefix_len, pattern, pattern_len)?,
            )
        };
        if iter_out.is_null() {
            return Err(null_argument("iter_out"));
        }
        let iter = Box::into_raw(Box::new(kvs_iter {
            engine: db.engine.clone(),
            filter,
            cursor: 0,
            done: false,
            page: VecDeque::new(),
            current: Vec::new(),
        }));
        // SAFETY: non-NULL (checked above) and writable, as the caller guarantees.
        unsafe { *iter_out = iter };
        Ok(())
    })
}

/// Takes the next key from `iter`.
///
/// `KVS_OK`: `*key_out` and `*key_len_out` are the key (NULL and 0 for the empty key), owned
/// by the iterator, not NUL-terminated, valid until the next `kvs_iter_next()` or
/// `kvs_iter_free()` of `iter`; copy it to keep it. `KVS_NOT_FOUND`: there are no more keys
/// (every later call says so too). On that and every other status, `*key_out` is NULL and
/// `*key_len_out` 0 (when they are not NULL). A failure to read a page (`KVS_IO_ERROR`, ...)
/// leaves the iterator where it was: calling again retries it.
///
/// Statuses: `KVS_NOT_FOUND` (the end), `KVS_INVALID_ARGUMENT` (NULL `iter`, `key_out` or
/// `key_len_out`), `KVS_IO_ERROR`, `KVS_CORRUPTION`, `KVS_ERROR`, `KVS_FORKED` (the store was
/// opened by the parent of this process).
///
/// # Safety
/// `iter` is NULL or an iterator from `kvs_iter_new()` not yet freed, that no other thread is
/// using; `key_out` and `key_len_out` are NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn kvs_iter_next(
    iter: *mut kvs_iter,
    key_out: *mut *const u8,
    key_len_out: *mut usize,
) -> kvs_status {
    // SAFETY: each is NULL or writable, as the caller guarantees.
    unsafe {
        if !key_out.is_null() {
            *key_out = ptr::null();
        }
        if !key_len_out.is_null() {
            *key_len_out = 0;
        }
    }
    let mut exhausted = false;
    let status = guard(|| {
        // SAFETY: non-NULL iterators are live boxes from kvs_iter_new, used by one thread
        // at a time, as the caller guarantees.
        let iter = unsafe { iter.as_mut() }.ok_or_else(|| null_argument("iter"))?;
        if key_out.is_null() {
            return Err(null_argument("key_out"));
        }
        if key_len_out.is_null() {
            return Err(null_argument("key_len_out"));
        }
        let Some(key) = iter.next_key()? else {
            exhausted = true;
            return Ok(());
        };
        iter.current = key;
        let key = view(&iter.current);
        // SAFETY: both checked non-NULL above; the caller guarantees they are writable.
        unsafe {
            *key_out = key.data;
            *key_len_out = key.len;
        }
        Ok(())
    });
    if status == kvs_status::KVS_OK && exhausted {
        last_error::set("the iteration is over: no more keys");
        return kvs_status::KVS_NOT_FOUND;
    }
    status
}

/// Frees an iterator from `kvs_iter_new()` (and the key it last handed out), letting go of
/// its reference to the store. `kvs_iter_free(NULL)` does nothing.
///
/// # Safety
/// `iter` is NULL or an iterator from `kvs_iter_new()` not yet freed, that no other thread is
/// using; it must not be used again.
#[no_mangle]
pub unsafe extern "C" fn kvs_iter_free(iter: *mut kvs_iter) {
    if iter.is_null() {
        return;
    }
    // SAFETY: iter came from Box::into_raw in kvs_iter_new and the caller hands it back once.
    let iter = unsafe { Box::from_raw(iter) };
    // The last reference to a closed store shuts it down: report a panic there through
    // kvs_last_error() rather than unwinding into C.
    let _ = guard(move || {
        drop(iter);
        Ok(())
    });
}

impl kvs_iter {
    /// The next key, reading pages until one has a key or the walk is over (`None`).
    fn next_key(&mut self) -> kvs::Result<Option<Vec<u8>>> {
        loop {
            if let Some(key) = self.page.pop_front() {
                return Ok(Some(key));
            }
            if self.done {
                return Ok(None);
            }
            // A page may be empty without the walk being over: only a cursor of 0 ends it.
            let page = self
                .engine
                .scan_bytes(self.cursor, ITER_PAGE, &self.filter)?;
            self.cursor = page.cursor;
            self.done = page.cursor == 0;
            self.page.extend(page.keys);
        }
    }
}

/// A `kvs_bytes` over `key` (NULL data for the empty key).
fn view(key: &[u8]) -> kvs_bytes {
    kvs_bytes {
        data: if key.is_empty() {
            ptr::null()
        } else {
            key.as_ptr()
        },
        len: key.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::slice;

    #[test]
    fn a_view_of_the_empty_key_is_null() {
        let empty = view(b"");
        assert!(empty.data.is_null());
        assert_eq!(empty.len, 0);
        let key = b"k\0ey".to_vec();
        let full = view(&key);
        // SAFETY: the view points to the `len` bytes of `key`, alive and unchanged here.
        let seen = unsafe { slice::from_raw_parts(full.data, full.len) };
        assert_eq!(seen, b"k\0ey");
    }
}
