"""Per-call timeouts of actor calls: `@remote_class(call_timeout=S)` and
`actor.method.options(timeout=S)`. A call past its timeout raises `CallTimeoutError` and ends
the actor (its job was in an unknown state), in both modes. Remote sleeps are workloads that
outlast the timeout, never a way to wait for something."""

from __future__ import annotations

import threading
import time

import pytest

import parl_rs as parl
from conftest import Cluster, cluster_status, wait_until

pytestmark = pytest.mark.timeout(120)


def _define() -> dict:
    class Sleeper:
        def __init__(self) -> None:
            self.calls = 0

        def sleep(self, seconds: float) -> float:
            self.calls += 1
            time.sleep(seconds)
            return seconds

    return {
        "Sleeper": parl.remote_class(Sleeper),
        "Limited": parl.remote_class(call_timeout=0.5)(Sleeper),
        "FutureSleeper": parl.remote_class(wait=False)(Sleeper),
    }


A = _define()


def _cpu_used(cluster: Cluster) -> int:
    return cluster_status(cluster.address)["cpu_used"]


def test_a_call_past_its_timeout_raises_and_ends_the_actor(one_cpu: Cluster) -> None:
    actor = A["Sleeper"]()
    assert actor.sleep.options(timeout=10)(0.01) == 0.01  # in time: nothing happens
    start = time.monotonic()
    with pytest.raises(parl.CallTimeoutError, match=r"`sleep` did not return within .* 0\.5 s"):
        actor.sleep.options(timeout=0.5)(30)
    assert time.monotonic() - start < 5
    with pytest.raises(parl.ActorDiedError, match="after an error in `sleep`"):
        actor.sleep(0)
    wait_until(lambda: _cpu_used(one_cpu) == 0, 10, what="the stuck job's CPU to be free")


def test_the_class_wide_call_timeout(one_cpu: Cluster) -> None:
    actor = A["Limited"]()
    assert actor.sleep(0.01) == 0.01
    with pytest.raises(TimeoutError):  # a CallTimeoutError is a TimeoutError and a RemoteError
        actor.sleep(30)
    assert A["Limited"]().sleep.options(timeout=5)(1) == 1  # options override the class's


def test_a_future_mode_call_past_its_timeout_fails_its_future(one_cpu: Cluster) -> None:
    actor = A["FutureSleeper"]()
    assert actor.sleep(0.01).get(timeout=30) == 0.01
    stuck = actor.sleep.options(timeout=0.5)(30)
    queued = actor.sleep(0)  # behind the stuck call
    with pytest.raises(parl.CallTimeoutError):
        stuck.result(timeout=10)  # failed by its deadline, without anyone waiting on it
    with pytest.raises(parl.ActorDiedError):
        queued.result(timeout=10)
    with pytest.raises(parl.FutureFunctionError, match="did not return within"):
        actor.sleep(0)
    wait_until(lambda: _cpu_used(one_cpu) == 0, 10, what="the stuck job's CPU to be free")


def test_timeouts_must_be_positive_seconds() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError, match="positive number of seconds"):
            parl.remote_class(call_timeout=bad)(object)


def test_deadlines_fire_once_due_and_forget_finished_calls() -> None:
    from parl_rs._deadlines import _Deadlines

    deadlines = _Deadlines()
    fired, skipped = threading.Event(), threading.Event()
    deadlines.add(0.05, lambda: False, fired.set)
    deadlines.add(0.05, lambda: True, skipped.set)  # done in time: never expired
    assert fired.wait(10)
    assert not skipped.wait(0.2)
    # A long timeout on many calls that finished costs nothing until its deadline.
    for _ in range(10_000):
        deadlines.add(3600, lambda: True, skipped.set)
    assert len(deadlines._heap) <= 256
