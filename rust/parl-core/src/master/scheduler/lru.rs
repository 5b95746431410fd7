//! `lru`: the least recently granted worker that can serve; loads ignored (IPython's `lru`).

use super::pool::Pool;
use super::Choose;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct Lru;

impl Choose for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }

    fn choose(&mut self, _eligible: &[&WorkerLoad], _pool: &Pool, _request: &JobRequest) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::testing::{cpu_request, load};
    use super::super::Scheme;

    #[test]
    fn lru_picks_the_least_recently_granted_whatever_the_loads() {
        let mut scheduler = Scheme::Lru.scheduler(0);
        for (id, busy) in [("a", 0), ("b", 3), ("c", 1)] {
            scheduler.update(&load(id, "h", 4, busy));
        }
        let mut picks = Vec::new();
        for _ in 0..6 {
            let worker = scheduler.pick(&cpu_request()).unwrap().worker;
            scheduler.granted(&worker);
            picks.push(worker);
        }
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }
}
