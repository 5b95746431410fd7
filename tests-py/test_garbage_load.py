"""Under fire: 10,000 garbage frames and random TCP byte streams at every port of a running
cluster (master, master HTTP, worker log server, job) while a client keeps calling an actor.
No call fails, no process exits, and the master's memory stays flat."""

from __future__ import annotations

import json
import random
import socket
import threading
from pathlib import Path

import pytest

import parl_rs as parl
from conftest import Cluster, pid_alive
from test_garbage import ZMTP_GREETING

zmq = pytest.importorskip("zmq")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _garbage_frames(address: str, count: int, rng: random.Random) -> None:
    """`count` well-formed ZeroMQ messages with garbage frames, from a few DEALER sockets."""
    context = zmq.Context.instance()
    sockets = []
    for _ in range(4):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(f"tcp://{address}")
        sockets.append(sock)
    for i in range(count):
        head = rng.randbytes(rng.randrange(0, 64))
        if i % 3 == 0:
            head = b"XPRL\x01\x00" + head  # right magic and version, garbage body
        sockets[i % 4].send_multipart([head, rng.randbytes(rng.randrange(0, 32))])
    for sock in sockets:
        sock.close(linger=500)


def _random_streams(address: str, count: int, rng: random.Random) -> None:
    host, port = address.rsplit(":", 1)
    for i in range(count):
        try:
            with socket.create_connection((host, int(port)), timeout=2) as sock:
                data = rng.randbytes(rng.randrange(1, 2048))
                sock.sendall(ZMTP_GREETING + data if i % 2 else data)
        except OSError:
            pass  # a port that closed this connection on us is doing its job


@pytest.mark.timeout(240)
def test_garbage_at_every_port_while_calls_go_on(connected: Cluster) -> None:
    record = json.loads((connected.state_dir / "clusters" / f"{connected.port}.json").read_text())
    master_pid, worker_pid = record["pids"]["master"], record["pids"]["worker"]

    @parl.remote_class
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    counter = Counter()
    counter.incr()
    handle = counter._xparl_handle
    ports = [
        connected.address,
        record["http_address"],
        handle.log_address,
        handle.job_address.removeprefix("tcp://"),
    ]
    rss_before = _rss_kb(master_pid)

    calls, errors, stop = [0], [], threading.Event()

    def keep_calling() -> None:
        while not stop.is_set():
            try:
                calls[0] += 1
                assert counter.incr() == calls[0] + 1
            except BaseException as exc:  # noqa: BLE001 - any failure is the test's finding
                errors.append(exc)
                return

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        rng = random.Random(5)
        for address in (connected.address, ports[3]):
            _garbage_frames(address, 5_000, rng)  # 10,000 garbage frames in all
        for address in ports:
            _random_streams(address, 100, rng)
    finally:
        stop.set()
        caller.join(30)
    assert not errors, errors
    print(f"{calls[0]} calls went through the garbage")
    assert calls[0] > 10
    assert pid_alive(master_pid) and pid_alive(worker_pid)
    assert counter.incr() == calls[0] + 2
    assert Counter().incr() == 1, "the master still creates actors"
    rss_after = _rss_kb(master_pid)
    print(f"master RSS: {rss_before} kB before, {rss_after} kB after")
    assert rss_after < rss_before + 64 * 1024, "the master's memory stays flat"
