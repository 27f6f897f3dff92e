//! `kvs._kvs`: the compiled core of the Python package `kvs`.
//!
//! # Layout
//! - `store.rs`: `KvStore`, an open data directory over [`kvs::AnyEngine`], and the
//!   `KeyIterator` that walks its keys a page at a time.
//! - `batch.rs`: `Batch`, writes applied all at once by the `KvStore` (or `Client`) that made
//!   it.
//! - `client.rs`: `Client`, a connection to a kvs server over [`kvs::KvsClient`].
//! - `error.rs`: the exception classes and the one function mapping [`kvs::KvsError`] to them.
//! - `input.rs`: how Python `bytes` and `str` become keys and values.
//! - `ops.rs`: the operations `KvStore` and `Client` share (get, set, expiry, compare-and-set,
//!   ...), written once over an engine or a connection.
//! - `ttl.rs`: how times to live in seconds become kvs's deadlines.
//!
//! The Python face (`python/kvs/__init__.py`) builds the public classes on these, and
//! `python/kvs/_kvs.pyi` documents them for type checkers.

#![deny(missing_docs)]

mod batch;
mod client;
mod error;
mod input;
mod keys;
mod ops;
mod store;
mod ttl;

use pyo3::prelude::*;

/// The compiled core of kvs; use the `kvs` package instead.
#[pymodule]
mod _kvs {
    use super::*;

    #[pymodule_export]
    use crate::batch::Batch;
    #[pymodule_export]
    use crate::client::Client;
    #[pymodule_export]
    use crate::error::{
        CorruptionError, EngineMismatchError, ForkedError, KvsError, LockedError, ServerError,
    };
    #[pymodule_export]
    use crate::keys::KeyIterator;
    #[pymodule_export]
    use crate::store::Store;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", kvs::VERSION)?;
        m.add("KvsIOError", crate::error::kvs_io_error_type(m.py())?)?;
        Ok(())
    }
}
