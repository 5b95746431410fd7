//! Who is in the cluster: workers, their jobs, clients, and which peer socket is whose.
//!
//! Pure bookkeeping with no I/O, so that the dispatcher stays small and this is unit-tested.
//!
//! GPUs: a worker offers the GPU ids of its hello; a job granted for a GPU actor holds some of
//! them (in its [`JobEntry`]), so a worker's free GPUs are its ids that no job of it holds, and
//! they come back the moment the job is removed. There is no second count to drift.
//!
//! Scale: every message costs O(1) here (or O(one worker's jobs)); nothing walks all workers
//! or all jobs except the status report and the once-per-tick expiry. Workers whose load
//! changed are collected ([`Registry::take_changed`]) for the scheduler's own index.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::{
    ClientHello, ClientId, ClientStatus, JobAssignment, JobGrant, JobId, JobInfo, JobRequest, WorkerHello,
    WorkerId, WorkerStatus,
};
use crate::transport::PeerId;

use super::scheduler::Placement;

/// Whose socket a peer id is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Worker(WorkerId),
    Client(ClientId),
}

#[derive(Debug)]
pub struct WorkerEntry {
    pub hello: WorkerHello,
    pub peer: PeerId,
    pub last_seen: Instant,
    /// Warm jobs waiting for an actor, oldest first.
    pub idle: VecDeque<JobId>,
    /// Jobs serving an actor.
    pub busy: HashSet<JobId>,
    /// Busy jobs granted whose actor has not started yet (a subset of `busy`): the grants in
    /// flight to this worker, which its high-water mark bounds.
    pub starting: HashSet<JobId>,
}

#[derive(Debug)]
pub struct ClientEntry {
    pub hello: ClientHello,
    pub peer: PeerId,
    pub last_seen: Instant,
    pub jobs: HashSet<JobId>,
}

#[derive(Debug)]
pub struct JobEntry {
    pub info: JobInfo,
    pub worker: WorkerId,
    pub owner: Option<ClientId>,
    /// GPU ids of its worker reserved for its actor (empty for a CPU actor or an idle job).
    pub gpus: Vec<String>,
}

/// A job whose actor lost its job's worker: the owner must be told.
#[derive(Debug, PartialEq, Eq)]
pub struct Orphan {
    pub job_id: JobId,
    pub owner: ClientId,
}

/// What became of a job that a worker announced (ready, or busy with an actor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// Counted in its worker's slots (once, however often it is announced).
    Counted,
    /// Its worker is not registered.
    UnknownWorker,
    /// It served an actor when its worker was dropped (a partition, a hang): its owner was told
    /// that the actor died, so it must be ended, never counted again.
    Lost,
    /// Another worker's job: the report is ignored.
    Foreign,
}

/// The load of one worker, as schedulers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLoad {
    pub worker_id: WorkerId,
    /// The machine it runs on (its hostname), for the schemes that place by host.
    pub host: String,
    pub cpu_total: u32,
    pub busy: u32,
    pub idle: u32,
    pub gpu_total: u32,
    /// Its GPU ids that no job holds, in the worker's order.
    pub free_gpus: Vec<String>,
    /// Jobs granted whose actor has not started yet.
    pub starting: u32,
    /// The most grants it may have in flight (`starting`); 0: no limit.
    pub hwm: u32,
}

impl WorkerLoad {
    /// Whether this worker can take `request` now: a warm job, fewer grants in flight than
    /// its high-water mark, and all its GPUs on this worker.
    pub fn can_serve(&self, request: &JobRequest) -> bool {
        self.has_room() && self.gpu_free() >= request.n_gpu
    }

    /// Whether it can take some request now: a warm job, and room under its high-water mark.
    pub fn has_room(&self) -> bool {
        self.idle > 0 && (self.hwm == 0 || self.starting < self.hwm)
    }

    pub fn gpu_free(&self) -> u32 {
        self.free_gpus.len() as u32
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    workers: HashMap<WorkerId, WorkerEntry>,
    clients: HashMap<ClientId, ClientEntry>,
    jobs: HashMap<JobId, JobEntry>,
    peers: HashMap<PeerId, Peer>,
    /// Where each job's log lives ("host:port" of its worker's log server), kept after the job
    /// ends so that its log stays findable; bounded, oldest forgotten first.
    log_locations: HashMap<JobId, String>,
    log_order: VecDeque<JobId>,
    /// Jobs that served actors on workers the master dropped: when such a worker comes back
    /// and announces them again, they are [`Announced::Lost`]. Bounded, oldest forgotten first.
    lost_jobs: HashSet<JobId>,
    lost_order: VecDeque<JobId>,
    /// Workers whose load changed (or that left) since the last [`Registry::take_changed`].
    changed: HashSet<WorkerId>,
    /// How many registered workers have each GPU count.
    gpu_counts: BTreeMap<u32, usize>,
    /// Busy jobs whose owner is not registered (a restarted master hears of them before their
    /// client comes back), by owner.
    unclaimed: HashMap<ClientId, HashSet<JobId>>,
    /// The high-water mark of workers that do not set their own (0: no limit).
    default_hwm: u32,
}

/// How many ended jobs' log locations the master remembers.
const LOG_LOCATIONS_KEPT: usize = 100_000;

/// How many lost jobs the master remembers (a worker that comes back after more workers'
/// losses than this would get its oldest lost jobs counted again).
const LOST_JOBS_KEPT: usize = 100_000;

impl Registry {
    /// An empty registry whose workers have at most `default_hwm` grants in flight unless they
    /// set their own high-water mark (0: no limit).
    pub fn new(default_hwm: u32) -> Registry {
        Registry { default_hwm, ..Registry::default() }
    }

