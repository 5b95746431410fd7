"""parl_rs: a distributed actor framework with a Rust core, a drop-in successor to PARL's
`parl.remote` and `xparl` (`import parl_rs as parl` keeps PARL programs working).

    import parl_rs as parl

    parl.connect("127.0.0.1:8010")  # or parl.connect() for a cluster inside this process

    @parl.remote_class
    class Counter:
        def __init__(self):
            self.count = 0

        def incr(self):
            self.count += 1
            return self.count

    counter = Counter()  # runs in a job process of the cluster
    counter.incr()       # -> 1

With `@parl.remote_class(wait=False)` (future mode) construction and calls return at once;
calls return `FutureObject`s (`.get()`, `.result()`, `parl.wait`, `parl.as_completed`).
`@parl.remote_function` runs a plain function as stateless tasks on leased jobs (`f(x)`,
`f.submit(x)`, `f.map(xs)`, timeouts, retries, `after` dependencies: see `parl_rs.tasks`).

Layout: `remote` (the decorator, and PARL's `parl.remote.*` module paths), `proxy` (actor
handles), `future` (futures of future-mode calls), `tasks` (remote functions, `ActorPool`),
`client` (the connection), `_user_code` (where jobs find the user's code), `serialization`
(cloudpickle frames), `exceptions`, `logs` (actors' output), `_job` (the job process),
`_node`, `cli` and `_cli_input` (the `xparl` command); `_core` is the native module.
"""

from parl_rs._core import __version__
from parl_rs.client import connect, disconnect, get_global_client
from parl_rs.exceptions import (
    ActorDiedError,
    AuthenticationError,
    CallTimeoutError,
    ConnectError,
    DependencyError,
    FutureFunctionError,
    FutureGetRepeatedlyError,
    FutureObjectEmpty,
    MessageTooLargeError,
    ProtocolError,
    RemoteAttributeError,
    RemoteDeserializeError,
    RemoteError,
    RemoteSerializeError,
    ResourceError,
    TaskError,
)
from parl_rs.future import FutureObject, as_completed, wait
from parl_rs.logs import get_log, log_url
from parl_rs.monitor import monitor_url
from parl_rs.remote import remote_class
from parl_rs.tasks import ActorPool, remote_function

__all__ = [
    "ActorDiedError",
    "ActorPool",
    "AuthenticationError",
    "CallTimeoutError",
    "ConnectError",
    "DependencyError",
    "FutureFunctionError",
    "FutureGetRepeatedlyError",
    "FutureObject",
    "FutureObjectEmpty",
    "MessageTooLargeError",
    "ProtocolError",
    "RemoteAttributeError",
    "RemoteDeserializeError",
    "RemoteError",
    "RemoteSerializeError",
    "ResourceError",
    "TaskError",
    "__version__",
    "as_completed",
    "connect",
    "disconnect",
    "get_global_client",
    "get_log",
    "log_url",
    "monitor_url",
    "remote_class",
    "remote_function",
    "wait",
]
