"""A worker, or a client, cut off from the cluster by a real network partition, then healed.

Each test makes its own network namespace and a veth pair with private addresses, and runs
one side of the cluster inside the namespace: a worker and its jobs, or a client. Setting the
inner end of the veth down is a silent partition: no FIN, no RST, the TCP connections stay
open and nothing arrives, as when a cable or a switch fails. Whatever the test started in the
namespace, the veth and the namespace are removed at the end, even when the test fails.

Needs root and `ip netns` (skipped otherwise, saying why); the namespace primitives are
netbed.py's. The measured times are printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import parl_rs as parl
from conftest import (
    Cluster,
    StatusRecorder,
    cluster_status,
    describe,
    pid_alive,
    running_cluster,
    wait_until,
)
from netbed import Netns, free_subnet, ip, namespace

HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT = 0.2, 1.0
HEARTBEAT_FLAGS = (
    "--heartbeat_interval", str(HEARTBEAT_INTERVAL), "--heartbeat_timeout", str(HEARTBEAT_TIMEOUT)
)  # fmt: skip
CPUS = 2


# --- the network namespace -----------------------------------------------------------------


@dataclass
class Partitionable:
    """A network namespace joined to the host by a veth pair that the test can cut."""

    namespace: Netns
    host_if: str
    inner_if: str
    host_ip: str
    inner_ip: str

    @property
    def netns(self) -> str:
        return self.namespace.name

    def run_inside(self, *command: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return self.namespace.run(*command, timeout=timeout)

    def cut(self) -> None:
        ip("link", "set", self.inner_if, "down", netns=self.netns)

    def heal(self) -> None:
        ip("link", "set", self.inner_if, "up", netns=self.netns)

    def pids(self) -> list[int]:
        return self.namespace.pids()


_instances = 0


@pytest.fixture
def partitionable() -> Iterator[Partitionable]:
    """A fresh namespace and veth pair; every process left in it, the veth and the namespace
    are removed afterwards."""
    global _instances
    _instances += 1
    tag = f"{os.getpid()}{_instances}"
    host_if, inner_if = f"ppt{tag}h"[:15], f"ppt{tag}i"[:15]
    with namespace(f"parl-rs-partition-{tag}") as netns:
        try:
            # One end stays in the host's namespace: the subnet must be one the host does not use.
            subnet = free_subnet("10.213.0.0/16", 30)
            host_ip, inner_ip = (str(h) for h in subnet.hosts())
            ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if)
            ip("link", "set", inner_if, "netns", netns.name)
            ip("addr", "add", f"{host_ip}/30", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("addr", "add", f"{inner_ip}/30", "dev", inner_if, netns=netns.name)
            ip("link", "set", inner_if, "up", netns=netns.name)
            yield Partitionable(netns, host_if, inner_if, host_ip, inner_ip)
        finally:
            netns.kill_all()  # before the link goes: its processes were using it
            ip("link", "del", host_if, check=False)  # deletes both ends


# --- the actors ------------------------------------------------------------------------------


def _actor_class():
    @parl.remote_class
    class Resident:
        def pid(self):
            return os.getpid()

        def sleep(self, seconds, started_marker=None):
            if started_marker:
                Path(started_marker).touch()
            time.sleep(seconds)
            return seconds

    return Resident


def _pass_the_key(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The namespace plays another machine: its processes get the cluster key the way a user
    there passes it (a key file is offered only to this machine's own addresses)."""
    key = (cluster.state_dir / "keys" / f"{cluster.port}.key").read_text().strip()
    monkeypatch.setenv("XPARL_CLUSTER_KEY", key)


def _status(address: str) -> dict:
    return cluster_status(address, timeout=2.0)


