"""Smoke test of the benchmark (`benches/bench.py --quick`): it runs to the end, cleans up,
and writes every figure. Never a timing assertion: speed is the benchmark's business."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench.py"

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("numpy", "matplotlib")),
    reason="the benchmark needs numpy and matplotlib: pip install '.[bench]'",
)

LATENCY = ("n", "p50", "p90", "p99", "mean", "min", "max")
ECHO = ("size_mib", "mib_per_s")

# Every figure of the JSON: (path, keys that must be there and hold numbers).
FIGURES = {
    ("parl_rs", "small_call"): ("calls_per_s",),
    ("parl_rs", "small_call", "latency_us"): LATENCY,
    ("floors", "pyzmq_small_call"): ("calls_per_s",),
    ("floors", "pyzmq_small_call", "latency_us"): LATENCY,
    ("parl_rs", "pipelined"): ("n", "calls_per_s", "issue_s", "sync_calls_per_s", "speedup"),
    **{
        (group, f"{name}_{size}mib", *sub): keys
        for group, name in (
            ("parl_rs", "echo"),
            ("floors", "pyzmq_zerocopy_echo"),
            ("floors", "memcpy"),
        )
        for size in (16, 256)
        for sub, keys in (((), ECHO), (("ms",), LATENCY))
    },
    ("parl_rs", "creation"): ("n",),
    ("parl_rs", "creation", "first_result_ms"): LATENCY,
    ("parl_rs", "creation", "construct_ms"): LATENCY,
    ("parl_rs", "fanout"): ("actors", "calls", "calls_per_s", "ideal_calls_per_s", "efficiency"),
    ("parl_rs", "gil"): (
        "counter_per_s_idle",
        "counter_per_s_during_call",
        "counter_per_s_during_future_wait",
        "ratio_call",
        "ratio_future",
    ),
    ("parl_rs", "encrypted"): ("small_call_p50_vs_pyzmq", "echo_16mib_vs_pyzmq_zerocopy"),
    ("parl_rs", "encrypted", "small_call", "latency_us"): LATENCY,
    ("parl_rs", "encrypted", "echo_16mib", "ms"): LATENCY,
    ("parl_rs", "memory"): (
        "warm_job_rss_kib",
        "idle_actor_job_rss_kib",
        "master_rss_kib_idle",
        "worker_rss_kib_idle",
        "master_rss_kib_end",
        "worker_rss_kib_end",
    ),
}
GOALS = (
    "small_call_p50_vs_pyzmq",
    "echo_16mib_vs_pyzmq_zerocopy",
    "pipelined_vs_sync",
    "creation_p50_ms",
)


def _at(data: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        assert key in data, f"{'.'.join(path)}: no {key!r} in the results"
        data = data[key]
    return data


def _run_bench(out: Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run the quick benchmark. If it overruns `timeout`, stop it with SIGTERM, which it
    handles by stopping the clusters it started (a SIGKILL would leave them running)."""
    command = [sys.executable, str(BENCH), "--quick", "--out", str(out)]
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    ) as bench:
        try:
            stdout, stderr = bench.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            bench.terminate()
            stdout, stderr = bench.communicate(timeout=20)
            pytest.fail(f"the benchmark overran {timeout} s:\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(command, bench.returncode, stdout, stderr)


def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = _run_bench(out, tmp_path, timeout=90)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for line in ("Small call round trip", "Goals", "PASS" if "PASS" in result.stdout else "MISS"):
        assert line in result.stdout

    latest = json.loads((out / "latest.json").read_text())
    dated = list(out.glob("bench-*.json"))
    assert len(dated) == 1 and json.loads(dated[0].read_text()) == latest
    assert (out / "latest.png").read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob("*.tmp")), "temporary files were left behind"

    assert latest["meta"]["quick"] is True
    for path, keys in FIGURES.items():
        figures = _at(latest, path)
        for key in keys:
            value = figures.get(key)
            assert isinstance(value, (int, float)), f"{'.'.join(path)}.{key} = {value!r}"
    for name in GOALS:
        goal = latest["goals"][name]
        assert isinstance(goal["value"], float) and isinstance(goal["pass"], bool), goal
    for name in ("parl", "ray"):
        other = latest["others"][name]
        # Installed: figures (or the error that stopped them); absent: a note saying so.
        assert other.get("skipped") or other.get("error") or "small_call" in other, other
