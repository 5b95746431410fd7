//! `plainrandom`: uniformly at random among the workers that can serve (IPython's).

use rand::rngs::StdRng;
use rand::Rng;

use super::pool::Pool;
use super::Choose;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct PlainRandom(pub StdRng);

impl Choose for PlainRandom {
    fn name(&self) -> &'static str {
        "plainrandom"
    }

    fn choose(&mut self, eligible: &[&WorkerLoad], _pool: &Pool, _request: &JobRequest) -> usize {
        self.0.random_range(0..eligible.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::testing::{cpu_request, load};
    use super::super::Scheme;
    use std::collections::HashMap;

    #[test]
    fn plainrandom_is_uniform_and_the_same_seed_gives_the_same_picks() {
        let picks = |seed| {
            let mut scheduler = Scheme::PlainRandom.scheduler(seed);
            for id in ["a", "b", "c", "d"] {
                scheduler.update(&load(id, "h", 4, 0));
            }
            (0..4000).map(|_| scheduler.pick(&cpu_request()).unwrap().worker).collect::<Vec<_>>()
        };
        let first = picks(42);
        assert_eq!(first, picks(42));
        let mut counts: HashMap<String, usize> = HashMap::new();
        for worker in first {
            *counts.entry(worker).or_default() += 1;
        }
        // 1000 expected each; 4 standard deviations is about 110.
        assert!(counts.values().all(|&n| (880..=1120).contains(&n)), "{counts:?}");
    }
}
