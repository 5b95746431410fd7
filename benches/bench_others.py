"""PARL and Ray on the benchmark's calls, when they are installed (never a dependency).

    python bench_others.py {parl,ray} --json OUT [--quick]

`bench.py` runs this in a process of its own, in a new session, so neither framework's imports,
threads or environment (PARL's `XPARL=True`) reach the parl_rs measurements, and so their
processes can be stopped as one group. It writes the same figures as parl_rs's (small call,
pipelined, 16 and 256 MiB echo, creation) to OUT as JSON, or {"error": ...}.

* PARL: a cluster from PARL's own `xparl start` (run as `python -m parl.remote.scripts`, since
  the `xparl` on PATH may be parl_rs's) on a free port and this machine's CPUs; its processes
  are stopped through this process group. Before each creation it sleeps 0.5 s so the worker
  can refill its pool of jobs (PARL has no cheap way to ask).
* Ray: `ray.init` with this machine's CPUs; `ray.shutdown` stops what it started. Before each
  creation it sleeps 0.2 s, for the same reason.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench_actors import Adder, Echo
from bench_suite import MIB, creation, echo, pipelined, small_calls

HERE = Path(__file__).resolve().parent


def _counts(quick: bool) -> dict:
    from bench import Counts

    counts = Counts.quick() if quick else Counts()
    return counts.__dict__


def _measure(
    sync_call: Callable[[int], Any],
    submit: Callable[[int], Any],
    collect: Callable[[list], list],
    echo_call: Callable[[Any], Any],
    create_and_call: Callable[[], tuple[Any, float]],
    destroy: Callable[[Any], None],
    settle: Callable[[], None],
    counts: dict,
) -> dict:
    """The figures parl_rs reports, for one framework, by the same loops."""
    out: dict[str, Any] = {}
    measured = small_calls(
        {"x": sync_call}, counts["small_calls"], counts["small_rounds"], counts["small_warmup"]
    )["x"]
    measured.pop("samples_s")
    out["small_call"] = measured
    submit(0)  # warm the future path
    out["pipelined"] = pipelined(
        sync_call, submit, collect, counts["pipelined_calls"], counts["pipelined_rounds"]
    )
    for size_mib, reps in ((16, counts["echo_16_reps"]), (256, counts["echo_256_reps"])):
        array = np.arange(size_mib * MIB // 8, dtype=np.float64)
        out[f"echo_{size_mib}mib"] = echo(
            {"x": echo_call},
            array,
            reps,
            check=lambda sent, got: np.array_equal(sent, got),
        )["x"]
        del array
        gc.collect()
    created = creation(create_and_call, destroy, counts["creations"], before_each=settle)
    created.pop("samples_s")
    out["creation"] = created
    return out


def run_ray(counts: dict) -> dict:
    import ray

    try:
        import bench_actors

        ray.cloudpickle.register_pickle_by_value(bench_actors)  # the workers need no import path
    except Exception:
        pass
    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}},
    )
    try:
        remote_adder = ray.remote(num_cpus=1)(Adder)
        remote_echo = ray.remote(num_cpus=1)(Echo)
        adder = remote_adder.remote()
        echoer = remote_echo.remote()
        ray.get([adder.add.remote(0, 1), echoer.echo.remote(0)])

        def create_and_call() -> tuple[Any, float]:
            t0 = time.perf_counter()
            actor = remote_adder.remote()
            constructed = time.perf_counter() - t0  # Ray's constructor never waits
            assert ray.get(actor.add.remote(1, 1)) == 2
            return actor, constructed

        def destroy(actor: Any) -> None:
            ray.kill(actor)

        figures = _measure(
            lambda i: ray.get(adder.add.remote(i, 1)),
            lambda i: adder.add.remote(i, 1),
            ray.get,
            lambda a: ray.get(echoer.echo.remote(a)),
            create_and_call,
            destroy,
            lambda: time.sleep(0.2),
            counts,
        )
    finally:
        ray.shutdown()
    return {"version": importlib.metadata.version("ray"), **figures}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float, launcher: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if launcher.poll():  # PARL's `xparl start` exits 0 once it has started everything
            raise RuntimeError(f"PARL's xparl start failed (exit status {launcher.returncode})")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"PARL's master did not listen on port {port} within {timeout:.0f} s")


def run_parl(counts: dict) -> dict:
    port = _free_port()
    cpus = os.cpu_count() or 1
    launcher = subprocess.Popen(
        [sys.executable, "-m", "parl.remote.scripts", "start"]
        + ["--port", str(port), "--cpu_num", str(cpus)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, 60, launcher)
        time.sleep(3)  # PARL's worker registers after its master listens
        import parl

        parl.connect(f"127.0.0.1:{port}")
        remote_adder = parl.remote_class(Adder)
        future_adder = parl.remote_class(wait=False)(Adder)()
        adder = remote_adder()
        echoer = parl.remote_class(Echo)()

        def create_and_call() -> tuple[Any, float]:
            t0 = time.perf_counter()
            actor = remote_adder()
            constructed = time.perf_counter() - t0
            assert actor.add(1, 1) == 2
            return actor, constructed

        def destroy(actor: Any) -> None:
            del actor
            gc.collect()

        figures = _measure(
            lambda i: adder.add(i, 1),
            lambda i: future_adder.add(i, 1),
            lambda futures: [future.get() for future in futures],
            lambda a: echoer.echo(a),
            create_and_call,
            destroy,
            lambda: time.sleep(0.5),
            counts,
        )
    finally:
        # Everything PARL's `xparl start` started is in this process group (bench.py made it).
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait()
    return {"version": importlib.metadata.version("parl"), **figures}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=("parl", "ray"))
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        run = run_parl if args.framework == "parl" else run_ray
        result = run(_counts(args.quick))
    except BaseException as exc:  # reported by bench.py, never fatal to it
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(args.json).write_text(json.dumps(result))
    if args.framework == "parl" and os.getpgid(0) == os.getpid():
        # PARL's master, worker, monitor and jobs: this process group, which bench.py started
        # for this process alone (start_new_session); never the group of a shell that ran it.
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgid(0), signal.SIGTERM)
        time.sleep(1)
        os.killpg(os.getpgid(0), signal.SIGKILL)


if __name__ == "__main__":
    main()
