//! `pack`: a worker on the busiest host that can still serve, so that one machine fills
//! before the next is used (Ray's default of packing); ties go to the least recently granted
//! worker.

use super::pool::Pool;
use super::Choose;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct Pack;

impl Choose for Pack {
    fn name(&self) -> &'static str {
        "pack"
    }

    fn choose(&mut self, eligible: &[&WorkerLoad], pool: &Pool, _request: &JobRequest) -> usize {
        let mut best = 0;
        for (i, load) in eligible.iter().enumerate() {
            // Strictly busier only: the first of equals (least recently granted) stays.
            if pool.host_busy(&load.host) > pool.host_busy(&eligible[best].host) {
                best = i;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::testing::{cpu_request, load};
    use super::super::Scheme;

    #[test]
    fn pack_fills_the_busiest_host_before_using_another() {
        let mut scheduler = Scheme::Pack.scheduler(0);
        scheduler.update(&load("h1-a", "h1", 4, 3));
        scheduler.update(&load("h2-a", "h2", 4, 0));
        assert_eq!(scheduler.pick(&cpu_request()).map(|p| p.worker).as_deref(), Some("h1-a"));
        scheduler.update(&load("h1-a", "h1", 4, 4));
        assert_eq!(scheduler.pick(&cpu_request()).map(|p| p.worker).as_deref(), Some("h2-a"), "h1 is full");
    }
}
