"""The `xparl` command's edges: stopping a cluster stops its remote workers, the printed links
work, `status` lists each cluster once and fails loudly, a closed pipe ends it quietly, and
bad input gets a message that says what to pass."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

import parl_rs
from conftest import (
    Cluster,
    cluster_status,
    describe,
    free_port,
    kill_if_ours,
    pid_alive,
    run_script,
    running_cluster,
    wait_until,
    xparl,
)
from parl_rs import _cli_input, cli

pytestmark = pytest.mark.timeout(120)


def _key(cluster: Cluster) -> str:
    return (cluster.state_dir / "keys" / f"{cluster.port}.key").read_text().strip()


@contextlib.contextmanager
def _remote_worker(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A worker joined with `xparl connect` as if from another machine: its own state dir, so
    that `xparl stop` of the cluster's state dir cannot stop it by pid. Yields (pid, its log)."""
    other = tmp_path / "other-machine"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XPARL_STATE_DIR", str(other))
        joined = xparl(
            "connect", "--address", cluster.address, "--cpu_num", "1", "--key", _key(cluster)
        )
    assert joined.returncode == 0, describe(joined)
    (record_path,) = (other / "workers").glob("*.json")
    record = json.loads(record_path.read_text())
    try:
        yield record["pid"], Path(record["dir"]) / "worker.log"
    finally:
        kill_if_ours(record["pid"], b"parl_rs._node")


def test_xparl_stop_stops_the_workers_that_joined_from_other_machines(
    state_dir: Path, tmp_path: Path
) -> None:
    with running_cluster(state_dir, 1) as cluster, _remote_worker(cluster, tmp_path) as (pid, log):
        stopped = xparl("stop", "--port", str(cluster.port))
        assert stopped.returncode == 0, describe(stopped)
        wait_until(lambda: not pid_alive(pid), 10, what="the remote worker to exit")
        assert "stopped the cluster (xparl stop)" in log.read_text()


def test_a_killed_master_leaves_its_workers_waiting_for_it(state_dir: Path, tmp_path: Path) -> None:
    with running_cluster(state_dir, 1) as cluster, _remote_worker(cluster, tmp_path) as (pid, log):
        master = json.loads((state_dir / "clusters" / f"{cluster.port}.json").read_text())
        os.kill(master["pids"]["master"], signal.SIGKILL)
        wait_until(lambda: "reconnecting" in log.read_text(), 15, what="the worker to notice")
        time.sleep(2)
        assert pid_alive(pid), f"the worker exited:\n{log.read_text()}"


WAITING_DRIVER = """
import sys, threading, time
import parl_rs as parl

parl.connect(sys.argv[1], create_timeout=12)


@parl.remote_class
class Slot:
    def ping(self):
        return 1


held = Slot()
held.ping()
errors = []


def create():
    try:
        Slot()
    except parl.ResourceError as exc:
        errors.append(exc)


threads = [threading.Thread(target=create) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("timed out:", len(errors))
"""


@pytest.mark.timeout(90)
def test_pending_creations_print_one_line_per_interval(cluster: Cluster, tmp_path: Path) -> None:
    # `cluster` has 2 CPUs: hold both, and 8 more creations wait 12 s.
    driver = WAITING_DRIVER.replace("held = Slot()", "held = Slot()\nheld2 = Slot()\nheld2.ping()")
    result = run_script(tmp_path, driver, cluster.address)
    assert "timed out: 8" in result.stdout, describe(result)
    lines = [line for line in result.stderr.splitlines() if "for a vacant CPU" in line]
    # 12 s of waiting, a line every 5 s: 2 lines (before: one per creation, 16 lines).
    assert 1 <= len(lines) <= 3, describe(result)
    assert "8 actor creations wait" in lines[0], lines
    assert "this process holds all 2 CPUs of the cluster" in lines[0], lines


