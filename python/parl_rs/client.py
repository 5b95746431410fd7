"""The process-wide connection to a cluster: `connect`, `disconnect`, `get_global_client`.

One client per process id, like PARL: a forked child that calls `connect` (or creates an actor)
gets its own client instead of sharing the parent's sockets.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shlex
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

from parl_rs import _core
from parl_rs._user_code import CodeContext, job_relative, search_path_for_jobs
from parl_rs.keys import find_key

logger = logging.getLogger(__name__)

_DEFAULT_CREATE_TIMEOUT = 300.0
# The cluster `connect()` without an address joins; `xparl slurm` sets it for its command.
ADDRESS_ENV = "XPARL_ADDRESS"


@dataclass
class _Connection:
    pid: int
    address: str
    client: _core.Client
    create_timeout: float
    cluster: Optional[_core.LocalCluster] = None
    key: Optional[str] = None
    # Shipped Python files: path in a job's directory -> absolute path here (for tracebacks).
    sources: dict[str, str] = field(default_factory=dict)
    # The client's task dispatcher (`parl_rs.tasks`), made on first use.
    tasks: Optional[_core.TaskDispatcher] = None


_lock = threading.Lock()
_current: Optional[_Connection] = None
# Connections inherited from a parent process through fork. They are kept referenced, never
# closed or dropped here: their sockets belong to the parent.
_inherited: list[_Connection] = []
_atexit_registered = False


def _reset_lock_in_child() -> None:
    # Another thread may have held the lock at fork time; in the child it would never be freed.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def connect(
    master_address: Optional[str] = None,
    distributed_files: Optional[list[str]] = None,
    *,
    create_timeout: Optional[float] = None,
    log_to_driver: bool = False,
    key: Optional[str] = None,
) -> None:
    """Connect this process to the master at "host:port".

    `key` is the cluster key; by default it comes from `XPARL_CLUSTER_KEY`, else from the key
    file `xparl start` wrote on this machine for that port (see `parl_rs.keys`).

    Without an address, join the cluster at `$XPARL_ADDRESS` ("host:port"; `xparl slurm` sets
    it, and `XPARL_CLUSTER_KEY`, for the command it runs) or, when that is unset, start an
    embedded cluster (a master and a worker with one slot per CPU) owned by this process.

    `distributed_files` are glob patterns of files, relative to the current directory, that
    every job receives besides the `*.py` files next to the script (directories are shipped
    recursively, empty folders included); they travel to each worker once; a pattern may reach
    above the current directory ("../lib/*": see `parl_rs._user_code` for where such files
    land). With `log_to_driver`, what actors print is echoed here, prefixed with the actor.
    """
    distributed_files = [] if distributed_files is None else distributed_files
    if master_address is None:
        master_address = os.environ.get(ADDRESS_ENV, "").strip() or None
    if master_address is not None:
        assert len(master_address.split(":")) == 2, (
            f"please input address in {{ip}}:{{port}} format, got {master_address!r}"
        )
    assert isinstance(distributed_files, list), "distributed_files should be a list."
    if os.environ.get("XPARL") == "True":
        logger.warning("parl_rs.connect() is ignored inside an xparl job: actors run locally.")
        return
    global _current
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            logger.info("Already connected to %s; ignoring this connect().", _current.address)
            return
        _forget_inherited()
        paths = shipped_paths(distributed_files)
        timeout = _resolve_create_timeout(create_timeout)
        _current = _open(master_address, _read_files(paths), timeout, log_to_driver, key)
        _current.sources = {
            relpath: os.path.abspath(path)
            for relpath, path in paths.items()
            if relpath.endswith(".py")
        }
        _register_atexit()


def disconnect() -> None:
    """Close this process's client (its actors are released) and its embedded cluster."""
    global _current
    with _lock:
        _forget_inherited()
        connection, _current = _current, None
    if connection is not None:
        _close(connection)


def get_global_client() -> _core.Client:
    """This process's client; a forked child reconnects to its parent's master on first use."""
    with _lock:
        connection = _current
    assert connection is not None, (
        "Cannot get the client to submit the job, have you connected to the cluster by calling "
        "parl_rs.connect(master_address)?"
    )
    if connection.pid != os.getpid():
        # Like PARL: the child connects to the same master, without distributed_files.
        connect(connection.address, create_timeout=connection.create_timeout, key=connection.key)
        with _lock:
            connection = _current
        assert connection is not None
    return connection.client


def task_dispatcher(make: Callable[[_core.Client], _core.TaskDispatcher]) -> _core.TaskDispatcher:
    """This process's task dispatcher, made with `make(client)` on first use."""
    client = get_global_client()
    with _lock:
        connection = _current
        assert connection is not None and connection.client is client, "disconnected meanwhile"
        if connection.tasks is not None:
            return connection.tasks
    made = make(client)  # not under the lock: making it reads this module's settings
    with _lock:
        if connection.tasks is None:
            connection.tasks = made
        return connection.tasks


