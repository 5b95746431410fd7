"""The Rust client (`parl-client`) against the Python client: small-call round trips
`add(i, 1)`, each client on an actor of its own on the same cluster, interleaved chunk by chunk
in one run, so a change of machine load hits both alike.

    python benches/bench_native.py [--calls 20000] [--rounds 20] [--out benches/results]

`bench.py` runs the same comparison as one of its steps. The Rust side is
`benches/native_client_bench.rs`, built here with `cargo build --release` (skipped, saying so,
without cargo). Results go to `<out>/native-client.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from bench_actors import Adder
from bench_cluster import Cluster
from bench_suite import summary, time_each

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BINARY = ROOT / "target" / "release" / "examples" / "native_client_bench"


def build() -> Optional[Path]:
    """The Rust side, built in release mode; None (with the reason printed) if it cannot be."""
    command = ["cargo", "build", "--release", "-q", "-p", "parl-client"]
    command += ["--example", "native_client_bench"]
    try:
        subprocess.run(command, cwd=ROOT, check=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"  skipped the Rust client: cannot build it ({exc})")
        return None
    return BINARY


class NativeClient:
    """The Rust client process: one actor, `chunk(start, n)` calls timed on its side."""

    def __init__(self, binary: Path, address: str, key: Optional[str]) -> None:
        env = dict(os.environ)
        if key:
            env["XPARL_CLUSTER_KEY"] = key
        self._process = subprocess.Popen(
            [str(binary), address, str(HERE / "bench_actors.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self._line()
        if ready != "ready":
            raise RuntimeError(f"the Rust client did not start: {ready!r}")

    def chunk(self, start: int, n: int) -> list[float]:
        """`n` calls `add(i, 1)` from `start`: their latencies in seconds."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{start} {n}\n")
        self._process.stdin.flush()
        return [int(ns) * 1e-9 for ns in self._line().split()]

    def _line(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait(timeout=10)
            raise RuntimeError(f"the Rust client exited with status {code}")
        return line.strip()

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def compare(
    binary: Path,
    cluster: Cluster,
    python_call: Callable[[int], Any],
    n: int,
    rounds: int,
    warmup: int = 500,
) -> dict:
    """Small-call latency of the Rust client and of `python_call`, interleaved in `rounds`."""
    native = NativeClient(binary, cluster.address, cluster.key())
    try:
        native.chunk(0, warmup)
        time_each(python_call, warmup)
        samples: dict[str, list[float]] = {"python": [], "rust": []}
        per_round = max(1, n // rounds)
        for r in range(rounds):
            samples["python"] += time_each(python_call, per_round, start=r * per_round)[0]
            samples["rust"] += native.chunk(r * per_round, per_round)
    finally:
        native.close()
    result = {name: {"latency_us": summary(values, 1e6)} for name, values in samples.items()}
    python_p50 = result["python"]["latency_us"]["p50"]
    result["rust_p50_vs_python"] = result["rust"]["latency_us"]["p50"] / python_p50
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per client")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved chunks")
    parser.add_argument("--out", default=str(HERE / "results"), help="where results go")
    args = parser.parse_args(argv)
    binary = build()
    if binary is None:
        return 1
    import parl_rs

    cluster = Cluster(cpu_num=2)
    try:
        parl_rs.connect(cluster.address)
        cluster.wait_warm()
        adder = parl_rs.remote_class(Adder)()
        result = compare(binary, cluster, lambda i: adder.add(i, 1), args.calls, args.rounds)
        adder.destroy()
    finally:
        parl_rs.disconnect()
        cluster.stop()
    result["meta"] = {
        "calls_per_client": args.calls,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg": list(os.getloadavg()),
    }
    for name in ("python", "rust"):
        latency = result[name]["latency_us"]
        print(f"{name:>6} client: p50 {latency['p50']:.1f} µs, p99 {latency['p99']:.1f} µs")
    print(f"Rust p50 / Python p50: {result['rust_p50_vs_python']:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "native-client.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
