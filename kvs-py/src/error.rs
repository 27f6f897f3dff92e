//! The Python exceptions of kvs, and the one function that maps every kvs error to them, by
//! its kind.
//!
//! ```text
//! Exception
//! └── kvs.KvsError                  anything kvs reports that has no closer class below
//!     ├── kvs.CorruptionError       data on disk failed its checksum or is malformed
//!     ├── kvs.KvsIOError            the operating system failed an I/O (also an OSError)
//!     ├── kvs.LockedError           another process or handle has the directory open
//!     ├── kvs.EngineMismatchError   the directory holds the other engine's data
//!     ├── kvs.ForkedError           the store or client was opened by the parent process
//!     └── kvs.ServerError           the server reported an error or broke the protocol
//! ```
//! Builtin exceptions where Python users expect them: `KeyError` for a missing key,
//! `ValueError` for a bad argument (unknown engine name, key over the size limit),
//! `ConnectionError` (and its subclasses) when a server cannot be reached or drops the
//! connection, `TimeoutError` when it does not answer in time. (A closed store or client
//! raises `ValueError` too, from `store.rs` and `client.rs`: that is no kvs error.)

use std::io;

use kvs::ErrorKind;
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
    ForkedError,
    KvsError,
    "The store (or client) was opened by another process, of which this one is a child made by \
     fork() (multiprocessing's 'fork' start method, os.fork()). A handle belongs to the process \
     that opened it: open the store again in this process once the parent has closed it, or \
     in a fresh process. Nothing was read or written."
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
        // OSError's own __str__ would print "[Errno N] None: 'file'" (kvs sets errno and
        // filename but has no bare strerror); show kvs's message, which says it all.
        namespace.set_item(
            "__str__",
            py.get_type::<pyo3::exceptions::PyBaseException>()
                .getattr("__str__")?,
        )?;
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
/// This is the only place that decides which Python exception a kvs error becomes. The class
/// follows from the error's kind ([`kvs::KvsError::kind`]): an error a server reported maps
/// like the same error of a local store. The error itself only adds the message, `errno` and
/// `filename`, and which `ConnectionError` subclass a connection failure is.
pub fn to_py_err(py: Python<'_>, err: kvs::KvsError, key: Option<&Bound<'_, PyAny>>) -> PyErr {
    let message = err.to_string();
    let os_error = err
        .os_error()
        .map(|source| (source.kind(), source.raw_os_error()));
    match err.kind() {
        ErrorKind::KeyNotFound => key_error(key, message),
        ErrorKind::InvalidArgument => PyValueError::new_err(message),
        ErrorKind::Io => kvs_io_error(
            py,
            message,
            os_error.and_then(|(_, errno)| errno),
            err.path().map(|path| path.to_string_lossy().into_owned()),
        ),
        ErrorKind::Corruption => CorruptionError::new_err(message),
        ErrorKind::Locked => LockedError::new_err(message),
        ErrorKind::EngineMismatch => EngineMismatchError::new_err(message),
        ErrorKind::Forked => ForkedError::new_err(message),
        ErrorKind::Protocol => ServerError::new_err(message),
        // However connecting failed (refused, unreachable, timed out, unresolvable), the
        // server cannot be reached: ConnectionError, as Python clients do.
        ErrorKind::Connect => match os_error {
            Some((io::ErrorKind::ConnectionRefused, _)) => {
                PyConnectionRefusedError::new_err(message)
            }
            _ => PyConnectionError::new_err(message),
        },
        ErrorKind::ConnectionLost => match os_error.map(|(kind, _)| kind) {
            Some(io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                PyTimeoutError::new_err(message)
            }
            Some(io::ErrorKind::ConnectionReset) => PyConnectionResetError::new_err(message),
            Some(io::ErrorKind::ConnectionAborted) => PyConnectionAbortedError::new_err(message),
            Some(io::ErrorKind::BrokenPipe) => PyBrokenPipeError::new_err(message),
            _ => PyConnectionError::new_err(message),
        },
        // Any other failure a server reported (its store locked, poisoned, ...): the server's.
        _ if err.is_remote() => ServerError::new_err(message),
        // Poisoned, an engine's own failure, and any kind added later.
        _ => KvsError::new_err(message),
    }
}

/// `KeyError(key)`, like `dict`'s, or with kvs's message when there is no key at hand.
fn key_error(key: Option<&Bound<'_, PyAny>>, message: String) -> PyErr {
    match key {
        Some(key) => PyKeyError::new_err(key.clone().unbind()),
        None => PyKeyError::new_err(message),
    }
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
        // Set after construction: OSError(errno, strerror, filename) would make its args
        // the bare strerror instead of kvs's message.
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
