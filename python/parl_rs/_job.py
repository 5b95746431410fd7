"""The Python side of a job process (`python -m parl_rs._job`, started by a worker).

The native `JobRuntime` does the networking and heartbeats; this module loads the user's class
and answers one request at a time. What each kind of request carries is the call envelope of
the wire protocol (`parl_core::protocol::call`). A native client's request is portable
(`request.portable`): its reply is plain pickle of builtin values, which a program without
Python reads; a value with no such form is a `not_portable` failure, and the actor lives on.

Only `Exception` is caught around user code: `SystemExit` and `KeyboardInterrupt` end the job,
which is how `sys.exit()` in a method kills its actor (the client then sees `ActorDiedError`).
An exception of the actor's code is sent back to the caller, and then ends the job as in PARL
(unless the class has `keep_alive_on_error`): see `_Actor.ends_after`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import os
import socket
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, Callable, Optional

from parl_rs import _core
from parl_rs._core import CallKind
from parl_rs._user_code import CodeContext, JobCode
from parl_rs.exceptions import ProtocolError
from parl_rs.keys import KEY_ENV
from parl_rs.remote.remote_decorator import RemoteClass, class_methods
from parl_rs.serialization import (
    DeserializationError,
    NotPortableError,
    SerializationError,
    dumps,
    dumps_portable,
    find_unpicklable,
    loads,
)

_RESERVED_PREFIX = "_xparl"
# How long an actor that ended on an error waits for its client to release it: the client
# learns of the end from the error's reply, so its release confirms the reply arrived.
_RELEASE_WAIT_S = 2.0

Failure = tuple[str, str, str, str]  # (kind, exc_type, message, traceback)


class _MissingAttribute(Exception):
    """The requested attribute does not exist (reported as an "attribute" failure)."""

    def __init__(self, error: AttributeError) -> None:
        super().__init__(str(error))
        self.error = error


class _Actor:
    """The one user object this job serves, and the method names its proxy knows about."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.instance: Any = None
        self.class_methods: frozenset[str] = frozenset()
        self.shadowed: frozenset[str] = frozenset()
        self.keep_alive_on_error = False
        # Requests served at once (`@remote_class(max_concurrency=N)`).
        self.max_concurrency = 1
        self.coroutines = _ActorLoop()
        self.code = JobCode(workdir, CodeContext())
        # A leased job's functions, by the id the client gave each (see `parl_rs.tasks`).
        self.functions: dict[str, Callable] = {}

    def dispatch(self, request: _core.JobRequest) -> tuple[list, Optional[Failure]]:
        """Run one request; return the reply frames and a failure report (or None)."""
        kind, name, frames = request.kind, request.name, request.frames
        if kind == CallKind.Task:
            return self.task(name, frames, request.portable)
        handler = _HANDLERS.get(kind)
        if handler is None:
            return [], self.failure("user", ProtocolError(f"unknown request {kind!r}"))
        if request.options is not None:
            # Where the user's code is, before anything of it is unpickled.
            self.set_up(request.options)
        try:
            payload = loads(frames) if frames else None
        except DeserializationError as exc:
            cause = exc.__cause__ or exc
            message = f"cannot unpickle the arguments: {exc}"
            return [], self.failure("deserialize", cause, message)
        try:
            reply = handler(self, name, payload)
        except _MissingAttribute as exc:
            return [], self.failure("attribute", exc.error, with_traceback=False)
        except Exception as exc:
            return [], self.failure("user", exc)
        return self.encode_reply(reply, request.portable, name, _result_of(kind, name, reply))

    def encode_reply(
        self, reply: Any, portable: bool, name: str, result: tuple[str, Any]
    ) -> tuple[list, Optional[Failure]]:
        """The reply's frames, in the request's encoding; or the failure to pickle it.
        `result`: the user's value in the reply, with how errors name it."""
        try:
            if portable:
                # Only the user's value can be unportable (the rest of a reply is builtins).
                return dumps_portable(reply, checked=result[1]), None
            return dumps(reply), None
        except NotPortableError as exc:
            message = f"{result[0]} of `{name}` cannot be sent to a native client: {exc}"
            return [], self.failure("not_portable", exc, message, with_traceback=False)
        except SerializationError as exc:
            culprit = find_unpicklable([result])
            message = f"cannot pickle the result of `{name}`: {culprit or exc}"
            return [], self.failure("serialize", exc, message, with_traceback=False)

    def task(
        self, function_id: str, frames: list, portable: bool
    ) -> tuple[list, Optional[Failure]]:
        """Run one task: frames[0] is the function the first time this job sees it (else
        empty), the rest its pickled (args, kwargs)."""
        try:
            if frames and memoryview(frames[0]).nbytes:
                self.functions[function_id] = _load_function(loads(frames[:1]))
            function = self.functions[function_id]
        except KeyError:
            error = ProtocolError(f"task of unknown function {function_id}")
            return [], self.failure("deserialize", error, with_traceback=False)
        except Exception as exc:
            message = f"cannot load the task's function: {exc}"
            return [], self.failure("deserialize", exc.__cause__ or exc, message)
        name = getattr(function, "__name__", "task")
        try:
            args, kwargs = loads(frames[1:])
        except DeserializationError as exc:
            message = f"cannot unpickle the arguments: {exc}"
            return [], self.failure("deserialize", exc.__cause__ or exc, message)
        try:
            result = function(*args, **kwargs)
        except Exception as exc:
            return [], self.failure("user", exc)
        return self.encode_reply(result, portable, name, ("the return value", result))

    def set_up(self, options: dict) -> None:
        """Apply the init's actor options (see `_core.JobRequest.options`)."""
        self.keep_alive_on_error = bool(options["keep_alive_on_error"])
        self.max_concurrency = max(1, int(options["max_concurrency"]))
        self.code = JobCode(self.workdir, CodeContext.from_dict(options["code"]))
        self.code.install()

    def ends_after(self, kind: CallKind, failure: Optional[Failure]) -> bool:
        """True if the actor must end after this reply: its `__init__` failed, or its code
        raised (or returned what cannot be pickled) and errors do not keep it alive."""
        if failure is None or kind == CallKind.Task:  # a task's failure is its result
            return False
        if kind == CallKind.Init:
            return True
        return failure[0] in ("user", "serialize") and not self.keep_alive_on_error

    def failure(
        self,
        kind: str,
        exc: BaseException,
        message: Optional[str] = None,
        *,
        with_traceback: bool = True,
    ) -> Failure:
        exc_class = type(exc)
        exc_type = f"{exc_class.__module__}.{exc_class.__qualname__}"
        remote_traceback = self.traceback(exc) if with_traceback else ""
        return (kind, exc_type, str(exc) if message is None else message, remote_traceback)

    def traceback(self, exc: BaseException) -> str:
        """The traceback without this module's own frames, which mean nothing to the user,
        and with the user's files named as on the client."""
        tb: Optional[TracebackType] = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        self.code.load_sources(exc)
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        return self.code.client_names(text)

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
        if inspect.iscoroutine(result):  # an `async def` method: run on the actor's loop
            result = self.coroutines.run(result)
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


