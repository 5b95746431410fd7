"""`@remote_class`: turns a class into a factory of remote actors (PARL's `parl.remote_class`)."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable, Optional, Union

logger = logging.getLogger(__name__)

_SUPPORTED_OPTIONS = ("max_memory", "wait", "n_gpu")


class RemoteClass:
    """What `@remote_class` returns: calling it creates an actor and returns its proxy.

    It is a separate object from the proxy (like Ray's ActorClass), so the class itself stays
    untouched and reachable as `_original`. With `wait=False` (future mode) the call returns
    at once and the proxy's method calls return `parl_rs.future.FutureObject`s.
    """

    def __init__(self, cls: type, *, wait: bool = True) -> None:
        self._original = cls
        self._wait = wait
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Imported here: the proxy pulls in the native module, which a job never needs for this.
        from parl_rs.proxy import create_actor

        return create_actor(self._original, args, kwargs, wait=self._wait)

    def __reduce__(self) -> tuple:
        # Code shipped by cloudpickle that refers to the decorated name gets the plain class,
        # which is what the decorator returns inside a job anyway.
        return (_plain_class, (self._original,))

    def __repr__(self) -> str:
        return f"<parl_rs.RemoteClass {self.__module__}.{self.__qualname__}>"


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

    Usable bare (`@remote_class`) or with keywords (`@remote_class(max_memory=...)`). Inside a
    job (env `XPARL=True`) it returns the class unchanged, so nested actors run locally.
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
        _reject_unimplemented(**kwargs)
        return RemoteClass(cls, wait=kwargs.get("wait", True))

    # Like PARL: a single positional callable is the class itself; other positionals are ignored.
    if len(args) == 1 and callable(args[0]):
        return decorator(args[0])
    return decorator


def _reject_unimplemented(
    max_memory: Optional[float] = None, wait: bool = True, n_gpu: int = 0
) -> None:
    """Options PARL has that parl_rs does not implement yet must fail loudly, not be ignored."""
    if max_memory is not None:
        raise NotImplementedError("parl_rs.remote_class(max_memory=...) is not implemented yet.")
    if n_gpu:
        raise NotImplementedError("parl_rs.remote_class(n_gpu=...) is not implemented yet.")
