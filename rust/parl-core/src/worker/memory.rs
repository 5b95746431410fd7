//! The memory watch: ends jobs whose actor uses more memory than its `max_memory`.
//!
//! One task per worker, whatever the number of jobs. Its worker tells it each job's pid when
//! the job announces itself (the watch then measures the job's baseline: the resident memory
//! of a warm interpreter with parl_rs, before any user code) and each limit when an actor sets
//! one. While any limit is set it reads the process table every [`POLL`], sums the resident
//! memory (RSS) of each limited job **and all its descendants**, and reports a job whose sum
//! exceeds `baseline + max_memory`, once. The worker then kills it, so the actor's caller hears
//! of it within about [`POLL`] plus a message round trip. The process table is read on tokio's
//! blocking pool, so neither the worker's loop nor its sockets ever wait for `/proc`.
//!
//! PARL checked only the job's own RSS, every 10 s, from inside the job, and its notice never
//! reached the caller.
//!
//! Every [`USAGE_PERIOD`] it also reports the machine's memory and load and every job's
//! memory ([`Usage`]), which the worker passes on to the master for the monitor.

use std::collections::HashMap;
use std::time::Duration;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::mpsc;

use crate::protocol::JobId;
use crate::runtime::Shutdown;

/// How often limited jobs are measured (5 times a second).
pub const POLL: Duration = Duration::from_millis(200);
/// How often the machine and every job are measured for the monitor.
pub const USAGE_PERIOD: Duration = Duration::from_secs(2);

const MB: f64 = 1024.0 * 1024.0;

/// What the worker tells its watch.
#[derive(Debug)]
pub enum Command {
    /// A job announced itself: measure its baseline now, before its actor's code runs.
    Watch { job_id: JobId, pid: u32 },
    /// The job's actor may use `max_bytes` beyond the baseline.
    Limit { job_id: JobId, max_bytes: u64 },
    /// The job ended.
    Forget { job_id: JobId },
}

/// What the watch tells its worker.
#[derive(Debug)]
pub enum Report {
    OverLimit(Violation),
    Usage(Usage),
}

/// The machine's memory and load, and each job's resident memory (children included).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Usage {
    pub memory_total: u64,
    pub memory_used: u64,
    pub load1: f64,
    pub jobs: HashMap<JobId, u64>,
}

/// A job over its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub job_id: JobId,
    /// Resident bytes of the job and its descendants.
    pub resident: u64,
    pub baseline: u64,
    pub max_bytes: u64,
    /// The job's descendants when it was measured: they go with it.
    pub descendants: Vec<u32>,
}

impl Violation {
    /// The reason its caller reads, e.g. "exceeded its memory limit (max_memory=200 MB beyond
    /// its 38.2 MB baseline): it used 412.5 MB more (450.7 MB resident, children included)".
    pub fn describe(&self) -> String {
        format!(
            "exceeded its memory limit (max_memory={} MB beyond its {:.1} MB baseline): it used {:.1} MB \
             more ({:.1} MB resident, children included)",
            format_mb(self.max_bytes),
            self.baseline as f64 / MB,
            self.resident.saturating_sub(self.baseline) as f64 / MB,
            self.resident as f64 / MB,
        )
    }
}

/// "200" for a whole number of MB, else one decimal.
fn format_mb(bytes: u64) -> String {
    let mb = bytes as f64 / MB;
    if mb.fract() == 0.0 {
        format!("{mb:.0}")
    } else {
        format!("{mb:.1}")
    }
}

/// A job the watch knows.
#[derive(Debug)]
struct Watched {
    pid: u32,
    baseline: u64,
    max_bytes: Option<u64>,
    /// Reported over its limit already (the worker is killing it).
    reported: bool,
}

/// Starts the watch task; it ends with `shutdown` or when the worker drops its sender.
pub fn spawn(shutdown: Shutdown) -> (mpsc::UnboundedSender<Command>, mpsc::UnboundedReceiver<Report>) {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    tokio::spawn(run(commands, reports_tx, shutdown));
    (commands_tx, reports)
}

