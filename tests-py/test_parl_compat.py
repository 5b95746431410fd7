"""PARL's contracts that PARL programs rely on, written from PARL's documented behaviour
(`../shared/reference/parl-behaviour.md`): an uncaught exception ends the actor, classes from
modules on other `sys.path` entries, future mode's edges, PARL's import paths, and remote
tracebacks that name the user's files.

Driver scripts run in their own process, as a user's program would: their classes travel by
value (`__main__`) or by reference (a module next to the script, or elsewhere on `sys.path`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import parl_rs as parl
from conftest import Cluster, cluster_status, describe, run_script, wait_until
from parl_rs.remote import exceptions

pytestmark = pytest.mark.timeout(120)


def cpu_used(cluster: Cluster) -> int:
    return cluster_status(cluster.address)["cpu_used"]


# --- 1. an uncaught exception ends the actor --------------------------------------------------


def _define_actors() -> dict:
    @parl.remote_class
    class Actor:
        def __init__(self, arg1: object = None) -> None:
            self.arg1 = arg1

        def add_one(self, value: int) -> int:
            return value + 1

        def will_raise_exception_func(self) -> None:
            1 / 0  # noqa: B018

        def unpicklable_result(self) -> threading.Lock:
            return threading.Lock()

    @parl.remote_class(keep_alive_on_error=True)
    class Keeper:
        def __init__(self) -> None:
            self.count = 0

        def fail(self) -> None:
            self.count += 1
            raise ValueError("kept")

    @parl.remote_class(wait=False)
    class FutureActor:
        def __init__(self, arg1: object = None) -> None:
            self.arg1 = arg1

        def arg1(self, x: int, y: int) -> int:  # shadowed by the attribute set in __init__
            return x + y

        def add_one(self, value: int) -> int:
            return value + 1

        def will_raise_exception_func(self) -> None:
            1 / 0  # noqa: B018

    @parl.remote_class(wait=False)
    class ReservedName:
        def __init__(self) -> None:
            self._xparl_remote_wrapper_obj = 0

        def get_arg(self) -> int:
            return 0

    return {
        "Actor": Actor,
        "Keeper": Keeper,
        "FutureActor": FutureActor,
        "ReservedName": ReservedName,
    }


A = _define_actors()


def test_an_exception_ends_the_actor_and_frees_its_cpu_for_the_next_one(one_cpu: Cluster) -> None:
    # PARL's cluster_test.test_actor_exception_2: one CPU, the first proxy is still referenced.
    actor = A["Actor"]()
    with pytest.raises(exceptions.RemoteError, match="ZeroDivisionError"):
        actor.will_raise_exception_func()
    actor2 = A["Actor"]()
    assert actor2.add_one(1) == 2
    # Every later request on the ended actor raises at once, naming the error that ended it.
    for request in (lambda: actor.add_one(1), lambda: actor.arg1):
        with pytest.raises(exceptions.RemoteError, match="after an error in .*ZeroDivisionError"):
            request()


def test_the_replace_on_error_pattern_never_deadlocks_a_full_cluster(one_cpu: Cluster) -> None:
    actor = A["Actor"]()
    for _ in range(3):
        try:
            actor.will_raise_exception_func()
        except exceptions.RemoteError:
            actor = A["Actor"]()
    assert actor.add_one(41) == 42


def test_an_unpicklable_result_ends_the_actor(one_cpu: Cluster) -> None:
    actor = A["Actor"]()
    with pytest.raises(exceptions.RemoteSerializeError, match="cannot pickle the result"):
        actor.unpicklable_result()
    with pytest.raises(exceptions.RemoteError, match="after an error in `unpicklable_result`"):
        actor.add_one(1)
    wait_until(lambda: cpu_used(one_cpu) == 0, 10, what="the ended actor's CPU to be free")


def test_an_unpicklable_argument_is_refused_here_and_the_actor_stays(one_cpu: Cluster) -> None:
    actor = A["Actor"]()
    with pytest.raises(exceptions.RemoteSerializeError, match="positional argument 0"):
        actor.add_one(threading.Lock())
    assert actor.add_one(1) == 2


def test_a_missing_method_does_not_end_the_actor(one_cpu: Cluster) -> None:
    actor = A["Actor"]()
    with pytest.raises(AttributeError):
        actor.no_such_method()
    assert actor.add_one(1) == 2


def test_keep_alive_on_error_keeps_the_actor_and_its_state(one_cpu: Cluster) -> None:
    keeper = A["Keeper"]()
    for _ in range(2):
        with pytest.raises(ValueError, match="kept"):
            keeper.fail()
    assert keeper.count == 2
    assert cpu_used(one_cpu) == 1


def test_keep_alive_on_error_is_a_known_option() -> None:
    with pytest.raises(AssertionError, match="not supported"):
        parl.remote_class(keep_alive=True)


# --- 3. future mode ---------------------------------------------------------------------------


def test_future_mode_exception_then_calls_raise_at_the_call(one_cpu: Cluster) -> None:
    # PARL's future_mode_cluster_test, then the stickiness of the error.
    actor = A["FutureActor"]()
    with pytest.raises(exceptions.FutureFunctionError):
        actor.will_raise_exception_func().get()
    with pytest.raises(exceptions.FutureFunctionError, match="ZeroDivisionError"):
        actor.add_one(1)  # raises at the call, not at get()
    actor2 = A["FutureActor"]()
    assert actor2.add_one(1).get(timeout=20) == 2
    actor.destroy()
    actor2.destroy()


def test_future_mode_attribute_shadowing_a_method_reads_as_its_value(one_cpu: Cluster) -> None:
    actor = A["FutureActor"](7)
    assert actor.arg1 == 7  # the attribute set in __init__, read at once after construction
    with pytest.raises(TypeError):
        actor.arg1(1, 2)
    actor.destroy()


def test_future_mode_failed_init_raises_at_the_first_call(one_cpu: Cluster) -> None:
    actor = A["ReservedName"]()
    with pytest.raises(exceptions.FutureFunctionError, match="reserved"):
        actor.get_arg()
    actor.destroy()  # no error: destroying an ended actor is allowed
    wait_until(lambda: cpu_used(one_cpu) == 0, 10, what="the CPU to be free")


def test_future_mode_calls_on_a_dead_actor_raise_at_the_call(one_cpu: Cluster) -> None:
    actor = A["FutureActor"]()
    assert actor.add_one(1).get(timeout=20) == 2
    actor.destroy()
    with pytest.raises(exceptions.FutureFunctionError):
        actor.add_one(1)


# --- 4. PARL's import paths -------------------------------------------------------------------


def test_parl_import_paths() -> None:
    from parl_rs.remote.client import connect, disconnect, get_global_client
    from parl_rs.remote.exceptions import FutureFunctionError, RemoteError, ResourceError
    from parl_rs.remote.future_mode.future_object import FutureObject
    from parl_rs.remote.remote_decorator import remote_class

    assert (connect, disconnect, get_global_client) == (
        parl.connect,
        parl.disconnect,
        parl.get_global_client,
    )
    assert RemoteError is parl.RemoteError and ResourceError is parl.ResourceError
    assert FutureFunctionError is parl.FutureFunctionError
    assert FutureObject is parl.FutureObject and remote_class is parl.remote_class
    import parl_rs.remote as remote

    # PARL's parl/remote/__init__.py re-exports the client, exceptions and decorator.
    assert remote.connect is parl.connect and remote.RemoteError is parl.RemoteError
    assert remote.remote_class is parl.remote_class


# --- 2. where jobs find the user's modules ----------------------------------------------------

_ACTOR_MODULE = """
import parl_rs as parl

