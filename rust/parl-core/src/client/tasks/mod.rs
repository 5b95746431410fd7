//! Stateless tasks on leased jobs.
//!
//! A lease is a warm job the master grants this client for tasks, through the same queue and
//! placement as an actor (it is an actor of the host language's task runner). Tasks and their
//! results go directly between this client and its leased jobs; the master only grants leases
//! and takes them back. The decisions (which task goes where, when to open or give back a
//! lease, timeouts, retries, dependencies) are the pure [`DispatcherCore`]; this module is its
//! driver: one tokio task that turns commands and replies into core events and carries out the
//! effects.

mod core;

pub use self::core::{
    Attempt, DispatcherCore, Effect, Event, FunctionId, LeaseId, LeaseKind, Limits, Place, TaskFailure,
    TaskId, TaskOptions, TaskResult, TaskSubmission, MAX_OPENING,
};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Actor, ActorSpec, Client, Reply};
use crate::error::{Error, Result};
pub use crate::protocol::LEASE_CLASS;
use crate::protocol::{ActorOptions, CallKind};

/// What runs when a task ends. It runs on the dispatcher's task, so it must not block.
pub type OnDone = Box<dyn FnOnce(TaskResult) + Send>;

/// The class a leased job is set up as: the Python job's task runner, which installs the
/// client's code context; the tasks themselves run in `parl_rs._job`.
const RUNNER_CLASS: (&str, &str, &str, Option<&str>) = ("by_ref", "parl_rs.tasks", "TaskRunner", None);

/// How a client's tasks get their leases.
#[derive(Clone)]
pub struct TaskSettings {
    /// The options of each leased job's runner: where it finds the client's code (an
    /// exception raised by a task never ends the lease, whatever these say).
    pub runner_options: ActorOptions,
    /// How long a lease request may wait in the master's queue.
    pub create_timeout: Duration,
    pub limits: Limits,
}

/// The task dispatcher of one client. Cheap to clone; the dispatcher stops (its leases given
/// back, its unfinished tasks cancelled) when the last clone is dropped.
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<TasksInner>,
}

struct TasksInner {
    commands: mpsc::UnboundedSender<Command>,
    next_task: AtomicU64,
}

impl Drop for TasksInner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

enum Command {
    Define { function: FunctionId, pickled: Bytes },
    Submit { id: TaskId, task: TaskSubmission, on_done: OnDone },
    Core(Event),
    InitAnswered { lease: LeaseId, reply: Result<Reply> },
    Close,
}

impl Tasks {
    /// Starts the dispatcher of `client` on the client's runtime.
    pub fn start(client: &Client, settings: TaskSettings) -> Tasks {
        let (commands, inbox) = mpsc::unbounded_channel();
        let driver = Driver {
            core: DispatcherCore::new(settings.limits.clone(), Instant::now()),
            client: client.clone(),
            settings,
            leases: HashMap::new(),
            functions: HashMap::new(),
            waiting: HashMap::new(),
            commands: commands.clone(),
        };
        client.inner.runtime.spawn(driver.run(inbox));
        Tasks { inner: Arc::new(TasksInner { commands, next_task: AtomicU64::new(1) }) }
    }

    /// Makes `function` known: `pickled` goes to each leased job once, with its first task.
    pub fn define(&self, function: FunctionId, pickled: Bytes) {
        let _ = self.inner.commands.send(Command::Define { function, pickled });
    }

    /// Queues a task; `on_done` gets its outcome. Returns its id (for `after`, `follow` and
    /// `cancel`). Never blocks. Fails at once if a dependency is not an earlier task of this
    /// dispatcher.
    pub fn submit(
        &self,
        task: TaskSubmission,
        on_done: impl FnOnce(TaskResult) + Send + 'static,
    ) -> Result<TaskId> {
        let id = self.inner.next_task.fetch_add(1, Ordering::Relaxed);
        if let Some(bad) = task.after.iter().chain(&task.follow).find(|dep| **dep >= id || **dep == 0) {
            return Err(Error::Protocol(format!(
                "task `{}` cannot wait for task {bad}: it is not an earlier task of this client",
                task.name
            )));
        }
        let on_done: OnDone = Box::new(on_done);
        self.inner.commands.send(Command::Submit { id, task, on_done }).map_err(|_| Error::Shutdown)?;
        Ok(id)
    }

    /// Cancels a task: a queued one never runs; a running one is stopped (its job is killed).
    pub fn cancel(&self, task: TaskId) {
        let _ = self.inner.commands.send(Command::Core(Event::Cancel(task)));
    }
}

struct Driver {
    core: DispatcherCore,
    client: Client,
    settings: TaskSettings,
    /// The runner actor of each open lease.
    leases: HashMap<LeaseId, Actor>,
    functions: HashMap<FunctionId, Bytes>,
    waiting: HashMap<TaskId, OnDone>,
    /// For the callbacks of requests on leases.
    commands: mpsc::UnboundedSender<Command>,
}

