//! Which worker serves a request. Each scheme is one file behind the [`Scheduler`] trait, so
//! schemes can be swapped without touching the registry or the queue.

mod least_loaded;

pub use least_loaded::LeastLoaded;

use crate::master::registry::WorkerLoad;
use crate::protocol::JobRequest;

pub trait Scheduler: Send {
    /// The scheme's name, as users select it.
    fn name(&self) -> &'static str;

    /// Picks a worker among `workers` that can serve `request` now ([`WorkerLoad::can_serve`]:
    /// a warm job, and for a GPU request `n_gpu` free GPUs on that same worker), or None if none
    /// can (the request then waits in the queue). A scheme only chooses among such workers;
    /// the registry reserves the job and the GPU ids.
    fn pick(&mut self, request: &JobRequest, workers: &[WorkerLoad]) -> Option<usize>;
}

/// The scheduler selected by name; None for an unknown name.
pub fn by_name(name: &str) -> Option<Box<dyn Scheduler>> {
    match name {
        "least-loaded" => Some(Box::new(LeastLoaded)),
        _ => None,
    }
}
