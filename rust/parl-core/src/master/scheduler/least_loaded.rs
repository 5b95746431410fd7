//! Least-loaded: the worker with the smallest share of its busy resources, so actors spread
//! over machines instead of piling onto the first one. A CPU request compares busy CPU slots,
//! a GPU request compares used GPUs.

use super::Scheduler;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct LeastLoaded;

/// (used, total) of the resource `request` consumes on `worker`.
fn usage(request: &JobRequest, worker: &WorkerLoad) -> (u64, u64) {
    if request.n_gpu > 0 {
        (u64::from(worker.gpu_total - worker.gpu_free), u64::from(worker.gpu_total))
    } else {
        (u64::from(worker.busy), u64::from(worker.cpu_total))
    }
}

impl Scheduler for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn pick(&mut self, request: &JobRequest, workers: &[WorkerLoad]) -> Option<usize> {
        workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.can_serve(request))
            // Compare used/total as cross products to stay in integers.
            .min_by(|(_, a), (_, b)| {
                let ((a_used, a_total), (b_used, b_total)) = (usage(request, a), usage(request, b));
                let lhs = a_used * b_total.max(1);
                let rhs = b_used * a_total.max(1);
                lhs.cmp(&rhs).then(b.idle.cmp(&a.idle))
            })
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: &str, total: u32, busy: u32, idle: u32) -> WorkerLoad {
        WorkerLoad { worker_id: id.into(), cpu_total: total, busy, idle, gpu_total: 0, gpu_free: 0 }
    }

    fn gpu_load(id: &str, gpu_total: u32, gpu_free: u32, idle: u32) -> WorkerLoad {
        WorkerLoad { gpu_total, gpu_free, ..load(id, 0, gpu_total - gpu_free, idle) }
    }

    fn request(n_gpu: u32) -> JobRequest {
        JobRequest { request_id: 1, n_cpu: u32::from(n_gpu == 0), n_gpu, class_name: "A".into() }
    }

    #[test]
    fn picks_the_smallest_busy_share_with_an_idle_job() {
        let workers = [load("a", 4, 3, 1), load("b", 2, 1, 1), load("c", 8, 0, 0)];
        assert_eq!(LeastLoaded.pick(&request(0), &workers), Some(1));
    }

    #[test]
    fn none_when_no_worker_has_an_idle_job() {
        let workers = [load("a", 1, 1, 0), load("b", 2, 0, 0)];
        assert_eq!(LeastLoaded.pick(&request(0), &workers), None);
    }

    #[test]
    fn gpu_requests_need_enough_free_gpus_on_one_worker() {
        let workers = [gpu_load("a", 4, 1, 3), gpu_load("b", 8, 2, 2), gpu_load("c", 2, 2, 0)];
        assert_eq!(LeastLoaded.pick(&request(2), &workers), Some(1), "c has GPUs but no warm job");
        assert_eq!(LeastLoaded.pick(&request(1), &workers), Some(0), "a: 3/4 used beats b: 6/8 on idle");
        assert_eq!(LeastLoaded.pick(&request(3), &workers), None);
        let fresh = [gpu_load("a", 4, 2, 2), gpu_load("b", 4, 4, 4)];
        assert_eq!(LeastLoaded.pick(&request(1), &fresh), Some(1), "the least used GPUs");
    }
}
