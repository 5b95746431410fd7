//! [`Call`]: the result of a request, to wait for (`wait`) or to `.await`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use parl_core::client::tasks::TaskId;
use parl_core::Reply;

use crate::error::{Error, Result};

/// Turns the reply into the caller's value.
type Decode<R> = Box<dyn FnOnce(Reply) -> Result<R> + Send>;

/// A request in flight: a method call, an attribute read or write, a task, or an actor's
/// creation. It was sent when it was made; waiting only collects its result.
///
/// Wait for it from plain code with [`Call::wait`], or `.await` it in async code (with a tokio
/// runtime, for [`Call::timeout`]). Calls can be awaited together, e.g. with
/// `futures::future::join_all`; calls on one actor run in the order they were made. Dropping a
/// `Call` drops its result, not the request.
#[must_use = "a Call's result is lost unless it is waited for or awaited"]
pub struct Call<R> {
    what: String,
    state: State<R>,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    task: Option<TaskId>,
}

enum State<R> {
    Waiting {
        reply: oneshot::Receiver<Result<Reply>>,
        decode: Decode<R>,
    },
    /// Failed before it was sent (a bad argument), or already collected.
    Done(Option<Error>),
}

/// Where a reply goes: call it once, from any thread, without blocking.
pub(crate) type Sender = Box<dyn FnOnce(Result<Reply>) + Send>;

impl<R> Call<R> {
    /// A call whose reply the returned sender delivers, and `decode` turns into the value.
    pub(crate) fn pending(
        what: impl Into<String>,
        decode: impl FnOnce(Reply) -> Result<R> + Send + 'static,
    ) -> (Call<R>, Sender) {
        let (tx, rx) = oneshot::channel();
        let call = Call {
            what: what.into(),
            state: State::Waiting { reply: rx, decode: Box::new(decode) },
            timeout: None,
            sleep: None,
            task: None,
        };
        (call, Box::new(move |reply| drop(tx.send(reply))))
    }

    /// A call that failed before it was sent.
    pub(crate) fn failed(what: impl Into<String>, error: Error) -> Call<R> {
        Call { what: what.into(), state: State::Done(Some(error)), timeout: None, sleep: None, task: None }
    }

    pub(crate) fn with_task(mut self, task: TaskId) -> Call<R> {
        self.task = Some(task);
        self
    }

    /// What the call is about (the method, attribute, task or class), as errors name it.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The task's id, for a task: pass it to [`Function::after`](crate::Function::after).
    pub fn task_id(&self) -> Option<TaskId> {
        self.task
    }

    /// Waits at most `after` for the result, then fails with [`Error::Timeout`]. The request
    /// itself goes on (a task's own `timeout` option is what stops a task).
    pub fn timeout(mut self, after: Duration) -> Call<R> {
        self.timeout = Some(after);
        self
    }

    /// Blocks the calling thread until the result is there (at most the [`Call::timeout`]).
    /// Do not call it on an async runtime's thread: `.await` the call there.
    pub fn wait(mut self) -> Result<R> {
        if let State::Done(_) = self.state {
            return Err(self.take_error());
        }
        let State::Waiting { reply, decode } = std::mem::replace(&mut self.state, State::Done(None)) else {
            unreachable!("checked above")
        };
        let reply = match self.timeout {
            None => reply.recv().map_err(|_| shut_down()),
            Some(after) => reply.recv_timeout(after).map_err(|error| match error {
                oneshot::RecvTimeoutError::Timeout => Error::Timeout { what: self.what.clone(), after },
                oneshot::RecvTimeoutError::Disconnected => shut_down(),
            }),
        };
        decode(reply??)
    }

    fn take_error(&mut self) -> Error {
        match &mut self.state {
            State::Done(error) => error.take().unwrap_or_else(|| already_collected(&self.what)),
            State::Waiting { .. } => already_collected(&self.what),
        }
    }
}

impl<R> Future for Call<R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = &mut *self;
        let State::Waiting { reply, .. } = &mut this.state else {
            return Poll::Ready(Err(this.take_error()));
        };
        let received = match Pin::new(reply).poll(cx) {
            Poll::Ready(received) => received.map_err(|_| shut_down()),
            Poll::Pending => {
                let Some(after) = this.timeout else { return Poll::Pending };
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.state = State::Done(None);
                return Poll::Ready(Err(Error::Timeout { what: this.what.clone(), after }));
            }
        };
        let State::Waiting { decode, .. } = std::mem::replace(&mut this.state, State::Done(None)) else {
            unreachable!("checked above")
        };
        Poll::Ready(received.and_then(|reply| reply).and_then(decode))
    }
}

impl<R> std::fmt::Debug for Call<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("what", &self.what).field("task", &self.task).finish_non_exhaustive()
    }
}

fn shut_down() -> Error {
    Error::Cluster(parl_core::Error::Shutdown)
}

fn already_collected(what: &str) -> Error {
    Error::InvalidArgument(format!("the result of `{what}` was already collected"))
}
