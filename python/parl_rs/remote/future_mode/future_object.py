"""PARL's `parl.remote.future_mode.future_object` (see `parl_rs.future`)."""

from parl_rs.future import FutureObject

__all__ = ["FutureObject"]
