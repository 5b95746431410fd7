"""`xparl slurm`: a parl_rs cluster for the length of a Slurm job.

Run inside an allocation, from the batch script of `sbatch` (`xparl slurm --template` prints
one) or from `salloc`:

    xparl slurm -- python train.py

Where it runs (a batch script runs on the allocation's first node) it starts the master; one
`srun` step then starts a worker on every node of the allocation, this one included, offering
the node's CPUs, or its GPUs when the job has GPUs (a GPU cluster). Once every worker has
joined, the command runs here with `XPARL_ADDRESS` and `XPARL_CLUSTER_KEY` set, so that
`parl_rs.connect()` without an address joins the cluster. When the command ends, or Slurm ends
the job (SIGTERM at `scancel` or at the time limit), the workers and the master are stopped and
`xparl slurm` exits with the command's status. Without a command the cluster runs until then.

Each job gets a new key, stored 0600 in `<state dir>/keys/<port>.key`; the state directory is
`$XPARL_STATE_DIR`, by default `${TMPDIR:-/tmp}/parl_rs-slurm-<job id>` on each node. The
workers get the key on their standard input (srun broadcasts it), never on a command line.

Each node's part of the srun step runs `python -m parl_rs.slurm worker --address A`, which
reads the key and becomes (exec) that node's worker, so the signals srun forwards reach it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Mapping, Optional, Sequence

from parl_rs import _nodes as nodes
from parl_rs import keys
from parl_rs._cli_input import CliError, describe_gpus
from parl_rs.client import ADDRESS_ENV, _python_command

_STARTUP_TIMEOUT_S = 120.0
# Slurm sends SIGKILL KillWait (default 30 s) after SIGTERM: stopping must fit well within it.
_GRACE_S = 5.0
_POLL_S = 0.1
# Where a node's GPU ids are, best first (see node_gpus).
_GPU_ID_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "GPU_DEVICE_ORDINAL")


# --- what Slurm tells a job ------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmJob:
    """The allocation this process runs in, from Slurm's environment variables."""

    job_id: str
    num_nodes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlurmJob:
        job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
        if not job_id:
            raise CliError(
                "xparl slurm runs inside a Slurm allocation (the batch script of sbatch, or "
                "salloc), and SLURM_JOB_ID is not set here. `xparl slurm --template` prints a "
                "batch script to submit with sbatch."
            )
        # The job's node count, not a step's: `srun -N1 xparl slurm` still spans the job.
        nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1"
        return cls(job_id, int(nodes))


def cpus_per_node(spec: str) -> list[int]:
    """SLURM_JOB_CPUS_PER_NODE ("2(x3),1") as one count per node ([2, 2, 2, 1])."""
    counts: list[int] = []
    for part in filter(None, spec.split(",")):
        count, _, repeat = part.partition("(x")
        counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
    return counts


def node_cpus(env: Mapping[str, str]) -> int:
    """The CPUs the job has on this node: SLURM_CPUS_ON_NODE, else this node's entry of
    SLURM_JOB_CPUS_PER_NODE, else every CPU of the machine."""
    on_node = env.get("SLURM_CPUS_ON_NODE", "")
    if on_node.isdigit() and int(on_node) > 0:
        return int(on_node)
    try:
        per_node = cpus_per_node(env.get("SLURM_JOB_CPUS_PER_NODE", ""))
        return per_node[int(env.get("SLURM_NODEID", "0"))]
    except (ValueError, IndexError):
        return os.cpu_count() or 1


def has_gpus(env: Mapping[str, str]) -> bool:
    """True if Slurm gave this job (or step) GPUs: it sets these variables only then."""
    id_lists = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "GPU_DEVICE_ORDINAL")
    if any(_gpu_ids(env.get(name, "")) for name in id_lists):
        return True
    if env.get("SLURM_GPUS_ON_NODE", "0") != "0":  # a count
        return True
    # Under salloc, on the submitting host, only the request is known ("2", "a100:2").
    requests = (env.get(name, "") for name in ("SLURM_GPUS_PER_NODE", "SLURM_GPUS"))
    return any(request and request.rpartition(":")[2] != "0" for request in requests)


