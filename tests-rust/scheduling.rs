//! The scheduling simulation (`benches/scheduling_sim.rs`) at a small size: every scheme
//! serves every request without counting a slot twice (the simulation asserts it), with
//! workers dying and joining; and the host schemes do what they say.

#[path = "../benches/scheduling_sim.rs"]
mod scheduling_sim;

use parl_core::master::scheduler::Scheme;
use scheduling_sim::{simulate, SimConfig};

#[test]
fn every_scheme_serves_every_request_and_none_waits_for_ever() {
    let config = SimConfig::small();
    for scheme in Scheme::ALL {
        let result = simulate(&config, scheme);
        assert_eq!(result.served, config.requests, "{}", scheme.name());
        assert!(result.killed > 0, "{}: the dying workers ran jobs", scheme.name());
        // The last request arrives before arrival_s; none waits longer than the whole run.
        assert!(result.max_wait_s < result.makespan_s, "{}: {result:?}", scheme.name());
    }
}

#[test]
fn spread_evens_out_the_hosts_more_than_pack() {
    let config = SimConfig { requests: 300, arrival_s: 300.0, ..SimConfig::small() };
    let (spread, pack) = (simulate(&config, Scheme::Spread), simulate(&config, Scheme::Pack));
    assert!(spread.host_balance < pack.host_balance, "spread {spread:?} / pack {pack:?}");
}
