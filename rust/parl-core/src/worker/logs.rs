//! Job logs on a worker: the HTTP log server (PARL's `/get-log` and `/download-log`
//! contract) and the retention that keeps old logs from filling the disk.
//!
//! Each job writes its stdout and stderr (PARL dropped stderr) to `<jobs>/<job_id>/output.log`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::Result;

/// Lines `/get-log` returns unless asked for another number (PARL's default).
const DEFAULT_LINES: usize = 500;

/// How long and how much job logs are kept once their job has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetention {
    pub max_age: Duration,
    /// Total size of ended jobs' logs (and cached bundles) above which the oldest go first.
    pub max_bytes: u64,
}

impl Default for LogRetention {
    fn default() -> Self {
        LogRetention { max_age: Duration::from_secs(3 * 24 * 3600), max_bytes: 1 << 30 }
    }
}

impl LogRetention {
    /// The default, overridden by `XPARL_LOG_RETENTION_HOURS` and `XPARL_LOG_RETENTION_MB`.
    pub fn from_env() -> LogRetention {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
        let mut retention = LogRetention::default();
        if let Some(hours) = number("XPARL_LOG_RETENTION_HOURS") {
            retention.max_age = Duration::from_secs_f64(hours.max(0.0) * 3600.0);
        }
        if let Some(mb) = number("XPARL_LOG_RETENTION_MB") {
            retention.max_bytes = (mb.max(0.0) * 1048576.0) as u64;
        }
        retention
    }
}

/// The log file of a job, if `job_id` is a plausible id (it names a folder: no paths).
pub fn log_path(jobs_dir: &Path, job_id: &str) -> Option<PathBuf> {
    let plausible = !job_id.is_empty()
        && job_id.len() <= 128
        && job_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plausible.then(|| jobs_dir.join(job_id).join("output.log"))
}

/// Starts the log server on `host` (port 0: any free port). Returns "host:port".
pub async fn serve(host: &str, jobs_dir: PathBuf, auth: &crate::auth::Auth) -> Result<String> {
    let app = Router::new()
        .route("/get-log", get(get_log))
        .route("/download-log", get(download_log))
        .with_state(jobs_dir);
    crate::http::serve(&format!("{host}:0"), app, "log server", auth).await
}

#[derive(Deserialize)]
struct LogQuery {
    job_id: Option<String>,
    lines: Option<usize>,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "message": message }))).into_response()
}

/// The most `/get-log` reads from the end of a log to find its last lines: a log of gigabytes
/// costs no more than a small one.
const MAX_TAIL_BYTES: u64 = 4 << 20;

/// The log file a query names, or why not (for a 400 answer).
fn log_file(jobs_dir: &Path, query: &LogQuery) -> std::result::Result<PathBuf, String> {
    let Some(job_id) = query.job_id.as_deref() else {
        return Err("No job_id provided: ask for /get-log?job_id=<job id>".into());
    };
    let path = log_path(jobs_dir, job_id).ok_or_else(|| format!("{job_id:?} is not a job id"))?;
    if !path.is_file() {
        return Err(format!(
            "Log of job {job_id} does not exist on this worker (or was removed by retention)"
        ));
    }
    Ok(path)
}

/// The last `lines` lines of a file, read from at most its last [`MAX_TAIL_BYTES`].
fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let start = size.saturating_sub(MAX_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.split_inclusive('\n').collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // a line cut by the start of the read
    }
    Ok(all[all.len().saturating_sub(lines)..].concat())
}

async fn get_log(State(jobs_dir): State<PathBuf>, Query(query): Query<LogQuery>) -> Response {
    let path = match log_file(&jobs_dir, &query) {
        Ok(path) => path,
        Err(why) => return bad_request(why),
    };
    let lines = query.lines.unwrap_or(DEFAULT_LINES);
    // File I/O off the worker's loop, which must keep beating while a log is read.
    match tokio::task::spawn_blocking(move || tail(&path, lines)).await {
        Ok(Ok(log)) => {
            Json(serde_json::json!({ "message": "Log returned successfully", "log": log })).into_response()
        }
        _ => bad_request("the log could not be read".into()),
    }
}