def _counts(status: dict) -> tuple[int, int, int]:
    return status["cpu_total"], status["cpu_used"], status["cpu_vacant"]


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_partitioned_worker_is_dropped_then_rejoins_without_double_counting(
    partitionable: Partitionable, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master, and this process as the client, on the host; the worker and its jobs in the
    namespace. Cut off, the worker is dead to the cluster after the heartbeat timeout; healed,
    it comes back by itself, and the jobs of its actors that were declared dead are ended,
    never counted again."""
    link = partitionable
    # A master without a worker of its own on the host side; the only worker is in the netns.
    with running_cluster(state_dir, 0, *HEARTBEAT_FLAGS, host=link.host_ip) as cluster:
        address = cluster.address
        _pass_the_key(cluster, monkeypatch)
        joined = link.run_inside(
            sys.executable, "-m", "parl_rs.cli", "connect", "--address", address,
            "--cpu_num", str(CPUS), "--host", link.inner_ip,
        )  # fmt: skip
        assert joined.returncode == 0, describe(joined)
        (record,) = [json.loads(p.read_text()) for p in (state_dir / "workers").glob("*.json")]
        worker_pid = record["pid"]
        assert worker_pid in link.pids(), "the worker runs inside the namespace"
        wait_until(
            lambda: (
                _counts(_status(address)) == (CPUS, 0, CPUS)
                and _status(address)["workers"][0]["jobs_ready"] == CPUS
            ),
            30,
            what="the worker's warm jobs",
        )
        worker_id = _status(address)["workers"][0]["worker_id"]

        parl.connect(address, create_timeout=3)
        try:
            resident_class = _actor_class()
            residents = [resident_class() for _ in range(CPUS)]
            orphan_pids = [r.pid() for r in residents]
            assert all(pid in link.pids() for pid in orphan_pids), "the jobs run in the namespace"
            assert _counts(_status(address)) == (CPUS, CPUS, 0)

            # A call under way on one actor when the link goes down.
            marker = tmp_path / "sleep-started"
            in_flight: dict = {}

            def call() -> None:
                try:
                    residents[0].sleep(60, str(marker))
                except BaseException as exc:  # noqa: BLE001 - the error is the result
                    in_flight["error"], in_flight["at"] = exc, time.monotonic()

            caller = threading.Thread(target=call)
            caller.start()
            wait_until(marker.exists, 10, what="the call to start in its job")

            with StatusRecorder(address) as recorder:
                cut_at = time.monotonic()
                link.cut()
                wait_until(lambda: _status(address)["cpu_total"] == 0, 15, what="the drop")
                dropped = time.monotonic() - cut_at
                caller.join(15)
                assert not caller.is_alive(), "the call under way never failed"
                assert isinstance(in_flight.get("error"), parl.ActorDiedError), in_flight
                failed = in_flight["at"] - cut_at
                assert worker_id in str(in_flight["error"]), in_flight["error"]
                later = time.monotonic()
                with pytest.raises(parl.ActorDiedError):
                    residents[1].pid()  # a later call on another actor there fails at once
                later = time.monotonic() - later
                print(
                    f"partition: the worker was dropped after {dropped:.3f} s, the call under "
                    f"way failed after {failed:.3f} s, a later call in {later * 1000:.1f} ms "
                    f"(heartbeat timeout {HEARTBEAT_TIMEOUT} s)"
                )
                assert dropped < HEARTBEAT_TIMEOUT + 3.0 and failed < HEARTBEAT_TIMEOUT + 3.0
                assert later < 0.5
                # The jobs cannot hear that their actors are dead: they still run, cut off.
                assert all(pid_alive(pid) for pid in orphan_pids)
                # Stay cut off well beyond the timeouts of every side, so that the worker also
                # gives the master up and the client's release is stuck in TCP retransmits.
                wait_until(
                    lambda: time.monotonic() - cut_at > 4 * HEARTBEAT_TIMEOUT,
                    10,
                    what="the partition to last",
                )
                assert _counts(_status(address)) == (0, 0, 0)

                healed_at = time.monotonic()
                link.heal()
                wait_until(lambda: _status(address)["cpu_total"] > 0, 30, what="the rejoin")
                rejoined = time.monotonic() - healed_at
                wait_until(
                    lambda: not any(pid_alive(pid) for pid in orphan_pids),
                    30,
                    what="the orphaned jobs to end",
                )
                orphans_ended = time.monotonic() - healed_at
                wait_until(
                    lambda: _status(address)["workers"][0]["jobs_ready"] == CPUS,
                    30,
                    what="fresh warm jobs in the orphans' slots",
                )
                settled = time.monotonic() - healed_at
                print(
                    f"healed: the worker rejoined after {rejoined:.3f} s, its orphaned jobs "
                    f"ended after {orphans_ended:.3f} s, all its slots were warm and free "
                    f"after {settled:.3f} s"
                )
                assert rejoined < 10.0

            # Until the master noticed, it rightly saw the worker with its busy slots; from
            # then on: no worker, or the same worker once with every slot free. Never a slot
            # counted twice, never a busy slot of an actor declared dead.
            samples = [_counts(status) for status in recorder.since(cut_at)]
            assert len(samples) > 20, "the status was sampled throughout"
            noticed = samples.index((0, 0, 0))
            before, after = sorted(set(samples[:noticed])), sorted(set(samples[noticed:]))
            print(f"(total, used, vacant) CPUs seen after the cut: {before}, once noticed: {after}")
            assert set(before) <= {(CPUS, CPUS, 0)}, before
            assert set(after) == {(0, 0, 0), (CPUS, 0, CPUS)}, after
            assert all(len(status["workers"]) <= 1 for status in recorder.since(cut_at))
            assert all(status["actors"] == 0 for status in recorder.since(healed_at))

            status = _status(address)
            assert [w["worker_id"] for w in status["workers"]] == [worker_id]
            assert pid_alive(worker_pid), "the worker rejoined by itself, it was not restarted"
            assert _counts(status) == (CPUS, 0, CPUS)

            # Exactly the real capacity can be used again, and not one slot more.
            residents.clear()
            fresh = [resident_class() for _ in range(CPUS)]
            fresh_pids = {r.pid() for r in fresh}
            assert len(fresh_pids) == CPUS and not fresh_pids & set(orphan_pids)
            assert all(pid in link.pids() for pid in fresh_pids)
            assert _counts(_status(address)) == (CPUS, CPUS, 0)
            waited = time.monotonic()
            with pytest.raises(parl.ResourceError):
                resident_class()  # create_timeout=3: no slot beyond the real ones
            waited = time.monotonic() - waited
            print(f"an actor beyond the capacity waited {waited:.2f} s, then ResourceError")
            assert _counts(_status(address)) == (CPUS, CPUS, 0)
            fresh.pop()
            wait_until(lambda: _status(address)["cpu_used"] == CPUS - 1, 10, what="the release")
            last = resident_class()
            assert last.sleep(0) == 0
            assert _counts(_status(address)) == (CPUS, CPUS, 0)
        finally:
            parl.disconnect()


_CUT_OFF_CLIENT = """
    import json, os, sys, time
    from pathlib import Path
    import parl_rs as parl

    events = Path(sys.argv[2])

    def event(name, value, **more):
        fields = {name: value, f"{name}_at": time.monotonic(), **more}
        with events.open("a") as out:
            out.write(json.dumps(fields) + "\\n")

    @parl.remote_class
    class Resident:
        def pid(self):
            return os.getpid()

        def sleep(self, seconds, started_marker):
            Path(started_marker).touch()
            time.sleep(seconds)
            return seconds

    parl.connect(sys.argv[1], create_timeout=30)
    resident = Resident()
    event("job", resident.pid())
    try:
        resident.sleep(120, sys.argv[3])
        event("call", "returned")
    except parl.ActorDiedError as exc:
        event("call", "ActorDiedError", message=str(exc))
    deadline = time.monotonic() + 60
    while True:  # back with the master by itself: a new actor
        try:
            fresh = Resident()
            break
        except parl.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    event("fresh", fresh.pid())
    input()  # until the test has looked at the cluster
    parl.disconnect()
"""


def _events(path: Path) -> dict:
    """The driver's events so far, merged: {"job": pid, "job_at": monotonic time, ...}."""
    merged: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            merged.update(json.loads(line))
    return merged


@pytest.mark.timeout(180)
def test_a_client_cut_off_from_its_job_loses_it_and_its_slot_returns(
    partitionable: Partitionable, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client is inside the namespace, the master, the worker and the job on the host: the
    job is fine, but its client can no longer reach it nor the master."""
    link = partitionable
    with running_cluster(state_dir, CPUS, *HEARTBEAT_FLAGS, host=link.host_ip) as cluster:
        address = cluster.address
        _pass_the_key(cluster, monkeypatch)
        wait_until(lambda: _counts(_status(address)) == (CPUS, 0, CPUS), 30, what="the worker")
        script = tmp_path / "client.py"
        script.write_text(textwrap.dedent(_CUT_OFF_CLIENT))
        events, marker = tmp_path / "events.jsonl", tmp_path / "sleep-started"
        client = subprocess.Popen(
            ["ip", "netns", "exec", link.netns, sys.executable, str(script), address]
            + [str(events), str(marker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "client.log", "w"),  # noqa: SIM115 - closed with the process
            text=True,
        )
        try:
            job = wait_until(lambda: _events(events).get("job"), 30, what="the actor")
            assert client.pid in link.pids() and job not in link.pids()
            wait_until(marker.exists, 10, what="the call to start in its job")
            assert _counts(_status(address)) == (CPUS, 1, CPUS - 1)

            cut_at = time.monotonic()
            link.cut()
            wait_until(
                lambda: _status(address)["clients"] == [] and _status(address)["cpu_used"] == 0,
                15,
                what="the master to drop the client",
            )
            freed = time.monotonic() - cut_at
            wait_until(lambda: not pid_alive(job), 10, what="the client's job to end")
            ended = time.monotonic() - cut_at
            print(
                f"client cut off: the master dropped it and freed its slot after {freed:.3f} s, "
                f"its job ended after {ended:.3f} s"
            )
            assert freed < HEARTBEAT_TIMEOUT + 3.0
            wait_until(
                lambda: time.monotonic() - cut_at > 4 * HEARTBEAT_TIMEOUT,
                10,
                what="the partition to last",
            )
            # While cut off, the client cannot learn anything: its call is still waiting.
            failed_while_cut = "call" in _events(events)

            healed_at = time.monotonic()
            link.heal()
            wait_until(lambda: "call" in _events(events), 60, what="the call to end")
            fresh = wait_until(lambda: _events(events).get("fresh"), 60, what="a new actor")
            outcome = _events(events)
            assert outcome["call"] == "ActorDiedError", outcome
            print(
                f"healed: the call under way failed {outcome['call_at'] - healed_at:.3f} s "
                f"after the heal (failed while cut off: {failed_while_cut}), a new actor was "
                f"created {outcome['fresh_at'] - healed_at:.3f} s after it; "
                f"the error: {outcome['message'].splitlines()[-1]}"
            )
            assert fresh != job
            status = _status(address)
            assert _counts(status) == (CPUS, 1, CPUS - 1) and status["actors"] == 1, status
            assert len(status["clients"]) == 1, "the client is back by itself, once"
            client.communicate("\n", timeout=30)
            assert client.returncode == 0, (tmp_path / "client.log").read_text()
            wait_until(lambda: _status(address)["cpu_used"] == 0, 10, what="the last slot")
        finally:
            client.kill()
            client.wait(10)