    pub fn peer(&self, peer: &PeerId) -> Option<&Peer> {
        self.peers.get(peer)
    }

    /// Records that a peer was heard from.
    pub fn touch(&mut self, peer: &PeerId, now: Instant) {
        match self.peers.get(peer) {
            Some(Peer::Worker(id)) => {
                if let Some(w) = self.workers.get_mut(id) {
                    w.last_seen = now;
                }
            }
            Some(Peer::Client(id)) => {
                if let Some(c) = self.clients.get_mut(id) {
                    c.last_seen = now;
                }
            }
            None => {}
        }
    }

    /// Adds a worker, or re-binds a known worker to its new socket after a reconnect.
    pub fn add_worker(&mut self, peer: PeerId, hello: WorkerHello, now: Instant) {
        let id = hello.worker_id.clone();
        self.changed.insert(id.clone());
        count(&mut self.gpu_counts, hello.gpus.len() as u32, true);
        if let Some(old) = self.workers.get_mut(&id) {
            count(&mut self.gpu_counts, old.hello.gpus.len() as u32, false);
            self.peers.remove(&old.peer);
            old.peer = peer.clone();
            old.last_seen = now;
            old.hello = hello;
        } else {
            let entry = WorkerEntry {
                hello,
                peer: peer.clone(),
                last_seen: now,
                idle: VecDeque::new(),
                busy: HashSet::new(),
                starting: HashSet::new(),
            };
            self.workers.insert(id.clone(), entry);
        }
        self.peers.insert(peer, Peer::Worker(id));
    }

    /// Removes a worker and its jobs; returns the jobs whose owners must be told. Its busy
    /// jobs are remembered as lost: if the worker was only cut off and comes back with them,
    /// they are not counted again (see [`Announced::Lost`]).
    pub fn remove_worker(&mut self, id: &str) -> Vec<Orphan> {
        let Some(worker) = self.workers.remove(id) else { return Vec::new() };
        self.changed.insert(id.to_string());
        count(&mut self.gpu_counts, worker.hello.gpus.len() as u32, false);
        self.peers.remove(&worker.peer);
        for job_id in &worker.busy {
            self.remember_lost(job_id);
        }
        let mut orphans = Vec::new();
        for job_id in worker.idle.iter().chain(worker.busy.iter()) {
            let Some(job) = self.jobs.remove(job_id) else { continue };
            if let Some(owner) = job.owner {
                self.disown(&owner, job_id);
                orphans.push(Orphan { job_id: job_id.clone(), owner });
            }
        }
        orphans.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        orphans
    }

    /// A worker offers a warm job.
    pub fn add_ready_job(&mut self, worker_id: &str, info: JobInfo) -> Announced {
        if self.lost_jobs.contains(&info.job_id) {
            return Announced::Lost;
        }
        let Some(worker) = self.workers.get_mut(worker_id) else { return Announced::UnknownWorker };
        if !self.jobs.contains_key(&info.job_id) {
            self.changed.insert(worker_id.to_string());
            worker.idle.push_back(info.job_id.clone());
            let log_address = worker.hello.log_address.clone();
            self.remember_log(&info.job_id, log_address);
            let entry = JobEntry { info, worker: worker_id.to_string(), owner: None, gpus: Vec::new() };
            self.jobs.insert(entry.info.job_id.clone(), entry);
        }
        Announced::Counted
    }

    /// A job ended: forget it and free its slot. Returns it (with its owner, if any).
    pub fn remove_job(&mut self, job_id: &str) -> Option<JobEntry> {
        // Its id stays in `lost_order` until it ages out: ids are never reused.
        self.lost_jobs.remove(job_id);
        let job = self.jobs.remove(job_id)?;
        if let Some(worker) = self.workers.get_mut(&job.worker) {
            self.changed.insert(job.worker.clone());
            worker.idle.retain(|j| j != job_id);
            worker.busy.remove(job_id);
            worker.starting.remove(job_id);
        }
        if let Some(owner) = &job.owner {
            self.disown(owner, job_id);
        }
        Some(job)
    }

    /// Gives the oldest warm job of the placement's worker to `client_id`, with the
    /// placement's GPU ids. None if that worker has no warm job, or if one of those GPUs is not
    /// a free GPU of it (or is named twice): a placement can never make a GPU count twice.
    pub fn grant(&mut self, placement: &Placement, client_id: &str, request_id: u64) -> Option<JobGrant> {
        let worker_id = placement.worker.as_str();
        let gpus = placement.gpus.clone();
        let free_gpus = self.free_gpus(worker_id);
        let free: HashSet<&String> = free_gpus.iter().collect();
        let distinct: HashSet<&String> = gpus.iter().collect();
        if distinct.len() != gpus.len() || !distinct.is_subset(&free) {
            return None;
        }
        let worker = self.workers.get_mut(worker_id)?;
        let client = self.clients.get_mut(client_id)?;
        let job_id = worker.idle.pop_front()?;
        self.changed.insert(worker_id.to_string());
        let job = self.jobs.get_mut(&job_id).expect("an idle job is registered");
        job.owner = Some(client_id.to_string());
        job.gpus = gpus.clone();
        worker.busy.insert(job_id.clone());
        worker.starting.insert(job_id.clone());
        client.jobs.insert(job_id.clone());
        Some(JobGrant {
            request_id,
            job_id,
            address: job.info.address.clone(),
            pid: job.info.pid,
            worker_id: worker_id.to_string(),
            hostname: worker.hello.hostname.clone(),
            gpus,
            log_address: worker.hello.log_address.clone(),
        })
    }

