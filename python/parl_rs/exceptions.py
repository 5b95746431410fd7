"""The exception tree of parl_rs, and the one place a job's failure report becomes an exception.

The names and constructor signatures follow PARL (`parl.remote.exceptions`) so that existing
`except RemoteError` code keeps working. The native module raises `ActorDiedError`,
`ResourceError`, `ConnectError` and `ProtocolError` with positional arguments only.
"""

from __future__ import annotations

import builtins
import functools
import sys
from typing import Any, Optional, Protocol

__all__ = [
    "ActorDiedError",
    "AuthenticationError",
    "CallTimeoutError",
    "ConnectError",
    "FutureFunctionError",
    "FutureGetRepeatedlyError",
    "FutureObjectEmpty",
    "MessageTooLargeError",
    "ProtocolError",
    "RemoteAttributeError",
    "RemoteDeserializeError",
    "RemoteError",
    "RemoteSerializeError",
    "ResourceError",
]


class RemoteError(Exception):
    """An error raised while an actor ran a request (`func_name` is the method or attribute)."""

    def __init__(
        self,
        func_name: str,
        error_info: str,
        *,
        remote_type: Optional[str] = None,
        remote_traceback: Optional[str] = None,
        actor_id: Optional[str] = None,
    ) -> None:
        # Call BaseException's __init__ directly: a dynamic subclass may also derive from a class
        # such as OSError whose own __init__ would reinterpret these two arguments.
        Exception.__init__(self, func_name, error_info)
        self.func_name = func_name
        self.error_info = error_info
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.actor_id = actor_id

    def __str__(self) -> str:
        header = f"[Error occurred in xparl, when calling function `{self.func_name}`]:"
        return f"{header}\n{self.error_info}"


class RemoteAttributeError(RemoteError, AttributeError):
    """The actor has no such attribute (an `AttributeError`, so `hasattr` works on proxies)."""


class RemoteSerializeError(RemoteError):
    """Arguments or a return value could not be pickled."""


class RemoteDeserializeError(RemoteError):
    """Arguments or a return value could not be unpickled."""


class ActorDiedError(RemoteError):
    """The actor's job process is gone (it crashed, exited, or the actor was released)."""


class CallTimeoutError(RemoteError, TimeoutError):
    """A call did not return within its timeout (`@remote_class(call_timeout=S)` or
    `actor.method.options(timeout=S)`). The actor is ended: its job was in an unknown state."""


class ResourceError(Exception):
    """No vacant CPU slot became available before the creation timeout."""


class TaskError(Exception):
    """A task (`@remote_function`) ended without its function's result: every attempt was lost
    (its job crashed, its worker was lost, or it ran past its timeout and was killed).
    `attempts` lists each one as (worker id, hostname, job id, what happened)."""

    def __init__(self, message: str, attempts: Optional[list[tuple[str, str, str, str]]] = None):
        super().__init__(message)
        self.attempts = list(attempts or [])


class DependencyError(TaskError):
    """A task did not run: a task it was to run `after` failed (and so on down the graph)."""


class ConnectError(ConnectionError):
    """The master cannot be reached, refused this client, or speaks another protocol version."""


class AuthenticationError(ConnectError):
    """The cluster-key handshake failed: this side has no key or a wrong one, or the server
    cannot prove it holds the key (so nothing may be sent to it or accepted from it)."""


class ProtocolError(Exception):
    """A peer answered with something this version of parl_rs does not understand."""


class MessageTooLargeError(ProtocolError, ValueError):
    """A call's arguments are above the message size limit (`PARL_RS_MAX_MESSAGE_MB`, 4 GiB by
    default). A result above it is reported as a `RemoteSerializeError`."""


class FutureObjectEmpty(Exception):
    """`FutureObject.get` found no result: `block=False`, or `timeout` passed first."""

    def __init__(self) -> None:
        super().__init__("The result is currently unavailable.")


class FutureGetRepeatedlyError(Exception):
    """`FutureObject.get` was called again after it returned (or raised) the outcome."""

    def __init__(self) -> None:
        super().__init__(
            "The `get` function of the `FutureObject` has been called before. We can only call "
            "the `get` function for each FutureObject **once**."
        )


