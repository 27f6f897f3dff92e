//! `kvs._kvs.KvStore`: an open data directory, the compiled base of `kvs.KvStore`.
//!
//! The mapping methods live here (not in Python) so that `db[k]` goes from the interpreter
//! straight to Rust; `kvs.KvStore` adds the `collections.abc.MutableMapping` mixins on top.
//! Every engine call runs with the GIL released.
//!
//! Iteration (`iter(db)`, `scan_iter()`) walks the store in pages of
//! [`KvsEngine::scan_bytes`] through a [`KeyIterator`], holding one page of keys at a time,
//! never the whole key set.

use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

use kvs::{AnyEngine, EngineKind, KvStoreOptions, KvsEngine, ScanFilter, SyncPolicy, WriteBatch};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString, PyTuple};

use crate::batch::{Batch, BatchTarget};
use crate::error::to_py_err;
use crate::input::{bytes_of, optional_bytes_of};
use crate::keys::{KeyIterator, Walked};
use crate::ops::{self, Backend, Ops};

/// Keys a [`KeyIterator`] asks the engine for per page (the `count` of each `scan_bytes`).
const ITER_PAGE: usize = 256;

/// An open kvs data directory (see `kvs.KvStore`).
#[pyclass(module = "kvs._kvs", name = "KvStore", frozen, subclass, mapping)]
pub struct Store {
    /// `None` once closed. Operations hold the read lock for the length of an engine call
    /// (with the GIL released), so `close()` waits for calls in flight and never drops the
    /// engine under them.
    engine: RwLock<Option<AnyEngine>>,
    path: PathBuf,
    kind: EngineKind,
    read_only: bool,
}

impl Store {
    /// Runs `op` on the engine with the GIL released; `ValueError` if the store is closed.
    pub(crate) fn with_engine<T, F>(&self, py: Python<'_>, op: F) -> PyResult<kvs::Result<T>>
    where
        F: FnOnce(&AnyEngine) -> kvs::Result<T> + Send,
        T: Send,
    {
        py.detach(|| {
            // A panic inside the engine poisons the lock; the engine's own state is guarded
            // by its own locks, so the handle stays usable.
            let engine = self.engine.read().unwrap_or_else(PoisonError::into_inner);
            engine.as_ref().map(op)
        })
        .ok_or_else(|| PyValueError::new_err("operation on a closed KvStore"))
    }

    /// The value of `key`, `None` if missing.
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        ops::get(self, py, key)
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (
        path,
        engine=None,
        *,
        sync=None,
        read_only=None,
        max_file_size=None,
        compaction_min_stale=None,
    ))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        engine: Option<&str>,
        sync: Option<&Bound<'_, PyAny>>,
        read_only: Option<&Bound<'_, PyAny>>,
        max_file_size: Option<&Bound<'_, PyAny>>,
        compaction_min_stale: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let wanted = engine
            .map(|name| name.parse::<EngineKind>())
            .transpose()
            .map_err(|err| to_py_err(py, err, None))?;
        let options = store_options(py, sync, read_only, max_file_size, compaction_min_stale)?;
        let read_only = options.is_read_only();
        let dir = path.clone();
        let opened = py
            .detach(move || AnyEngine::open_with(dir, wanted, options))
            .map_err(|err| to_py_err(py, err, None))?;
        Ok(Store {
            kind: opened.kind(),
            engine: RwLock::new(Some(opened)),
            path,
            read_only,
        })
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.fetch(py, key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.set(py, key, value, None)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.remove(py, key)
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = bytes_of(key, "key")?;
        self.with_engine(py, |e| e.contains_key(&k))?
            .map_err(|err| to_py_err(py, err, Some(key)))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_engine(py, |e| e.len())?
            .map_err(|err| to_py_err(py, err, None))
    }

    /// Iterates over the keys, a page of them at a time (see [`KeyIterator`]).
    fn __iter__(slf: &Bound<'_, Self>) -> KeyIterator {
        KeyIterator::new(
            Walked::Store(slf.clone().unbind()),
            ScanFilter::all(),
            ITER_PAGE,
        )
    }