    /// A job its worker reports as already serving a client's actor (after a master restart,
    /// or after the worker was cut off). A report about a job already known replaces what was
    /// known. Only GPU ids that the worker offers and that no other of its jobs holds are taken
    /// from the report, so that no report can make a GPU count twice.
    pub fn add_busy_job(&mut self, worker_id: &str, info: JobInfo, assignment: JobAssignment) -> Announced {
        if self.lost_jobs.contains(&info.job_id) {
            return Announced::Lost;
        }
        if !self.workers.contains_key(worker_id) {
            return Announced::UnknownWorker;
        }
        let job_id = info.job_id.clone();
        match self.jobs.get(&job_id) {
            Some(job) if job.worker != worker_id => return Announced::Foreign,
            Some(_) => {
                self.remove_job(&job_id);
            }
            None => {}
        }
        let mut free = self.free_gpus(worker_id);
        let mut gpus = assignment.gpus;
        gpus.retain(|gpu| match free.iter().position(|f| f == gpu) {
            Some(i) => {
                free.swap_remove(i);
                true
            }
            None => false,
        });
        self.changed.insert(worker_id.to_string());
        let worker = self.workers.get_mut(worker_id).expect("checked above");
        worker.idle.retain(|j| j != &job_id);
        worker.busy.insert(job_id.clone());
        let log_address = worker.hello.log_address.clone();
        match self.clients.get_mut(&assignment.client_id) {
            Some(client) => {
                client.jobs.insert(job_id.clone());
            }
            None => {
                self.unclaimed.entry(assignment.client_id.clone()).or_default().insert(job_id.clone());
            }
        }
        let entry = JobEntry { info, worker: worker_id.to_string(), owner: Some(assignment.client_id), gpus };
        self.jobs.insert(job_id.clone(), entry);
        self.remember_log(&job_id, log_address);
        Announced::Counted
    }

    /// A worker's high-water mark: its own, or the master's default.
    fn hwm(&self, worker: &WorkerEntry) -> u32 {
        match worker.hello.hwm {
            0 => self.default_hwm,
            own => own,
        }
    }

    /// The actor of `job_id` started (its worker says so): the grant is no longer in flight.
    /// Ignored unless the job is one of `worker_id`'s.
    pub fn actor_started(&mut self, worker_id: &str, job_id: &str) {
        let Some(worker) = self.workers.get_mut(worker_id) else { return };
        if worker.starting.remove(job_id) {
            self.changed.insert(worker_id.to_string());
        }
    }

    /// The GPU ids of a worker that no busy job holds, in the worker's order.
    pub fn free_gpus(&self, worker_id: &str) -> Vec<String> {
        let Some(worker) = self.workers.get(worker_id) else { return Vec::new() };
        if worker.hello.gpus.is_empty() {
            return Vec::new();
        }
        let held: HashSet<&String> =
            worker.busy.iter().filter_map(|id| self.jobs.get(id)).flat_map(|job| &job.gpus).collect();
        worker.hello.gpus.iter().filter(|gpu| !held.contains(gpu)).cloned().collect()
    }

    /// The GPU count of the worker with the most GPUs; None while no worker is registered.
    pub fn largest_worker_gpus(&self) -> Option<u32> {
        self.gpu_counts.last_key_value().map(|(gpus, _)| *gpus)
    }

    /// Forgets that `owner` holds `job_id` (the job ended or was lost).
    fn disown(&mut self, owner: &str, job_id: &str) {
        if let Some(client) = self.clients.get_mut(owner) {
            client.jobs.remove(job_id);
        } else if let Some(jobs) = self.unclaimed.get_mut(owner) {
            jobs.remove(job_id);
            if jobs.is_empty() {
                self.unclaimed.remove(owner);
            }
        }
    }

    /// GPUs held by the busy jobs of a worker, and CPU slots used (busy jobs without GPUs: a GPU
    /// actor costs only its GPUs, as in PARL).
    fn used(&self, worker: &WorkerEntry) -> (u32, u32) {
        let busy = worker.busy.iter().filter_map(|id| self.jobs.get(id));
        busy.fold((0, 0), |(cpus, gpus), job| match job.gpus.len() as u32 {
            0 => (cpus + 1, gpus),
            n => (cpus, gpus + n),
        })
    }

    fn remember_log(&mut self, job_id: &str, log_address: String) {
        if self.log_locations.insert(job_id.to_string(), log_address).is_none() {
            self.log_order.push_back(job_id.to_string());
        }
        while self.log_order.len() > LOG_LOCATIONS_KEPT {
            if let Some(old) = self.log_order.pop_front() {
                self.log_locations.remove(&old);
            }
        }
    }

    fn remember_lost(&mut self, job_id: &str) {
        if self.lost_jobs.insert(job_id.to_string()) {
            self.lost_order.push_back(job_id.to_string());
        }
        while self.lost_order.len() > LOST_JOBS_KEPT {
            if let Some(old) = self.lost_order.pop_front() {
                self.lost_jobs.remove(&old);
            }
        }
    }

    /// "host:port" of the log server that has this job's log (also after the job ended).
    pub fn log_location(&self, job_id: &str) -> Option<&str> {
        self.log_locations.get(job_id).map(String::as_str)
    }

    pub fn job(&self, job_id: &str) -> Option<&JobEntry> {
        self.jobs.get(job_id)
    }

    pub fn worker(&self, worker_id: &str) -> Option<&WorkerEntry> {
        self.workers.get(worker_id)
    }

    pub fn client(&self, client_id: &str) -> Option<&ClientEntry> {
        self.clients.get(client_id)
    }