def create_timeout() -> float:
    """Seconds an actor creation may wait for a vacant slot before `ResourceError`."""
    with _lock:
        return _current.create_timeout if _current is not None else _DEFAULT_CREATE_TIMEOUT


def code_context() -> CodeContext:
    """Where this process's code is, for a job to find it (sent with each actor's init)."""
    with _lock:
        sources = _current.sources if _current is not None else {}
    return CodeContext(search_path_for_jobs(), sources)


def _python_command() -> list[str]:
    """The command that starts a Python interpreter for nodes and jobs (PARL's XPARL_PYTHON)."""
    custom = os.environ.get("XPARL_PYTHON")
    return shlex.split(custom) if custom else [sys.executable]


def _resolve_create_timeout(explicit: Optional[float]) -> float:
    if explicit is not None:
        return float(explicit)
    from_env = os.environ.get("PARL_RS_CREATE_TIMEOUT")
    return float(from_env) if from_env else _DEFAULT_CREATE_TIMEOUT


def _open(
    master_address: Optional[str],
    files: list[tuple[str, bytes]],
    timeout: float,
    log_to_driver: bool = False,
    key: Optional[str] = None,
) -> _Connection:
    """Start the embedded cluster if needed, connect, check versions and register the files."""
    cluster = None
    if master_address is None:
        cluster = _core.LocalCluster(cpu_num=os.cpu_count() or 1, python=_python_command())
        master_address, key = cluster.address, cluster.key
    else:
        key = find_key(master_address, key)
    client = None
    try:
        client = _core.Client.connect(master_address, log_to_driver=log_to_driver, key=key)
        _check_versions(client)
        client.set_shipped_files(files)
    except BaseException:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.shutdown()
        raise
    return _Connection(os.getpid(), master_address, client, timeout, cluster, key)


def _check_versions(client: _core.Client) -> None:
    # Jobs unpickle what this process pickles, so Python must match (PARL's check). The parl_rs
    # version needs no check here: the master refuses a client of another version already.
    local_python = "{}.{}".format(*sys.version_info[:2])
    assert not client.master_python or client.master_python == local_python, (
        f"Python version mismatch: the cluster at {client.master_address} runs Python "
        f"{client.master_python}, this process runs Python {local_python}."
    )


def _close(connection: _Connection) -> None:
    # Close the client before the cluster, so actors are released while the master still runs.
    try:
        connection.client.close()
    finally:
        if connection.cluster is not None:
            connection.cluster.shutdown()


def _forget_inherited() -> None:
    """Set aside a connection inherited through fork (called with `_lock` held)."""
    global _current
    if _current is not None and _current.pid != os.getpid():
        _inherited.append(_current)
        _current = None


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_close_at_exit)
        _atexit_registered = True


def _close_at_exit() -> None:
    # A forked child inherits this handler; it must only close its own connection.
    with _lock:
        connection = _current
    if connection is not None and connection.pid == os.getpid():
        disconnect()


def collect_shipped_files(distributed_files: list[str]) -> list[tuple[str, bytes]]:
    """The files every job receives, as (path in the job's directory, content)."""
    return _read_files(shipped_paths(distributed_files))


def shipped_paths(distributed_files: list[str]) -> dict[str, str]:
    """The files every job receives: path in the job's directory -> path here.

    Every `*.py` file directly next to the entry script (or in the current directory when
    there is no script, e.g. in a notebook), keyed by base name, plus `distributed_files`.
    """
    files: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(_entry_directory(), "*.py"))):
        if os.path.isfile(path):
            files[os.path.basename(path)] = path
    for pattern in distributed_files:
        files.update(_expand_pattern(pattern))
    return dict(sorted(files.items()))


def _read_files(paths: dict[str, str]) -> list[tuple[str, bytes]]:
    return [
        (relpath, b"" if relpath.endswith("/") else _read(path)) for relpath, path in paths.items()
    ]


def _entry_directory() -> str:
    script = sys.argv[0] if sys.argv else ""
    if script and os.path.isfile(script):
        return os.path.dirname(os.path.abspath(script))
    return os.getcwd()


def _expand_pattern(pattern: str) -> dict[str, str]:
    """Job path -> local path for one glob pattern; directories are walked recursively."""
    assert not os.path.isabs(pattern), "[XPARL] Please do not distribute a file with absolute path."
    matches = glob.glob(pattern)
    if not matches:
        raise ValueError(f"no local file is matched with '{pattern}'")
    files: dict[str, str] = {}
    for match in matches:
        if os.path.isdir(match):
            for root, dirs, names in os.walk(match):
                if not dirs and not names:
                    # An empty folder travels as "path/" (jobs recreate it).
                    files[job_relative(root) + "/"] = root
                for name in names:
                    path = os.path.join(root, name)
                    files[job_relative(path)] = path
        else:
            files[job_relative(match)] = match
    return files


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