def node_gpus(env: Mapping[str, str]) -> list[str]:
    """The GPU ids this node's worker offers (none when Slurm allocated no GPU here).

    CUDA_VISIBLE_DEVICES comes first: it is what Slurm computed for the processes of this step
    (renumbered when cgroups hide the other devices), and the worker hands subsets of it on to
    its jobs as their CUDA_VISIBLE_DEVICES. One inherited from the submitting shell, without
    an allocation, is not used.
    """
    if not has_gpus(env):
        return []
    for name in _GPU_ID_VARS:
        ids = _gpu_ids(env.get(name, ""))
        if ids:
            return ids
    return []


def _gpu_ids(value: str) -> list[str]:
    # Slurm writes "NoDevFiles" when GPUs were counted but have no device files.
    return [gpu.strip() for gpu in value.split(",") if gpu.strip() not in ("", "NoDevFiles")]


def job_state_dir(job: SlurmJob, env: Mapping[str, str]) -> Path:
    """`$XPARL_STATE_DIR`, else one directory per job under `$TMPDIR`: jobs that share a node
    (and a home directory) never share key files, records or logs."""
    explicit = env.get("XPARL_STATE_DIR")
    if explicit:
        return Path(explicit)
    return Path(env.get("TMPDIR") or "/tmp") / f"parl_rs-slurm-{job.job_id}"


def template() -> str:
    """The sbatch script shipped with parl_rs."""
    return resources.files("parl_rs").joinpath("templates").joinpath("slurm.sbatch").read_text()


# --- the first node: master, workers, the user's command --------------------------------------


class _StopRequest:
    """SIGTERM (Slurm ending the job), SIGINT or SIGHUP, noted for the loops that wait. The
    handlers only set a flag: stopping then runs in order, never from inside a signal."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._event = threading.Event()

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self.signum is None:
            self.signum = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


class _Stopped(Exception):
    """A stop was requested while the cluster was starting."""


@dataclass
class _Cluster:
    """What `xparl slurm` started on this node, to stop in reverse order."""

    state: Path
    port: int
    address: str
    key: str
    master_pid: Optional[int] = None
    workers: Optional[subprocess.Popen] = None

    @property
    def workers_log(self) -> Path:
        return self.state / "slurm" / "workers.log"

    def stop(self) -> None:

        # The master first: a stopped master tells its workers to exit, so each node's worker
        # ends its jobs and exits by itself, and the srun step ends cleanly. srun is signalled
        # only if it lingers (it then has Slurm kill the step's processes).
        if self.master_pid is not None:
            nodes.stop_pid(self.master_pid)
        if self.workers is not None:
            _end(self.workers, _GRACE_S, wait_first=True)
        # The key is of no use once the master is gone; the logs stay for the user.
        keys.forget_key(self.port)
        (self.state / "clusters" / f"{self.port}.json").unlink(missing_ok=True)


def cmd_slurm(args: argparse.Namespace) -> None:
    if args.template:
        print(template(), end="")
        return
    command = list(args.cmd)
    if command[:1] == ["--"]:
        command = command[1:]
    job = SlurmJob.from_env(os.environ)
    srun = shutil.which("srun")
    if srun is None:
        raise CliError("srun is not on the PATH: xparl slurm starts the workers with it.")
    if args.cpu_num is not None and args.cpu_num <= 0:
        raise CliError(f"--cpu_num must be a positive number of CPUs, got {args.cpu_num}")
    gpu_cluster = _gpu_cluster_wanted(args)
    stop = _StopRequest()
    stop.install()
    cluster = _prepare(args, job)
    status = 0
    try:
        _start(cluster, args, job, srun, gpu_cluster, stop)
        status = _run_command(cluster, command, stop) if command else _serve(cluster, stop)
    except _Stopped:
        status = _signal_status(stop)
    finally:
        cluster.stop()
    sys.stdout.flush()
    sys.exit(status)


def _gpu_cluster_wanted(args: argparse.Namespace) -> bool:
    if args.gpu_cluster and args.cpu_cluster:
        raise CliError("--gpu_cluster and --cpu_cluster contradict each other: choose one.")
    if args.gpu_cluster or args.cpu_cluster:
        return bool(args.gpu_cluster)
    return has_gpus(os.environ)


def _prepare(args: argparse.Namespace, job: SlurmJob) -> _Cluster:
    """Choose the state directory, port and key; the key is stored, readable only by us."""

    state = job_state_dir(job, os.environ)
    # Everything started from here (nodes, srun's workers, the command) uses this directory.
    os.environ["XPARL_STATE_DIR"] = str(state)
    keys.state_dir()  # created 0700
    port = args.port or _free_port()
    nodes.ensure_port_free("0.0.0.0", port)
    host = args.host or socket.gethostname()
    key = keys.new_key()  # never an old one: each job is a cluster of its own
    keys.store_key(port, key)
    return _Cluster(state, port, f"{host}:{port}", key)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def _start(
    cluster: _Cluster,
    args: argparse.Namespace,
    job: SlurmJob,
    srun: str,
    gpu_cluster: bool,
    stop: _StopRequest,
) -> None:
    """The master here, then every node's worker; returns once all have joined."""
    _start_master(cluster, args, job, gpu_cluster)
    if stop.requested:
        raise _Stopped
    cluster.workers = _start_workers(cluster, args, job, srun, gpu_cluster)
    status = _wait_for_workers(cluster, job.num_nodes, args.startup_timeout, stop)
    _print_started(cluster, job, status)


