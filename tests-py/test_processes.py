"""Nested and forked use: actors inside jobs run locally, forked children get their own
client, and a process that never connected is told to connect."""

from __future__ import annotations

from conftest import Cluster, describe, run_script

FORKED_DRIVER = """
import multiprocessing as mp
import sys

import parl_rs as parl


@parl.remote_class
class Adder:
    def add(self, a, b):
        return a + b


def child(address, queue):
    parl.connect(address)  # a child that connects gets its own client
    queue.put([Adder().add(i, 1) for i in range(2)])


def main():
    address = sys.argv[1]
    parl.connect(address)
    assert Adder().add(1, 1) == 2
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=child, args=(address, queue)) for _ in range(2)]
    for process in children:
        process.start()
    results = [queue.get(timeout=60) for _ in children]
    for process in children:
        process.join(60)
        assert process.exitcode == 0, process.exitcode
    assert results == [[1, 2], [1, 2]], results
    assert Adder().add(2, 2) == 4  # the parent still works afterwards
    print("forked children ok")


if __name__ == "__main__":
    main()
"""

SPAWNED_DRIVER = """
import multiprocessing as mp

import parl_rs as parl


@parl.remote_class
class Adder:
    def add(self, a, b):
        return a + b


def child(queue):
    try:
        Adder()
    except AssertionError as exc:
        queue.put(str(exc))
    else:
        queue.put("no error")


if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=child, args=(queue,))
    process.start()
    print(queue.get(timeout=60))
    process.join(60)
"""

NESTED_DRIVER = """
import sys

import parl_rs as parl


@parl.remote_class
class Inner:
    def where(self):
        import os

        return os.getpid()


@parl.remote_class
class Outer:
    def inner_pid(self):
        import os

        # Inside a job, remote_class gives the plain class: Inner runs in this process.
        return Inner().where() == os.getpid()


if __name__ == "__main__":
    parl.connect(sys.argv[1])
    print("nested runs locally:", Outer().inner_pid())
"""


def test_forked_children_connect_and_use_actors(cluster: Cluster, tmp_path) -> None:
    result = run_script(tmp_path, FORKED_DRIVER, cluster.address, timeout=120)
    assert result.returncode == 0 and "forked children ok" in result.stdout, describe(result)


def test_a_child_that_never_connected_is_told_to_connect(tmp_path) -> None:
    result = run_script(tmp_path, SPAWNED_DRIVER)
    assert result.returncode == 0, describe(result)
    assert "have you connected to the cluster" in result.stdout, describe(result)


def test_an_actor_inside_a_job_runs_locally(cluster: Cluster, tmp_path) -> None:
    result = run_script(tmp_path, NESTED_DRIVER, cluster.address)
    assert "nested runs locally: True" in result.stdout, describe(result)
