//! Master scale: a real master (in a child process, default heartbeats, a cluster key) against
//! 2,000 simulated workers and 20,000 actors on 127.0.0.1 (see `scale_harness.rs`).
//!
//! ```text
//! cargo bench -p parl-core --bench master_scale
//! ```
//!
//! Prints the phases as they run and a summary, and writes the figures to
//! `benches/results/master-scale.json`. Sizes can be changed with `PARL_SCALE_WORKERS`,
//! `PARL_SCALE_SLOTS`, `PARL_SCALE_ACTORS`, `PARL_SCALE_CLIENTS`, `PARL_SCALE_CHURN_RATE`,
//! `PARL_SCALE_CHURN_S`, `PARL_SCALE_HOLD_S`; the master's placement scheme with
//! `PARL_SCALE_SCHEME` (figures then go to `master-scale-<scheme>.json`).

mod scale_harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use scale_harness::{master_child_main, print_summary, run, scheme_from_env, ScaleConfig, MASTER_ENV};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if let Ok(ready) = std::env::var(MASTER_ENV) {
        master_child_main(Path::new(&ready));
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let results = repo.join("benches/results");
    std::fs::create_dir_all(&results).expect("benches/results");
    let workers = env_or("PARL_SCALE_WORKERS", 2_000);
    let config = ScaleConfig {
        workers,
        // One slot more than the 10 per worker that 20,000 actors need: churn then finds free
        // slots while the returned ones are being replaced, as on a real cluster with headroom.
        slots_per_worker: env_or("PARL_SCALE_SLOTS", 11),
        actors: env_or("PARL_SCALE_ACTORS", 20_000),
        clients: env_or("PARL_SCALE_CLIENTS", 20),
        window: 8,
        idle_samples: 300,
        hold_s: env_or("PARL_SCALE_HOLD_S", 12.0),
        churn_s: env_or("PARL_SCALE_CHURN_S", 20.0),
        churn_rate: env_or("PARL_SCALE_CHURN_RATE", 1_000.0),
        connect_concurrency: 64,
        status_every_s: 1.0,
        master_log: std::env::temp_dir().join(format!("parl-master-scale-{}.log", std::process::id())),
    };
    assert!(config.actors <= config.slots(), "more actors than slots");
    let scheme = scheme_from_env();
    println!(
        "master scale: {} simulated workers x {} slots, {} actors from {} clients, default heartbeats (1 s / 5 s), scheme {}",
        config.workers,
        config.slots_per_worker,
        config.actors,
        config.clients,
        scheme.name()
    );
    let exe = std::env::current_exe().expect("own path");
    let report = run(&config, Command::new(exe));
    print_summary(&report);
    let path: PathBuf = match scheme {
        parl_core::master::scheduler::Scheme::LeastLoad => results.join("master-scale.json"),
        other => results.join(format!("master-scale-{}.json", other.name())),
    };
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    std::fs::write(&path, json + "\n").expect("writing the results");
    println!("wrote {}", path.display());
    let _ = std::fs::remove_file(&config.master_log);
    if !report.checks.healthy() {
        eprintln!("the master did not stay healthy at this scale: see checks above");
        std::process::exit(1);
    }
}
