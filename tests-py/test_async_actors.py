"""Async actors on a real cluster: `async def` methods run on an event loop in the actor's job,
several at once with `@remote_class(max_concurrency=N)`, with a sync actor's semantics for
errors (an uncaught exception ends the actor, as in PARL)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import parl_rs as parl
from conftest import Cluster
from parl_rs.exceptions import ActorDiedError

pytestmark = pytest.mark.timeout(120)


class Gauge:
    """Counts the calls running at once, and the most at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.queue: asyncio.Queue[int] | None = None

    def _enter(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def _leave(self) -> None:
        with self.lock:
            self.running -= 1

    async def hold(self, seconds: float) -> int:
        self._enter()
        await asyncio.sleep(seconds)
        self._leave()
        return self.peak

    def hold_sync(self, seconds: float) -> int:
        self._enter()
        time.sleep(seconds)
        self._leave()
        return self.peak

    def most_at_once(self) -> int:
        return self.peak

    async def put(self, value: int) -> None:
        # asyncio objects made by one call stay usable by the next: one loop for the actor.
        if self.queue is None:
            self.queue = asyncio.Queue()
        await self.queue.put(value)

    async def take(self) -> int:
        assert self.queue is not None
        return await self.queue.get()

    async def fail(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("async failure")


Serial = parl.remote_class(Gauge)
Concurrent = parl.remote_class(max_concurrency=3, wait=False)(Gauge)


def test_async_methods_return_values_and_keep_their_loop(connected: Cluster) -> None:
    gauge = Serial()
    assert gauge.hold(0.01) == 1
    gauge.put(5)
    assert gauge.take() == 5


def test_an_exception_in_an_async_method_ends_the_actor_as_in_parl(connected: Cluster) -> None:
    gauge = Serial()
    with pytest.raises(ValueError, match="async failure"):
        gauge.fail()
    with pytest.raises(ActorDiedError):
        gauge.most_at_once()


def test_max_concurrency_bounds_how_many_calls_run_at_once(connected: Cluster) -> None:
    gauge = Concurrent()
    held = [gauge.hold(0.3) for _ in range(7)]
    assert max(future.result(timeout=30) for future in held) == 3
    assert gauge.most_at_once().result(timeout=30) == 3
    # Plain methods run on threads, as many at once.
    synced = [gauge.hold_sync(0.3) for _ in range(6)]
    assert max(future.result(timeout=30) for future in synced) == 3


def test_one_at_a_time_by_default(connected: Cluster) -> None:
    gauge = parl.remote_class(wait=False)(Gauge)()
    held = [gauge.hold(0.05) for _ in range(4)]
    assert [future.result(timeout=30) for future in held] == [1, 1, 1, 1]


def test_max_concurrency_is_checked_where_the_class_is_decorated() -> None:
    for bad in [0, -1, 2.5, True, 5000]:
        with pytest.raises(ValueError, match="max_concurrency"):
            parl.remote_class(max_concurrency=bad)(Gauge)
