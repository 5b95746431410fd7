"""Stateless tasks: `@remote_function` and `ActorPool`.

A remote function runs on the cluster, one call per task::

    @parl_rs.remote_function(timeout=30, retries=2)
    def rollout(seed, steps=1000): ...

    rollout(3)                          # runs on the cluster, blocks, returns (or raises)
    f = rollout.submit(3, steps=10)     # a FutureObject
    rollout.map(range(1000))            # the results in input order
    g = report.submit(after=[f])        # runs once f succeeded; fails at once if f failed
    rollout.options(timeout=5).submit(7)

The client's task dispatcher (native, `parl_core::client::tasks`) leases warm jobs from the
master as tasks wait and gives them back soon after it runs dry; a task goes to a leased job
only when that job is free. Tasks and results travel directly between this process and the
jobs; the function travels to each job once. A job crash, a lost worker and a timeout (the
stuck job is killed) are retried `retries` times; an exception raised by the function is the
task's result (retried only with `retry_exceptions=True`). After the last attempt the future
fails with `TaskError`, whose `attempts` say where each attempt ran and what happened.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from parl_rs import _core
from parl_rs import client as _client
from parl_rs import future as _future
from parl_rs.exceptions import (
    DependencyError,
    RemoteDeserializeError,
    RemoteSerializeError,
    build_remote_error,
)
from parl_rs.proxy import _importable
from parl_rs.remote.remote_decorator import ActorResources
from parl_rs.serialization import (
    DeserializationError,
    SerializationError,
    dumps,
    dumps_in_band,
    find_unpicklable,
    loads,
)

__all__ = ["ActorPool", "RemoteFunction", "TaskRunner", "remote_function"]

# How long a lease without work is kept before it goes back to the master.
_IDLE_RETURN_S = 0.5


class TaskRunner:
    """What a leased job is set up as (the native task dispatcher names it, for every client):
    its `Init` installs the client's code context (shipped files, sys.path); the tasks
    themselves run in `parl_rs._job`."""


@dataclass(frozen=True)
class TaskOptions:
    """The options of a remote function (`@remote_function(...)`, `.options(...)`)."""

    timeout: Optional[float] = None
    retries: int = 0
    retry_exceptions: bool = False
    n_gpu: int = 0
    max_memory: Optional[float] = None
    # Tasks one leased job may hold at once: 1 is strictly on demand; more prefetches tiny tasks.
    hwm: int = 1

    def __post_init__(self) -> None:
        ActorResources(n_gpu=self.n_gpu, max_memory=self.max_memory)  # the same checks
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float)) and 0 < self.timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        for name in ("retries", "hwm"):
            value = getattr(self, name)
            least = 1 if name == "hwm" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


_function_ids = itertools.count(1)


class RemoteFunction:
    """A function whose calls run as tasks on the cluster (see the module docs)."""

    def __init__(self, func: Callable, options: TaskOptions) -> None:
        functools.update_wrapper(self, func)
        self._xparl_func = func
        self._xparl_options = options
        self._xparl_id = next(_function_ids)
        # The dispatchers that know this function (one per connection).
        self._xparl_defined: list[_core.TaskDispatcher] = []
        self._xparl_lock = threading.Lock()

    def options(self, **overrides: Any) -> RemoteFunction:
        """The same function with some options changed, for the calls made through it."""
        view = RemoteFunction.__new__(RemoteFunction)
        view.__dict__.update(self.__dict__)
        view._xparl_options = replace(self._xparl_options, **overrides)
        return view

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run one task and return its value (or raise its error)."""
        return self.submit(*args, **kwargs).result()

    def submit(
        self, *args: Any, after: Sequence[Any] = (), follow: Sequence[Any] = (), **kwargs: Any
    ) -> _future.FutureObject:
        """Queue one task; return its `FutureObject` at once.

        `after`: futures that must succeed first; if one fails, this task fails with
        `DependencyError` without running (and so do the tasks after it). A future among the
        arguments (positional or keyword, not nested) is a dependency too, replaced by its
        value when the task runs. `follow=[f]`: `f`, a task of this process, must succeed
        first, and this task runs on the worker where `f` ran (to use what `f` left there);
        `ResourceError` if that worker has left the cluster.
        """
        for dependency in after:
            if not isinstance(dependency, concurrent.futures.Future):
                raise ValueError(f"`after` takes futures (of tasks or calls), got {dependency!r}")
        followed = _followed(follow)
        dispatcher = self._xparl_dispatcher()
        values = _future_args(args, kwargs)
        for future in (*values, *after, *followed):
            task = getattr(future, "_xparl_task", None)
            if task is not None and task[0] is not dispatcher:
                raise ValueError(f"{future!r} is a task of another connection of this process")
        # An argument's value is needed here, before the task is pickled; a dependency that
        # is a task of the dispatcher is waited for by the dispatcher.
        waiting = [f for f in values if not f.done()]
        waiting += [f for f in (*after, *followed) if _waits(f, dispatcher)]
        if waiting:
            return _Deferred(self, args, kwargs, after, followed, waiting).future
        if values:
            args, kwargs = _resolved(args), _resolved(kwargs)
        return self._xparl_submit_now(dispatcher, args, kwargs, after, followed)

    def _xparl_submit_now(
        self,
        dispatcher: _core.TaskDispatcher,
        args: tuple,
        kwargs: dict,
        after: Sequence[Any],
        followed: Sequence[Any],
    ) -> _future.FutureObject:
        """Submit to the dispatcher; every future in `after` and `followed` is done or a task
        of it."""
        dependencies = [_task_id(f, dispatcher) for f in after]
        follow_id = _follow_id(followed, dispatcher)
        name = self.__name__
        frames = _encode(name, (args, kwargs))
        o = self._xparl_options
        task_id, pending = dispatcher.submit(
            self._xparl_id,
            name,
            frames,
            timeout=o.timeout,
            retries=o.retries,
            retry_exceptions=o.retry_exceptions,
            hwm=o.hwm,
            n_gpu=o.n_gpu,
            max_memory=o.max_memory,
            after=[d for d in dependencies if d is not None],
            follow=follow_id,
        )
        future = _future.watch(pending, functools.partial(_settle, pending, name), name)
        future._xparl_task = (dispatcher, task_id)
        # A weak reference: the future must not keep itself alive until the cycle collector
        # (with its result) through its own cancel hook.
        future._xparl_cancel = functools.partial(
            _cancel_task, weakref.ref(future), dispatcher, task_id
        )
        return future

    def map(self, iterable: Iterable[Any], *, progress: Optional[bool] = None) -> list[Any]:
        """Run the function on each item; the results in input order. The first error is
        raised (the other tasks still run). `progress`: a one-line count on stderr (default:
        when stderr is a terminal)."""
        futures = [self.submit(item) for item in iterable]
        with _Progress(len(futures), progress) as bar:
            for _ in concurrent.futures.as_completed(futures):
                bar.advance()
        return [future.result() for future in futures]

    def imap_unordered(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """The results as they come, in any order."""
        futures = [self.submit(item) for item in iterable]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()

    def _xparl_dispatcher(self) -> _core.TaskDispatcher:
        dispatcher = _client.task_dispatcher(_make_dispatcher)
        defined = self._xparl_defined
        if defined and defined[-1] is dispatcher:  # the usual case, on every submit
            return dispatcher
        with self._xparl_lock:
            if all(known is not dispatcher for known in defined):
                dispatcher.define(self._xparl_id, _pickle_function(self._xparl_func))
            # Last: the connection in use now (earlier ones stay known, never defined twice).
            self._xparl_defined = [*(d for d in defined if d is not dispatcher), dispatcher]
        return dispatcher

    def __repr__(self) -> str:
        return f"<parl_rs remote function {self.__qualname__}>"


def remote_function(func: Optional[Callable] = None, **options: Any) -> Any:
    """Make `func` run on the cluster: `@remote_function` or `@remote_function(timeout=30,
    retries=2, retry_exceptions=False, n_gpu=0, max_memory=None, hwm=1)`."""
    checked = TaskOptions(**options)
    if os.environ.get("XPARL") == "True":  # inside a job: the plain function, as in PARL
        return (lambda f: f) if func is None else func
    if func is None:
        return lambda f: RemoteFunction(f, checked)
    return RemoteFunction(func, checked)


def _make_dispatcher(client: _core.Client) -> _core.TaskDispatcher:
    code = _client.code_context()
    return client.tasks(
        code.sys_path,
        list(code.sources.items()),
        create_timeout=_client.create_timeout(),
        idle_return=_IDLE_RETURN_S,
    )


def _pickle_function(func: Callable) -> bytes:
    """The function by reference when the job can import it (its module keeps one identity
    there), else by value (cloudpickle; a function of `__main__` never re-runs the script)."""
    target: Any = ("by_ref", func.__module__, func.__qualname__) if _importable(func) else func
    try:
        return dumps_in_band(target)
    except SerializationError as exc:
        raise RemoteSerializeError(func.__name__, f"cannot pickle the function: {exc}") from exc


def _encode(name: str, payload: tuple) -> list:
    try:
        return dumps(payload)
    except SerializationError as exc:
        args, kwargs = payload
        parts = [(f"positional argument {i}", a) for i, a in enumerate(args)]
        parts += [(f"keyword argument `{k}`", a) for k, a in kwargs.items()]
        culprit = find_unpicklable(parts) or str(exc)
        raise RemoteSerializeError(
            name, f"cannot pickle the arguments of `{name}`: {culprit}"
        ) from exc


def _settle(pending: _core.PendingReply, name: str) -> Any:
    frames, failure = pending.wait()
    if failure is not None:
        raise build_remote_error(name, failure)
    try:
        return loads(frames)
    except DeserializationError as exc:
        raise RemoteDeserializeError(
            name, f"cannot unpickle the result of `{name}` here: {exc}"
        ) from exc


def _task_id(future: Any, dispatcher: _core.TaskDispatcher) -> Optional[int]:
    """The task id of a dependency the dispatcher waits for; None if it already succeeded.
    Raises `DependencyError` if it failed."""
    if future.done():
        _check_succeeded(future)
        return None
    return future._xparl_task[1]


def _followed(follow: Any) -> list[concurrent.futures.Future]:
    """`follow` as a list of one task future at most (a future alone is accepted too)."""
    followed = [follow] if isinstance(follow, concurrent.futures.Future) else list(follow)
    if len(followed) > 1:
        raise ValueError("`follow` takes one task: a task runs on one worker")
    for future in followed:
        if not hasattr(future, "_xparl_task") and not isinstance(future, _future.FutureObject):
            raise ValueError(f"`follow` takes a future of a task, got {future!r}")
    return followed


def _follow_id(followed: Sequence[Any], dispatcher: _core.TaskDispatcher) -> Optional[int]:
    """The id of the task to follow (done or not: the dispatcher knows where it ran)."""
    if not followed:
        return None
    future = followed[0]
    task = getattr(future, "_xparl_task", None)
    if task is None or task[0] is not dispatcher:
        raise ValueError(f"`follow` takes a future of a task of this process, got {future!r}")
    if future.done():
        _check_succeeded(future)
    return task[1]


def _check_succeeded(future: concurrent.futures.Future) -> None:
    if future.cancelled():
        raise DependencyError(f"a dependency was cancelled: {future!r}")
    error = future.exception()
    if error is not None:
        raise DependencyError(f"a dependency failed: {error}") from error


def _waits(future: concurrent.futures.Future, dispatcher: _core.TaskDispatcher) -> bool:
    """True if a task must wait here for `future`: it is not done, and the dispatcher does
    not know it (an actor's call, or a task still waiting here itself)."""
    if future.done():
        return False
    task = getattr(future, "_xparl_task", None)
    return task is None or task[0] is not dispatcher


def _future_args(args: tuple, kwargs: dict) -> list[concurrent.futures.Future]:
    values = [*args, *kwargs.values()]
    return [v for v in values if isinstance(v, concurrent.futures.Future)]


def _resolved(values: Any) -> Any:
    """`args` or `kwargs` with each future replaced by its value (all are done)."""

    def value(v: Any) -> Any:
        if isinstance(v, concurrent.futures.Future):
            _check_succeeded(v)
            return v.result()
        return v

    if isinstance(values, dict):
        return {k: value(v) for k, v in values.items()}
    return tuple(value(v) for v in values)


def _cancel_task(future_ref: weakref.ref, dispatcher: _core.TaskDispatcher, task_id: int) -> bool:
    future = future_ref()
    if future is None:
        return False
    dispatcher.cancel(task_id)
    future._xparl_settle_here()  # the dispatcher answers at once
    return future.cancelled()


class _Deferred:
    """A task that waits here for futures (its arguments' values, or dependencies the
    dispatcher does not know), then is submitted; `future` is its outcome all along."""

    def __init__(
        self,
        function: RemoteFunction,
        args: tuple,
        kwargs: dict,
        after: Sequence[Any],
        followed: Sequence[Any],
        waiting: list[concurrent.futures.Future],
    ) -> None:
        self.function, self.args, self.kwargs, self.after = function, args, kwargs, after
        self.followed = followed
        self.future = _future.FutureObject._xparl_unbound(function.__name__)
        self.future._xparl_cancel = self.cancel
        self.lock = threading.Lock()
        self.left = len(waiting)
        self.submitted: Optional[_future.FutureObject] = None
        for dependency in waiting:
            dependency.add_done_callback(self.one_done)

    def one_done(self, _dependency: concurrent.futures.Future) -> None:
        with self.lock:
            self.left -= 1
            if self.left or self.future.done():
                return
        try:
            dispatcher = self.function._xparl_dispatcher()
            args, kwargs = _resolved(self.args), _resolved(self.kwargs)
            inner = self.function._xparl_submit_now(
                dispatcher, args, kwargs, self.after, self.followed
            )
        except Exception as exc:  # a failed dependency, arguments that cannot be pickled...
            with self.lock:
                if not self.future.done():
                    self.future.set_exception(exc)
            return
        with self.lock:
            self.submitted = inner
            self.future._xparl_task = inner._xparl_task
        inner.add_done_callback(self.copy)
        if self.future.cancelled():
            inner.cancel()

    def copy(self, inner: concurrent.futures.Future) -> None:
        with self.lock:
            if self.future.done():
                return
            if inner.cancelled():
                _future.mark_cancelled(self.future)
            elif inner.exception() is not None:
                self.future.set_exception(inner.exception())
            else:
                self.future.set_result(inner.result())

    def cancel(self) -> bool:
        with self.lock:
            inner = self.submitted
            if inner is None:
                if not self.future.done():
                    _future.mark_cancelled(self.future)
                return True
        return inner.cancel()


class _Progress:
    """A count of finished tasks on one line of stderr, at most 10 times a second."""

    def __init__(self, total: int, enabled: Optional[bool]) -> None:
        self.total = total
        self.done = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.shown = 0.0

    def __enter__(self) -> _Progress:
        return self

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self.shown > 0.1 or self.done == self.total):
            self.shown = now
            sys.stderr.write(f"\r{self.done}/{self.total} tasks done")
            sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.total:
            sys.stderr.write("\n")


