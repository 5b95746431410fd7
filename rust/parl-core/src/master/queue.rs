//! Requests for jobs that could not be served at once, in arrival order, one line per kind
//! of demand.
//!
//! PARL's clients retried every second for five minutes; here a request waits at the master
//! and is served the moment a job that fits it is free. Requests of one kind (CPU, or so many
//! GPUs) wait in one line; a kind that cannot be served does not hold up the others: a 2-GPU
//! request waiting for two free GPUs never stops a 1-GPU request behind it. Within a line the
//! clients take turns, each in its own arrival order: one client's 1,000 queued creations
//! delay another client's single request by one grant, not by 1,000.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use crate::protocol::{ClientId, JobRequest, WorkerId};

#[derive(Debug, Clone, PartialEq)]
pub struct PendingRequest {
    pub client: ClientId,
    pub request: JobRequest,
    pub since: Instant,
}

/// What a request needs of a worker; requests of one kind wait in one line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Demand {
    pub n_cpu: u32,
    pub n_gpu: u32,
    /// The one worker that will do, if any.
    pub on_worker: Option<WorkerId>,
}

impl Demand {
    pub fn of(request: &JobRequest) -> Demand {
        Demand { n_cpu: request.n_cpu, n_gpu: request.n_gpu, on_worker: request.on_worker.clone() }
    }
}

/// The requests of one kind of demand, by client, and the clients' turns: the head is the
/// oldest request of the client whose turn it is; a client served goes to the back.
#[derive(Debug, Default)]
struct Line {
    by_client: HashMap<ClientId, BTreeSet<u64>>,
    turns: VecDeque<ClientId>,
}

impl Line {
    fn push(&mut self, client: &ClientId, number: u64) {
        let numbers = self.by_client.entry(client.clone()).or_insert_with(|| {
            self.turns.push_back(client.clone());
            BTreeSet::new()
        });
        numbers.insert(number);
    }

    fn head(&self) -> Option<u64> {
        let client = self.turns.front()?;
        self.by_client.get(client)?.first().copied()
    }

    /// Removes a request; a client `served` gives its turn to the next one.
    fn remove(&mut self, client: &str, number: u64, served: bool) {
        let Some(numbers) = self.by_client.get_mut(client) else { return };
        numbers.remove(&number);
        if numbers.is_empty() {
            self.by_client.remove(client);
            self.turns.retain(|waiting| waiting != client);
        } else if served && self.turns.front().is_some_and(|first| first == client) {
            self.turns.rotate_left(1);
        }
    }

    fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }
}

/// A waiting request's place in the queue (its arrival number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Waiting requests in arrival order, indexed by client and request id so that a cancel or a
/// departing client costs O(log n) per request, not a scan of everyone's requests (a cluster
/// that is full can have tens of thousands waiting, all timing out together), and by kind of
/// demand, so that the oldest request of each kind is found at once.
#[derive(Debug, Default)]
pub struct RequestQueue {
    /// By arrival number.
    items: BTreeMap<u64, PendingRequest>,
    /// Arrival number of each waiting request: client -> request id -> number.
    index: HashMap<ClientId, HashMap<u64, u64>>,
    /// The lines, by kind of demand.
    lines: BTreeMap<Demand, Line>,
    next: u64,
}

impl RequestQueue {
    pub fn push(&mut self, client: ClientId, request: JobRequest, now: Instant) {
        let number = self.next;
        self.next += 1;
        // A request id used twice by one client replaces the first request.
        let ids = self.index.entry(client.clone()).or_default();
        if let Some(old) = ids.insert(request.request_id, number) {
            self.remove_item(old, false);
        }
        self.lines.entry(Demand::of(&request)).or_default().push(&client, number);
        self.items.insert(number, PendingRequest { client, request, since: now });
    }

    /// The oldest request, without removing it.
    pub fn front(&self) -> Option<&PendingRequest> {
        self.items.first_key_value().map(|(_, pending)| pending)
    }

    /// Removes the oldest request of all (tests: the order of arrival).
    #[cfg(test)]
    fn pop_front(&mut self) -> Option<PendingRequest> {
        let number = *self.items.first_key_value()?.0;
        self.take(Ticket(number))
    }

    /// The head of each line (the next request of the client whose turn it is), oldest
    /// first: the ones that may be served next.
    pub fn heads(&self) -> Vec<(Ticket, &PendingRequest)> {
        let mut heads: Vec<(Ticket, &PendingRequest)> = self
            .lines
            .values()
            .filter_map(Line::head)
            .map(|number| (Ticket(number), &self.items[&number]))
            .collect();
        heads.sort_by_key(|(ticket, _)| *ticket);
        heads
    }

    /// Removes the request at `ticket` (one of [`RequestQueue::heads`]), to serve it: its
    /// client's turn in its line passes to the next client.
    pub fn take(&mut self, ticket: Ticket) -> Option<PendingRequest> {
        let pending = self.remove_item(ticket.0, true)?;
        self.unindex(&pending.client, pending.request.request_id);
        Some(pending)
    }

    /// Removes one request of a client; true if it was still waiting.
    pub fn cancel(&mut self, client: &str, request_id: u64) -> bool {
        match self.unindex(client, request_id) {
            Some(number) => self.remove_item(number, false).is_some(),
            None => false,
        }
    }

    /// Removes an item and its place in its line (not its client index entry).
    fn remove_item(&mut self, number: u64, served: bool) -> Option<PendingRequest> {
        let pending = self.items.remove(&number)?;
        let demand = Demand::of(&pending.request);
        if let Some(line) = self.lines.get_mut(&demand) {
            line.remove(&pending.client, number, served);
            if line.is_empty() {
                self.lines.remove(&demand);
            }
        }
        Some(pending)
    }

