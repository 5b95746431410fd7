"""A cluster on several machines, run as users run it: each machine a network namespace with
its own address on one switch (netbed.py), the cluster started with the `xparl` commands
(bedcluster.py), the user's program on a machine of its own (bedclient.py).

    master  10.77.0.11  `xparl start --cpu_num 0 --host 10.77.0.11`
    w1      10.77.0.12  `xparl connect --host 10.77.0.12`, the key in a copied file
    w2      10.77.0.13  `xparl connect --host 0.0.0.0 --advertise 10.77.0.113` (a second
                        address of its, as with several interfaces), the key in the environment
    client  10.77.0.14  the program, the key in XPARL_CLUSTER_KEY

Needs root and `ip netns` (skipped otherwise, saying why). The measured figures are printed
(pytest -s).
"""

from __future__ import annotations

import contextlib
import ipaddress
import statistics
import time
import uuid
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from bedcluster import PORT, BedCluster, ClientProgram, ProgramError
from conftest import describe, wait_until
from netbed import Bed, Machine, ip

HEARTBEAT_TIMEOUT = 1.0
# Over the relayed links: frames pass through a user-space process on a loaded machine, and a
# lost heartbeat waits for TCP's retransmission (200 ms or more), so a little more slack.
RELAYED_HEARTBEAT_TIMEOUT = 1.5


def _heartbeat(timeout: float) -> tuple[str, ...]:
    return ("--heartbeat_interval", "0.2", "--heartbeat_timeout", str(timeout))


WORKERS = ("w1", "w2")


class Site(NamedTuple):
    """The machines and the cluster running on them."""

    bed: Bed
    cluster: BedCluster

    def machine(self, name: str) -> Machine:
        return self.bed.machines[name]

    def program(self, token: str = "") -> ClientProgram:
        """The client program on `client`, with `bed_payload.py` (holding `token`) beside it."""
        payload = {"bed_payload.py": f"TOKEN = {token or uuid.uuid4().hex!r}\n"}
        return ClientProgram(self.machine("client"), self.cluster, payload)

    def machine_of(self, actor: dict) -> str:
        """The worker machine whose address the actor's job sees as its own."""
        (name,) = [n for n in WORKERS if self.machine(n).address == actor["where"]]
        return name

    def api(self, program: ClientProgram, path: str = "/api/v1/cluster") -> dict:
        return program.call("api", path)


@contextlib.contextmanager
def cluster_on_bed(root: Path, cpus: int, relayed: bool = False) -> Iterator[Site]:
    """The four machines, the master started and both workers joined with `cpus` CPUs each,
    every job warm. `relayed`: the workers' links can be given a delay and a loss rate."""
    with Bed(root) as bed:
        master = bed.add("master")
        w1, w2 = bed.add("w1", relayed), bed.add("w2", relayed)
        bed.add("client")
        second = str(ipaddress.ip_address(w2.address) + 100)
        w2.add_address(second)
        timeout = RELAYED_HEARTBEAT_TIMEOUT if relayed else HEARTBEAT_TIMEOUT
        cluster = BedCluster.start(master, *_heartbeat(timeout))
        cluster.join(w1, cpus, host=w1.address, key_file=True)
        cluster.join(w2, cpus, host="0.0.0.0", advertise=second)
        cluster.wait_ready()
        yield Site(bed, cluster)


