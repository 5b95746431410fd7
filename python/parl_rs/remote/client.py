"""PARL's `parl.remote.client`: the process's connection to a cluster (see `parl_rs.client`)."""

from parl_rs.client import connect, disconnect, get_global_client

__all__ = ["connect", "disconnect", "get_global_client"]
