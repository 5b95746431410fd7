//! The last hour of the cluster, one point per [`INTERVAL`]: counts within each interval
//! (calls, tasks, deaths) and values at its end (actors, slots, queue; each worker's slots,
//! memory and load). Bounded: [`POINTS`] points, whatever the run's length.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::api;

pub const INTERVAL: Duration = Duration::from_secs(10);
/// One hour.
pub const POINTS: usize = 360;

/// The cluster in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterPoint {
    pub calls: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub deaths: u64,
    pub actors: u32,
    pub cpu_used: u32,
    pub waiting: u32,
}

/// One worker at the end of an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerPoint {
    pub cpu_used: u32,
    pub memory_used: Option<u64>,
    pub load1: Option<f64>,
}

/// A [`WorkerPoint`] as kept: 12 bytes, not 40 (an hour of 2,000 workers is 8.6 MB). Memory in
/// KiB (up to 4 TiB), and sentinels for what is not known.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stored {
    cpu_used: u32,
    memory_kib: u32,
    load1: f32,
}

impl Stored {
    /// The worker was not there.
    const ABSENT: Stored = Stored { cpu_used: u32::MAX, memory_kib: u32::MAX, load1: f32::NAN };
    const NO_MEMORY: u32 = u32::MAX;

    fn of(point: WorkerPoint) -> Stored {
        let memory_kib = point
            .memory_used
            .map_or(Stored::NO_MEMORY, |bytes| (bytes >> 10).min(u64::from(u32::MAX - 1)) as u32);
        Stored {
            cpu_used: point.cpu_used.min(u32::MAX - 1),
            memory_kib,
            load1: point.load1.map_or(f32::NAN, |l| l as f32),
        }
    }

    fn point(self) -> Option<WorkerPoint> {
        (self.cpu_used != u32::MAX).then(|| WorkerPoint {
            cpu_used: self.cpu_used,
            memory_used: (self.memory_kib != Stored::NO_MEMORY).then(|| u64::from(self.memory_kib) << 10),
            load1: (!self.load1.is_nan()).then(|| f64::from(self.load1)),
        })
    }
}

/// The point that follows `point`: its values, and no counts yet.
fn without_counts(point: ClusterPoint) -> ClusterPoint {
    ClusterPoint { calls: 0, tasks_done: 0, tasks_failed: 0, deaths: 0, ..point }
}

#[derive(Debug)]
pub struct History {
    /// When the oldest point's interval began.
    first: Instant,
    /// Oldest first; the last is the running interval. Never empty.
    cluster: VecDeque<ClusterPoint>,
    /// Aligned with `cluster`: [`Stored::ABSENT`] where the worker was not there.
    workers: HashMap<String, VecDeque<Stored>>,
}

impl History {
    pub fn new(now: Instant) -> History {
        History { first: now, cluster: VecDeque::from([ClusterPoint::default()]), workers: HashMap::new() }
    }

    /// Adds to the counts of the interval running at `now`.
    pub fn count(&mut self, now: Instant, add: impl FnOnce(&mut ClusterPoint)) {
        self.roll(now);
        add(self.cluster.back_mut().expect("never empty"));
    }

    /// Sets the values of the interval running at `now`.
    pub fn set(
        &mut self,
        now: Instant,
        gauges: (u32, u32, u32),
        workers: impl IntoIterator<Item = (String, WorkerPoint)>,
    ) {
        self.roll(now);
        let point = self.cluster.back_mut().expect("never empty");
        (point.actors, point.cpu_used, point.waiting) = gauges;
        let len = self.cluster.len();
        for (worker, value) in workers {
            let series =
                self.workers.entry(worker).or_insert_with(|| VecDeque::from(vec![Stored::ABSENT; len]));
            *series.back_mut().expect("aligned with the cluster's") = Stored::of(value);
        }
    }

