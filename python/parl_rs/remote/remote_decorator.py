"""`@remote_class`: turns a class into a factory of remote actors (PARL's `parl.remote_class`)."""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

logger = logging.getLogger(__name__)

_SUPPORTED_OPTIONS = (
    "max_memory",
    "wait",
    "n_gpu",
    "keep_alive_on_error",
    "call_timeout",
    "max_concurrency",
)


@dataclass(frozen=True)
class ActorResources:
    """What each actor of a class reserves (the `@remote_class` options).

    `n_gpu` GPUs, all on one worker, visible to the actor as `CUDA_VISIBLE_DEVICES` (a GPU actor
    costs no CPU slot, as in PARL); without GPUs, one CPU slot and `CUDA_VISIBLE_DEVICES=""`.
    `max_memory` (MB, 2**20 bytes): what the actor may use beyond its job's resident memory
    before its actor was created (PARL's `max_memory + init_memory`), children included; its
    worker kills it past that and its caller gets `ActorDiedError` saying so.
    """

    n_gpu: int = 0
    max_memory: Optional[float] = None

    def __post_init__(self) -> None:
        n_gpu, max_memory = self.n_gpu, self.max_memory
        if isinstance(n_gpu, bool) or not isinstance(n_gpu, int) or n_gpu < 0:
            raise ValueError(f"n_gpu must be a whole number of GPUs (0 or more), got {n_gpu!r}")
        if max_memory is not None and (
            isinstance(max_memory, bool)
            or not isinstance(max_memory, (int, float))
            or not max_memory > 0
            or max_memory == float("inf")
        ):
            raise ValueError(
                f"max_memory must be a positive number of MB or None, got {max_memory!r}"
            )

    @property
    def n_cpu(self) -> int:
        return 0 if self.n_gpu else 1


class RemoteClass:
    """What `@remote_class` returns: calling it creates an actor and returns its proxy.

    It is a separate object from the proxy (like Ray's ActorClass), so the class itself stays
    untouched and reachable as `_original`. With `wait=False` (future mode) the call returns
    at once and the proxy's method calls return `parl_rs.future.FutureObject`s.

    An exception raised by the actor's code ends the actor, as in PARL, unless
    `keep_alive_on_error` (then the actor and its state stay, as in Ray).
    """

    def __init__(
        self,
        cls: type,
        resources: Optional[ActorResources] = None,
        *,
        wait: bool = True,
        keep_alive_on_error: bool = False,
        call_timeout: Optional[float] = None,
        max_concurrency: int = 1,
    ) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ValueError(f"max_concurrency must be a whole number, got {max_concurrency!r}")
        if not 1 <= max_concurrency <= 1024:
            raise ValueError(f"max_concurrency must be 1 to 1024, got {max_concurrency}")
        self._max_concurrency = max_concurrency
        self._original = cls
        self._xparl_resources = resources or ActorResources()
        self._wait = wait
        self._keep_alive_on_error = keep_alive_on_error
        self._call_timeout = check_timeout(call_timeout, "call_timeout")
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Imported here: the proxy pulls in the native module, which a job never needs for this.
        from parl_rs.proxy import create_actor

        return create_actor(
            self._original,
            args,
            kwargs,
            self._xparl_resources,
            wait=self._wait,
            keep_alive_on_error=self._keep_alive_on_error,
            call_timeout=self._call_timeout,
            max_concurrency=self._max_concurrency,
        )

    def __reduce__(self) -> tuple:
        # Code shipped by cloudpickle that refers to the decorated name gets the plain class,
        # which is what the decorator returns inside a job anyway.
        return (_plain_class, (self._original,))

    def __repr__(self) -> str:
        return f"<parl_rs.RemoteClass {self.__module__}.{self.__qualname__}>"


def check_timeout(seconds: Optional[float], what: str) -> Optional[float]:
    """`seconds` as a float if it is a positive number of seconds, or None; else ValueError."""
    if seconds is None:
        return None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 < seconds < float("inf")
    ):
        raise ValueError(f"{what} must be a positive number of seconds or None, got {seconds!r}")
    return float(seconds)


def _plain_class(cls: type) -> type:
    return cls


def class_methods(cls: type) -> frozenset[str]:
    """The names a proxy of `cls` treats as remote methods (the job and the proxy agree)."""
    names = set()
    for name in dir(cls):
        if (name.startswith("__") and name.endswith("__")) or name.startswith("_xparl"):
            continue
        try:
            if callable(getattr(cls, name)):
                names.add(name)
        except Exception:  # a descriptor may refuse class-level access; it is then no method
            continue
    return frozenset(names)


def remote_class(*args: Any, **kwargs: Any) -> Union[RemoteClass, type, Callable[[type], Any]]:
    """Decorate a class so that instantiating it creates a remote actor.

    Usable bare (`@remote_class`) or with keywords: `max_memory` (MB), `n_gpu`, `wait=False`
    (future mode), `keep_alive_on_error=True` (an exception raised by a method is returned
    to the caller and the actor stays; by default, as in PARL, it also ends the actor),
    `call_timeout` (seconds a method call may take; past it the call raises `CallTimeoutError`
    and the actor ends), `max_concurrency` (requests the actor serves at once, default 1: its
    `async def` methods interleave on one event loop in its job, plain methods run on threads;
    a caller has several in flight with `wait=False`, with `asyncio.gather` inside
    `async def` (where calls are awaitable), or from several threads). Inside a job
    (env `XPARL=True`) it returns the class unchanged, so nested actors run locally.
    """
    for key in kwargs:
        assert key in _SUPPORTED_OPTIONS, (
            f"Argument `{key}` is not supported in the `parl_rs.remote_class` decorator; "
            f"the supported arguments are {', '.join(_SUPPORTED_OPTIONS)}."
        )

    def decorator(cls: type) -> Union[RemoteClass, type]:
        assert inspect.isclass(cls), "Only class can be decorated by `parl_rs.remote_class`."
        if os.environ.get("XPARL") == "True":
            logger.warning(
                "Note: %s will be running as a local object (we are inside an xparl job).",
                cls.__qualname__,
            )
            return cls
        resources = ActorResources(kwargs.get("n_gpu", 0), kwargs.get("max_memory"))
        return RemoteClass(
            cls,
            resources,
            wait=kwargs.get("wait", True),
            keep_alive_on_error=bool(kwargs.get("keep_alive_on_error", False)),
            call_timeout=kwargs.get("call_timeout"),
            max_concurrency=kwargs.get("max_concurrency", 1),
        )

    # Like PARL: a single positional callable is the class itself; other positionals are ignored.
    if len(args) == 1 and callable(args[0]):
        return decorator(args[0])
    return decorator
