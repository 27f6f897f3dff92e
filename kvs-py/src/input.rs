//! How Python keys and values become bytes: `bytes` as they are, `str` encoded as UTF-8,
//! anything else a `TypeError`.
//!
//! `bytearray` and `memoryview` are refused on purpose: they are mutable, and the engine
//! reads a key or value with the GIL released, when another thread could resize them.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// The bytes of `obj`, borrowed from a `bytes` object (no copy), or encoded from a `str`.
/// `what` names the argument in the `TypeError` ("key" or "value").
pub fn bytes_of<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(bytes.as_bytes()));
    }
    if let Ok(text) = obj.cast::<PyString>() {
        // A str with lone surrogates cannot be encoded: UnicodeEncodeError (a ValueError).
        return Ok(match text.to_cow()? {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        });
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be bytes or str, not {}",
        obj.get_type().name()?
    )))
}

/// [`bytes_of`] for an argument where None means "no value" (a key that is not set): the
/// `expected` and `new` of compare-and-set.
pub fn optional_bytes_of<'a>(
    obj: Option<&'a Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<Option<Cow<'a, [u8]>>> {
    obj.map(|obj| bytes_of(obj, what)).transpose()
}
