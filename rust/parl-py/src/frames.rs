//! Payload frames between Python objects and Rust buffers, with as few copies as is safe.
//!
//! Outgoing:
//! - `bytes` (the pickle stream, small or large) is immutable: Rust keeps a reference to the
//!   object and sends its memory as is.
//! - Other buffers (a numpy array's out-of-band pickle buffer) can be changed by their owner
//!   at any time, so they are lent without a copy only when the caller says it will not touch
//!   them until the frames are sent ([`Lending::Lend`]: a synchronous call, which waits for
//!   its reply, or a job reply that waits for [`Returns::wait`]); otherwise they are copied.
//!
//! Incoming: frames of 64 KiB or more become [`PyFrame`]s, which expose the received memory
//! through the buffer protocol without a copy; smaller ones become `bytes`. The transport reads
//! such a frame into an allocation of its own, so the frame is normally its only owner and the
//! `PyFrame` is writable (numpy arrays come back writable, as the sender had them, without the
//! copy `parl_rs.serialization` makes of a read-only frame).
//!
//! A lent buffer is dropped by the I/O thread once its frame is written, and releasing a
//! Python buffer needs the GIL, which the I/O thread must never wait for. So the drop parks
//! the buffer, and the next call into this module (which holds the GIL) releases it.

use std::os::raw::{c_int, c_void};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Below this size a copy costs less than tracking a lent buffer.
const ZERO_COPY_MIN: usize = 64 * 1024;

/// Lent buffers whose frames were sent, waiting for the GIL to be released.
static PARKED: Mutex<Vec<PyUntypedBuffer>> = Mutex::new(Vec::new());

/// Whether mutable buffers may be sent without a copy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lending {
    /// The caller leaves the buffers alone until the frames are sent.
    Lend,
    /// The caller may change the buffers at once: copy them.
    Copy,
}

/// Counts the buffers of one message still lent to the I/O thread.
#[derive(Default)]
pub struct Returns {
    lent: Mutex<usize>,
    returned: Condvar,
}

impl Returns {
    /// Waits (without the GIL: call inside `py.detach`) until every lent buffer is back, up to
    /// `timeout` (a peer that does not read gets the message dropped after 5 s anyway).
    pub fn wait(&self, timeout: Duration) {
        let lent = self.lent.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.returned.wait_timeout_while(lent, timeout, |lent| *lent > 0);
    }

    pub fn any_lent(&self) -> bool {
        *self.lent.lock().unwrap_or_else(|e| e.into_inner()) > 0
    }

    fn lend(&self) {
        *self.lent.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn give_back(&self) {
        *self.lent.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.returned.notify_all();
    }
}

/// An immutable `bytes` object owned by a frame. Dropping the reference off the GIL is safe:
/// PyO3 defers the decref to the next time the GIL is held.
struct SharedBytes {
    _object: Py<PyBytes>,
    data: *const u8,
    len: usize,
}

// SAFETY: a bytes object's memory is immutable and lives as long as the reference held here.
unsafe impl Send for SharedBytes {}
unsafe impl Sync for SharedBytes {}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the Send impl; data/len were read from the object under the GIL.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// A Python buffer lent to a frame (see the module comment).
struct LentBuffer {
    buffer: Option<PyUntypedBuffer>,
    data: *const u8,
    len: usize,
    returns: Arc<Returns>,
}

// SAFETY: the buffer keeps the exporting object's memory alive and in place; the caller
// promised not to change it until the frame is dropped (`Lending::Lend`).
unsafe impl Send for LentBuffer {}
unsafe impl Sync for LentBuffer {}

impl AsRef<[u8]> for LentBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the Send impl.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl Drop for LentBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            PARKED.lock().unwrap_or_else(|e| e.into_inner()).push(buffer);
        }
        self.returns.give_back();
    }
}

/// Releases the parked buffers (the GIL is held: `_py`).
fn release_parked(py: Python<'_>) {
    let parked = std::mem::take(&mut *PARKED.lock().unwrap_or_else(|e| e.into_inner()));
    for buffer in parked {
        buffer.release(py);
    }
}

/// Whether sending `payload` is worth releasing the GIL for: the sending thread writes the
/// frames to the connection itself, which for large ones takes a while.
pub fn is_large(payload: &[Bytes]) -> bool {
    payload.iter().map(Bytes::len).sum::<usize>() >= ZERO_COPY_MIN
}