    pub fn add_client(&mut self, peer: PeerId, hello: ClientHello, now: Instant) {
        let id = hello.client_id.clone();
        if let Some(old) = self.clients.get_mut(&id) {
            self.peers.remove(&old.peer);
            old.peer = peer.clone();
            old.last_seen = now;
        } else {
            // Jobs its workers reported as its own before it (re-)registered.
            let mut jobs = self.unclaimed.remove(&id).unwrap_or_default();
            jobs.retain(|j| self.jobs.get(j).is_some_and(|job| job.owner.as_deref() == Some(&id)));
            let entry = ClientEntry { hello, peer: peer.clone(), last_seen: now, jobs };
            self.clients.insert(id.clone(), entry);
        }
        self.peers.insert(peer, Peer::Client(id));
    }

    /// Removes a client; returns its jobs (with their workers) so they can be ended.
    pub fn remove_client(&mut self, id: &str) -> Vec<(JobId, WorkerId)> {
        let Some(client) = self.clients.remove(id) else { return Vec::new() };
        self.peers.remove(&client.peer);
        let mut ended = Vec::new();
        for job_id in client.jobs {
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.owner = None;
                ended.push((job_id, job.worker.clone()));
            }
        }
        ended.sort();
        ended
    }

    /// Workers and clients not heard from within `timeout`.
    pub fn expired(&self, now: Instant, timeout: Duration) -> (Vec<WorkerId>, Vec<ClientId>) {
        let old = |seen: Instant| now.saturating_duration_since(seen) > timeout;
        let workers = self.workers.iter().filter(|(_, w)| old(w.last_seen)).map(|(id, _)| id.clone());
        let clients = self.clients.iter().filter(|(_, c)| old(c.last_seen)).map(|(id, _)| id.clone());
        // Sorted: the master core's effects must not depend on a hash map's order.
        let (mut workers, mut clients): (Vec<_>, Vec<_>) = (workers.collect(), clients.collect());
        workers.sort();
        clients.sort();
        (workers, clients)
    }

    /// The load of one worker (None if it is not registered).
    pub fn load(&self, worker_id: &str) -> Option<WorkerLoad> {
        let w = self.workers.get(worker_id)?;
        Some(WorkerLoad {
            worker_id: worker_id.to_string(),
            host: w.hello.hostname.clone(),
            cpu_total: w.hello.cpu_num,
            busy: w.busy.len() as u32,
            idle: w.idle.len() as u32,
            gpu_total: w.hello.gpus.len() as u32,
            free_gpus: self.free_gpus(worker_id),
            starting: w.starting.len() as u32,
            hwm: self.hwm(w),
        })
    }

    /// Every worker's load, in a stable order (by id). O(workers): for reports and tests.
    pub fn loads(&self) -> Vec<WorkerLoad> {
        let mut loads: Vec<WorkerLoad> = self.workers.keys().filter_map(|id| self.load(id)).collect();
        loads.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        loads
    }

    /// The workers whose load changed, or that left, since the last call: what a scheduler
    /// must re-read ([`Registry::load`]) or forget.
    pub fn take_changed(&mut self) -> Vec<WorkerId> {
        let mut changed: Vec<WorkerId> = self.changed.drain().collect();
        changed.sort();
        changed
    }

    pub fn total_cpus(&self) -> u32 {
        self.workers.values().map(|w| w.hello.cpu_num).sum()
    }

    pub fn worker_statuses(&self) -> Vec<WorkerStatus> {
        let mut list: Vec<WorkerStatus> = self
            .workers
            .values()
            .map(|w| {
                let (cpu_used, gpu_used) = self.used(w);
                WorkerStatus {
                    worker_id: w.hello.worker_id.clone(),
                    hostname: w.hello.hostname.clone(),
                    cpu_total: w.hello.cpu_num,
                    cpu_used,
                    gpu_total: w.hello.gpus.len() as u32,
                    gpu_used,
                    jobs_ready: w.idle.len() as u32,
                    starting: w.starting.len() as u32,
                    hwm: self.hwm(w),
                }
            })
            .collect();
        list.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        list
    }

    /// The socket of every registered worker.
    pub fn worker_peers(&self) -> Vec<PeerId> {
        self.workers.values().map(|w| w.peer.clone()).collect()
    }

    pub fn client_statuses(&self) -> Vec<ClientStatus> {
        let mut list: Vec<ClientStatus> = self
            .clients
            .values()
            .map(|c| {
                let held = c.jobs.iter().filter_map(|id| self.jobs.get(id));
                let (cpus, gpus) = held.fold((0, 0), |(cpus, gpus), job| match job.gpus.len() as u32 {
                    0 => (cpus + 1, gpus),
                    n => (cpus, gpus + n),
                });
                ClientStatus {
                    client_id: c.hello.client_id.clone(),
                    hostname: c.hello.hostname.clone(),
                    pid: c.hello.pid,
                    actors: c.jobs.len() as u32,
                    cpus,
                    gpus,
                }
            })
            .collect();
        list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        list
    }
}