@contextlib.contextmanager
def running(program: ClientProgram) -> Iterator[ClientProgram]:
    try:
        yield program
    finally:
        program.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One cluster for the tests that only use it: 2 CPUs on each worker."""
    with cluster_on_bed(tmp_path_factory.mktemp("bed"), cpus=2) as site:
        yield site


def _host(address: str) -> str:
    """The host of "tcp://host:port" or "host:port"."""
    return address.removeprefix("tcp://").rpartition(":")[0]


def _p50_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def _fill(site: Site, program: ClientProgram, count: int) -> dict[str, list[dict]]:
    """`count` actors, by the worker machine they run on (each must be on one of them)."""
    placed: dict[str, list[dict]] = {name: [] for name in WORKERS}
    for actor in program.call("create", count):
        placed[site.machine_of(actor)].append(actor)
    return placed


# --- calls, files, logs across the machines ---------------------------------------------------


@pytest.mark.timeout(150)
def test_calls_arrays_and_tasks_cross_the_machines(shared: Site) -> None:
    """Actors land on both workers' machines and publish the address each worker was told to;
    4 MiB arrays go through each and back intact; tasks run on the workers."""
    with running(shared.program()) as program:
        placed = _fill(shared, program, 4)  # every slot of the cluster
        assert [len(placed[name]) for name in WORKERS] == [2, 2], placed
        cluster = shared.api(program)
        for name in WORKERS:
            worker_id = shared.cluster.worker_id(cluster, name)
            for actor in placed[name]:
                # w1 publishes its --host, w2 its --advertise (not its route to the master).
                assert _host(actor["job_address"]) == shared.cluster.published[name], actor
                assert _host(actor["log_address"]) == shared.cluster.published[name], actor
                assert actor["worker_id"] == worker_id
        assert shared.cluster.published["w2"] != shared.machine("w2").address

        ids = [actor["id"] for name in WORKERS for actor in placed[name]]
        echoed = program.call("echo_arrays", ids, 4)
        assert all(result["equal"] for result in echoed), echoed
        timing = program.call("calls", ids, 200)
        assert timing["wrong"] == 0
        print(
            f"4 MiB echo through each actor (its first large call): "
            f"{[round(r['s'] * 1000) for r in echoed]} ms; "
            f"add(i, 1) p50 {_p50_ms(timing['seconds']):.2f} ms over the veth links"
        )

        for actor_id in ids:
            program.call("release", actor_id)
        squares = program.call("tasks", 12)
        assert [square for square, _ in squares] == [x * x for x in range(12)]
        ran_on = {where for _, where in squares}
        workers = {shared.machine(name).address for name in WORKERS}
        assert ran_on and ran_on <= workers, ran_on
        print(f"12 tasks ran on {sorted(ran_on)}")


def _bundles(machine: Machine) -> set[str]:
    """The bundles of shipped files the worker of `machine` has cached (by content hash)."""
    return {path.name for path in machine.state_dir.glob("workers/*/worker/bundles/*")}


@pytest.mark.timeout(120)
def test_shipped_files_reach_each_worker_once(shared: Site) -> None:
    """The module next to the program reaches the actors on both machines, sent once to each
    worker (a later job there finds the worker's cache), not once per actor."""
    token = uuid.uuid4().hex  # new content: no worker has these files yet
    before = {name: _bundles(shared.machine(name)) for name in WORKERS}
    with running(shared.program(token)) as program:
        placed = _fill(shared, program, 4)  # one after the other: 2 jobs on each worker
        assert [len(placed[name]) for name in WORKERS] == [2, 2], placed
        for name in WORKERS:
            for actor in placed[name]:
                assert program.call("call", actor["id"], "payload_token") == token
        assert program.call("files_shipped") == 2, "sent once to each of the two workers"
        new = {name: _bundles(shared.machine(name)) - before[name] for name in WORKERS}
        assert len(new["w1"]) == 1 and new["w1"] == new["w2"], new


@pytest.mark.timeout(120)
def test_an_actors_output_is_read_through_the_master(shared: Site) -> None:
    """What actors on either worker print is fetched from the client's machine through the
    master's HTTP API (the master asks the worker), and straight from the worker too."""
    with running(shared.program()) as program:
        placed = _fill(shared, program, 4)
        for name in WORKERS:
            for actor in placed[name]:
                line = f"hello from {actor['id']} on {name}"
                assert program.call("call", actor["id"], "say", line) == line
                path = f"/api/v1/actors/{actor['id']}/log?lines=50"
                wait_until(
                    lambda p=path, text=line: text in program.call("api", p),
                    10,
                    what=f"{line!r} in the log served by the master",
                )
                assert line in program.call("get_log", actor["id"])


# --- a worker cut off, and healed -----------------------------------------------------------


def _events(site: Site, program: ClientProgram, kind: str, worker_id: str) -> list[dict]:
    events = site.api(program, "/api/v1/events")["events"]
    return [e for e in events if e["kind"] == kind and e.get("worker_id") == worker_id]


@pytest.mark.timeout(180)
def test_a_worker_cut_off_is_dropped_and_rejoins(tmp_path: Path) -> None:
    """w1's cable is pulled at the switch while a call runs on it: that call and later ones on
    w1's actor fail with ActorDiedError once the master misses w1's heartbeats, w2's actor
    works throughout; plugged back in, w1 rejoins by itself and takes a new actor."""
    with cluster_on_bed(tmp_path, cpus=1) as site, running(site.program()) as program:
        placed = _fill(site, program, 2)  # one CPU each: one actor on each machine
        (cut,), (kept,) = placed["w1"], placed["w2"]
        w1_id = site.cluster.worker_id(site.api(program), "w1")
        marker = tmp_path / "sleep-started"  # one file system: the job writes, the test sees
        in_flight = program.start("call", cut["id"], "sleep", 60, str(marker))
        wait_until(marker.exists, 10, what="the call to start on w1")

        cut_at, cut_wall = time.monotonic(), time.time()
        site.machine("w1").link.cut()
        assert program.call("call", kept["id"], "add", 1, 2) == 3, "w2 is not affected"
        with pytest.raises(ProgramError) as failed:
            program.result(in_flight, 30)
        assert failed.value.kind == "ActorDiedError", failed.value
        assert w1_id in failed.value.message
        failed_after = failed.value.at - cut_at
        with pytest.raises(ProgramError, match="ActorDiedError"):
            program.call("call", cut["id"], "add", 1, 2)  # a later call: at once
        (lost,) = wait_until(
            lambda: _events(site, program, "worker_lost", w1_id), 10, what="w1's loss"
        )
        assert lost["cause"] == "heartbeat", lost
        lost_after = lost["time"] - cut_wall
        w2_id = site.cluster.worker_id(site.api(program), "w2")
        assert [w["worker_id"] for w in site.api(program)["workers"]] == [w2_id]
        assert program.call("call", kept["id"], "add", 2, 3) == 5, "w2 still works"
        print(
            f"cut: the master dropped w1 after {lost_after:.2f} s, the call under way failed "
            f"after {failed_after:.2f} s (heartbeat timeout {HEARTBEAT_TIMEOUT} s)"
        )
        assert lost_after < HEARTBEAT_TIMEOUT + 5 and failed_after < HEARTBEAT_TIMEOUT + 5

        healed_at = time.monotonic()
        site.machine("w1").link.heal()
        client = site.machine("client")
        key = {"XPARL_CLUSTER_KEY": site.cluster.key}

        def listed() -> bool:
            status = client.xparl("status", "--address", site.cluster.address, env=key)
            return status.returncode == 0 and f"worker {w1_id} on" in status.stdout

        wait_until(listed, 30, interval=0.2, what="`xparl status` to list w1 again")
        rejoined_after = time.monotonic() - healed_at
        assert _events(site, program, "worker_rejoined", w1_id)
        (fresh,) = program.call("create", 1)  # waits for w1's slot: its orphaned job ends
        placed_after = time.monotonic() - healed_at
        assert site.machine_of(fresh) == "w1" and fresh["worker_id"] == w1_id
        assert program.call("call", fresh["id"], "add", 3, 4) == 7
        assert program.call("call", kept["id"], "add", 4, 5) == 9
        print(
            f"healed: `xparl status` listed w1 again after {rejoined_after:.2f} s, a new actor "
            f"ran there after {placed_after:.2f} s"
        )


# --- delay and loss -------------------------------------------------------------------------

DELAY, LOSS = 0.020, 0.01


@pytest.mark.timeout(240)
def test_calls_survive_delay_and_loss_and_nobody_is_declared_dead(tmp_path: Path) -> None:
    """With 20 ms each way and 1% of frames lost on both workers' links (netem's job, done by
    the relay), 200 calls and 1 MiB arrays come back right, each call at least a round trip
    late, and neither a worker nor an actor is declared dead (heartbeats every 0.2 s, a peer
    silent for 1.5 s is dead)."""
    with cluster_on_bed(tmp_path, cpus=1, relayed=True) as site, running(site.program()) as program:
        placed = _fill(site, program, 2)
        ids = [placed[name][0]["id"] for name in WORKERS]
        links = [site.machine(name).link for name in WORKERS]
        worker_ids = sorted(w["worker_id"] for w in site.api(program)["workers"])
        before = site.api(program, "/api/v1/events")["next"]
        plain = program.call("calls", ids, 200)["seconds"]

        for link in links:
            link.impair(DELAY, LOSS)
        try:
            slow = program.call("calls", ids, 200, timeout=180)
            echoed = program.call("echo_arrays", ids, 1, timeout=120)
        finally:
            for link in links:
                link.impair(0.0, 0.0)
        assert slow["wrong"] == 0
        assert all(result["equal"] for result in echoed), echoed
        assert min(slow["seconds"]) >= 2 * DELAY, "each call crossed the slow link both ways"
        counts = [link.stats() for link in links]
        print(
            f"add(i, 1) p50 {_p50_ms(plain):.2f} ms through the relay without delay, "
            f"{_p50_ms(slow['seconds']):.1f} ms with {DELAY * 1000:.0f} ms each way and "
            f"{LOSS:.0%} loss (max {max(slow['seconds']) * 1000:.0f} ms); 1 MiB echo "
            f"{[round(r['s'] * 1000) for r in echoed]} ms; frames seen/dropped per link "
            f"{[(c['frames'], c['dropped']) for c in counts]}"
        )
        assert sum(c["dropped"] for c in counts) > 0, "frames were lost"

        events = site.api(program, f"/api/v1/events?after={before}")["events"]
        bad = [e for e in events if e["kind"] in ("worker_lost", "job_died", "client_lost")]
        assert not bad, bad
        cluster = site.api(program)
        assert sorted(w["worker_id"] for w in cluster["workers"]) == worker_ids
        assert cluster["totals"]["deaths"] == 0
        assert [program.call("call", i, "add", 1, 1) for i in ids] == [2, 2]


# --- the master's own worker ------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("advertise", [True, False], ids=["advertise", "default-route"])
def test_the_masters_own_worker_serves_other_machines(tmp_path: Path, advertise: bool) -> None:
    """`xparl start` without --host (the master on every interface): its own worker's jobs
    publish the --advertise address, or without one (as PARL) the address of the machine's
    default route, so a client on another machine reaches them."""
    with Bed(tmp_path) as bed:
        master, client = bed.add("master"), bed.add("client")
        flags = ["--advertise", master.address] if advertise else []
        if not advertise:
            ip("route", "add", "default", "dev", "eth0", netns=master.netns.name)
        started = master.xparl("start", "--port", str(PORT), "--cpu_num", "1", *flags)
        assert started.returncode == 0, describe(started)
        key = (master.state_dir / "keys" / f"{PORT}.key").read_text().strip()
        cluster = BedCluster(master, key)
        with running(ClientProgram(client, cluster, {"bed_payload.py": "TOKEN = ''\n"})) as p:
            (actor,) = p.call("create", 1)
            assert _host(actor["job_address"]) == master.address, actor
            assert actor["where"] == master.address
            assert p.call("call", actor["id"], "add", 20, 22) == 42
