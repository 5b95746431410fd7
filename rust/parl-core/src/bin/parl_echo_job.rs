//! A native parl_rs job that needs no Python: started by a worker in place of the Python
//! interpreter (it ignores its arguments), it serves one actor whose methods are:
//! `echo` (returns its payload), `fail` (a user failure), `pid` (its process id),
//! `sleep` (sleeps the milliseconds given as a decimal payload), `exit` (exits with 3),
//! `alloc` (allocates and keeps the MB given as a decimal payload), `gpus` (the
//! `CUDA_VISIBLE_DEVICES` its init set), `read` (returns the content of the file named by the
//! payload, relative to its working directory) and `is_dir` ("true"/"false" for the folder
//! named by the payload).

use std::time::Duration;

use bytes::Bytes;
use parl_core::job::{JobConfig, JobRequest, JobRuntime, Next};
use parl_core::protocol::{FailureKind, RemoteFailure};

fn main() {
    parl_core::logging::init("warn");
    let runtime = match JobConfig::from_env().and_then(JobRuntime::start) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("parl-echo-job: {e}");
            std::process::exit(2);
        }
    };
    let mut actor = Actor::default();
    loop {
        match runtime.next_request(Duration::from_secs(1)) {
            Next::Request(request) => actor.serve(&runtime, *request),
            Next::Exit => std::process::exit(0),
            Next::Idle => {}
        }
    }
}

/// What the echo actor keeps between requests.
#[derive(Default)]
struct Actor {
    /// The environment its init asked for.
    env: Vec<(String, String)>,
    /// Memory held on purpose by `alloc`.
    held: Vec<Vec<u8>>,
}

impl Actor {
    fn serve(&mut self, runtime: &JobRuntime, request: JobRequest) {
        let (payload, failed) =
            self.handle(request.kind.as_str(), &request.name, request.payload, request.env);
        runtime.reply(request.id, payload, failed);
    }

    fn handle(
        &mut self,
        op: &str,
        name: &str,
        payload: Vec<Bytes>,
        env: Vec<(String, String)>,
    ) -> (Vec<Bytes>, Option<RemoteFailure>) {
        let number = || payload.first().and_then(|f| std::str::from_utf8(f).ok()?.parse::<usize>().ok());
        match (op, name) {
            ("init", _) => {
                self.env = env;
                (Vec::new(), None)
            }
            ("method", "alloc") => {
                // Touch every page, or it would not be resident.
                self.held.push(vec![1u8; number().unwrap_or(0) << 20]);
                (Vec::new(), None)
            }
            ("method", "gpus") => {
                let gpus = self.env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES").map(|(_, v)| v.clone());
                (vec![Bytes::from(gpus.unwrap_or_else(|| "<unset>".into()))], None)
            }
            _ => simple(op, name, payload),
        }
    }
}

/// The stateless methods.
fn simple(op: &str, name: &str, payload: Vec<Bytes>) -> (Vec<Bytes>, Option<RemoteFailure>) {
    let failure = |kind, exc_type: &str, message: String| {
        Some(RemoteFailure { kind, exc_type: exc_type.into(), message, traceback: String::new() })
    };
    match (op, name) {
        ("method", "echo") => (payload, None),
        ("method", "pid") => (vec![Bytes::from(std::process::id().to_string())], None),
        ("method", "sleep") => {
            let ms = payload.first().and_then(|f| std::str::from_utf8(f).ok()?.parse().ok());
            std::thread::sleep(Duration::from_millis(ms.unwrap_or(0)));
            (Vec::new(), None)
        }
        ("method", "exit") => std::process::exit(3),
        ("method", "read") => {
            let path = String::from_utf8_lossy(payload.first().map(|f| &f[..]).unwrap_or(b""));
            match std::fs::read(path.as_ref()) {
                Ok(data) => (vec![Bytes::from(data)], None),
                Err(e) => (Vec::new(), failure(FailureKind::User, "builtins.OSError", e.to_string())),
            }
        }
        ("method", "is_dir") => {
            let path = String::from_utf8_lossy(payload.first().map(|f| &f[..]).unwrap_or(b""));
            (vec![Bytes::from(std::path::Path::new(path.as_ref()).is_dir().to_string())], None)
        }
        ("method", "fail") => {
            (Vec::new(), failure(FailureKind::User, "builtins.ValueError", "asked to fail".into()))
        }
        (_, name) => {
            let message = format!("echo job has no attribute {name:?}");
            (Vec::new(), failure(FailureKind::Attribute, "builtins.AttributeError", message))
        }
    }
}
