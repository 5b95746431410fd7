//! Payload frames between Python objects and Rust buffers.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Copies each frame (bytes, bytearray, memoryview, or anything `bytes()` accepts) into a
/// Rust buffer.
pub fn from_python(frames: &[Bound<'_, PyAny>]) -> PyResult<Vec<Bytes>> {
    frames
        .iter()
        .map(|frame| match frame.cast::<PyBytes>() {
            Ok(bytes) => Ok(Bytes::copy_from_slice(bytes.as_bytes())),
            Err(_) => {
                let py = frame.py();
                let bytes = py.get_type::<PyBytes>().call1((frame,))?;
                Ok(Bytes::copy_from_slice(bytes.cast::<PyBytes>()?.as_bytes()))
            }
        })
        .collect()
}

/// Turns frames into a list of Python bytes.
pub fn to_python(py: Python<'_>, frames: &[Bytes]) -> Vec<Py<PyBytes>> {
    frames.iter().map(|f| PyBytes::new(py, f).unbind()).collect()
}
