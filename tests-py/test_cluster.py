"""End to end on a real cluster started with `xparl start` (2 CPUs, fresh for each test).

The actor classes are defined inside a function, so they are shipped to the jobs by value
(this test module itself cannot be imported by a job).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from types import SimpleNamespace

import pytest

import parl_rs as parl
from conftest import (
    Cluster,
    cluster_status,
    describe,
    free_port,
    pid_alive,
    run_script,
    wait_until,
    xparl,
)


def _define_actors() -> SimpleNamespace:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

        def __eq__(self, other: object) -> bool:
            return (self.x, self.y) == (getattr(other, "x", None), getattr(other, "y", None))

    @parl.remote_class
    class Echo:
        greeting = "hello"

        def __init__(self, *args, **kwargs) -> None:
            self.init_args = (args, kwargs)
            self.value = 0

        def echo(self, *args, **kwargs):
            return args, kwargs

        def incr(self) -> int:
            self.value += 1
            return self.value

        def fail(self, message: str) -> None:
            raise ValueError(message)

        def sleep(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        def pid(self) -> int:
            return os.getpid()

        def make_lock(self) -> threading.Lock:
            return threading.Lock()

        def exit(self) -> None:
            sys.exit(0)

        def move(self, point: Point, dx: int) -> Point:
            return Point(point.x + dx, point.y)

    return SimpleNamespace(Echo=Echo, Point=Point)


ACTORS = _define_actors()


def test_arguments_are_passed_positionally_by_keyword_and_nested(connected: Cluster) -> None:
    point = ACTORS.Point(1, 2)
    actor = ACTORS.Echo(1, "two", three=3.0)
    assert actor.init_args == ((1, "two"), {"three": 3.0})
    nested = {"list": [1, [2, (3, None)]], "tuple": (b"bytes", {"set"}), "point": point}
    args, kwargs = actor.echo(nested, point, key=[point, {"deep": (point,)}])
    assert args == (nested, point)
    assert kwargs == {"key": [point, {"deep": (point,)}]}
    assert actor.move(point, dx=10) == ACTORS.Point(11, 2)


def test_attributes_can_be_read_and_written(connected: Cluster) -> None:
    actor = ACTORS.Echo()
    assert actor.value == 0
    actor.value = 41
    assert actor.value == 41
    assert actor.incr() == 42
    assert actor.greeting == "hello"  # a class attribute is data, not a method
    assert callable(actor.incr)
    assert "incr" in dir(actor) and "echo" in dir(actor)
    assert "Echo" in repr(actor)
    # An instance attribute shadows the method of the same name, as on a local object.
    actor.echo = "shadowed"
    assert actor.echo == "shadowed"
    assert "echo" not in dir(actor)


def test_remote_exception_has_the_remote_traceback_and_ends_the_actor(
    connected: Cluster,
) -> None:
    actor = ACTORS.Echo()
    actor.value = 5
    with pytest.raises(ValueError, match="boom") as caught:
        actor.fail("boom")
    error = caught.value
    assert isinstance(error, parl.RemoteError)
    assert error.func_name == "fail"
    assert "raise ValueError(message)" in error.remote_traceback
    assert "Remote traceback" in str(error)
    assert "keep_alive_on_error" in str(error)  # says the actor ended, and how to keep it
    # As in PARL, the actor has ended: later calls fail at once, naming the error.
    with pytest.raises(parl.ActorDiedError, match="after an error in `fail`: ValueError: boom"):
        actor.incr()
    wait_until(lambda: cluster_status(connected.address)["cpu_used"] == 0, 10, what="a free CPU")


def test_two_actors_run_in_parallel(connected: Cluster) -> None:
    actors = [ACTORS.Echo(), ACTORS.Echo()]
    for actor in actors:
        actor.incr()  # both are fully created before timing
    threads = [threading.Thread(target=actor.sleep, args=(1.0,)) for actor in actors]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - start < 1.8


def test_concurrent_calls_on_one_actor_are_serialised(connected: Cluster) -> None:
    actor = ACTORS.Echo()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(200):
                actor.incr()
        except BaseException as exc:  # reported below; a thread must not swallow it
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert actor.value == 800


@pytest.mark.timeout(300)
def test_create_and_delete_cycles_never_run_out_of_slots(connected: Cluster) -> None:
    for cycle in range(40):
        actor = ACTORS.Echo(cycle)
        assert actor.incr() == 1
        del actor  # releases the slot; the next creation may wait for it, but not fail


def test_unpicklable_argument_and_result_raise_serialize_errors(connected: Cluster) -> None:
    actor = ACTORS.Echo()
    with pytest.raises(parl.RemoteSerializeError, match="lock") as caught:
        actor.echo(1, threading.Lock())
    assert "positional argument 1" in str(caught.value)
    assert actor.incr() == 1  # nothing was sent: the actor keeps serving
    with pytest.raises(parl.RemoteSerializeError, match="__init__"):
        ACTORS.Echo(lock=threading.Lock())
    with pytest.raises(parl.RemoteSerializeError, match="return value.*lock"):
        actor.make_lock()
    with pytest.raises(parl.ActorDiedError, match="make_lock"):
        actor.incr()  # a result that cannot be sent ends the actor, as in PARL
    assert ACTORS.Echo().incr() == 1  # and the cluster keeps creating actors


def test_missing_method_raises_an_error_naming_it(connected: Cluster) -> None:
    actor = ACTORS.Echo()
    with pytest.raises(parl.RemoteAttributeError, match="no_such_method"):
        actor.no_such_method()
    assert not hasattr(actor, "no_such_attribute")
    assert actor.incr() == 1


def test_connect_to_a_closed_port_fails_fast() -> None:
    parl.disconnect()
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(parl.ConnectError, match=address):
        parl.connect(address)
    assert time.monotonic() - start < 6.0
    with pytest.raises(AssertionError):  # nothing half-connected is left behind
        parl.get_global_client()


def test_start_on_a_port_in_use_fails_clearly(state_dir) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = xparl("start", "--port", str(port), "--cpu_num", "1", "--host", "127.0.0.1")
    assert result.returncode != 0, describe(result)
    assert "in use" in result.stderr and str(port) in result.stderr, describe(result)
    assert not (state_dir / "clusters" / f"{port}.json").exists()


def test_status_shows_used_and_vacant_cpus(connected: Cluster) -> None:
    def status() -> str:
        return xparl("status").stdout

    prefix = f"# Cluster {connected.address} has"
    idle = f"{prefix} 0 used cpus, 2 vacant cpus, 0 used_gpus, 0 vacant_gpus."
    wait_until(lambda: idle in status(), 20, interval=0.2, what=idle)
    actor = ACTORS.Echo()
    actor.incr()
    busy = f"{prefix} 1 used cpus, 1 vacant cpus, 0 used_gpus, 0 vacant_gpus."
    wait_until(lambda: busy in status(), 20, interval=0.2, what=busy)


def test_status_without_clusters(state_dir) -> None:
    result = xparl("status")
    assert result.returncode == 0, describe(result)
    assert "No active cluster is found." in result.stdout


def test_status_reports_an_unreachable_cluster(state_dir) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = xparl("status", "--address", address)
    assert result.returncode == 1, describe(result)
    assert f"cannot reach the cluster at {address}" in result.stderr, describe(result)


@pytest.mark.timeout(60)
def test_killed_job_raises_actor_died_and_the_cluster_recovers(connected: Cluster) -> None:
    actor = ACTORS.Echo()
    pid = actor.pid()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(parl.ActorDiedError):
        actor.incr()
    with pytest.raises(parl.ActorDiedError):  # and it stays dead
        actor.incr()
    del actor
    assert ACTORS.Echo().incr() == 1


@pytest.mark.timeout(60)
def test_sys_exit_in_a_method_ends_the_actor(connected: Cluster) -> None:
    actor = ACTORS.Echo()
    pid = actor.pid()
    with pytest.raises(parl.ActorDiedError):
        actor.exit()
    wait_until(lambda: not pid_alive(pid), 10, what="the job to exit")
    del actor
    assert ACTORS.Echo().incr() == 1


def test_creation_without_a_vacant_cpu_raises_resource_error(cluster: Cluster) -> None:
    parl.connect(cluster.address, create_timeout=2)
    try:
        held = [ACTORS.Echo(), ACTORS.Echo()]
        start = time.monotonic()
        with pytest.raises(parl.ResourceError):
            ACTORS.Echo()
        assert 1.5 < time.monotonic() - start < 10
        held.pop()  # releasing one actor frees its CPU for a new one
        assert wait_until(_try_create, 30, interval=0.1, what="a vacant CPU").incr() == 1
    finally:
        parl.disconnect()


def _try_create():
    try:
        return ACTORS.Echo()
    except parl.ResourceError:
        return None


HELPER_MODULE = """
    import os

    import parl_rs as parl


    def triple(x):
        return 3 * x


    @parl.remote_class
    class Helper:
        def where(self):
            return __name__, os.path.dirname(os.path.abspath(__file__))

        def add(self, a, b):
            return triple(a) + b
