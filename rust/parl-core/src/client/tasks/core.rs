//! The task dispatcher's state and decisions, as a plain value: an [`Event`] goes in with the
//! time, [`Effect`]s come out (open or close a lease, run a task on a lease, complete a task).
//! No sockets, no clock: the driver ([`super`]) carries the effects out, and the unit tests
//! drive this type directly.
//!
//! The rules (after the ZeroMQ "responsible workers" broker and IPython's task scheduler):
//! - A task goes only to a lease that is free: one task in flight per lease, or up to the
//!   task's `hwm` for tiny tasks (a small prefetch).
//! - Leases are opened while tasks are runnable and none is free, at most [`MAX_OPENING`] at a
//!   time (a full cluster queues them at the master, not here), and closed after
//!   [`Limits::idle_return`] without work, so other clients get the slots.
//! - A task not answered within its timeout is lost: its lease is closed (the job is killed,
//!   its slot returns) and the task runs again elsewhere if it has attempts left. A crashed job
//!   or a lost worker counts the same. An exception raised by the function is retried only
//!   with `retry_exceptions`. After the last attempt the task fails with every attempt listed.
//! - `after`: a task runs once all its dependencies succeeded; if one fails, the task fails at
//!   once without running, and so do the tasks that depend on it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::Reply;
use crate::error::Error;
use crate::protocol::FailureKind;

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

pub type TaskId = u64;
pub type FunctionId = u64;
pub type LeaseId = u64;

/// The most lease requests one dispatcher has waiting at the master at a time.
pub const MAX_OPENING: usize = 8;

/// How many finished tasks' outcomes are remembered for dependencies submitted later.
const FINISHED_KEPT: usize = 100_000;

/// What a lease's job must offer; tasks run only on leases of their own kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LeaseKind {
    pub n_gpu: u32,
    /// Bytes the job may use beyond its baseline (None: unlimited).
    pub max_memory: Option<u64>,
    /// The worker the job must be on (a task's `follow`); None: any.
    pub on_worker: Option<String>,
}

impl LeaseKind {
    /// Whether a lease of kind `self`, on `place` once open, can run a task of kind `task`:
    /// the same resources, and the task's worker if it names one.
    fn serves(&self, place: Option<&Place>, task: &LeaseKind) -> bool {
        let on_worker = match &task.on_worker {
            Some(worker) => place.is_some_and(|p| p.worker_id == *worker),
            None => true,
        };
        self.n_gpu == task.n_gpu && self.max_memory == task.max_memory && on_worker
    }
}

#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// An attempt not answered within this is lost (its job is killed).
    pub timeout: Option<Duration>,
    /// Attempts after the first one, on a crash, a lost worker or a timeout.
    pub retries: u32,
    /// Retry an exception raised by the function too.
    pub retry_exceptions: bool,
    /// Tasks of this function a lease may hold at once (1: strictly on demand).
    pub hwm: u32,
    pub kind: LeaseKind,
}

impl Default for TaskOptions {
    fn default() -> TaskOptions {
        TaskOptions { timeout: None, retries: 0, retry_exceptions: false, hwm: 1, kind: LeaseKind::default() }
    }
}

/// A task as submitted (its id comes with it: see [`Event::Submit`]).
#[derive(Debug, Clone)]
pub struct TaskSubmission {
    pub function: FunctionId,
    /// The function's name, for errors.
    pub name: String,
    /// The pickled arguments.
    pub payload: Vec<Bytes>,
    pub options: TaskOptions,
    /// Tasks that must succeed first.
    pub after: Vec<TaskId>,
    /// A task that must succeed first, and on whose worker this one must run (data it left
    /// there).
    pub follow: Option<TaskId>,
}

/// Where a lease's job runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    pub worker_id: String,
    pub hostname: String,
    pub job_id: String,
}

/// One attempt at a task that did not succeed: where it ran and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub place: Place,
    pub what: String,
}

/// Why a task failed without a result of its function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailure {
    #[error("task `{name}` failed after {} attempts: {}", attempts.len(), list(attempts))]
    Attempts { name: String, attempts: Vec<Attempt> },
    #[error("task `{name}` did not run: its dependency `{dependency}` failed ({why})")]
    Dependency { name: String, dependency: String, why: String },
    #[error("task `{name}` did not run: {why}")]
    NoLease { name: String, why: String },
    #[error("task `{name}` was cancelled")]
    Cancelled { name: String },
    #[error("task `{name}` cannot follow task {followed}: {why}")]
    Follow { name: String, followed: TaskId, why: String },
}

