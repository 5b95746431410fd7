//! Least-loaded: the worker with the smallest share of its busy resources, so actors spread
//! over machines instead of piling onto the first one. A CPU request compares busy CPU slots,
//! a GPU request compares used GPUs. Ties go to the worker with more warm jobs, then to the
//! smallest worker id.
//!
//! The workers that have a warm job are kept ordered by that rank (a B-tree), so a CPU pick
//! is the first entry, O(log n) to maintain per load change. A GPU pick walks the GPU order
//! until a worker has `n_gpu` free GPUs: usually the first one, at worst every GPU worker.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use super::{Placement, Scheduler};
use crate::master::registry::WorkerLoad;
use crate::protocol::{JobRequest, WorkerId};

#[derive(Default)]
pub struct LeastLoaded {
    loads: HashMap<WorkerId, WorkerLoad>,
    /// Workers with a warm job, by busy CPU share.
    cpu: BTreeSet<Rank>,
    /// Workers with a warm job and GPUs, by used GPU share.
    gpu: BTreeSet<Rank>,
}

/// A worker's place in an order: `used / total` ascending (compared as cross products, in
/// integers), then more warm jobs first, then the smaller id.
#[derive(Debug, Clone)]
struct Rank {
    used: u64,
    /// At least 1.
    total: u64,
    idle: u32,
    worker_id: WorkerId,
}

impl Rank {
    fn cpu(load: &WorkerLoad) -> Rank {
        Rank {
            used: u64::from(load.busy),
            total: u64::from(load.cpu_total.max(1)),
            idle: load.idle,
            worker_id: load.worker_id.clone(),
        }
    }

