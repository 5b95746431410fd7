"""The native core of parl_rs (built from `rust/parl-py`).

Everything that touches the network, processes or heartbeats lives here, in Rust,
and never waits while holding the GIL. Errors are raised as the classes of
`parl_rs.exceptions` (the native layer imports that module and maps its own
error kinds onto it in one place):

* `ConnectError`     - the master cannot be reached / refused registration.
* `AuthenticationError` (a `ConnectError`) - the cluster-key handshake failed: no key, a
                       wrong key, or a server that cannot prove it holds the key.
`key` arguments are the cluster key's text; None means no key (an `--insecure` cluster).
* `ResourceError`    - no vacant slot before the creation timeout, or a request the cluster
                       can never serve (refused at once: e.g. GPUs on a CPU cluster).
* `ActorDiedError`   - the actor's job process is gone (or was released).
* `ProtocolError`    - a peer answered with something this version does not understand.
* `KeyboardInterrupt` propagates out of every blocking wait.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence, Union, final

__all__ = [
    "__version__",
    "PROTOCOL_VERSION",
    "Client",
    "ActorHandle",
    "CallKind",
    "JobRequest",
    "RemoteFailure",
    "PendingReply",
    "Frame",
    "CompletionQueue",
    "TaskDispatcher",
    "LocalCluster",
    "JobRuntime",
    "run_master",
    "schemes",
    "run_worker",
    "cluster_status",
    "http_token",
    "key_from_parent",
]

_Buffer = Union[bytes, bytearray, memoryview]
"""A payload frame: anything with the buffer protocol that `bytes()` accepts."""

@final
class Frame:
    """A received payload frame of 64 KiB or more: the received memory, exposed through the
    buffer protocol without a copy (`memoryview(frame)`, `pickle.loads`). Writable when the
    frame is the only owner of that memory (the usual case: the transport reads each such
    frame into memory of its own), read-only otherwise. Smaller frames arrive as `bytes`."""

    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int) -> memoryview: ...

_Received = Union[bytes, Frame]

__version__: str
"""Version of the parl_rs package (the same for the wheel and the crate)."""

PROTOCOL_VERSION: int
"""Wire protocol version; peers with another version are refused with a clear error."""

@final
class RemoteFailure:
    """Why a request failed inside the job (the job process itself is fine)."""

    kind: str
    """One of "user" (the user's code raised), "attribute" (getattr raised AttributeError),
    "serialize" (the job could not pickle the return value), "deserialize" (the job could
    not unpickle the arguments)."""
    exc_type: str
    """Qualified name of the remote exception class, e.g. "builtins.ValueError"."""
    message: str
    """`str(exc)` of the remote exception."""
    traceback: str
    """The remote traceback, formatted."""

@final
class PendingReply:
    """The reply to one request, once it arrives (made by `ActorHandle.submit`).

    The I/O thread stores the reply without taking the GIL; `wait` blocks with the GIL
    released, and a `CompletionQueue` can be told when the reply lands.
    """

    def done(self) -> bool:
        """True once the reply (or the error that ended the actor) is there."""
    def wait(
        self, timeout: Optional[float] = None
    ) -> tuple[list[_Received], Optional[RemoteFailure]]:
        """Block (GIL released, Ctrl-C honoured) until the reply is there; may be called again
        (the frames are made once: every call returns the same frame objects).

        Returns `(frames, None)` on success and `(frames, failure)` when the job reports a
        failure. Raises `ActorDiedError` if the actor's job is gone (it died or was released),
        `ResourceError` or `ConnectError` if the actor could not be created, `TimeoutError`
        after `timeout` seconds.
        """

@final
class CompletionQueue:
    """Tells one consumer which watched `PendingReply`s have their reply.

    The consumer is either a thread blocked in `next` with the GIL released (`parl_rs.future`)
    or an asyncio event loop reading `fileno()` (`parl_rs.aio`); replies push keys from the
    I/O thread without the GIL. A reply may be watched by several queues.
    """

    def __init__(self) -> None: ...
    def watch(self, pending: PendingReply, key: int) -> None:
        """Push `key` when `pending` has its reply (at once if it already has it)."""
    def next(self, timeout: Optional[float] = None) -> Optional[list[int]]:
        """Block (GIL released, not interruptible: use a dedicated thread) until at least one
        key is pushed, up to `timeout` seconds; return every pushed key, in the order pushed
        (`[]` on timeout). Returns None once the queue is closed."""
    def close(self) -> None:
        """Make `next` return None, now and from then on."""
    def fileno(self) -> int:
        """An eventfd that is readable while pushed keys wait (made on first call; the queue
        owns it). For `loop.add_reader`: a burst of replies makes it readable once."""
    def drain(self) -> list[int]:
        """Every key pushed so far, in order, without waiting (`[]` if none); resets `fileno()`."""

@final
class CallKind:
    """What a request asks of an actor (the call envelope's kind)."""

    Init: CallKind
    Method: CallKind
    GetAttr: CallKind
    SetAttr: CallKind
    Task: CallKind
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __int__(self) -> int: ...

@final
class JobRequest:
    """One request for `parl_rs._job` (`JobRuntime.next_request`)."""

    @property
    def id(self) -> int:
        """To pass back to `JobRuntime.reply`."""
    @property
    def kind(self) -> CallKind: ...
    @property
    def name(self) -> str:
        """The method or attribute; the class name for an `Init`; the function's id for a
        `Task`."""
    @property
    def frames(self) -> list[_Received]: ...
    @property
    def env(self) -> list[tuple[str, str]]:
        """Environment variables to set before the payload is unpickled, so before any user
        code is loaded: for an `Init`, `CUDA_VISIBLE_DEVICES` with the actor's GPU ids ("" for
        a CPU actor); empty otherwise."""
    @property
    def portable(self) -> bool:
        """The payload is portable pickle (a native client's): the reply must be too."""
    @property
    def options(self) -> Optional[dict]:
        """An `Init`'s actor options: `keep_alive_on_error`, `max_concurrency` and `code`
        (`sys_path`, `sources`: a shipped file's path in the job -> its path on the client);
        None for other requests."""

@final
class ActorHandle:
    """One remote actor: a job process reserved for this client.

    The handle exists before the job does: `Client.create_actor` returns at once, and
    requests submitted while the master is still finding a job queue up and reach the job,
    in order, once it is connected. If the creation fails, every request fails with that
    error. The properties describing the job are None until then.

    Dropping the last reference releases the actor (its job exits and the slot returns
    to the pool; a creation still waiting is cancelled); `release()` does the same
    explicitly. Both are idempotent and never block. Several threads may submit at once;
    the job runs requests one at a time, in the order they reach it.
    """

    @property
    def actor_id(self) -> Optional[str]: ...
    @property
    def class_name(self) -> str: ...
    @property
    def job_address(self) -> Optional[str]:
        """tcp://host:port of the job process."""
    @property
    def worker_id(self) -> Optional[str]: ...
    @property
    def hostname(self) -> Optional[str]:
        """Host name of the worker that runs the job."""
    @property
    def log_address(self) -> Optional[str]:
        """ "host:port" of the worker's HTTP log server (`/get-log?job_id=<actor_id>`)."""
    @property
    def pid(self) -> Optional[int]:
        """Process id of the job (on the worker's host)."""
    @property
    def gpus(self) -> Optional[list[str]]:
        """GPU ids reserved for the actor (its `CUDA_VISIBLE_DEVICES`); empty for a CPU actor."""
    @property
    def is_alive(self) -> bool:
        """False once the actor was released, died, or could not be created."""
    def submit(
        self, kind: CallKind, name: str, frames: Sequence[_Buffer], lend: bool = False
    ) -> PendingReply:
        """Send one request to the job without waiting (never blocks).

        `name` is the class name for `CallKind.Init`, otherwise the method or attribute name.
        `frames` are the payload frames (their layout per kind: `parl_core::protocol::call`).
        For an `Init`, the client's shipped files are written to the job's working directory
        first, the job gets the actor's GPU ids (those of its grant, even for an `Init` made
        before the job was granted) and options, and its worker starts enforcing the actor's
        `max_memory`.

        `bytes` frames are never copied. Other buffers of 64 KiB or more (numpy arrays) are
        sent without a copy when `lend` is True: the caller promises not to change them until
        the reply arrives (a synchronous call); otherwise they are copied once.
        """
    def request(
        self, kind: CallKind, name: str, frames: Sequence[_Buffer], timeout: Optional[float] = None
    ) -> tuple[list[_Received], Optional[RemoteFailure]]:
        """`submit(kind, name, frames).wait(timeout)`."""
    def release(self) -> None: ...

@final
class TaskDispatcher:
    """Runs stateless tasks of one client on jobs it leases from the master (`Client.tasks`)."""

    def define(self, function: int, pickled: bytes) -> None:
        """Make function `function` known: `pickled` goes to each leased job once."""
    def submit(
        self,
        function: int,
        name: str,
        frames: Sequence[_Buffer],
        timeout: Optional[float] = None,
        retries: int = 0,
        retry_exceptions: bool = False,
        hwm: int = 1,
        n_gpu: int = 0,
        max_memory: Optional[float] = None,
        after: Sequence[int] = ...,
        follow: Optional[int] = None,
    ) -> tuple[int, PendingReply]:
        """Queue a task of `function` (`name` in errors) with the pickled arguments `frames`;
        return its id and its reply, at once. A crash, a lost worker or a timeout (the job is
        killed) is retried `retries` times, an exception of the function only with
        `retry_exceptions`; then the reply raises `TaskError` listing each attempt. `after`:
        ids of earlier tasks that must succeed first (`DependencyError` if one fails);
        `ProtocolError` at once for an id that is not an earlier task of this dispatcher.
        `follow`: an earlier task that must succeed first, on whose worker this one runs
        (`ResourceError` if that worker has left the cluster). `hwm`: tasks one leased job
        may hold at once. A cancelled task's reply raises
        `concurrent.futures.CancelledError`; a task whose lease cannot be had, `ResourceError`."""
    def cancel(self, task: int) -> None:
        """Cancel a task: a queued one never runs; a running one is stopped (its job killed)."""

@final
class Client:
    """This process's connection to a master. Create it with `Client.connect`."""

    @staticmethod
    def connect(
        address: str,
        connect_timeout: float = 5.0,
        log_to_driver: bool = False,
        key: Optional[str] = None,
    ) -> Client:
        """Connect to the master at "host:port" and register this client.

        Heartbeat settings come from the master (its `--heartbeat-interval/-timeout`). With
        `log_to_driver`, each actor's output is printed on this process's stdout, every line
        prefixed with `[actor <id> on <host>]`.

        Raises `ConnectError` naming the address when the master cannot be reached within
        `connect_timeout` seconds, refuses the client, or speaks another protocol version.
        """
    @property
    def http_token(self) -> Optional[str]:
        """The token the cluster's HTTP ports (status, logs) require, derived from the key;
        None for an insecure cluster."""
    @property
    def client_id(self) -> str: ...
    @property
    def master_address(self) -> str: ...
    @property
    def master_version(self) -> str:
        """The parl_rs version of the master."""
    @property
    def master_python(self) -> str:
        """ "major.minor" of the cluster's Python ("" if the master does not know)."""
    @property
    def files_shipped(self) -> int:
        """How many times the shipped files were sent to a worker (once per worker)."""
    def set_shipped_files(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Files (relative path, content) written into each new job's working directory; a
        path ending in "/" is an empty folder. They travel to each worker once (the worker
        caches them by content hash). Raises `MessageTooLargeError` if together they are
        above the cluster's message limit."""
    def create_actor(
        self,
        n_cpu: int = 1,
        n_gpu: int = 0,
        timeout: float = 300.0,
        class_name: str = ...,
        max_memory: Optional[float] = None,
        keep_alive_on_error: bool = False,
        max_concurrency: int = 1,
        sys_path: Sequence[str] = ...,
        sources: Sequence[tuple[str, str]] = ...,
    ) -> ActorHandle:
        """A new actor; returns at once (see `ActorHandle`).

        In the background it reserves a vacant job and connects to it, waiting in the master's
        queue while no slot is vacant (logging a notice every few seconds). Its requests fail
        with `ResourceError` after `timeout` seconds, or as soon as the master answers that the
        cluster can never serve it (GPUs on a CPU cluster or the reverse, `n_gpu` above 8 or
        above the GPUs of its largest worker).

        `n_gpu` GPUs come from one worker of a GPU cluster (`n_cpu` is then 0). `max_memory`
        (MB, 2**20 bytes) is what the actor may use beyond its job's start-up memory, children
        included; past it the worker kills the job and calls raise `ActorDiedError` saying so.
        Raises `ValueError` at once for a `max_memory` that is not a positive number.

        The actor's options go to its job with the `Init`: `keep_alive_on_error`,
        `max_concurrency` (requests served at once), and where the job finds the client's code:
        `sys_path` entries, and `sources` (a shipped file's path in the job, its path here).
        """
    def tasks(
        self,
        sys_path: Sequence[str] = ...,
        sources: Sequence[tuple[str, str]] = ...,
        create_timeout: float = 300.0,
        idle_return: float = 0.5,
    ) -> TaskDispatcher:
        """A task dispatcher of this client (see `parl_rs.tasks`). Each leased job is set up
        as `parl_rs.tasks.TaskRunner` and finds the client's code through `sys_path` and
        `sources` (as for `create_actor`); a lease request waits at most `create_timeout`
        seconds in the master's queue; a lease without work for `idle_return` seconds goes
        back. Raises `ValueError` for negative or infinite seconds."""
    def status(self) -> dict:
        """The cluster's status as `cluster_status` returns it."""
    def close(self) -> None:
        """Release every actor of this client and unregister from the master. Idempotent."""

@final
class LocalCluster:
    """A master and one worker running inside this process (the embedded cluster).

    Job processes are children of this process and end with it.
    """

    def __new__(
        cls,
        cpu_num: int,
        python: Sequence[str],
        host: str = ...,
        port: int = 0,
    ) -> LocalCluster:
        """Start the cluster and wait until the worker has registered all its slots' jobs
        (or at least registered). `python` is the command that starts a job interpreter,
        e.g. `[sys.executable]`; `host` defaults to 127.0.0.1. The cluster gets a random key of
        its own (see `key`)."""
    @property
    def key(self) -> Optional[str]:
        """The cluster's key; its clients pass it to `Client.connect`."""
    @property
    def address(self) -> str:
        """ "host:port" of the embedded master."""
    def shutdown(self) -> None:
        """Stop the worker (its jobs exit) and the master. Idempotent."""

def run_master(
    host: str,
    port: int,
    ready_file: Optional[str] = None,
    heartbeat_interval: float = 1.0,
    heartbeat_timeout: float = 5.0,
    http_port: Optional[int] = None,
    gpu_cluster: bool = False,
    key: Optional[str] = None,
    encrypt: bool = False,
    scheme: str = "leastload",
    hwm: int = 0,
    http_host: Optional[str] = None,
) -> None:
    """Run a master in the foreground until SIGTERM/SIGINT (used by `xparl start`).

    A `gpu_cluster` master takes only GPU workers and GPU actors; otherwise only CPU ones.
    `scheme` places actors (one of `schemes()`; `ValueError` otherwise, naming them).
    With `encrypt` (needs a `key`) every session with it, and every session its workers and
    clients open, encrypts its messages as well as authenticating them.
    With `http_port` (0: any free port) it also serves HTTP, on `http_host` (default:
    `host`): the web monitor (`/`, `/api/v1/...`, `/metrics`), `/status` (JSON) and
    `/get-log`, `/download-log` (redirected to the log server of the job's worker).
    Once bound, writes `{"address": "host:port", "http_address": "host:port" or null,
    "pid": N}` as JSON to `ready_file`.
    Raises `OSError` with a clear message if the port is in use.

    `hwm` is the default high-water mark of grants in flight per worker, for workers that set
    none: the most jobs granted on one worker whose actor has not started yet (0: unlimited).
    """

def schemes() -> list[str]:
    """The placement schemes a master can run, the default first."""

def run_worker(
    master_address: str,
    cpu_num: int,
    python: Sequence[str],
    state_dir: str,
    ready_file: Optional[str] = None,
    host: Optional[str] = None,
    connect_timeout: float = 5.0,
    gpus: Sequence[str] = ...,
    advertise: Optional[str] = None,
    key: Optional[str] = None,
    hwm: int = 0,
) -> None:
    """Run a worker in the foreground until SIGTERM/SIGINT (used by `xparl start/connect`).

    Offers `cpu_num` CPU slots and the GPU ids `gpus` (a GPU worker has `cpu_num=0`), and
    keeps one warm job per slot and per GPU, started with `python + ["-m", "parl_rs._job"]`
    and `CUDA_VISIBLE_DEVICES=""`; it kills a job past its actor's `max_memory`;
    job logs and working directories go under `state_dir`. Writes
    `{"worker_id": ..., "pid": N}` to `ready_file` once registered with the master.
    Raises `ConnectError` if the master cannot be reached within `connect_timeout`, or refuses
    the worker (a CPU worker at a GPU cluster, a GPU worker at a CPU cluster).

    `host` is the interface jobs and the log server bind (default: the one that routes to the
    master); `advertise` the host published to clients instead (NAT, VPN, wildcard binds).
    `hwm` is this worker's high-water mark of grants in flight: the most jobs the master may
    have granted on it whose actor has not started yet (0: the master's default).
    """

def cluster_status(address: str, timeout: float = 5.0, key: Optional[str] = None) -> dict:
    """Ask a master for its status without registering as a client.

    Returns {"master": "host:port", "version": str, "gpu_cluster": bool, "workers":
    [{"worker_id", "hostname", "cpu_total", "cpu_used", "cpu_vacant", "gpu_total", "gpu_used",
    "gpu_vacant", "jobs_ready"}], "clients": [{"client_id", "hostname", "pid", "actors",
    "cpus", "gpus"}], "cpu_total", "cpu_used", "cpu_vacant", "gpu_total", "gpu_used",
    "gpu_vacant", "actors", "pending_requests", "http_address": "host:port" or None}. A GPU
    actor uses GPUs only, no CPU. "http_address" is where the master's HTTP endpoint is bound
    (its host may be 0.0.0.0: use the host the master was reached by).
    """

def http_token(key: str) -> Optional[str]:
    """The token the HTTP ports of the cluster with `key` require (as `?token=` or as
    `Authorization: Bearer`); None for an empty key."""

def key_from_parent() -> Optional[str]:
    """The cluster key this process's parent passed: read once from the pipe named in
    `XPARL_KEY_FD` (then closed), else `XPARL_CLUSTER_KEY`; None if neither is set. Raises
    `ProtocolError` if `XPARL_KEY_FD` names no pipe."""

@final
class JobRuntime:
    """The networking side of a job process (used only by `parl_rs._job`).

    Reads its configuration from the environment the worker sets (XPARL_JOB_ID,
    XPARL_WORKER_ADDRESS, XPARL_JOB_HOST, XPARL_JOB_DIR), binds the job's socket, and
    announces itself to the worker. Heartbeats and the watch on the parent process run
    in Rust threads, so a job busy in Python is never considered dead.
    """

    @staticmethod
    def start() -> JobRuntime: ...
    @property
    def job_id(self) -> str: ...
    @property
    def workdir(self) -> str:
        """The job's working directory (shipped files are written here)."""
    def next_request(self) -> Optional[JobRequest]:
        """Block (GIL released) until the next request. Returns None when the actor is
        released or the worker is gone: the job must exit."""
    def wait_for_release(self, timeout: float) -> None:
        """Wait (GIL released) until the job must exit, at most `timeout` seconds, dropping
        requests that still arrive (after the actor ended on an error)."""
    def reply(
        self,
        request_id: int,
        frames: Sequence[_Buffer],
        failure: Optional[tuple[str, str, str, str]] = None,
    ) -> None:
        """Answer a request. `failure` is (kind, exc_type, message, traceback).

        Large buffers are sent without a copy; the call returns (GIL released meanwhile) once
        they are written, so the actor may change them afterwards."""
