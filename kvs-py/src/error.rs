//! The Python exceptions of kvs, and the one function that maps every [`KvsError`] to them.
//!
//! ```text
//! Exception
//! └── kvs.KvsError                  anything kvs reports that has no closer class below
//!     ├── kvs.CorruptionError       data on disk failed its checksum or is malformed
//!     ├── kvs.KvsIOError            the operating system failed an I/O (also an OSError)
//!     ├── kvs.LockedError           another process or handle has the directory open
//!     ├── kvs.EngineMismatchError   the directory holds the other engine's data
//!     └── kvs.ServerError           the server reported an error or broke the protocol
//! ```
//! Builtin exceptions where Python users expect them: `KeyError` for a missing key,
//! `ValueError` for a bad argument (unknown engine name, key over the size limit),
//! `ConnectionError` (and its subclasses) when a server cannot be reached or drops the
//! connection, `TimeoutError` when it does not answer in time.

use std::io;

use kvs::protocol::ErrorKind;
use pyo3::exceptions::{
    PyBrokenPipeError, PyConnectionAbortedError, PyConnectionError, PyConnectionRefusedError,
    PyConnectionResetError, PyException, PyKeyError, PyOSError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

pyo3::create_exception!(
    kvs,
    KvsError,
    PyException,
    "Base class of the errors kvs raises (besides KeyError, ValueError, TypeError, \
     ConnectionError and TimeoutError)."
);
pyo3::create_exception!(
    kvs,
    CorruptionError,
    KvsError,
    "Data on disk failed its checksum or is malformed; the message names the file and offset. \
     Nothing has been deleted."
);
pyo3::create_exception!(
    kvs,
    LockedError,
    KvsError,
    "Another process (or another open KvStore) holds the data directory."
);
pyo3::create_exception!(
    kvs,
    EngineMismatchError,
    KvsError,
    "The data directory was written by another engine than the one asked for."
);
pyo3::create_exception!(
    kvs,
    ServerError,
    KvsError,
    "A kvs server reported an error, or its reply broke the protocol."
);

/// `kvs.KvsIOError(kvs.KvsError, OSError)`. `create_exception!` allows one base class only,
/// so this one is made with `type(...)` when the module is first initialised.
static KVS_IO_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The `kvs.KvsIOError` class.
pub fn kvs_io_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    let ty = KVS_IO_ERROR.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let bases = PyTuple::new(py, [py.get_type::<KvsError>(), py.get_type::<PyOSError>()])?;
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "kvs")?;
        namespace.set_item(
            "__doc__",
            "The operating system failed an I/O operation of kvs. Also an OSError: `errno` \
             and `filename` are set when known.",
        )?;
        let class = py
            .get_type::<PyType>()
            .call1(("KvsIOError", bases, namespace))?;
        Ok(class.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py))
}

/// Turns a kvs error into the Python exception users catch. `key` is the key of the
/// operation, if any: a `KeyError` carries it, as `dict`'s does.
///
/// This is the only place that decides which Python exception a kvs error becomes.
pub fn to_py_err(py: Python<'_>, err: kvs::KvsError, key: Option<&Bound<'_, PyAny>>) -> PyErr {
    let message = err.to_string();
    match err {
        kvs::KvsError::KeyNotFound => match key {
            Some(key) => PyKeyError::new_err(key.clone().unbind()),
            None => PyKeyError::new_err(message),
        },
        kvs::KvsError::Io(e) => io_err(py, &e, message, None),
        kvs::KvsError::IoAt { path, source } => io_err(
            py,
            &source,
            message,
            Some(path.to_string_lossy().into_owned()),
        ),
        kvs::KvsError::Sled(sled::Error::Io(e)) => io_err(py, &e, message, None),
        kvs::KvsError::Corruption { .. } | kvs::KvsError::Sled(sled::Error::Corruption { .. }) => {
            CorruptionError::new_err(message)
        }
        kvs::KvsError::Locked { .. } => LockedError::new_err(message),
        kvs::KvsError::EngineMismatch { .. } => EngineMismatchError::new_err(message),
        kvs::KvsError::UnknownEngine(_) | kvs::KvsError::InvalidArgument(_) => {
            PyValueError::new_err(message)
        }
        kvs::KvsError::Server(_) | kvs::KvsError::Protocol(_) => ServerError::new_err(message),
        // However the connection failed, the server is unreachable: ConnectionError, as the
        // spec asks, keeping the refused case apart.
        kvs::KvsError::Connect { source, .. } => match source.kind() {
            io::ErrorKind::ConnectionRefused => PyConnectionRefusedError::new_err(message),
            _ => PyConnectionError::new_err(message),
        },
        kvs::KvsError::ConnectionLost { source, .. } => io_err(py, &source, message, None),
        // What the server reports is mapped like the same error of a local store.
        kvs::KvsError::Remote { kind, .. } => match kind {
            ErrorKind::KeyNotFound => match key {
                Some(key) => PyKeyError::new_err(key.clone().unbind()),
                None => PyKeyError::new_err(message),
            },
            ErrorKind::InvalidArgument => PyValueError::new_err(message),
            ErrorKind::Io => kvs_io_error(py, message, None, None),
            ErrorKind::Corruption => CorruptionError::new_err(message),
            _ => ServerError::new_err(message),
        },
        // Poisoned, NotUtf8 (unreachable: Python reads bytes), other sled errors and any
        // variant added later.
        _ => KvsError::new_err(message),
    }
}

/// An I/O error: the builtin connection and timeout classes for network failures (so
/// `except ConnectionError` works as with any Python client), `kvs.KvsIOError` otherwise.
fn io_err(py: Python<'_>, e: &io::Error, message: String, filename: Option<String>) -> PyErr {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => return PyConnectionRefusedError::new_err(message),
        io::ErrorKind::ConnectionReset => return PyConnectionResetError::new_err(message),
        io::ErrorKind::ConnectionAborted => return PyConnectionAbortedError::new_err(message),
        io::ErrorKind::BrokenPipe => return PyBrokenPipeError::new_err(message),
        io::ErrorKind::NotConnected
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::AddrNotAvailable
        | io::ErrorKind::UnexpectedEof => return PyConnectionError::new_err(message),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            return PyTimeoutError::new_err(message)
        }
        _ => {}
    }
    kvs_io_error(py, message, e.raw_os_error(), filename)
}

/// A `kvs.KvsIOError` with `errno` and `filename` set when known.
fn kvs_io_error(
    py: Python<'_>,
    message: String,
    errno: Option<i32>,
    filename: Option<String>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = kvs_io_error_type(py)?;
        let value = class.call1((message.clone(),))?;
        // Set after construction: OSError(errno, strerror) would replace kvs's message
        // (which names the file) by the bare strerror.
        if let Some(code) = errno {
            value.setattr("errno", code)?;
        }
        if let Some(filename) = &filename {
            value.setattr("filename", filename)?;
        }
        Ok(PyErr::from_value(value))
    };
    // Building the exception only fails when Python itself is failing (out of memory);
    // report that rather than losing the I/O error's message entirely.
    build().unwrap_or_else(|failure| {
        let fallback = KvsError::new_err(message);
        fallback.set_cause(py, Some(failure));
        fallback
    })
}
