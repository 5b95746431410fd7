"""The exception tree and how a job's failure report becomes the exception a caller sees."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

import parl_rs as parl
from parl_rs.exceptions import build_remote_error


class Outer:
    class InnerError(Exception):
        pass


class FinalError(Exception):
    """An exception class that refuses subclasses."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        raise TypeError("FinalError cannot be subclassed")


def failure(kind: str = "user", exc_type: str = "builtins.ValueError", message: str = "bad"):
    traceback = (
        'Traceback (most recent call last):\n  File "actor.py", line 3, in step\n'
        f"{exc_type.rpartition('.')[2]}: {message}\n"
    )
    return SimpleNamespace(kind=kind, exc_type=exc_type, message=message, traceback=traceback)


def test_remote_error_keeps_parls_signature_and_message() -> None:
    error = parl.RemoteError("step", "ValueError: bad")
    assert str(error) == "[Error occurred in xparl, when calling function `step`]:\nValueError: bad"
    assert (error.func_name, error.error_info) == ("step", "ValueError: bad")
    assert error.remote_type is None and error.remote_traceback is None and error.actor_id is None


def test_native_layer_constructors() -> None:
    died = parl.ActorDiedError("step", "the job process is gone")
    assert isinstance(died, parl.RemoteError) and "gone" in str(died)
    assert str(parl.ResourceError("no vacant cpu")) == "no vacant cpu"
    connect = parl.ConnectError("cannot reach 127.0.0.1:1")
    assert isinstance(connect, ConnectionError) and str(connect) == "cannot reach 127.0.0.1:1"
    assert str(parl.ProtocolError("version 9")) == "version 9"


def test_remote_attribute_error_is_an_attribute_error() -> None:
    assert issubclass(parl.RemoteAttributeError, AttributeError)
    assert issubclass(parl.RemoteAttributeError, parl.RemoteError)


def test_user_failure_is_catchable_as_the_original_type() -> None:
    error = build_remote_error("step", failure(), actor_id="actor-1")
    assert isinstance(error, ValueError)
    assert isinstance(error, parl.RemoteError)
    assert error.func_name == "step"
    assert error.remote_type == "builtins.ValueError"
    assert error.actor_id == "actor-1"
    assert "in step" in error.remote_traceback
    text = str(error)
    header = "[Error occurred in xparl, when calling function `step`]:"
    assert text.startswith(f"{header}\nValueError: bad")
    assert "Remote traceback" in text and 'File "actor.py"' in text


def test_dynamic_subclasses_are_cached() -> None:
    first = build_remote_error("a", failure())
    second = build_remote_error("b", failure())
    assert type(first) is type(second)


def test_key_error_subclass_keeps_the_remote_error_message() -> None:
    error = build_remote_error("lookup", failure(exc_type="builtins.KeyError", message="'k'"))
    assert isinstance(error, KeyError)
    # KeyError's own str() would show repr(args); the xparl message must win.
    assert str(error).startswith("[Error occurred in xparl, when calling function `lookup`]")


def test_os_error_subclass_does_not_misread_the_arguments() -> None:
    error = build_remote_error("open", failure(exc_type="builtins.FileNotFoundError"))
    assert isinstance(error, FileNotFoundError) and isinstance(error, OSError)
    assert error.errno is None  # not "open", as OSError.__init__ would have made it
    assert error.func_name == "open"


def test_nested_exception_classes_are_resolved() -> None:
    error = build_remote_error("f", failure(exc_type=f"{__name__}.Outer.InnerError"))
    assert isinstance(error, Outer.InnerError)


@pytest.mark.parametrize(
    "exc_type",
    [
        "no_such_module_here.SomeError",  # not imported here: never imported just for an error
        "builtins.int",  # not an exception
        "builtins.KeyboardInterrupt",  # not an Exception subclass
        "parl_rs.exceptions.RemoteError",  # already a RemoteError
        f"{__name__}.FinalError",  # refuses subclasses: falls back
        "",
    ],
)
def test_unresolvable_types_fall_back_to_plain_remote_error(exc_type: str) -> None:
    error = build_remote_error("f", failure(exc_type=exc_type))
    assert type(error) is parl.RemoteError
    assert "bad" in str(error)


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("attribute", parl.RemoteAttributeError),
        ("serialize", parl.RemoteSerializeError),
        ("deserialize", parl.RemoteDeserializeError),
    ],
)
def test_failure_kinds_map_to_their_classes(kind: str, cls: type) -> None:
    error = build_remote_error("f", failure(kind=kind, exc_type="builtins.AttributeError"))
    assert type(error) is cls


def test_remote_errors_survive_pickling() -> None:
    error = build_remote_error("step", failure(), actor_id="actor-1")
    restored = pickle.loads(pickle.dumps(error))
    assert isinstance(restored, ValueError) and isinstance(restored, parl.RemoteError)
    assert (restored.func_name, restored.actor_id) == ("step", "actor-1")
    assert str(restored) == str(error)
    died = pickle.loads(pickle.dumps(parl.ActorDiedError("f", "gone")))
    assert type(died) is parl.ActorDiedError and died.error_info == "gone"