    /// The value of `key`, or `default` if it is not set.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(match self.fetch(py, key)? {
            Some(value) => Some(value.into_any()),
            None => default,
        })
    }

    /// Sets `key` to `value`, expiring `ttl` seconds from now (None: never; a plain set
    /// clears any deadline the key had).
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        ops::set(self, py, key, value, ttl)
    }

    /// Gives the existing `key` a deadline `seconds` from now; whether the key was set.
    /// Zero or fewer seconds remove the key (as Redis's EXPIRE).
    fn expire(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        seconds: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        ops::expire(self, py, key, seconds)
    }

    /// Seconds left before `key` expires; None if it has no deadline; `KeyError` if it is not
    /// set.
    fn ttl(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
        ops::ttl(self, py, key)
    }

    /// Removes the deadline of `key`; whether it had one.
    fn persist(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        ops::persist(self, py, key)
    }

    /// The values of `keys` (None: not set), in order, all read at one instant.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        ops::get_many(self, py, keys)
    }

    /// One page of a walk over the keys: `(next_cursor, keys)`, as Redis's SCAN.
    #[pyo3(
        signature = (cursor=None, count=None, prefix=None, r#match=None),
        text_signature = "(self, cursor=0, count=100, prefix=None, match=None)"
    )]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        cursor: Option<&Bound<'py, PyAny>>,
        count: Option<&Bound<'py, PyAny>>,
        prefix: Option<&Bound<'py, PyAny>>,
        r#match: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(u64, Vec<Bound<'py, PyBytes>>)> {
        let cursor = match cursor.filter(|c| !c.is_none()) {
            None => 0,
            Some(cursor) => cursor_of(cursor)?,
        };
        let count = count_of(count)?;
        let filter = filter_of(prefix, r#match)?;
        let page = self
            .with_engine(py, |e| e.scan_bytes(cursor, count, &filter))?
            .map_err(|err| to_py_err(py, err, None))?;
        let keys = page.keys.iter().map(|k| PyBytes::new(py, k)).collect();
        Ok((page.cursor, keys))
    }

    /// An iterator over the keys that pass the filter, walking `scan` pages of `count`.
    #[pyo3(
        signature = (prefix=None, r#match=None, count=None),
        text_signature = "(self, prefix=None, match=None, count=100)"
    )]
    fn scan_iter(
        slf: &Bound<'_, Self>,
        prefix: Option<&Bound<'_, PyAny>>,
        r#match: Option<&Bound<'_, PyAny>>,
        count: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<KeyIterator> {
        let count = count_of(count)?;
        let filter = filter_of(prefix, r#match)?;
        Ok(KeyIterator::new(
            Walked::Store(slf.clone().unbind()),
            filter,
            count,
        ))
    }

    /// A new, empty batch of writes to this store (see `kvs.Batch`).
    fn batch(slf: &Bound<'_, Self>) -> Batch {
        Batch::new(slf)
    }

    /// Removes `key`; `KeyError` if it is not set.
    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        ops::remove(self, py, key)
    }

    /// Forces every write so far onto stable storage (fsync).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with_engine(py, |e| e.flush())?
            .map_err(|err| to_py_err(py, err, None))
    }

    /// Flushes and releases the store; the directory can be reopened at once. Closing a
    /// closed store does nothing; closing a store inherited through fork() only releases the
    /// child's copy, without error.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let flushed = py.detach(|| {
            let engine = self
                .engine
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // Dropped here, before returning: the directory lock goes with the engine.
            engine.map(|e| e.flush())
        });
        match flushed {
            // A store inherited through fork(): closing it in the child only lets go of the
            // child's copy, which is what the caller asked for.
            Some(Err(kvs::KvsError::Forked { .. })) => Ok(()),
            Some(Err(err)) => Err(to_py_err(py, err, None)),
            _ => Ok(()),
        }
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        // Detached: `close()` may hold the write lock while it waits for calls in flight.
        py.detach(|| {
            self.engine
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
        })
    }

    /// The engine of the store: `"kvs"` or `"sled"`.
    #[getter]
    fn engine(&self) -> &'static str {
        self.kind.name()
    }

    /// The data directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether the store was opened with ``read_only=True``.
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// Atomically: if the value of `key` is `expected` (None: not set), sets it to `new`
    /// (None: removes it) and returns True; otherwise changes nothing and returns False.
    /// The engine call runs with the GIL released.
    fn compare_and_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: Option<&Bound<'_, PyAny>>,
        new: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        ops::compare_and_set(self, py, key, expected, new)
    }

    /// Atomically replaces the value of `key` with `func(old)` and returns the new value: a
    /// compare-and-set loop (see [`ops::update_value`] for why not the engine's
    /// `update_bytes`), so `func` may run more than once.
    fn update_value<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        func: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        ops::update_value(self, py, key, func)
    }

    /// Writes an online checkpoint into directory `dest` (see `KvsEngine::checkpoint`): a
    /// consistent copy of the writes acknowledged before one point during the call, taken
    /// while other threads go on using the store (the GIL is released).
    fn checkpoint(&self, py: Python<'_>, dest: PathBuf) -> PyResult<()> {
        self.with_engine(py, |e| e.checkpoint(&dest))?
            .map_err(|err| to_py_err(py, err, None))
    }
}