fn list(attempts: &[Attempt]) -> String {
    let line = |(n, a): (usize, &Attempt)| {
        format!(
            "#{} on worker {} ({}, job {}): {}",
            n + 1,
            a.place.worker_id,
            a.place.hostname,
            a.place.job_id,
            a.what
        )
    };
    attempts.iter().enumerate().map(line).collect::<Vec<_>>().join("; ")
}

/// How a task ended.
pub type TaskResult = Result<Reply, TaskFailure>;

#[derive(Debug)]
pub enum Event {
    Submit {
        id: TaskId,
        task: TaskSubmission,
    },
    /// Cancel a task: a queued one is dropped, a running one is stopped by closing its lease.
    Cancel(TaskId),
    /// A lease's job is ready for tasks.
    LeaseReady {
        lease: LeaseId,
        place: Place,
    },
    /// A lease could not be opened (no slot in time, refused by the master...).
    LeaseFailed {
        lease: LeaseId,
        error: Error,
    },
    /// The answer to a task run on a lease; an error means the lease's job is gone.
    Ran {
        lease: LeaseId,
        task: TaskId,
        reply: Result<Reply, Error>,
    },
    /// The lease's job was found gone before a task was sent to it: the lease is closed and
    /// its tasks run elsewhere, with no attempt counted.
    LeaseGone {
        lease: LeaseId,
    },
    /// Time passed: timeouts and idle leases.
    Tick,
}

#[derive(Debug)]
pub enum Effect {
    /// Ask the master for a job of this kind, and set it up for tasks.
    OpenLease { lease: LeaseId, kind: LeaseKind },
    /// Give the lease's job back (it is ended: a stuck task dies with it).
    CloseLease { lease: LeaseId },
    /// Send a task to a lease; `with_function`: the lease has not seen its function yet.
    Run { lease: LeaseId, task: TaskId, function: FunctionId, with_function: bool, payload: Vec<Bytes> },
    /// The task's outcome.
    Complete { task: TaskId, result: TaskResult },
}

/// Settings of a dispatcher.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A lease without work for this long is given back.
    pub idle_return: Duration,
    /// The most leases (open or opening) of one dispatcher.
    pub max_leases: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { idle_return: Duration::from_millis(500), max_leases: 4096 }
    }
}

struct Task {
    new: TaskSubmission,
    /// Dependencies not finished yet.
    waiting_for: usize,
    attempts: Vec<Attempt>,
    /// Where it runs now, and until when it may.
    running: Option<(LeaseId, Option<Instant>)>,
    /// Where it last ran (for the tasks that follow it).
    ran_on: Option<String>,
}

struct Finished {
    success: bool,
    name: String,
    worker: Option<String>,
}

struct Lease {
    kind: LeaseKind,
    /// None while it is being opened.
    place: Option<Place>,
    running: HashSet<TaskId>,
    defined: HashSet<FunctionId>,
    /// Since when it has had nothing to do.
    idle_since: Instant,
}

/// The dispatcher's state: see the module docs.
pub struct DispatcherCore {
    limits: Limits,
    tasks: HashMap<TaskId, Task>,
    /// Runnable tasks of each kind, oldest first (retries go first).
    runnable: HashMap<LeaseKind, VecDeque<TaskId>>,
    /// Tasks waiting for each unfinished task.
    dependents: HashMap<TaskId, Vec<TaskId>>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    /// The deadline of each running task that has a timeout, soonest first.
    deadlines: BTreeSet<(Instant, TaskId)>,
    /// Each recently finished task: whether it succeeded, its name, and its last worker.
    finished: HashMap<TaskId, Finished>,
    finished_order: VecDeque<TaskId>,
    now: Instant,
    effects: Vec<Effect>,
}

impl DispatcherCore {
    pub fn new(limits: Limits, now: Instant) -> DispatcherCore {
        DispatcherCore {
            limits,
            tasks: HashMap::new(),
            runnable: HashMap::new(),
            dependents: HashMap::new(),
            leases: HashMap::new(),
            next_lease: 1,
            deadlines: BTreeSet::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            now,
            effects: Vec::new(),
        }
    }

