//! The dispatcher core driven with plain events and made-up times.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::protocol::{FailureKind, RemoteFailure};

struct Dispatcher {
    core: DispatcherCore,
    now: Instant,
}

impl Dispatcher {
    fn new() -> Dispatcher {
        let now = Instant::now();
        Dispatcher { core: DispatcherCore::new(Limits::default(), now), now }
    }

    fn event(&mut self, event: Event) -> Vec<Effect> {
        self.core.handle(event, self.now)
    }

    fn submit(&mut self, id: TaskId, options: TaskOptions, after: &[TaskId]) -> Vec<Effect> {
        self.submit_task(id, options, after, None)
    }

    fn submit_task(
        &mut self,
        id: TaskId,
        options: TaskOptions,
        after: &[TaskId],
        follow: Option<TaskId>,
    ) -> Vec<Effect> {
        let task = TaskSubmission {
            function: 7,
            name: format!("f{id}"),
            payload: vec![Bytes::from_static(b"args")],
            options,
            after: after.to_vec(),
            follow,
        };
        self.event(Event::Submit { id, task })
    }

    /// A lease on worker `worker`.
    fn ready_on(&mut self, lease: LeaseId, worker: &str) -> Vec<Effect> {
        let place = Place { worker_id: worker.into(), hostname: "h".into(), job_id: format!("j{lease}") };
        self.event(Event::LeaseReady { lease, place })
    }

    fn ready(&mut self, lease: LeaseId) -> Vec<Effect> {
        let place =
            Place { worker_id: format!("w{lease}"), hostname: "h".into(), job_id: format!("j{lease}") };
        self.event(Event::LeaseReady { lease, place })
    }

    fn answer(&mut self, lease: LeaseId, task: TaskId, failure: Option<FailureKind>) -> Vec<Effect> {
        let failure = failure.map(|kind| RemoteFailure {
            kind,
            exc_type: "builtins.ValueError".into(),
            message: "bad".into(),
            traceback: String::new(),
        });
        self.event(Event::Ran { lease, task, reply: Ok(Reply { payload: Vec::new(), failure }) })
    }

    fn crash(&mut self, lease: LeaseId, task: TaskId) -> Vec<Effect> {
        let error = Error::ActorDied {
            actor_id: "j".into(),
            hostname: "h".into(),
            reason: "killed by signal 9".into(),
        };
        self.event(Event::Ran { lease, task, reply: Err(error) })
    }
}

fn opened(effects: &[Effect]) -> Vec<LeaseId> {
    effects
        .iter()
        .filter_map(|e| if let Effect::OpenLease { lease, .. } = e { Some(*lease) } else { None })
        .collect()
}

fn closed(effects: &[Effect]) -> Vec<LeaseId> {
    effects
        .iter()
        .filter_map(|e| if let Effect::CloseLease { lease } = e { Some(*lease) } else { None })
        .collect()
}

/// (lease, task, with_function) of each Run.
fn runs(effects: &[Effect]) -> Vec<(LeaseId, TaskId, bool)> {
    let run = |e: &Effect| match e {
        Effect::Run { lease, task, with_function, .. } => Some((*lease, *task, *with_function)),
        _ => None,
    };
    effects.iter().filter_map(run).collect()
}

fn completed(effects: &[Effect]) -> Vec<(TaskId, &TaskResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Complete { task, result } => Some((*task, result)),
            _ => None,
        })
        .collect()
}

fn retries(n: u32) -> TaskOptions {
    TaskOptions { retries: n, ..TaskOptions::default() }
}

#[test]
fn tasks_go_only_to_free_leases_and_the_function_travels_once_per_lease() {
    let mut d = Dispatcher::new();
    let mut effects = Vec::new();
    for id in 1..=3 {
        effects.extend(d.submit(id, TaskOptions::default(), &[]));
    }
    assert_eq!(opened(&effects), [1, 2, 3], "one lease request per task waiting");
    assert!(runs(&effects).is_empty(), "no lease is ready");
    assert_eq!(runs(&d.ready(1)), [(1, 1, true)]);
    assert_eq!(runs(&d.ready(2)), [(2, 2, true)]);
    let effects = d.answer(1, 1, None);
    assert!(matches!(completed(&effects)[..], [(1, Ok(_))]));
    assert_eq!(runs(&effects), [(1, 3, false)], "lease 1 knows the function now");
    assert_eq!(closed(&effects), [3], "no task left for the lease still being opened");
    assert!(runs(&d.answer(2, 2, None)).is_empty(), "one task in flight per lease, none left");
}

