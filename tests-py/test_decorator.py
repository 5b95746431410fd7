"""`@remote_class` without a cluster: argument checks, the job-side no-op, the RemoteClass."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

import parl_rs as parl
from parl_rs.remote import RemoteClass


class Plain:
    """A plain class."""

    def hello(self) -> str:
        return "hello"


@pytest.fixture(autouse=True)
def _outside_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XPARL", raising=False)
    parl.disconnect()


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(AssertionError, match="Argument `max_cpu` is not supported"):
        parl.remote_class(max_cpu=2)


@pytest.mark.parametrize("not_a_class", [lambda: 0, len, Plain()])
def test_only_classes_can_be_decorated(not_a_class: object) -> None:
    with pytest.raises(AssertionError, match="Only class can be decorated"):
        parl.remote_class()(not_a_class)


def test_decorating_a_function_directly_is_refused() -> None:
    def function() -> None:
        pass

    with pytest.raises(AssertionError, match="Only class can be decorated"):
        parl.remote_class(function)


@pytest.mark.parametrize(
    ("options", "n_cpu", "n_gpu", "max_memory"),
    [
        ({}, 1, 0, None),
        ({"n_gpu": 2}, 0, 2, None),
        ({"max_memory": 200}, 1, 0, 200),
        ({"max_memory": 0.5, "n_gpu": 1}, 0, 1, 0.5),
    ],
)
def test_resources_are_kept_on_the_remote_class(
    options: dict, n_cpu: int, n_gpu: int, max_memory: object
) -> None:
    resources = parl.remote_class(**options)(Plain)._xparl_resources
    assert (resources.n_cpu, resources.n_gpu, resources.max_memory) == (n_cpu, n_gpu, max_memory)


@pytest.mark.parametrize(
    "options",
    [
        {"n_gpu": -1},
        {"n_gpu": 1.5},
        {"n_gpu": True},
        {"max_memory": 0},
        {"max_memory": -5},
        {"max_memory": "200"},
        {"max_memory": float("nan")},
        {"max_memory": float("inf")},
    ],
)
def test_bad_resource_values_fail_at_decoration(options: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        parl.remote_class(**options)(Plain)


def test_default_option_values_are_accepted() -> None:
    assert isinstance(parl.remote_class(max_memory=None, wait=True, n_gpu=0)(Plain), RemoteClass)


def test_wait_false_gives_a_future_mode_remote_class() -> None:
    remote = parl.remote_class(wait=False)(Plain)
    assert isinstance(remote, RemoteClass) and remote._wait is False
    assert parl.remote_class(Plain)._wait is True


def test_future_mode_keeps_the_resources() -> None:
    remote = parl.remote_class(wait=False, n_gpu=1, max_memory=300)(Plain)
    resources = remote._xparl_resources
    assert remote._wait is False
    assert (resources.n_cpu, resources.n_gpu, resources.max_memory) == (0, 1, 300)


def test_bare_and_called_forms_give_a_remote_class() -> None:
    assert isinstance(parl.remote_class(Plain), RemoteClass)
    assert isinstance(parl.remote_class()(Plain), RemoteClass)


def test_positional_non_callable_is_ignored_like_parl() -> None:
    assert isinstance(parl.remote_class(10)(Plain), RemoteClass)


def test_inside_a_job_the_class_is_returned_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XPARL", "True")
    assert parl.remote_class(Plain) is Plain
    assert parl.remote_class(n_gpu=0)(Plain) is Plain


def test_remote_class_keeps_the_original_and_its_names() -> None:
    remote = parl.remote_class(Plain)
    assert remote._original is Plain
    assert remote.__name__ == "Plain"
    assert remote.__qualname__ == "Plain"
    assert remote.__module__ == __name__
    assert remote.__doc__ == "A plain class."


def test_pickling_the_remote_class_ships_the_plain_class() -> None:
    remote = parl.remote_class(Plain)
    assert cloudpickle.loads(cloudpickle.dumps(remote)) is Plain

    def uses_the_decorated_name() -> str:
        return remote().hello()

    # Shipped code that refers to the decorated name gets the plain class on the other side.
    restored = cloudpickle.loads(cloudpickle.dumps(uses_the_decorated_name))
    assert restored() == "hello"


def test_creating_without_connect_says_how_to_connect() -> None:
    remote = parl.remote_class(Plain)
    with pytest.raises(AssertionError, match=r"Cannot get the client.*parl_rs\.connect"):
        remote()


def test_reserved_keyword_arguments_are_refused() -> None:
    remote = parl.remote_class(Plain)
    with pytest.raises(AssertionError, match="_xparl_timeout"):
        remote(_xparl_timeout=3)


@parl.remote_class
class Decorated:
    pass


def test_importable_classes_are_referenced_others_shipped_by_value() -> None:
    from parl_rs.proxy import _class_ref

    assert _class_ref(Plain) == ("by_ref", __name__, "Plain", __file__)
    # The module holds the RemoteClass; the job will find the plain class under that name.
    assert _class_ref(Decorated._original) == ("by_ref", __name__, "Decorated", __file__)

    class Local:
        pass

    assert _class_ref(Local) is Local
    renamed = type("NotInTheModule", (), {"__module__": __name__})
    assert _class_ref(renamed) is renamed


def test_a_class_from_a_notebook_is_shipped_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # PARL's notebook tests patch this function to take the notebook path.
    from parl_rs.proxy import _class_ref
    from parl_rs.remote import remote_class_serialization

    assert not remote_class_serialization.is_implemented_in_notebook(Plain)
    in_a_cell = type("InACell", (), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "__file__", None, raising=False)
    assert remote_class_serialization.is_implemented_in_notebook(in_a_cell)
    monkeypatch.setattr(remote_class_serialization, "is_implemented_in_notebook", lambda _: True)
    assert _class_ref(Plain) is Plain
