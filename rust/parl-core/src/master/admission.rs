//! Which workers and requests a cluster refuses at once, with a reason that says what to do.
//!
//! PARL's rules: a cluster is either a CPU or a GPU cluster; a GPU cluster takes only GPU
//! workers and GPU actors, a CPU cluster only CPU ones; an actor asks for at most
//! [`MAX_N_GPU`] GPUs. parl_rs adds one: a request for more GPUs than any registered worker
//! has can never be served (an actor's GPUs all come from one worker), so it is refused now
//! instead of waiting in the queue until its timeout.

use crate::protocol::{JobRequest, WorkerHello, LEASE_CLASS};
use crate::VERSION;

/// The most GPUs one actor may ask for (PARL's `MAX_N_GPU`).
pub const MAX_N_GPU: u32 = 8;

/// Why a worker may not join this cluster, or None if it may.
pub fn refuse_worker(hello: &WorkerHello, gpu_cluster: bool, master: &str) -> Option<String> {
    match (gpu_cluster, hello.gpus.is_empty()) {
        (true, true) => Some(format!(
            "the cluster at {master} is a GPU cluster (xparl start --gpu_cluster) and takes only GPU \
             workers, but this worker offers {} CPUs and no GPU; add GPUs with \
             `xparl connect --address {master} --gpu 0,1`",
            hello.cpu_num
        )),
        (false, false) => Some(format!(
            "the cluster at {master} is a CPU cluster and takes only CPU workers, but this worker \
             offers GPUs {}; connect it to a GPU cluster (xparl start --gpu_cluster), or leave out --gpu",
            hello.gpus.join(",")
        )),
        _ => None,
    }
}

/// Why a peer of parl_rs `version` may not join (the pickled payloads would not match), or
/// None if it runs this one.
pub fn refuse_version(version: &str, role: &str) -> Option<String> {
    (version != VERSION)
        .then(|| format!("parl_rs version mismatch: the master runs {VERSION}, this {role} runs {version}"))
}

/// Why a worker whose jobs run Python `theirs` may not join a cluster of Python `ours`
/// (pickles do not cross Python versions), or None if they match or one is unknown ("").
pub fn refuse_python(ours: &str, theirs: &str) -> Option<String> {
    if ours.is_empty() || theirs.is_empty() || ours == theirs {
        return None;
    }
    Some(format!(
        "Python version mismatch: the master's cluster runs Python {ours}, this worker's jobs run Python {theirs}"
    ))
}

/// Why `request` can never be served by this cluster, or None if it may wait for a job.
/// `largest_worker_gpus` is the GPU count of the biggest registered worker (None while no
/// worker is registered: the request then waits for one).
pub fn refuse_request(
    request: &JobRequest,
    gpu_cluster: bool,
    largest_worker_gpus: Option<u32>,
) -> Option<String> {
    let n_gpu = request.n_gpu;
    // A lease for tasks is named as such: its class is the task runner, not the user's.
    let is_lease = request.class_name == LEASE_CLASS;
    let (class, decorator) = match is_lease {
        true => ("a task".to_string(), "@remote_function(n_gpu=K)"),
        false => (format!("`{}`", request.class_name), "@remote_class(n_gpu=K)"),
    };
    if n_gpu > MAX_N_GPU {
        return Some(format!("{class} asks for n_gpu={n_gpu} GPUs; an actor may use at most {MAX_N_GPU}"));
    }
    if gpu_cluster && n_gpu == 0 {
        let what = if is_lease { "asks for no GPU" } else { "is a CPU actor" };
        return Some(format!(
            "{class} {what}, but this is a GPU cluster, which runs only GPU actors; give it \
             GPUs with {decorator}, or use a CPU cluster"
        ));
    }
    if !gpu_cluster && n_gpu > 0 {
        return Some(format!(
            "{class} asks for n_gpu={n_gpu} GPUs, but this is a CPU cluster, which has none; start \
             a GPU cluster for it (xparl start --gpu_cluster --gpu 0,1)"
        ));
    }
    match largest_worker_gpus {
        Some(largest) if gpu_cluster && n_gpu > largest => Some(format!(
            "{class} asks for n_gpu={n_gpu} GPUs, but the largest worker of this cluster has \
             {largest} (an actor's GPUs all come from one worker)"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n_gpu: u32) -> JobRequest {
        JobRequest {
            request_id: 1,
            n_cpu: u32::from(n_gpu == 0),
            n_gpu,
            class_name: "Net".into(),
            on_worker: None,
        }
    }

    fn hello(cpu_num: u32, gpus: &[&str]) -> WorkerHello {
        WorkerHello {
            worker_id: "w".into(),
            hostname: "h".into(),
            pid: 1,
            cpu_num,
            gpus: gpus.iter().map(|g| g.to_string()).collect(),
            version: "v".into(),
            python_version: "3.11".into(),
            log_address: "127.0.0.1:1".into(),
            hwm: 0,
        }
    }

    #[test]
    fn a_cluster_takes_workers_of_its_own_kind_only() {
        assert_eq!(refuse_worker(&hello(0, &["0", "1"]), true, "m:1"), None);
        assert_eq!(refuse_worker(&hello(4, &[]), false, "m:1"), None);
        let cpu_on_gpu = refuse_worker(&hello(4, &[]), true, "m:1").unwrap();
        assert!(cpu_on_gpu.contains("GPU cluster") && cpu_on_gpu.contains("--gpu"), "{cpu_on_gpu}");
        let gpu_on_cpu = refuse_worker(&hello(0, &["0", "1"]), false, "m:1").unwrap();
        assert!(gpu_on_cpu.contains("CPU cluster") && gpu_on_cpu.contains("0,1"), "{gpu_on_cpu}");
    }

    #[test]
    fn requests_like_parls_worker_manager_test() {
        // Workers of 4, 4 and 8 GPUs: 2, 4 and 8 GPUs may wait for a worker; 9 never fits.
        for n_gpu in [1, 2, 4, 8] {
            assert_eq!(refuse_request(&request(n_gpu), true, Some(8)), None, "n_gpu={n_gpu}");
        }
        let nine = refuse_request(&request(9), true, Some(8)).unwrap();
        assert!(nine.contains("n_gpu=9") && nine.contains("at most 8"), "{nine}");
        let too_big = refuse_request(&request(8), true, Some(4)).unwrap();
        assert!(too_big.contains("n_gpu=8") && too_big.contains("has 4"), "{too_big}");
        assert_eq!(refuse_request(&request(3), true, None), None, "no worker yet: wait for one");
    }

    #[test]
    fn cpu_and_gpu_actors_go_to_their_own_kind_of_cluster() {
        assert_eq!(refuse_request(&request(0), false, Some(0)), None);
        let cpu_on_gpu = refuse_request(&request(0), true, Some(2)).unwrap();
        assert!(
            cpu_on_gpu.contains("`Net` is a CPU actor") && cpu_on_gpu.contains("n_gpu=K"),
            "{cpu_on_gpu}"
        );
        let gpu_on_cpu = refuse_request(&request(1), false, Some(0)).unwrap();
        assert!(gpu_on_cpu.contains("CPU cluster") && gpu_on_cpu.contains("--gpu_cluster"), "{gpu_on_cpu}");
        let nine_on_cpu = refuse_request(&request(9), false, None).unwrap();
        assert!(nine_on_cpu.contains("at most 8"), "{nine_on_cpu}");
    }
}
