//! What the simple schemes choose among: every worker's load, and the order of their last
//! grants (least recently granted first, as IPython's scheduler keeps its engines).

use std::collections::{BTreeSet, HashMap};

use crate::master::registry::WorkerLoad;
use crate::protocol::{JobRequest, WorkerId};

#[derive(Default)]
pub struct Pool {
    loads: HashMap<WorkerId, WorkerLoad>,
    /// (last grant's number, worker): the least recently granted first; never granted is 0.
    order: BTreeSet<(u64, WorkerId)>,
    last_grant: HashMap<WorkerId, u64>,
    grants: u64,
    /// Busy slots per host, kept as loads change (the host schemes read it on every pick).
    host_busy: HashMap<String, u32>,
}

impl Pool {
    pub fn update(&mut self, load: &WorkerLoad) {
        if !self.loads.contains_key(&load.worker_id) {
            self.order.insert((0, load.worker_id.clone()));
            self.last_grant.insert(load.worker_id.clone(), 0);
        }
        *self.host_busy.entry(load.host.clone()).or_default() += load.busy;
        if let Some(old) = self.loads.insert(load.worker_id.clone(), load.clone()) {
            self.forget_busy(&old);
        }
    }

    pub fn remove(&mut self, worker_id: &str) {
        if let Some(old) = self.loads.remove(worker_id) {
            self.forget_busy(&old);
        }
        if let Some(last) = self.last_grant.remove(worker_id) {
            self.order.remove(&(last, worker_id.to_string()));
        }
    }

    fn forget_busy(&mut self, old: &WorkerLoad) {
        if let Some(busy) = self.host_busy.get_mut(&old.host) {
            *busy -= old.busy;
            if *busy == 0 {
                self.host_busy.remove(&old.host);
            }
        }
    }

    /// `worker_id` was just granted a job: it goes to the back of the order.
    pub fn granted(&mut self, worker_id: &str) {
        let Some(last) = self.last_grant.get_mut(worker_id) else { return };
        self.order.remove(&(*last, worker_id.to_string()));
        self.grants += 1;
        *last = self.grants;
        self.order.insert((self.grants, worker_id.to_string()));
    }

    /// The workers that can serve `request` now, least recently granted first.
    pub fn eligible(&self, request: &JobRequest) -> Vec<&WorkerLoad> {
        self.order
            .iter()
            .filter_map(|(_, id)| self.loads.get(id))
            .filter(|load| load.can_serve(request))
            .collect()
    }
}

impl Pool {
    /// Busy slots on `host`, over every worker there (eligible or not).
    pub fn host_busy(&self, host: &str) -> u32 {
        self.host_busy.get(host).copied().unwrap_or(0)
    }
}

/// A worker's load for the schemes that compare loads: its busy share of what the request
/// needs (GPUs for a GPU request, else CPU slots), as a fraction.
pub fn busy_share(load: &WorkerLoad, request: &JobRequest) -> f64 {
    if request.n_gpu > 0 {
        f64::from(load.gpu_total - load.gpu_free()) / f64::from(load.gpu_total.max(1))
    } else {
        f64::from(load.busy) / f64::from(load.cpu_total.max(1))
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;

    pub fn load(id: &str, host: &str, total: u32, busy: u32) -> WorkerLoad {
        WorkerLoad {
            worker_id: id.into(),
            host: host.into(),
            cpu_total: total,
            busy,
            idle: u32::from(busy < total),
            gpu_total: 0,
            free_gpus: Vec::new(),
            starting: 0,
            hwm: 0,
        }
    }

    pub fn cpu_request() -> JobRequest {
        JobRequest { request_id: 1, n_cpu: 1, n_gpu: 0, class_name: "A".into(), on_worker: None }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn the_order_is_least_recently_granted_first_and_only_eligible_workers_count() {
        let mut pool = Pool::default();
        for load in [load("a", "h", 2, 0), load("b", "h", 2, 0), load("full", "h", 1, 1)] {
            pool.update(&load);
        }
        pool.granted("a");
        let ids: Vec<&str> = pool.eligible(&cpu_request()).iter().map(|l| l.worker_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        pool.remove("b");
        let ids: Vec<&str> = pool.eligible(&cpu_request()).iter().map(|l| l.worker_id.as_str()).collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn busy_slots_per_host_follow_every_change() {
        let mut pool = Pool::default();
        pool.update(&load("a", "h1", 4, 1));
        pool.update(&load("b", "h1", 4, 2));
        pool.update(&load("c", "h2", 4, 3));
        assert_eq!((pool.host_busy("h1"), pool.host_busy("h2")), (3, 3));
        pool.update(&load("b", "h1", 4, 0));
        pool.remove("c");
        assert_eq!((pool.host_busy("h1"), pool.host_busy("h2"), pool.host_busy("none")), (1, 0, 0));
    }
}
