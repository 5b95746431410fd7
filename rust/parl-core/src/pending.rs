//! Connections that have not passed the key handshake yet: each gets a deadline, and there
//! are only so many at a time, in all and per remote address.
//!
//! A peer without the key must not be able to hold a server's descriptors: one that connects
//! and sends nothing, or stops half-way through the handshake, is closed when its deadline
//! passes, and connections beyond the caps are closed at once. Peers that passed the handshake
//! are not counted (they hold the key; heartbeats watch them). Time is an input, so the rules
//! are tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::transport::PeerId;

/// How long a new connection may take to pass the handshake (a real one takes milliseconds).
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Connections in the handshake at once, from all addresses.
pub const MAX_PENDING: usize = 512;
/// Connections in the handshake at once from one remote address (on the master's and the
/// jobs' ports; a worker's job socket, which only its own jobs reach over loopback, has only
/// the total cap: a worker with hundreds of CPUs may start that many jobs at once).
pub const MAX_PENDING_PER_ADDRESS: usize = 128;

/// Why a new connection was closed at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many connections in the handshake from this address.
    FromAddress(String, usize),
    /// Too many connections in the handshake in all.
    Total,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::FromAddress(address, cap) => {
                write!(f, "{address} already has {cap} connections in the key handshake")
            }
            Refusal::Total => write!(f, "{MAX_PENDING} connections are already in the key handshake"),
        }
    }
}

/// The connections of one server socket that are still in the handshake.
pub struct PendingPeers {
    deadline: Duration,
    per_address_cap: usize,
    peers: HashMap<PeerId, (Instant, String)>,
    per_address: HashMap<String, usize>,
}

impl PendingPeers {
    /// `per_address_cap` connections at most from one address ([`MAX_PENDING_PER_ADDRESS`],
    /// or [`MAX_PENDING`] for no cap of its own).
    pub fn new(deadline: Duration, per_address_cap: usize) -> PendingPeers {
        PendingPeers { deadline, per_address_cap, peers: HashMap::new(), per_address: HashMap::new() }
    }

    /// A connection from `address` arrived at `now`; Err if it must be closed at once.
    pub fn arrive(&mut self, peer: PeerId, address: String, now: Instant) -> Result<(), Refusal> {
        if self.peers.len() >= MAX_PENDING {
            return Err(Refusal::Total);
        }
        let count = self.per_address.entry(address.clone()).or_default();
        if *count >= self.per_address_cap {
            return Err(Refusal::FromAddress(address, self.per_address_cap));
        }
        *count += 1;
        self.peers.insert(peer, (now + self.deadline, address));
        Ok(())
    }

    /// `peer` passed the handshake, or left: it no longer counts.
    pub fn settle(&mut self, peer: &PeerId) {
        let Some((_, address)) = self.peers.remove(peer) else { return };
        if let Some(count) = self.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
    }

    /// The peers whose deadline has passed at `now`, no longer counted: close them.
    pub fn expired(&mut self, now: Instant) -> Vec<PeerId> {
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in &late {
            self.settle(peer);
        }
        late
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn peer(i: usize) -> PeerId {
        Bytes::from(i.to_string())
    }

    #[test]
    fn a_connection_that_does_not_finish_in_time_is_closed_and_one_that_does_is_not() {
        let start = Instant::now();
        let mut pending = PendingPeers::new(HANDSHAKE_DEADLINE, MAX_PENDING_PER_ADDRESS);
        pending.arrive(peer(1), "10.0.0.1".into(), start).unwrap();
        pending.arrive(peer(2), "10.0.0.1".into(), start + Duration::from_secs(1)).unwrap();
        pending.arrive(peer(3), "10.0.0.2".into(), start).unwrap();
        pending.settle(&peer(3));
        assert!(pending.expired(start + Duration::from_millis(4999)).is_empty());
        assert_eq!(pending.expired(start + HANDSHAKE_DEADLINE), vec![peer(1)]);
        assert_eq!(pending.expired(start + Duration::from_secs(6)), vec![peer(2)]);
        assert!(pending.is_empty() && pending.per_address.is_empty());
    }

    #[test]
    fn the_caps_hold_per_address_and_in_all_and_free_up() {
        let now = Instant::now();
        let mut pending = PendingPeers::new(HANDSHAKE_DEADLINE, MAX_PENDING_PER_ADDRESS);
        for i in 0..MAX_PENDING_PER_ADDRESS {
            pending.arrive(peer(i), "attacker".into(), now).unwrap();
        }
        let refused = pending.arrive(peer(10_000), "attacker".into(), now);
        assert_eq!(refused, Err(Refusal::FromAddress("attacker".into(), MAX_PENDING_PER_ADDRESS)));
        // Others still get in, up to the total.
        for i in MAX_PENDING_PER_ADDRESS..MAX_PENDING {
            pending.arrive(peer(i), format!("host {}", i % 7), now).unwrap();
        }
        assert_eq!(pending.arrive(peer(10_001), "someone".into(), now), Err(Refusal::Total));
        // A settled connection makes room again.
        pending.settle(&peer(0));
        pending.arrive(peer(10_002), "attacker".into(), now).unwrap();
        assert_eq!(pending.len(), MAX_PENDING);
    }

    #[test]
    fn without_a_cap_of_its_own_one_address_may_use_the_total() {
        let now = Instant::now();
        let mut pending = PendingPeers::new(HANDSHAKE_DEADLINE, MAX_PENDING);
        for i in 0..MAX_PENDING {
            pending.arrive(peer(i), "127.0.0.1".into(), now).unwrap();
        }
        assert_eq!(pending.arrive(peer(MAX_PENDING), "127.0.0.1".into(), now), Err(Refusal::Total));
    }
}
