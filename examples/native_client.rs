//! A Rust program that drives four Python simulator actors (examples/simulator.py) on a
//! parl_rs cluster and prints what they did.
//!
//! ```text
//! cargo run -p parl-client --example native_client                   # a cluster in this process
//! cargo run -p parl-client --example native_client -- 127.0.0.1:8010 # after `xparl start --port 8010`
//! ```
//!
//! The client ships simulator.py to the jobs, creates four `simulator:Simulator` actors with
//! different seeds, and runs an episode on each: every round sends one step to all four before
//! waiting for any, so the four simulators step at once. Jobs run a Python with parl_rs
//! installed (`$PARL_RS_PYTHON`, else `python3`, for the in-process cluster).

use parl_client::{Actor, Call, Client, LocalCluster};
use serde::Deserialize;

/// What `Simulator.step` returns (a Python dict).
#[derive(Deserialize, Debug)]
struct Step {
    state: Vec<f64>,
    reward: f64,
    done: bool,
}

/// A simple controller: push back towards 0.
fn action(state: &[f64]) -> f64 {
    -0.5 * state[0]
}

fn main() -> Result<(), parl_client::Error> {
    let simulator = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/simulator.py");
    let local; // an in-process cluster lives as long as this program, when there is one
    let builder = match std::env::args().nth(1) {
        Some(address) => Client::builder(&address),
        None => {
            local = LocalCluster::start(4)?;
            local.client()
        }
    };
    let client = builder.ship_file(simulator).connect()?;
    println!("connected to {}", client.master_address());

    let creations: Vec<Call<Actor>> =
        (0..4).map(|seed| client.actor("simulator:Simulator").create((seed,))).collect();
    let simulators = creations.into_iter().map(Call::wait).collect::<Result<Vec<_>, _>>()?;

    let mut states: Vec<Vec<f64>> =
        simulators.iter().map(|sim| sim.call("reset", ())).map(Call::wait).collect::<Result<_, _>>()?;
    let mut returns = [0.0f64; 4];
    let mut steps = [0u32; 4];
    let mut running = [true; 4];
    while running.iter().any(|r| *r) {
        // One step on every running simulator, all in flight before any is waited for.
        let calls: Vec<(usize, Call<Step>)> = (0..4)
            .filter(|&i| running[i])
            .map(|i| (i, simulators[i].call("step", (action(&states[i]),))))
            .collect();
        for (i, call) in calls {
            let step = call.wait()?;
            returns[i] += step.reward;
            steps[i] += 1;
            running[i] = !step.done;
            states[i] = step.state;
        }
    }
    for (i, sim) in simulators.iter().enumerate() {
        let episodes: u32 = sim.get("episodes").wait()?;
        println!(
            "simulator {i} (actor {}): {} steps, return {:.2}, final position {:+.3}, episodes {episodes}",
            sim.id().unwrap_or("?"),
            steps[i],
            returns[i],
            states[i][0],
        );
    }
    Ok(())
}