    /// Forgets the arrival number of a request; returns it.
    fn unindex(&mut self, client: &str, request_id: u64) -> Option<u64> {
        let ids = self.index.get_mut(client)?;
        let number = ids.remove(&request_id);
        if ids.is_empty() {
            self.index.remove(client);
        }
        number
    }

    /// Removes the requests for which `why` gives a reason, and returns them with it.
    pub fn take_where(
        &mut self,
        mut why: impl FnMut(&JobRequest) -> Option<String>,
    ) -> Vec<(PendingRequest, String)> {
        let reasons: Vec<(u64, String)> = self
            .items
            .iter()
            .filter_map(|(number, p)| why(&p.request).map(|reason| (*number, reason)))
            .collect();
        let mut taken = Vec::with_capacity(reasons.len());
        for (number, reason) in reasons {
            if let Some(pending) = self.remove_item(number, false) {
                self.unindex(&pending.client, pending.request.request_id);
                taken.push((pending, reason));
            }
        }
        taken
    }

    /// Removes every request of a client that left.
    pub fn remove_client(&mut self, client: &str) {
        for number in self.index.remove(client).into_iter().flat_map(|ids| ids.into_values()) {
            self.remove_item(number, false);
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The waiting requests, oldest first (for the monitor and the fuzz harness's checks).
    pub fn iter(&self) -> impl Iterator<Item = &PendingRequest> {
        self.items.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64) -> JobRequest {
        JobRequest { request_id: id, n_cpu: 1, n_gpu: 0, class_name: "A".into(), on_worker: None }
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
        assert!(q.index.is_empty());
    }

    #[test]
    fn served_requests_cannot_be_cancelled_and_the_index_empties() {
        let now = Instant::now();
        let mut q = RequestQueue::default();
        q.push("a".into(), request(1), now);
        q.push("b".into(), request(1), now);
        q.push("a".into(), request(2), now);
        assert_eq!(q.pop_front().unwrap().client, "a");
        assert!(!q.cancel("a", 1), "already served");
        assert!(q.cancel("a", 2));
        assert!(!q.cancel("nobody", 2));
        q.remove_client("b");
        assert!(q.is_empty() && q.index.is_empty() && q.lines.is_empty());
        assert!(q.front().is_none());
    }

    fn gpu_request(id: u64, n_gpu: u32) -> JobRequest {
        JobRequest { request_id: id, n_cpu: 1, n_gpu, class_name: "G".into(), on_worker: None }
    }

    #[test]
    fn clients_take_turns_in_a_line_so_a_flood_does_not_starve_anyone() {
        let now = Instant::now();
        let mut q = RequestQueue::default();
        for id in 1..=1000 {
            q.push("flood".into(), request(id), now);
        }
        q.push("single".into(), request(1), now);
        q.push("late".into(), request(1), now);
        let mut served = Vec::new();
        for _ in 0..5 {
            let (ticket, _) = q.heads()[0];
            let pending = q.take(ticket).unwrap();
            served.push(format!("{}:{}", pending.client, pending.request.request_id));
        }
        assert_eq!(served, ["flood:1", "single:1", "late:1", "flood:2", "flood:3"]);
        assert!(q.lines[&Demand::of(&request(0))].turns.len() == 1);
    }

    #[test]
    fn each_kind_of_demand_has_its_own_line_in_arrival_order() {
        let now = Instant::now();
        let mut q = RequestQueue::default();
        q.push("a".into(), gpu_request(1, 2), now);
        q.push("a".into(), gpu_request(2, 1), now);
        q.push("b".into(), gpu_request(3, 2), now);
        q.push("b".into(), gpu_request(4, 1), now);
        let heads: Vec<u64> = q.heads().iter().map(|(_, p)| p.request.request_id).collect();
        assert_eq!(heads, [1, 2], "the oldest of each kind, oldest first");
        // Serving the 1-GPU line does not touch the 2-GPU one.
        let (ticket, _) = q.heads()[1];
        assert_eq!(q.take(ticket).unwrap().request.request_id, 2);
        let heads: Vec<u64> = q.heads().iter().map(|(_, p)| p.request.request_id).collect();
        assert_eq!(heads, [1, 4]);
        assert!(q.cancel("a", 1));
        q.remove_client("b");
        assert!(q.is_empty() && q.lines.is_empty() && q.heads().is_empty());
    }

    #[test]
    fn a_reused_request_id_replaces_the_waiting_request() {
        let now = Instant::now();
        let mut q = RequestQueue::default();
        q.push("a".into(), request(1), now);
        q.push("b".into(), request(1), now);
        q.push("a".into(), request(1), now);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_front().unwrap().client, "b");
        assert!(q.cancel("a", 1));
        assert!(q.is_empty());
    }

    #[test]
    fn many_cancels_keep_the_order_of_the_rest() {
        let now = Instant::now();
        let mut q = RequestQueue::default();
        for id in 0..10_000 {
            q.push(format!("c{}", id % 7), request(id), now);
        }
        for id in (0..10_000).filter(|id| id % 3 != 0) {
            assert!(q.cancel(&format!("c{}", id % 7), id));
        }
        q.remove_client("c0");
        let left: Vec<u64> = std::iter::from_fn(|| q.pop_front()).map(|p| p.request.request_id).collect();
        let expected: Vec<u64> = (0..10_000).filter(|id| id % 3 == 0 && id % 7 != 0).collect();
        assert_eq!(left, expected);
    }
}
