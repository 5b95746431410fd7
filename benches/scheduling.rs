//! The scheduling simulation at full size (`benches/scheduling_sim.rs`): 50 workers of 1-32
//! slots on 12 hosts, 20,000 requests from 6 clients over 600 simulated seconds, each running
//! 1-60 s, 5 workers dying and 5 joining; every scheme on the same arrivals.
//!
//! ```text
//! cargo bench -p parl-core --bench scheduling
//! ```
//!
//! Runs it saturated and at about half load; prints both tables and writes them to
//! `benches/results/scheduling-sim.json`.

mod scheduling_sim;

use parl_core::master::scheduler::Scheme;
use scheduling_sim::{print_table, simulate, SimConfig};

fn main() {
    let mut tables = Vec::new();
    for (name, config) in [("saturated", SimConfig::full()), ("half load", SimConfig::half_load())] {
        tables.push(serde_json::json!({ "name": name, "config": config, "results": run(name, &config) }));
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/results/scheduling-sim.json");
    let json = serde_json::to_string_pretty(&tables).expect("serializes");
    std::fs::write(&path, json + "\n").expect("writes");
    println!("wrote {}", path.display());
}

fn run(name: &str, config: &SimConfig) -> Vec<scheduling_sim::SchemeResult> {
    println!(
        "\n{name}: {} workers (1-{} slots) on {} hosts, {} requests from {} clients over {} s, \
         1-{} s each, {} workers dying and as many joining, seed {}",
        config.workers,
        config.max_slots,
        config.hosts,
        config.requests,
        config.clients,
        config.arrival_s,
        config.max_duration_s,
        config.churn,
        config.seed
    );
    let results: Vec<_> = Scheme::ALL.into_iter().map(|scheme| simulate(config, scheme)).collect();
    print_table(&results);
    results
}
