//! Which worker serves a request. Each scheme is one file behind the [`Scheduler`] trait, so
//! schemes can be swapped without touching the registry or the queue; `xparl start --scheme`
//! chooses one ([`Scheme`]).
//!
//! A scheduler keeps its own view of the workers' loads, told by [`Scheduler::update`] and
//! [`Scheduler::remove`] whenever one changes (the master forwards the registry's changes
//! before each pick), so that a pick never has to rebuild every load: with thousands of
//! workers, that was the master's bottleneck. `leastload` keeps its workers ordered; the
//! others (`pool::Pool`) look at the eligible workers in least-recently-granted order.
//!
//! The schemes of IPython parallel's task scheduler (`leastload`, `lru`, `plainrandom`,
//! `twobin`, `weighted`; `../shared/reference/scheduling.md`), and two over hosts as Ray
//! places actors: `spread` and `pack`.

mod least_loaded;
mod lru;
mod pack;
mod plain_random;
mod pool;
mod spread;
mod two_bin;
mod weighted;

pub use least_loaded::LeastLoaded;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::master::registry::WorkerLoad;
use crate::protocol::{JobRequest, WorkerId};
use pool::Pool;

pub trait Scheduler: Send {
    /// The scheme's name, as users select it.
    fn name(&self) -> &'static str;

    /// A worker joined, or its load changed.
    fn update(&mut self, load: &WorkerLoad);

    /// A worker left.
    fn remove(&mut self, worker_id: &str);

    /// Where `request` is served now: a worker that can take it ([`WorkerLoad::can_serve`]: a
    /// warm job, and for a GPU request `n_gpu` free GPUs on that same worker) and which of its
    /// GPUs, or None if no worker can (the request then waits in the queue). The registry
    /// reserves the job and those GPUs. Picking changes nothing: the master calls
    /// [`Scheduler::granted`] once the job is reserved.
    fn pick(&mut self, request: &JobRequest) -> Option<Placement>;

    /// `worker_id` was granted a job (schemes that prefer the least recently granted use it).
    fn granted(&mut self, _worker_id: &str) {}
}

/// Where a request is served: the worker, and the GPU ids of that worker its actor gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub worker: WorkerId,
    pub gpus: Vec<String>,
}

impl Placement {
    /// `request` on the worker of `load`, with the first `n_gpu` of its free GPUs (its
    /// order: the ids the worker listed first). `load` must be able to serve `request`.
    pub fn on(load: &WorkerLoad, request: &JobRequest) -> Placement {
        let gpus = load.free_gpus.iter().take(request.n_gpu as usize).cloned().collect();
        Placement { worker: load.worker_id.clone(), gpus }
    }
}

/// The placement schemes a master can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// The smallest busy share of what the request needs; ties to more warm jobs.
    #[default]
    LeastLoad,
    /// The least recently granted worker; loads ignored.
    Lru,
    /// Uniformly at random.
    PlainRandom,
    /// The less recently granted of two drawn at random.
    TwoBin,
    /// The less loaded of two drawn with probability proportional to 1 / (1e-6 + load).
    Weighted,
    /// The host with the fewest busy slots (actors spread over machines).
    Spread,
    /// The busiest host that can still take it (fill one machine before the next).
    Pack,
}

