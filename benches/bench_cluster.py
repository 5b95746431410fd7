"""A parl_rs cluster for the benchmark, as users run one: `xparl start` on a free port, in a
private state directory, so the master and the worker are processes of their own and the
benchmark's process is only a client. Everything started is stopped by pid at the end.

Also: reading a process's memory from /proc, and the children of a process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional


def free_port() -> int:
    """A port free a moment ago whose port + 100 (the master's HTTP port) is free too."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 100 < 65536 and _port_free(port + 100):
            return port
    raise RuntimeError("no free port pair found")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def xparl(state_dir: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`xparl ARGS` with its state in `state_dir`. `python -m parl_rs.cli` is the `xparl` script
    of this interpreter's parl_rs."""
    return subprocess.run(
        [sys.executable, "-m", "parl_rs.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, XPARL_STATE_DIR=state_dir),
    )


def rss_kib(pid: int) -> Optional[int]:
    """VmRSS of `pid` in KiB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from every thread's /proc children list)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found += [int(child) for child in text.split()]
    return sorted(set(found))


def alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Cluster:
    """`xparl start --port P --cpu_num N` in a private XPARL_STATE_DIR; `stop()` undoes it.

    The state directory is also set in this process's environment while the cluster runs, so
    `parl_rs.connect(address)` finds the cluster's key file as it would for a user.
    """

    def __init__(self, cpu_num: int, *flags: str) -> None:
        """`flags`: more `xparl start` flags (e.g. `--encrypt`)."""
        self.cpu_num = cpu_num
        self.state_dir = tempfile.mkdtemp(prefix="parl-rs-bench-")
        self._saved_state_env = os.environ.get("XPARL_STATE_DIR")
        os.environ["XPARL_STATE_DIR"] = self.state_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.master_pid: Optional[int] = None
        self.worker_pid: Optional[int] = None
        self.job_pids: set[int] = set()
        try:
            out = self._xparl("start", "--port", str(self.port), "--cpu_num", str(cpu_num), *flags)
            if out.returncode != 0:
                raise RuntimeError(f"xparl start failed:\n{out.stdout}{out.stderr}")
            record_path = Path(self.state_dir, "clusters", f"{self.port}.json")
            pids = json.loads(record_path.read_text())["pids"]
            self.master_pid, self.worker_pid = pids["master"], pids["worker"]
        except BaseException:
            self.stop()
            raise

    def _xparl(self, *args: str) -> subprocess.CompletedProcess:
        return xparl(self.state_dir, *args)

    def key(self) -> Optional[str]:
        from parl_rs.keys import find_key

        return find_key(self.address)

    def status(self) -> dict:
        from parl_rs import _core

        return _core.cluster_status(self.address, key=self.key())

    def jobs(self) -> list[int]:
        """The worker's job processes now (remembered, to check they are gone at the end)."""
        pids = children(self.worker_pid) if self.worker_pid else []
        self.job_pids.update(pids)
        return pids

    def wait_warm(self, timeout: float = 60.0) -> float:
        """Wait until no slot is used and every slot has a warm job; returns seconds waited."""
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while True:
            status = self.status()
            workers = status.get("workers", [])
            if (
                workers
                and status.get("cpu_used", 0) == 0
                and all(w["jobs_ready"] >= w["cpu_total"] for w in workers)
            ):
                self.jobs()
                return time.perf_counter() - t0
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the pool did not become warm within {timeout} s: {status}")
            time.sleep(0.005)

    def stop(self) -> list[int]:
        """`xparl stop --port P`, then make sure the master, the worker and every job seen are
        gone (SIGKILL by pid, only for processes that are still parl_rs's). Returns the pids
        that had to be killed."""
        if self.worker_pid:
            self.jobs()
        if self.master_pid or self.worker_pid:
            with contextlib.suppress(Exception):
                self._xparl("stop", "--port", str(self.port))
        killed = []
        ours = [p for p in (self.worker_pid, self.master_pid) if p] + sorted(self.job_pids)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in ours) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in ours:
            if alive(pid) and b"parl_rs" in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        if self._saved_state_env is None:
            os.environ.pop("XPARL_STATE_DIR", None)
        else:
            os.environ["XPARL_STATE_DIR"] = self._saved_state_env
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.master_pid = self.worker_pid = None
        return killed