async fn run(
    mut commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
    shutdown: Shutdown,
) {
    let mut jobs: HashMap<JobId, Watched> = HashMap::new();
    let mut system = Some(System::new());
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usage_tick = tokio::time::interval(USAGE_PERIOD);
    usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let limited = jobs.values().any(|j| j.max_bytes.is_some() && !j.reported);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            command = commands.recv() => match command {
                Some(command) => apply(&mut jobs, system.as_mut().expect("the table is home"), command),
                None => return,
            },
            _ = tick.tick(), if limited => {
                let limits: Vec<(JobId, u32, u64, u64)> = jobs
                    .iter()
                    .filter(|(_, j)| !j.reported)
                    .filter_map(|(id, j)| Some((id.clone(), j.pid, j.baseline, j.max_bytes?)))
                    .collect();
                let Some(found) = off_the_loop(&mut system, move |table| check(table, &limits)).await else {
                    return;
                };
                for violation in found {
                    if let Some(job) = jobs.get_mut(&violation.job_id) {
                        job.reported = true;
                        let _ = reports.send(Report::OverLimit(violation));
                    }
                }
            }
            _ = usage_tick.tick() => {
                let pids: Vec<(JobId, u32)> = jobs.iter().map(|(id, j)| (id.clone(), j.pid)).collect();
                let Some(usage) = off_the_loop(&mut system, move |table| measure(table, &pids)).await else {
                    return;
                };
                let _ = reports.send(Report::Usage(usage));
            }
        }
    }
}

/// Runs `read` on the process table on tokio's blocking pool, so that the loop never waits for
/// `/proc`; None (logged) if that failed, which stops the watch.
async fn off_the_loop<T: Send + 'static>(
    system: &mut Option<System>,
    read: impl FnOnce(&mut System) -> T + Send + 'static,
) -> Option<T> {
    let mut table = system.take().expect("the table is home");
    let measured = tokio::task::spawn_blocking(move || {
        let found = read(&mut table);
        (table, found)
    })
    .await;
    let Ok((table, found)) = measured else {
        tracing::error!("the memory watch stopped: reading the process table failed");
        return None;
    };
    *system = Some(table);
    Some(found)
}

/// Reads the machine's memory and load and the process table once; `pids`: (job id, pid).
fn measure(system: &mut System, pids: &[(JobId, u32)]) -> Usage {
    system.refresh_memory();
    let table = process_table(system);
    let children = children_of(&table);
    let jobs = pids
        .iter()
        .filter_map(|(job_id, pid)| Some((job_id.clone(), tree_usage(&table, &children, *pid)?.0)))
        .collect();
    Usage {
        memory_total: system.total_memory(),
        memory_used: system.used_memory(),
        load1: System::load_average().one,
        jobs,
    }
}

/// The process table, threads left out: pid -> (parent pid, resident bytes).
fn process_table(system: &mut System) -> ProcessTable {
    let kind = ProcessRefreshKind::nothing().with_memory().without_tasks();
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    system
        .processes()
        .iter()
        .filter(|(_, p)| p.thread_kind().is_none())
        .map(|(pid, p)| (pid.as_u32(), (p.parent().map(|p| p.as_u32()), p.memory())))
        .collect()
}

fn apply(jobs: &mut HashMap<JobId, Watched>, system: &mut System, command: Command) {
    match command {
        Command::Watch { job_id, pid } => {
            // One process, no children yet: cheap enough to read inline.
            let kind = ProcessRefreshKind::nothing().with_memory().without_tasks();
            system.refresh_processes_specifics(ProcessesToUpdate::Some(&[Pid::from_u32(pid)]), true, kind);
            let baseline = system.process(Pid::from_u32(pid)).map_or(0, |p| p.memory());
            jobs.insert(job_id, Watched { pid, baseline, max_bytes: None, reported: false });
        }
        Command::Limit { job_id, max_bytes } => match jobs.get_mut(&job_id) {
            Some(job) => job.max_bytes = Some(max_bytes),
            None => tracing::warn!("memory limit for unknown job {job_id} ignored"),
        },
        Command::Forget { job_id } => {
            jobs.remove(&job_id);
        }
    }
}

/// Reads the process table once and returns the jobs over their limit.
/// `limits`: (job id, pid, baseline, max bytes).
fn check(system: &mut System, limits: &[(JobId, u32, u64, u64)]) -> Vec<Violation> {
    let table = process_table(system);
    let children = children_of(&table);
    limits
        .iter()
        .filter_map(|(job_id, pid, baseline, max_bytes)| {
            let (resident, descendants) = tree_usage(&table, &children, *pid)?;
            (resident > baseline + max_bytes).then(|| Violation {
                job_id: job_id.clone(),
                resident,
                baseline: *baseline,
                max_bytes: *max_bytes,
                descendants,
            })
        })
        .collect()
}

