//! Times to live from Python, and the deadlines kvs keeps for them.
//!
//! A time to live is a number of seconds: an `int`, a `float` or a `datetime.timedelta` (as
//! redis-py takes `ex=`). kvs keeps a deadline, in milliseconds since the Unix epoch
//! ([`kvs::now_millis`]); a time to live becomes the deadline that many seconds from now,
//! rounded up to the next millisecond, so that a positive time to live never becomes a
//! deadline that has already passed.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt, PyType};

/// `datetime.timedelta`, looked up once.
static TIMEDELTA: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The seconds `obj` stands for: an `int` or `float` (not a `bool`), or a
/// `datetime.timedelta`. `TypeError` for anything else, `ValueError` for NaN or an infinity.
fn seconds_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    let py = obj.py();
    let seconds = if obj.is_instance_of::<PyBool>() {
        None
    } else if obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
        Some(obj.extract::<f64>()?)
    } else {
        let timedelta = TIMEDELTA.import(py, "datetime", "timedelta")?;
        if obj.is_instance(timedelta)? {
            Some(obj.call_method0("total_seconds")?.extract::<f64>()?)
        } else {
            None
        }
    };
    let Some(seconds) = seconds else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a number of seconds (int, float or datetime.timedelta), not {}",
            obj.get_type().name()?
        )));
    };
    if !seconds.is_finite() {
        return Err(PyValueError::new_err(format!(
            "{what} must be a finite number of seconds, not {seconds}"
        )));
    }
    Ok(seconds)
}

/// The deadline `seconds` (positive, finite) from now, rounded up to a whole millisecond.
fn deadline_in(seconds: f64, what: &str) -> PyResult<u64> {
    let millis = (seconds * 1000.0).ceil();
    // 2**64 as a float: every float below it converts to a u64 exactly (`as` truncates an
    // integral value of this size without loss).
    if millis >= 18_446_744_073_709_551_616.0 {
        return Err(PyValueError::new_err(format!(
            "{what} of {seconds} seconds is too large (at most 2**64 milliseconds)"
        )));
    }
    Ok(kvs::now_millis().saturating_add(millis as u64))
}

/// The deadline of `set(..., ttl=...)` as the argument came: none for a missing `ttl` or
/// `None`, else [`deadline_of_ttl`].
pub fn deadline_of_optional_ttl(ttl: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    ttl.filter(|ttl| !ttl.is_none())
        .map(deadline_of_ttl)
        .transpose()
}

/// The deadline of `set(..., ttl=obj)`: `ttl` seconds from now. A `ttl` that is not positive
/// is a `ValueError`, as redis-server refuses `SET ... EX 0` ("invalid expire time"): a value
/// written already expired is always a mistake of the caller.
pub fn deadline_of_ttl(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    let seconds = seconds_of(obj, "ttl")?;
    if seconds <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "ttl must be a positive number of seconds, not {seconds} (to remove a key, use del)"
        )));
    }
    deadline_in(seconds, "ttl")
}

/// The deadline of `expire(key, obj)`: `obj` seconds from now. Zero or fewer seconds give a
/// deadline that has passed, which removes the key, as redis-server's `EXPIRE` does with a
/// time that is not positive.
pub fn deadline_of_expire(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    let seconds = seconds_of(obj, "seconds")?;
    if seconds <= 0.0 {
        // Now is a deadline that has passed (a deadline is the first millisecond the key is
        // gone), whatever clock reading the engine compares it with later.
        return Ok(kvs::now_millis());
    }
    deadline_in(seconds, "seconds")
}

/// Seconds left before `deadline`, as `ttl()` answers them (0.0 for a deadline that is due).
pub fn seconds_left(deadline: u64) -> f64 {
    deadline.saturating_sub(kvs::now_millis()) as f64 / 1000.0
}
