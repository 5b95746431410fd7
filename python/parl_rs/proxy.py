"""The actor handle (`ActorProxy`) and one remote method (`RemoteMethod`).

Every internal attribute starts with the reserved `_xparl` prefix so it can never collide with
a name of the user's class, and every request (init, call, getattr, setattr) goes through
`ActorProxy._xparl_request`, the one place that pickles, sends, and turns failures into
exceptions.

Payloads exchanged with `parl_rs._job` (both ends live in this package):

* init:    request (class_ref, args, kwargs)  -> reply [method names]
* call:    request (args, kwargs)             -> reply (result, methods or None)
* getattr: request no frames                  -> reply (is_method, value or None)
* setattr: request value                      -> reply methods or None

"methods" is re-sent only when instance attributes start or stop shadowing methods.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterable, Optional

from parl_rs import client as _client
from parl_rs.exceptions import (
    RemoteDeserializeError,
    RemoteSerializeError,
    build_remote_error,
)
from parl_rs.remote import ActorResources
from parl_rs.serialization import (
    DeserializationError,
    SerializationError,
    dumps,
    find_unpicklable,
    loads,
)

_RESERVED_PREFIX = "_xparl"


def create_actor(
    cls: type, args: tuple, kwargs: dict, resources: Optional[ActorResources] = None
) -> ActorProxy:
    """Reserve a job (with `resources`), initialise an instance of `cls` in it, return its proxy."""
    for key in kwargs:
        assert not key.startswith(_RESERVED_PREFIX), (
            f"The keyword argument `{key}` is reserved: names starting with `_xparl` are used "
            "internally by parl_rs."
        )
    client = _client.get_global_client()
    # Pickle first: a bad argument must not cost a wait for a vacant slot.
    frames = _encode("init", "__init__", (_class_ref(cls), args, kwargs))
    resources = resources or ActorResources()
    handle = client.create_actor(
        n_cpu=resources.n_cpu,
        n_gpu=resources.n_gpu,
        timeout=_client.create_timeout(),
        class_name=cls.__qualname__,
        max_memory=resources.max_memory,
    )
    proxy = ActorProxy(handle, cls.__qualname__)
    try:
        methods = proxy._xparl_request("init", cls.__qualname__, frames, label="__init__")
    except BaseException:
        # Also on KeyboardInterrupt: the slot must go back to the pool at once.
        handle.release()
        raise
    proxy._xparl_methods = frozenset(methods)
    return proxy


def _class_ref(cls: type) -> Any:
    """How the job finds the class: by import when it can, else the class itself by value.

    Importable classes are imported in the job (shipped sibling files are on its sys.path), so
    their module keeps one identity there. Classes of `__main__` or defined in a function are
    shipped by value by cloudpickle, which never re-runs the user's top-level script code.
    """
    if _importable(cls):
        return ("by_ref", cls.__module__, cls.__qualname__)
    return cls


def _importable(cls: type) -> bool:
    """True if the job can find `cls` by importing its module and following its qualname."""
    module = sys.modules.get(cls.__module__)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__ or module is None:
        return False
    found: Any = module
    for attr in cls.__qualname__.split("."):
        found = getattr(found, attr, None)
    # Here the module holds the decorated RemoteClass; in the job it holds the class itself.
    return found is cls or getattr(found, "_original", None) is cls


class ActorProxy:
    """The local handle of one remote actor: attribute access and method calls go remote."""

    def __init__(self, handle: Any, class_name: str) -> None:
        object.__setattr__(self, "_xparl_handle", handle)
        object.__setattr__(self, "_xparl_class_name", class_name)
        object.__setattr__(self, "_xparl_methods", frozenset())

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails. Dunder and reserved names never go remote:
        # Python and libraries probe them (copy, pickle, IPython) and expect AttributeError.
        if name.startswith(_RESERVED_PREFIX) or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        if name in self._xparl_methods:
            return RemoteMethod(self, name)
        is_method, value = self._xparl_request("getattr", name, [])
        return RemoteMethod(self, name) if is_method else value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith(_RESERVED_PREFIX):
            object.__setattr__(self, name, value)
            return
        frames = _encode("setattr", name, value)
        self._xparl_update_methods(self._xparl_request("setattr", name, frames))

    def __dir__(self) -> Iterable[str]:
        return sorted(self._xparl_methods)

    def __repr__(self) -> str:
        handle = self._xparl_handle
        return (
            f"<parl_rs actor {self._xparl_class_name} id={handle.actor_id} host={handle.hostname}>"
        )

    def __reduce__(self) -> Any:
        raise TypeError(
            "An actor proxy cannot be pickled or sent to another actor; pass the data it needs, "
            "or create the actor where it is used."
        )

    def __del__(self) -> None:
        # Dropping the native handle releases the actor too; this only makes it prompt even if
        # something else still holds the handle. `release()` is idempotent and never blocks.
        handle = self.__dict__.get("_xparl_handle")
        if handle is not None:
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
                handle.release()

    def _xparl_update_methods(self, methods: Optional[list[str]]) -> None:
        if methods is not None:
            object.__setattr__(self, "_xparl_methods", frozenset(methods))

    def _xparl_request(
        self, op: str, name: str, frames: list, *, label: Optional[str] = None
    ) -> Any:
        """Send one request to the job and return its unpickled reply.

        `frames` come from `_encode`. `label` is the name reported in errors (`__init__` for
        "init", whose `name` is the class name). Remote failures raise the exception
        `build_remote_error` makes.
        """
        label = label or name
        handle = self._xparl_handle
        reply, failure = handle.request(op, name, frames)
        if failure is not None:
            raise build_remote_error(label, failure, actor_id=handle.actor_id)
        try:
            return loads(reply)
        except DeserializationError as exc:
            raise RemoteDeserializeError(
                label, f"cannot unpickle the reply of `{label}` here: {exc}"
            ) from exc


class RemoteMethod:
    """One method of an actor; calling it runs the method in the actor's job."""

    __slots__ = ("_xparl_actor", "_xparl_name")

    def __init__(self, actor: ActorProxy, name: str) -> None:
        self._xparl_actor = actor
        self._xparl_name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        actor, name = self._xparl_actor, self._xparl_name
        result, methods = actor._xparl_request("call", name, _encode("call", name, (args, kwargs)))
        actor._xparl_update_methods(methods)
        return result

    @property
    def __name__(self) -> str:
        return self._xparl_name

    def __repr__(self) -> str:
        return f"<parl_rs remote method {self._xparl_actor._xparl_class_name}.{self._xparl_name}>"


def _encode(op: str, label: str, payload: Any) -> list:
    """Pickle a request payload; failures raise `RemoteSerializeError` before anything is sent."""
    try:
        return dumps(payload)
    except SerializationError as exc:
        culprit = find_unpicklable(_labelled_parts(op, payload)) or str(exc)
        raise RemoteSerializeError(
            label, f"cannot pickle the arguments of `{label}`: {culprit}"
        ) from exc


def _labelled_parts(op: str, payload: Any) -> Iterable[tuple[str, Any]]:
    """The pieces of a payload with names a user recognises, to point at the bad one."""
    if op == "setattr":
        yield "the value", payload
        return
    args, kwargs = payload[-2], payload[-1]
    if op == "init":
        yield "the class", payload[0]
    for index, arg in enumerate(args):
        yield f"positional argument {index}", arg
    for key, arg in kwargs.items():
        yield f"keyword argument `{key}`", arg