    /// Starts the intervals that began by `now`, forgetting those older than an hour.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.first).as_secs_f64();
        let current = (elapsed / INTERVAL.as_secs_f64()) as usize;
        let last = self.cluster.len() - 1;
        if current > last + POINTS {
            // Silent for over an hour (a suspended machine): only the values carry over.
            let carried = without_counts(*self.cluster.back().expect("never empty"));
            self.first += INTERVAL * current as u32;
            self.cluster = VecDeque::from([carried]);
            self.workers.clear();
            return;
        }
        for _ in last..current {
            let carried = without_counts(*self.cluster.back().expect("never empty"));
            self.cluster.push_back(carried);
            for series in self.workers.values_mut() {
                series.push_back(Stored::ABSENT);
            }
        }
        while self.cluster.len() > POINTS {
            self.cluster.pop_front();
            self.first += INTERVAL;
            for series in self.workers.values_mut() {
                series.pop_front();
            }
        }
        // From the newest: a live worker's last point is there, so this is one look per worker.
        self.workers.retain(|_, series| series.iter().rev().any(|stored| stored.point().is_some()));
    }

    pub fn view(&mut self, now: Instant, end_unix: f64) -> api::History {
        self.roll(now);
        let mut cluster = api::ClusterSeries::default();
        for point in &self.cluster {
            cluster.calls.push(point.calls);
            cluster.tasks_done.push(point.tasks_done);
            cluster.tasks_failed.push(point.tasks_failed);
            cluster.deaths.push(point.deaths);
            cluster.actors.push(point.actors);
            cluster.cpu_used.push(point.cpu_used);
            cluster.waiting.push(point.waiting);
        }
        let workers: BTreeMap<String, api::WorkerSeries> = self
            .workers
            .iter()
            .map(|(id, series)| {
                let mut view = api::WorkerSeries::default();
                for point in series.iter().map(|stored| stored.point()) {
                    view.cpu_used.push(point.map(|p| p.cpu_used));
                    view.memory_used.push(point.and_then(|p| p.memory_used));
                    view.load1.push(point.and_then(|p| p.load1));
                }
                (id.clone(), view)
            })
            .collect();
        api::History {
            api_version: api::API_VERSION,
            interval_s: INTERVAL.as_secs_f64(),
            end: end_unix,
            cluster,
            workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(cpu_used: u32) -> (String, WorkerPoint) {
        ("w".to_string(), WorkerPoint { cpu_used, memory_used: Some(7 << 10), load1: None })
    }

    #[test]
    fn counts_go_to_the_running_interval_and_values_carry_over() {
        let t0 = Instant::now();
        let mut history = History::new(t0);
        history.count(t0, |p| p.calls += 2);
        history.set(t0, (3, 4, 0), [worker(4)]);
        history.count(t0 + INTERVAL * 2 + Duration::from_secs(1), |p| p.tasks_done += 5);
        let view = history.view(t0 + INTERVAL * 2 + Duration::from_secs(2), 100.0);
        assert_eq!(view.cluster.calls, vec![2, 0, 0]);
        assert_eq!(view.cluster.tasks_done, vec![0, 0, 5]);
        assert_eq!(view.cluster.actors, vec![3, 3, 3], "values carry over into new intervals");
        assert_eq!(view.workers["w"].cpu_used, vec![Some(4), None, None]);
        assert_eq!(view.workers["w"].memory_used, vec![Some(7 << 10), None, None]);
    }

    #[test]
    fn an_hour_is_kept_and_no_more() {
        let t0 = Instant::now();
        let mut history = History::new(t0);
        for i in 0..(POINTS as u32 + 50) {
            history.count(t0 + INTERVAL * i, |p| p.calls += u64::from(i));
            history.set(t0 + INTERVAL * i, (i, 0, 0), [worker(i)]);
        }
        let view = history.view(t0 + INTERVAL * (POINTS as u32 + 49), 0.0);
        assert_eq!(view.cluster.calls.len(), POINTS);
        assert_eq!(view.cluster.calls[0], 50);
        assert_eq!(view.workers["w"].cpu_used.len(), POINTS);
        // Two days later: one point, the values carried, workers forgotten.
        let view = history.view(t0 + Duration::from_secs(2 * 86_400), 0.0);
        assert_eq!(
            (view.cluster.calls.clone(), view.cluster.actors.clone()),
            (vec![0], vec![POINTS as u32 + 49])
        );
        assert!(view.workers.is_empty());
    }
}