def _start_master(
    cluster: _Cluster, args: argparse.Namespace, job: SlurmJob, gpu_cluster: bool
) -> None:

    node_dir = cluster.state / "slurm"
    node_dir.mkdir(parents=True, exist_ok=True)
    # On every interface: the other nodes reach it by this node's name.
    node_args = ["master", "--host", "0.0.0.0", "--port", str(cluster.port)]
    node_args += ["--http-port", str(nodes.http_port("0.0.0.0", cluster.port, None))]
    if gpu_cluster:
        node_args.append("--gpu-cluster")
    if args.encrypt:
        node_args.append("--encrypt")
    master = nodes.launch("master", node_args, node_dir, cluster.key, args.debug)
    cluster.master_pid = master["pid"]
    # Recorded like the clusters of `xparl start`, so that `xparl status` in the job finds it.
    record = {
        "address": cluster.address,
        "http_address": master.get("http_address") or "",
        "port": cluster.port,
        "host": "0.0.0.0",
        "gpu_cluster": gpu_cluster,
        "slurm_job": job.job_id,
        "pids": {"master": master["pid"], "worker": None},
    }
    (cluster.state / "clusters").mkdir(exist_ok=True)
    nodes.write_record(cluster.state / "clusters" / f"{cluster.port}.json", record)


def _start_workers(
    cluster: _Cluster, args: argparse.Namespace, job: SlurmJob, srun: str, gpu_cluster: bool
) -> subprocess.Popen:
    """One srun step with one task per node, each becoming that node's worker."""
    nodes = str(job.num_nodes)
    command = [srun, "--nodes", nodes, "--ntasks", nodes, "--ntasks-per-node=1"]
    # --overlap: the step shares the nodes' CPUs and GPUs with any step the user's command
    # starts; --input=all: every task reads the key from srun's standard input; --label:
    # each line of workers.log says which node wrote it.
    command += ["--overlap", "--input=all", "--label", "--job-name=parl_rs-workers"]
    command += [*_python_command(), "-m", "parl_rs.slurm", "worker"]
    command += ["--address", cluster.address]
    if gpu_cluster:
        command.append("--gpu_cluster")
    if args.cpu_num is not None:
        command += ["--cpu_num", str(args.cpu_num)]
    env = dict(os.environ)
    for name in (keys.KEY_ENV, ADDRESS_ENV):
        env.pop(name, None)
    with open(cluster.workers_log, "wb") as log:
        # Its own session: a Ctrl-C at a salloc prompt reaches this process, which stops
        # the step in order, rather than srun's own two-Ctrl-C protocol.
        workers = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    assert workers.stdin is not None
    try:
        workers.stdin.write(f"{cluster.key}\n".encode())
        workers.stdin.close()  # the tasks read one line, then EOF
    except BrokenPipeError:
        pass  # srun failed at once: _wait_for_workers reports its log
    return workers


