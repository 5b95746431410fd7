"""Stateless tasks (`@remote_function`) on real clusters: on-demand leases, timeouts that kill
the stuck job, retries with the attempt list, `after` dependencies, cancel, a killed client's
leases, tasks and actors sharing slots, and `ActorPool`."""

from __future__ import annotations

import concurrent.futures
import gc
import json
import os
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest

import parl_rs as parl
from conftest import (
    Cluster,
    cluster_status,
    kill_if_ours,
    pid_alive,
    running_cluster,
    wait_until,
    xparl,
)

pytestmark = pytest.mark.timeout(90)


@parl.remote_function
def add(x: int, y: int = 1) -> int:
    return x + y


@parl.remote_function
def pid_of_job() -> int:
    return os.getpid()


@parl.remote_function
def write_pid_and_sleep(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


@parl.remote_function
def value_after(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


@parl.remote_function
def crash_the_first_time(marker: str) -> int:
    """Kills its job on the first attempt (no marker yet); returns its pid on the next."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return os.getpid()


@parl.remote_function
def always_crash() -> None:
    os._exit(7)


@parl.remote_function
def count_and_raise(path: str) -> None:
    with open(path, "a") as log:
        log.write("attempt\n")
    raise ValueError("bad input")


@parl.remote_function
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@parl.remote_class
class Holder:
    def pid(self) -> int:
        return os.getpid()

    def pid_after(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()


def _used(cluster: Cluster) -> int:
    return cluster_status(cluster.address)["cpu_used"]


def test_a_remote_function_runs_on_the_cluster_in_every_form(connected: Cluster) -> None:
    assert add(1) == 2
    assert add.submit(2, y=5).result() == 7
    assert add.map(range(50)) == [x + 1 for x in range(50)]
    assert sorted(add.imap_unordered(range(20))) == [x + 1 for x in range(20)]
    assert add.options(retries=2).submit(3).get() == 4
    assert pid_of_job() != os.getpid()
    # Its leases go back once it runs dry.
    try:
        wait_until(lambda: _used(connected) == 0, 20, what="the leases to go back")
    except AssertionError as failed:
        raise AssertionError(f"{failed}: {cluster_status(connected.address)}") from None


def test_a_task_past_its_timeout_is_killed_with_its_job_and_its_slot_returns(
    connected: Cluster, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    stuck = write_pid_and_sleep.options(timeout=1.0)
    started = time.monotonic()
    with pytest.raises(parl.TaskError) as failed:
        stuck(str(pid_file), 60)
    assert time.monotonic() - started < 20
    assert "timeout of 1s" in str(failed.value), failed.value
    (attempt,) = failed.value.attempts
    assert "timeout" in attempt[3]
    job_pid = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(job_pid), 10, what="the stuck job to be killed")
    wait_until(lambda: _used(connected) == 0, 10, what="its slot")


def test_a_crash_is_retried_on_another_job(connected: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    pid = crash_the_first_time.options(retries=1)(str(marker))
    assert pid != int(marker.read_text()), "the retry ran in another job"


def test_after_the_last_attempt_the_error_lists_every_attempt(connected: Cluster) -> None:
    with pytest.raises(parl.TaskError) as failed:
        always_crash.options(retries=2)()
    attempts = failed.value.attempts
    assert len(attempts) == 3, attempts
    assert len({job for _, _, job, _ in attempts}) == 3, "each attempt on its own job"
    for worker, host, job, what in attempts:
        assert worker and host and job, attempts
        assert "exited with status 7" in what, what
    assert "failed after 3 attempts" in str(failed.value)


def test_an_exception_is_the_result_and_is_retried_only_when_asked(
    connected: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "attempts"
    with pytest.raises(ValueError, match="bad input"):
        count_and_raise.options(retries=3)(str(log))
    assert log.read_text().count("attempt") == 1
    log.unlink()
    with pytest.raises(ValueError, match="bad input"):
        count_and_raise.options(retries=2, retry_exceptions=True)(str(log))
    assert log.read_text().count("attempt") == 3
    assert add(1) == 2, "the lease goes on after an exception"


def test_a_failed_dependency_fails_its_dependents_without_running_them(
    connected: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "dependent ran"
    failed = always_crash.submit()
    dependent = touch.submit(str(marker), after=[failed])
    further = touch.submit(str(marker), after=[dependent])
    with pytest.raises(parl.DependencyError, match="always_crash"):
        dependent.result(timeout=30)
    with pytest.raises(parl.DependencyError, match="touch"):
        further.result(timeout=30)
    # A dependency that failed before the dependent was submitted fails it at submit.
    with pytest.raises(parl.DependencyError):
        touch.submit(str(marker), after=[failed])
    assert not marker.exists()
    # Success: the dependent runs after, and sees what its dependency left.
    first = touch.submit(str(tmp_path / "first"))
    second = add.submit(1, after=[first])
    assert second.result(timeout=30) == 2 and (tmp_path / "first").exists()


def test_after_takes_futures_only(connected: Cluster) -> None:
    with pytest.raises(ValueError, match="takes futures"):
        add.submit(1, after=["not a future"])


@parl.remote_class(wait=False)
class FutureAdder:
    def add(self, x: int) -> int:
        return x + 100


def test_a_future_argument_is_replaced_by_its_value_once_it_is_ready(
    connected: Cluster, tmp_path: Path
) -> None:
    first = add.submit(1)
    chained = add.submit(add.submit(first), y=add.submit(10))  # (1 + 1 + 1) + (10 + 1)
    assert chained.result(timeout=30) == 14
    # Any future: a plain one set later here, or a call of a future-mode actor.
    later: concurrent.futures.Future = concurrent.futures.Future()
    waiting = add.submit(later)
    assert not waiting.done()
    later.set_result(5)
    assert waiting.result(timeout=30) == 6
    assert add.submit(FutureAdder().add(1)).result(timeout=30) == 102
    # A task that waits here for one future, and whose argument is a task still running: the
    # argument's value is waited for too (it was once waited for on the completion thread,
    # which then could not complete it).
    gate: concurrent.futures.Future = concurrent.futures.Future()
    gated = add.submit(gate)
    both = add.submit(value_after.submit(1.0, 7), after=[gated])
    gate.set_result(0)
    assert both.result(timeout=30) == 8
    # A failed argument fails the task without running it, and those after it.
    marker = tmp_path / "ran"
    blocked: concurrent.futures.Future = concurrent.futures.Future()
    dependent = touch.submit(str(marker), after=[blocked])
    further = add.submit(dependent)
    blocked.set_exception(RuntimeError("upstream broke"))
    with pytest.raises(parl.DependencyError, match="upstream broke"):
        dependent.result(timeout=30)
    with pytest.raises(parl.DependencyError):
        further.result(timeout=30)
    assert not marker.exists()
    # A task still waiting for its arguments can be cancelled: it never runs.
    never: concurrent.futures.Future = concurrent.futures.Future()
    cancelled = touch.submit(str(marker), after=[never])
    assert cancelled.cancel() and cancelled.cancelled()
    never.set_result(None)  # runs the waiting task's callback, here and now
    assert getattr(cancelled, "_xparl_task", None) is None, "it was never submitted"
    assert not marker.exists()


def test_cancel_drops_a_queued_task_and_kills_a_running_one(
    connected: Cluster, tmp_path: Path
) -> None:
    holders = [Holder(), Holder()]  # both CPUs: tasks queue
    marker = tmp_path / "queued task ran"
    queued = touch.submit(str(marker))
    wait_until(lambda: cluster_status(connected.address)["pending_requests"] >= 1, 10)
    assert queued.cancel() and queued.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result()
    for holder in holders:
        holder._xparl_handle.release()
    pid_file = tmp_path / "pid"
    running = write_pid_and_sleep.submit(str(pid_file), 60)
    wait_until(pid_file.exists, 30, what="the task to start")
    job_pid = int(pid_file.read_text())
    assert running.cancel() and running.cancelled()
    wait_until(lambda: not pid_alive(job_pid), 10, what="the running task's job to be killed")
    assert not marker.exists()


def test_tasks_wait_for_slots_that_actors_hold(connected: Cluster) -> None:
    holders = [Holder(), Holder()]
    waiting = add.submit(41)
    wait_until(lambda: cluster_status(connected.address)["pending_requests"] >= 1, 10)
    assert not waiting.done()
    holders.pop()._xparl_handle.release()
    assert waiting.result(timeout=30) == 42
    del holders


def test_a_killed_clients_leases_come_back_within_3_s(cluster: Cluster, tmp_path: Path) -> None:
    driver = """
        import os, sys, time
        import parl_rs as parl

        @parl.remote_function
        def hold(seconds):
            time.sleep(seconds)

        parl.connect(sys.argv[1])
        futures = [hold.submit(120) for _ in range(2)]
        print("submitted", flush=True)
        time.sleep(120)
    """
    script = tmp_path / "leaser.py"
    script.write_text(textwrap.dedent(driver))
    client = subprocess.Popen(
        [sys.executable, str(script), cluster.address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "submitted"
        wait_until(lambda: _used(cluster) == 2, 30, what="both leases")
        killed_at = time.monotonic()
        client.kill()
        wait_until(lambda: _used(cluster) == 0, 10, what="the leases to come back")
        freed = time.monotonic() - killed_at
        print(f"a killed client's leases were back after {freed:.3f} s")
        assert freed < 3.0
    finally:
        client.kill()
        client.wait(10)


def test_an_actor_pool_hands_each_actor_the_next_item_when_it_is_free(
    connected: Cluster,
) -> None:
    holders = [Holder(), Holder()]
    started = {holder.pid() for holder in holders}
    pool = parl.ActorPool(holders)
    # Items of 0.1 s: one actor cannot take them all before the other's thread starts, even
    # on a loaded machine.
    pids = pool.map(lambda actor, _: actor.pid_after(0.1), range(10))
    assert set(pids) == started, (pids, started)
    assert len(pids) == 10 and len(set(pids)) == 2, pids
    assert sorted(pool.map_unordered(lambda actor, v: v * 2, range(5))) == [0, 2, 4, 6, 8]


@parl.remote_function
def worker_dir(seconds: float = 0.0) -> str:
    """The state directory of the worker this task runs on (each worker has its own), after
    `seconds` (so that tasks submitted together spread over the leases)."""
    time.sleep(seconds)
    return os.getcwd().split("/jobs/")[0]


def test_a_task_that_follows_another_runs_on_its_worker(state_dir: Path) -> None:
    with running_cluster(state_dir, 1) as cluster:
        joined = xparl("connect", "--address", cluster.address, "--cpu_num", "1")
        assert joined.returncode == 0, joined.stderr
        wait_until(lambda: len(cluster_status(cluster.address)["workers"]) == 2, 10)
        parl.connect(cluster.address, create_timeout=30)
        try:
            firsts = [worker_dir.submit(0.3) for _ in range(6)]
            seconds = [worker_dir.submit(follow=[first]) for first in firsts]
            places = [(f.result(timeout=30), s.result(timeout=30)) for f, s in zip(firsts, seconds)]
            assert all(first == second for first, second in places), places
            assert len({first for first, _ in places}) == 2, "the firsts ran on both workers"
            with pytest.raises(ValueError, match="one task"):
                worker_dir.submit(follow=firsts[:2])
            # The joined worker goes: a task that follows one that ran there cannot run. (A
            # lease there that the client has not yet heard is dead may cost an attempt.)
            (record_path,) = (state_dir / "workers").glob("*.json")
            record = json.loads(record_path.read_text())
            joined_dir = record["dir"]
            on_joined = next(f for f, (place, _) in zip(firsts, places) if joined_dir in place)
            kill_if_ours(record["pid"], b"parl_rs._node")
            wait_until(lambda: len(cluster_status(cluster.address)["workers"]) == 1, 15)
            with pytest.raises(parl.ResourceError, match="not in the cluster"):
                worker_dir.options(retries=1).submit(follow=[on_joined]).result(timeout=30)
        finally:
            parl.disconnect()


def test_a_task_of_an_earlier_connection_is_refused_as_a_dependency(cluster: Cluster) -> None:
    parl.connect(cluster.address)
    old = add.submit(1)
    assert old.result(timeout=30) == 2
    parl.disconnect()
    parl.connect(cluster.address)
    try:
        with pytest.raises(ValueError, match="another connection"):
            add.submit(1, after=[old])
    finally:
        parl.disconnect()


@parl.remote_function(n_gpu=1)
def visible_gpus() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def test_gpu_tasks_get_their_gpus_and_cpu_tasks_are_refused_on_a_gpu_cluster(
    state_dir: Path,
) -> None:
    with running_cluster(state_dir, 0, "--gpu_cluster", "--gpu", "0,1") as cluster:
        parl.connect(cluster.address, create_timeout=30)
        try:
            seen = {visible_gpus.submit().result(timeout=30) for _ in range(6)}
            assert seen <= {"0", "1"} and seen, seen
            with pytest.raises(parl.ResourceError, match="a task asks for no GPU"):
                add(1)
            with pytest.raises(parl.ResourceError, match="n_gpu=3"):
                visible_gpus.options(n_gpu=3)()
        finally:
            parl.disconnect()


@pytest.mark.timeout(240)
def test_the_task_benchmark_runs_and_writes_every_figure(tmp_path: Path) -> None:
    """`benches/tasks.py --quick` for parl_rs alone: it ends and writes each figure. Never a
    timing assertion: speed is the benchmark's business."""
    bench = Path(__file__).resolve().parent.parent / "benches" / "tasks.py"
    ran = subprocess.run(
        [sys.executable, str(bench), "--quick", "--systems", "parl_rs", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads((tmp_path / "tasks-latest.json").read_text())
    ours = report["results"]["parl_rs"]
    assert "error" not in ours, ours
    assert ours["tiny"]["tasks_per_s"] > 0 and ours["tiny"]["n"] == 2_000
    assert ours["skewed_ratio"] > 0 and ours["crash_retry_s"] > 0
    assert ours["queued"]["n"] == 1_000


def test_a_finished_task_future_is_freed_without_the_cycle_collector(connected: Cluster) -> None:
    # Its cancel hook once held the future itself: 20,000 futures of a map kept their results
    # until the cycle collector ran.
    gc.disable()
    try:
        future = add.submit(1)
        assert future.result(timeout=30) == 2
        ref = weakref.ref(future)
        del future
        assert ref() is None
    finally:
        gc.enable()
