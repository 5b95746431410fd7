"""Measurement loops shared by every framework the benchmark runs (parl_rs, the floors, PARL,
Ray): each takes plain callables, so all of them are timed by the same code.

Times come from `time.perf_counter_ns`; latencies are kept in seconds and summarised in the
unit of the figure (µs for small calls, ms for arrays and creation).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Optional, Sequence

MIB = 1 << 20


def summary(samples_s: Sequence[float], scale: float) -> dict:
    """p50/p90/p99/mean/min/max of `samples_s` (seconds) multiplied by `scale` (1e6: µs)."""
    ordered = sorted(samples_s)
    if not ordered:
        return {"n": 0}

    def pct(q: float) -> float:
        # Nearest rank: the smallest value with at least q of the samples at or below it.
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[index] * scale

    return {
        "n": len(ordered),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "mean": statistics.fmean(ordered) * scale,
        "min": ordered[0] * scale,
        "max": ordered[-1] * scale,
    }


def time_each(call: Callable[[int], Any], n: int, start: int = 0) -> tuple[list[float], float]:
    """Run `call(i)` for `n` values of i, timing each; returns (per-call seconds, wall seconds).

    `call(i)` must return `i + 1` (the small call is `add(i, 1)`): every result is checked.
    """
    samples = [0.0] * n
    clock = time.perf_counter_ns
    began = clock()
    for k in range(n):
        i = start + k
        t0 = clock()
        result = call(i)
        samples[k] = (clock() - t0) * 1e-9
        if result != i + 1:
            raise AssertionError(f"add({i}, 1) returned {result!r}")
    return samples, (clock() - began) * 1e-9


def small_calls(
    calls: dict[str, Callable[[int], Any]], n: int, rounds: int, warmup: int
) -> dict[str, dict]:
    """Round trips of `add(i, 1)` for each named callable, interleaved in `rounds` chunks so a
    change of machine load affects all of them alike. Returns, per name, the latency summary
    in µs, calls/s (calls over the time spent in them) and the raw samples (seconds)."""
    for call in calls.values():
        time_each(call, warmup)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    wall = dict.fromkeys(calls, 0.0)
    per_round = max(1, n // rounds)
    for r in range(rounds):
        for name, call in calls.items():
            chunk, elapsed = time_each(call, per_round, start=r * per_round)
            samples[name] += chunk
            wall[name] += elapsed
    return {
        name: {
            "latency_us": summary(samples[name], 1e6),
            "calls_per_s": len(samples[name]) / wall[name],
            "samples_s": samples[name],
        }
        for name in calls
    }


def pipelined(
    sync_call: Callable[[int], Any],
    submit: Callable[[int], Any],
    collect: Callable[[list], list],
    n: int,
    rounds: int,
) -> dict:
    """Pipelined against synchronous calls, side by side in each of `rounds` rounds: `n`
    synchronous `sync_call(i)`, then `n` calls `submit(i)` issued without waiting (each returns
    a future) and then collected (`collect(futures)` returns the results in order). The
    figures are medians over the rounds; `speedup` is the median of each round's pipelined /
    synchronous calls/s, so both sides of a ratio saw the same machine load."""
    runs = []
    for _ in range(rounds):
        _, sync_s = time_each(sync_call, n)
        t0 = time.perf_counter()
        futures = [submit(i) for i in range(n)]
        t1 = time.perf_counter()
        results = collect(futures)
        t2 = time.perf_counter()
        bad = next((i for i, r in enumerate(results) if r != i + 1), None)
        if bad is not None or len(results) != n:
            raise AssertionError(f"pipelined add({bad}, 1) returned {results[bad]!r}")
        del futures, results
        runs.append(
            {
                "calls_per_s": n / (t2 - t0),
                "issue_s": t1 - t0,
                "sync_calls_per_s": n / sync_s,
                "speedup": (n / (t2 - t0)) / (n / sync_s),
            }
        )
    return {
        "n": n,
        "rounds": rounds,
        **{key: statistics.median(run[key] for run in runs) for key in runs[0]},
        "runs": runs,
    }


def echo(
    echoes: dict[str, Callable[[Any], Any]],
    array: Any,
    reps: int,
    warmup: int = 1,
    check: Optional[Callable[[Any, Any], bool]] = None,
) -> dict[str, dict]:
    """Time `echo(array)` for each named callable, interleaved rep by rep. Per name: ms per
    call (summary), and MiB/s = array size / median time (each echo moves it there and back)."""
    size_mib = array.nbytes / MIB
    for name, fn in echoes.items():
        for _ in range(warmup):
            result = fn(array)
            if check is not None and not check(array, result):
                raise AssertionError(f"{name}: the echo of a {size_mib:.0f} MiB array differs")
            del result
    samples: dict[str, list[float]] = {name: [] for name in echoes}
    for _ in range(reps):
        for name, fn in echoes.items():
            t0 = time.perf_counter()
            result = fn(array)
            samples[name].append(time.perf_counter() - t0)
            del result
    out = {}
    for name in echoes:
        ms = summary(samples[name], 1e3)
        out[name] = {"size_mib": size_mib, "ms": ms, "mib_per_s": size_mib / (ms["p50"] / 1e3)}
    return out


def creation(
    create_and_call: Callable[[], tuple[Any, float]],
    destroy: Callable[[Any], None],
    n: int,
    before_each: Callable[[], None] = lambda: None,
) -> dict:
    """Time-to-first-result of `n` actors, one at a time: `create_and_call()` constructs an actor
    and makes its first call, returning (actor, seconds the constructor alone took);
    `before_each` (untimed) waits until the pool is warm again. Returns summaries in ms and the
    raw samples."""
    first_result, constructed = [], []
    for _ in range(n):
        before_each()
        t0 = time.perf_counter()
        actor, construct_s = create_and_call()
        first_result.append(time.perf_counter() - t0)
        constructed.append(construct_s)
        destroy(actor)
        del actor
    return {
        "n": n,
        "first_result_ms": summary(first_result, 1e3),
        "construct_ms": summary(constructed, 1e3),
        "samples_s": first_result,
    }
