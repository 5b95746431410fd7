"""PARL's `parl.remote.remote_class_serialization`: how an actor's class travels to its job.

parl_rs imports the class in the job when it can (its module has a file, and the name leads
back to the class: see `parl_rs.proxy._class_ref`), and otherwise ships the class by value
with cloudpickle, as PARL does for classes written in a notebook. The proxy asks
`is_implemented_in_notebook` through this module, so code that patches it (PARL's tests do)
chooses shipping by value.
"""

from __future__ import annotations

import inspect
import sys


def is_implemented_in_notebook(cls: type) -> bool:
    """True if `cls` was defined where no file holds it (a notebook, the REPL, `exec`)."""
    assert inspect.isclass(cls)
    module = sys.modules.get(cls.__module__)
    return not getattr(module, "__file__", None)