def _wait_for_workers(
    cluster: _Cluster, count: int, timeout: float, stop: _StopRequest
) -> dict[str, Any]:
    """The master's status once `count` workers joined; a CliError with the step's log if
    srun ends first or the deadline passes."""
    from parl_rs import _core

    assert cluster.workers is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = _core.cluster_status(cluster.address, timeout=2.0, key=cluster.key)
        except Exception:  # the master answers once it is up; its death shows below
            status = {}
        if len(status.get("workers", [])) >= count:
            return status
        if cluster.workers.poll() is not None:
            joined = len(status.get("workers", []))
            raise CliError(
                f"the workers' srun step ended (status {cluster.workers.returncode}) when "
                f"{joined} of the {count} nodes' workers had joined. End of "
                f"{cluster.workers_log}:\n{nodes.tail(cluster.workers_log)}"
            )
        if time.monotonic() > deadline:
            joined = len(status.get("workers", []))
            raise CliError(
                f"{joined} of the {count} nodes' workers joined within {timeout:.0f} s "
                f"(--startup_timeout). End of {cluster.workers_log}:\n"
                f"{nodes.tail(cluster.workers_log)}"
            )
        if stop.wait(_POLL_S):
            raise _Stopped


def _print_started(cluster: _Cluster, job: SlurmJob, status: dict[str, Any]) -> None:
    workers = status.get("workers", [])
    if status.get("gpu_cluster"):
        offered = f"{status.get('gpu_total', 0)} GPUs"
    else:
        offered = f"{status.get('cpu_total', 0)} CPUs"
    print(
        f"parl_rs cluster of Slurm job {job.job_id}: master {cluster.address}, "
        f"{len(workers)} workers ({', '.join(sorted(w.get('hostname', '?') for w in workers))}), "
        f"{offered}; logs in {cluster.state}",
        flush=True,
    )


def _run_command(cluster: _Cluster, command: list[str], stop: _StopRequest) -> int:
    """Run the user's command with the cluster's address and key; its exit status."""
    env = dict(os.environ, **{ADDRESS_ENV: cluster.address, keys.KEY_ENV: cluster.key})
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"xparl slurm: error: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    while proc.poll() is None:
        if stop.wait(_POLL_S):
            # Slurm signals every process of the job; a command started by hand (salloc) may
            # not have been: it gets the same signal, then SIGKILL after the grace period.
            _end(proc, _GRACE_S, stop.signum or signal.SIGTERM)
            return _signal_status(stop)
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def _serve(cluster: _Cluster, stop: _StopRequest) -> int:
    """No command: keep the cluster until the job ends (or the workers' step does)."""
    print(
        f"Serving until the job ends. Clients need {ADDRESS_ENV}={cluster.address} and the key in "
        f"{keys.key_file(cluster.port)}.",
        flush=True,
    )
    assert cluster.workers is not None
    while cluster.workers.poll() is None:
        if stop.wait(1.0):
            return _signal_status(stop)
    print(f"xparl slurm: the workers' srun step ended; see {cluster.workers_log}", file=sys.stderr)
    return 1


def _signal_status(stop: _StopRequest) -> int:
    return 128 + (stop.signum or signal.SIGTERM)


def _end(
    proc: subprocess.Popen, grace: float, signum: int = signal.SIGTERM, wait_first: bool = False
) -> None:
    """Send `signum` to a child we started, SIGKILL it after `grace` seconds; reap it. With
    `wait_first`, give it `grace` seconds to exit by itself before the signal."""
    if wait_first:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signum)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- every node: the worker (python -m parl_rs.slurm worker) -----------------------------------


