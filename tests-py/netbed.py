"""Machines on a network, made of Linux network namespaces, for tests that need real addresses.

    lan namespace:  the switch, a bridge `br0`
    one namespace per machine:  `lo`, and `eth0` with 10.77.0.<n>/24, joined to the switch by
        a veth pair (a cable: `cut()` pulls it out at the switch: the machine keeps its
        address and routes, its interface only loses the carrier, and frames stop, as when a
        cable or a switch port fails), or
        a relayed link: a TAP device at each end and `netrelay.py` copying frames between them
        with a delay and a loss rate (what `tc ... netem` does; this machine's kernel is built
        without sch_netem, so the bed does it in user space, on every kernel)

Nothing is added to the host's own namespace (no address, route or link), so the fixed subnet
cannot clash with the host's networks, nor two beds with each other. A machine's processes run
in its namespace (`ip netns exec`) with their own `XPARL_STATE_DIR`: a key file or a record one
machine writes is not seen by another as if they shared a disk by accident (they do share the
file system, which the tests use to look at what each machine wrote). Closing the bed kills
every process left in its namespaces (all started by the test: it made the namespaces), stops
the relays and deletes the namespaces, which deletes their links.

Also the primitives `test_partition.py` uses: `ip`, `namespace`, `free_subnet`.

Needs root and iproute2; `require_namespaces()` skips the test otherwise, saying why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import pytest

from conftest import kill_if_ours, wait_until

SUBNET = ipaddress.ip_network("10.77.0.0/24")
_RELAY = Path(__file__).with_name("netrelay.py")
_names = itertools.count()


def ip(*args: str, netns: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip ARGS` (in `netns` if given); an AssertionError with its message if it fails."""
    prefix = ["-n", netns] if netns else []
    result = subprocess.run(
        ["ip", *prefix, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20
    )
    if check and result.returncode != 0:
        raise AssertionError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _skip(reason: str) -> None:
    if os.environ.get("CI") == "true":
        reason += " (CI=true: this runner cannot make network namespaces, so the test is skipped)"
    pytest.skip(reason)


def require_namespaces() -> None:
    """Skip the calling test, saying why, unless this process can make network namespaces."""
    if os.geteuid() != 0:
        _skip("network namespaces need root (ip netns, veth, bridge)")
    if shutil.which("ip") is None:
        _skip("the `ip` command (iproute2) is not installed")


def unique_name(role: str) -> str:
    """A namespace name no other test process uses: this pid, a counter, the role."""
    return f"parl-rs-{os.getpid()}-{next(_names)}-{role}"


@dataclass
class Netns:
    """A network namespace this test made; every process in it was started by the test."""

    name: str

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, *argv: str, env: Optional[dict] = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*argv),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def pids(self) -> list[int]:
        listed = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=20
        )
        return [int(pid) for pid in listed.stdout.split()]

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL what still runs inside (Python processes only: all ours) and wait for it."""
        for pid in self.pids():
            kill_if_ours(pid, b"python")
        wait_until(lambda: not self.pids(), timeout, what=f"the processes of {self.name} to end")


@contextlib.contextmanager
def namespace(name: str) -> Iterator[Netns]:
    """A new namespace with `lo` up; afterwards its processes are killed and it is deleted."""
    require_namespaces()
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        _skip(f"`ip netns add` is not available here: {added.stderr.strip()}")
    netns = Netns(name)
    try:
        ip("link", "set", "lo", "up", netns=name)
        yield netns
    finally:
        try:
            netns.kill_all()
        finally:
            ip("netns", "del", name, check=False)


def free_subnet(base: str, prefix: int) -> ipaddress.IPv4Network:
    """A subnet of `base` with `prefix` bits, chosen by this process's pid, that nothing in the
    host's namespace uses (for links that have one end there)."""
    used = []
    for line in ip("-4", "-o", "addr", "show").stdout.splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in ip("-4", "route", "show", "table", "all").stdout.splitlines():
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
    subnets = list(ipaddress.ip_network(base).subnets(new_prefix=prefix))
    start = os.getpid() % len(subnets)
    for offset in range(len(subnets)):
        candidate = subnets[(start + offset) % len(subnets)]
        if not any(candidate.overlaps(other) for other in used if other.prefixlen > 0):
            return candidate
    raise AssertionError(f"no free /{prefix} in {base}")


# --- links to the switch ---------------------------------------------------------------------


@dataclass
class Cable:
    """A veth pair: `eth0` in the machine, `port` on the switch."""

    lan: Netns
    port: str

    def cut(self) -> None:
        """Pull the cable out at the switch: nothing gets through, nobody is told."""
        ip("link", "set", self.port, "down", netns=self.lan.name)

    def heal(self) -> None:
        ip("link", "set", self.port, "up", netns=self.lan.name)