class FutureFunctionError(RemoteError):
    """A call on a future-mode actor failed; raised by `FutureObject.get`.

    The original error (a `RemoteError` such as `RemoteValueError`, an `ActorDiedError`, a
    `ResourceError`...) is its `__cause__`, and its type, message and remote traceback are in
    this error's message. `FutureObject.result()` raises the original error itself.
    """

    def __init__(self, func_name: str, error_info: str = "", **details: Any) -> None:
        super().__init__(func_name, error_info, **details)

    @classmethod
    def wrapping(cls, func_name: str, error: BaseException) -> FutureFunctionError:
        """The error `get` raises for a call of `func_name` that failed with `error`."""
        if isinstance(error, RemoteError):
            # A remote exception's info starts with its type; ActorDiedError's does not.
            named = bool(error.remote_type)
            info = error.error_info if named else f"{type(error).__name__}: {error.error_info}"
            details = {
                "remote_type": error.remote_type,
                "remote_traceback": error.remote_traceback,
                "actor_id": error.actor_id,
            }
        else:
            info, details = f"{type(error).__name__}: {error}", {}
        wrapper = cls(func_name, info, **details)
        wrapper.__cause__ = error
        return wrapper

    def __str__(self) -> str:
        header = f"There is an error raised when calling the future function `{self.func_name}`:"
        return f"{header}\n{self.error_info}"


class FailureReport(Protocol):
    """What a job reports about a failed request (`_core.RemoteFailure` has this shape)."""

    kind: str
    exc_type: str
    message: str
    traceback: str


_KIND_TO_CLASS: dict[str, type[RemoteError]] = {
    "user": RemoteError,
    "attribute": RemoteAttributeError,
    "serialize": RemoteSerializeError,
    "deserialize": RemoteDeserializeError,
}


def build_remote_error(
    func_name: str,
    failure: FailureReport,
    *,
    actor_id: Optional[str] = None,
) -> RemoteError:
    """Turn a job's failure report into the exception the caller sees.

    A "user" failure whose exception class is known locally becomes an instance of a subclass
    of both `RemoteError` and that class, so `except ValueError` works as it would locally.
    """
    cls = _KIND_TO_CLASS.get(failure.kind, RemoteError)
    if failure.kind == "user":
        original = _resolve_exception_class(failure.exc_type)
        cls = (_remote_subclass(original) if original is not None else None) or RemoteError
    error = cls.__new__(cls)
    RemoteError.__init__(
        error,
        func_name,
        _error_info(failure),
        remote_type=failure.exc_type or None,
        remote_traceback=failure.traceback or None,
        actor_id=actor_id,
    )
    return error


def _error_info(failure: FailureReport) -> str:
    """A headline with the remote type and message, then the remote traceback if there is one."""
    # Serialize and deserialize reports say what failed in their message; their exception type
    # (an internal wrapper) would only add noise.
    named = failure.kind in ("user", "attribute") and failure.exc_type
    exc_type = failure.exc_type.removeprefix("builtins.")
    headline = f"{exc_type}: {failure.message}" if named else failure.message
    if not failure.traceback:
        return headline
    return f"{headline}\n\nRemote traceback:\n{failure.traceback.rstrip()}"


def _resolve_exception_class(qualified: str) -> Optional[type]:
    """Find the class named "module.Qual.Name" without importing anything new.

    Importing on the caller's side could run arbitrary module code just to format an error,
    so only modules that are already loaded (or builtins) are considered.
    """
    # The module part may itself contain dots and the class may be nested: try every split.
    parts = qualified.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name, qualname = ".".join(parts[:split]), parts[split:]
        module = builtins if module_name == "builtins" else sys.modules.get(module_name)
        if module is None:
            continue
        found: Any = module
        for attr in qualname:
            found = getattr(found, attr, None)
        if isinstance(found, type) and issubclass(found, Exception):
            return found
    return None


@functools.cache
def _remote_subclass(original: type) -> Optional[type[RemoteError]]:
    """`RemoteError` + `original`, created once per class; None if Python refuses the mix."""
    if issubclass(original, RemoteError):
        return None
    name = f"Remote{original.__name__}"
    namespace = {"__reduce__": _reduce_remote_subclass, "_xparl_original": original}
    try:
        return type(name, (RemoteError, original), namespace)
    except TypeError:
        # Layout or MRO conflicts (e.g. C extension exceptions that forbid subclassing).
        return None


def _reduce_remote_subclass(self: RemoteError) -> tuple:
    # The dynamic class cannot be found by name when unpickling: rebuild it from the original.
    return (_restore_remote_subclass, (type(self)._xparl_original, self.args, self.__dict__))


def _restore_remote_subclass(original: type, args: tuple, state: dict) -> RemoteError:
    cls = _remote_subclass(original) or RemoteError
    error = cls.__new__(cls)
    RemoteError.__init__(error, *args)
    error.__dict__.update(state)
    return error