"""

DRIVER_WITHOUT_MAIN_GUARD = """
    import os
    import sys

    import parl_rs as parl
    from helper_actor import Helper, triple

    # Top-level code: it must run once, in this process only, never again in a job.
    with open(sys.argv[2], "a") as marker:
        marker.write(f"{os.getpid()}\\n")

    parl.connect(sys.argv[1])


    @parl.remote_class
    class MainActor:
        def __init__(self, base):
            self.base = base

        def compute(self, x):
            return self.base + triple(x)

        def pid(self):
            return os.getpid()


    helper = Helper()
    module_name, module_dir = helper.where()
    print("helper module:", module_name, module_dir != os.path.dirname(os.path.abspath(__file__)))
    print("helper add:", helper.add(2, 1))
    actor = MainActor(100)
    print("main compute:", actor.compute(2), actor.pid() != os.getpid())
"""


def test_classes_from_a_helper_module_and_from_main(cluster: Cluster, tmp_path) -> None:
    marker = tmp_path / "marker.txt"
    result = run_script(
        tmp_path,
        DRIVER_WITHOUT_MAIN_GUARD,
        cluster.address,
        str(marker),
        files={"helper_actor.py": HELPER_MODULE},
    )
    assert result.returncode == 0, describe(result)
    assert "helper module: helper_actor True" in result.stdout, describe(result)
    assert "helper add: 7" in result.stdout, describe(result)
    assert "main compute: 106 True" in result.stdout, describe(result)
    assert len(marker.read_text().splitlines()) == 1  # top-level code ran exactly once


EMBEDDED_DRIVER = """
    import os

    import parl_rs as parl


    @parl.remote_class
    class Square:
        def compute(self, x):
            return x * x, os.getpid()


    parl.connect()
    value, pid = Square().compute(7)
    print("embedded:", value, pid != os.getpid())
    print("job pid:", pid)
"""


def test_embedded_cluster_runs_an_actor(tmp_path) -> None:
    result = run_script(tmp_path, EMBEDDED_DRIVER)
    assert result.returncode == 0, describe(result)
    assert "embedded: 49 True" in result.stdout, describe(result)
    job_pid = int(result.stdout.split("job pid:")[1].split()[0])
    # The embedded cluster's jobs are children of the driver and end with it.
    wait_until(lambda: not pid_alive(job_pid), 15, what="the embedded cluster's job to exit")
