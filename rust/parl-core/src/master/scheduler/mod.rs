//! Which worker serves a request. Each scheme is one file behind the [`Scheduler`] trait, so
//! schemes can be swapped without touching the registry or the queue.
//!
//! A scheduler keeps its own view of the workers' loads, told by [`Scheduler::update`] and
//! [`Scheduler::remove`] whenever one changes (the master forwards the registry's changes
//! before each pick), so that a pick never has to look at every worker: with thousands of
//! workers, rebuilding every load for each grant was the master's bottleneck.

mod least_loaded;

pub use least_loaded::LeastLoaded;

use crate::master::registry::WorkerLoad;
use crate::protocol::{JobRequest, WorkerId};

pub trait Scheduler: Send {
    /// The scheme's name, as users select it.
    fn name(&self) -> &'static str;

    /// A worker joined, or its load changed.
    fn update(&mut self, load: &WorkerLoad);

    /// A worker left.
    fn remove(&mut self, worker_id: &str);

    /// Picks a worker that can serve `request` now ([`WorkerLoad::can_serve`]: a warm job, and
    /// for a GPU request `n_gpu` free GPUs on that same worker), or None if none can (the
    /// request then waits in the queue). A scheme only chooses among such workers; the
    /// registry reserves the job and the GPU ids.
    fn pick(&mut self, request: &JobRequest) -> Option<WorkerId>;
}

/// The scheduler selected by name; None for an unknown name.
pub fn by_name(name: &str) -> Option<Box<dyn Scheduler>> {
    match name {
        "least-loaded" => Some(Box::new(LeastLoaded::default())),
        _ => None,
    }
}
