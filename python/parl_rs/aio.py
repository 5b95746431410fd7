"""`await` on parl_rs futures: the reply wakes the event loop itself, not a thread.

Each running event loop that awaits a reply gets a `CompletionQueue` whose eventfd it reads
(`loop.add_reader`). The native I/O thread stores the reply and writes to that eventfd without
the GIL, only when the queue goes from empty to not empty: a burst of replies costs the loop one
wake-up, and no thread takes the GIL or hops to the loop per result. The loop then settles
each reply (unpickles it) and resolves the awaiting `asyncio.Future`.

Works with any loop that has `add_reader` (asyncio's selector loops and uvloop); elsewhere
(Windows' proactor loop) it falls back to `asyncio.wrap_future`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import weakref
from typing import Any, Callable

from parl_rs import _core

__all__ = ["reply_of"]


class _LoopCompletions:
    """The replies one event loop awaits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue = _core.CompletionQueue()
        self._keys = itertools.count()
        # key -> (the asyncio future, what makes its outcome)
        self._waiting: dict[int, tuple[asyncio.Future, Callable[[], Any]]] = {}
        # Keys whose reply has landed, not settled yet.
        self._ready: collections.deque[int] = collections.deque()
        self._settling = False
        loop.add_reader(self._queue.fileno(), self._drain)

    def watch(self, pending: _core.PendingReply, settle: Callable[[], Any]) -> asyncio.Future:
        future = self._loop.create_future()
        key = next(self._keys)
        self._waiting[key] = (future, settle)
        self._queue.watch(pending, key)
        return future

    def _drain(self) -> None:
        self._ready.extend(self._queue.drain())
        if not self._settling:
            self._settle_some()

    def _settle_some(self) -> None:
        """Settles up to `_BATCH` replies, then lets the loop run other callbacks before the
        next batch: a burst of thousands of replies never holds the loop for long."""
        for _ in range(min(_BATCH, len(self._ready))):
            future, settle = self._waiting.pop(self._ready.popleft())
            if not future.done():  # else: cancelled meanwhile
                _resolve(future, settle)
        self._settling = bool(self._ready)
        if self._settling:
            self._loop.call_soon(self._settle_some)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.remove_reader(self._queue.fileno())
        self._queue.close()


# Replies settled (unpickled) per turn of the loop.
_BATCH = 64

_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopCompletions] = (
    weakref.WeakKeyDictionary()
)


def _completions_of(loop: asyncio.AbstractEventLoop) -> _LoopCompletions:
    completions = _per_loop.get(loop)
    if completions is None:
        completions = _per_loop[loop] = _LoopCompletions(loop)
        weakref.finalize(loop, completions.close)
    return completions


def reply_of(pending: _core.PendingReply, settle: Callable[[], Any]) -> asyncio.Future:
    """An asyncio future of the running loop that gets what `settle()` returns (or raises)
    once `pending` has its reply; `settle` runs on the loop's thread."""
    loop = asyncio.get_running_loop()
    try:
        completions = _completions_of(loop)
    except NotImplementedError:  # a loop without add_reader
        future = loop.create_future()

        def settle_there() -> None:
            with contextlib.suppress(Exception):  # a failed reply: `settle` raises its error
                pending.wait()
            loop.call_soon_threadsafe(_resolve, future, settle)

        loop.run_in_executor(None, settle_there)
        return future
    return completions.watch(pending, settle)


def _resolve(future: asyncio.Future, settle: Callable[[], Any]) -> None:
    if future.done():
        return
    try:
        future.set_result(settle())
    except BaseException as exc:  # noqa: BLE001 - the awaiting code gets it
        future.set_exception(exc)
