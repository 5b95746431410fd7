"""Deadlines of future-mode calls that have a timeout.

One daemon thread per process (started by the first deadline) sleeps until the nearest
deadline and runs its callback then, unless the call is done by then. Entries hold their call
through a weak reference only, and entries of calls that are done are dropped whenever the
list has doubled since it was last cleaned: memory follows the calls in flight, not the calls
made within the longest timeout.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from typing import Callable, Optional

logger = logging.getLogger(__name__)

# (deadline, order, is_done, expire): `order` breaks ties (first added, first run) so that the
# callables are never compared.
_Entry = tuple[float, int, Callable[[], bool], Callable[[], None]]


class _Deadlines:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self._cleaned_at_size = 64  # the size past which the next clean-up runs (doubling)
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="parl_rs-deadlines", daemon=True)
        self._thread.start()

    def add(self, after: float, is_done: Callable[[], bool], expire: Callable[[], None]) -> None:
        entry = (time.monotonic() + after, next(self._order), is_done, expire)
        with self._changed:
            heapq.heappush(self._heap, entry)
            if len(self._heap) > 2 * self._cleaned_at_size:
                self._heap = [entry for entry in self._heap if not entry[2]()]
                heapq.heapify(self._heap)
                self._cleaned_at_size = max(64, len(self._heap))
            self._changed.notify()

    def _run(self) -> None:
        while True:
            is_done, expire = self._next_due()
            try:
                if not is_done():
                    expire()
            except Exception:  # a failing callback must not stop the other deadlines
                logger.exception("a call's timeout could not be applied")

    def _next_due(self) -> tuple[Callable[[], bool], Callable[[], None]]:
        with self._changed:
            while True:
                if not self._heap:
                    self._changed.wait()
                    continue
                left = self._heap[0][0] - time.monotonic()
                if left <= 0:
                    _, _, is_done, expire = heapq.heappop(self._heap)
                    return is_done, expire
                self._changed.wait(left)


_lock = threading.Lock()
_deadlines: Optional[_Deadlines] = None


def after(seconds: float, is_done: Callable[[], bool], expire: Callable[[], None]) -> None:
    """Run `expire()` on the deadlines thread `seconds` from now, unless `is_done()` by then.
    `is_done` is also asked now and then to drop entries early: it must be cheap."""
    global _deadlines
    with _lock:
        if _deadlines is None:
            _deadlines = _Deadlines()
        deadlines = _deadlines
    deadlines.add(seconds, is_done, expire)


def _forget_in_child() -> None:
    # The parent's thread does not exist in a forked child.
    global _lock, _deadlines
    _lock = threading.Lock()
    _deadlines = None


os.register_at_fork(after_in_child=_forget_in_child)
