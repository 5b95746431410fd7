"""PARL's `parl.remote.exceptions` (see `parl_rs.exceptions`, where they are defined)."""

from parl_rs.exceptions import *  # noqa: F403
from parl_rs.exceptions import __all__  # noqa: F401