def _open(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def _open_with_cookies(url: str) -> int:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(url, timeout=10) as response:
        return response.status


def test_status_url_prints_a_link_that_works(cluster: Cluster) -> None:
    result = xparl("status", "--url")
    assert result.returncode == 0, describe(result)
    (url,) = result.stdout.split()
    assert "token=" in url and _open(url) == 200


def test_start_prints_a_working_link_and_says_which_port_replaced_a_busy_one(
    state_dir: Path,
) -> None:
    port = free_port()
    with socket.socket() as busy:
        try:
            busy.bind(("127.0.0.1", port + 100))
        except OSError:
            pytest.skip(f"port {port + 100} is not free to occupy")
        busy.listen()
        started = xparl("start", "--port", str(port), "--cpu_num", "0", "--host", "127.0.0.1")
        record_path = state_dir / "clusters" / f"{port}.json"
        try:
            assert started.returncode == 0, describe(started)
            used = json.loads(record_path.read_text())["http_address"].rsplit(":", 1)[1]
            assert f"port {port + 100}" in started.stderr, describe(started)
            assert f"uses port {used} instead" in started.stderr, describe(started)
            (url,) = re.findall(r"http://\S+", started.stdout)
            # The monitor's login link: it works with the cookie it sets.
            assert f":{used}/login?token=" in url and _open_with_cookies(url) == 200
        finally:
            pids = json.loads(record_path.read_text())["pids"] if record_path.exists() else {}
            xparl("stop", "--port", str(port))
            for pid in pids.values():
                if pid:
                    kill_if_ours(pid, b"parl_rs._node")


def test_status_lists_a_cluster_with_a_local_worker_once(cluster: Cluster) -> None:
    joined = xparl("connect", "--address", f"localhost:{cluster.port}", "--cpu_num", "1")
    assert joined.returncode == 0, describe(joined)
    try:
        wait_until(lambda: "3 vacant cpus" in xparl("status").stdout, 15, what="the worker")
        result = xparl("status")
        assert result.returncode == 0, describe(result)
        assert result.stdout.count("# Cluster ") == 1, describe(result)
    finally:
        stopped = xparl("stop")  # the `xparl connect` worker, and the cluster (fixture: again)
        assert stopped.returncode == 0, describe(stopped)


def test_status_with_the_wrong_key_says_so_and_fails(cluster: Cluster) -> None:
    result = xparl("status", "--address", cluster.address, "--key", "0" * 64)
    assert result.returncode == 1, describe(result)
    assert "please try later" not in result.stdout + result.stderr
    assert "refused the key given" in result.stderr and "--key KEY" in result.stderr


def test_status_of_an_unreachable_cluster_fails_but_lists_the_others(cluster: Cluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    # A recorded worker whose cluster is gone: a process that looks like a node to `status`.
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "parl_rs._node"],
        stdin=subprocess.DEVNULL,
    )
    try:
        workers = cluster.state_dir / "workers"
        workers.mkdir(exist_ok=True)
        record = {"address": dead, "pid": stand_in.pid}
        (workers / f"{stand_in.pid}.json").write_text(json.dumps(record))
        result = xparl("status")
        (workers / f"{stand_in.pid}.json").unlink()
    finally:
        stand_in.kill()
        stand_in.wait(10)
    assert result.returncode == 1, describe(result)
    assert f"# Cluster {cluster.address} has" in result.stdout, describe(result)
    assert f"cannot reach the cluster at {dead}" in result.stderr, describe(result)
    assert "please try later" not in result.stdout + result.stderr


def test_a_closed_pipe_ends_status_and_start_quietly(state_dir: Path) -> None:
    def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess:
        read, write = os.pipe()
        os.close(read)
        try:
            return subprocess.run(
                [sys.executable, "-m", "parl_rs.cli", *args],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
            )
        finally:
            os.close(write)

    status = run_into_closed_pipe("status")
    assert status.returncode == 141 and "Traceback" not in status.stderr, status.stderr
    port = free_port()
    start = run_into_closed_pipe("start", "--port", str(port), "--cpu_num", "0")
    record = state_dir / "clusters" / f"{port}.json"
    pids = json.loads(record.read_text())["pids"] if record.exists() else {}
    try:
        assert start.returncode == 141 and "Traceback" not in start.stderr, start.stderr
    finally:
        xparl("stop", "--port", str(port))
        for pid in pids.values():
            if pid:
                kill_if_ours(pid, b"parl_rs._node")


# --- input checks --------------------------------------------------------------------------------


def test_a_negative_cpu_num_is_refused(state_dir: Path) -> None:
    result = xparl("start", "--port", str(free_port()), "--cpu_num", "-1")
    assert result.returncode == 1, describe(result)
    assert "--cpu_num must be 0 or more, got -1" in result.stderr
    assert not (state_dir / "clusters").exists() or not list((state_dir / "clusters").glob("*"))


@pytest.mark.parametrize("command", ["connect", "status"])
def test_an_address_without_a_port_says_host_port_is_expected(
    state_dir: Path, command: str
) -> None:
    result = xparl(command, "--address", "localhost")
    assert result.returncode == 1, describe(result)
    assert "takes the master's host:port" in result.stderr, describe(result)
    assert "Traceback" not in result.stderr


