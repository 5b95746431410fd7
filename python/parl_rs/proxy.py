"""The actor handle (`ActorProxy`) and one remote method (`RemoteMethod`).

Every internal attribute starts with the reserved `_xparl` prefix so it can never collide with
a name of the user's class. Every request (init, call, getattr, setattr) goes through
`ActorProxy._xparl_request`, the one call path: it sends the request, which never blocks, then
either waits for the reply here or returns a `parl_rs.future.FutureObject`; either way
`ActorProxy._xparl_settle` is the one place that unpickles a reply and turns failures into
exceptions.

Future mode (`@remote_class(wait=False)`): the constructor and method calls return at once.
Requests queue in the native actor and reach the job in the order they were made, even those
made before the master has granted a job; the job runs them one at a time. Attribute writes
are requests like calls (ordered with them, not waited for); attribute reads wait for their
reply, so they see the effects of the calls made before them.

Lifetime: deleting the proxy, or `destroy()`, releases the actor (its job exits, its slot
returns to the pool). A future-mode call in flight holds its proxy until it completes, so
`Actor().method()` works on its own; `destroy()` releases at once, failing calls in flight
with `ActorDiedError`.

Payloads exchanged with `parl_rs._job` (both ends live in this package):

* init:    request (class_ref, args, kwargs)  -> reply [method names]
* call:    request (args, kwargs)             -> reply (result, methods or None)
* getattr: request no frames                  -> reply (is_method, value or None)
* setattr: request value                      -> reply methods or None

"methods" is re-sent only when instance attributes start or stop shadowing methods.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import weakref
from typing import Any, Callable, Iterable, Optional

from parl_rs import client as _client
from parl_rs import future as _future
from parl_rs.exceptions import (
    ActorDiedError,
    RemoteDeserializeError,
    RemoteError,
    RemoteSerializeError,
    build_remote_error,
)
from parl_rs.remote import ActorResources, class_methods
from parl_rs.serialization import (
    DeserializationError,
    SerializationError,
    dumps,
    find_unpicklable,
    loads,
)

logger = logging.getLogger(__name__)

_RESERVED_PREFIX = "_xparl"


def create_actor(
    cls: type,
    args: tuple,
    kwargs: dict,
    resources: Optional[ActorResources] = None,
    *,
    wait: bool = True,
) -> ActorProxy:
    """Create an actor running an instance of `cls` on a job with `resources`; return its proxy.

    With `wait` (the default) this returns once `__init__` has run in the job; otherwise at
    once, and `__init__` runs in the job before the calls made on the proxy.
    """
    for key in kwargs:
        assert not key.startswith(_RESERVED_PREFIX), (
            f"The keyword argument `{key}` is reserved: names starting with `_xparl` are used "
            "internally by parl_rs."
        )
    client = _client.get_global_client()
    # Pickle first: a bad argument must not cost a wait for a vacant slot.
    frames = _encode("init", "__init__", (_class_ref(cls), args, kwargs))
    resources = resources or ActorResources()
    # Returns at once: the master's grant and the connection to the job follow in the background.
    handle = client.create_actor(
        n_cpu=resources.n_cpu,
        n_gpu=resources.n_gpu,
        timeout=_client.create_timeout(),
        class_name=cls.__qualname__,
        max_memory=resources.max_memory,
    )
    proxy = ActorProxy(handle, cls.__qualname__, wait=wait)
    if not wait:
        proxy._xparl_start_init(cls, frames)
        return proxy
    try:
        proxy._xparl_request(
            "init", cls.__qualname__, frames, label="__init__", then=proxy._xparl_update_methods
        )
    except BaseException:
        # Also on KeyboardInterrupt: the slot, or the place in the master's queue, goes back.
        handle.release()
        raise
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

    def __init__(self, handle: Any, class_name: str, *, wait: bool = True) -> None:
        object.__setattr__(self, "_xparl_handle", handle)
        object.__setattr__(self, "_xparl_class_name", class_name)
        object.__setattr__(self, "_xparl_methods", frozenset())
        object.__setattr__(self, "_xparl_wait", wait)
        # Future mode: the init request, whose failure every later request reports.
        object.__setattr__(self, "_xparl_init", None)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails. Dunder and reserved names never go remote:
        # Python and libraries probe them (copy, pickle, IPython) and expect AttributeError.
        if name.startswith(_RESERVED_PREFIX) or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        if name in self._xparl_methods:
            return RemoteMethod(self, name)
        if name == "destroy":  # unless the class has its own `destroy`
            return self._xparl_destroy
        is_method, value = self._xparl_request("getattr", name, [], block=True)
        return RemoteMethod(self, name) if is_method else value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith(_RESERVED_PREFIX):
            object.__setattr__(self, name, value)
            return
        frames = _encode("setattr", name, value)
        if self._xparl_wait:
            self._xparl_request("setattr", name, frames, then=self._xparl_update_methods)
            return
        # The instance attribute will shadow a method of that name; the reply confirms it.
        self._xparl_update_methods(self._xparl_methods - {name})
        written = self._xparl_request("setattr", name, frames, then=self._xparl_update_methods)
        written.add_done_callback(_warn_if_failed)

    def __dir__(self) -> Iterable[str]:
        return sorted(self._xparl_methods)

    def __repr__(self) -> str:
        handle = self._xparl_handle
        where = f"id={handle.actor_id} host={handle.hostname}" if handle.actor_id else "no job yet"
        return f"<parl_rs actor {self._xparl_class_name} {where}>"

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

    def _xparl_destroy(self) -> None:
        """Release the actor now: its job exits and its slot returns to the pool. Calls still
        in flight fail with `ActorDiedError`, and so do later ones. Idempotent."""
        self._xparl_handle.release()

    def _xparl_update_methods(self, methods: Optional[Iterable[str]]) -> None:
        if methods is not None:
            object.__setattr__(self, "_xparl_methods", frozenset(methods))

    def _xparl_call_result(self, reply: tuple) -> Any:
        result, methods = reply
        if methods is not None:
            self._xparl_update_methods(methods)
        return result

    def _xparl_start_init(self, cls: type, frames: list) -> None:
        """Future mode: send `__init__` without waiting for it."""
        # The job's method list comes with the init reply; until then, the class's.
        self._xparl_update_methods(class_methods(cls))
        pending = self._xparl_handle.submit("init", self._xparl_class_name, frames)
        object.__setattr__(self, "_xparl_init", pending)
        # Watched through a weak reference: deleting the proxy while its actor still waits for
        # a job must release it at once.
        settle = functools.partial(_settle_init, weakref.ref(self), pending)
        _future.watch(pending, settle, "__init__")

    def _xparl_request(
        self,
        op: str,
        name: str,
        frames: list,
        *,
        block: Optional[bool] = None,
        label: Optional[str] = None,
        then: Optional[Callable[[Any], Any]] = None,
    ) -> Any:
        """Send one request; return its value, or a `FutureObject` of it.

        `frames` come from `_encode`. The request blocks if `block` is True, or if it is None
        and the actor is not in future mode. `label` is the name reported in errors (`__init__`
        for "init", whose `name` is the class name). `then` turns the unpickled reply into the
        value (it runs on the completion thread for futures).
        """
        label = label or name
        blocking = self._xparl_wait if block is None else block
        # A blocking call leaves its arguments alone until the reply: large buffers (numpy
        # arrays) are then sent without a copy.
        pending = self._xparl_handle.submit(op, name, frames, lend=blocking)
        settle = functools.partial(self._xparl_settle, pending, label, then)
        if blocking:
            return settle()
        return _future.watch(pending, settle, label)

    def _xparl_settle(
        self, pending: Any, label: str, then: Optional[Callable[[Any], Any]] = None
    ) -> Any:
        """The value of a request, waiting for its reply; or raise its error."""
        try:
            frames, failure = pending.wait()
            if failure is not None:
                raise build_remote_error(label, failure, actor_id=self._xparl_handle.actor_id)
        except Exception:
            init_error = self._xparl_init_error()
            if init_error is None or pending is self._xparl_init:
                raise
            message = f"the actor's `__init__` failed, so `{label}` did not run:\n"
            raise ActorDiedError(
                label, message + init_error.error_info, actor_id=init_error.actor_id
            ) from init_error
        try:
            reply = loads(frames)
        except DeserializationError as exc:
            raise RemoteDeserializeError(
                label, f"cannot unpickle the reply of `{label}` here: {exc}"
            ) from exc
        return reply if then is None else then(reply)

    def _xparl_init_error(self) -> Optional[RemoteError]:
        """Future mode: the error `__init__` raised in the job, if it did. The actor is then
        released: a job without an instance serves nothing."""
        init = self._xparl_init
        if init is None or not init.done():
            return None
        try:
            _, failure = init.wait()
        except Exception:  # no job could be had: each request carries that error itself
            return None
        if failure is None:
            return None
        self._xparl_handle.release()
        return build_remote_error("__init__", failure, actor_id=self._xparl_handle.actor_id)


def _settle_init(proxy_ref: weakref.ref, pending: Any) -> None:
    proxy = proxy_ref()
    if proxy is not None:
        proxy._xparl_settle(pending, "__init__", proxy._xparl_update_methods)


def _warn_if_failed(written: _future.FutureObject) -> None:
    """A future-mode attribute write has no caller waiting for it: report its failure here."""
    error = written.exception()
    if error is not None:
        logger.warning("%s", error)


class RemoteMethod:
    """One method of an actor; calling it runs the method in the actor's job."""

    __slots__ = ("_xparl_actor", "_xparl_name")

    def __init__(self, actor: ActorProxy, name: str) -> None:
        self._xparl_actor = actor
        self._xparl_name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The result; a `FutureObject` of it if the actor is in future mode."""
        actor, name = self._xparl_actor, self._xparl_name
        frames = _encode("call", name, (args, kwargs))
        # The two common cases, kept short: one of them runs on every call.
        if actor._xparl_wait:
            pending = actor._xparl_handle.submit("call", name, frames, True)
            return actor._xparl_call_result(actor._xparl_settle(pending, name))
        pending = actor._xparl_handle.submit("call", name, frames, False)
        settle = functools.partial(actor._xparl_settle, pending, name, actor._xparl_call_result)
        return _future.watch(pending, settle, name)

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