@dataclass
class RelayedLink:
    """A TAP device `eth0` in the machine and `port` on the switch, joined by netrelay.py."""

    lan: Netns
    port: str
    process: subprocess.Popen

    def _ask(self, command: str) -> str:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer and not answer.startswith("error"), f"relay: {command!r} -> {answer!r}"
        return answer

    def impair(self, delay: float = 0.0, loss: float = 0.0) -> None:
        """Each frame, in each direction, arrives `delay` s late or is lost with `loss`."""
        self._ask(f"set {delay} {loss}")

    def cut(self) -> None:
        self.impair(0.0, 1.0)

    def heal(self) -> None:
        self.impair(0.0, 0.0)

    def stats(self) -> dict:
        """Frames seen, dropped and forwarded since the link was made."""
        return json.loads(self._ask("stats"))

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()  # the relay exits when its stdin closes
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


Link = Union[Cable, RelayedLink]


# --- machines ----------------------------------------------------------------------------------


@dataclass
class Machine:
    """A machine of the bed: its namespace, address, link and home folder (with its state dir)."""

    name: str
    netns: Netns
    address: str
    link: Link
    home: Path

    @property
    def state_dir(self) -> Path:
        return self.home / "xparl-state"

    def add_address(self, address: str) -> None:
        """A second address on `eth0` (as a machine with several interfaces or a VPN has)."""
        ip("addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0", netns=self.netns.name)

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment (PYTHONPATH, PATH...) without anything of the cluster,
        and the machine's own XPARL_STATE_DIR; `extra` on top."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("XPARL")}
        return {**env, "XPARL_STATE_DIR": str(self.state_dir), **extra}

    def run(
        self, *argv: str, env: Optional[dict] = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess:
        return self.netns.run(*argv, env=self.env(**(env or {})), timeout=timeout)

    def xparl(
        self, *args: str, env: Optional[dict] = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess:
        """`xparl ARGS` on this machine (as `python -m parl_rs.cli`)."""
        return self.run(sys.executable, "-m", "parl_rs.cli", *args, env=env, timeout=timeout)

    def popen(self, *argv: str, env: Optional[dict] = None, **kwargs) -> subprocess.Popen:
        command = self.netns.command(*argv)
        return subprocess.Popen(command, env=self.env(**(env or {})), **kwargs)


@dataclass
class Bed:
    """A switch and the machines plugged into it (`add`). Use as a context manager."""

    root: Path
    lan: Netns = field(init=False)
    machines: dict[str, Machine] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _hosts: Iterator = field(default_factory=lambda: itertools.islice(SUBNET.hosts(), 10, None))

    def __enter__(self) -> Bed:
        try:
            self.lan = self._stack.enter_context(namespace(unique_name("lan")))
            ip("link", "add", "br0", "type", "bridge", netns=self.lan.name)
            ip("link", "set", "br0", "up", netns=self.lan.name)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()  # machines first (last in, first out), the switch last

    def add(self, name: str, relayed: bool = False) -> Machine:
        """A machine named `name` on the switch, with the next free address."""
        netns = self._stack.enter_context(namespace(unique_name(name)))
        address = str(next(self._hosts))
        port = f"p-{name}"[:15]
        if relayed:
            link: Link = self._relayed_link(netns, port)
        else:
            # Each end made where it belongs: no name is ever taken in the host's namespace.
            ip("link", "add", "eth0", "netns", netns.name, "type", "veth", "peer", "name", port,
               "netns", self.lan.name)  # fmt: skip
            link = Cable(self.lan, port)
        ip("link", "set", port, "master", "br0", netns=self.lan.name)
        ip("link", "set", port, "up", netns=self.lan.name)
        ip("addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0", netns=netns.name)
        ip("link", "set", "eth0", "up", netns=netns.name)
        home = self.root / name
        home.mkdir(parents=True)
        machine = Machine(name, netns, address, link, home)
        self.machines[name] = machine
        return machine

    def _relayed_link(self, netns: Netns, port: str) -> RelayedLink:
        if not os.path.exists("/dev/net/tun"):
            _skip("a relayed link needs TAP devices (/dev/net/tun)")
        ip("tuntap", "add", "dev", "eth0", "mode", "tap", netns=netns.name)
        ip("tuntap", "add", "dev", port, "mode", "tap", netns=self.lan.name)
        ends = [f"{netns.name}:eth0", f"{self.lan.name}:{port}"]
        seed = str(len(self.machines))  # one of its own per link: links drop different frames
        process = subprocess.Popen(
            [sys.executable, str(_RELAY), *ends, seed],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        link = RelayedLink(self.lan, port, process)
        self._stack.callback(link.close)  # before the namespace goes (pushed after it)
        ready = process.stdout.readline().strip() if process.stdout else ""
        assert ready == "ready", f"netrelay.py did not start: {ready!r}"
        return link
