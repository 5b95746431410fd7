"""Heartbeats: a silent worker is dropped after the configured timeout, and rejoins by itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest

import parl_rs as parl
from conftest import cluster_status, running_cluster, wait_until


def _cpu_total(address: str) -> int:
    return cluster_status(address, timeout=2.0)["cpu_total"]


@pytest.mark.timeout(90)
def test_a_frozen_worker_is_dropped_after_the_timeout_and_rejoins(state_dir):
    flags = ("--heartbeat_interval", "0.2", "--heartbeat-timeout", "1")
    with running_cluster(state_dir, 1, *flags) as cluster:
        record = json.loads((state_dir / "clusters" / f"{cluster.port}.json").read_text())
        worker = record["pids"]["worker"]
        wait_until(lambda: _cpu_total(cluster.address) == 1, 10, what="the worker to register")
        os.kill(worker, signal.SIGSTOP)  # alive but silent: only heartbeats can tell
        try:
            frozen_at = time.monotonic()
            wait_until(lambda: _cpu_total(cluster.address) == 0, 10, what="the drop")
            noticed = time.monotonic() - frozen_at
            print(f"a silent worker was dropped after {noticed:.2f} s (timeout 1 s)")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGCONT)
        # Resumed, it finds that the master forgot it and registers again on its own.
        wait_until(lambda: _cpu_total(cluster.address) == 1, 15, what="the worker to rejoin")

        @parl.remote_class
        class Probe:
            def ping(self):
                return "pong"

        parl.connect(cluster.address, create_timeout=30)
        try:
            assert Probe().ping() == "pong"
        finally:
            parl.disconnect()
