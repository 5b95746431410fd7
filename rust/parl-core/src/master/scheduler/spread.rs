//! `spread`: a worker on the host with the fewest busy slots, so that actors spread over
//! machines (Ray's SPREAD); ties go to the least recently granted worker.

use super::pool::Pool;
use super::Choose;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct Spread;

impl Choose for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn choose(&mut self, eligible: &[&WorkerLoad], pool: &Pool, _request: &JobRequest) -> usize {
        // `min_by_key` keeps the first of equals: the least recently granted.
        (0..eligible.len()).min_by_key(|&i| pool.host_busy(&eligible[i].host)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::testing::{cpu_request, load};
    use super::super::Scheme;

    #[test]
    fn spread_goes_to_the_least_busy_host_even_past_a_free_worker_on_a_busy_one() {
        let mut scheduler = Scheme::Spread.scheduler(0);
        // Host h1 runs 3 actors on two workers; h2 runs 1.
        scheduler.update(&load("h1-a", "h1", 4, 2));
        scheduler.update(&load("h1-b", "h1", 4, 1));
        scheduler.update(&load("h2-a", "h2", 8, 1));
        assert_eq!(scheduler.pick(&cpu_request()).map(|p| p.worker).as_deref(), Some("h2-a"));
        scheduler.update(&load("h2-a", "h2", 8, 4));
        assert_eq!(
            scheduler.pick(&cpu_request()).map(|p| p.worker).as_deref(),
            Some("h1-a"),
            "h1 is now the less busy"
        );
    }
}