    /// Handles `event` at time `now`; returns what must be done.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        self.now = now;
        match event {
            Event::Submit { id, task } => self.submit(id, task),
            Event::Cancel(task) => self.cancel(task),
            Event::LeaseReady { lease, place } => self.lease_ready(lease, place),
            Event::LeaseFailed { lease, error } => self.lease_failed(lease, error),
            Event::Ran { lease, task, reply } => self.ran(lease, task, reply),
            Event::LeaseGone { lease } => self.close_lease(lease, None),
            Event::Tick => self.tick(),
        }
        self.dispatch();
        std::mem::take(&mut self.effects)
    }

    /// Tasks not finished yet.
    pub fn unfinished(&self) -> usize {
        self.tasks.len()
    }

    /// Leases open or being opened.
    pub fn leases(&self) -> usize {
        self.leases.len()
    }

    /// The earliest time a [`Event::Tick`] has something to do (a timeout, an idle lease).
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.deadlines.first().map(|(deadline, _)| *deadline);
        let idle = self
            .leases
            .values()
            .filter(|l| l.place.is_some() && l.running.is_empty())
            .map(|l| l.idle_since + self.limits.idle_return);
        timeout.into_iter().chain(idle).min()
    }

    fn submit(&mut self, id: TaskId, mut new: TaskSubmission) {
        let mut waiting_for = 0;
        let mut failure = None;
        if let Some(followed) = new.follow {
            match (self.tasks.contains_key(&followed), self.finished.get(&followed)) {
                (true, _) => new.after.push(followed),
                (false, Some(Finished { success: true, worker: Some(worker), .. })) => {
                    new.options.kind.on_worker = Some(worker.clone());
                }
                (false, Some(_)) => new.after.push(followed), // failed: the check below
                (false, None) => {
                    let why = "it is not a task of this client, or finished too long ago".into();
                    failure = Some(TaskFailure::Follow { name: new.name.clone(), followed, why });
                }
            }
        }
        for dep in &new.after {
            if self.tasks.contains_key(dep) {
                self.dependents.entry(*dep).or_default().push(id);
                waiting_for += 1;
            } else if let Some(Finished { success: false, name, .. }) = self.finished.get(dep) {
                failure.get_or_insert_with(|| TaskFailure::Dependency {
                    name: new.name.clone(),
                    dependency: name.clone(),
                    why: "it did not succeed".into(),
                });
            }
        }
        let kind = new.options.kind.clone();
        let task = Task { new, waiting_for, attempts: Vec::new(), running: None, ran_on: None };
        self.tasks.insert(id, task);
        if let Some(failure) = failure {
            self.finish(id, Err(failure), false);
        } else if waiting_for == 0 {
            self.runnable.entry(kind).or_default().push_back(id);
        }
    }

    fn cancel(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else { return };
        let name = task.new.name.clone();
        match task.running {
            Some((lease, _)) => self.close_lease(lease, Some(id)),
            None => self.unqueue(id),
        }
        self.finish(id, Err(TaskFailure::Cancelled { name }), false);
    }

    fn unqueue(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get(&id) {
            if let Some(queue) = self.runnable.get_mut(&task.new.options.kind) {
                queue.retain(|t| *t != id);
            }
        }
    }

    fn lease_ready(&mut self, lease: LeaseId, place: Place) {
        if let Some(entry) = self.leases.get_mut(&lease) {
            entry.place = Some(place);
            entry.idle_since = self.now;
        }
    }

    /// A lease could not be opened. If no other lease of its kind is open or opening, the
    /// runnable tasks of that kind can never run: they fail with the reason.
    fn lease_failed(&mut self, lease: LeaseId, error: Error) {
        let Some(failed) = self.leases.remove(&lease) else { return };
        let kind = failed.kind;
        if self.leases.values().any(|l| l.kind == kind) {
            return;
        }
        let queued: Vec<TaskId> = self.runnable.remove(&kind).unwrap_or_default().into();
        for id in queued {
            let name = self.tasks[&id].new.name.clone();
            self.finish(id, Err(TaskFailure::NoLease { name, why: error.to_string() }), false);
        }
    }

    fn ran(&mut self, lease: LeaseId, id: TaskId, reply: Result<Reply, Error>) {
        let reply = match reply {
            Ok(reply) => reply,
            // The lease's job is gone: every task on it is lost.
            Err(error) => return self.lose_lease(lease, &error.to_string()),
        };
        let on_lease = self.tasks.get(&id).is_some_and(|t| t.running.is_some_and(|(l, _)| l == lease));
        if let Some(entry) = self.leases.get_mut(&lease) {
            entry.running.remove(&id);
            if entry.running.is_empty() {
                entry.idle_since = self.now;
            }
        }
        if !on_lease {
            return; // answered after a timeout or a cancel
        }
        let user_error = reply.failure.as_ref().is_some_and(|f| f.kind == FailureKind::User);
        let place = self.place_of(lease);
        self.stop_running(id);
        let task = &self.tasks[&id];
        let retry = user_error && task.new.options.retry_exceptions;
        if retry && (task.attempts.len() as u32) < task.new.options.retries {
            let what = reply.failure.as_ref().map(|f| format!("raised {}: {}", f.exc_type, f.message));
            self.retry(id, place, what.unwrap_or_default());
        } else {
            let success = reply.failure.is_none();
            self.finish(id, Ok(reply), success);
        }
    }

    /// The lease's job is gone (or is being killed): its running tasks are lost.
    fn lose_lease(&mut self, lease: LeaseId, why: &str) {
        let Some(entry) = self.leases.remove(&lease) else { return };
        self.effects.push(Effect::CloseLease { lease });
        let place = entry.place.unwrap_or_default();
        let mut lost: Vec<TaskId> = entry.running.into_iter().collect();
        lost.sort_unstable();
        for id in lost {
            if self.stop_running(id) {
                self.retry(id, place.clone(), format!("its job was lost: {why}"));
            }
        }
    }

    /// Closes `lease` (its job is killed) and puts its running tasks other than `blamed` back
    /// at the front of their queue, with no attempt counted: they were not to blame.
    fn close_lease(&mut self, lease: LeaseId, blamed: Option<TaskId>) {
        let Some(entry) = self.leases.remove(&lease) else { return };
        self.effects.push(Effect::CloseLease { lease });
        let mut innocent: Vec<TaskId> = entry.running.into_iter().filter(|id| Some(*id) != blamed).collect();
        innocent.sort_unstable_by(|a, b| b.cmp(a));
        for id in innocent {
            if self.stop_running(id) {
                let kind = self.tasks[&id].new.options.kind.clone();
                self.runnable.entry(kind).or_default().push_front(id);
            }
        }
        if let Some(id) = blamed {
            self.stop_running(id);
        }
    }

    /// The task no longer runs anywhere (and its deadline is gone). False if it is unknown.
    fn stop_running(&mut self, id: TaskId) -> bool {
        let Some(task) = self.tasks.get_mut(&id) else { return false };
        if let Some((_, Some(deadline))) = task.running.take() {
            self.deadlines.remove(&(deadline, id));
        }
        true
    }

    fn place_of(&self, lease: LeaseId) -> Place {
        self.leases.get(&lease).and_then(|l| l.place.clone()).unwrap_or_default()
    }

    /// Records a failed attempt of `id` at `place`; runs it again if it has attempts left,
    /// else fails it with every attempt listed.
    fn retry(&mut self, id: TaskId, place: Place, what: String) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        task.attempts.push(Attempt { place, what });
        if task.attempts.len() as u32 > task.new.options.retries {
            let failure =
                TaskFailure::Attempts { name: task.new.name.clone(), attempts: task.attempts.clone() };
            self.finish(id, Err(failure), false);
        } else {
            let kind = task.new.options.kind.clone();
            self.runnable.entry(kind).or_default().push_front(id);
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        let expired: Vec<(TaskId, LeaseId)> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .filter_map(|(_, id)| Some((*id, self.tasks.get(id)?.running?.0)))
            .collect();
        for (id, lease) in expired {
            let timeout = self.tasks[&id].new.options.timeout.unwrap_or_default();
            let place = self.place_of(lease);
            // Only this task is blamed; the others on the lease (a prefetch) go back first.
            self.close_lease(lease, Some(id));
            self.retry(id, place, format!("no answer within its timeout of {timeout:?}; its job was killed"));
        }
        let idle: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.place.is_some() && l.running.is_empty())
            .filter(|(_, l)| now.saturating_duration_since(l.idle_since) >= self.limits.idle_return)
            .map(|(id, _)| *id)
            .collect();
        for lease in idle {
            let kind = &self.leases[&lease].kind;
            if self.runnable.get(kind).is_none_or(VecDeque::is_empty) {
                self.close_lease(lease, None);
            } else if let Some(entry) = self.leases.get_mut(&lease) {
                entry.idle_since = now; // kept for work: its next idle deadline is later
            }
        }
    }

    /// A task's outcome: tell its future, and release or fail its dependents.
    fn finish(&mut self, id: TaskId, result: TaskResult, success: bool) {
        self.stop_running(id);
        let Some(task) = self.tasks.remove(&id) else { return };
        let name = task.new.name.clone();
        self.effects.push(Effect::Complete { task: id, result });
        self.remember(id, Finished { success, name: name.clone(), worker: task.ran_on.clone() });
        for dependent in self.dependents.remove(&id).unwrap_or_default() {
            if success {
                let Some(waiting) = self.tasks.get_mut(&dependent) else { continue };
                if waiting.new.follow == Some(id) {
                    waiting.new.options.kind.on_worker = task.ran_on.clone();
                }
                waiting.waiting_for -= 1;
                if waiting.waiting_for == 0 {
                    let kind = waiting.new.options.kind.clone();
                    self.runnable.entry(kind).or_default().push_back(dependent);
                }
            } else if let Some(waiting) = self.tasks.get(&dependent) {
                let failure = TaskFailure::Dependency {
                    name: waiting.new.name.clone(),
                    dependency: name.clone(),
                    why: "it did not succeed".into(),
                };
                self.finish(dependent, Err(failure), false);
            }
        }
    }

    fn remember(&mut self, id: TaskId, finished: Finished) {
        if self.finished.insert(id, finished).is_none() {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > FINISHED_KEPT {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Hands runnable tasks to free leases, and opens or closes leases to match the work.
    fn dispatch(&mut self) {
        let kinds: Vec<LeaseKind> = self.runnable.keys().cloned().collect();
        for kind in kinds {
            self.dispatch_kind(&kind);
        }
        self.runnable.retain(|_, queue| !queue.is_empty());
        self.close_surplus_requests();
    }

    /// Lease requests still waiting at the master beyond the runnable tasks of their kind are
    /// withdrawn (the newest first), so that they do not take slots that others wait for.
    fn close_surplus_requests(&mut self) {
        let mut opening: Vec<(LeaseId, &LeaseKind)> =
            self.leases.iter().filter(|(_, l)| l.place.is_none()).map(|(id, l)| (*id, &l.kind)).collect();
        opening.sort_unstable_by_key(|(id, _)| *id);
        let mut kept: HashMap<&LeaseKind, usize> = HashMap::new();
        let mut surplus = Vec::new();
        for (lease, kind) in opening {
            let count = kept.entry(kind).or_default();
            if *count < self.runnable.get(kind).map_or(0, VecDeque::len) {
                *count += 1;
            } else {
                surplus.push(lease);
            }
        }
        for lease in surplus {
            self.close_lease(lease, None);
        }
    }

    fn dispatch_kind(&mut self, kind: &LeaseKind) {
        loop {
            let Some(&id) = self.runnable.get(kind).and_then(VecDeque::front) else { return };
            let hwm = self.tasks[&id].new.options.hwm.max(1) as usize;
            let free = self
                .leases
                .iter()
                .filter(|(_, l)| l.place.is_some() && l.kind.serves(l.place.as_ref(), kind))
                .filter(|(_, l)| l.running.len() < hwm)
                .min_by_key(|(lease, l)| (l.running.len(), **lease))
                .map(|(lease, _)| *lease);
            match free {
                Some(lease) => {
                    self.runnable.get_mut(kind).expect("has a front").pop_front();
                    self.run(id, lease);
                }
                None => {
                    self.open_leases(kind);
                    return;
                }
            }
        }
    }

    fn run(&mut self, id: TaskId, lease: LeaseId) {
        let now = self.now;
        let entry = self.leases.get_mut(&lease).expect("a free lease");
        let task = self.tasks.get_mut(&id).expect("a runnable task");
        let deadline = task.new.options.timeout.map(|t| now + t);
        task.running = Some((lease, deadline));
        if let Some(deadline) = deadline {
            self.deadlines.insert((deadline, id));
        }
        task.ran_on = entry.place.as_ref().map(|p| p.worker_id.clone());
        entry.running.insert(id);
        let with_function = entry.defined.insert(task.new.function);
        self.effects.push(Effect::Run {
            lease,
            task: id,
            function: task.new.function,
            with_function,
            payload: task.new.payload.clone(),
        });
    }

    /// Opens leases for the runnable tasks of `kind` that no lease will take soon.
    fn open_leases(&mut self, kind: &LeaseKind) {
        let runnable = self.runnable.get(kind).map_or(0, VecDeque::len);
        let opening = self.leases.values().filter(|l| l.kind == *kind && l.place.is_none()).count();
        let all_opening = self.leases.values().filter(|l| l.place.is_none()).count();
        let room = self.limits.max_leases.saturating_sub(self.leases.len());
        let wanted = runnable.saturating_sub(opening).min(MAX_OPENING.saturating_sub(all_opening)).min(room);
        for _ in 0..wanted {
            let lease = self.next_lease;
            self.next_lease += 1;
            let entry = Lease {
                kind: kind.clone(),
                place: None,
                running: HashSet::new(),
                defined: HashSet::new(),
                idle_since: self.now,
            };
            self.leases.insert(lease, entry);
            self.effects.push(Effect::OpenLease { lease, kind: kind.clone() });
        }
    }
}