def _worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m parl_rs.slurm")
    roles = parser.add_subparsers(dest="role", required=True)
    worker = roles.add_parser("worker", help="become this node's worker (run by srun)")
    worker.add_argument("--address", required=True, help="the master's host:port")
    worker.add_argument("--gpu_cluster", action="store_true", help="offer this node's GPUs")
    worker.add_argument("--cpu_num", type=int, default=None, help="CPUs (default: the job's)")
    return parser


def worker_main(argv: Optional[Sequence[str]] = None) -> None:
    """Read the key from standard input and exec this node's worker."""
    args = _worker_parser().parse_args(argv)
    key = sys.stdin.readline().strip()
    host = socket.gethostname()
    if not key:
        sys.exit(f"parl_rs slurm worker on {host}: no cluster key on standard input")
    gpus = node_gpus(os.environ) if args.gpu_cluster else []
    if args.gpu_cluster and not gpus:
        sys.exit(f"parl_rs slurm worker on {host}: the job has no GPU on this node")
    cpus = 0 if args.gpu_cluster else (args.cpu_num or node_cpus(os.environ))
    node_dir = keys.state_dir() / "workers" / f"slurm-{host}"
    node_dir.mkdir(parents=True, exist_ok=True)
    node_args = ["worker", "--address", args.address, "--cpu-num", str(cpus)]
    node_args += ["--state-dir", str(node_dir / "worker")]
    if gpus:
        node_args += ["--gpu", ",".join(gpus)]
    offered = describe_gpus(gpus) if gpus else f"{cpus} CPUs"
    print(f"parl_rs slurm worker on {host}: {offered}, joining {args.address}", flush=True)
    _exec_node(node_args, key)


def _exec_node(node_args: list[str], key: str) -> None:
    """Replace this process by the node: srun's signals then reach the worker itself. The key
    goes through an inherited pipe, as `xparl connect` passes it (see keys.key_pipe)."""
    read_fd = keys.key_pipe(key)
    os.set_inheritable(read_fd, True)
    os.environ[keys.KEY_FD_ENV] = str(read_fd)
    os.environ["XPARL"] = "True"
    os.environ.pop(keys.KEY_ENV, None)
    python = _python_command()
    os.execvp(python[0], [*python, "-m", "parl_rs._node", *node_args])


# --- the `xparl slurm` subcommand ---------------------------------------------------------------


def add_parser(
    commands: argparse._SubParsersAction, flag: Callable[..., None]
) -> argparse.ArgumentParser:
    """Register `xparl slurm` (`flag` adds PARL-style --under_score flags with dashed aliases)."""
    slurm = commands.add_parser(
        "slurm",
        help="run a cluster for the length of a Slurm job, and a command on it",
        description="Inside a Slurm allocation: start a master here and a worker on every node "
        "of the job, then run CMD here with XPARL_ADDRESS and XPARL_CLUSTER_KEY set (so "
        "parl_rs.connect() finds the cluster); stop everything when CMD ends or the job does.",
    )
    flag(slurm, "--template", action="store_true", help="print an sbatch script and exit")
    flag(slurm, "--port", type=int, default=0, help="the master's port (default: a free one)")
    flag(
        slurm,
        "--host",
        help="how the other nodes reach this one (default: its host name)",
    )
    flag(slurm, "--cpu_num", type=int, help="CPUs of each worker (default: the job's on the node)")
    flag(
        slurm,
        "--gpu_cluster",
        action="store_true",
        help="a GPU cluster of the nodes' GPUs (default when the job has GPUs)",
    )
    flag(
        slurm,
        "--cpu_cluster",
        action="store_true",
        help="a CPU cluster even though the job has GPUs",
    )
    flag(slurm, "--encrypt", action="store_true", help="encrypt every message (see xparl start)")
    flag(
        slurm,
        "--startup_timeout",
        type=float,
        default=_STARTUP_TIMEOUT_S,
        help="seconds to wait for every node's worker (default: %(default)s)",
    )
    flag(slurm, "--debug", action="store_true", help="verbose node logs")
    slurm.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command to run on it"
    )
    slurm.set_defaults(func=cmd_slurm)
    return slurm


if __name__ == "__main__":
    worker_main()
