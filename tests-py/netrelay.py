"""A network link emulated in user space: netem's delay and loss for kernels without sch_netem.

    python netrelay.py NETNS_A:TAP_A NETNS_B:TAP_B [SEED]

Attaches to two TAP devices (made beforehand with `ip tuntap add ... mode tap`, one in each
namespace) and copies every Ethernet frame from one to the other, each after a delay and
each dropped with a probability, in both directions, as `tc qdisc ... netem delay D loss L` on
both ends of a cable would (this machine's kernel has no sch_netem, see netbed.py). The frames
of one direction keep their order while the delay stays the same.

Commands on stdin, one a line, each answered with one line on stdout:

    set DELAY_S LOSS   one-way delay in seconds and loss probability (0 to 1; 1 cuts the link)
    stats              {"frames": N, "dropped": N, "forwarded": N} since the start, as JSON

It prints "ready" once attached and exits when stdin closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import itertools
import json
import os
import random
import select
import struct
import sys
import time
from typing import Iterator

_TUNSETIFF = 0x400454CA
_IFF_TAP, _IFF_NO_PI = 0x0002, 0x1000
_CLONE_NEWNET = 0x40000000
# Frames read from one device per wake-up: bounded, so the other direction and the commands
# are served too when one side floods.
_BURST = 256


@contextlib.contextmanager
def _in_netns(name: str) -> Iterator[None]:
    """This thread inside the network namespace `name` (`ip netns add` made it), then back.

    A TAP device is found by name in the namespace of the thread that opens it; the open
    file then stays bound to the device wherever the process goes."""
    libc = ctypes.CDLL(None, use_errno=True)
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(there, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if libc.setns(here, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(here)
        os.close(there)


def open_tap(where: str) -> int:
    """A non-blocking file descriptor of the TAP device `NETNS:NAME`."""
    netns, _, name = where.partition(":")
    with _in_netns(netns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
    return fd


class Relay:
    """Copies frames between two TAP descriptors with a delay and a loss rate."""

    def __init__(self, fd_a: int, fd_b: int, seed: int) -> None:
        self.peer = {fd_a: fd_b, fd_b: fd_a}
        self.delay, self.loss = 0.0, 0.0
        self.rng = random.Random(seed)
        self.due: list[tuple[float, int, int, bytes]] = []  # (when, order, to fd, frame)
        self.order = itertools.count()
        self.counts = {"frames": 0, "dropped": 0, "forwarded": 0}

    def take(self, fd: int, now: float) -> None:
        """Read the frames waiting on `fd` and schedule (or drop) each."""
        for _ in range(_BURST):
            try:
                frame = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the device went away (its namespace is being deleted)
            self.counts["frames"] += 1
            if self.loss and self.rng.random() < self.loss:
                self.counts["dropped"] += 1
                continue
            heapq.heappush(self.due, (now + self.delay, next(self.order), self.peer[fd], frame))

    def send_due(self, now: float) -> None:
        while self.due and self.due[0][0] <= now:
            _, _, fd, frame = heapq.heappop(self.due)
            try:
                os.write(fd, frame)
                self.counts["forwarded"] += 1
            except OSError:
                self.counts["dropped"] += 1  # the device is down: the frame is lost, as on a wire

    def wait_ms(self, now: float) -> int:
        """How long poll may sleep: until the next frame is due (rounded up), else forever."""
        if not self.due:
            return -1
        return max(0, int((self.due[0][0] - now) * 1000) + 1)

    def command(self, line: str) -> str:
        words = line.split()
        if words[:1] == ["set"] and len(words) == 3:
            self.delay, self.loss = float(words[1]), float(words[2])
            return "ok"
        if words == ["stats"]:
            return json.dumps(self.counts)
        return f"error: unknown command {line!r}"


def _reply(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    seed = int(argv[2]) if len(argv) > 2 else 0
    fd_a, fd_b = open_tap(argv[0]), open_tap(argv[1])
    relay = Relay(fd_a, fd_b, seed)
    poller = select.poll()
    for fd in (fd_a, fd_b, 0):
        poller.register(fd, select.POLLIN)
    pending = b""
    _reply("ready")
    while True:
        events = poller.poll(relay.wait_ms(time.monotonic()))
        for fd, event in events:
            if fd != 0 and event & select.POLLIN:
                relay.take(fd, time.monotonic())
            elif fd != 0:
                poller.unregister(fd)  # the device is gone (its namespace was deleted)
            if fd != 0:
                continue
            chunk = os.read(0, 4096)
            if not chunk:
                return  # stdin closed: the test bed is done with this link
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                _reply(relay.command(line.decode()))
        relay.send_due(time.monotonic())


if __name__ == "__main__":
    main(sys.argv[1:])
