"""Every blocking wait releases the GIL: while one thread waits on an actor (a call, a future,
a creation queued for a slot), the process's other Python threads run. Each wait can only end
through Python code that another thread of the caller runs *during* the wait, so a wait that
held the GIL would never end in time and the test fails (not just slows down)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import parl_rs as parl
from conftest import Cluster, cluster_status, wait_until

pytestmark = pytest.mark.timeout(90)


def _waiter_class(wait: bool = True):
    class Waiter:
        def wait_for(self, started: str, go: str, limit: float = 20.0) -> bool:
            """Announce the call has started, then return True once `go` exists."""
            Path(started).write_text("started")
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                if os.path.exists(go):
                    return True
                time.sleep(0.01)
            return False

    return parl.remote_class(wait=wait)(Waiter)


def _answer_during_the_call(tmp_path: Path) -> tuple[str, str, threading.Thread]:
    """A caller thread that, once the actor's call has started, creates the file the call
    waits for: plain Python, so it runs only if the waiting thread released the GIL."""
    started, go = tmp_path / "started", tmp_path / "go"

    def answer() -> None:
        wait_until(started.exists, 30, interval=0.01, what="the call to start")
        go.write_text("go")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return str(started), str(go), thread


def test_a_blocking_call_lets_other_threads_run(connected: Cluster, tmp_path: Path) -> None:
    waiter = _waiter_class()()
    started, go, answerer = _answer_during_the_call(tmp_path)
    assert waiter.wait_for(started, go) is True
    answerer.join(30)


def test_a_future_get_lets_other_threads_run(connected: Cluster, tmp_path: Path) -> None:
    waiter = _waiter_class(wait=False)()
    started, go, answerer = _answer_during_the_call(tmp_path)
    assert waiter.wait_for(started, go).get(timeout=60) is True
    answerer.join(30)


def test_a_creation_waiting_for_a_slot_lets_other_threads_run(connected: Cluster) -> None:
    cls = _waiter_class()
    holders = [cls(), cls()]  # both CPUs of the cluster
    outcome: dict = {}

    def create_third() -> None:
        try:
            outcome["actor"] = cls()  # waits in the master's queue for a slot
        except Exception as exc:
            outcome["error"] = exc

    creator = threading.Thread(target=create_third, daemon=True)
    creator.start()
    # This thread runs Python while the creation waits: polling the master, then freeing a
    # slot, which is the only way the creation can end.
    wait_until(lambda: cluster_status(connected.address)["pending_requests"] == 1, 30)
    holders.pop()
    creator.join(60)
    assert "actor" in outcome, outcome


SCHED_BATCH = 3  # linux/sched.h


def _thread_policies(pid: int) -> dict[str, int]:
    """Thread name -> scheduling policy (field 41 of /proc/<pid>/task/<tid>/stat)."""
    policies = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        policies[name] = int(fields[38])  # fields after the name start at field 3
    return policies


@pytest.mark.timeout(60)
def test_io_threads_do_not_preempt_the_thread_that_woke_them(connected: Cluster) -> None:
    # SCHED_BATCH: woken by a caller that is about to sleep, an I/O thread waits for the CPU
    # instead of preempting it (one involuntary context switch less per hop on a busy CPU).
    actor = _waiter_class()()
    job_pid = actor._xparl_handle.pid
    assert _thread_policies(os.getpid())["parl-rs-io"] == SCHED_BATCH
    assert _thread_policies(job_pid)["parl-rs-job"] == SCHED_BATCH
    # The caller's own threads keep the normal policy.
    assert _thread_policies(os.getpid())[Path("/proc/self/comm").read_text().strip()] == 0
