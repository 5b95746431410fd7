"""The benchmark's actor classes, plain (undecorated) so every framework wraps the same code.

This file sits next to `bench.py`, so parl_rs ships it to every job and the job imports these
classes by reference (PARL ships the script's sibling `*.py` too; Ray gets it on PYTHONPATH).
"""

from __future__ import annotations

import os
import time


class Adder:
    """The small call: `add(i, 1)`."""

    def add(self, a, b):
        return a + b


class Echo:
    """Returns its argument (a numpy array in the bandwidth figures)."""

    def echo(self, x):
        return x


class Sleeper:
    """Fan-out work and the GIL check."""

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def pid(self):
        return os.getpid()
