"""The actor handle (`ActorProxy`) and one remote method (`RemoteMethod`).

Every internal attribute starts with the reserved `_xparl` prefix so it can never collide with
a name of the user's class. Every request (init, call, getattr, setattr) goes through
`ActorProxy._xparl_request`, the one call path: it sends the request, which never blocks, then
either waits for the reply here or returns a `parl_rs.future.FutureObject`; either way
`ActorProxy._xparl_settle` is the one place that unpickles a reply and turns failures into
exceptions.

Errors end the actor, as in PARL: when a method (or an attribute read or write) raises, or its
result cannot be pickled, the caller gets the error, the job exits (its slot is free at once),
and every later request on the proxy raises at once, naming that error. With
`@remote_class(keep_alive_on_error=True)` the actor stays instead. A missing attribute or
arguments the job cannot unpickle are no errors of the actor's code: it stays either way.

Future mode (`@remote_class(wait=False)`): the constructor returns at once, and `__init__`
runs in the job when a slot is granted. The first use of the proxy (a call, an attribute read
or write) waits for `__init__` to finish, as PARL does: it raises `FutureFunctionError` if
`__init__` failed, and an attribute set by `__init__` reads as its value even where a method
of that name exists. From then on calls return `FutureObject`s at once, are pipelined, and
reach the job in the order they were made; the job runs them one at a time. Attribute writes
are requests like calls (ordered with them, not waited for); attribute reads wait for their
reply, so they see the effects of the calls made before them. Once the actor has ended, a call
raises `FutureFunctionError` at once.

`await` on a blocking actor: inside `async def`, a call of an actor's method is awaitable:
write `await actor.method(...)`; from a plain `def` it returns the value. `RemoteMethod.__call__`
looks at the code that makes the call (its frame's `co_flags`, a cheap read): a coroutine's
call is sent without waiting and returns a `FutureObject`, as in future mode (same errors as the
blocking call, raised by `await`; the timeout applies). Not whether an event loop runs: one
always does in a Jupyter kernel, where PARL code must keep blocking. Attribute reads and writes,
and the constructor, stay blocking.

Lifetime: deleting the proxy, or `destroy()`, releases the actor (its job exits, its slot
returns to the pool). A future-mode call in flight holds its proxy until it completes, so
`Actor().method()` works on its own; `destroy()` releases at once, failing calls in flight
with `ActorDiedError`.

What each kind of request carries, and its reply, is the call envelope of the wire protocol
(`parl_core::protocol::call`), which `parl_rs._job` answers and native clients send too.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import weakref
from typing import Any, Callable, Iterable, Optional

from parl_rs import _deadlines
from parl_rs import client as _client
from parl_rs import future as _future
from parl_rs._core import CallKind
from parl_rs.exceptions import (
    ActorDiedError,
    CallTimeoutError,
    FutureFunctionError,
    RemoteDeserializeError,
    RemoteError,
    RemoteSerializeError,
    build_remote_error,
)
from parl_rs.remote import remote_class_serialization
from parl_rs.remote.remote_decorator import ActorResources, check_timeout, class_methods
from parl_rs.serialization import (
    DeserializationError,
    SerializationError,
    dumps,
    find_unpicklable,
    loads,
)

logger = logging.getLogger(__name__)

_RESERVED_PREFIX = "_xparl"
# Failures of the actor's own code (a raised exception, a result that cannot be pickled); the
# others ("attribute": no such attribute, "deserialize": arguments the job cannot unpickle)
# leave the actor as it was.
_FATAL_KINDS = frozenset({"user", "serialize"})


def create_actor(
    cls: type,
    args: tuple,
    kwargs: dict,
    resources: Optional[ActorResources] = None,
    *,
    wait: bool = True,
    keep_alive_on_error: bool = False,
    call_timeout: Optional[float] = None,
    max_concurrency: int = 1,
) -> ActorProxy:
    """Create an actor running an instance of `cls` on a job with `resources`; return its proxy.

    With `wait` (the default) this returns once `__init__` has run in the job; otherwise at
    once, and `__init__` runs in the job before the calls made on the proxy. An exception
    raised by the actor's code ends it unless `keep_alive_on_error`; so does a method call
    that takes longer than `call_timeout` seconds.
    """
    for key in kwargs:
        assert not key.startswith(_RESERVED_PREFIX), (
            f"The keyword argument `{key}` is reserved: names starting with `_xparl` are used "
            "internally by parl_rs."
        )
    client = _client.get_global_client()
    # Pickle first: a bad argument must not cost a wait for a vacant slot.
    frames = _encode(CallKind.Init, "__init__", (_class_ref(cls), args, kwargs))
    resources = resources or ActorResources()
    code = _client.code_context()
    # Returns at once: the master's grant and the connection to the job follow in the background.
    handle = client.create_actor(
        n_cpu=resources.n_cpu,
        n_gpu=resources.n_gpu,
        timeout=_client.create_timeout(),
        class_name=cls.__qualname__,
        max_memory=resources.max_memory,
        keep_alive_on_error=keep_alive_on_error,
        max_concurrency=max_concurrency,
        sys_path=code.sys_path,
        sources=list(code.sources.items()),
    )
    proxy = ActorProxy(
        handle,
        cls.__qualname__,
        wait=wait,
        keep_alive=keep_alive_on_error,
        call_timeout=call_timeout,
    )
    if not wait:
        proxy._xparl_start_init(cls, frames)
        return proxy
    try:
        update = proxy._xparl_update_methods
        proxy._xparl_request(CallKind.Init, cls.__qualname__, frames, label="__init__", then=update)
    except BaseException:
        # Also on KeyboardInterrupt: the slot, or the place in the master's queue, goes back.
        handle.release()
        raise
    return proxy


def _class_ref(cls: type) -> Any:
    """How the job finds the class: by import when it can, else the class itself by value.

    Importable classes are imported in the job (shipped files and the client's sys.path are on
    its sys.path), so their module keeps one identity there. Classes of `__main__` or defined
    in a function are shipped by value by cloudpickle, which never re-runs the user's
    top-level script code. The module's file here is named in the job's error if the job
    cannot import it.
    """
    if not remote_class_serialization.is_implemented_in_notebook(cls) and _importable(cls):
        module_file = sys.modules[cls.__module__].__file__
        return ("by_ref", cls.__module__, cls.__qualname__, module_file)
    return cls


def _importable(obj: Any) -> bool:
    """True if the job can find `obj` (a class or a function) by importing its module and
    following its qualname."""
    module = sys.modules.get(obj.__module__)
    if obj.__module__ == "__main__" or "<locals>" in obj.__qualname__ or module is None:
        return False
    found: Any = module
    for attr in obj.__qualname__.split("."):
        found = getattr(found, attr, None)
    # Here the module holds the decorated RemoteClass or RemoteFunction; in the job it holds
    # the class or function itself.
    undecorated = getattr(found, "_original", None) or getattr(found, "_xparl_func", None)
    return found is obj or undecorated is obj


class ActorProxy:
    """The local handle of one remote actor: attribute access and method calls go remote."""

    def __init__(
        self,
        handle: Any,
        class_name: str,
        *,
        wait: bool = True,
        keep_alive: bool = False,
        call_timeout: Optional[float] = None,
    ) -> None:
        object.__setattr__(self, "_xparl_handle", handle)
        object.__setattr__(self, "_xparl_class_name", class_name)
        object.__setattr__(self, "_xparl_methods", frozenset())
        object.__setattr__(self, "_xparl_wait", wait)
        object.__setattr__(self, "_xparl_keep_alive", keep_alive)
        # Seconds a method call may take (None: no limit); `RemoteMethod.options` overrides it.
        object.__setattr__(self, "_xparl_call_timeout", call_timeout)
        # Future mode: the future of `__init__`, until the first use has waited for it.
        object.__setattr__(self, "_xparl_init", None)
        # (request name, error) that ended the actor; every later request reports it.
        object.__setattr__(self, "_xparl_ended", None)
        # The request whose timeout ended the actor: it fails with the `CallTimeoutError`.
        object.__setattr__(self, "_xparl_timed_out", None)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails. Dunder and reserved names never go remote:
        # Python and libraries probe them (copy, pickle, IPython) and expect AttributeError.
        if name.startswith(_RESERVED_PREFIX) or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        if name == "destroy" and name not in self._xparl_methods:
            return self._xparl_destroy  # the class's own `destroy`, if it has one, goes remote
        self._xparl_check(name)
        if name in self._xparl_methods:
            return RemoteMethod(self, name)
        is_method, value = self._xparl_request(CallKind.GetAttr, name, [], block=True)
        return RemoteMethod(self, name) if is_method else value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith(_RESERVED_PREFIX):
            object.__setattr__(self, name, value)
            return
        self._xparl_check(name)
        frames = _encode(CallKind.SetAttr, name, value)
        if self._xparl_wait:
            self._xparl_request(CallKind.SetAttr, name, frames, then=self._xparl_update_methods)
            return
        # The instance attribute will shadow a method of that name; the reply confirms it.
        self._xparl_update_methods(self._xparl_methods - {name})
        written = self._xparl_request(
            CallKind.SetAttr, name, frames, then=self._xparl_update_methods
        )
        written.add_done_callback(_warn_if_failed)

    def __dir__(self) -> Iterable[str]:
        return sorted(self._xparl_methods)

    def __repr__(self) -> str:
        handle = self._xparl_handle
        where = f"id={handle.actor_id} host={handle.hostname}" if handle.actor_id else "no job yet"
        return f"<parl_rs actor {self._xparl_class_name} {where}>"

    def _xparl_who(self) -> str:
        """The actor in errors: its class, and its id and host once it has a job."""
        handle = self._xparl_handle
        if not handle.actor_id:
            return self._xparl_class_name
        return f"{self._xparl_class_name} ({handle.actor_id} on {handle.hostname})"

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
        pending = self._xparl_handle.submit(CallKind.Init, self._xparl_class_name, frames)
        # Watched through a weak reference: deleting the proxy while its actor still waits for
        # a job must release it at once.
        settle = functools.partial(_settle_init, weakref.ref(self), pending)
        object.__setattr__(self, "_xparl_init", _future.watch(pending, settle, "__init__"))

    def _xparl_check(self, label: str) -> None:
        """Before a request for `label`: in future mode, wait for `__init__` the first time;
        raise at once if the actor has ended."""
        if self._xparl_init is not None:
            self._xparl_wait_for_init()
        if self._xparl_ended is None and not self._xparl_wait:
            if not self._xparl_handle.is_alive:
                # Released or dead without a request having seen it: a request on a dead
                # handle fails at once with the reason, which `_xparl_settle` records.
                with contextlib.suppress(Exception):
                    self._xparl_settle(self._xparl_handle.submit(CallKind.Method, label, []), label)
        if self._xparl_ended is not None:
            error = self._xparl_ended_error(label)
            raise error if self._xparl_wait else FutureFunctionError.wrapping(label, error)

    def _xparl_wait_for_init(self) -> None:
        init = self._xparl_init
        if init is None:
            return
        init._xparl_settle_here()  # not `exception()`: this may run on the completion thread
        error = init.exception()
        object.__setattr__(self, "_xparl_init", None)
        if error is not None:
            self._xparl_end("__init__", error)

    def _xparl_end(self, label: str, error: BaseException) -> None:
        """The actor has ended because of `error` in `label`: later requests report it."""
        if self._xparl_ended is None:
            object.__setattr__(self, "_xparl_ended", (label, error))
        self._xparl_handle.release()

    def _xparl_time_out(self, label: str, timeout: float, pending: Any) -> CallTimeoutError:
        """The request `pending` for `label` took longer than `timeout`: end the actor (its job
        is busy in an unknown state) and return the error the request fails with."""
        error = CallTimeoutError(
            label,
            f"`{label}` did not return within its timeout of {timeout:g} s. The actor "
            f"{self._xparl_who()} is ended: its job was in an unknown state, and its slot is "
            "free. Create a new actor to go on.",
            actor_id=self._xparl_handle.actor_id,
        )
        if self._xparl_ended is None:
            object.__setattr__(self, "_xparl_timed_out", pending)
        self._xparl_end(label, error)
        return error

    def _xparl_expire_after(self, timeout: float, call: Any, label: str) -> None:
        """Future mode: time `call` (a FutureObject) out after `timeout` seconds, unless it is
        done by then. Only weak references are kept: the call's reply (maybe large) must not
        outlive the call for the length of its timeout."""
        proxy_ref, call_ref = weakref.ref(self), weakref.ref(call)

        def is_done() -> bool:  # side-effect free: it runs under the deadlines' lock
            call = call_ref()
            return call is None or call._xparl_source is None

        def expire() -> None:
            proxy, call = proxy_ref(), call_ref()
            pending = call._xparl_pending() if call is not None else None
            if proxy is not None and pending is not None:
                proxy._xparl_time_out(label, timeout, pending)

        _deadlines.after(timeout, is_done, expire)

    def _xparl_ended_error(self, label: str) -> Exception:
        """What a request for `label` fails with once the actor has ended."""
        ended_in, cause = self._xparl_ended
        if not isinstance(cause, RemoteError):
            return cause  # there never was a job (e.g. `ResourceError`)
        if isinstance(cause, ActorDiedError):
            info = cause.error_info
        else:
            info = (
                f"the actor {self._xparl_who()} has ended after an error in "
                f"`{ended_in}`: {_headline(cause)}"
            )
        error = ActorDiedError(label, info, actor_id=self._xparl_handle.actor_id)
        error.__cause__ = cause
        return error

    def _xparl_request(
        self,
        kind: CallKind,
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
        for an `Init`, whose `name` is the class name). `then` turns the unpickled reply into the
        value (it runs on the completion thread for futures).
        """
        label = label or name
        blocking = self._xparl_wait if block is None else block
        # A blocking call leaves its arguments alone until the reply: large buffers (numpy
        # arrays) are then sent without a copy.
        pending = self._xparl_handle.submit(kind, name, frames, lend=blocking)
        settle = functools.partial(self._xparl_settle, pending, label, then)
        if blocking:
            return settle()
        return _future.watch(pending, settle, label)

    def _xparl_settle(
        self,
        pending: Any,
        label: str,
        then: Optional[Callable[[Any], Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """The value of a request, waiting for its reply (at most `timeout` seconds, then the
        actor ends); or raise its error."""
        try:
            frames, failure = pending.wait(timeout)
        except TimeoutError:
            raise self._xparl_time_out(label, timeout or 0.0, pending) from None
        except ActorDiedError as died:
            if self._xparl_ended is None:
                self._xparl_end(label, died)
                raise
            if pending is self._xparl_timed_out:
                raise self._xparl_ended[1] from None
            raise self._xparl_ended_error(label) from died
        if failure is not None:
            error = build_remote_error(label, failure, actor_id=self._xparl_handle.actor_id)
            if label == "__init__":
                self._xparl_end(label, error)
            elif failure.kind in _FATAL_KINDS and not self._xparl_keep_alive:
                error.error_info += f"\n\n{_ENDED_HINT}"
                self._xparl_end(label, error)
            raise error
        try:
            reply = loads(frames)
        except DeserializationError as exc:
            raise RemoteDeserializeError(
                label, f"cannot unpickle the reply of `{label}` here: {exc}"
            ) from exc
        return reply if then is None else then(reply)


_ENDED_HINT = (
    "(An exception raised by an actor ends it, as in PARL: its job has exited and its slot is "
    "free. Create a new actor, or use @remote_class(keep_alive_on_error=True) to keep actors "
    "after their errors.)"
)


def _headline(error: BaseException) -> str:
    """The first line of an error's description, e.g. "ValueError: bad value"."""
    if isinstance(error, RemoteError):
        return error.error_info.split("\n", 1)[0]
    return f"{type(error).__name__}: {error}"


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

    __slots__ = ("_xparl_actor", "_xparl_name", "_xparl_timeout")

    def __init__(self, actor: ActorProxy, name: str, timeout: Optional[float] = None) -> None:
        self._xparl_actor = actor
        self._xparl_name = name
        self._xparl_timeout = timeout

    def options(self, *, timeout: Optional[float] = None) -> RemoteMethod:
        """This method with options for the calls made through what it returns:
        `actor.step.options(timeout=5)(...)`. `timeout` (seconds) overrides the class's
        `call_timeout`; a call that takes longer raises `CallTimeoutError` (its future fails
        with it in future mode) and ends the actor."""
        return RemoteMethod(self._xparl_actor, self._xparl_name, check_timeout(timeout, "timeout"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The result; a `FutureObject` of it if the actor is in future mode, or if the call
        is written inside an `async def`.

        Inside `async def`, a call of an actor's method is awaitable: write
        `await actor.method(...)` (or gather several); it is sent at once and the event loop
        never waits for its reply. From a plain `def` it returns the value, as in PARL. What
        counts is the function whose own code makes the call (comprehensions and generator
        expressions count as the code they are written in), not whether an event loop runs:
        PARL code in a Jupyter cell, or in a plain function called from a coroutine, blocks and
        returns the value. So a coroutine that wants the value of a blocking call, not an
        awaitable, makes the call through a plain function (`def get(): return actor.m()`).
        Errors are those of the blocking call (raised by `await`), and the timeout applies.
        """
        actor, name = self._xparl_actor, self._xparl_name
        frames = _encode(CallKind.Method, name, (args, kwargs))
        timeout = self._xparl_timeout or actor._xparl_call_timeout
        # The two common cases, kept short: one of them runs on every call. (A blocking call
        # on an ended actor fails at once in `_xparl_settle`; an awaitable one when awaited.)
        if actor._xparl_wait:
            caller = sys._getframe(1)
            code = caller.f_code
            if not (
                code.co_flags & _COROUTINE_CODE
                or (code.co_name in _COMPREHENSIONS and _written_in_coroutine(caller))
            ):
                pending = actor._xparl_handle.submit(CallKind.Method, name, frames, True)
                return actor._xparl_call_result(actor._xparl_settle(pending, name, None, timeout))
        else:
            actor._xparl_check(name)
        # Not waited for here: the arguments are copied (lend=False), the caller goes on.
        pending = actor._xparl_handle.submit(CallKind.Method, name, frames, False)
        settle = functools.partial(actor._xparl_settle, pending, name, actor._xparl_call_result)
        call = _future.watch(pending, settle, name)
        if timeout is not None:
            actor._xparl_expire_after(timeout, call, name)
        return call

    @property
    def __name__(self) -> str:
        return self._xparl_name

    def __repr__(self) -> str:
        return f"<parl_rs remote method {self._xparl_actor._xparl_class_name}.{self._xparl_name}>"


# Code flags of coroutines: `async def` functions, generator-based coroutines
# (`types.coroutine`) and async generators. A call of a blocking actor's method made by such
# code returns an awaitable `FutureObject`.
_COROUTINE_CODE = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR
# Code that is a function of its own although it is written inside another (before Python
# 3.12 list, set and dict comprehensions are; generator expressions always are).
_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})


def _written_in_coroutine(frame: Any) -> bool:
    """`frame` runs a comprehension or generator expression: True if the code that runs it
    (the function it is written in, or for a generator expression the code iterating it) is
    a coroutine, through nested comprehensions."""
    while frame is not None:
        code = frame.f_code
        if code.co_flags & _COROUTINE_CODE:
            return True
        if code.co_name not in _COMPREHENSIONS:
            return False
        frame = frame.f_back
    return False


def _encode(kind: CallKind, label: str, payload: Any) -> list:
    """Pickle a request payload; failures raise `RemoteSerializeError` before anything is sent."""
    try:
        return dumps(payload)
    except SerializationError as exc:
        culprit = find_unpicklable(_labelled_parts(kind, payload)) or str(exc)
        raise RemoteSerializeError(
            label, f"cannot pickle the arguments of `{label}`: {culprit}"
        ) from exc


def _labelled_parts(kind: CallKind, payload: Any) -> Iterable[tuple[str, Any]]:
    """The pieces of a payload with names a user recognises, to point at the bad one."""
    if kind == CallKind.SetAttr:
        yield "the value", payload
        return
    args, kwargs = payload[-2], payload[-1]
    if kind == CallKind.Init:
        yield "the class", payload[0]
    for index, arg in enumerate(args):
        yield f"positional argument {index}", arg
    for key, arg in kwargs.items():
        yield f"keyword argument `{key}`", arg
