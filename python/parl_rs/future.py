"""Futures of future-mode actors (`@remote_class(wait=False)`): PARL's `FutureObject`, and
`wait` / `as_completed`.

A call on a future-mode actor returns a `FutureObject` at once. It is a
`concurrent.futures.Future`, so `result`, `exception`, `done`, `add_done_callback`,
`concurrent.futures.wait`/`as_completed` and `asyncio.wrap_future` all work with it; PARL's
`get`, `get_nowait` and `empty` come on top. `wait` and `as_completed` here are those of
`concurrent.futures` (they accept any mix of futures).

How a future completes: the native layer stores each reply on its I/O thread, without the
GIL, and pushes the future's key onto a `CompletionQueue`. One daemon thread per process
(`parl_rs-futures`) blocks on that queue with the GIL released, turns each reply into a value
or an exception, and sets the future. Done-callbacks run on that thread, in the order the
replies arrived, so a slow callback delays the futures after it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import os
import threading
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from typing import Any, Callable, Generator, Optional

from parl_rs import _core, aio
from parl_rs.exceptions import FutureFunctionError, FutureGetRepeatedlyError, FutureObjectEmpty

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "FutureObject",
    "as_completed",
    "wait",
]


class FutureObject(concurrent.futures.Future):
    """The result of one call on a future-mode actor, or of one task (`@remote_function`).

    `get()` returns it once (PARL's API); `result()` as often as wanted. If the call failed,
    `get()` raises `FutureFunctionError` (the original error is its `__cause__`) and
    `result()` raises the original error: a `RemoteError` that is also an instance of the
    remote exception's class when it is known here, `ActorDiedError`, `ResourceError`...
    A call of an actor, already sent, cannot be cancelled: `cancel()` returns False; a task
    (`@remote_function`) can be (see `cancel`).
    """

    def __init__(
        self, func_name: str, pending: _core.PendingReply, settle: Callable[[], Any]
    ) -> None:
        super().__init__()
        # What `set_running_or_notify_cancel()` does to a new future, without its lock: this
        # runs once per call of a future-mode actor.
        self._state = _RUNNING
        self._xparl_func_name = func_name
        self._xparl_got = False
        # Until the outcome is set: the reply's slot and what turns it into the outcome.
        self._xparl_source: Optional[tuple[_core.PendingReply, Callable[[], Any]]] = (
            pending,
            settle,
        )
        self._xparl_source_lock = threading.Lock()
        # How to cancel it, for the futures that can be (tasks); None: it cannot be.
        self._xparl_cancel: Optional[Callable[[], bool]] = None

    @classmethod
    def _xparl_unbound(cls, func_name: str) -> FutureObject:
        """A future whose outcome is set later with `set_result`/`set_exception` (a task
        submitted once what it waits for is there)."""
        future = cls.__new__(cls)
        concurrent.futures.Future.__init__(future)
        future._state = _RUNNING
        future._xparl_func_name = func_name
        future._xparl_got = False
        future._xparl_source = None
        future._xparl_source_lock = threading.Lock()
        future._xparl_cancel = None
        return future

    def done(self) -> bool:
        """True once the call has an outcome. A reply that has arrived counts even before the
        completion thread got to it (it is settled here), so a caller that saw later effects
        of the actor (e.g. a blocking attribute read) also sees this call done."""
        source = self._xparl_source
        if source is not None and source[0].done():
            self._xparl_complete()
        return super().done()

    def _xparl_pending(self) -> Optional[_core.PendingReply]:
        """The request this future waits for, or None once the future has its outcome (or its
        reply has arrived: it is settled here then)."""
        source = self._xparl_source
        if source is None:
            return None
        if source[0].done():
            self._xparl_complete()
            return None
        return source[0]

    def _xparl_settle_here(self) -> None:
        """Wait for the reply (GIL released) and set the outcome on this thread, unless the
        completion thread did first. Unlike `result()`, this never waits for the completion
        thread, so it is safe on that thread too (in a done-callback)."""
        source = self._xparl_source
        if source is not None:
            with contextlib.suppress(Exception):  # a failed reply: the outcome is its error
                source[0].wait()
            self._xparl_complete()

    def _xparl_complete(self) -> None:
        """Set the outcome from the arrived reply; once, whichever thread comes first."""
        with self._xparl_source_lock:
            source, self._xparl_source = self._xparl_source, None
            if source is not None:
                _complete(self, source[1])

    def cancel(self) -> bool:
        """Cancel a task (`@remote_function`): a queued one never runs, a running one is
        stopped (its job is killed). A call of an actor, already sent, cannot be cancelled."""
        if self._xparl_cancel is None or self.done():
            return False
        return self._xparl_cancel()

    def __await__(self) -> Generator[Any, None, Any]:
        """`await future`: its value (or its error) without blocking the event loop: the reply
        wakes the loop itself (see `parl_rs.aio`), and is unpickled there.

        Cancelling the awaiting task cancels the future where that is possible (a task of
        `@remote_function`); a call of an actor, already sent, runs on and its result is
        dropped.
        """
        pending = self._xparl_pending()
        try:
            if pending is not None:
                yield from aio.reply_of(pending, self._xparl_complete).__await__()
            elif not super().done():
                # Set later by another thread (a task that waited for its arguments).
                yield from asyncio.wrap_future(self).__await__()
        except asyncio.CancelledError:
            self.cancel()
            raise
        return self.result()

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """The call's return value; only once per future.

        Blocks until it is there (at most `timeout` seconds, which must be positive) unless
        `block` is False. Raises `FutureObjectEmpty` if it is not there in time,
        `FutureFunctionError` if the call failed, `FutureGetRepeatedlyError` on a second `get`.
        """
        if timeout is not None:
            assert timeout > 0, "`timeout` must be a positive number"
        if self._xparl_got:
            raise FutureGetRepeatedlyError()
        try:
            error = self.exception(timeout=timeout if block else 0)
        except concurrent.futures.TimeoutError:
            raise FutureObjectEmpty() from None
        with _got_lock:  # of two threads getting at once, one gets the value
            if self._xparl_got:
                raise FutureGetRepeatedlyError()
            self._xparl_got = True
        if error is not None:
            raise FutureFunctionError.wrapping(self._xparl_func_name, error) from error
        return self.result()

    def get_nowait(self) -> Any:
        """`get(block=False)`."""
        return self.get(block=False)

    def empty(self) -> bool:
        """True while the call has no outcome yet."""
        return not self.done()


class _Completions:
    """The completion thread of this process and the futures it still has to complete."""

    def __init__(self) -> None:
        self._queue = _core.CompletionQueue()
        # key -> the future whose reply will push that key.
        self._waiting: dict[int, FutureObject] = {}
        self._keys = itertools.count()
        self._thread = threading.Thread(target=self._run, name="parl_rs-futures", daemon=True)
        self._thread.start()
        # Stop the thread before the interpreter finalises, while it may still take the GIL.
        atexit.register(self.close)

    def watch(
        self, pending: _core.PendingReply, settle: Callable[[], Any], func_name: str
    ) -> FutureObject:
        future = FutureObject(func_name, pending, settle)
        key = next(self._keys)
        self._waiting[key] = future
        self._queue.watch(pending, key)
        return future

    def close(self) -> None:
        self._queue.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            keys = self._queue.next()
            if keys is None:
                return
            for key in keys:
                # No local names: they would keep the last settled proxy (and actor) alive.
                self._waiting.pop(key)._xparl_complete()


def _complete(future: FutureObject, settle: Callable[[], Any]) -> None:
    try:
        value = settle()
    except concurrent.futures.CancelledError:
        mark_cancelled(future)
    except Exception as exc:
        # The traceback's frames would keep the proxy, and so the actor, alive with the future.
        _drop_tracebacks(exc)
        future.set_exception(exc)
    else:
        future.set_result(value)


def mark_cancelled(future: FutureObject) -> None:
    """What `Future.cancel()` does to a pending future, for one that was running: a task
    cancelled at the dispatcher."""
    with future._condition:
        future._state = concurrent.futures._base.CANCELLED_AND_NOTIFIED
        future._condition.notify_all()
    future._invoke_callbacks()


def _drop_tracebacks(exc: BaseException) -> None:
    chained: list[Optional[BaseException]] = [exc]
    seen: set[int] = set()
    while chained:
        error = chained.pop()
        if error is not None and id(error) not in seen:
            seen.add(id(error))
            error.__traceback__ = None
            chained += [error.__cause__, error.__context__]


_lock = threading.Lock()
_completions: Optional[_Completions] = None
# Guards each future's "got once" flag (held only to flip it).
_got_lock = threading.Lock()
_RUNNING = concurrent.futures._base.RUNNING


def watch(pending: _core.PendingReply, settle: Callable[[], Any], func_name: str) -> FutureObject:
    """A future that gets what `settle()` returns (or raises) once `pending` has its reply.

    `settle` runs on the completion thread; `func_name` names the call in `get`'s errors.
    """
    global _completions
    with _lock:
        if _completions is None:
            _completions = _Completions()
        completions = _completions
    return completions.watch(pending, settle, func_name)


def _forget_in_child() -> None:
    # The parent's completion thread does not exist in a forked child.
    global _lock, _completions
    _lock = threading.Lock()
    _completions = None


os.register_at_fork(after_in_child=_forget_in_child)
