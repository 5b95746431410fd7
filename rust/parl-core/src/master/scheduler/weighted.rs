//! `weighted`: draw two of the workers that can serve, each with probability proportional
//! to 1 / (1e-6 + load), and take the less loaded (IPython's). The load is the busy share of
//! what the request needs, so workers of different sizes compare fairly.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;

use super::pool::{busy_share, Pool};
use super::Choose;
use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub struct Weighted(pub StdRng);

impl Choose for Weighted {
    fn name(&self) -> &'static str {
        "weighted"
    }

    fn choose(&mut self, eligible: &[&WorkerLoad], _pool: &Pool, request: &JobRequest) -> usize {
        let loads: Vec<f64> = eligible.iter().map(|load| busy_share(load, request)).collect();
        let Ok(weights) = WeightedIndex::new(loads.iter().map(|load| 1.0 / (1e-6 + load))) else {
            return 0;
        };
        let (first, second) = (weights.sample(&mut self.0), weights.sample(&mut self.0));
        if loads[second] < loads[first] {
            second
        } else {
            first
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::testing::{cpu_request, load};
    use super::super::Scheme;

    #[test]
    fn weighted_takes_the_less_loaded_of_two_inverse_load_draws() {
        // Loads 1/4 and 3/4: weights 4 and 4/3, so a draw is "light" with probability 3/4;
        // the less loaded of two is "heavy" only when both are: 1/16.
        let mut scheduler = Scheme::Weighted.scheduler(3);
        scheduler.update(&load("light", "h", 4, 1));
        scheduler.update(&load("heavy", "h", 4, 3));
        let heavy = (0..16_000).filter(|_| scheduler.pick(&cpu_request()).unwrap().worker == "heavy").count();
        assert!(heavy.abs_diff(1000) < 130, "heavy picked {heavy} times of 16,000 (expected ~1,000)");
    }
}
