//! `kvs.Batch`: writes gathered in Python and applied all at once by the object that made
//! the batch (a `KvStore`, or a `Client`): `with db.batch() as b: ...`.
//!
//! A batch holds a [`kvs::WriteBatch`] and its owner. It does not know what the owner is:
//! the owner implements [`BatchTarget`] and makes its batches with [`Batch::new`], which
//! records how to apply them to it. A `KvStore` applies a batch with
//! [`KvsEngine::apply_batch`](kvs::KvsEngine::apply_batch); a `Client` sends it to its server.

use std::sync::{Mutex, MutexGuard, PoisonError};

use kvs::WriteBatch;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::PyClass;

use crate::input::bytes_of;
use crate::ttl::deadline_of_optional_ttl;

/// What a [`Batch`] can be applied to: the Python classes that hand out batches.
pub trait BatchTarget: PyClass<Frozen = True> + Sync {
    /// Applies every operation of `batch` as one atomic write (all of them or none), with
    /// the GIL released while it waits; a Python exception on failure, nothing written.
    fn apply_batch(&self, py: Python<'_>, batch: &WriteBatch) -> PyResult<()>;
}

/// How a batch applies itself to its owner (the owner's [`BatchTarget::apply_batch`], with
/// the owner's type known again).
type ApplyFn = fn(&Bound<'_, PyAny>, &WriteBatch) -> PyResult<()>;

/// Where a batch is in its life.
enum State {
    /// Taking operations.
    Open(WriteBatch),
    /// Being applied by a `commit()` in progress (on another thread, or the same one).
    Committing,
    /// Applied: done.
    Committed,
    /// Thrown away: done.
    Discarded,
}

/// Writes applied together, all or none (see `kvs.Batch` in `_kvs.pyi`).
#[pyclass(module = "kvs", name = "Batch", frozen, mapping)]
pub struct Batch {
    /// The `KvStore` or `Client` that made the batch; kept alive by it.
    owner: Py<PyAny>,
    /// Applies a batch to `owner`.
    apply: ApplyFn,
    /// Locked only briefly, with the GIL held and never across an engine call, so a thread
    /// waiting for it never holds up one that needs the GIL back.
    state: Mutex<State>,
}

impl Batch {
    /// An empty batch that applies to `owner`.
    pub fn new<T: BatchTarget>(owner: &Bound<'_, T>) -> Batch {
        Batch {
            owner: owner.clone().into_any().unbind(),
            apply: apply_to::<T>,
            state: Mutex::new(State::Open(WriteBatch::new())),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held (it guards plain data): a poisoned lock still
        // holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `add` on the batch if it is open; `ValueError` otherwise.
    fn add(&self, add: impl FnOnce(&mut WriteBatch)) -> PyResult<()> {
        match &mut *self.state() {
            State::Open(batch) => {
                add(batch);
                Ok(())
            }
            done => Err(not_open(done)),
        }
    }
}

/// [`ApplyFn`] for an owner of type `T`.
fn apply_to<T: BatchTarget>(owner: &Bound<'_, PyAny>, batch: &WriteBatch) -> PyResult<()> {
    // Batch::new stored an owner of type T with this function: the cast cannot fail.
    let owner = owner.cast::<T>()?;
    owner.get().apply_batch(owner.py(), batch)
}

/// The `ValueError` for using a batch that no longer takes operations.
fn not_open(state: &State) -> PyErr {
    PyValueError::new_err(match state {
        State::Open(_) => "the batch is open",
        State::Committing => "the batch is being committed",
        State::Committed => "the batch is already committed",
        State::Discarded => "the batch was discarded",
    })
}

#[pymethods]
impl Batch {
    /// Adds a set of `key` to `value` (no deadline).
    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set(key, value, None)
    }

    /// Adds a removal of `key` (not an error if it is not set).
    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.remove(key)
    }

    /// Adds a set of `key` to `value`, expiring `ttl` seconds from this call (None: never).
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let k = bytes_of(key, "key")?;
        let v = bytes_of(value, "value")?;
        let deadline = deadline_of_optional_ttl(ttl)?;
        self.add(|batch| {
            match deadline {
                None => batch.set(&k, &v),
                Some(deadline) => batch.set_with_deadline(&k, &v, deadline),
            };
        })
    }

    /// Adds a removal of `key` (not an error if it is not set).
    fn remove(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = bytes_of(key, "key")?;
        self.add(|batch| {
            batch.remove(&k);
        })
    }

    /// The number of operations added so far (0 once committed or discarded).
    fn __len__(&self) -> usize {
        match &*self.state() {
            State::Open(batch) => batch.len(),
            _ => 0,
        }
    }

    /// Applies every operation, all or none, through the owner; the batch is then done. If
    /// it fails, nothing is written and the batch stays open, as it was.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let batch = {
            let mut state = self.state();
            let State::Open(batch) = &mut *state else {
                return Err(not_open(&state));
            };
            let batch = std::mem::take(batch);
            *state = State::Committing;
            batch
        };
        // The lock is not held here: the owner releases the GIL while it applies the batch.
        match (self.apply)(self.owner.bind(py), &batch) {
            Ok(()) => {
                *self.state() = State::Committed;
                Ok(())
            }
            Err(error) => {
                *self.state() = State::Open(batch);
                Err(error)
            }
        }
    }

    /// Throws the operations away; the batch is then done. Nothing was written.
    fn discard(&self) -> PyResult<()> {
        let mut state = self.state();
        match &*state {
            State::Open(_) => {
                *state = State::Discarded;
                Ok(())
            }
            // Discarding twice, or after the block of a `with` discarded it: nothing to do.
            State::Discarded => Ok(()),
            done => Err(not_open(done)),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Commits the batch if the block ended normally, discards it if the block raised (the
    /// exception goes on). A batch the block committed or discarded itself is left so.
    #[pyo3(signature = (exc_type, _exc, _tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let open = matches!(&*self.state(), State::Open(_));
        if open {
            if exc_type.is_none() {
                self.commit(py)?;
            } else {
                self.discard()?;
            }
        }
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let owner = self.owner.bind(py).repr()?;
        Ok(match &*self.state() {
            State::Open(batch) => format!("<kvs.Batch of {} operation(s) on {owner}>", batch.len()),
            State::Committing => format!("<kvs.Batch being committed on {owner}>"),
            State::Committed => format!("<kvs.Batch committed on {owner}>"),
            State::Discarded => format!("<kvs.Batch discarded on {owner}>"),
        })
    }
}
