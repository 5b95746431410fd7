"""Future mode (`@remote_class(wait=False)`) on a real 2-CPU cluster started with `xparl start`.

The actor classes are defined inside a function, so they are shipped to the jobs by value.
Remote sleeps are workloads that keep a call pending, never a way to wait for something.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from types import SimpleNamespace

import pytest

import parl_rs as parl
from conftest import Cluster, cluster_status, wait_until
from parl_rs.future import FIRST_COMPLETED

pytestmark = pytest.mark.timeout(120)


def _define_actors() -> SimpleNamespace:
    @parl.remote_class(wait=False)
    class Counter:
        def __init__(self, start: int = 0) -> None:
            self.value = start

        def incr(self) -> int:
            self.value += 1
            return self.value

        def sleep(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        def fail(self, message: str) -> None:
            raise ValueError(message)

        def exit(self) -> None:
            sys.exit(0)

    @parl.remote_class(wait=False)
    class BrokenInit:
        def __init__(self) -> None:
            raise ValueError("bad init")

        def incr(self) -> int:
            return 1

    @parl.remote_class(wait=False)
    class OwnDestroy:
        def destroy(self) -> str:
            return "the class's own destroy"

    @parl.remote_class
    class Blocking:
        def incr(self) -> int:
            return 1

    return SimpleNamespace(
        Counter=Counter, BrokenInit=BrokenInit, OwnDestroy=OwnDestroy, Blocking=Blocking
    )


ACTORS = _define_actors()


def cpu_used(cluster: Cluster) -> int:
    return cluster_status(cluster.address)["cpu_used"]


def wait_for_free_slots(cluster: Cluster, used: int = 0) -> None:
    wait_until(lambda: cpu_used(cluster) == used, 10, what=f"{used} CPUs in use")


def test_calls_on_two_actors_overlap(connected: Cluster) -> None:
    actors = [ACTORS.Counter(), ACTORS.Counter()]
    assert [actor.incr().get(timeout=30) for actor in actors] == [1, 1]  # both have their jobs
    start = time.monotonic()
    futures = [actor.sleep(1.0) for actor in actors]
    assert time.monotonic() - start < 0.5  # issuing does not wait for the calls
    assert [future.get(timeout=30) for future in futures] == [1.0, 1.0]
    assert time.monotonic() - start < 1.8


def test_calls_on_one_actor_pipeline_and_run_in_order(connected: Cluster) -> None:
    actor = ACTORS.Counter()
    start = time.monotonic()
    busy = actor.sleep(2.0)  # every later call queues behind this one
    futures = [actor.incr() for _ in range(1000)]
    issued = time.monotonic() - start
    completed: list[concurrent.futures.Future] = []
    for future in futures:
        future.add_done_callback(completed.append)
    assert [future.result(timeout=60) for future in futures] == list(range(1, 1001))
    assert issued < 1.0, f"issuing 1000 calls took {issued:.2f} s: it waited for them"
    assert busy.done() and time.monotonic() - start >= 2.0
    wait_until(lambda: len(completed) == 1000, 10, what="every done-callback")
    assert completed == futures  # completed, and called back, in the order issued


def test_future_object_follows_parl(connected: Cluster) -> None:
    actor = ACTORS.Counter()
    pending = actor.sleep(2.0)
    assert isinstance(pending, parl.FutureObject)
    assert isinstance(pending, concurrent.futures.Future)
    assert pending.empty()
    with pytest.raises(parl.FutureObjectEmpty, match="The result is currently unavailable."):
        pending.get_nowait()
    with pytest.raises(parl.FutureObjectEmpty):
        pending.get(block=False)
    with pytest.raises(parl.FutureObjectEmpty):
        pending.get(timeout=0.1)
    with pytest.raises(AssertionError, match="timeout"):
        pending.get(timeout=0)
    assert not pending.cancel()  # a call already sent cannot be taken back
    assert pending.get(timeout=30) == 2.0
    assert not pending.empty()
    with pytest.raises(parl.FutureGetRepeatedlyError):
        pending.get()
    with pytest.raises(parl.FutureGetRepeatedlyError):
        pending.get_nowait()
    assert pending.result() == 2.0  # `result` may be read again

    ready = actor.incr()
    assert ready.result(timeout=30) == 1
    assert ready.get_nowait() == 1


def test_of_threads_getting_one_future_at_once_exactly_one_gets_the_value(
    connected: Cluster,
) -> None:
    actor = ACTORS.Counter()
    pending = actor.sleep(0.5)
    start = threading.Barrier(4)
    outcomes: list[object] = []

    def get() -> None:
        start.wait()
        try:
            outcomes.append(pending.get(timeout=30))
        except parl.FutureGetRepeatedlyError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=get) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes.count(0.5) == 1
    assert sum(isinstance(o, parl.FutureGetRepeatedlyError) for o in outcomes) == 3


def test_a_remote_exception_fails_its_future_and_ends_the_actor(
    connected: Cluster,
) -> None:
    actor = ACTORS.Counter()
    assert actor.incr().get(timeout=30) == 1
    failed = actor.fail("boom")
    with pytest.raises(parl.FutureFunctionError) as caught:
        failed.get(timeout=30)
    error = caught.value
    assert "`fail`" in str(error) and "ValueError: boom" in str(error)
    assert "raise ValueError(message)" in str(error)  # the remote traceback
    assert isinstance(error, parl.RemoteError) and error.remote_type == "builtins.ValueError"
    cause = error.__cause__
    assert isinstance(cause, parl.RemoteError) and isinstance(cause, ValueError)
    assert failed.exception() is cause
    with pytest.raises(ValueError, match="boom"):
        failed.result()
    # As in PARL, the exception ended the actor: later requests raise at once.
    with pytest.raises(parl.FutureFunctionError, match="after an error in `fail`"):
        actor.incr()
    with pytest.raises(parl.FutureFunctionError, match="after an error in `fail`"):
        actor.value  # noqa: B018
    wait_for_free_slots(connected)


def test_a_failed_init_fails_every_call_and_frees_the_slot(connected: Cluster) -> None:
    start = time.monotonic()
    broken = ACTORS.BrokenInit()
    assert time.monotonic() - start < 0.5
    # As in PARL, the first use waits for __init__, and raises at the call when it failed.
    with pytest.raises(parl.FutureFunctionError, match="bad init") as caught:
        broken.incr()
    assert "__init__" in str(caught.value)
    assert isinstance(caught.value.__cause__, parl.ActorDiedError)
    with pytest.raises(parl.FutureFunctionError, match="bad init"):
        broken.incr()
    with pytest.raises(parl.FutureFunctionError, match="bad init"):
        broken.value  # noqa: B018 - an attribute read raises at once
    wait_for_free_slots(connected)  # released although the proxy is still referenced


def test_attribute_reads_see_earlier_calls_and_writes_are_ordered(connected: Cluster) -> None:
    actor = ACTORS.Counter(start=5)
    calls = [actor.incr() for _ in range(3)]
    assert actor.value == 8  # a read waits for the calls issued before it
    assert all(call.done() for call in calls)
    actor.value = 100  # does not wait...
    after = actor.incr()  # ...but runs before the calls issued after it
    assert after.get(timeout=30) == 101
    actor.value = 7
    assert actor.value == 7
    assert not hasattr(actor, "missing")
    assert "incr" in dir(actor)


def test_destroy_frees_the_slot_at_once(connected: Cluster) -> None:
    for cycle in range(10):  # more cycles than the cluster has CPUs
        actor = ACTORS.Counter(start=cycle)
        assert actor.incr().get(timeout=30) == cycle + 1
        actor.destroy()
        wait_for_free_slots(connected)
    busy = ACTORS.Counter()
    in_flight = busy.sleep(30.0)
    busy.destroy()
    with pytest.raises(parl.FutureFunctionError, match="released") as caught:
        in_flight.get(timeout=10)
    assert isinstance(caught.value.__cause__, parl.ActorDiedError)
    with pytest.raises(parl.FutureFunctionError, match="released"):
        busy.incr().get(timeout=10)
    wait_for_free_slots(connected)


def test_dropping_the_proxy_frees_the_slot(connected: Cluster) -> None:
    actor = ACTORS.Counter()
    assert actor.incr().get(timeout=30) == 1
    assert cpu_used(connected) == 1
    del actor
    wait_for_free_slots(connected)
    # A call in flight keeps its actor until it completes; then the actor is released.
    assert ACTORS.Counter(start=41).incr().get(timeout=30) == 42
    wait_for_free_slots(connected)


def test_construction_returns_at_once_when_no_cpu_is_free(connected: Cluster) -> None:
    held = [ACTORS.Counter(), ACTORS.Counter()]
    assert [actor.incr().get(timeout=30) for actor in held] == [1, 1]
    start = time.monotonic()
    waiting = ACTORS.Counter(start=10)
    assert time.monotonic() - start < 0.5
    assert "no job yet" in repr(waiting)
    # The first use waits for __init__ (as in PARL), so for a slot: free one meanwhile.
    threading.Timer(0.5, held[0].destroy).start()
    calls = [waiting.incr() for _ in range(3)]
    assert time.monotonic() - start >= 0.5
    assert [call.get(timeout=30) for call in calls] == [11, 12, 13]


def test_wait_as_completed_and_done_callbacks(connected: Cluster) -> None:
    slow_actor, fast_actor = ACTORS.Counter(), ACTORS.Counter()
    assert [a.incr().get(timeout=30) for a in (slow_actor, fast_actor)] == [1, 1]
    slow = slow_actor.sleep(3.0)
    fast = fast_actor.incr()
    done, not_done = parl.wait([slow, fast], timeout=30, return_when=FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    assert parl.wait([slow], timeout=0.1).not_done == {slow}
    assert list(parl.as_completed([slow, fast], timeout=30)) == [fast, slow]
    assert parl.wait([slow, fast], timeout=30).not_done == set()

    called = threading.Event()
    seen: list = []

    def record(future: concurrent.futures.Future) -> None:
        seen.append(future.result())
        called.set()

    later = fast_actor.incr()
    later.add_done_callback(record)
    assert called.wait(30) and seen == [3]
    later.add_done_callback(lambda future: seen.append("at once"))  # already done: runs now
    assert seen == [3, "at once"]


def test_a_dead_actor_fails_the_call_in_flight_and_later_calls(connected: Cluster) -> None:
    actor = ACTORS.Counter()
    assert actor.incr().get(timeout=30) == 1
    with pytest.raises(parl.FutureFunctionError) as caught:
        actor.exit().get(timeout=30)
    assert isinstance(caught.value.__cause__, parl.ActorDiedError)
    with pytest.raises(parl.FutureFunctionError, match="exit") as later:
        actor.incr()  # raises at the call, as in PARL
    assert isinstance(later.value.__cause__, parl.ActorDiedError)
    wait_for_free_slots(connected)


def test_destroy_on_default_actors_and_a_class_with_its_own_destroy(connected: Cluster) -> None:
    blocking = ACTORS.Blocking()
    assert blocking.incr() == 1
    blocking.destroy()
    with pytest.raises(parl.ActorDiedError):
        blocking.incr()
    own = ACTORS.OwnDestroy()
    assert own.destroy().get(timeout=30) == "the class's own destroy"
    del own
    wait_for_free_slots(connected)


def test_a_new_actor_can_be_used_in_a_done_callback(connected: Cluster) -> None:
    # Done-callbacks run on the completion thread, which also completes `__init__`: the first
    # use of a new actor there must not wait for that thread.
    first = ACTORS.Counter()
    assert first.incr().get(timeout=30) == 1
    called: list[concurrent.futures.Future] = []
    done = threading.Event()

    def use_a_new_actor(_future: concurrent.futures.Future) -> None:
        called.append(ACTORS.Counter(start=5).incr())
        done.set()

    first.incr().add_done_callback(use_a_new_actor)
    assert done.wait(30), "the callback is stuck"
    assert called[0].result(timeout=30) == 6
