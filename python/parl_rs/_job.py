"""The Python side of a job process (`python -m parl_rs._job`, started by a worker).

The native `JobRuntime` does the networking and heartbeats; this module loads the user's class
and answers one request at a time. See `parl_rs.proxy` for the payload of each request.

Only `Exception` is caught around user code: `SystemExit` and `KeyboardInterrupt` end the job,
which is how `sys.exit()` in a method kills its actor (the client then sees `ActorDiedError`).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from types import TracebackType
from typing import Any, Callable, Optional

from parl_rs import _core
from parl_rs.exceptions import ProtocolError
from parl_rs.keys import KEY_ENV
from parl_rs.remote import RemoteClass, class_methods
from parl_rs.serialization import (
    DeserializationError,
    SerializationError,
    dumps,
    find_unpicklable,
    loads,
)

_RESERVED_PREFIX = "_xparl"

Failure = tuple[str, str, str, str]  # (kind, exc_type, message, traceback)


class _MissingAttribute(Exception):
    """The requested attribute does not exist (reported as an "attribute" failure)."""

    def __init__(self, error: AttributeError) -> None:
        super().__init__(str(error))
        self.error = error


class _Actor:
    """The one user object this job serves, and the method names its proxy knows about."""

    def __init__(self) -> None:
        self.instance: Any = None
        self.class_methods: frozenset[str] = frozenset()
        self.shadowed: frozenset[str] = frozenset()

    def dispatch(self, op: str, name: str, frames: list) -> tuple[list, Optional[Failure]]:
        """Run one request; return the reply frames and a failure report (or None)."""
        handler = _HANDLERS.get(op)
        if handler is None:
            return [], _failure("user", ProtocolError(f"unknown request {op!r}"))
        try:
            payload = loads(frames) if frames else None
        except DeserializationError as exc:
            cause = exc.__cause__ or exc
            return [], _failure("deserialize", cause, f"cannot unpickle the arguments: {exc}")
        try:
            reply = handler(self, name, payload)
        except _MissingAttribute as exc:
            return [], _failure("attribute", exc.error, with_traceback=False)
        except Exception as exc:
            return [], _failure("user", exc)
        try:
            return dumps(reply), None
        except SerializationError as exc:
            culprit = find_unpicklable([(_result_label(op, name), _result_value(op, reply))])
            message = f"cannot pickle the result of `{name}`: {culprit or exc}"
            return [], _failure("serialize", exc, message, with_traceback=False)

    def init(self, _class_name: str, payload: tuple) -> list[str]:
        if self.instance is not None:
            raise RuntimeError("this job already serves an actor")
        class_ref, args, kwargs = payload
        cls = _load_class(class_ref)
        instance = cls(*args, **kwargs)
        reserved = [key for key in _instance_dict(instance) if key.startswith(_RESERVED_PREFIX)]
        assert not reserved, (
            f"Attribute names starting with `_xparl` are reserved by parl_rs; "
            f"rename {', '.join(reserved)} in {cls.__qualname__}."
        )
        self.instance = instance
        self.class_methods = class_methods(cls)
        self.shadowed = self._shadowed()
        return sorted(self.class_methods - self.shadowed)

    def call(self, name: str, payload: tuple) -> tuple[Any, Optional[list[str]]]:
        args, kwargs = payload
        result = self._lookup(name)(*args, **kwargs)
        return result, self._methods_update()

    def getattr(self, name: str, _payload: None) -> tuple[bool, Any]:
        value = self._lookup(name)
        # Instance attributes are data even when callable (PARL returns their value).
        if callable(value) and name not in _instance_dict(self.instance):
            return True, None
        return False, value

    def setattr(self, name: str, value: Any) -> Optional[list[str]]:
        setattr(self._initialised(), name, value)
        return self._methods_update()

    def _initialised(self) -> Any:
        if self.instance is None:
            raise RuntimeError("the actor has not been initialised")
        return self.instance

    def _lookup(self, name: str) -> Any:
        instance = self._initialised()
        try:
            return getattr(instance, name)
        except AttributeError as exc:
            raise _MissingAttribute(exc) from exc

    def _shadowed(self) -> frozenset[str]:
        return self.class_methods & frozenset(_instance_dict(self.instance))

    def _methods_update(self) -> Optional[list[str]]:
        """The new method list if instance attributes started or stopped shadowing methods."""
        shadowed = self._shadowed()
        if shadowed == self.shadowed:
            return None
        self.shadowed = shadowed
        return sorted(self.class_methods - shadowed)


_HANDLERS: dict[str, Callable[[_Actor, str, Any], Any]] = {
    "init": _Actor.init,
    "call": _Actor.call,
    "getattr": _Actor.getattr,
    "setattr": _Actor.setattr,
}


def _load_class(class_ref: Any) -> type:
    """Import the class named by ("by_ref", module, qualname), or take the shipped class."""
    if isinstance(class_ref, tuple) and class_ref[:1] == ("by_ref",):
        _, module_name, qualname = class_ref
        found: Any = importlib.import_module(module_name)
        for attr in qualname.split("."):
            found = getattr(found, attr)
        class_ref = found
    # XPARL=True makes `@remote_class` return the plain class here; unwrap in case it did not.
    if isinstance(class_ref, RemoteClass):
        class_ref = class_ref._original
    if not isinstance(class_ref, type):
        raise TypeError(f"expected a class to instantiate, got {class_ref!r}")
    return class_ref


def _instance_dict(instance: Any) -> dict:
    return getattr(instance, "__dict__", None) or {}


def _result_label(op: str, name: str) -> str:
    return f"the value of attribute `{name}`" if op == "getattr" else "the return value"


def _result_value(op: str, reply: Any) -> Any:
    return reply[1] if op == "getattr" else reply[0]


def _failure(
    kind: str,
    exc: BaseException,
    message: Optional[str] = None,
    *,
    with_traceback: bool = True,
) -> Failure:
    exc_class = type(exc)
    exc_type = f"{exc_class.__module__}.{exc_class.__qualname__}"
    remote_traceback = _user_traceback(exc) if with_traceback else ""
    return (kind, exc_type, str(exc) if message is None else message, remote_traceback)


def _user_traceback(exc: BaseException) -> str:
    """The traceback without this module's own frames, which mean nothing to the user."""
    tb: Optional[TracebackType] = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _serve(runtime: _core.JobRuntime) -> None:
    os.chdir(runtime.workdir)
    sys.path.insert(0, runtime.workdir)
    actor = _Actor()
    while True:
        request = runtime.next_request()
        if request is None:  # the actor was released or the worker is gone
            return
        request_id, op, name, frames, env = request
        # Before the payload is unpickled: unpickling may import the user's modules (torch
        # reads CUDA_VISIBLE_DEVICES once, at import).
        if env:
            os.environ.update(env)
        reply, failure = actor.dispatch(op, name, frames)
        runtime.reply(request_id, reply, failure)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def main() -> None:
    # Set before any user module is imported, so `@remote_class` returns plain classes here.
    os.environ["XPARL"] = "True"
    for stream in (sys.stdout, sys.stderr):
        # The job's output goes to a log file: line buffering keeps it readable while it runs.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    code = 0
    try:
        runtime = _core.JobRuntime.start()
        # The runtime holds the cluster key now; the user's code has no business with it.
        os.environ.pop(KEY_ENV, None)
        _serve(runtime)
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        code = 1
    _flush()
    # os._exit: skip interpreter teardown, which could block on the user's non-daemon threads.
    os._exit(code)


if __name__ == "__main__":
    main()
