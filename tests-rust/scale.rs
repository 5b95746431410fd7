//! The master-scale harness (`benches/scale_harness.rs`) at a small size: 200 simulated
//! workers and 2,000 actors against a real master process with default heartbeats. Asserts
//! behaviour, never timing: every actor granted, no worker dropped, no slot counted twice,
//! the master's thread count independent of its peers.

#[path = "../benches/scale_harness.rs"]
mod scale_harness;

use std::path::Path;
use std::process::Command;

use scale_harness::{master_child_main, run, ScaleConfig, MASTER_ENV};

/// The master's process: this test binary again, running only this test, which becomes the
/// master when the harness sets its ready-file variable (and does nothing otherwise).
#[test]
fn master_process() {
    if let Ok(ready) = std::env::var(MASTER_ENV) {
        master_child_main(Path::new(&ready));
    }
}

#[test]
fn a_master_serves_200_workers_and_2000_actors() {
    let config = ScaleConfig {
        workers: 200,
        slots_per_worker: 11,
        actors: 2_000,
        clients: 4,
        window: 4,
        idle_samples: 20,
        hold_s: 1.5,
        churn_s: 1.5,
        churn_rate: 400.0,
        connect_concurrency: 32,
        status_every_s: 0.2,
        master_log: std::env::temp_dir().join(format!("parl-scale-test-{}.log", std::process::id())),
    };
    let mut master = Command::new(std::env::current_exe().expect("own path"));
    master.args(["master_process", "--exact", "--nocapture", "--test-threads=1"]);
    let report = run(&config, master);
    scale_harness::print_summary(&report);
    let checks = &report.checks;
    assert!(checks.all_actors_granted, "{} of {} actors granted", report.actors_reached, config.actors);
    assert_eq!(checks.workers_registered, config.workers);
    assert_eq!(checks.workers_in_status, config.workers, "the master lost workers");
    assert_eq!((checks.worker_links_lost, checks.client_links_lost), (0, 0), "links lost the master");
    assert_eq!(checks.peers_lost_in_master_log, 0, "the master dropped peers (see its log)");
    assert_eq!(checks.failed_requests, 0, "creations refused or unanswered");
    assert_eq!(checks.slots_counted_twice, 0);
    assert_eq!((checks.unknown_jobs, checks.unexpected_messages, checks.actors_died), (0, 0, 0));
    assert!(checks.status_consistent, "the master's books disagree with the simulated cluster's");
    assert_eq!(checks.thread_growth, 0, "the master's threads grew with its peers: {:?}", report.snapshots);
    assert_eq!(checks.probe_timeouts, 0, "the master did not answer a heartbeat or status within 10 s");
    assert!(report.churn_returns > 0, "churn returned nothing");
    let _ = std::fs::remove_file(&config.master_log);
}
