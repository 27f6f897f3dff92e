//! `kvs.Client`: one reused connection to a kvs server, over [`kvs::KvsClient`].

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kvs::{KvsClient, WriteBatch};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::batch::{Batch, BatchTarget};
use crate::error::to_py_err;
use crate::input::bytes_of;
use crate::keys::{KeyIterator, Walked};
use crate::ops::{self, Backend, Ops};
use crate::store::{count_of, cursor_of, filter_of};

/// Default for `timeout`: long enough for any sane request, short enough that a stalled
/// server does not hang a script for good.
const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

/// A client of a kvs server (see `kvs.Client` in `_kvs.pyi`).
#[pyclass(module = "kvs", name = "Client", frozen)]
pub struct Client {
    /// `None` once closed. Requests from several threads take turns on the one connection.
    conn: Mutex<Option<KvsClient>>,
    addr: String,
}

impl Client {
    /// Runs `op` on the connection with the GIL released; `ValueError` if closed.
    pub(crate) fn with_conn<T, F>(&self, py: Python<'_>, op: F) -> PyResult<kvs::Result<T>>
    where
        F: FnOnce(&mut KvsClient) -> kvs::Result<T> + Send,
        T: Send,
    {
        py.detach(|| {
            // A panic mid-request leaves at worst a connection out of step, which the client
            // detects and replaces on the next request.
            let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            conn.as_mut().map(op)
        })
        .ok_or_else(|| PyValueError::new_err("operation on a closed Client"))
    }
}

fn to_duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "timeout must be a positive number of seconds or None, not {s}"
                    ))
                })
        })
        .transpose()
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(
        signature = (addr="127.0.0.1:4000", *, timeout=Some(DEFAULT_TIMEOUT_SECS), password=None),
        text_signature = "(addr='127.0.0.1:4000', *, timeout=10.0, password=None)"
    )]
    fn new(
        py: Python<'_>,
        addr: &str,
        timeout: Option<f64>,
        password: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let timeout = to_duration(timeout)?;
        let password = password
            .filter(|p| !p.is_none())
            .map(|p| bytes_of(p, "password").map(|b| b.into_owned()))
            .transpose()?;
        let target = addr.to_owned();
        let conn = py
            .detach(move || {
                let mut conn = match timeout {
                    Some(t) => KvsClient::connect_timeout(target.as_str(), t)?,
                    None => KvsClient::connect(target.as_str())?,
                };
                conn.set_timeout(timeout)?;
                if let Some(password) = password {
                    conn.auth(&password)?;
                }
                Ok(conn)
            })
            .map_err(|err| to_py_err(py, err, None))?;
        Ok(Client {
            conn: Mutex::new(Some(conn)),
            addr: addr.to_owned(),
        })
    }

    /// The value of `key`, or None if it is not set.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        ops::get(self, py, key)
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

    /// The values of `keys` (None: not set), in order, all read on the server at one
    /// instant.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        ops::get_many(self, py, keys)
    }

    /// Atomically replaces the value of `key` with `func(old)` (None: not set / remove it)
    /// and returns the new value: a read and a compare-and-set, again whenever another client
    /// changed the key in between, so `func` may run more than once.
    fn update_value<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        func: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        ops::update_value(self, py, key, func)
    }

    /// One page of a walk over the server's keys: `(next_cursor, keys)`, as Redis's SCAN.
    #[pyo3(signature = (cursor=None, count=None, prefix=None, r#match=None))]
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
            .with_conn(py, |c| c.scan_bytes(cursor, count, &filter))?
            .map_err(|err| to_py_err(py, err, None))?;
        let keys = page.keys.iter().map(|k| PyBytes::new(py, k)).collect();
        Ok((page.cursor, keys))
    }

    /// An iterator over the server's keys that pass the filter, walking `scan` pages of
    /// `count`.
    #[pyo3(signature = (prefix=None, r#match=None, count=None))]
    fn scan_iter(
        slf: &Bound<'_, Self>,
        prefix: Option<&Bound<'_, PyAny>>,
        r#match: Option<&Bound<'_, PyAny>>,
        count: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<KeyIterator> {
        let count = count_of(count)?;
        let filter = filter_of(prefix, r#match)?;
        Ok(KeyIterator::new(
            Walked::Client(slf.clone().unbind()),
            filter,
            count,
        ))
    }

    /// The server's keys (those starting with `prefix`, matching the glob `match`), walked a
    /// page at a time.
    #[pyo3(signature = (prefix=None, r#match=None))]
    fn keys(
        slf: &Bound<'_, Self>,
        prefix: Option<&Bound<'_, PyAny>>,
        r#match: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<KeyIterator> {
        Client::scan_iter(slf, prefix, r#match, None)
    }

    /// Every key of the server, walked a page at a time.
    fn __iter__(slf: &Bound<'_, Self>) -> PyResult<KeyIterator> {
        Client::scan_iter(slf, None, None, None)
    }

    /// A new, empty batch of writes sent to the server as one atomic request (see
    /// `kvs.Batch`).
    fn batch(slf: &Bound<'_, Self>) -> Batch {
        Batch::new(slf)
    }

    /// Writes an online checkpoint of the server's store into `dest`, a path on the
    /// server's machine, written by the server's process.
    fn checkpoint(&self, py: Python<'_>, dest: PathBuf) -> PyResult<()> {
        self.with_conn(py, |c| c.checkpoint(&dest))?
            .map_err(|err| to_py_err(py, err, None))
    }

    /// Removes `key`; KeyError if it is not set.
    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        ops::remove(self, py, key)
    }

    /// Atomically on the server: if the value of `key` is `expected` (None: not set), sets it
    /// to `new` (None: removes it) and returns True; otherwise changes nothing and returns
    /// False. The GIL is released while waiting on the network.
    fn compare_and_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: Option<&Bound<'_, PyAny>>,
        new: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        ops::compare_and_set(self, py, key, expected, new)
    }

    /// Closes the connection. Closing a closed client does nothing.
    fn close(&self, py: Python<'_>) {
        let conn = py.detach(|| {
            self.conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        });
        drop(conn);
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        // Detached: another thread may hold the connection for a whole request.
        py.detach(|| {
            self.conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
        })
    }

    /// The server's address, as given.
    #[getter]
    fn addr(&self) -> &str {
        &self.addr
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.closed(py) { "closed" } else { "open" };
        format!("<kvs.Client {state} addr={:?}>", self.addr)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }
}

impl Backend for Client {
    fn run<T, F>(&self, py: Python<'_>, op: F) -> PyResult<kvs::Result<T>>
    where
        F: FnOnce(&mut dyn Ops) -> kvs::Result<T> + Send,
        T: Send,
    {
        self.with_conn(py, |c| op(c))
    }
}

impl BatchTarget for Client {
    fn apply_batch(&self, py: Python<'_>, batch: &WriteBatch) -> PyResult<()> {
        self.with_conn(py, |c| c.apply_batch(batch))?
            .map_err(|err| to_py_err(py, err, None))
    }
}
