"""PARL's `parl.remote` module paths, so that `from parl.remote.X import Y` keeps working with
`import parl_rs as parl` (or with `parl` mapped onto `parl_rs`):

* `parl_rs.remote.remote_decorator`: `remote_class` (the decorator itself lives here);
* `parl_rs.remote.exceptions`: `RemoteError` and the rest of the exception tree;
* `parl_rs.remote.client`: `connect`, `disconnect`, `get_global_client`;
* `parl_rs.remote.future_mode.future_object`: `FutureObject`.

Like PARL's `parl/remote/__init__.py`, this package also exports all of those names itself.
PARL's internals (`master`, `worker`, `job`, `monitor`...) have no counterpart: parl_rs runs
them in Rust, behind `xparl`.
"""

from parl_rs.remote.client import *  # noqa: F403
from parl_rs.remote.exceptions import *  # noqa: F403
from parl_rs.remote.remote_decorator import (  # noqa: F401
    ActorResources,
    RemoteClass,
    class_methods,
    remote_class,
)
