"""PARL's `parl.remote.future_mode`: `FutureObject` (see `parl_rs.future`)."""

from parl_rs.remote.future_mode.future_object import FutureObject

__all__ = ["FutureObject"]