/// Adds one to (or takes one from) the count of `key` in a multiset.
fn count(counts: &mut BTreeMap<u32, usize>, key: u32, add: bool) {
    let n = counts.entry(key).or_default();
    if add {
        *n += 1;
    } else {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

/// What must hold after any sequence of calls; the fuzz harness checks it after every event.
#[cfg(any(test, feature = "fuzzing"))]
impl Registry {
    /// Panics unless the bookkeeping is consistent: every peer maps to the worker or client
    /// bound to it and back; every job is listed by its own worker exactly once, as idle or
    /// busy (so no slot is counted twice, and a count never goes below zero); an idle job has
    /// no owner and no GPU; no GPU of a worker is held by two jobs; a client lists exactly the
    /// jobs it owns.
    pub fn check_invariants(&self) {
        for (peer, who) in &self.peers {
            let bound = match who {
                Peer::Worker(id) => self.workers.get(id).map(|w| &w.peer),
                Peer::Client(id) => self.clients.get(id).map(|c| &c.peer),
            };
            assert_eq!(bound, Some(peer), "peer {peer:?} maps to {who:?}, which is not bound to it");
        }
        for (id, worker) in &self.workers {
            assert_eq!(self.peers.get(&worker.peer), Some(&Peer::Worker(id.clone())), "worker {id}'s peer");
        }
        for (id, client) in &self.clients {
            assert_eq!(self.peers.get(&client.peer), Some(&Peer::Client(id.clone())), "client {id}'s peer");
        }
        let mut listed = HashSet::new();
        for (id, worker) in &self.workers {
            let mut held = HashSet::new();
            for job_id in worker.idle.iter().chain(&worker.busy) {
                assert!(listed.insert(job_id), "job {job_id} is counted twice");
                let job =
                    self.jobs.get(job_id).unwrap_or_else(|| panic!("worker {id} lists unknown job {job_id}"));
                assert_eq!(&job.worker, id, "job {job_id} is listed by worker {id}, but belongs to another");
                for gpu in &job.gpus {
                    assert!(held.insert(gpu), "GPU {gpu} of worker {id} is held by two jobs");
                }
            }
            for job_id in &worker.starting {
                assert!(worker.busy.contains(job_id), "job {job_id} is starting but not busy");
            }
            for job_id in &worker.idle {
                let job = &self.jobs[job_id];
                assert!(job.owner.is_none() && job.gpus.is_empty(), "idle job {job_id} is owned: {job:?}");
            }
        }
        assert_eq!(listed.len(), self.jobs.len(), "some jobs are listed by no worker");
        for (id, client) in &self.clients {
            for job_id in &client.jobs {
                let owner = self.jobs.get(job_id).and_then(|job| job.owner.as_deref());
                assert_eq!(owner, Some(id.as_str()), "client {id} lists job {job_id}, owned by another");
            }
        }
        for (job_id, job) in &self.jobs {
            let listed_by_owner = job.owner.as_ref().and_then(|owner| self.clients.get(owner));
            if let Some(client) = listed_by_owner {
                assert!(
                    client.jobs.contains(job_id),
                    "client {} does not list its job {job_id}",
                    client.hello.client_id
                );
            }
        }
        assert_eq!(self.log_locations.len(), self.log_order.len());
        assert!(self.log_order.len() <= LOG_LOCATIONS_KEPT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A CPU placement on `worker`.
    fn cpu(worker: &str) -> Placement {
        Placement { worker: worker.into(), gpus: Vec::new() }
    }

    fn worker(id: &str, cpus: u32) -> WorkerHello {
        WorkerHello {
            worker_id: id.into(),
            hostname: "h".into(),
            pid: 1,
            cpu_num: cpus,
            gpus: Vec::new(),
            version: "v".into(),
            python_version: "3.11".into(),
            log_address: "127.0.0.1:1".into(),
            hwm: 0,
        }
    }

    fn gpu_worker(id: &str, gpus: u32) -> WorkerHello {
        WorkerHello { cpu_num: 0, gpus: (0..gpus).map(|g| g.to_string()).collect(), ..worker(id, 0) }
    }

    fn client(id: &str) -> ClientHello {
        ClientHello {
            client_id: id.into(),
            hostname: "h".into(),
            pid: 2,
            version: "v".into(),
            script: "s".into(),
        }
    }

    fn job(id: &str) -> JobInfo {
        JobInfo { job_id: id.into(), address: format!("tcp://127.0.0.1/{id}"), pid: 3 }
    }

    fn setup() -> Registry {
        let now = Instant::now();
        let mut r = Registry::default();
        r.add_worker(Bytes::from_static(b"pw"), worker("w", 2), now);
        r.add_client(Bytes::from_static(b"pc"), client("c"), now);
        assert_eq!(Announced::Counted, r.add_ready_job("w", job("j1")));
        assert_eq!(Announced::Counted, r.add_ready_job("w", job("j2")));
        r
    }

    /// Worker "w" of `setup()` with one of its two jobs granted.
    fn one_of_two_busy() -> WorkerLoad {
        WorkerLoad {
            worker_id: "w".into(),
            host: "h".into(),
            cpu_total: 2,
            busy: 1,
            idle: 1,
            gpu_total: 0,
            free_gpus: Vec::new(),
            starting: 1,
            hwm: 0,
        }
    }

    /// A worker with `jobs` warm jobs and high-water mark `hwm` (0: the registry's default).
    fn hwm_setup(default_hwm: u32, hwm: u32, jobs: u32) -> Registry {
        let mut r = Registry::new(default_hwm);
        let now = Instant::now();
        r.add_worker(Bytes::from_static(b"pw"), WorkerHello { hwm, ..worker("w", jobs) }, now);
        r.add_client(Bytes::from_static(b"pc"), client("c"), now);
        for j in 0..jobs {
            r.add_ready_job("w", job(&format!("j{j}")));
        }
        r
    }

    #[test]
    fn a_worker_at_its_high_water_mark_takes_no_grant_until_an_actor_starts() {
        let mut r = hwm_setup(0, 2, 4);
        let request =
            JobRequest { request_id: 1, n_cpu: 1, n_gpu: 0, class_name: "A".into(), on_worker: None };
        let j0 = r.grant(&cpu("w"), "c", 1).unwrap().job_id;
        let j1 = r.grant(&cpu("w"), "c", 2).unwrap().job_id;
        let load = r.loads()[0].clone();
        assert_eq!((load.idle, load.starting, load.hwm), (2, 2, 2));
        assert!(!load.can_serve(&request), "two grants in flight: at the mark");
        r.actor_started("other", &j0);
        assert!(!r.loads()[0].can_serve(&request), "another worker cannot speak for w's job");
        r.actor_started("w", &j0);
        r.actor_started("w", &j0);
        assert_eq!(r.loads()[0].starting, 1, "once per job");
        assert!(r.loads()[0].can_serve(&request));
        r.remove_job(&j1);
        assert_eq!(r.loads()[0].starting, 0, "a job that ends is no longer in flight");
        assert_eq!(r.worker_statuses()[0].hwm, 2);
    }

    #[test]
    fn a_worker_without_its_own_mark_gets_the_default_and_zero_is_no_limit() {
        let request =
            JobRequest { request_id: 1, n_cpu: 1, n_gpu: 0, class_name: "A".into(), on_worker: None };
        let mut r = hwm_setup(1, 0, 3);
        r.grant(&cpu("w"), "c", 1).unwrap();
        assert_eq!(r.loads()[0].hwm, 1);
        assert!(!r.loads()[0].can_serve(&request));
        let mut r = hwm_setup(1, 3, 3);
        r.grant(&cpu("w"), "c", 1).unwrap();
        assert!(r.loads()[0].can_serve(&request), "its own mark overrides the default");
        let mut r = hwm_setup(0, 0, 3);
        r.grant(&cpu("w"), "c", 1).unwrap();
        r.grant(&cpu("w"), "c", 2).unwrap();
        assert!(r.loads()[0].can_serve(&request), "no mark: only warm jobs count");
    }

    #[test]
    fn grant_moves_a_job_from_idle_to_busy_and_back_on_exit() {
        let mut r = setup();
        let g = r.grant(&cpu("w"), "c", 7).unwrap();
        assert_eq!((g.job_id.as_str(), g.request_id), ("j1", 7));
        assert_eq!(r.loads()[0], one_of_two_busy());
        assert_eq!(r.client_statuses()[0].actors, 1);
        let ended = r.remove_job("j1").unwrap();
        assert_eq!(ended.owner.as_deref(), Some("c"));
        assert_eq!(r.loads()[0].busy, 0);
        assert_eq!(r.client_statuses()[0].actors, 0);
    }

    #[test]
    fn a_restarted_master_learns_busy_jobs_and_gives_them_back_to_their_client() {
        let now = Instant::now();
        let mut r = Registry::default();
        r.add_worker(Bytes::from_static(b"pw"), worker("w", 2), now);
        let assignment = JobAssignment { job_id: "j1".into(), client_id: "c".into(), gpus: vec![] };
        assert_eq!(Announced::Counted, r.add_busy_job("w", job("j1"), assignment));
        assert_eq!(Announced::Counted, r.add_ready_job("w", job("j2")));
        assert_eq!(r.loads()[0].busy, 1);
        r.add_client(Bytes::from_static(b"pc"), client("c"), now);
        assert_eq!(r.client_statuses()[0].actors, 1, "the re-registered client owns it again");
        assert_eq!(r.grant(&cpu("w"), "c", 1).unwrap().job_id, "j2", "the busy job is never granted");
        assert!(r.grant(&cpu("w"), "c", 2).is_none());
    }

    /// Found by the master_dispatch fuzz target: busy reports could hold a GPU twice, move a job
    /// from one owner to another without the first forgetting it, or claim another worker's job
    /// (which stayed in that worker's idle list, to be granted once it ended: a panic).
    #[test]
    fn busy_reports_never_count_a_slot_or_a_gpu_twice() {
        let mut r = gpu_setup(&[("w1", 2), ("w2", 2)]);
        r.add_client(Bytes::from_static(b"pd"), client("d"), Instant::now());
        let busy = |job_id: &str, client: &str, gpus: &[&str]| JobAssignment {
            job_id: job_id.into(),
            client_id: client.into(),
            gpus: gpus.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(r.add_busy_job("w1", job("b1"), busy("b1", "c", &["0", "0", "7"])), Announced::Counted);
        assert_eq!(r.add_busy_job("w1", job("b2"), busy("b2", "c", &["0", "1"])), Announced::Counted);
        assert_eq!(r.job("b1").unwrap().gpus, gpus(&["0"]), "a GPU held once, and only the worker's own");
        assert_eq!(r.job("b2").unwrap().gpus, gpus(&["1"]));
        let replaced = r.add_busy_job("w1", job("b1"), busy("b1", "d", &[]));
        assert_eq!(replaced, Announced::Counted, "a second report replaces the first");
        assert_eq!(r.client_statuses().iter().map(|c| c.actors).collect::<Vec<_>>(), [1, 1]);
        let foreign = r.add_busy_job("w2", job("w1-j0"), busy("w1-j0", "c", &[]));
        assert_eq!(foreign, Announced::Foreign, "another worker's job");
        r.check_invariants();
        r.remove_job("w1-j0");
        assert!(r.grant(&cpu("w1"), "c", 1).is_some());
        assert!(r.grant(&cpu("w1"), "c", 2).is_none(), "w1 had two warm jobs, one ended");
        r.check_invariants();
    }

    #[test]
    fn busy_jobs_that_end_before_their_client_returns_are_not_its_own() {
        let now = Instant::now();
        let mut r = Registry::default();
        r.add_worker(Bytes::from_static(b"pw"), worker("w", 2), now);
        for j in ["j1", "j2"] {
            let assignment = JobAssignment { job_id: j.into(), client_id: "c".into(), gpus: vec![] };
            assert_eq!(r.add_busy_job("w", job(j), assignment), Announced::Counted);
        }
        r.remove_job("j1");
        r.add_client(Bytes::from_static(b"pc"), client("c"), now);
        assert_eq!(r.client("c").unwrap().jobs, HashSet::from(["j2".to_string()]));
        assert!(r.unclaimed.is_empty());
    }

    #[test]
    fn changed_workers_are_reported_once_until_they_change_again() {
        let mut r = setup();
        assert_eq!(r.take_changed(), vec!["w".to_string()]);
        assert!(r.take_changed().is_empty());
        r.grant(&cpu("w"), "c", 1).unwrap();
        assert_eq!(r.take_changed(), vec!["w".to_string()]);
        r.remove_job("j1");
        r.add_ready_job("w", job("j3"));
        assert_eq!(r.take_changed(), vec!["w".to_string()]);
        assert_eq!(r.add_ready_job("nobody", job("j4")), Announced::UnknownWorker);
        assert!(r.take_changed().is_empty());
        r.remove_worker("w");
        assert_eq!(r.take_changed(), vec!["w".to_string()]);
        assert_eq!(r.load("w"), None, "a worker that left has no load: the scheduler forgets it");
    }

    #[test]
    fn the_largest_worker_follows_joins_reconnects_and_departures() {
        let mut r = gpu_setup(&[("a", 4), ("b", 8), ("c", 8)]);
        assert_eq!(r.largest_worker_gpus(), Some(8));
        r.remove_worker("b");
        assert_eq!(r.largest_worker_gpus(), Some(8), "c still has 8");
        r.add_worker(Bytes::from_static(b"pc2"), gpu_worker("c", 2), Instant::now());
        assert_eq!(r.largest_worker_gpus(), Some(4), "c came back with 2 GPUs");
        r.remove_worker("a");
        r.remove_worker("c");
        assert_eq!(r.largest_worker_gpus(), None);
    }

    #[test]
    fn log_locations_outlive_their_jobs() {
        let mut r = setup();
        r.grant(&cpu("w"), "c", 1).unwrap();
        r.remove_job("j1");
        assert_eq!(r.log_location("j1"), Some("127.0.0.1:1"));
        assert_eq!(r.log_location("nope"), None);
    }

    #[test]
    fn no_grant_without_idle_jobs() {
        let mut r = setup();
        assert!(r.grant(&cpu("w"), "c", 1).is_some());
        assert!(r.grant(&cpu("w"), "c", 2).is_some());
        assert!(r.grant(&cpu("w"), "c", 3).is_none());
    }

    #[test]
    fn removing_a_worker_orphans_busy_jobs_only_for_owners() {
        let mut r = setup();
        r.grant(&cpu("w"), "c", 1).unwrap();
        let orphans = r.remove_worker("w");
        assert_eq!(orphans, vec![Orphan { job_id: "j1".into(), owner: "c".into() }]);
        assert!(r.job("j2").is_none());
        assert_eq!(r.client_statuses()[0].actors, 0);
        assert_eq!(r.total_cpus(), 0);
    }

    #[test]
    fn a_dropped_worker_that_comes_back_gets_its_busy_jobs_refused_and_its_slots_counted_once() {
        // A partition: the master drops the worker (its actor's owner hears that it died),
        // then the worker, cut off but alive, comes back and announces its jobs again.
        let mut r = setup();
        let granted = r.grant(&cpu("w"), "c", 1).unwrap();
        let assignment =
            JobAssignment { job_id: granted.job_id.clone(), client_id: "c".into(), gpus: vec![] };
        assert_eq!(r.remove_worker("w").len(), 1);
        r.add_worker(Bytes::from_static(b"pw2"), worker("w", 2), Instant::now());
        assert_eq!(r.add_busy_job("w", job("j1"), assignment.clone()), Announced::Lost);
        assert_eq!(r.add_ready_job("w", job("j1")), Announced::Lost, "nor as a warm job");
        assert_eq!(r.add_ready_job("w", job("j2")), Announced::Counted, "it never served anyone");
        let status = &r.worker_statuses()[0];
        assert_eq!((status.cpu_total, status.cpu_used, status.jobs_ready), (2, 0, 1));
        assert_eq!(r.client_statuses()[0].actors, 0, "the dead actor is not the client's again");
        assert_eq!(r.grant(&cpu("w"), "c", 2).unwrap().job_id, "j2");
        assert!(r.grant(&cpu("w"), "c", 3).is_none(), "the lost job is never granted");
        // Its exit is the last word about it; a replacement job is a new one.
        assert!(r.remove_job("j1").is_none());
        assert!(r.lost_jobs.is_empty());
        assert_eq!(r.add_ready_job("w", job("j3")), Announced::Counted);
        assert_eq!(r.loads()[0], one_of_two_busy());
    }

    #[test]
    fn an_unknown_worker_announces_nothing() {
        let mut r = Registry::default();
        assert_eq!(r.add_ready_job("nope", job("j1")), Announced::UnknownWorker);
        assert_eq!(r.total_cpus(), 0);
    }

    #[test]
    fn removing_a_client_returns_its_jobs_to_end() {
        let mut r = setup();
        r.grant(&cpu("w"), "c", 1).unwrap();
        assert_eq!(r.remove_client("c"), vec![("j1".to_string(), "w".to_string())]);
        assert!(r.peer(&Bytes::from_static(b"pc")).is_none());
    }

    #[test]
    fn a_reconnecting_worker_keeps_its_entry_under_a_new_peer() {
        let mut r = setup();
        r.add_worker(Bytes::from_static(b"pw2"), worker("w", 2), Instant::now());
        assert_eq!(r.peer(&Bytes::from_static(b"pw2")), Some(&Peer::Worker("w".into())));
        assert!(r.peer(&Bytes::from_static(b"pw")).is_none());
        assert_eq!(r.loads()[0].idle, 2);
    }

    #[test]
    fn silence_expires_peers() {
        let r = setup();
        let later = Instant::now() + Duration::from_secs(10);
        let (w, c) = r.expired(later, Duration::from_secs(5));
        assert_eq!((w.len(), c.len()), (1, 1));
        let (w, c) = r.expired(Instant::now(), Duration::from_secs(5));
        assert_eq!((w.len(), c.len()), (0, 0));
    }

    /// A registry with GPU workers whose warm jobs are all ready, like PARL's
    /// `gpu/worker_manager_test` (4, 4 and 8 GPUs), and a client.
    fn gpu_setup(workers: &[(&str, u32)]) -> Registry {
        let now = Instant::now();
        let mut r = Registry::default();
        r.add_client(Bytes::from_static(b"pc"), client("c"), now);
        for (id, gpus) in workers {
            add_gpu_worker(&mut r, id, *gpus);
        }
        r
    }

    fn add_gpu_worker(r: &mut Registry, id: &str, gpus: u32) {
        r.add_worker(Bytes::from(format!("p{id}")), gpu_worker(id, gpus), Instant::now());
        for j in 0..gpus {
            assert_eq!(Announced::Counted, r.add_ready_job(id, job(&format!("{id}-j{j}"))));
        }
    }

    fn gpu_request(n_gpu: u32) -> JobRequest {
        JobRequest { request_id: 1, n_cpu: 0, n_gpu, class_name: "A".into(), on_worker: None }
    }

    /// Picks a worker with the real scheduler and grants; the GPU ids granted, or None.
    fn place(r: &mut Registry, n_gpu: u32) -> Option<(WorkerId, Vec<String>)> {
        use crate::master::scheduler::{LeastLoaded, Scheduler};
        let mut scheduler = LeastLoaded::default();
        for load in r.loads() {
            scheduler.update(&load);
        }
        let placement = scheduler.pick(&gpu_request(n_gpu))?;
        let grant = r.grant(&placement, "c", 1).expect("the pick can be served");
        Some((grant.worker_id, grant.gpus))
    }

    fn gpus(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn gpu_requests_take_the_first_free_ids_of_one_worker() {
        let mut r = gpu_setup(&[]);
        assert_eq!(place(&mut r, 2), None, "no worker yet");
        assert_eq!(r.largest_worker_gpus(), None);
        add_gpu_worker(&mut r, "w1", 4);
        assert_eq!(place(&mut r, 2), Some(("w1".into(), gpus(&["0", "1"]))));
        let load = &r.loads()[0];
        assert_eq!((load.idle, load.busy, load.gpu_total, load.gpu_free()), (3, 1, 4, 2));
        let status = &r.worker_statuses()[0];
        assert_eq!(
            (status.cpu_used, status.gpu_used, status.gpu_total),
            (0, 2, 4),
            "a GPU actor costs no CPU"
        );
        assert_eq!(place(&mut r, 4), None, "only 2 GPUs are free on w1");
        add_gpu_worker(&mut r, "w2", 4);
        assert_eq!(place(&mut r, 8), None, "8 GPUs are free in all, but on no single worker");
        assert_eq!(r.largest_worker_gpus(), Some(4));
        add_gpu_worker(&mut r, "w5", 8);
        assert_eq!(r.largest_worker_gpus(), Some(8));
        assert_eq!(place(&mut r, 9), None);
        let (worker, ids) = place(&mut r, 8).unwrap();
        assert_eq!((worker.as_str(), ids.len()), ("w5", 8));
        assert_eq!(r.free_gpus("w5"), Vec::<String>::new());
    }

    #[test]
    fn gpus_come_back_when_their_job_ends() {
        let mut r = gpu_setup(&[("w1", 4)]);
        let (_, first) = place(&mut r, 1).unwrap();
        let (_, second) = place(&mut r, 2).unwrap();
        assert_eq!((first, second.clone()), (gpus(&["0"]), gpus(&["1", "2"])));
        let job = r.job("w1-j0").expect("the first grant took the oldest job");
        assert_eq!(job.gpus, gpus(&["0"]));
        r.remove_job("w1-j0");
        assert_eq!(r.free_gpus("w1"), gpus(&["0", "3"]));
        assert_eq!(place(&mut r, 2), Some(("w1".into(), gpus(&["0", "3"]))));
        assert_eq!(r.loads()[0].gpu_free(), 0);
        r.remove_job("w1-j1");
        assert_eq!(r.free_gpus("w1"), second);
    }

    #[test]
    fn least_loaded_spreads_gpu_actors_over_workers() {
        let mut r = gpu_setup(&[("w1", 4), ("w2", 4)]);
        let first = place(&mut r, 2).unwrap().0;
        let second = place(&mut r, 2).unwrap().0;
        assert_ne!(first, second);
        assert_eq!(r.worker_statuses().iter().map(|w| w.gpu_used).sum::<u32>(), 4);
        r.remove_worker(&first);
        assert_eq!(r.largest_worker_gpus(), Some(4));
        assert_eq!(r.loads().len(), 1);
    }

    #[test]
    fn a_grant_never_splits_gpus_or_overcommits() {
        let mut r = gpu_setup(&[("w1", 2)]);
        let on = |ids: &[&str]| Placement { worker: "w1".into(), gpus: gpus(ids) };
        assert!(r.grant(&on(&["0", "1", "2"]), "c", 1).is_none(), "GPU 2 is not w1's");
        assert!(r.grant(&on(&["0", "0"]), "c", 1).is_none(), "one GPU named twice");
        assert_eq!(r.loads()[0].idle, 2, "a refused grant takes no job");
        assert!(r.grant(&on(&["1"]), "c", 2).is_some());
        assert!(r.grant(&on(&["1"]), "c", 3).is_none(), "GPU 1 is held already");
        assert_eq!(r.grant(&on(&["0"]), "c", 4).unwrap().gpus, ["0"]);
    }
}
