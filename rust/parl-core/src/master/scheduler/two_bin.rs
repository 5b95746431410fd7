//! `twobin`: draw two of the workers that can serve at random, take the less recently
//! granted of the two (IPython's).

use rand::rngs::StdRng;
use rand::Rng;

use super::pool::Pool;
use super::Choose;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct TwoBin(pub StdRng);

impl Choose for TwoBin {
    fn name(&self) -> &'static str {
        "twobin"
    }

    fn choose(&mut self, eligible: &[&WorkerLoad], _pool: &Pool, _request: &JobRequest) -> usize {
        // `eligible` is least recently granted first: the smaller index is the older grant.
        let (first, second) =
            (self.0.random_range(0..eligible.len()), self.0.random_range(0..eligible.len()));
        first.min(second)
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::testing::{cpu_request, load};
    use super::super::Scheme;

    #[test]
    fn twobin_favours_the_less_recently_granted_as_the_minimum_of_two_draws() {
        // With n workers in LRU order, index k comes out with probability (2(n-k)-1)/n^2:
        // for 4 workers 7/16, 5/16, 3/16 and 1/16.
        let mut scheduler = Scheme::TwoBin.scheduler(9);
        for id in ["a", "b", "c", "d"] {
            scheduler.update(&load(id, "h", 4, 0));
        }
        let mut counts = [0usize; 4];
        for _ in 0..16_000 {
            let worker = scheduler.pick(&cpu_request()).unwrap().worker;
            counts[(worker.as_bytes()[0] - b'a') as usize] += 1;
        }
        for (k, expected) in [7000, 5000, 3000, 1000].into_iter().enumerate() {
            assert!(counts[k].abs_diff(expected) < 400, "{counts:?}");
        }
    }
}
