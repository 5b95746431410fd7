"""Shared helpers: free ports, waiting with a deadline, a real cluster per test, driver scripts.

Every process a test starts is stopped by pid, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True if the process runs (a zombie, which holds no resources, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def kill_if_ours(pid: int, marker: bytes) -> None:
    """SIGKILL `pid` only if its command line shows it is the process we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if marker in cmdline and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cluster_status(address: str, timeout: float = 5.0) -> dict:
    """The master's status, asked with the key this machine has for it (as `xparl status`)."""
    from parl_rs import _core
    from parl_rs.keys import find_key

    return _core.cluster_status(address, timeout=timeout, key=find_key(address))


def xparl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the `xparl` command (as `python -m parl_rs.cli`) with this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "parl_rs.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private xparl state directory, seen by every subprocess the test starts."""
    path = tmp_path / "xparl-state"
    monkeypatch.setenv("XPARL_STATE_DIR", str(path))
    return path


@dataclass
class Cluster:
    port: int
    address: str
    state_dir: Path
    pids: list[int]


@contextlib.contextmanager
def running_cluster(
    state_dir: Path, cpu_num: int = 2, *extra: str, host: str = "127.0.0.1"
) -> Iterator[Cluster]:
    """`xparl start` a cluster on a free port of `host`; `xparl stop` it (and the workers
    recorded for its port) and check its nodes are gone.

    `extra` are more `xparl start` flags.
    """
    port = free_port()
    started = xparl("start", "--port", str(port), "--cpu_num", str(cpu_num), "--host", host, *extra)
    assert started.returncode == 0, f"xparl start failed:\n{started.stdout}\n{started.stderr}"
    record = json.loads((state_dir / "clusters" / f"{port}.json").read_text())
    pids = [pid for pid in record["pids"].values() if pid]
    try:
        yield Cluster(port, record["address"], state_dir, pids)
    finally:
        stopped = xparl("stop", "--port", str(port))
        try:
            wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10, what="nodes to exit")
        finally:
            for pid in pids:  # never leak a node, even when `xparl stop` is what is broken
                kill_if_ours(pid, b"parl_rs._node")
        assert stopped.returncode == 0, f"xparl stop failed:\n{stopped.stdout}\n{stopped.stderr}"


@pytest.fixture
def cluster(state_dir: Path) -> Iterator[Cluster]:
    """A fresh 2-CPU cluster for one test."""
    with running_cluster(state_dir, cpu_num=2) as running:
        yield running


@pytest.fixture
def connected(cluster: Cluster) -> Iterator[Cluster]:
    """This test process connected to `cluster` (creation waits up to 30 s for a slot)."""
    import parl_rs as parl

    parl.connect(cluster.address, create_timeout=30)
    try:
        yield cluster
    finally:
        parl.disconnect()


@contextlib.contextmanager
def connected_cluster(state_dir: Path, cpu_num: int, *extra: str) -> Iterator[Cluster]:
    """`running_cluster` with this test process connected to it (creation waits up to 30 s)."""
    import parl_rs as parl

    with running_cluster(state_dir, cpu_num, *extra) as cluster:
        parl.connect(cluster.address, create_timeout=30)
        try:
            yield cluster
        finally:
            parl.disconnect()


@pytest.fixture
def one_cpu(state_dir: Path) -> Iterator[Cluster]:
    """A 1-CPU cluster this test process is connected to."""
    with connected_cluster(state_dir, 1) as cluster:
        yield cluster


@pytest.fixture
def four_cpus(state_dir: Path) -> Iterator[Cluster]:
    """A 4-CPU cluster this test process is connected to."""
    with connected_cluster(state_dir, 4) as cluster:
        yield cluster


def run_script(
    tmp_path: Path,
    source: str,
    *args: str,
    files: Optional[dict[str, str]] = None,
    timeout: float = 90.0,
) -> subprocess.CompletedProcess:
    """Run `source` as the script `driver.py` in a separate Python process.

    `files` maps file names to sources written next to the driver (helper modules the actors
    use are shipped to the jobs from there, as for a user's program). Returns the completed
    process (stdout, stderr, returncode); a hung driver is killed after `timeout` seconds.
    """
    directory = tmp_path / "driver"
    directory.mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (directory / name).write_text(textwrap.dedent(text))
    script = directory / "driver.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class StatusRecorder:
    """Samples a master's status every 20 ms in a thread (`with StatusRecorder(address)`), to
    catch counts that are wrong even briefly."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()  # the answer tells the state at this moment or later
            with contextlib.suppress(Exception):  # a slow answer is just a missing sample
                self.samples.append((asked, cluster_status(self.address, timeout=2.0)))
            self._stop.wait(0.02)

    def __enter__(self) -> StatusRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def since(self, moment: float) -> list[dict]:
        """The statuses asked for at `moment` or later, in order."""
        return [status for at, status in list(self.samples) if at >= moment]


def describe(result: subprocess.CompletedProcess) -> str:
    """The output of a finished process, for assertion messages."""
    return (
        f"exit status {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
