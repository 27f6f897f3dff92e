//! The operations `kvs.KvStore` and `kvs.Client` share, written once: each takes its keys
//! and values from Python, runs on an engine or a connection with the GIL released (through
//! [`Backend`]), and turns what comes back into Python objects and exceptions.

use kvs::{AnyEngine, KeyExpiry, KvsClient, KvsEngine};
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::error::to_py_err;
use crate::input::{bytes_of, optional_bytes_of};
use crate::ttl::{deadline_of_expire, deadline_of_optional_ttl, seconds_left};

/// The byte-level calls the shared operations make: those of [`KvsEngine`] for a store, of
/// [`KvsClient`] (which takes `&mut self`: one connection) for a client.
pub(crate) trait Ops {
    fn get_bytes(&mut self, key: &[u8]) -> kvs::Result<Option<Vec<u8>>>;
    fn set_bytes(&mut self, key: &[u8], value: &[u8]) -> kvs::Result<()>;
    fn set_with_deadline_bytes(
        &mut self,
        key: &[u8],
        value: &[u8],
        deadline: u64,
    ) -> kvs::Result<()>;
    fn expire_at_bytes(&mut self, key: &[u8], deadline: u64) -> kvs::Result<bool>;
    fn persist_bytes(&mut self, key: &[u8]) -> kvs::Result<bool>;
    fn expiry_bytes(&mut self, key: &[u8]) -> kvs::Result<KeyExpiry>;
    fn get_many_bytes(&mut self, keys: &[&[u8]]) -> kvs::Result<Vec<Option<Vec<u8>>>>;
    fn remove_bytes(&mut self, key: &[u8]) -> kvs::Result<()>;
    fn compare_and_set_bytes(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> kvs::Result<bool>;
}

/// Forwards every [`Ops`] call to the methods of the same name.
macro_rules! forward_ops {
    ($ty:ty) => {
        impl Ops for $ty {
            fn get_bytes(&mut self, key: &[u8]) -> kvs::Result<Option<Vec<u8>>> {
                (*self).get_bytes(key)
            }
            fn set_bytes(&mut self, key: &[u8], value: &[u8]) -> kvs::Result<()> {
                (*self).set_bytes(key, value)
            }
            fn set_with_deadline_bytes(
                &mut self,
                key: &[u8],
                value: &[u8],
                deadline: u64,
            ) -> kvs::Result<()> {
                (*self).set_with_deadline_bytes(key, value, deadline)
            }
            fn expire_at_bytes(&mut self, key: &[u8], deadline: u64) -> kvs::Result<bool> {
                (*self).expire_at_bytes(key, deadline)
            }
            fn persist_bytes(&mut self, key: &[u8]) -> kvs::Result<bool> {
                (*self).persist_bytes(key)
            }
            fn expiry_bytes(&mut self, key: &[u8]) -> kvs::Result<KeyExpiry> {
                (*self).expiry_bytes(key)
            }
            fn get_many_bytes(&mut self, keys: &[&[u8]]) -> kvs::Result<Vec<Option<Vec<u8>>>> {
                (*self).get_many_bytes(keys)
            }
            fn remove_bytes(&mut self, key: &[u8]) -> kvs::Result<()> {
                (*self).remove_bytes(key)
            }
            fn compare_and_set_bytes(
                &mut self,
                key: &[u8],
                expected: Option<&[u8]>,
                new: Option<&[u8]>,
            ) -> kvs::Result<bool> {
                (*self).compare_and_set_bytes(key, expected, new)
            }
        }
    };
}

forward_ops!(KvsClient);
forward_ops!(&AnyEngine);

/// What runs the operations: a store (its engine) or a client (its connection).
pub(crate) trait Backend {
    /// Runs `op` with the GIL released; a Python exception if the object is closed.
    fn run<T, F>(&self, py: Python<'_>, op: F) -> PyResult<kvs::Result<T>>
    where
        F: FnOnce(&mut dyn Ops) -> kvs::Result<T> + Send,
        T: Send;
}

/// The value of `key`, `None` if it is not set.
pub(crate) fn get<'py>(
    on: &impl Backend,
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let k = bytes_of(key, "key")?;
    let value = on
        .run(py, |o| o.get_bytes(&k))?
        .map_err(|err| to_py_err(py, err, Some(key)))?;
    Ok(value.map(|v| PyBytes::new(py, &v)))
}

/// Sets `key` to `value`, expiring `ttl` seconds from now (`None` or Python `None`: never).
pub(crate) fn set(
    on: &impl Backend,
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    ttl: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let k = bytes_of(key, "key")?;
    let v = bytes_of(value, "value")?;
    let deadline = deadline_of_optional_ttl(ttl)?;
    on.run(py, |o| match deadline {
        None => o.set_bytes(&k, &v),
        Some(deadline) => o.set_with_deadline_bytes(&k, &v, deadline),
    })?
    .map_err(|err| to_py_err(py, err, Some(key)))
}

/// Gives the existing `key` a deadline `seconds` from now; whether the key was set.
pub(crate) fn expire(
    on: &impl Backend,
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    seconds: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let k = bytes_of(key, "key")?;
    let deadline = deadline_of_expire(seconds)?;
    on.run(py, |o| o.expire_at_bytes(&k, deadline))?
        .map_err(|err| to_py_err(py, err, Some(key)))
}

/// Seconds left before `key` expires; `None` without a deadline; `KeyError` if not set.
pub(crate) fn ttl(
    on: &impl Backend,
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
) -> PyResult<Option<f64>> {
    let k = bytes_of(key, "key")?;
    let expiry = on
        .run(py, |o| o.expiry_bytes(&k))?
        .map_err(|err| to_py_err(py, err, Some(key)))?;
    match expiry {
        KeyExpiry::Missing => Err(PyKeyError::new_err(key.clone().unbind())),
        KeyExpiry::Never => Ok(None),
        KeyExpiry::At(deadline) => Ok(Some(seconds_left(deadline))),
    }
}

/// Removes the deadline of `key`; whether it had one.
pub(crate) fn persist(on: &impl Backend, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
    let k = bytes_of(key, "key")?;
    on.run(py, |o| o.persist_bytes(&k))?
        .map_err(|err| to_py_err(py, err, Some(key)))
}

/// The values of `keys`, in order, read at one instant.
pub(crate) fn get_many<'py>(
    on: &impl Backend,
    py: Python<'py>,
    keys: &Bound<'py, PyAny>,
) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
    if keys.is_instance_of::<PyBytes>() || keys.is_instance_of::<PyString>() {
        // Iterating over one key would ask for each of its characters.
        return Err(PyTypeError::new_err(format!(
            "keys must be an iterable of keys, not a single {} key: use get()",
            keys.get_type().name()?
        )));
    }
    let objects = keys
        .try_iter()?
        .collect::<PyResult<Vec<Bound<'py, PyAny>>>>()?;
    let owned = objects
        .iter()
        .map(|key| bytes_of(key, "key"))
        .collect::<PyResult<Vec<_>>>()?;
    let borrowed: Vec<&[u8]> = owned.iter().map(|k| &**k).collect();
    let values = on
        .run(py, |o| o.get_many_bytes(&borrowed))?
        .map_err(|err| to_py_err(py, err, None))?;
    Ok(values
        .into_iter()
        .map(|value| value.map(|v| PyBytes::new(py, &v)))
        .collect())
}