    fn gpu(load: &WorkerLoad) -> Rank {
        Rank {
            used: u64::from(load.gpu_total.saturating_sub(load.gpu_free())),
            total: u64::from(load.gpu_total.max(1)),
            idle: load.idle,
            worker_id: load.worker_id.clone(),
        }
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Rank) -> Ordering {
        (self.used * other.total)
            .cmp(&(other.used * self.total))
            .then(other.idle.cmp(&self.idle))
            .then_with(|| self.worker_id.cmp(&other.worker_id))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Rank) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Rank {
    fn eq(&self, other: &Rank) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Rank {}

impl Scheduler for LeastLoaded {
    fn name(&self) -> &'static str {
        "leastload"
    }

    fn update(&mut self, load: &WorkerLoad) {
        self.remove(&load.worker_id);
        if load.has_room() {
            self.cpu.insert(Rank::cpu(load));
            if load.gpu_total > 0 {
                self.gpu.insert(Rank::gpu(load));
            }
        }
        self.loads.insert(load.worker_id.clone(), load.clone());
    }

    fn remove(&mut self, worker_id: &str) {
        if let Some(old) = self.loads.remove(worker_id) {
            self.cpu.remove(&Rank::cpu(&old));
            self.gpu.remove(&Rank::gpu(&old));
        }
    }

    fn pick(&mut self, request: &JobRequest) -> Option<Placement> {
        let load = |rank: &Rank| self.loads.get(&rank.worker_id);
        let chosen = if request.n_gpu == 0 {
            self.cpu.first().and_then(load)
        } else {
            self.gpu.iter().filter_map(load).find(|l| l.can_serve(request))
        };
        chosen.map(|load| Placement::on(load, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn load(id: &str, total: u32, busy: u32, idle: u32) -> WorkerLoad {
        WorkerLoad {
            worker_id: id.into(),
            host: "h".into(),
            cpu_total: total,
            busy,
            idle,
            gpu_total: 0,
            free_gpus: Vec::new(),
            starting: 0,
            hwm: 0,
        }
    }

    fn gpu_load(id: &str, gpu_total: u32, gpu_free: u32, idle: u32) -> WorkerLoad {
        let free_gpus = (0..gpu_free).map(|g| g.to_string()).collect();
        WorkerLoad { gpu_total, free_gpus, ..load(id, 0, gpu_total - gpu_free, idle) }
    }

    fn request(n_gpu: u32) -> JobRequest {
        JobRequest {
            request_id: 1,
            n_cpu: u32::from(n_gpu == 0),
            n_gpu,
            class_name: "A".into(),
            on_worker: None,
        }
    }

    fn scheduler(workers: &[WorkerLoad]) -> LeastLoaded {
        let mut s = LeastLoaded::default();
        for w in workers {
            s.update(w);
        }
        s
    }

    fn pick(workers: &[WorkerLoad], n_gpu: u32) -> Option<WorkerId> {
        scheduler(workers).pick(&request(n_gpu)).map(|p| p.worker)
    }

    /// The scheme as a plain scan over every worker (how it was first written): the indexed
    /// scheduler must always agree with it.
    fn reference(request: &JobRequest, workers: &[WorkerLoad]) -> Option<WorkerId> {
        let usage = |w: &WorkerLoad| {
            if request.n_gpu > 0 {
                (u64::from(w.gpu_total - w.gpu_free()), u64::from(w.gpu_total))
            } else {
                (u64::from(w.busy), u64::from(w.cpu_total))
            }
        };
        let mut sorted: Vec<&WorkerLoad> = workers.iter().collect();
        sorted.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        sorted
            .into_iter()
            .filter(|w| w.can_serve(request))
            .min_by(|a, b| {
                let ((a_used, a_total), (b_used, b_total)) = (usage(a), usage(b));
                (a_used * b_total.max(1)).cmp(&(b_used * a_total.max(1))).then(b.idle.cmp(&a.idle))
            })
            .map(|w| w.worker_id.clone())
    }

    #[test]
    fn picks_the_smallest_busy_share_with_an_idle_job() {
        let workers = [load("a", 4, 3, 1), load("b", 2, 1, 1), load("c", 8, 0, 0)];
        assert_eq!(pick(&workers, 0).as_deref(), Some("b"));
    }

    #[test]
    fn none_when_no_worker_has_an_idle_job() {
        let workers = [load("a", 1, 1, 0), load("b", 2, 0, 0)];
        assert_eq!(pick(&workers, 0), None);
    }

    #[test]
    fn gpu_requests_need_enough_free_gpus_on_one_worker() {
        let workers = [gpu_load("a", 4, 1, 3), gpu_load("b", 8, 2, 2), gpu_load("c", 2, 2, 0)];
        assert_eq!(pick(&workers, 2).as_deref(), Some("b"), "c has GPUs but no warm job");
        assert_eq!(pick(&workers, 1).as_deref(), Some("a"), "a: 3/4 used beats b: 6/8 on idle");
        assert_eq!(pick(&workers, 3), None);
        let fresh = [gpu_load("a", 4, 2, 2), gpu_load("b", 4, 4, 4)];
        assert_eq!(pick(&fresh, 1).as_deref(), Some("b"), "the least used GPUs");
    }

    #[test]
    fn updates_and_removals_move_workers_in_the_order() {
        let mut s = scheduler(&[load("a", 4, 0, 4), load("b", 4, 0, 4)]);
        assert_eq!(
            s.pick(&request(0)).map(|p| p.worker).as_deref(),
            Some("a"),
            "a tie goes to the smaller id"
        );
        s.update(&load("a", 4, 1, 3));
        assert_eq!(s.pick(&request(0)).map(|p| p.worker).as_deref(), Some("b"));
        s.update(&load("b", 4, 4, 0));
        assert_eq!(s.pick(&request(0)).map(|p| p.worker).as_deref(), Some("a"), "b has no warm job left");
        s.remove("a");
        assert_eq!(s.pick(&request(0)), None);
        s.remove("a");
        s.update(&load("b", 4, 3, 1));
        assert_eq!(s.pick(&request(0)).map(|p| p.worker).as_deref(), Some("b"));
    }

    #[test]
    fn the_index_always_agrees_with_a_scan_of_every_worker() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for gpus in [false, true] {
            let mut s = LeastLoaded::default();
            let mut workers: HashMap<String, WorkerLoad> = HashMap::new();
            for _ in 0..5_000 {
                let id = format!("w{}", rng.random_range(0..40));
                if rng.random_bool(0.1) {
                    s.remove(&id);
                    workers.remove(&id);
                } else {
                    let total = rng.random_range(1..12);
                    let busy = rng.random_range(0..=total);
                    let idle = rng.random_range(0..=total - busy);
                    let load = if gpus {
                        gpu_load(&id, total, total - busy, idle)
                    } else {
                        load(&id, total, busy, idle)
                    };
                    s.update(&load);
                    workers.insert(id, load);
                }
                let all: Vec<WorkerLoad> = workers.values().cloned().collect();
                let n_gpu = if gpus { rng.random_range(1..4) } else { 0 };
                assert_eq!(
                    s.pick(&request(n_gpu)).map(|p| p.worker),
                    reference(&request(n_gpu), &all),
                    "{all:?}"
                );
            }
        }
    }
}
