//! `PendingReply` and `CompletionQueue`: how Python learns about a reply without the I/O thread
//! ever taking the GIL.
//!
//! A request's reply is stored in its [`Slot`] on the I/O thread, which wakes whoever waits on
//! the slot and, if a [`CompletionQueue`] watches it, pushes the watcher's key onto that queue.
//! Python then either blocks on the slot (`PendingReply.wait`, the GIL released), has one
//! thread block on the queue and complete its futures (see `parl_rs.future`), or has an
//! asyncio event loop wait on the queue's eventfd (see `parl_rs.aio`): the I/O thread writes
//! to it only when the queue goes from empty to not empty, so a burst of replies costs the
//! loop one wake-up, and no thread takes the GIL to tell the loop.
//!
//! The reply's payload frames move out of the slot into Python objects once, so that a frame
//! nothing else holds becomes a writable `Frame` (see `frames`); later waits get the same objects.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use parl_core::protocol::{CallKind, RemoteFailure};
use parl_core::{Actor, Reply, Result};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::client::{PyRemoteFailure, RequestResult};
use crate::errors::actor_error;
use crate::{frames, wait};

/// Where one reply lands.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    filled: Condvar,
}

#[derive(Default)]
struct SlotState {
    reply: Option<Result<Reply>>,
    /// The queues to tell, and the key to tell each, when the reply lands (the futures'
    /// thread, and an event loop awaiting the reply).
    watchers: Vec<(Arc<Completions>, u64)>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called once, on the I/O thread (or wherever the actor ended).
    fn fill(&self, reply: Result<Reply>) {
        let watchers = {
            let mut state = self.state();
            state.reply = Some(reply);
            std::mem::take(&mut state.watchers)
        };
        self.filled.notify_all();
        for (queue, key) in watchers {
            queue.push(key);
        }
    }

    /// How the request ended, once it has: its failure if the job reported one, or the error
    /// that ended the actor. The payload stays in the slot (see [`Self::take_payload`]).
    fn outcome(&self) -> Option<Outcome> {
        self.state().reply.as_ref().map(outcome_of)
    }

    /// The outcome, waiting up to `timeout` for it.
    fn wait(&self, timeout: Duration) -> Option<Outcome> {
        let state = self.state();
        let (state, _) = self
            .filled
            .wait_timeout_while(state, timeout, |s| s.reply.is_none())
            .unwrap_or_else(|e| e.into_inner());
        state.reply.as_ref().map(outcome_of)
    }

    /// Moves the reply's payload out (empty if there is none, or if it was taken before).
    fn take_payload(&self) -> Vec<Bytes> {
        match &mut self.state().reply {
            Some(Ok(reply)) => std::mem::take(&mut reply.payload),
            _ => Vec::new(),
        }
    }

    fn watch(&self, queue: Arc<Completions>, key: u64) {
        let mut state = self.state();
        if state.reply.is_some() {
            drop(state);
            queue.push(key);
        } else {
            state.watchers.push((queue, key));
        }
    }
}

/// A reply without its payload: the failure the job reported, if any.
type Outcome = Result<Option<RemoteFailure>>;

fn outcome_of(reply: &Result<Reply>) -> Outcome {
    reply.as_ref().map(|reply| reply.failure.clone()).map_err(Clone::clone)
}

/// The reply to one request, once it arrives.
#[pyclass(name = "PendingReply", frozen, module = "parl_rs._core")]
pub struct PyPendingReply {
    slot: Arc<Slot>,
    /// The method or attribute the request is about, for errors (`__init__` for "init").
    func_name: String,
    /// The payload as Python objects, made by the first wait that finds the reply (a
    /// `PyOnceLock`: exactly once, even if two threads wait).
    frames: PyOnceLock<PyResult<Vec<Py<PyAny>>>>,
}

impl PyPendingReply {
    /// Sends a request on `actor`; never blocks.
    pub fn submit(actor: &Actor, op: CallKind, name: &str, frames: Vec<bytes::Bytes>) -> PyPendingReply {
        let func_name = if matches!(op, CallKind::Init(_)) { "__init__" } else { name };
        let slot = Arc::new(Slot::default());
        let filler = slot.clone();
        actor.submit(op, name, frames, move |reply| filler.fill(reply));
        PyPendingReply { slot, func_name: func_name.to_string(), frames: PyOnceLock::new() }
    }

    /// A reply that the returned closure fills (from any thread, without the GIL).
    pub fn waiting(func_name: &str) -> (PyPendingReply, impl FnOnce(Result<Reply>) + Send + 'static) {
        let slot = Arc::new(Slot::default());
        let filler = slot.clone();
        let pending = PyPendingReply { slot, func_name: func_name.to_string(), frames: PyOnceLock::new() };
        (pending, move |reply| filler.fill(reply))
    }