impl Driver {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let shutdown = self.client.inner.shutdown.clone();
        loop {
            let deadline = self.core.next_deadline();
            let tick = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(Command::Close) | None => break,
                    Some(command) => self.command(command),
                },
                _ = tick => self.handle(Event::Tick),
                _ = shutdown.cancelled() => break,
            }
        }
        self.leases.clear();
        for (_, on_done) in self.waiting.drain() {
            on_done(Err(TaskFailure::NoLease { name: String::new(), why: "its client was closed".into() }));
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Define { function, pickled } => {
                self.functions.insert(function, pickled);
            }
            Command::Submit { id, task, on_done } => {
                self.client.counters().task_submitted();
                self.waiting.insert(id, on_done);
                self.handle(Event::Submit { id, task });
            }
            Command::Core(event) => self.handle(event),
            Command::InitAnswered { lease, reply } => self.init_answered(lease, reply),
            Command::Close => {}
        }
    }

    fn init_answered(&mut self, lease: LeaseId, reply: Result<Reply>) {
        let event = match reply {
            Ok(Reply { failure: None, .. }) => {
                let grant = self.leases.get(&lease).and_then(Actor::grant);
                let place = grant
                    .map(|g| Place {
                        worker_id: g.worker_id.clone(),
                        hostname: g.hostname.clone(),
                        job_id: g.job_id.clone(),
                    })
                    .unwrap_or_default();
                Event::LeaseReady { lease, place }
            }
            Ok(Reply { failure: Some(failure), .. }) => {
                self.leases.remove(&lease);
                let why =
                    format!("a job could not be set up for tasks: {}: {}", failure.exc_type, failure.message);
                Event::LeaseFailed { lease, error: Error::Protocol(why) }
            }
            Err(error) => {
                self.leases.remove(&lease);
                Event::LeaseFailed { lease, error }
            }
        };
        self.handle(event);
    }

    fn handle(&mut self, event: Event) {
        for effect in self.core.handle(event, Instant::now()) {
            self.apply(effect);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::OpenLease { lease, kind } => self.open_lease(lease, kind),
            Effect::CloseLease { lease } => {
                self.leases.remove(&lease); // dropping the runner releases it: its job exits
            }
            Effect::Run { lease, task, function, with_function, payload } => {
                let pickled = if with_function { self.functions.get(&function).cloned() } else { None };
                let mut frames = Vec::with_capacity(payload.len() + 1);
                frames.push(pickled.unwrap_or_default());
                frames.extend(payload);
                let commands = self.commands.clone();
                let on_reply = move |reply| {
                    let _ = commands.send(Command::Core(Event::Ran { lease, task, reply }));
                };
                match self.leases.get(&lease) {
                    // Its job died while it was idle (the master said so): not the task's fault.
                    Some(runner) if !runner.is_alive() => {
                        let _ = self.commands.send(Command::Core(Event::LeaseGone { lease }));
                    }
                    Some(runner) => runner.submit(CallKind::Task, &function.to_string(), frames, on_reply),
                    None => on_reply(Err(Error::Protocol(format!("lease {lease} is not open")))),
                }
            }
            Effect::Complete { task, result } => {
                let failed = !matches!(&result, Ok(reply) if reply.failure.is_none());
                self.client.counters().task_finished(failed);
                if let Some(on_done) = self.waiting.remove(&task) {
                    on_done(result);
                }
            }
        }
    }

    fn open_lease(&mut self, lease: LeaseId, kind: LeaseKind) {
        let spec = ActorSpec {
            n_cpu: u32::from(kind.n_gpu == 0),
            n_gpu: kind.n_gpu,
            timeout: self.settings.create_timeout,
            class_name: LEASE_CLASS.into(),
            max_memory: kind.max_memory,
            on_worker: kind.on_worker,
            options: ActorOptions { keep_alive_on_error: true, ..self.settings.runner_options.clone() },
        };
        let runner = self.client.spawn_actor(spec);
        let commands = self.commands.clone();
        runner.submit(CallKind::init(), RUNNER_CLASS.2, vec![runner_init()], move |reply| {
            let _ = commands.send(Command::InitAnswered { lease, reply });
        });
        self.leases.insert(lease, runner);
    }
}

/// The `Init` payload of a task runner, `(class, args, kwargs)`: plain pickle, which the job
/// reads in either encoding.
fn runner_init() -> Bytes {
    let no_args: [u8; 0] = [];
    let no_kwargs = std::collections::BTreeMap::<String, u8>::new();
    let payload = serde_pickle::to_vec(&(RUNNER_CLASS, no_args, no_kwargs), serde_pickle::SerOptions::new())
        .expect("builtin values always pickle");
    Bytes::from(payload)
}
