"""Stateless tasks: parl_rs's `@remote_function` against Ray tasks, Dask distributed and
IPython parallel's load-balanced view, each with 2 worker processes, on the same workloads.

    python benches/tasks.py [--quick] [--rounds N] [--out DIR]

Workloads:
* tiny: 20,000 tasks of `x + 1` through each system's map: tasks per second;
* skewed: 200 tasks sleeping exponential(20 ms) durations (one seeded list for all):
  makespan over the ideal (sum of durations / 2 slots);
* crash: a task whose first attempt kills its process, retried once: seconds to the result;
* queued (parl_rs only): 10,000 tasks queued behind 2 busy slots: the client's and the
  master's resident memory per queued task.

Each system runs in a process of its own (its imports and clusters never touch another's),
and the rounds interleave the systems, as the machine is noisy; the median round is reported.
Systems that are not installed are skipped with a note (none is a dependency). Figures go to
`benches/results/tasks-<date>.json` and `tasks-latest.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
SYSTEMS = ("parl_rs", "ray", "dask", "ipyparallel")
SLOTS = 2


def durations(n: int = 200, mean_s: float = 0.020) -> list[float]:
    rng = random.Random(2026)
    return [rng.expovariate(1 / mean_s) for _ in range(n)]


# --- the workloads, written once against a small per-system adapter ---------------------------


# The task functions import what they use: IPython parallel ships functions of `__main__`
# without their module's globals.
def sleep_for(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def plus_one(x: int) -> int:
    return x + 1


def crash_first(marker: str) -> int:
    import os

    if not os.path.exists(marker):
        with open(marker, "w") as flag:
            flag.write("crashed")
        os._exit(1)
    return os.getpid()


def measure(adapter: Any, quick: bool) -> dict:
    n_tiny = 2_000 if quick else 20_000
    adapter.map(plus_one, range(200))  # warm: leases, workers, imports
    started = time.perf_counter()
    results = adapter.map(plus_one, range(n_tiny))
    tiny_s = time.perf_counter() - started
    assert results[:3] == [1, 2, 3] and len(results) == n_tiny

    skew = durations(50 if quick else 200)
    started = time.perf_counter()
    adapter.map(sleep_for, skew)
    makespan = time.perf_counter() - started
    ideal = sum(skew) / SLOTS

    with tempfile.TemporaryDirectory() as scratch:
        marker = os.path.join(scratch, "marker")
        started = time.perf_counter()
        adapter.retried(crash_first, marker)
        crash_s = time.perf_counter() - started
    return {
        "tiny": {"n": n_tiny, "seconds": tiny_s, "tasks_per_s": n_tiny / tiny_s},
        "skewed": {
            "n": len(skew),
            "makespan_s": makespan,
            "ideal_s": ideal,
            "ratio": makespan / ideal,
        },
        "crash_retry_s": crash_s,
    } | {"skewed_ratio": makespan / ideal}


class ParlRs:
    def __init__(self) -> None:
        import parl_rs

        self.parl = parl_rs
        parl_rs.connect()  # an embedded cluster: one slot per CPU
        self.functions: dict[tuple, Any] = {}

    def remote(self, fn: Callable, **options: Any) -> Any:
        key = (fn, tuple(sorted(options.items())))
        if key not in self.functions:
            self.functions[key] = self.parl.remote_function(fn, **options)
        return self.functions[key]

    def map(self, fn: Callable, items: Any) -> list:
        return self.remote(fn).map(items, progress=False)

    def retried(self, fn: Callable, arg: Any) -> Any:
        return self.remote(fn, retries=1)(arg)

    def queued_memory(self, n: int) -> dict:
        """Resident memory per task queued behind busy slots. The embedded master runs in this
        process, so its share is in the figure; tasks queue in the client's dispatcher, and
        only lease requests (at most 8 at a time) reach the master."""
        blockers = [self.remote(sleep_for).submit(30) for _ in range(SLOTS)]
        time.sleep(1.0)
        before = _settled_rss()
        queued = [self.remote(plus_one).submit(i) for i in range(n)]
        time.sleep(0.5)
        after = _settled_rss()
        pending = self.parl.get_global_client().status()["pending_requests"]
        for future in [*queued, *blockers]:
            future.cancel()
        return {
            "n": n,
            "client_and_master_bytes_per_task": (after - before) / n,
            "lease_requests_at_the_master": pending,
        }

    def close(self) -> None:
        self.parl.disconnect()


def _settled_rss() -> int:
    """This process's resident memory in bytes, once garbage is collected and the allocator
    has given its free memory back (else what earlier phases freed hides what is added)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class Ray:
    def __init__(self) -> None:
        import ray

        self.ray = ray
        ray.init(num_cpus=SLOTS, include_dashboard=False, log_to_driver=False)

    def map(self, fn: Callable, items: Any) -> list:
        remote = self.ray.remote(fn)
        return self.ray.get([remote.remote(x) for x in items])

    def retried(self, fn: Callable, arg: Any) -> Any:
        return self.ray.get(self.ray.remote(max_retries=1)(fn).remote(arg))

    def close(self) -> None:
        self.ray.shutdown()


