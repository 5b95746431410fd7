"""Large buffers cross without needless copies, and never at the cost of correctness: what
a caller or an actor changes after a call never leaks into what was sent, and what arrives
is a writable array, as PARL gave."""

from __future__ import annotations

import pytest

import parl_rs as parl
from conftest import Cluster
from parl_rs import _core
from parl_rs._core import CallKind

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.timeout(120)

MB = 1 << 20


def _holder_class(wait: bool = True, mb: int = 8):
    """An actor holding `mb` MiB of weights (defined here: classes of a test module travel by
    value only when local to a function)."""

    class Holder:
        def __init__(self):
            self.weights = np.zeros(mb * MB // 8)

        def echo(self, array):
            assert array.flags.writeable
            array += 0  # writable in the job too
            return array

        def get(self):
            return self.weights

        def bump(self):
            self.weights += 1  # in place: the memory a lent reply would still be reading
            return float(self.weights[0])

    return parl.remote_class(wait=wait)(Holder)


def test_large_arrays_arrive_whole_and_writable_both_ways(connected: Cluster) -> None:
    holder = _holder_class()()
    for size in (64 * 1024 - 1, 64 * 1024, 8 * MB + 3):
        array = np.random.default_rng(size).integers(0, 255, size, dtype=np.uint8)
        back = holder.echo(array)
        assert back.flags.writeable and np.array_equal(back, array)


def test_an_actor_changing_what_it_returned_does_not_change_the_reply(connected: Cluster) -> None:
    holder = _holder_class(wait=False, mb=32)()
    for _ in range(5):
        # Pipelined: `bump` changes the weights in place as soon as `get` has replied, while
        # the reply may still be on its way out of the job.
        got, bumped = holder.get(), holder.bump()
        value = got.get()
        assert np.all(value == value[0]), "the reply was read while the actor changed it"
        assert bumped.get() == value[0] + 1


def test_futures_are_immune_to_changes_made_after_the_call(connected: Cluster) -> None:
    holder = _holder_class(wait=False, mb=1)()
    for round_ in range(3):
        array = np.full(32 * MB // 8, float(round_))
        echoed = holder.echo(array)
        array += 100.0  # the caller goes on at once: the call must have taken its own copy
        assert np.all(echoed.get() == float(round_))


def test_received_frames_are_the_received_memory_and_writable(connected: Cluster) -> None:
    holder = _holder_class()()
    handle = holder._xparl_handle
    pending = handle.submit(CallKind.GetAttr, "weights", [], lend=False)
    frames, failure = pending.wait(30)
    assert failure is None
    large = [frame for frame in frames if len(frame) >= 64 * 1024]
    assert large and all(isinstance(frame, _core.Frame) for frame in large)
    # The transport read the frame into memory of its own: writable, so unpickling needs no
    # copy to give writable arrays.
    view = memoryview(large[0])
    assert not view.readonly and view.nbytes == len(large[0])
    # Waiting again gives the same frames (the payload is handed over once).
    again, _ = pending.wait(30)
    assert [id(frame) for frame in again] == [id(frame) for frame in frames]


def test_changing_a_received_array_changes_nothing_else(connected: Cluster) -> None:
    holder = _holder_class(mb=2)()
    first, second = holder.get(), holder.get()
    assert first.flags.writeable and second.flags.writeable
    first += 1.0
    assert np.all(second == 0.0) and np.all(holder.get() == 0.0)
    array = np.arange(MB // 8, dtype=np.float64)
    echoed = holder.echo(array)
    echoed[:] = -1.0
    assert np.array_equal(array, np.arange(MB // 8, dtype=np.float64))
    assert not np.shares_memory(echoed, array)


def test_an_idle_actor_does_not_keep_its_last_result_alive(connected: Cluster) -> None:
    @parl.remote_class
    class Maker:
        def __init__(self):
            self.made = []

        def make(self, n):
            import weakref

            array = np.ones(n)
            self.made.append(weakref.ref(array))
            return array

        def still_alive(self):
            return [ref() is not None for ref in self.made]

    maker = Maker()
    assert maker.make(1 << 20).nbytes == 8 << 20  # sent as its own frame, without a copy
    # Once replied, the job holds nothing of the result (it counted in its max_memory).
    assert maker.still_alive() == [False]