#[test]
fn lease_requests_are_bounded_and_a_prefetch_fills_a_lease_up_to_its_hwm() {
    let mut d = Dispatcher::new();
    let mut effects = Vec::new();
    for id in 1..=50 {
        effects.extend(d.submit(id, TaskOptions { hwm: 3, ..TaskOptions::default() }, &[]));
    }
    assert_eq!(opened(&effects).len(), MAX_OPENING);
    let effects = d.ready(1);
    assert_eq!(runs(&effects), [(1, 1, true), (1, 2, false), (1, 3, false)]);
    assert_eq!(opened(&effects).len(), 1, "a request that came through is replaced");
}

#[test]
fn a_timeout_kills_the_job_and_the_task_runs_again_elsewhere_then_fails_with_every_attempt() {
    let mut d = Dispatcher::new();
    let options = TaskOptions { timeout: Some(Duration::from_secs(2)), retries: 1, ..TaskOptions::default() };
    d.submit(1, options, &[]);
    d.ready(1);
    assert_eq!(d.core.next_deadline(), Some(d.now + Duration::from_secs(2)));
    d.now += Duration::from_millis(1999);
    assert!(closed(&d.event(Event::Tick)).is_empty());
    d.now += Duration::from_millis(1);
    let effects = d.event(Event::Tick);
    assert_eq!(closed(&effects), [1], "the stuck job is killed");
    assert_eq!(opened(&effects), [2], "the retry needs another lease");
    assert_eq!(runs(&d.ready(2)), [(2, 1, true)]);
    assert!(completed(&d.answer(1, 1, None)).is_empty(), "a late answer of the killed job is ignored");
    d.now += Duration::from_secs(2);
    let effects = d.event(Event::Tick);
    match completed(&effects)[..] {
        [(1, Err(TaskFailure::Attempts { attempts, .. }))] => {
            assert_eq!(attempts.len(), 2);
            assert_eq!(
                (attempts[0].place.worker_id.as_str(), attempts[1].place.worker_id.as_str()),
                ("w1", "w2")
            );
            assert!(attempts[0].what.contains("timeout of 2s"), "{}", attempts[0].what);
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn a_crash_is_retried_and_a_raised_exception_only_when_asked() {
    let mut d = Dispatcher::new();
    d.submit(1, retries(1), &[]);
    d.ready(1);
    let effects = d.crash(1, 1);
    assert_eq!(closed(&effects), [1]);
    assert!(completed(&effects).is_empty(), "one retry left");
    let effects = d.ready(2);
    assert_eq!(runs(&effects), [(2, 1, true)]);
    let effects = d.answer(2, 1, Some(FailureKind::User));
    match completed(&effects)[..] {
        [(1, Ok(reply))] => assert!(reply.failure.is_some(), "the function's error is its result"),
        ref other => panic!("{other:?}"),
    }
    let effects = d.submit(2, TaskOptions { retry_exceptions: true, ..retries(1) }, &[]);
    assert_eq!(runs(&effects), [(2, 2, false)]);
    let effects = d.answer(2, 2, Some(FailureKind::User));
    assert_eq!(runs(&effects), [(2, 2, false)], "retried on the same healthy lease");
}

#[test]
fn a_failed_dependency_fails_its_dependents_down_the_graph_without_running_them() {
    let mut d = Dispatcher::new();
    d.submit(1, TaskOptions::default(), &[]);
    d.submit(2, TaskOptions::default(), &[1]);
    d.submit(3, TaskOptions::default(), &[2]);
    d.submit(4, TaskOptions::default(), &[]);
    let effects = d.ready(1);
    assert_eq!(runs(&effects), [(1, 1, true)]);
    let effects = d.crash(1, 1);
    let failed: Vec<TaskId> = completed(&effects).iter().map(|(id, _)| *id).collect();
    assert_eq!(failed, [1, 2, 3]);
    match completed(&effects)[2] {
        (3, Err(TaskFailure::Dependency { dependency, .. })) => assert_eq!(dependency, "f2"),
        ref other => panic!("{other:?}"),
    }
    let effects = d.submit(5, TaskOptions::default(), &[3]);
    assert!(matches!(completed(&effects)[..], [(5, Err(TaskFailure::Dependency { .. }))]), "{effects:?}");
    let effects = d.ready(2);
    assert_eq!(runs(&effects), [(2, 4, true)], "only the independent task runs");
}

#[test]
fn a_dependent_runs_once_its_dependencies_succeeded() {
    let mut d = Dispatcher::new();
    d.submit(1, TaskOptions::default(), &[]);
    d.submit(2, TaskOptions::default(), &[1]);
    assert_eq!(runs(&d.ready(1)), [(1, 1, true)]);
    assert_eq!(runs(&d.answer(1, 1, None)), [(1, 2, false)]);
}

#[test]
fn cancel_drops_a_queued_task_and_kills_a_running_one() {
    let mut d = Dispatcher::new();
    d.submit(1, TaskOptions::default(), &[]);
    d.submit(2, TaskOptions::default(), &[]);
    let effects = d.event(Event::Cancel(2));
    assert!(matches!(completed(&effects)[..], [(2, Err(TaskFailure::Cancelled { .. }))]));
    assert_eq!(closed(&effects), [2], "its lease request is withdrawn");
    assert_eq!(runs(&d.ready(1)), [(1, 1, true)]);
    let effects = d.event(Event::Cancel(1));
    assert_eq!(closed(&effects), [1]);
    assert_eq!(d.core.unfinished(), 0);
}

#[test]
fn an_idle_lease_is_given_back_and_a_lease_that_cannot_open_fails_the_waiting_tasks() {
    let mut d = Dispatcher::new();
    d.submit(1, TaskOptions::default(), &[]);
    d.ready(1);
    d.answer(1, 1, None);
    d.now += Limits::default().idle_return;
    assert_eq!(closed(&d.event(Event::Tick)), [1]);
    assert_eq!(d.core.leases(), 0);

    d.submit(
        2,
        TaskOptions { kind: LeaseKind { n_gpu: 9, ..LeaseKind::default() }, ..TaskOptions::default() },
        &[],
    );
    let effects =
        d.event(Event::LeaseFailed { lease: 2, error: Error::Refused("no worker has 9 GPUs".into()) });
    match completed(&effects)[..] {
        [(2, Err(TaskFailure::NoLease { why, .. }))] => assert!(why.contains("9 GPUs"), "{why}"),
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn a_following_task_runs_on_the_worker_of_the_task_it_follows() {
    let mut d = Dispatcher::new();
    d.submit(1, TaskOptions::default(), &[]);
    d.submit(2, TaskOptions::default(), &[]);
    assert_eq!(runs(&d.ready_on(1, "wa")), [(1, 1, true)]);
    assert_eq!(runs(&d.ready_on(2, "wb")), [(2, 2, true)]);
    let effects = d.submit_task(3, TaskOptions::default(), &[], Some(1));
    assert!(runs(&effects).is_empty(), "it waits for the task it follows");
    d.answer(1, 1, None); // lease 1 (on wa) is free, but busy again at once:
    d.submit(4, TaskOptions::default(), &[]);
    let effects = d.answer(2, 2, None);
    assert_eq!(runs(&effects), [(2, 4, false)], "a free lease on wb takes the unpinned task only");
    let opening = opened(&d.event(Event::Tick));
    assert!(opening.is_empty(), "task 3 went to lease 1 on wa: {opening:?}");
    // A followed task whose worker has no free lease gets one opened there.
    let mut d = Dispatcher::new();
    d.submit(1, TaskOptions::default(), &[]);
    d.ready_on(1, "wa");
    d.answer(1, 1, None);
    d.event(Event::Cancel(99));
    d.now += Limits::default().idle_return;
    assert_eq!(closed(&d.event(Event::Tick)), [1]);
    let effects = d.submit_task(2, TaskOptions::default(), &[], Some(1));
    match &effects[..] {
        [Effect::OpenLease { lease, kind }] => {
            assert_eq!(kind.on_worker.as_deref(), Some("wa"));
            assert_eq!(runs(&d.ready_on(*lease, "wa")), [(*lease, 2, true)]);
        }
        other => panic!("{other:?}"),
    }
    // Following a task that failed, or that this dispatcher never had, fails at once.
    let failed = d.submit_task(5, TaskOptions::default(), &[], Some(77));
    assert!(matches!(completed(&failed)[..], [(5, Err(TaskFailure::Follow { followed: 77, .. }))]));
}

#[test]
fn a_lease_found_dead_before_a_task_was_sent_costs_the_task_no_attempt() {
    let mut d = Dispatcher::new();
    d.submit(1, TaskOptions::default(), &[]);
    assert_eq!(runs(&d.ready(1)), [(1, 1, true)]);
    let effects = d.event(Event::LeaseGone { lease: 1 });
    assert_eq!(closed(&effects), [1]);
    assert!(completed(&effects).is_empty(), "no retries, yet not failed: it never ran");
    assert_eq!(runs(&d.ready(opened(&effects)[0])), [(2, 1, true)]);
}