def test_a_failed_connect_leaves_no_worker_folder(state_dir: Path) -> None:
    result = xparl("connect", "--address", f"127.0.0.1:{free_port()}", "--cpu_num", "1")
    assert result.returncode == 1, describe(result)
    assert list((state_dir / "workers").glob("worker-*")) == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"parl_rs {parl_rs.__version__}"


NVIDIA_SMI = """GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5f2e6c1a-0000-0000-0000-000000000000)
  MIG 1g.5gb      Device  0: (UUID: MIG-11111111-0000-0000-0000-000000000000)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-7a9d3b2c-0000-0000-0000-000000000000)
"""


def test_gpu_ids_are_checked_against_the_machine(capsys: pytest.CaptureFixture[str]) -> None:
    ids = _cli_input.ids_from_nvidia_smi(NVIDIA_SMI)
    assert {"0", "1", "GPU-5f2e6c1a-0000-0000-0000-000000000000"} <= ids
    assert "MIG-11111111-0000-0000-0000-000000000000" in ids
    _cli_input.check_gpus(["0", "1"], (ids, "nvidia-smi -L"))
    with pytest.raises(_cli_input.CliError, match=r"no GPU 2 \(GPU ids per nvidia-smi -L: 0,1,"):
        _cli_input.check_gpus(["1", "2"], (ids, "nvidia-smi -L"))
    _cli_input.check_gpus(["0"], None)
    assert "could not check the GPU ids 0" in capsys.readouterr().err
    assert _cli_input.describe_gpus(["0"]) == "1 GPU (id 0)"
    assert _cli_input.describe_gpus(["0", "1"]) == "2 GPUs (ids 0,1)"


_GPUS_KNOWABLE = bool(
    __import__("shutil").which("nvidia-smi") or Path("/proc/driver/nvidia/gpus").is_dir()
)


