//! [`KeyIterator`]: the keys of a store or of a server, walked a `scan` page at a time, so it
//! holds one page of keys, never the whole key set. `iter(db)`, `db.keys(...)`,
//! `db.scan_iter()` and the same on `kvs.Client` all return one.
//!
//! The guarantees are those of the scan: every key that is set for the whole walk comes out
//! (at least once: a key may come out twice when the store changes during the walk); a key set
//! or removed meanwhile may or may not. Changing the store while iterating is safe.

use std::collections::VecDeque;

use kvs::{KvsEngine, ScanFilter, ScanPage};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::client::Client;
use crate::error::to_py_err;
use crate::store::Store;

/// What a [`KeyIterator`] walks.
pub(crate) enum Walked {
    Store(Py<Store>),
    Client(Py<Client>),
}

impl Walked {
    /// One page of the walk, the GIL released while the engine or the network works.
    fn scan(
        &self,
        py: Python<'_>,
        cursor: u64,
        count: usize,
        filter: &ScanFilter,
    ) -> PyResult<ScanPage> {
        match self {
            Walked::Store(store) => store
                .get()
                .with_engine(py, |e| e.scan_bytes(cursor, count, filter))?,
            Walked::Client(client) => client
                .get()
                .with_conn(py, |c| c.scan_bytes(cursor, count, filter))?,
        }
        .map_err(|err| to_py_err(py, err, None))
    }
}

#[pyclass(module = "kvs", name = "KeyIterator")]
pub struct KeyIterator {
    walked: Walked,
    filter: ScanFilter,
    count: usize,
    /// The cursor of the next page.
    cursor: u64,
    /// Whether the last page was read.
    done: bool,
    /// Keys of the current page not yet handed out.
    page: VecDeque<Vec<u8>>,
}

impl KeyIterator {
    pub(crate) fn new(walked: Walked, filter: ScanFilter, count: usize) -> KeyIterator {
        KeyIterator {
            walked,
            filter,
            count,
            cursor: 0,
            done: false,
            page: VecDeque::new(),
        }
    }
}

#[pymethods]
impl KeyIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        loop {
            if let Some(key) = self.page.pop_front() {
                return Ok(Some(PyBytes::new(py, &key)));
            }
            if self.done {
                return Ok(None);
            }
            // A page may be empty (a filter passed none of the keys looked at) without the
            // walk being over: only a cursor of 0 ends it.
            let page = self
                .walked
                .scan(py, self.cursor, self.count, &self.filter)?;
            self.cursor = page.cursor;
            self.done = page.cursor == 0;
            self.page.extend(page.keys);
        }
    }
}
