"""`xparl slurm` against a real Slurm: a slurmctld and a slurmd (Debian's slurm-wlm) that this
module starts on this machine, one node, with a slurm.conf of its own in a temp dir.

Authentication is `auth/none` (and `cred/none`): Slurm 22.05 still ships these plugins, and
they spare the test a munged with a key of its own; every daemon and command is local and
runs as root. A job runs `xparl slurm -- python script.py`, whose script creates actors and
runs tasks on the cluster `parl_rs.connect()` finds in its environment; another job is
cancelled while its cluster runs. After each, no process of the job may remain.

Run time: about 25 s (the daemons start in 1-2 s; `sbatch --wait` polls every few seconds).
Skipped where Slurm is not installed (`scripts/check` installs it) or cannot run (not root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

import parl_rs
from conftest import Cluster, free_port, pid_alive, run_script, wait_until

pytestmark = pytest.mark.timeout(120)

_DAEMON_STOP_S = 10.0


@dataclass
class Slurm:
    """A running one-node Slurm cluster of this test module."""

    root: Path
    env: dict[str, str]
    node: str
    cpus: int

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def job_is_done(self, job_id: str) -> bool:
        listed = self.run("squeue", "-h", "-j", job_id, "-o", "%T")
        return listed.returncode != 0 or not listed.stdout.strip()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted((self.root / "log").glob("*"))
        )


def _auth_none_plugin() -> bool:
    patterns = ("/usr/lib/*/slurm-wlm/auth_none.so", "/usr/lib*/slurm/auth_none.so")
    return any(glob.glob(pattern) for pattern in patterns)


def _tool(name: str) -> Optional[str]:
    """Where a Slurm program is: on the PATH, or in /usr/sbin (the daemons), which a non-login
    PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def _skip_reason() -> Optional[str]:
    missing = [tool for tool in ("slurmctld", "slurmd", "sbatch", "srun") if not _tool(tool)]
    if missing:
        return (
            f"Slurm is not installed ({', '.join(missing)} not found): apt-get install slurm-wlm "
            "(scripts/check does)"
        )
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs, and this test is not root"
    if not _auth_none_plugin():
        return "this Slurm has no auth/none plugin (the test runs no munged)"
    return None


def _slurm_conf(root: Path, node: str, cpus: int) -> str:
    # The node is this machine, reached on 127.0.0.1; daemons on free ports, so that another
    # Slurm on the machine is never disturbed; KillWait short, so a cancelled job ends quickly.
    return textwrap.dedent(
        f"""\
        ClusterName=parltest
        SlurmctldHost={node}(127.0.0.1)
        SlurmctldPort={free_port()}
        SlurmdPort={free_port()}
        AuthType=auth/none
        CredType=cred/none
        SlurmUser=root
        SlurmdUser=root
        StateSaveLocation={root}/state
        SlurmdSpoolDir={root}/spool
        SlurmctldPidFile={root}/slurmctld.pid
        SlurmdPidFile={root}/slurmd.pid
        SlurmctldLogFile={root}/log/slurmctld.log
        SlurmdLogFile={root}/log/slurmd.log
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SelectType=select/cons_tres
        SelectTypeParameters=CR_CPU
        JobAcctGatherType=jobacct_gather/none
        AccountingStorageType=accounting_storage/none
        MpiDefault=none
        ReturnToService=2
        KillWait=5
        NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
        PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
        """
    )


def _stop_daemon(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=_DAEMON_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="parl-rs-slurm-"))
    daemons: list[subprocess.Popen] = []
    try:
        for sub in ("state", "spool", "log", "tmp", "work"):
            (root / sub).mkdir()
        node, cpus = socket.gethostname().split(".")[0], os.cpu_count() or 1
        conf = root / "slurm.conf"
        conf.write_text(_slurm_conf(root, node, cpus))
        python_path = str(Path(parl_rs.__file__).parent.parent)
        env = dict(
            os.environ,
            SLURM_CONF=str(conf),
            PYTHONPATH=os.pathsep.join(filter(None, [python_path, os.environ.get("PYTHONPATH")])),
        )
        for name in ("XPARL_STATE_DIR", "XPARL_ADDRESS", "XPARL_CLUSTER_KEY"):
            env.pop(name, None)
        cluster = Slurm(root, env, node, cpus)
        # In the foreground (-D), as children of this test, stopped by pid at the end.
        for daemon, flags in (("slurmctld", ["-i"]), ("slurmd", ["-N", node])):
            command = [str(_tool(daemon)), "-D", "-f", str(conf), *flags]
            with open(root / "log" / f"{daemon}.out", "wb") as out:
                daemons.append(
                    subprocess.Popen(
                        command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
                    )
                )

        def node_idle() -> bool:
            if any(daemon.poll() is not None for daemon in daemons):
                raise AssertionError(f"a Slurm daemon exited while starting:\n{cluster.logs()}")
            state = cluster.run("sinfo", "-h", "-n", node, "-o", "%T")
            return state.stdout.strip() == "idle"

        try:
            wait_until(node_idle, 30, 0.2, "the Slurm node to be idle")
        except AssertionError as exc:
            pytest.skip(f"Slurm does not start here: {exc}\n{cluster.logs()}")
        yield cluster
        _cancel_all(cluster)
    finally:
        for daemon in reversed(daemons):  # slurmd first, then slurmctld
            _stop_daemon(daemon)
        shutil.rmtree(root, ignore_errors=True)