class ActorPool:
    """Hands items to actors as they become free: `ActorPool(actors).map(fn, values)` calls
    `fn(actor, value)` for each value, each actor taking the next value when it is done with
    its last one; the results come in input order (`map_unordered`: as they finish)."""

    def __init__(self, actors: Sequence[Any]) -> None:
        assert actors, "an ActorPool needs at least one actor"
        self._actors = list(actors)

    def map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> list[Any]:
        items = list(values)
        results: list[Any] = [None] * len(items)
        for index, value in self._run(fn, items):
            results[index] = value
        return results

    def map_unordered(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        for _, value in self._run(fn, list(values)):
            yield value

    def _run(self, fn: Callable[[Any, Any], Any], items: list) -> Iterator[tuple[int, Any]]:
        """(index, result) as each call finishes; one thread per actor pulls the next item."""
        indices = iter(range(len(items)))
        take = threading.Lock()
        finished: list[tuple[int, Any, Optional[BaseException]]] = []
        ready = threading.Condition()

        def serve(actor: Any) -> None:
            while True:
                with take:
                    index = next(indices, None)
                if index is None:
                    return
                try:
                    value, error = fn(actor, items[index]), None
                    if isinstance(value, concurrent.futures.Future):
                        value = value.result()
                except BaseException as exc:  # reported to the caller, in its thread
                    value, error = None, exc
                with ready:
                    finished.append((index, value, error))
                    ready.notify()

        threads = [threading.Thread(target=serve, args=(a,), daemon=True) for a in self._actors]
        for thread in threads:
            thread.start()
        for _ in range(len(items)):
            with ready:
                ready.wait_for(lambda: bool(finished))
                index, value, error = finished.pop(0)
            if error is not None:
                raise error
            yield index, value