class Dask:
    def __init__(self) -> None:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=SLOTS, threads_per_worker=1, processes=True)
        self.client = Client(self.cluster)

    def map(self, fn: Callable, items: Any) -> list:
        return self.client.gather(self.client.map(fn, list(items), pure=False))

    def retried(self, fn: Callable, arg: Any) -> Any:
        return self.client.submit(fn, arg, retries=1, pure=False).result()

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class IPyParallel:
    def __init__(self) -> None:
        import ipyparallel

        self.cluster = ipyparallel.Cluster(n=SLOTS, log_level=40)
        self.client = self.cluster.start_and_connect_sync()
        self.view = self.client.load_balanced_view()

    def map(self, fn: Callable, items: Any) -> list:
        return list(self.view.map_sync(fn, list(items)))

    def retried(self, fn: Callable, arg: Any) -> Any:
        with self.view.temp_flags(retries=1):
            return self.view.apply_sync(fn, arg)

    def close(self) -> None:
        self.cluster.stop_cluster_sync()


ADAPTERS = {"parl_rs": ParlRs, "ray": Ray, "dask": Dask, "ipyparallel": IPyParallel}


def child(system: str, quick: bool, out: str) -> None:
    """One round of one system, in this (child) process; the figures to `out`."""
    adapter = ADAPTERS[system]()
    try:
        result = measure(adapter, quick)
        if system == "parl_rs":
            result["queued"] = adapter.queued_memory(1_000 if quick else 10_000)
    finally:
        adapter.close()
    Path(out).write_text(json.dumps(result))


def run_round(system: str, quick: bool, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    command = [sys.executable, __file__, "--child", system, "--json", out, *(["--quick"] * quick)]
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
        text = Path(out).read_text()
        return json.loads(text) if text else {"error": f"no output (exit {proc.returncode})"}
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and the clusters it started
            proc.wait()
        Path(out).unlink(missing_ok=True)


def median_round(rounds: list[dict]) -> dict:
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1]
    good.sort(key=lambda r: r["tiny"]["tasks_per_s"])
    chosen = dict(good[len(good) // 2])
    chosen["rounds"] = len(good)
    chosen["tiny_tasks_per_s_all"] = [r["tiny"]["tasks_per_s"] for r in good]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per system round")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=SYSTEMS)
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.quick, args.json)
        return
    systems = [s for s in args.systems if importlib.util.find_spec(s) is not None]
    note = "not installed: skipped (never a dependency)"
    skipped = {s: note for s in args.systems if s not in systems}
    rounds: dict[str, list[dict]] = {s: [] for s in systems}
    for n in range(1 if args.quick else args.rounds):
        for system in systems:  # interleaved: the noise of the machine hits every system
            print(f"round {n + 1}: {system}", flush=True)
            rounds[system].append(run_round(system, args.quick, args.timeout))
    results = {s: median_round(r) for s, r in rounds.items()}
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "quick": args.quick,
        "results": results,
        "skipped": skipped,
    }
    print_table(results, skipped)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"tasks-{stamp}.json", "tasks-latest.json"):
        (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'tasks-latest.json'}")


def print_table(results: dict, skipped: dict) -> None:
    print(f"\n{'system':<13}{'tiny tasks/s':>14}{'skewed / ideal':>16}{'crash retry s':>15}")
    for system, r in results.items():
        if "error" in r:
            print(f"{system:<13}  error: {r['error']}")
            continue
        tiny, skew = r["tiny"]["tasks_per_s"], r["skewed_ratio"]
        print(f"{system:<13}{tiny:>14,.0f}{skew:>16.3f}{r['crash_retry_s']:>15.3f}")
    for system, why in skipped.items():
        print(f"{system:<13}  {why}")
    queued = results.get("parl_rs", {}).get("queued")
    if queued:
        per_task = queued["client_and_master_bytes_per_task"]
        print(f"parl_rs, {queued['n']:,} tasks queued: {per_task:.0f} B each (client and master)")


if __name__ == "__main__":
    main()
