//! Requests for jobs that could not be served at once, in arrival order.
//!
//! PARL's clients retried every second for five minutes; here a request waits at the master
//! and is served the moment a job is free.

use std::collections::VecDeque;
use std::time::Instant;

use crate::protocol::{ClientId, JobRequest};

#[derive(Debug, Clone, PartialEq)]
pub struct PendingRequest {
    pub client: ClientId,
    pub request: JobRequest,
    pub since: Instant,
}

#[derive(Debug, Default)]
pub struct RequestQueue {
    items: VecDeque<PendingRequest>,
}

impl RequestQueue {
    pub fn push(&mut self, client: ClientId, request: JobRequest, now: Instant) {
        self.items.push_back(PendingRequest { client, request, since: now });
    }

    /// The oldest request, without removing it.
    pub fn front(&self) -> Option<&PendingRequest> {
        self.items.front()
    }

    pub fn pop_front(&mut self) -> Option<PendingRequest> {
        self.items.pop_front()
    }

    /// Removes one request of a client; true if it was still waiting.
    pub fn cancel(&mut self, client: &str, request_id: u64) -> bool {
        let before = self.items.len();
        self.items.retain(|p| !(p.client == client && p.request.request_id == request_id));
        self.items.len() != before
    }

    /// Removes the requests for which `why` gives a reason, and returns them with it.
    pub fn take_where(
        &mut self,
        mut why: impl FnMut(&JobRequest) -> Option<String>,
    ) -> Vec<(PendingRequest, String)> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for pending in self.items.drain(..) {
            match why(&pending.request) {
                Some(reason) => taken.push((pending, reason)),
                None => kept.push_back(pending),
            }
        }
        self.items = kept;
        taken
    }

    /// Removes every request of a client that left.
    pub fn remove_client(&mut self, client: &str) {
        self.items.retain(|p| p.client != client);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The waiting requests, oldest first (for the fuzz harness's checks).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn iter(&self) -> impl Iterator<Item = &PendingRequest> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64) -> JobRequest {
        JobRequest { request_id: id, n_cpu: 1, n_gpu: 0, class_name: "A".into() }
    }

    #[test]
    fn fifo_with_cancel_and_client_removal() {
        let now = Instant::now();
        let mut q = RequestQueue::default();
        q.push("a".into(), request(1), now);
        q.push("b".into(), request(1), now);
        q.push("a".into(), request(2), now);
        assert!(q.cancel("a", 1));
        assert!(!q.cancel("a", 1));
        assert_eq!(q.front().unwrap().client, "b");
        q.remove_client("a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_front().unwrap().client, "b");
        assert!(q.is_empty());
    }

    #[test]
    fn take_where_keeps_the_order_of_the_rest() {
        let now = Instant::now();
        let mut q = RequestQueue::default();
        for id in 1..=4 {
            q.push("a".into(), request(id), now);
        }
        let taken = q.take_where(|r| (r.request_id % 2 == 0).then(|| format!("even {}", r.request_id)));
        let reasons: Vec<_> = taken.iter().map(|(_, why)| why.as_str()).collect();
        assert_eq!(reasons, ["even 2", "even 4"]);
        assert_eq!(q.pop_front().unwrap().request.request_id, 1);
        assert_eq!(q.pop_front().unwrap().request.request_id, 3);
    }
}
