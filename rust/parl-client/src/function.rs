//! [`Function`]: stateless tasks of a Python function, with the options of Python's
//! `@remote_function`.

use std::time::Duration;

use parl_core::client::tasks::{TaskId, TaskOptions, TaskSubmission};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::Call;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::pickle;

/// A Python function whose calls run as tasks: each on a job leased from the cluster when it
/// has work, handed out as jobs become free. A task that times out or whose job is lost is
/// retried (`retries`); an exception of the function is its result (retried only with
/// `retry_exceptions`) and, unlike an actor's, ends nothing.
#[must_use]
#[derive(Clone)]
pub struct Function {
    client: Client,
    name: String,
    options: TaskOptions,
    after: Vec<TaskId>,
    follow: Option<TaskId>,
}

impl Function {
    pub(crate) fn new(client: Client, name: &str) -> Function {
        Function {
            client,
            name: name.to_string(),
            options: TaskOptions::default(),
            after: Vec::new(),
            follow: None,
        }
    }

    /// An attempt not answered within `timeout` is lost: its job is killed, and the task is
    /// retried if it has retries left.
    pub fn timeout(mut self, timeout: Duration) -> Function {
        self.options.timeout = Some(timeout);
        self
    }

    /// Attempts after the first, when an attempt is lost (its job crashed or timed out, its
    /// worker was lost).
    pub fn retries(mut self, retries: u32) -> Function {
        self.options.retries = retries;
        self
    }

    /// Retry an exception raised by the function too.
    pub fn retry_exceptions(mut self, retry: bool) -> Function {
        self.options.retry_exceptions = retry;
        self
    }

    /// GPUs for each task, on one worker of a GPU cluster.
    pub fn gpus(mut self, n_gpu: u32) -> Function {
        self.options.kind.n_gpu = n_gpu;
        self
    }

    /// Memory a task's job may use beyond its start-up memory (MB of 2^20 bytes).
    pub fn max_memory_mb(mut self, mb: u64) -> Function {
        self.options.kind.max_memory = Some(mb.saturating_mul(1 << 20));
        self
    }

    /// Tasks of this function a leased job may hold at once: 1 (the default) hands each task
    /// to a job only when it is free; more keeps tiny tasks flowing.
    pub fn prefetch(mut self, tasks: u32) -> Function {
        self.options.hwm = tasks.max(1);
        self
    }

    /// Tasks (earlier tasks of this client, by [`Call::task_id`]) that must succeed first; if
    /// one fails, tasks submitted with this option fail without running.
    pub fn after(mut self, tasks: impl IntoIterator<Item = TaskId>) -> Function {
        self.after.extend(tasks);
        self
    }

    /// A task (an earlier task of this client) that must succeed first, and on whose worker
    /// the tasks submitted with this option run: to use what it left there (a file, a cache).
    pub fn follow(mut self, task: TaskId) -> Function {
        self.follow = Some(task);
        self
    }

    /// Queues one task with the positional arguments `args` (a tuple); never blocks.
    pub fn submit<R: DeserializeOwned>(&self, args: impl Serialize) -> Call<R> {
        self.submit_kw(args, ())
    }

    /// Queues one task with positional and keyword arguments.
    pub fn submit_kw<R: DeserializeOwned>(&self, args: impl Serialize, kwargs: impl Serialize) -> Call<R> {
        match self.queue(&args, &kwargs) {
            Ok(call) => call,
            Err(error) => Call::failed(self.name.clone(), error),
        }
    }

    /// Runs one task and waits for its value.
    pub fn call<R: DeserializeOwned>(&self, args: impl Serialize) -> Result<R> {
        self.submit(args).wait()
    }

    fn queue<R: DeserializeOwned>(&self, args: &impl Serialize, kwargs: &impl Serialize) -> Result<Call<R>> {
        let (module, qualname) = crate::split_reference(&self.name, "module:function")?;
        let payload = pickle::call_payload(&self.name, args, kwargs)?;
        let (tasks, function) = self.client.tasks_of(module, qualname)?;
        let submission = TaskSubmission {
            function,
            name: self.name.clone(),
            payload: vec![payload],
            options: self.options.clone(),
            after: self.after.clone(),
            follow: self.follow,
        };
        let what = self.name.clone();
        let (call, sender) = Call::pending(self.name.clone(), move |reply: parl_core::Reply| {
            if let Some(failure) = reply.failure {
                return Err(Error::remote(&what, failure));
            }
            pickle::decode(&what, pickle::reply_value(&what, &reply.payload)?)
        });
        let id = tasks.submit(submission, move |result| sender(result.map_err(Error::Task)))?;
        Ok(call.with_task(id))
    }
}
