//! `kvs.Client`: one reused connection to a kvs server, over [`kvs::KvsClient`].

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kvs::KvsClient;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::error::to_py_err;
use crate::input::{bytes_of, optional_bytes_of};

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
    fn with_conn<T, F>(&self, py: Python<'_>, op: F) -> PyResult<kvs::Result<T>>
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
        signature = (addr="127.0.0.1:4000", *, timeout=Some(DEFAULT_TIMEOUT_SECS)),
        text_signature = "(addr='127.0.0.1:4000', *, timeout=10.0)"
    )]
    fn new(py: Python<'_>, addr: &str, timeout: Option<f64>) -> PyResult<Self> {
        let timeout = to_duration(timeout)?;
        let target = addr.to_owned();
        let conn = py
            .detach(move || {
                let mut conn = match timeout {
                    Some(t) => KvsClient::connect_timeout(target.as_str(), t)?,
                    None => KvsClient::connect(target.as_str())?,
                };
                conn.set_timeout(timeout)?;
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
        let k = bytes_of(key, "key")?;
        let value = self
            .with_conn(py, |c| c.get_bytes(&k))?
            .map_err(|err| to_py_err(py, err, Some(key)))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    /// Sets `key` to `value`.
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = bytes_of(key, "key")?;
        let v = bytes_of(value, "value")?;
        self.with_conn(py, |c| c.set_bytes(&k, &v))?
            .map_err(|err| to_py_err(py, err, Some(key)))
    }

    /// Removes `key`; KeyError if it is not set.
    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = bytes_of(key, "key")?;
        self.with_conn(py, |c| c.remove_bytes(&k))?
            .map_err(|err| to_py_err(py, err, Some(key)))
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
        let k = bytes_of(key, "key")?;
        let expected = optional_bytes_of(expected, "expected")?;
        let new = optional_bytes_of(new, "new")?;
        self.with_conn(py, |c| {
            c.compare_and_set_bytes(&k, expected.as_deref(), new.as_deref())
        })?
        .map_err(|err| to_py_err(py, err, Some(key)))
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
