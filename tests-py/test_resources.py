"""Memory limits (`max_memory`) and GPU slots (`n_gpu`) on real clusters started with `xparl`.

There is no GPU here: GPU clusters get fake ids (`--gpu 0,1`). What matters is what the master
allocates and what each actor's process sees in `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

import parl_rs as parl
from conftest import (
    Cluster,
    connected_cluster,
    describe,
    pid_alive,
    run_script,
    running_cluster,
    wait_until,
    xparl,
)
from parl_rs.exceptions import ActorDiedError, FutureFunctionError, ResourceError
from parl_rs.monitor import cluster_api


def _define_actors() -> SimpleNamespace:
    class Probe:
        def visible_gpus(self) -> str:
            return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")

        def ping(self) -> str:
            return "pong"

        def hold(self, mb: int, seconds: float) -> int:
            # Repeating one byte fills every page, so all of it is resident at once.
            self.data = b"\x01" * (mb << 20)
            time.sleep(seconds)
            return len(self.data) >> 20

        def hold_in_child(self, mb: int, pid_file: str) -> None:
            code = f"import time; data = b'1' * ({mb} << 20); time.sleep(60)"
            child = subprocess.Popen([sys.executable, "-c", code])
            Path(pid_file).write_text(str(child.pid))
            child.wait()

    def remote(**options: object) -> object:
        return parl.remote_class(**options)(Probe)

    return SimpleNamespace(
        Cpu=remote(),
        Limited=remote(max_memory=200),
        Gpu1=remote(n_gpu=1),
        Gpu2=remote(n_gpu=2),
        Gpu3=remote(n_gpu=3),
        Gpu9=remote(n_gpu=9),
        FutureLimited=remote(wait=False, max_memory=200),
        FutureGpu1=remote(wait=False, n_gpu=1),
    )


ACTORS = _define_actors()


@pytest.fixture
def gpu_cluster(state_dir: Path) -> Iterator[Cluster]:
    """`xparl start --gpu_cluster --gpu 0,1`, connected."""
    with connected_cluster(state_dir, 0, "--gpu_cluster", "--gpu", "0,1") as cluster:
        yield cluster


def status_line(cluster: Cluster) -> str:
    result = xparl("status", "--address", cluster.address)
    assert result.returncode == 0, describe(result)
    return result.stdout.splitlines()[0]


# --- memory limit ------------------------------------------------------------------------------


def test_an_actor_over_max_memory_is_killed_and_its_caller_told_why(one_cpu: Cluster) -> None:
    hog = ACTORS.Limited()
    started = time.monotonic()
    with pytest.raises(ActorDiedError) as died:
        hog.hold(400, 30)
    took = time.monotonic() - started
    print(f"memory kill reported {took:.2f} s after the 400 MB allocation started")
    message = str(died.value)
    assert "exceeded its memory limit (max_memory=200 MB beyond its" in message, message
    used = re.search(
        r"it used ([\d.]+) MB more \(([\d.]+) MB resident, children included\)", message
    )
    assert used is not None, message
    assert float(used.group(1)) > 200, message
    assert took < 3, f"the caller heard of the kill after {took:.2f} s"
    # Later calls fail with the same reason, at once.
    with pytest.raises(ActorDiedError, match="exceeded its memory limit"):
        hog.ping()
    # The only CPU is back in the pool.
    assert ACTORS.Limited().ping() == "pong"
    # The monitor names the cause.
    events = cluster_api(one_cpu.address, "/api/v1/events")["events"]
    causes = [event["cause"] for event in events if event["kind"] == "job_died"]
    assert causes == ["memory_limit"], events


def test_an_actor_under_its_limit_is_left_alone(connected: Cluster) -> None:
    calm = ACTORS.Limited()
    # 50 MB held for 1.5 s: several checks of the worker see it.
    assert calm.hold(50, 1.5) == 50
    assert calm.ping() == "pong"
    unlimited = ACTORS.Cpu()
    assert unlimited.hold(300, 0.5) == 300


def test_memory_of_the_actors_children_counts(connected: Cluster, tmp_path: Path) -> None:
    parent = ACTORS.Limited()
    pid_file = tmp_path / "child.pid"
    with pytest.raises(ActorDiedError, match="children included"):
        parent.hold_in_child(300, str(pid_file))
    child = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(child), 5, what="the actor's child to be killed too")


# --- GPU slots ---------------------------------------------------------------------------------


def test_gpu_ids_land_in_cuda_visible_devices(gpu_cluster: Cluster) -> None:
    first, second = ACTORS.Gpu1(), ACTORS.Gpu1()
    assert sorted([first.visible_gpus(), second.visible_gpus()]) == ["0", "1"]
    assert status_line(gpu_cluster) == (
        f"# Cluster {gpu_cluster.address} has 0 used cpus, 0 vacant cpus, 2 used_gpus, "
        "0 vacant_gpus."
    )
    del first, second
    wait_until(lambda: "0 used_gpus, 2 vacant_gpus" in status_line(gpu_cluster), 10)
    assert ACTORS.Gpu2().visible_gpus() == "0,1"


def test_gpu_ids_are_set_before_user_code_is_imported(gpu_cluster: Cluster, tmp_path) -> None:
    probe = """
        import os

        import parl_rs as parl

        SEEN_AT_IMPORT = os.environ.get("CUDA_VISIBLE_DEVICES")


        @parl.remote_class(n_gpu=2)
        class GpuProbe:
            def seen(self):
                return SEEN_AT_IMPORT, os.environ["CUDA_VISIBLE_DEVICES"]
    """
    driver = """
        import sys

        import parl_rs as parl
        from gpu_probe import GpuProbe

        parl.connect(sys.argv[1])
        print("SEEN", GpuProbe().seen())
    """
    result = run_script(tmp_path, driver, gpu_cluster.address, files={"gpu_probe.py": probe})
    assert result.returncode == 0, describe(result)
    assert "SEEN ('0,1', '0,1')" in result.stdout, describe(result)


def test_a_cpu_actor_sees_no_gpu(connected: Cluster) -> None:
    assert ACTORS.Cpu().visible_gpus() == ""


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        ("Gpu3", "n_gpu=3 GPUs, but the largest worker of this cluster has 2"),
        ("Gpu9", "n_gpu=9 GPUs; an actor may use at most 8"),
        ("Cpu", "Probe` is a CPU actor, but this is a GPU cluster"),
    ],
)
def test_a_gpu_cluster_refuses_what_it_can_never_serve_at_once(
    gpu_cluster: Cluster, actor: str, expected: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ResourceError, match=re.escape(expected)):
        getattr(ACTORS, actor)()
    assert time.monotonic() - started < 2


def test_a_cpu_cluster_refuses_gpu_actors_at_once(connected: Cluster) -> None:
    started = time.monotonic()
    with pytest.raises(ResourceError, match="asks for n_gpu=1 GPUs, but this is a CPU cluster"):
        ACTORS.Gpu1()
    assert time.monotonic() - started < 2


def test_workers_join_only_clusters_of_their_kind(state_dir: Path) -> None:
    with running_cluster(state_dir, 0, "--gpu_cluster") as gpu_master:
        refused = xparl("connect", "--address", gpu_master.address, "--cpu_num", "1")
        assert refused.returncode == 1, describe(refused)
        assert f"the cluster at {gpu_master.address} is a GPU cluster" in refused.stderr
        assert "--gpu 0,1" in refused.stderr, describe(refused)
    with running_cluster(state_dir, 1) as cpu_master:
        refused = xparl("connect", "--address", cpu_master.address, "--gpu", "0")
        assert refused.returncode == 1, describe(refused)
        assert f"the cluster at {cpu_master.address} is a CPU cluster" in refused.stderr


def test_a_gpu_worker_joins_a_gpu_cluster(state_dir: Path) -> None:
    with running_cluster(state_dir, 0, "--gpu_cluster") as cluster:
        joined = xparl("connect", "--address", cluster.address, "--gpu", "4,5,6")
        assert joined.returncode == 0, describe(joined)
        assert "3 GPUs (ids 4,5,6)" in joined.stdout
        wait_until(lambda: "0 used_gpus, 3 vacant_gpus" in status_line(cluster), 10)


def test_gpu_without_gpu_cluster_is_ignored_like_parl(state_dir: Path) -> None:
    with running_cluster(state_dir, 1, "--gpu", "0") as cluster:
        assert status_line(cluster).endswith(
            "0 used cpus, 1 vacant cpus, 0 used_gpus, 0 vacant_gpus."
        )


def test_bad_gpu_ids_are_refused(state_dir: Path) -> None:
    result = xparl("connect", "--address", "127.0.0.1:1", "--gpu", "0,0")
    assert result.returncode == 1 and "distinct GPU ids" in result.stderr, describe(result)


# --- future mode (wait=False) ------------------------------------------------------------------


def test_a_future_mode_actor_sees_the_gpu_granted_after_its_init_was_queued(
    gpu_cluster: Cluster,
) -> None:
    holders = [ACTORS.Gpu1(), ACTORS.Gpu1()]
    # Every GPU is taken: the actor and its __init__ wait for a grant.
    waiting = ACTORS.FutureGpu1()
    assert waiting._xparl_handle.gpus is None
    # Free GPU "1", whichever holder has it: the queued __init__ must set up that one.
    freed = next(holder for holder in holders if holder.visible_gpus() == "1")
    freed.destroy()
    assert waiting.visible_gpus().get(timeout=20) == "1"
    assert waiting._xparl_handle.gpus == ["1"]


def test_a_future_mode_actor_over_max_memory_fails_its_future_with_the_reason(
    one_cpu: Cluster,
) -> None:
    hog = ACTORS.FutureLimited()
    held = hog.hold(400, 30)
    killed = re.escape("exceeded its memory limit (max_memory=200 MB")
    # PARL's `get` wraps the call's error; `result` raises it as it is.
    with pytest.raises(FutureFunctionError, match=killed) as failed:
        held.get(timeout=20)
    assert isinstance(failed.value.__cause__, ActorDiedError)
    with pytest.raises(FutureFunctionError, match="exceeded its memory limit"):
        hog.ping()  # later calls raise at the call, as in PARL