class _ActorLoop:
    """The event loop of an actor's `async def` methods: one for the actor's life (asyncio
    objects its methods make stay usable), on a thread of its own, started at the first
    coroutine. A request's thread waits (GIL released) for its coroutine; with
    `max_concurrency` above 1 several wait at once, so their coroutines interleave."""

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._lock = threading.Lock()

    def run(self, coroutine: Any) -> Any:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._loop.run_forever, name="parl_rs-actor-loop", daemon=True
                )
                thread.start()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


_HANDLERS: dict[CallKind, Callable[[_Actor, str, Any], Any]] = {
    CallKind.Init: _Actor.init,
    CallKind.Method: _Actor.call,
    CallKind.GetAttr: _Actor.getattr,
    CallKind.SetAttr: _Actor.setattr,
}


def _load_class(class_ref: Any) -> type:
    """Import the class named by ("by_ref", module, qualname, file on the client), or take the
    shipped class."""
    if isinstance(class_ref, tuple) and class_ref[:1] == ("by_ref",):
        _, module_name, qualname, client_file = class_ref
        found: Any = _import_user_module(module_name, qualname, client_file)
        for attr in qualname.split("."):
            found = getattr(found, attr)
        class_ref = found
    # XPARL=True makes `@remote_class` return the plain class here; unwrap in case it did not.
    if isinstance(class_ref, RemoteClass):
        class_ref = class_ref._original
    if not isinstance(class_ref, type):
        raise TypeError(f"expected a class to instantiate, got {class_ref!r}")
    return class_ref


