"""Deadlines of future-mode calls that have a timeout.

One daemon thread per process (started by the first deadline) sleeps until the nearest
deadline and runs its callback then. Entries hold only weak references through their
callbacks, so a call that completed in time costs nothing but its entry until the deadline.
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


class _Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # ties: first added, first run (and no callable compare)
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="parl_rs-deadlines", daemon=True)
        self._thread.start()

    def add(self, after: float, expire: Callable[[], None]) -> None:
        with self._changed:
            heapq.heappush(self._heap, (time.monotonic() + after, next(self._order), expire))
            self._changed.notify()

    def _run(self) -> None:
        while True:
            expire = self._next_due()
            try:
                expire()
            except Exception:  # a failing callback must not stop the other deadlines
                logger.exception("a call's timeout could not be applied")

    def _next_due(self) -> Callable[[], None]:
        with self._changed:
            while True:
                if not self._heap:
                    self._changed.wait()
                    continue
                left = self._heap[0][0] - time.monotonic()
                if left <= 0:
                    return heapq.heappop(self._heap)[2]
                self._changed.wait(left)


_lock = threading.Lock()
_deadlines: Optional[_Deadlines] = None


def after(seconds: float, expire: Callable[[], None]) -> None:
    """Run `expire()` on the deadlines thread `seconds` from now."""
    global _deadlines
    with _lock:
        if _deadlines is None:
            _deadlines = _Deadlines()
        deadlines = _deadlines
    deadlines.add(seconds, expire)


def _forget_in_child() -> None:
    # The parent's thread does not exist in a forked child.
    global _lock, _deadlines
    _lock = threading.Lock()
    _deadlines = None


os.register_at_fork(after_in_child=_forget_in_child)