impl Scheme {
    pub const ALL: [Scheme; 7] = [
        Scheme::LeastLoad,
        Scheme::Lru,
        Scheme::PlainRandom,
        Scheme::TwoBin,
        Scheme::Weighted,
        Scheme::Spread,
        Scheme::Pack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scheme::LeastLoad => "leastload",
            Scheme::Lru => "lru",
            Scheme::PlainRandom => "plainrandom",
            Scheme::TwoBin => "twobin",
            Scheme::Weighted => "weighted",
            Scheme::Spread => "spread",
            Scheme::Pack => "pack",
        }
    }

    /// The scheme called `name`, or an error that lists the valid names.
    pub fn parse(name: &str) -> Result<Scheme, String> {
        Scheme::ALL.into_iter().find(|scheme| scheme.name() == name.trim()).ok_or_else(|| {
            let names: Vec<&str> = Scheme::ALL.iter().map(|scheme| scheme.name()).collect();
            format!("unknown scheme {name:?}: choose one of {}", names.join(", "))
        })
    }

    /// A scheduler running this scheme; the random ones draw from a generator seeded with
    /// `seed` (randomness is an input: the same seed, the same picks).
    pub fn scheduler(self, seed: u64) -> Box<dyn Scheduler> {
        let rng = StdRng::seed_from_u64(seed);
        match self {
            Scheme::LeastLoad => Box::new(LeastLoaded::default()),
            Scheme::Lru => Box::new(Pooled::new(lru::Lru)),
            Scheme::PlainRandom => Box::new(Pooled::new(plain_random::PlainRandom(rng))),
            Scheme::TwoBin => Box::new(Pooled::new(two_bin::TwoBin(rng))),
            Scheme::Weighted => Box::new(Pooled::new(weighted::Weighted(rng))),
            Scheme::Spread => Box::new(Pooled::new(spread::Spread)),
            Scheme::Pack => Box::new(Pooled::new(pack::Pack)),
        }
    }
}

/// A scheme that chooses among the workers of a [`Pool`] that can serve a request.
trait Choose: Send {
    fn name(&self) -> &'static str;

    /// One of `eligible` (never empty; least recently granted first). `pool` has every
    /// worker, for schemes that look beyond the eligible ones (at hosts).
    fn choose(&mut self, eligible: &[&WorkerLoad], pool: &Pool, request: &JobRequest) -> usize;
}

/// A [`Choose`] scheme with its [`Pool`].
struct Pooled<C> {
    pool: Pool,
    choose: C,
}

impl<C: Choose> Pooled<C> {
    fn new(choose: C) -> Pooled<C> {
        Pooled { pool: Pool::default(), choose }
    }
}

impl<C: Choose> Scheduler for Pooled<C> {
    fn name(&self) -> &'static str {
        self.choose.name()
    }

    fn update(&mut self, load: &WorkerLoad) {
        self.pool.update(load);
    }

    fn remove(&mut self, worker_id: &str) {
        self.pool.remove(worker_id);
    }

    fn pick(&mut self, request: &JobRequest) -> Option<Placement> {
        let eligible = self.pool.eligible(request);
        if eligible.is_empty() {
            return None;
        }
        let index = self.choose.choose(&eligible, &self.pool, request);
        Some(Placement::on(eligible[index], request))
    }

    fn granted(&mut self, worker_id: &str) {
        self.pool.granted(worker_id);
    }
}

#[cfg(test)]
mod tests {
    use super::pool::testing::{cpu_request, load};
    use super::*;

    #[test]
    fn a_wrong_name_lists_the_valid_ones_and_every_name_round_trips() {
        for scheme in Scheme::ALL {
            assert_eq!(Scheme::parse(scheme.name()), Ok(scheme));
            assert_eq!(scheme.scheduler(1).name(), scheme.name());
        }
        let why = Scheme::parse("fastest").unwrap_err();
        assert!(why.contains("\"fastest\"") && why.contains("leastload, lru, plainrandom"), "{why}");
    }

    #[test]
    fn every_scheme_picks_only_workers_that_can_serve_and_none_when_there_are_none() {
        for scheme in Scheme::ALL {
            let mut scheduler = scheme.scheduler(7);
            scheduler.update(&load("full", "h1", 2, 2));
            assert_eq!(scheduler.pick(&cpu_request()), None, "{}", scheme.name());
            scheduler.update(&load("free", "h2", 2, 1));
            for _ in 0..20 {
                assert_eq!(
                    scheduler.pick(&cpu_request()).map(|p| p.worker).as_deref(),
                    Some("free"),
                    "{}",
                    scheme.name()
                );
            }
            scheduler.remove("free");
            assert_eq!(scheduler.pick(&cpu_request()), None, "{}", scheme.name());
        }
    }
}