/// pid -> (parent pid, resident bytes).
type ProcessTable = HashMap<u32, (Option<u32>, u64)>;

fn children_of(table: &ProcessTable) -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, (parent, _)) in table {
        if let Some(parent) = parent {
            children.entry(*parent).or_default().push(*pid);
        }
    }
    children
}

/// Resident bytes of `root` and all its descendants, and the descendants' pids; None if `root`
/// is not in the table (it just ended).
fn tree_usage(table: &ProcessTable, children: &HashMap<u32, Vec<u32>>, root: u32) -> Option<(u64, Vec<u32>)> {
    let mut resident = table.get(&root)?.1;
    let mut descendants = Vec::new();
    let mut stack: Vec<u32> = children.get(&root).cloned().unwrap_or_default();
    while let Some(pid) = stack.pop() {
        // A pid seen twice would mean a cycle in a racy read of /proc: count it once.
        if pid == root || descendants.contains(&pid) {
            continue;
        }
        descendants.push(pid);
        resident += table.get(&pid).map_or(0, |(_, memory)| *memory);
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    Some((resident, descendants))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    fn table(rows: &[(u32, Option<u32>, u64)]) -> ProcessTable {
        rows.iter().map(|(pid, parent, mb)| (*pid, (*parent, mb * M))).collect()
    }

    #[test]
    fn a_job_is_measured_with_all_its_descendants() {
        // 10 is the job; 11 and 12 its children, 13 a grandchild; 20 is someone else.
        let t = table(&[
            (1, None, 5),
            (10, Some(1), 40),
            (11, Some(10), 100),
            (12, Some(10), 7),
            (13, Some(11), 300),
            (20, Some(1), 900),
        ]);
        let children = children_of(&t);
        let (resident, mut descendants) = tree_usage(&t, &children, 10).unwrap();
        descendants.sort();
        assert_eq!((resident, descendants), (447 * M, vec![11, 12, 13]));
        assert_eq!(tree_usage(&t, &children, 13).unwrap().0, 300 * M);
        assert_eq!(tree_usage(&t, &children, 99), None);
    }

    #[test]
    fn violations_describe_limit_baseline_and_use() {
        let v = Violation {
            job_id: "j".into(),
            resident: 450 * M,
            baseline: 40 * M,
            max_bytes: 200 * M,
            descendants: vec![],
        };
        assert_eq!(
            v.describe(),
            "exceeded its memory limit (max_memory=200 MB beyond its 40.0 MB baseline): it used 410.0 MB more \
             (450.0 MB resident, children included)"
        );
        assert!(Violation { max_bytes: 3 * M / 2, ..v }.describe().contains("max_memory=1.5 MB"));
    }

    #[test]
    fn the_live_table_measures_this_process_and_its_children() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep starts");
        let mut system = System::new();
        let me = std::process::id();
        // Far over any limit: no violation. Under a zero limit: one, listing the child.
        assert!(check(&mut system, &[("j".into(), me, 1 << 40, 0)]).is_empty());
        let found = check(&mut system, &[("j".into(), me, 0, 1)]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].resident > M, "this test process holds more than 1 MB");
        assert!(found[0].descendants.contains(&child.id()), "{:?}", found[0].descendants);
    }

    #[test]
    fn usage_reads_the_machine_and_each_job_with_its_children() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep starts");
        let mut system = System::new();
        let me = std::process::id();
        let usage = measure(&mut system, &[("me".into(), me), ("gone".into(), 1 << 30)]);
        let mine = usage.jobs.get("me").copied();
        let alone = measure(&mut system, &[("child".into(), child.id())]).jobs.get("child").copied();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(usage.memory_total > 0 && usage.memory_used > 0 && usage.memory_used <= usage.memory_total);
        assert!(usage.load1 >= 0.0);
        assert!(!usage.jobs.contains_key("gone"), "a job not in the table has no usage");
        assert!(mine.unwrap() > alone.unwrap(), "this process and its child hold more than the child");
    }
}