def _cancel_all(slurm: Slurm) -> None:
    """Jobs a failed test left behind would outlive slurmd (their slurmstepd does)."""
    listed = slurm.run("squeue", "-h", "-o", "%i")
    job_ids = listed.stdout.split()
    if job_ids:
        slurm.run("scancel", *job_ids)
        wait_until(lambda: all(slurm.job_is_done(j) for j in job_ids), 30, 0.2, "jobs to end")


def _processes_of_job(job_id: str) -> list[str]:
    """Command lines of the processes started for Slurm job `job_id` (by their environment)."""
    marker = f"SLURM_JOB_ID={job_id}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if b"\0" + marker in b"\0" + environ and state not in ("Z", "X"):
            found.append(f"{proc.name}: {cmdline}")
    return found


def _job_script(slurm: Slurm, name: str, script: str) -> Path:
    """A batch script running `xparl slurm -- python <script>` in the work directory."""
    work = slurm.root / "work"
    (work / f"{name}.py").write_text(textwrap.dedent(script))
    batch = work / f"{name}.sh"
    xparl = f"{sys.executable} -m parl_rs.cli"
    batch.write_text(f"#!/bin/bash\nexec {xparl} slurm -- {sys.executable} {name}.py\n")
    return batch


def _sbatch(slurm: Slurm, batch: Path, *flags: str, timeout: float = 90.0) -> tuple[str, int]:
    """Submit `batch` with the test's environment; its job id and sbatch's exit status."""
    cpus = str(min(slurm.cpus, 2))
    submitted = slurm.run(
        "sbatch",
        "--parsable",
        f"--cpus-per-task={cpus}",
        f"--export=ALL,TMPDIR={slurm.root / 'tmp'}",
        f"--chdir={batch.parent}",
        f"--output={batch.with_suffix('.out')}",
        *flags,
        str(batch),
        timeout=timeout,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit(), f"sbatch failed:\n{submitted.stdout}{submitted.stderr}"
    return job_id, submitted.returncode


_ACTORS_AND_TASKS = """\
    import os
    import stat
    import sys
    from pathlib import Path

    import parl_rs
    from parl_rs import _core

    @parl_rs.remote_class
    class Counter:
        def __init__(self, start):
            self.n = start

        def add(self, k):
            self.n += k
            return self.n

    @parl_rs.remote_function
    def square(x):
        return x * x

    address, key = os.environ["XPARL_ADDRESS"], os.environ["XPARL_CLUSTER_KEY"]
    port = address.rsplit(":", 1)[1]
    key_file = Path(os.environ["XPARL_STATE_DIR"]) / "keys" / f"{port}.key"
    mode = oct(stat.S_IMODE(key_file.stat().st_mode))
    print("key file", mode, key_file.read_text().strip() == key)
    parl_rs.connect()  # no address: the job's cluster, not an embedded one
    status = _core.cluster_status(address, key=key)
    print("clients", [client["pid"] == os.getpid() for client in status["clients"]])
    print("workers", len(status["workers"]), "cpus", status["cpu_total"])
    counters = [Counter(10 * i) for i in range(status["cpu_total"])]
    print("actors", [counter.add(1) for counter in counters])
    del counters
    futures = [square.submit(i) for i in range(6)]
    print("tasks", [future.result() for future in futures], flush=True)
    sys.exit(3)  # xparl slurm, then the job, exit with the command's status
    """


def test_a_job_runs_actors_and_tasks_on_its_own_cluster(slurm: Slurm) -> None:
    batch = _job_script(slurm, "train", _ACTORS_AND_TASKS)
    job_id, status = _sbatch(slurm, batch, "--wait")
    output = batch.with_suffix(".out").read_text()
    assert status == 3, f"the job's exit status is {status}, not the script's 3:\n{output}"
    cpus = min(slurm.cpus, 2)
    assert f"parl_rs cluster of Slurm job {job_id}: master {slurm.node}:" in output, output
    assert f"1 workers ({slurm.node}), {cpus} CPUs" in output, output
    assert "key file 0o600 True" in output, output
    assert "clients [True]" in output, output
    assert f"workers 1 cpus {cpus}" in output, output
    assert f"actors {[10 * i + 1 for i in range(cpus)]}" in output, output
    assert "tasks [0, 1, 4, 9, 16, 25]" in output, output
    # xparl slurm stopped its master, srun step and the actors' jobs before the job ended.
    assert _processes_of_job(job_id) == []
    state = slurm.root / "tmp" / f"parl_rs-slurm-{job_id}"
    assert list((state / "keys").iterdir()) == [], "the job's key outlived its cluster"
    assert "registered with" in (state / "slurm" / "workers.log").read_text()


_HANGS = """\
    import os
    import time

    import parl_rs

    @parl_rs.remote_class
    class Sleeper:
        def job_pid(self):
            return os.getpid()

    parl_rs.connect()
    sleeper = Sleeper()
    print("ready", sleeper.job_pid(), flush=True)
    time.sleep(600)
    """


def test_a_cancelled_job_stops_its_cluster(slurm: Slurm) -> None:
    batch = _job_script(slurm, "hangs", _HANGS)
    job_id, _ = _sbatch(slurm, batch)
    out = batch.with_suffix(".out")

    def ready() -> Optional[int]:
        with contextlib.suppress(OSError):
            for line in out.read_text().splitlines():
                if line.startswith("ready "):
                    return int(line.split()[1])
        if slurm.job_is_done(job_id):
            raise AssertionError(f"the job ended early:\n{out.read_text()}\n{slurm.logs()}")
        return None

    actor_pid = wait_until(ready, 60, 0.1, "the job's actor")
    assert _processes_of_job(job_id), "nothing of the job runs before scancel"
    started = time.monotonic()
    cancelled = slurm.run("scancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_until(lambda: slurm.job_is_done(job_id), 30, 0.1, "the cancelled job to end")
    # SIGTERM reached xparl slurm, which stops the command, the master and the workers (with
    # their jobs) in order; Slurm's KillWait (5 s here) is the most that may take.
    try:
        wait_until(lambda: not _processes_of_job(job_id), 15, 0.1, "the job's processes to end")
    finally:
        for line in _processes_of_job(job_id):  # never leave one behind, even on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert time.monotonic() - started < 15
    assert not pid_alive(actor_pid)
    # Slurm signals every process of the job anyway; that xparl slurm caught SIGTERM and ended
    # its cluster in order shows in what it removed last: the job's key.
    keys = slurm.root / "tmp" / f"parl_rs-slurm-{job_id}" / "keys"
    assert list(keys.iterdir()) == [], "xparl slurm did not stop in order at SIGTERM"


# --- without Slurm ---------------------------------------------------------------------------


def test_the_cpus_and_gpus_of_a_node_come_from_slurms_variables() -> None:
    from parl_rs.slurm import cpus_per_node, has_gpus, node_cpus, node_gpus

    assert cpus_per_node("2(x3),1") == [2, 2, 2, 1]
    assert node_cpus({"SLURM_CPUS_ON_NODE": "6"}) == 6
    assert node_cpus({"SLURM_JOB_CPUS_PER_NODE": "4(x2),8", "SLURM_NODEID": "2"}) == 8
    assert node_cpus({}) == (os.cpu_count() or 1)
    # No allocation: a CUDA_VISIBLE_DEVICES of the submitting shell is not the job's.
    assert not has_gpus({"CUDA_VISIBLE_DEVICES": "0,1"})
    assert node_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == []
    # With GPUs: what Slurm set for the step's processes first, then its own lists.
    assert node_gpus({"SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1"]
    assert node_gpus({"SLURM_JOB_GPUS": "2,3"}) == ["2", "3"]
    assert node_gpus({"GPU_DEVICE_ORDINAL": "0"}) == ["0"]
    assert node_gpus({"SLURM_GPUS_ON_NODE": "1", "CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == []
    assert node_gpus({"SLURM_GPUS_ON_NODE": "0"}) == []
    assert has_gpus({"SLURM_GPUS_PER_NODE": "a100:2"}) and not has_gpus({"SLURM_GPUS": "0"})


def test_the_template_is_a_batch_script_that_runs_xparl_slurm() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "parl_rs.cli", "slurm", "--template"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=" in shown.stdout
    assert "\nexec xparl slurm -- python your_script.py\n" in shown.stdout
    assert subprocess.run(["bash", "-n"], input=shown.stdout, text=True).returncode == 0


def test_outside_an_allocation_it_says_how_to_run_it() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SLURM_")}
    refused = subprocess.run(
        [sys.executable, "-m", "parl_rs.cli", "slurm", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    assert "inside a Slurm allocation" in refused.stderr and "--template" in refused.stderr


def test_connect_without_an_address_joins_xparl_address(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = (cluster.state_dir / "keys" / f"{cluster.port}.key").read_text().strip()
    monkeypatch.setenv("XPARL_ADDRESS", cluster.address)
    monkeypatch.setenv("XPARL_CLUSTER_KEY", key)
    ran = run_script(
        tmp_path,
        """
        import os
        import parl_rs
        from parl_rs import _core, client

        parl_rs.connect()
        address, key = os.environ["XPARL_ADDRESS"], os.environ["XPARL_CLUSTER_KEY"]
        status = _core.cluster_status(address, key=key)
        print("embedded", client._current.cluster is not None)
        print("joined", [c["pid"] for c in status["clients"]] == [os.getpid()])
        """,
    )
    assert ran.returncode == 0, ran.stderr
    assert "embedded False" in ran.stdout and "joined True" in ran.stdout, ran.stdout
    monkeypatch.setenv("XPARL_ADDRESS", "no-port-here")
    refused = run_script(tmp_path, "import parl_rs\nparl_rs.connect()\n")
    assert refused.returncode != 0 and "no-port-here" in refused.stderr