    fn to_python(&self, py: Python<'_>, outcome: Outcome) -> PyResult<RequestResult> {
        let failure = outcome.map_err(|e| actor_error(e, &self.func_name))?;
        let frames = match self.frames.get_or_init(py, || frames::to_python(py, self.slot.take_payload())) {
            Ok(frames) => frames.iter().map(|frame| frame.clone_ref(py)).collect(),
            Err(error) => return Err(error.clone_ref(py)),
        };
        Ok((frames, failure.map(PyRemoteFailure::from)))
    }
}

#[pymethods]
impl PyPendingReply {
    fn done(&self) -> bool {
        self.slot.state().reply.is_some()
    }

    #[pyo3(signature = (timeout=None))]
    pub(crate) fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<RequestResult> {
        if let Some(outcome) = self.slot.outcome() {
            return self.to_python(py, outcome);
        }
        let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let what = format!("call of `{}`", self.func_name);
        let outcome = wait::wait_for(py, timeout, &what, |slice| self.slot.wait(slice))?;
        self.to_python(py, outcome)
    }

    fn __repr__(&self) -> String {
        let state = if self.done() { "done" } else { "pending" };
        format!("<PendingReply `{}` {state}>", self.func_name)
    }
}

/// Keys of watched replies that have landed, in the order they landed.
#[derive(Default)]
struct Completions {
    state: Mutex<CompletionState>,
    ready: Condvar,
    /// Readable while keys wait (for an event loop), once [`Completions::notifier`] made it.
    eventfd: std::sync::OnceLock<std::os::fd::OwnedFd>,
}

#[derive(Default)]
struct CompletionState {
    keys: VecDeque<u64>,
    closed: bool,
}

impl Completions {
    fn state(&self) -> MutexGuard<'_, CompletionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, key: u64) {
        let was_empty = {
            let mut state = self.state();
            state.keys.push_back(key);
            state.keys.len() == 1
        };
        self.ready.notify_one();
        if let (true, Some(fd)) = (was_empty, self.eventfd.get()) {
            // A full counter (it never is: drain resets it) would only mean it is readable.
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an eventfd this queue owns.
            unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// The eventfd that is readable while keys wait; made on first use.
    fn notifier(&self) -> std::io::Result<RawFd> {
        if let Some(fd) = self.eventfd.get() {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: eventfd(2) with valid flags; the descriptor is owned below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let fd = self.eventfd.get_or_init(|| fd).as_raw_fd();
        // Keys pushed before the eventfd existed must wake the loop too.
        if !self.state().keys.is_empty() {
            let one = 1u64.to_ne_bytes();
            // SAFETY: as in `push`.
            unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
        }
        Ok(fd)
    }

    /// Every key that has landed, without waiting; resets the eventfd first, so that a key
    /// pushed after this takes the keys wakes the loop again.
    fn drain(&self) -> Vec<u64> {
        if let Some(fd) = self.eventfd.get() {
            let mut counter = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN (nothing to read) is fine.
            unsafe { libc::read(fd.as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
        }
        self.state().keys.drain(..).collect()
    }

    /// Every key that has landed, waiting up to `timeout` (None: for ever) for the first.
    /// None once closed.
    fn next(&self, timeout: Option<Duration>) -> Option<Vec<u64>> {
        let state = self.state();
        let idle = |s: &mut CompletionState| s.keys.is_empty() && !s.closed;
        let mut state = match timeout {
            None => self.ready.wait_while(state, idle).unwrap_or_else(|e| e.into_inner()),
            Some(timeout) => {
                self.ready.wait_timeout_while(state, timeout, idle).unwrap_or_else(|e| e.into_inner()).0
            }
        };
        if state.closed {
            return None;
        }
        Some(state.keys.drain(..).collect())
    }

    fn close(&self) {
        self.state().closed = true;
        self.ready.notify_all();
    }
}

/// Tells one consumer thread which watched replies have landed.
#[pyclass(name = "CompletionQueue", frozen, module = "parl_rs._core")]
pub struct PyCompletionQueue {
    inner: Arc<Completions>,
}

#[pymethods]
impl PyCompletionQueue {
    #[new]
    fn new() -> Self {
        PyCompletionQueue { inner: Arc::default() }
    }

    fn watch(&self, pending: &PyPendingReply, key: u64) {
        pending.slot.watch(self.inner.clone(), key);
    }

    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> Option<Vec<u64>> {
        let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let inner = &self.inner;
        py.detach(|| inner.next(timeout))
    }

    fn close(&self) {
        self.inner.close();
    }

    /// The eventfd that is readable while keys wait, for `loop.add_reader`.
    fn fileno(&self) -> PyResult<i32> {
        self.inner.notifier().map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("eventfd: {e}")))
    }

    /// Every key pushed so far, without waiting (`[]` if none).
    fn drain(&self) -> Vec<u64> {
        self.inner.drain()
    }
}