@pytest.mark.skipif(_GPUS_KNOWABLE, reason="this machine's real GPUs decide")
def test_connect_refuses_a_gpu_the_machine_does_not_have(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    result = xparl("connect", "--address", f"127.0.0.1:{free_port()}", "--gpu", "1")
    assert result.returncode == 1, describe(result)
    assert "this machine has no GPU 1 (GPU ids per CUDA_VISIBLE_DEVICES: 0)" in result.stderr
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    unknown = xparl("connect", "--address", f"127.0.0.1:{free_port()}", "--gpu", "1")
    assert "could not check the GPU ids 1" in unknown.stderr, describe(unknown)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs the test mounts, filled up (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with contextlib.suppress(OSError), open(mount_point / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_start_on_a_full_disk_says_so_and_leaves_nothing(
    full_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = full_disk / "state"
    monkeypatch.setenv("XPARL_STATE_DIR", str(state))
    port = free_port()
    result = xparl("start", "--port", str(port), "--cpu_num", "1")
    assert result.returncode == 1, describe(result)
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    left = sorted(p.relative_to(full_disk).as_posix() for p in full_disk.rglob("*"))
    assert all(not name.startswith(f"state/clusters/{port}") for name in left), left
    assert all(not name.startswith(f"state/keys/{port}.") for name in left), left


def test_a_chosen_scheme_places_actors_and_shows_in_status(state_dir: Path, tmp_path: Path) -> None:
    with running_cluster(state_dir, 2, "--scheme", "lru") as cluster:
        assert cluster_status(cluster.address)["scheme"] == "lru"
        status = xparl("status")
        assert "scheme: lru" in status.stdout, describe(status)
        ran = run_script(tmp_path, TWO_ACTORS, cluster.address)
        assert ran.returncode == 0 and "pids differ: True" in ran.stdout, describe(ran)


def test_a_wrong_scheme_lists_the_valid_ones(state_dir: Path) -> None:
    started = xparl("start", "--port", str(free_port()), "--cpu_num", "0", "--scheme", "fastest")
    assert started.returncode == 2, describe(started)
    assert "invalid choice: 'fastest'" in started.stderr, describe(started)
    assert "leastload" in started.stderr and "spread" in started.stderr, describe(started)


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_hwm_reaches_the_master_and_a_joining_worker(state_dir: Path, tmp_path: Path) -> None:
    with running_cluster(state_dir, 1, "--hwm", "2") as cluster:
        record = json.loads((state_dir / "clusters" / f"{cluster.port}.json").read_text())
        master_args = _cmdline(record["pids"]["master"])
        assert master_args[master_args.index("--hwm") + 1] == "2", master_args
        # The local worker sets none: it takes the master's.
        assert "--hwm" not in _cmdline(record["pids"]["worker"])
        joined = xparl("connect", "--address", cluster.address, "--cpu_num", "1", "--hwm", "3")
        assert joined.returncode == 0, describe(joined)
        (worker_record,) = (state_dir / "workers").glob("*.json")
        worker_args = _cmdline(json.loads(worker_record.read_text())["pid"])
        assert worker_args[worker_args.index("--hwm") + 1] == "3", worker_args
        marks = sorted(w["hwm"] for w in cluster_status(cluster.address)["workers"])
        assert marks == [2, 3], "the local worker takes the master's default, the other its own"
        ran = run_script(tmp_path, TWO_ACTORS, cluster.address)
        assert ran.returncode == 0 and "pids differ: True" in ran.stdout, describe(ran)


GATED_ACTORS = """
import os, sys, threading, time
import parl_rs as parl

parl.connect(sys.argv[1])
gate = sys.argv[2]


@parl.remote_class
class Gated:
    def __init__(self):
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)

    def pid(self):
        return os.getpid()


actors = []
threads = [threading.Thread(target=lambda: actors.append(Gated())) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("created", len({actor.pid() for actor in actors}))
"""


def test_a_worker_at_its_hwm_gets_no_grant_until_an_actor_has_started(
    state_dir: Path, tmp_path: Path
) -> None:
    # Two CPUs, a mark of 1: while the first actor's __init__ waits for the gate, the second
    # creation waits in the master's queue although a warm job is free.
    gate = tmp_path / "gate"
    script = tmp_path / "gated.py"
    script.write_text(GATED_ACTORS)
    with running_cluster(state_dir, 2, "--hwm", "1") as cluster:
        driver = subprocess.Popen(
            [sys.executable, str(script), cluster.address, str(gate)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def one_starting_one_waiting() -> bool:
                status = cluster_status(cluster.address)
                (worker,) = status["workers"]
                seen = (worker["starting"], worker["jobs_ready"], status["pending_requests"])
                return seen == (1, 1, 1)

            wait_until(one_starting_one_waiting, 30, what="a grant in flight, a request held")
            gate.touch()
            out, err = driver.communicate(timeout=60)
            assert driver.returncode == 0 and "created 2" in out, f"{out}\n{err}"
            (worker,) = cluster_status(cluster.address)["workers"]
            assert worker["starting"] == 0, worker
        finally:
            driver.kill()
            driver.wait()


@pytest.mark.parametrize(
    ("command", "value", "says"),
    [
        ("start", "-1", "must be 0 or more (at most 4294967295), got -1 (0: unlimited)"),
        ("start", "two", "must be a whole number of grants in flight, got 'two'"),
        ("connect", "-3", "got -3 (0: the master's default)"),
        ("connect", str(2**32), f"got {2**32}"),
    ],
)
def test_a_bad_hwm_is_refused_before_anything_starts(
    state_dir: Path, command: str, value: str, says: str
) -> None:
    where = ["--port", str(free_port()), "--cpu_num", "0"]
    if command == "connect":
        where = ["--address", f"127.0.0.1:{free_port()}", "--cpu_num", "1"]
    result = xparl(command, *where, "--hwm", value)
    assert result.returncode == 2, describe(result)
    assert f"xparl {command}: error: argument --hwm: " in result.stderr, describe(result)
    assert says in result.stderr, describe(result)
    assert not [p for p in state_dir.rglob("*") if p.is_file()], "something was started"


def test_status_shows_a_workers_hwm_when_the_master_reports_it() -> None:
    worker = {"worker_id": "w1", "hostname": "h", "cpu_total": 2, "cpu_used": 1, "cpu_vacant": 1}
    shown = cli._format_status("h:1", {"workers": [{**worker, "hwm": 4}, {**worker, "hwm": 0}]})
    assert "1 used cpus, 1 vacant cpus, 0 starting (hwm 4)" in shown
    assert "1 used cpus, 1 vacant cpus, 0 starting (hwm unlimited)" in shown
    assert "hwm" not in cli._format_status("h:1", {"workers": [worker]})


TWO_ACTORS = """
import os
import sys
import parl_rs as parl

parl.connect(sys.argv[1])


@parl.remote_class
class Where:
    def pid(self):
        return os.getpid()


a, b = Where(), Where()
print("pids differ:", a.pid() != b.pid())
"""