def _load_function(ref: Any) -> Callable:
    """The function named by ("by_ref", module, qualname), or the function shipped by value."""
    if isinstance(ref, tuple) and ref[:1] == ("by_ref",):
        _, module_name, qualname = ref
        found: Any = _import_user_module(module_name, qualname, None)
        for attr in qualname.split("."):
            found = getattr(found, attr)
        ref = found
    # XPARL=True makes `@remote_function` return the plain function here; unwrap in case not.
    ref = getattr(ref, "_xparl_func", ref)
    if not callable(ref):
        raise TypeError(f"expected a function to run, got {ref!r}")
    return ref


def _import_user_module(module_name: str, qualname: str, client_file: Optional[str]) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # the module was found; something it imports was not
        where = f" ({client_file} on the client)" if client_file else ""
        raise ModuleNotFoundError(
            f"the module {module_name!r} of {qualname}{where} cannot be imported in this "
            f"job on {socket.gethostname()}. A job finds the files shipped by "
            "parl_rs.connect (the *.py next to your script, and distributed_files), then your "
            "sys.path entries: absolute ones where they exist on the worker's host, relative "
            "ones among the distributed files. Ship the module with "
            "connect(..., distributed_files=[...]) or install it on the workers.",
            name=exc.name,
        ) from exc


def _instance_dict(instance: Any) -> dict:
    return getattr(instance, "__dict__", None) or {}


def _result_of(kind: CallKind, name: str, reply: Any) -> tuple[str, Any]:
    """The user's value in a reply, with how errors name it."""
    if kind == CallKind.GetAttr:
        return f"the value of attribute `{name}`", reply[1]
    return "the return value", reply[0] if kind == CallKind.Method else reply


def _serve(runtime: _core.JobRuntime) -> None:
    os.chdir(runtime.workdir)
    sys.path.insert(0, runtime.workdir)
    actor = _Actor(runtime.workdir)
    while _serve_one(runtime, actor):
        if actor.max_concurrency > 1 and actor.instance is not None:
            _serve_concurrently(runtime, actor)
            return


def _serve_one(runtime: _core.JobRuntime, actor: _Actor) -> bool:
    """Wait for one request and answer it; False once the job must end. A function of its own
    so that the request's arguments and its result are freed once answered: an idle actor
    must not keep its last (maybe huge) result or arguments alive, nor count them in its
    memory."""
    request = runtime.next_request()
    if request is None:  # the actor was released or the worker is gone
        return False
    # Before the payload is unpickled: unpickling may import the user's modules (torch reads
    # CUDA_VISIBLE_DEVICES once, at import).
    if request.env:
        os.environ.update(request.env)
    reply, failure = actor.dispatch(request)
    runtime.reply(request.id, reply, failure)
    if actor.ends_after(request.kind, failure):
        runtime.wait_for_release(_RELEASE_WAIT_S)
        return False
    return True


def _serve_concurrently(runtime: _core.JobRuntime, actor: _Actor) -> None:
    """Serve up to `actor.max_concurrency` requests at once, each on a thread of a pool (an
    `async def` method's coroutine on the actor's loop): taken in order, answered as each
    finishes. An error that ends the actor stops the taking; the requests running finish."""
    slots = threading.BoundedSemaphore(actor.max_concurrency)
    ending = threading.Event()

    def answer(request: _core.JobRequest) -> None:
        try:
            reply, failure = actor.dispatch(request)
            runtime.reply(request.id, reply, failure)
            if actor.ends_after(request.kind, failure):
                ending.set()
        finally:
            slots.release()

    pool = concurrent.futures.ThreadPoolExecutor(
        actor.max_concurrency, thread_name_prefix="parl_rs-actor"
    )
    with pool:
        while not ending.is_set():
            slots.acquire()
            request = None if ending.is_set() else runtime.next_request()
            if request is None or ending.is_set():
                slots.release()
                break
            if request.env:
                os.environ.update(request.env)
            pool.submit(answer, request)
    if ending.is_set():
        runtime.wait_for_release(_RELEASE_WAIT_S)


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