/// Turns each frame (bytes, bytearray, memoryview, or any buffer) into a Rust buffer; see the
/// module comment for when that copies. The returned [`Returns`] tells when lent buffers are
/// back.
pub fn from_python(frames: &[Bound<'_, PyAny>], lending: Lending) -> PyResult<(Vec<Bytes>, Arc<Returns>)> {
    let returns = Arc::new(Returns::default());
    let Some(first) = frames.first() else { return Ok((Vec::new(), returns)) };
    release_parked(first.py());
    let payload = frames.iter().map(|frame| one_frame(frame, lending, &returns)).collect::<PyResult<_>>()?;
    Ok((payload, returns))
}

fn one_frame(frame: &Bound<'_, PyAny>, lending: Lending, returns: &Arc<Returns>) -> PyResult<Bytes> {
    if let Ok(bytes) = frame.cast::<PyBytes>() {
        let data = bytes.as_bytes();
        if data.len() < ZERO_COPY_MIN {
            return Ok(Bytes::copy_from_slice(data));
        }
        let shared = SharedBytes { data: data.as_ptr(), len: data.len(), _object: bytes.clone().unbind() };
        return Ok(Bytes::from_owner(shared));
    }
    let buffer = PyUntypedBuffer::get(frame)?;
    if !buffer.is_c_contiguous() {
        // Rare (pickle's out-of-band buffers are contiguous): let Python gather it.
        buffer.release(frame.py());
        let copy = frame.py().get_type::<PyBytes>().call1((frame,))?;
        return Ok(Bytes::copy_from_slice(copy.cast::<PyBytes>()?.as_bytes()));
    }
    let (data, len) = (buffer.buf_ptr() as *const u8, buffer.len_bytes());
    if lending == Lending::Copy || len < ZERO_COPY_MIN {
        // SAFETY: a C-contiguous buffer of len_bytes bytes, held (so valid) for this copy.
        let copy = Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
        buffer.release(frame.py());
        return Ok(copy);
    }
    returns.lend();
    Ok(Bytes::from_owner(LentBuffer { buffer: Some(buffer), data, len, returns: returns.clone() }))
}

/// The memory of a received frame.
enum Received {
    /// Owned by the frame alone: Python may write to it.
    Owned(BytesMut),
    /// Shared with something else still holding the buffer: read-only.
    Shared(Bytes),
}

/// A received frame, exposed to Python through the buffer protocol without a copy: writable
/// when the frame owns its memory alone, read-only otherwise (`parl_rs.serialization` then
/// copies it once, since numpy arrays must come back writable).
#[pyclass(name = "Frame", frozen, module = "parl_rs._core")]
pub struct PyFrame {
    memory: Received,
    /// Where `memory` starts, taken while it was still `&mut` (Python writes through it).
    data: *mut u8,
}

// SAFETY: `data` points into `memory`, which never moves and is never changed from Rust, and
// which nothing else references when it is `Owned`; Python reads and writes it with the GIL
// held, as it does every other method of this class.
unsafe impl Send for PyFrame {}
unsafe impl Sync for PyFrame {}

impl PyFrame {
    fn new(frame: Bytes) -> Self {
        match frame.try_into_mut() {
            Ok(mut owned) => PyFrame { data: owned.as_mut_ptr(), memory: Received::Owned(owned) },
            Err(shared) => PyFrame { data: shared.as_ptr() as *mut u8, memory: Received::Shared(shared) },
        }
    }

    fn as_slice(&self) -> &[u8] {
        match &self.memory {
            Received::Owned(owned) => owned,
            Received::Shared(shared) => shared,
        }
    }

    fn writable(&self) -> bool {
        matches!(self.memory, Received::Owned(_))
    }
}

#[pymethods]
impl PyFrame {
    /// # Safety
    /// Called by Python's buffer protocol with a valid `view`.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no view to fill"));
        }
        let frame = slf.get();
        let (data, len) = (frame.data as *mut c_void, frame.as_slice().len() as isize);
        // A request for a writable buffer of a read-only frame fails, as for `bytes`.
        let readonly = c_int::from(!frame.writable());
        // SAFETY: `view` is valid (checked above); the memory lives as long as `slf`, which
        // PyBuffer_FillInfo stores (with a new reference) in the view.
        let filled = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), data, len, readonly, flags) };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.as_slice().len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.as_slice())
    }
}

/// Turns frames into Python objects: `bytes` below 64 KiB, [`PyFrame`]s from there on. Takes
/// the frames by value: a frame held nowhere else becomes a writable `PyFrame`.
pub fn to_python(py: Python<'_>, frames: Vec<Bytes>) -> PyResult<Vec<Py<PyAny>>> {
    release_parked(py);
    frames
        .into_iter()
        .map(|frame| {
            if frame.len() < ZERO_COPY_MIN {
                Ok(PyBytes::new(py, &frame).into_any().unbind())
            } else {
                Ok(Py::new(py, PyFrame::new(frame))?.into_any())
            }
        })
        .collect()
}
