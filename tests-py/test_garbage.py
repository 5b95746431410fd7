"""Garbage sent to the master's and a job's ports must not hurt the cluster or the actor."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading

import pytest

import parl_rs as parl
from conftest import Cluster, wait_until

zmq = pytest.importorskip("zmq")

# A valid ZMTP 3.0 greeting (NULL mechanism, as a client), so garbage gets past the handshake.
ZMTP_GREETING = (
    b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32
)


def _define_actors():
    @parl.remote_class
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def incr(self) -> int:
            self.count += 1
            return self.count

    return Counter


Counter = _define_actors()


def _raw_streams(rng: random.Random) -> list[bytes]:
    return [
        b"",
        rng.randbytes(1),
        rng.randbytes(64),
        rng.randbytes(70_000),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ZMTP_GREETING[:11],  # a greeting cut short
        ZMTP_GREETING + rng.randbytes(512),
    ]


def _oversized_frames(rng: random.Random) -> list[bytes]:
    """Frames whose header claims an absurd size: nothing may be allocated up front."""
    return [
        ZMTP_GREETING + b"\x06" + struct.pack(">Q", 2**62),  # a long command frame
        ZMTP_GREETING + b"\x02" + struct.pack(">Q", 2**40) + rng.randbytes(100),
        ZMTP_GREETING + b"\x04\xff" + rng.randbytes(255),  # a short command frame, junk body
    ]


def send_raw_garbage(host: str, port: int, streams: list[bytes]) -> None:
    for stream in streams:
        with socket.create_connection((host, port), timeout=5) as sock:
            with contextlib.suppress(OSError):  # the peer may hang up mid-stream: fine
                sock.sendall(stream)
                sock.settimeout(0.2)
                sock.recv(4096)


def send_zmq_garbage(endpoint: str, rng: random.Random) -> None:
    """Well-formed ZeroMQ messages whose frames mean nothing to parl_rs."""
    messages = [
        [b""],
        [b"", b""],
        [rng.randbytes(1)],
        [rng.randbytes(16), rng.randbytes(300)],
        [b"\x00" * 4, b"\xff" * 4096],
        [rng.randbytes(8) for _ in range(50)],
        [rng.randbytes(1_000_000)],
    ]
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.RCVTIMEO, 200)
        sock.connect(endpoint)
        for frames in messages:
            sock.send_multipart(frames)
        with contextlib.suppress(zmq.Again):  # an error reply is fine, silence too
            while True:
                sock.recv_multipart()
        sock.close()
    finally:
        context.term()


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


@pytest.mark.timeout(180)
def test_garbage_does_not_break_the_master_or_a_job(connected: Cluster) -> None:
    rng = random.Random(1234)
    actor = Counter()
    assert actor.incr() == 1
    master_host, master_port = _host_port(connected.address)
    job_address = actor._xparl_handle.job_address
    job_host, job_port = _host_port(job_address)

    send_raw_garbage(master_host, master_port, _raw_streams(rng))
    send_raw_garbage(job_host, job_port, _raw_streams(rng))
    send_zmq_garbage(f"tcp://{master_host}:{master_port}", rng)
    send_zmq_garbage(job_address, rng)

    assert actor.incr() == 2  # the job that was hit still serves its actor
    other = Counter()
    assert other.incr() == 1  # and the master still hands out jobs
    client = parl.get_global_client()
    wait_until(lambda: client.status()["cpu_used"] == 2, 10, what="2 used CPUs in the status")


@pytest.mark.timeout(180)
def test_garbage_while_calls_are_in_flight(connected: Cluster) -> None:
    rng = random.Random(99)
    actor = Counter()
    actor.incr()
    errors: list[BaseException] = []

    def call_many() -> None:
        try:
            for _ in range(300):
                actor.incr()
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call_many)
    caller.start()
    job_address = actor._xparl_handle.job_address
    send_raw_garbage(*_host_port(job_address), _raw_streams(rng))
    send_zmq_garbage(job_address, rng)
    caller.join()
    assert errors == []
    assert actor.count == 301


@pytest.mark.timeout(120)
def test_frames_claiming_huge_sizes_are_refused_without_allocating(connected: Cluster) -> None:
    rng = random.Random(7)
    actor = Counter()
    actor.incr()
    send_raw_garbage(*_host_port(connected.address), _oversized_frames(rng))
    send_raw_garbage(*_host_port(actor._xparl_handle.job_address), _oversized_frames(rng))
    assert actor.incr() == 2
    assert Counter().incr() == 1
