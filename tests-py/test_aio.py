"""`await` on futures of future-mode actors and of tasks, on a real cluster: values, remote
errors, `asyncio.gather` over 1,000 calls to 4 actors while the loop keeps ticking, cancelling
an awaiting task, on asyncio's own loop and on uvloop. And `await` on calls of plain
(blocking) actors made inside `async def`, while the same calls from a plain `def` still
return their values."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

import pytest

import parl_rs as parl
from conftest import Cluster

pytestmark = pytest.mark.timeout(120)


class _Counting:
    """The actors' code: `Counter` runs it in future mode, `Plain` blocking."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def slow_add(self, k: int) -> int:
        time.sleep(0.001)
        return self.add(k)

    def fail(self) -> None:
        raise KeyError("no such key")

    def pid(self) -> int:
        return os.getpid()

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@parl.remote_class(wait=False)
class Counter(_Counting):
    """Future mode: calls return FutureObjects."""


@parl.remote_class
class Plain(_Counting):
    """A default (blocking) actor: its calls return values, except inside `async def`."""


@parl.remote_function
def square(x: int) -> int:
    return x * x


@parl.remote_function
def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


class _Ticker:
    """The event loop's lag, measured from inside it: a coroutine that sleeps 2 ms at a time
    and records how late it wakes, from its creation until `stop()`."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._stopping = asyncio.Event()
        self._task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        while not self._stopping.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.002)
            self.lags.append(time.perf_counter() - before - 0.002)

    async def stop(self) -> list[float]:
        self._stopping.set()
        await self._task
        return self.lags


def _loops() -> list[Any]:
    loops: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        loops.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip("uvloop missing")))
    else:
        loops.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return loops


@pytest.fixture(params=_loops())
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Any], Any]]:
    """Runs a coroutine to its end on a new loop of the kind the test is parametrized with."""
    loop = request.param()
    try:
        yield lambda coroutine: loop.run_until_complete(asyncio.wait_for(coroutine, 60))
    finally:
        loop.close()


def test_await_gives_values_and_remote_errors(four_cpus: Cluster, run: Callable) -> None:
    async def main() -> None:
        counter = Counter()
        assert await counter.add(2) == 2
        assert await counter.add(3) == 5
        with pytest.raises(KeyError, match="no such key"):
            await counter.fail()
        assert await square.submit(7) == 49
        squares = await asyncio.gather(*(square.submit(x) for x in range(10)))
        assert squares == [x * x for x in range(10)]

    run(main())


def test_a_thousand_calls_in_flight_leave_the_loop_free(four_cpus: Cluster, run: Callable) -> None:
    """While 1,000 calls to 4 actors are in flight and awaited together, a ticker on the same
    loop keeps its pace: the loop never waits for a reply (a blocking wait would stall the
    ticker for as long as the calls take), and settles a burst of replies in small batches."""

    async def main() -> tuple[float, float, int]:
        counters = [Counter() for _ in range(4)]
        await asyncio.gather(*(counter.pid() for counter in counters))
        # Sent first (sending is the caller's own work), then awaited while the ticker runs.
        calls = [counters[i % 4].slow_add(1) for i in range(1000)]
        ticker = _Ticker()
        started = time.perf_counter()
        results = await asyncio.gather(*calls)
        elapsed = time.perf_counter() - started
        lags = await ticker.stop()
        assert sorted(results[i] for i in range(0, 1000, 4)) == list(range(1, 251))
        return elapsed, max(lags), len(lags)

    elapsed, worst_lag, ticks = run(main())
    lag_ms = worst_lag * 1000
    print(f"1,000 calls in {elapsed:.3f} s; the loop's worst lag {lag_ms:.1f} ms, {ticks} ticks")
    # Each actor runs 250 calls of 1 ms: the replies come over a quarter of a second (some
    # during the sending). Bounds relative to that, not absolute (the machine is shared):
    # blocked, the loop would tick once, lagging for all of it.
    assert elapsed > 0.1, elapsed
    assert ticks >= elapsed / 0.002 / 10, (ticks, elapsed)
    assert worst_lag < 0.25 * elapsed, (worst_lag, elapsed)


def test_cancelling_the_awaiting_task_cancels_a_task(four_cpus: Cluster, run: Callable) -> None:
    async def main() -> None:
        future = sleep_then.submit(30, 1)
        waiting = asyncio.ensure_future(future)
        await asyncio.sleep(0.5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert future.cancelled()
        # The cluster goes on: another task runs.
        assert await square.submit(3) == 9

    run(main())


def test_an_actor_call_cancelled_while_awaited_runs_on_and_is_dropped(
    four_cpus: Cluster, run: Callable
) -> None:
    async def main() -> None:
        counter = Counter()
        future = counter.add(1)
        waiting = asyncio.ensure_future(future)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # Already sent: it ran, and the next call sees its effect.
        assert await counter.add(1) == 2
        assert future.result() == 1

    run(main())


def test_await_on_a_plain_actors_call(four_cpus: Cluster, run: Callable) -> None:
    """Inside `async def` a plain actor's call is awaitable; from a plain `def` it still
    returns the value, on the same actor."""
    actor = Plain()

    def from_a_plain_function() -> Any:
        return actor.add(10)

    async def main() -> None:
        call = actor.add(2)
        assert isinstance(call, parl.FutureObject)
        assert await call == 2
        assert await actor.add(3) == 5
        assert await actor.add.options(timeout=30)(1) == 6
        assert await asyncio.gather(*(actor.add(1) for _ in range(3))) == [7, 8, 9]
        assert actor.n == 9  # attribute reads stay synchronous

        async def sums() -> AsyncIterator[int]:
            for k in (1, 2):
                yield await actor.add(k)

        assert [total async for total in sums()] == [10, 12]

    run(main())
    value = from_a_plain_function()
    assert value == 22 and not isinstance(value, parl.FutureObject)
    assert actor.add(1) == 23


def test_a_plain_function_called_inside_async_def_gets_the_value(
    four_cpus: Cluster, run: Callable
) -> None:
    """Only the frame that makes the call counts: a plain helper called by a coroutine blocks
    and returns the value, as it does elsewhere (the escape hatch for code that wants it)."""
    actor = Plain()

    def helper(k: int) -> Any:
        return actor.add(k)

    async def main() -> list[Any]:
        return [helper(1), await actor.add(2), (lambda: actor.add(3))()]

    assert run(main()) == [1, 3, 6]


def test_hundreds_of_plain_calls_gathered_leave_the_loop_free(
    four_cpus: Cluster, run: Callable
) -> None:
    """800 calls to 4 plain actors, made and gathered inside `async def` while a ticker runs
    on the same loop: the calls are sent without waiting (a blocking call would stall the
    ticker for as long as all the calls take), and the results come in order."""

    async def main() -> tuple[list[int], float, float, int]:
        actors = [Plain() for _ in range(4)]
        ticker = _Ticker()
        await asyncio.sleep(0)  # the ticker runs from here on
        started = time.perf_counter()
        results = await asyncio.gather(*[actors[i % 4].slow_add(1) for i in range(800)])
        elapsed = time.perf_counter() - started
        lags = await ticker.stop()
        return results, elapsed, max(lags), len(lags)

    results, elapsed, worst_lag, ticks = run(main())
    print(f"800 calls in {elapsed:.3f} s; the loop's worst lag {worst_lag * 1000:.1f} ms")
    assert results == [i // 4 + 1 for i in range(800)]
    # Each actor runs 200 calls of 1 ms: at least 0.2 s in all. Had the calls blocked, the
    # ticker would have lagged for all of it. The worst lag is the sending of the 800 calls,
    # one turn of the loop (a fifth of the time here): the bound leaves room for a busy machine.
    assert elapsed > 0.1, elapsed
    assert ticks >= elapsed / 0.002 / 10, (ticks, elapsed)
    assert worst_lag < 0.5 * elapsed, (worst_lag, elapsed)


def test_a_remote_error_through_await_is_the_blocking_calls_error(
    four_cpus: Cluster, run: Callable
) -> None:
    """The same error type and remote traceback as a blocking call, and the actor ends (PARL's
    contract): its next call raises `ActorDiedError`."""
    blocking, awaited = Plain(), Plain()
    with pytest.raises(KeyError) as blocking_error:
        blocking.fail()

    async def main() -> BaseException:
        failing = awaited.fail()  # sent; its error comes with the reply
        with pytest.raises(KeyError, match="no such key") as error:
            await failing
        with pytest.raises(parl.ActorDiedError, match="after an error in `fail`"):
            await awaited.add(1)  # raised at once, as for a blocking call
        return error.value

    error = run(main())
    assert type(error) is type(blocking_error.value)
    assert isinstance(error, parl.RemoteError)
    assert error.remote_traceback and 'raise KeyError("no such key")' in error.remote_traceback
    with pytest.raises(parl.ActorDiedError):
        awaited.add(1)


def test_an_awaited_plain_call_past_its_timeout(four_cpus: Cluster, run: Callable) -> None:
    actor = Plain()

    async def main() -> float:
        assert await actor.sleep.options(timeout=10)(0.01) == 0.01
        start = time.monotonic()
        with pytest.raises(parl.CallTimeoutError, match=r"did not return within .* 0\.5 s"):
            await actor.sleep.options(timeout=0.5)(30)
        took = time.monotonic() - start
        with pytest.raises(parl.ActorDiedError):
            await actor.sleep(0)
        return took

    assert run(main()) < 5
