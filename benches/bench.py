"""parl_rs benchmark (issue 6): one command, every figure next to its floor, measured in one run.

    pip install '.[bench]' && python benches/bench.py [--quick] [--out DIR]

It starts a cluster as users do (`xparl start` on a free port, in a private state directory:
the master, the worker and its jobs are processes of their own, this process is only a
client), two pyzmq server processes for the floors, and measures:

* small call round trip `add(i, 1)` on one actor: p50/p99 µs, calls/s; pyzmq REQ/REP + pickle;
* the same small call from the Rust client (`parl-client`), interleaved with the Python client's
  (`bench_native.py`; built with cargo, skipped without it);
* pipelined small calls on one `@remote_class(wait=False)` actor: issue all, then collect;
* 16 MiB and 256 MiB numpy array echo: ms per call, MiB/s; pyzmq zero-copy; memcpy;
* actor creation (construct + first call) on a warm pool, one actor at a time;
* fan-out: one actor per CPU slot, each call `time.sleep(0.001)`, all kept busy with futures;
* GIL check: a pure-Python counter thread's speed while another thread waits on a 1 s call;
* memory: RSS of a warm job, of an idle actor's job, of the master and the worker;
* PARL and Ray on the same calls when they are installed (never a dependency).

Small calls and the 16 MiB echo run interleaved with their floors (chunk by chunk), so a change
of load on a shared machine hits both alike: the goals are ratios. Results go to
`<out>/bench-<date>.json`, `<out>/latest.json` and `<out>/latest.png` (default out:
benches/results). Every process started here is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

# The helpers sit next to this script (its directory is first on sys.path when it is run).
import bench_native
import bench_report
from bench_actors import Adder, Echo, Sleeper
from bench_cluster import Cluster, rss_kib
from bench_floors import FloorServer, memcpy
from bench_suite import MIB, creation, echo, pipelined, small_calls, summary

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Counts:
    """How much of everything; `--quick` is a smoke test, its figures are not meaningful."""

    small_calls: int = 20_000
    small_rounds: int = 20  # chunks alternating with the floor's
    small_warmup: int = 1_000
    pipelined_calls: int = 2_000  # per round, and as many synchronous ones beside them
    pipelined_rounds: int = 10
    echo_16_reps: int = 20
    echo_256_reps: int = 3
    creations: int = 200
    fanout_calls_per_actor: int = 2_500
    gil_call_s: float = 1.0
    gil_rounds: int = 3

    @staticmethod
    def quick() -> Counts:
        return Counts(
            small_calls=2_000,
            small_rounds=4,
            small_warmup=200,
            pipelined_calls=1_000,
            pipelined_rounds=2,
            echo_16_reps=3,
            echo_256_reps=1,
            creations=20,
            fanout_calls_per_actor=200,
            gil_rounds=1,
        )


GOALS = {
    # name: (figure, comparison, bound, what)
    "small_call_p50_vs_pyzmq": ("ratio", "<=", 1.5, "small-call p50 / pyzmq REQ/REP p50"),
    "echo_16mib_vs_pyzmq_zerocopy": (
        "ratio",
        "<=",
        1.3,
        "16 MiB echo / pyzmq zero-copy echo (median ms)",
    ),
    "pipelined_vs_sync": ("ratio", ">=", 5.0, "pipelined calls/s / sync calls/s"),
    "creation_p50_ms": ("ms", "<=", 20.0, "actor creation p50 (construct + first call)"),
}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    parser.add_argument("--out", default=str(HERE / "results"), help="where results go")
    parser.add_argument(
        "--others-timeout",
        type=float,
        default=900.0,
        help="seconds allowed to PARL's and Ray's runs each (when installed)",
    )
    args = parser.parse_args(argv)
    counts = Counts.quick() if args.quick else Counts()
    # SIGTERM unwinds like Ctrl-C, so the cluster and the floor servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = datetime.datetime.now()
    results: dict[str, Any] = {"meta": _meta(started, counts, args.quick)}
    samples: dict[str, Any] = {}
    bench_report.print_header(results["meta"])
    results["parl_rs"], results["floors"] = _run_parl_rs_and_floors(counts, samples)
    results["others"] = {
        name: _run_other(name, args.quick, args.others_timeout) for name in ("parl", "ray")
    }
    results["goals"] = _goals(results)
    results["meta"]["duration_s"] = (datetime.datetime.now() - started).total_seconds()
    results["meta"]["loadavg_at_end"] = list(os.getloadavg())

    bench_report.print_results(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False)
    dated = out / f"bench-{started:%Y%m%d-%H%M%S}.json"
    for path in (dated, out / "latest.json"):
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)
    png = out / "latest.png"
    bench_report.plot(results, samples, png)
    print(f"\nwrote {dated}, {out / 'latest.json'} and {png}")
    return 0


def _meta(started: datetime.datetime, counts: Counts, quick: bool) -> dict:
    import zmq

    import parl_rs

    return {
        "date": started.isoformat(timespec="seconds"),
        "quick": quick,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "parl_rs": parl_rs.__version__,
        "numpy": np.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "git_commit": _git_commit(),
        "cluster": "xparl start (master, worker and jobs in their own processes); "
        "this process is a client",
        "fanout_work": "time.sleep(0.001) per call",
        "counts": asdict(counts),
    }


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# --- parl_rs and the floors ------------------------------------------------------------------


def _run_parl_rs_and_floors(counts: Counts, samples: dict) -> tuple[dict, dict]:
    import parl_rs

    ours: dict[str, Any] = {}
    floors: dict[str, Any] = {}
    cluster: Optional[Cluster] = None
    servers: list[FloorServer] = []
    _step("building the Rust client's side (cargo build --release)")
    native_binary = bench_native.build()
    try:
        _step("starting the cluster (xparl start) and the pyzmq floor servers")
        cluster = Cluster(cpu_num=os.cpu_count() or 1)
        small, zerocopy = FloorServer("small"), None
        servers.append(small)
        zerocopy = FloorServer("zerocopy")
        servers.append(zerocopy)
        parl_rs.connect(cluster.address)
        ours["cluster_warm_s"] = cluster.wait_warm()
        ours["memory"] = _memory_warm(cluster)

        _step(f"small calls: {counts.small_calls:,} add(i, 1), interleaved with pyzmq")
        adder = parl_rs.remote_class(Adder)()
        measured = small_calls(
            {
                "parl_rs": lambda i: adder.add(i, 1),
                "pyzmq": lambda i: small.call("add", i, 1),
            },
            counts.small_calls,
            counts.small_rounds,
            counts.small_warmup,
        )
        samples["small_parl_rs"] = measured["parl_rs"].pop("samples_s")
        samples["small_pyzmq"] = measured["pyzmq"].pop("samples_s")
        ours["small_call"] = measured["parl_rs"]
        floors["pyzmq_small_call"] = measured["pyzmq"]
        # The actor has answered 20,000 calls and now idles: its job's memory.
        ours["memory"]["idle_actor_job_rss_kib"] = rss_kib(adder._xparl_handle.pid)
        if native_binary is not None:
            n = counts.small_calls // 4
            _step(f"small calls from the Rust client: {n:,}, interleaved with as many from Python")
            ours["native_client"] = bench_native.compare(
                native_binary, cluster, lambda i: adder.add(i, 1), n, counts.small_rounds
            )

        n, rounds = counts.pipelined_calls, counts.pipelined_rounds
        _step(f"pipelined: {rounds} x {n:,} calls on a wait=False actor, and as many sync ones")
        future_adder = parl_rs.remote_class(wait=False)(Adder)()
        future_adder.add(0, 1).result()
        ours["pipelined"] = pipelined(
            lambda i: adder.add(i, 1),
            lambda i: future_adder.add(i, 1),
            lambda futures: [future.result() for future in futures],
            counts.pipelined_calls,
            counts.pipelined_rounds,
        )
        adder.destroy()
        future_adder.destroy()

        echoer = parl_rs.remote_class(Echo)()
        for size_mib, reps in ((16, counts.echo_16_reps), (256, counts.echo_256_reps)):
            _step(f"echo of a {size_mib} MiB array, {reps} times, with pyzmq and memcpy")
            array = np.arange(size_mib * MIB // 8, dtype=np.float64)
            destination = np.ones_like(array)  # touched: memcpy pays no page faults
            measured = echo(
                {
                    "parl_rs": lambda a: echoer.echo(a),
                    "pyzmq_zerocopy": lambda a: zerocopy.call("echo", a),
                    "memcpy": memcpy(destination),
                },
                array,
                reps,
                check=lambda sent, got: got.shape == sent.shape and np.array_equal(sent, got),
            )
            ours[f"echo_{size_mib}mib"] = measured["parl_rs"]
            floors[f"pyzmq_zerocopy_echo_{size_mib}mib"] = measured["pyzmq_zerocopy"]
            floors[f"memcpy_{size_mib}mib"] = measured["memcpy"]
            del array, destination
            gc.collect()
        echoer.destroy()

        _step(f"creation: {counts.creations} actors, one at a time, each on a warm pool")
        ours["creation"] = _creation(cluster, counts.creations)
        samples["creation"] = ours["creation"].pop("samples_s")

        slots = cluster.status().get("cpu_total", 1)
        _step(f"fan-out: {slots} actors x {counts.fanout_calls_per_actor:,} calls of 1 ms")
        ours["fanout"] = _fanout(slots, counts.fanout_calls_per_actor)

        _step("GIL check: a counter thread while another thread waits on a 1 s call")
        ours["gil"] = _gil_check(counts.gil_call_s, counts.gil_rounds)

        ours["memory"]["master_rss_kib_end"] = rss_kib(cluster.master_pid)
        ours["memory"]["worker_rss_kib_end"] = rss_kib(cluster.worker_pid)

        parl_rs.disconnect()
        ours["encrypted"] = _encrypted(counts, small, zerocopy)
    finally:
        parl_rs.disconnect()
        for server in servers:
            server.close()
        if cluster is not None:
            killed = cluster.stop()
            if killed:
                print(f"  note: had to SIGKILL {killed} after `xparl stop`")
    return ours, floors


def _encrypted(counts: Counts, small: FloorServer, zerocopy: FloorServer) -> dict:
    """Small calls and the 16 MiB echo on a second cluster, started with `--encrypt`,
    interleaved with the same pyzmq floors (which encrypt nothing)."""
    import parl_rs

    _step("xparl start --encrypt: small calls and the 16 MiB echo, interleaved with pyzmq")
    cluster = Cluster(1, "--encrypt")
    result: dict[str, Any] = {}
    try:
        parl_rs.connect(cluster.address)
        cluster.wait_warm()
        adder = parl_rs.remote_class(Adder)()
        measured = small_calls(
            {"parl_rs": lambda i: adder.add(i, 1), "pyzmq": lambda i: small.call("add", i, 1)},
            counts.small_calls // 2,
            counts.small_rounds,
            counts.small_warmup,
        )
        result["small_call"] = measured["parl_rs"]
        result["pyzmq_small_call"] = measured["pyzmq"]
        for figures in measured.values():
            figures.pop("samples_s", None)
        adder.destroy()  # its one CPU goes to the echo actor
        echoer = parl_rs.remote_class(Echo)()
        array = np.arange(16 * MIB // 8, dtype=np.float64)
        measured = echo(
            {
                "parl_rs": lambda a: echoer.echo(a),
                "pyzmq_zerocopy": lambda a: zerocopy.call("echo", a),
            },
            array,
            counts.echo_16_reps,
            check=lambda sent, got: got.shape == sent.shape and np.array_equal(sent, got),
        )
        result["echo_16mib"] = measured["parl_rs"]
        result["pyzmq_zerocopy_echo_16mib"] = measured["pyzmq_zerocopy"]
        result["small_call_p50_vs_pyzmq"] = (
            result["small_call"]["latency_us"]["p50"]
            / result["pyzmq_small_call"]["latency_us"]["p50"]
        )
        result["echo_16mib_vs_pyzmq_zerocopy"] = (
            result["echo_16mib"]["ms"]["p50"] / result["pyzmq_zerocopy_echo_16mib"]["ms"]["p50"]
        )
    finally:
        parl_rs.disconnect()
        cluster.stop()
    return result


def _step(what: str) -> None:
    print(f"  .. {what}", flush=True)


def _memory_warm(cluster: Cluster) -> dict:
    jobs = cluster.jobs()
    job_rss = [rss for rss in map(rss_kib, jobs) if rss is not None]
    return {
        "warm_job_rss_kib": statistics.median(job_rss) if job_rss else None,
        "warm_jobs": len(job_rss),
        "master_rss_kib_idle": rss_kib(cluster.master_pid),
        "worker_rss_kib_idle": rss_kib(cluster.worker_pid),
        "master_rss_per_1000_actors": None,
        "master_rss_per_1000_actors_note": (
            "not measured here: 1,000 live actors need 1,000 job processes (a Python "
            "interpreter each) on this machine; the Rust scale harness "
            "(benches/scale_harness.rs) reports it with simulated workers "
            "(rss_mib_per_1000_actors)"
        ),
    }


def _creation(cluster: Cluster, n: int) -> dict:
    import parl_rs

    remote_adder = parl_rs.remote_class(Adder)
    master_before = rss_kib(cluster.master_pid)

    def create_and_call() -> tuple[Any, float]:
        t0 = time.perf_counter()
        actor = remote_adder()
        constructed = time.perf_counter() - t0
        if actor.add(1, 1) != 2:
            raise AssertionError("a new actor's add(1, 1) is not 2")
        return actor, constructed

    waits: list[float] = []
    result = creation(
        create_and_call,
        lambda actor: actor.destroy(),
        n,
        before_each=lambda: waits.append(cluster.wait_warm()),
    )
    cluster.wait_warm()
    result["pool_refill_ms"] = summary(waits[1:], 1e3)  # how long a slot took to be warm again
    result["master_rss_kib_before"] = master_before
    result["master_rss_kib_after"] = rss_kib(cluster.master_pid)
    return result


def _fanout(slots: int, per_actor: int) -> dict:
    import parl_rs

    remote_sleeper = parl_rs.remote_class(wait=False)(Sleeper)
    actors = [remote_sleeper() for _ in range(slots)]
    pids = [actor.pid() for actor in actors]
    assert len({future.result() for future in pids}) == slots, "two actors share a job"
    local = []
    for _ in range(200):  # what time.sleep(0.001) really takes here: the ideal per call
        t0 = time.perf_counter()
        time.sleep(0.001)
        local.append(time.perf_counter() - t0)
    per_call_s = statistics.median(local)
    total = slots * per_actor
    t0 = time.perf_counter()
    futures = [actors[k % slots].sleep(0.001) for k in range(total)]
    for future in futures:
        future.result()
    elapsed = time.perf_counter() - t0
    for actor in actors:
        actor.destroy()
    ideal = slots / per_call_s
    return {
        "actors": slots,
        "calls": total,
        "work": "time.sleep(0.001)",
        "calls_per_s": total / elapsed,
        "ideal_calls_per_s": ideal,
        "efficiency": (total / elapsed) / ideal,
        "local_sleep_1ms_median_ms": per_call_s * 1e3,
    }


def _counter_rate(wait: Callable[[], Any]) -> float:
    """Increments per second of a pure-Python counter thread while `wait` runs in another."""
    stop = [False]
    count = [0]

    def counter() -> None:
        n = 0
        while not stop[0]:
            n += 1
        count[0] = n

    counting = threading.Thread(target=counter)
    waiting = threading.Thread(target=wait)
    t0 = time.perf_counter()
    counting.start()
    waiting.start()
    waiting.join()
    stop[0] = True
    counting.join()
    return count[0] / (time.perf_counter() - t0)


def _gil_check(seconds: float, rounds: int) -> dict:
    """The counter's speed while another thread sleeps (idle), waits on a blocking call of
    `seconds`, or waits on a future's `result()`; windows interleaved over `rounds`, and the
    medians compared (the machine is shared: its load moves between windows)."""
    import parl_rs

    sleeper = parl_rs.remote_class(Sleeper)()
    future_sleeper = parl_rs.remote_class(wait=False)(Sleeper)()
    sleeper.pid()
    future_sleeper.pid().result()
    idle, during_call, during_future = [], [], []
    for _ in range(rounds):
        idle.append(_counter_rate(lambda: time.sleep(seconds)))
        during_call.append(_counter_rate(lambda: sleeper.sleep(seconds)))
        during_future.append(_counter_rate(lambda: future_sleeper.sleep(seconds).result()))
    idle.append(_counter_rate(lambda: time.sleep(seconds)))
    sleeper.destroy()
    future_sleeper.destroy()
    idle_rate = statistics.median(idle)
    call_rate, future_rate = statistics.median(during_call), statistics.median(during_future)
    return {
        "call_s": seconds,
        "rounds": rounds,
        "counter_per_s_idle": idle_rate,
        "counter_per_s_during_call": call_rate,
        "counter_per_s_during_future_wait": future_rate,
        "ratio_call": call_rate / idle_rate,
        "ratio_future": future_rate / idle_rate,
        "windows_per_s": {"idle": idle, "call": during_call, "future": during_future},
    }


# --- PARL and Ray ----------------------------------------------------------------------------


def _run_other(name: str, quick: bool, timeout: float) -> dict:
    """PARL or Ray on the same calls, in a process of its own (their imports, threads and
    clusters never touch this one); skipped with a note when the package is not installed."""
    if importlib.util.find_spec(name) is None:
        note = f"{name} is not installed: skipped (it is never a dependency of the benchmark)"
        print(f"  .. {note}")
        return {"skipped": note}
    _step(f"{name}: the same calls, in a separate process")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    command = [sys.executable, str(HERE / "bench_others.py"), name, "--json", out_path]
    proc = subprocess.Popen([*command, *(["--quick"] if quick else [])], start_new_session=True)
    try:
        proc.wait(timeout=timeout)
        text = Path(out_path).read_text()
        result = json.loads(text) if text else {"error": f"no output (exit {proc.returncode})"}
    except subprocess.TimeoutExpired:
        result = {"error": f"did not finish within {timeout:.0f} s"}
    except (OSError, ValueError) as exc:
        result = {"error": f"unreadable output: {exc}"}
    finally:
        if proc.poll() is None:
            # Its process group: the child and what it started (a PARL cluster, Ray's nodes).
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        Path(out_path).unlink(missing_ok=True)
    if "error" in result:
        print(f"  note: {name} failed: {result['error']}")
    return result


# --- goals -----------------------------------------------------------------------------------


def _goals(results: dict) -> dict:
    ours, floors = results["parl_rs"], results["floors"]
    values = {
        "small_call_p50_vs_pyzmq": ours["small_call"]["latency_us"]["p50"]
        / floors["pyzmq_small_call"]["latency_us"]["p50"],
        "echo_16mib_vs_pyzmq_zerocopy": ours["echo_16mib"]["ms"]["p50"]
        / floors["pyzmq_zerocopy_echo_16mib"]["ms"]["p50"],
        "pipelined_vs_sync": ours["pipelined"]["speedup"],
        "creation_p50_ms": ours["creation"]["first_result_ms"]["p50"],
    }
    goals = {}
    for name, (unit, op, bound, what) in GOALS.items():
        value = values[name]
        passed = value <= bound if op == "<=" else value >= bound
        goals[name] = {
            "what": what,
            "value": value,
            "unit": unit,
            "goal": f"{op} {bound:g}",
            "pass": passed,
        }
    return goals


if __name__ == "__main__":
    sys.exit(main())