async fn download_log(State(jobs_dir): State<PathBuf>, Query(query): Query<LogQuery>) -> Response {
    let path = match log_file(&jobs_dir, &query) {
        Ok(path) => path,
        Err(why) => return bad_request(why),
    };
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return bad_request("the log could not be read".into());
    };
    // Streamed: a large log is never held in memory whole.
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let name = format!("attachment; filename=\"{}.log\"", query.job_id.unwrap_or_default());
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
        (header::CONTENT_DISPOSITION, name),
    ];
    (headers, body).into_response()
}

/// A temporary name (a bundle being written: `.tmp-...`) this old was left by a process
/// that died while writing it.
const STALE_TEMPORARY: Duration = Duration::from_secs(600);

/// Removes the folders of ended jobs (and cached bundles) older than the retention age, then
/// the oldest ones while the total is above the size limit, and temporary names left by
/// writes that never finished. `live` jobs are never touched.
pub fn enforce_retention(dirs: &[&Path], live: &HashSet<String>, retention: LogRetention) {
    let now = SystemTime::now();
    let mut ended: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if name.starts_with('.') {
                // May be a write in progress: only one abandoned long ago goes.
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMPORARY {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
                continue;
            }
            if live.contains(&name) {
                continue;
            }
            ended.push((modified, tree_size(&entry.path()), entry.path()));
        }
    }
    ended.sort_by_key(|(modified, _, _)| *modified);
    let mut total: u64 = ended.iter().map(|(_, size, _)| size).sum();
    for (modified, size, path) in ended {
        let too_old = now.duration_since(modified).unwrap_or_default() > retention.max_age;
        if (too_old || total > retention.max_bytes) && std::fs::remove_dir_all(&path).is_ok() {
            total = total.saturating_sub(size);
        }
    }
}

fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_reads_only_the_end_of_a_big_log() {
        let path = std::env::temp_dir().join(format!("parl-tail-{}.log", std::process::id()));
        let mut text = "x".repeat(MAX_TAIL_BYTES as usize + 10);
        text.push_str("\nline 1\nline 2\nline 3\n");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(tail(&path, 2).unwrap(), "line 2\nline 3\n");
        assert_eq!(tail(&path, 100).unwrap(), "line 1\nline 2\nline 3\n", "the cut first line is dropped");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn job_ids_cannot_name_other_files() {
        let dir = Path::new("/jobs");
        assert_eq!(log_path(dir, "w-1-2"), Some(PathBuf::from("/jobs/w-1-2/output.log")));
        for bad in ["", "..", "../etc", "a/b", "a b"] {
            assert_eq!(log_path(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn retention_removes_old_and_excess_logs_but_never_live_ones() {
        let root = std::env::temp_dir().join(format!("parl-retention-{}", std::process::id()));
        for (name, bytes) in [("old", 10), ("live", 10), ("big", 600), ("new", 500)] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("output.log"), vec![b'x'; bytes]).unwrap();
        }
        let week_ago = SystemTime::now() - Duration::from_secs(7 * 24 * 3600);
        std::fs::File::open(root.join("old")).unwrap().set_modified(week_ago).unwrap();
        std::fs::File::open(root.join("big"))
            .unwrap()
            .set_modified(week_ago + Duration::from_secs(3600 * 24 * 6))
            .unwrap();
        let live: HashSet<String> = ["live".to_string()].into();
        let retention = LogRetention { max_age: Duration::from_secs(24 * 3600), max_bytes: 1000 };
        enforce_retention(&[&root], &live, retention);
        assert!(!root.join("old").exists(), "older than the age limit");
        assert!(!root.join("big").exists(), "the oldest beyond the size limit");
        assert!(root.join("new").exists() && root.join("live").exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn retention_removes_temporary_names_left_long_ago_but_not_a_write_in_progress() {
        let root = std::env::temp_dir().join(format!("parl-retention-tmp-{}", std::process::id()));
        for name in [".tmp-abandoned-1", ".tmp-writing-2"] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("file.py"), b"x").unwrap();
        }
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(root.join(".tmp-abandoned-1")).unwrap().set_modified(hour_ago).unwrap();
        let retention = LogRetention { max_age: Duration::from_secs(24 * 3600), max_bytes: u64::MAX };
        enforce_retention(&[&root], &HashSet::new(), retention);
        assert!(!root.join(".tmp-abandoned-1").exists(), "an abandoned temporary name stayed");
        assert!(root.join(".tmp-writing-2").exists(), "a write in progress was removed");
        std::fs::remove_dir_all(root).unwrap();
    }
}