impl Backend for Store {
    fn run<T, F>(&self, py: Python<'_>, op: F) -> PyResult<kvs::Result<T>>
    where
        F: FnOnce(&mut dyn Ops) -> kvs::Result<T> + Send,
        T: Send,
    {
        self.with_engine(py, |mut e| op(&mut e))
    }
}

impl BatchTarget for Store {
    fn apply_batch(&self, py: Python<'_>, batch: &WriteBatch) -> PyResult<()> {
        self.with_engine(py, |e| e.apply_batch(batch))?
            .map_err(|err| to_py_err(py, err, None))
    }
}

/// A scan cursor: 0 to start, else one that `scan` returned. `TypeError` for anything but an
/// `int`, `ValueError` for one outside 0 to 2**64 - 1.
pub(crate) fn cursor_of(cursor: &Bound<'_, PyAny>) -> PyResult<u64> {
    if cursor.is_instance_of::<PyBool>() || !cursor.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "cursor must be an int (0, or a cursor scan returned), not {}",
            type_name(cursor)
        )));
    }
    cursor.extract::<u64>().map_err(|_| {
        PyValueError::new_err(format!(
            "cursor must be 0 or a cursor scan returned (0 to 2**64 - 1), not {cursor}"
        ))
    })
}

/// The `count` of a scan (None: 100, as `scan`'s default): a positive `int`. `TypeError` for
/// anything else, `ValueError` for 0 or less (as Redis refuses `COUNT 0`).
pub(crate) fn count_of(count: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
    let Some(count) = count.filter(|c| !c.is_none()) else {
        return Ok(100);
    };
    if count.is_instance_of::<PyBool>() || !count.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "count must be an int, not {}",
            type_name(count)
        )));
    }
    count
        .extract::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| PyValueError::new_err(format!("count must be 1 or more, not {count}")))
}

/// The scan filter of `prefix` and `match` (each bytes, str or None).
pub(crate) fn filter_of(
    prefix: Option<&Bound<'_, PyAny>>,
    pattern: Option<&Bound<'_, PyAny>>,
) -> PyResult<ScanFilter> {
    let prefix = optional_bytes_of(prefix.filter(|p| !p.is_none()), "prefix")?;
    let pattern = optional_bytes_of(pattern.filter(|p| !p.is_none()), "match")?;
    Ok(ScanFilter {
        prefix: prefix.map(|p| p.into_owned()).unwrap_or_default(),
        pattern: pattern.map(|p| p.into_owned()),
    })
}

/// The store options of `KvStore(...)`'s keyword arguments (`None`: the default):
/// `TypeError` for a value of the wrong type, `ValueError` for one out of range.
fn store_options(
    py: Python<'_>,
    sync: Option<&Bound<'_, PyAny>>,
    read_only: Option<&Bound<'_, PyAny>>,
    max_file_size: Option<&Bound<'_, PyAny>>,
    compaction_min_stale: Option<&Bound<'_, PyAny>>,
) -> PyResult<KvStoreOptions> {
    let mut options = KvStoreOptions::default();
    if let Some(sync) = sync.filter(|v| !v.is_none()) {
        let name = sync.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "sync must be \"os\" or \"always\", not {}",
                type_name(sync)
            ))
        })?;
        options = options.sync(match &*name.to_cow()? {
            "os" => SyncPolicy::Os,
            "always" => SyncPolicy::Always,
            other => {
                return Err(PyValueError::new_err(format!(
                    "sync must be \"os\" or \"always\", not {other:?}"
                )))
            }
        });
    }
    if let Some(read_only) = read_only.filter(|v| !v.is_none()) {
        let flag = read_only.cast::<PyBool>().map_err(|_| {
            PyTypeError::new_err(format!(
                "read_only must be True or False, not {}",
                type_name(read_only)
            ))
        })?;
        options = options.read_only(flag.is_true());
    }
    if let Some(bytes) = max_file_size.filter(|v| !v.is_none()) {
        let bytes = byte_count(bytes, "max_file_size")?;
        options = options
            .try_max_file_size(bytes)
            .map_err(|err| to_py_err(py, err, None))?;
    }
    if let Some(bytes) = compaction_min_stale.filter(|v| !v.is_none()) {
        options = options.compaction_min_stale(byte_count(bytes, "compaction_min_stale")?);
    }
    Ok(options)
}

/// A non-negative `int` (not a `bool`) that fits in 64 bits.
fn byte_count(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int (a number of bytes) or None, not {}",
            type_name(value)
        )));
    }
    value.extract::<u64>().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a number of bytes from 0 to 2**64 - 1, not {value}"
        ))
    })
}

/// The name of `value`'s type, for error messages.
fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "an object".into())
}
