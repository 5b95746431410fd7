//! Least-loaded: the worker with the smallest share of busy CPUs, so actors spread over
//! machines instead of piling onto the first one.

use super::Scheduler;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct LeastLoaded;

impl Scheduler for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn pick(&mut self, _request: &JobRequest, workers: &[WorkerLoad]) -> Option<usize> {
        workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.idle > 0)
            // Compare busy/total as cross products to stay in integers.
            .min_by(|(_, a), (_, b)| {
                let lhs = u64::from(a.busy) * u64::from(b.cpu_total.max(1));
                let rhs = u64::from(b.busy) * u64::from(a.cpu_total.max(1));
                lhs.cmp(&rhs).then(b.idle.cmp(&a.idle))
            })
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: &str, total: u32, busy: u32, idle: u32) -> WorkerLoad {
        WorkerLoad { worker_id: id.into(), cpu_total: total, busy, idle }
    }

    fn request() -> JobRequest {
        JobRequest { request_id: 1, n_cpu: 1, n_gpu: 0, class_name: "A".into() }
    }

    #[test]
    fn picks_the_smallest_busy_share_with_an_idle_job() {
        let workers = [load("a", 4, 3, 1), load("b", 2, 1, 1), load("c", 8, 0, 0)];
        assert_eq!(LeastLoaded.pick(&request(), &workers), Some(1));
    }

    #[test]
    fn none_when_no_worker_has_an_idle_job() {
        let workers = [load("a", 1, 1, 0), load("b", 2, 0, 0)];
        assert_eq!(LeastLoaded.pick(&request(), &workers), None);
    }
}