/// Removes `key`; `KeyError` if it is not set.
pub(crate) fn remove(on: &impl Backend, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
    let k = bytes_of(key, "key")?;
    on.run(py, |o| o.remove_bytes(&k))?
        .map_err(|err| to_py_err(py, err, Some(key)))
}

/// If the value of `key` is `expected` (`None`: not set), sets it to `new` (`None`: removes
/// it) and returns `true`; otherwise changes nothing and returns `false`.
pub(crate) fn compare_and_set(
    on: &impl Backend,
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    expected: Option<&Bound<'_, PyAny>>,
    new: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let k = bytes_of(key, "key")?;
    let expected = optional_bytes_of(expected, "expected")?;
    let new = optional_bytes_of(new, "new")?;
    on.run(py, |o| {
        o.compare_and_set_bytes(&k, expected.as_deref(), new.as_deref())
    })?
    .map_err(|err| to_py_err(py, err, Some(key)))
}

/// Replaces the value of `key` with `func(old)` (`None`: not set / remove it) and returns the
/// new value, as a read and a compare-and-set, again whenever another write changed the key
/// in between: `func` may run more than once.
///
/// Not on the engine's `update_bytes`: that one calls its function with the engine's writer
/// lock held, and `func` is Python code, which needs the GIL, which another thread may hold
/// while it waits for that lock. Here no lock of kvs is held while `func` runs (the GIL is, as
/// Python code needs), and every engine or network call releases the GIL.
pub(crate) fn update_value<'py>(
    on: &impl Backend,
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    func: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let k = bytes_of(key, "key")?;
    loop {
        let old = on
            .run(py, |o| o.get_bytes(&k))?
            .map_err(|err| to_py_err(py, err, Some(key)))?;
        let result = func.call1((old.as_deref().map(|v| PyBytes::new(py, v)),))?;
        let new = match result.is_none() {
            true => None,
            false => Some(bytes_of(&result, "value")?.into_owned()),
        };
        if new == old {
            // Nothing to write.
            return Ok(new.map(|v| PyBytes::new(py, &v)));
        }
        let swapped = on
            .run(py, |o| {
                o.compare_and_set_bytes(&k, old.as_deref(), new.as_deref())
            })?
            .map_err(|err| to_py_err(py, err, Some(key)))?;
        if swapped {
            return Ok(new.map(|v| PyBytes::new(py, &v)));
        }
    }
}