@parl.remote_class
class Actor:
    def add_one(self, x):
        return x + 1
"""


def test_a_class_from_an_absolute_sys_path_entry(cluster: Cluster, tmp_path: Path) -> None:
    abs_dir = tmp_path / "abs_dir"
    abs_dir.mkdir()
    (abs_dir / "abs_actor.py").write_text(_ACTOR_MODULE)
    driver = """
        import sys, threading
        import parl_rs as parl
        parl.connect(sys.argv[1], create_timeout=60)
        sys.path.append(sys.argv[2])
        import abs_actor
        assert abs_actor.Actor().add_one(1) == 2
        results = []
        def run():
            actor = abs_actor.Actor()
            results.append(actor.add_one(1))
        threads = [threading.Thread(target=run) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print("results", results)
    """
    result = run_script(tmp_path, driver, cluster.address, str(abs_dir))
    assert result.returncode == 0, describe(result)
    assert "results [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]" in result.stdout


_RELATIVE_DRIVER = """
    import sys
    import parl_rs as parl
    from parl_rs.remote import exceptions
    files = [sys.argv[2]] if len(sys.argv) > 2 else []
    parl.connect(sys.argv[1], distributed_files=files)
    sys.path.append("../relative_dir")
    import relative_actor
    try:
        print("result", relative_actor.Actor().add_one(1))
    except exceptions.RemoteError as error:
        print("remote error:", error)
"""


def test_a_relative_sys_path_entry_with_its_files_distributed(
    cluster: Cluster, tmp_path: Path
) -> None:
    relative_dir = tmp_path / "relative_dir"  # "../relative_dir" from the driver's directory
    relative_dir.mkdir()
    (relative_dir / "relative_actor.py").write_text(_ACTOR_MODULE)
    result = run_script(tmp_path, _RELATIVE_DRIVER, cluster.address, "../relative_dir/*")
    assert result.returncode == 0, describe(result)
    assert "result 2" in result.stdout, describe(result)


def test_a_module_the_job_cannot_find_is_a_remote_error_saying_what_to_do(
    cluster: Cluster, tmp_path: Path
) -> None:
    # PARL: a relative sys.path entry whose files were not distributed fails in the job.
    relative_dir = tmp_path / "relative_dir"
    relative_dir.mkdir()
    (relative_dir / "relative_actor.py").write_text(_ACTOR_MODULE)
    result = run_script(tmp_path, _RELATIVE_DRIVER, cluster.address)
    assert result.returncode == 0, describe(result)
    assert "remote error:" in result.stdout, describe(result)
    assert "'relative_actor'" in result.stdout and "distributed_files" in result.stdout


# --- remote tracebacks name the user's files ---------------------------------------------------


def test_remote_tracebacks_show_the_users_files_lines_and_source(
    cluster: Cluster, tmp_path: Path
) -> None:
    helper = """
        import parl_rs as parl

        def helper_fails():
            raise ValueError("raised in helper")

        @parl.remote_class
        class ByRef:
            def fail(self):
                helper_fails()
    """
    driver = """
        import sys
        import parl_rs as parl
        import helper

        def main_fails():
            raise KeyError("raised in main")

        @parl.remote_class
        class ByValue:
            def fail(self):
                main_fails()

        parl.connect(sys.argv[1])
        for cls in (ByValue, helper.ByRef):
            try:
                cls().fail()
            except parl.RemoteError as error:
                print(error.remote_traceback)
    """
    result = run_script(tmp_path, driver, cluster.address, files={"helper.py": helper})
    assert result.returncode == 0, describe(result)
    driver_dir = tmp_path / "driver"
    out = result.stdout
    for path, line, function, source in [
        (driver_dir / "driver.py", 12, "fail", "main_fails()"),
        (driver_dir / "driver.py", 7, "main_fails", 'raise KeyError("raised in main")'),
        (driver_dir / "helper.py", 10, "fail", "helper_fails()"),
        (driver_dir / "helper.py", 5, "helper_fails", 'raise ValueError("raised in helper")'),
    ]:
        frame = f'File "{path}", line {line}, in {function}\n    {source}'
        assert frame in out, f"{frame!r} not in:\n{out}"
    assert "<dynamic-code>" not in out


def test_shipped_code_has_its_source_lines_where_the_worker_lacks_the_file(
    cluster: Cluster, tmp_path: Path
) -> None:
    # As on another machine: the script's file is gone from this host once it has connected;
    # the shipped copy provides the source lines.
    driver = """
        import os, sys
        import parl_rs as parl

        @parl.remote_class
        class ByValue:
            def fail(self):
                raise KeyError("raised in main")

        parl.connect(sys.argv[1])
        os.rename(__file__, __file__ + ".moved")
        try:
            ByValue().fail()
        except parl.RemoteError as error:
            print(error.remote_traceback)
    """
    result = run_script(tmp_path, driver, cluster.address)
    assert result.returncode == 0, describe(result)
    path = tmp_path / "driver" / "driver.py"
    frame = f'File "{path}", line 8, in fail\n    raise KeyError("raised in main")'
    assert frame in result.stdout, result.stdout
