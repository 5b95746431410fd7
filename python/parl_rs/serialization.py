"""How user objects become frames: cloudpickle, protocol 5, with out-of-band buffers.

Large buffers (numpy arrays, `pickle.PickleBuffer`) are not copied into the pickle: each one
travels as its own frame, so the native layer can send it without another copy.

Code shipped by value keeps its file name: cloudpickle 3.1 writes "<dynamic-code>" instead
(to make pickles deterministic), which would leave a remote traceback without the user's file,
line and source. `_Pickler` puts the real name back.
"""

from __future__ import annotations

import io
import pickle
import types
from collections import ChainMap
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import cloudpickle

Frame = Union[bytes, bytearray, memoryview]


class SerializationError(Exception):
    """An object could not be pickled; the message says what and why."""


class DeserializationError(Exception):
    """Frames could not be unpickled; the message says why."""


class NotPortableError(SerializationError):
    """A value has no portable form: a native client (without Python) cannot read it."""


_PLAIN_SCALARS = frozenset({int, float, bool, str, bytes, complex, type(None)})
_CONTAINERS = (tuple, list, dict)


def _is_plain(obj: Any, depth: int = 0) -> bool:
    """True for builtin scalars and small builtin containers of them (most call arguments
    and results): the standard pickler writes those exactly as cloudpickle would, several
    times faster, since cloudpickle's per-object hooks run in Python. Loops, not generators:
    this runs on every call and must cost less than it saves."""
    kind = type(obj)
    if kind in _PLAIN_SCALARS:
        return True
    if kind not in _CONTAINERS or depth > 3 or len(obj) > 32:
        return False
    if kind is dict:
        for key, value in obj.items():
            if type(key) is not str or (
                type(value) not in _PLAIN_SCALARS and not _is_plain(value, depth + 1)
            ):
                return False
        return True
    for item in obj:
        if type(item) not in _PLAIN_SCALARS and not _is_plain(item, depth + 1):
            return False
    return True


def dumps(obj: Any) -> list[Frame]:
    """Pickle `obj`: frame 0 is the pickle stream, the others are its out-of-band buffers."""
    if _is_plain(obj):
        return [pickle.dumps(obj, protocol=5)]
    buffers: list[pickle.PickleBuffer] = []
    try:
        stream = _cloudpickle(obj, buffers.append)
        return [stream, *(buffer.raw() for buffer in buffers)]
    except Exception as exc:  # pickling can fail with nearly any exception type
        raise SerializationError(_describe(exc)) from exc


def dumps_in_band(obj: Any) -> bytes:
    """Pickle `obj` as one stream (no out-of-band buffers): for values sent once and kept, like
    a task's function."""
    try:
        return _cloudpickle(obj, None)
    except Exception as exc:  # pickling can fail with nearly any exception type
        raise SerializationError(_describe(exc)) from exc


_reduce_code_cloudpickle = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _reduce_code(code: types.CodeType) -> tuple:
    """cloudpickle's reduction of a code object, with the code's own file name."""
    rebuild, args = _reduce_code_cloudpickle(code)
    return _code_in_file, (rebuild, args, code.co_filename)


def _code_in_file(rebuild: Callable[..., types.CodeType], args: tuple, filename: str) -> Any:
    code = rebuild(*args)
    return code if code.co_filename == filename else code.replace(co_filename=filename)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def _cloudpickle(
    obj: Any, buffer_callback: Optional[Callable[[pickle.PickleBuffer], Any]]
) -> bytes:
    with io.BytesIO() as file:
        _Pickler(file, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


def loads(frames: Sequence[Frame]) -> Any:
    """Unpickle what `dumps` produced."""
    if not frames:
        raise DeserializationError("no frames to unpickle")
    try:
        return pickle.loads(frames[0], buffers=_writable(frames[1:]))
    except Exception as exc:
        raise DeserializationError(_describe(exc)) from exc


def find_unpicklable(items: Iterable[tuple[str, Any]]) -> str:
    """Name the first of `items` (label, object) that cannot be pickled, and why.

    Used only after a pickling failure, to turn "cannot pickle '_thread.lock' object" into a
    message that also says which argument or value was at fault.
    """
    for label, obj in items:
        try:
            _cloudpickle(obj, lambda _buffer: None)
        except Exception as exc:
            return f"{label} (of type {_type_name(obj)}): {_describe(exc)}"
    return ""


_PORTABLE_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_PORTABLE_SEQUENCES = (list, tuple, set, frozenset)
_PORTABLE_DEPTH = 100


def dumps_portable(obj: Any, checked: Any = None) -> list[Frame]:
    """Pickle `obj` for a native client (`Encoding::Portable` of the call envelope): protocol 3,
    one frame, builtin values only, which `serde-pickle` reads. Raises `NotPortableError`
    naming the first value that has no such form, and where it is. `checked`: the part of `obj`
    that may hold other values (the rest is known to be builtins), checked instead of all of
    it, so errors name places in it."""
    check_portable(obj if checked is None else checked)
    return [pickle.dumps(obj, protocol=3)]


def check_portable(obj: Any) -> None:
    """Raise `NotPortableError` if `obj` has no portable form (see `dumps_portable`)."""
    culprit = _not_portable(obj, "", 0)
    if culprit:
        raise NotPortableError(culprit)


def _not_portable(obj: Any, where: str, depth: int) -> str:
    """What in `obj` has no portable form ("" if nothing)."""
    kind = type(obj)
    if kind in _PORTABLE_SCALARS:
        return ""
    at = f" (at {where})" if where else ""
    if depth > _PORTABLE_DEPTH:
        return f"a value nested deeper than {_PORTABLE_DEPTH} levels{at}"
    if kind in _PORTABLE_SEQUENCES:
        for index, item in enumerate(obj):
            found = _not_portable(item, f"{where}[{index}]", depth + 1)
            if found:
                return found
        return ""
    if kind is dict:
        for key, value in obj.items():
            found = _not_portable(key, f"{where} key {key!r:.40}", depth + 1) or _not_portable(
                value, f"{where}[{key!r:.40}]", depth + 1
            )
            if found:
                return found
        return ""
    return (
        f"a value of type {_type_name(obj)}{at} has no portable form: only None, bool, int, "
        "float, str, bytes, list, tuple, dict and set reach a native client"
    )


def _writable(buffers: Sequence[Frame]) -> list[Frame]:
    # numpy arrays built on a read-only buffer are read-only, unlike what the sender had (and
    # what PARL gave). A received frame that owns its memory alone is writable already (the
    # usual case); copy the others once so received arrays can be modified in place.
    return [b if not memoryview(b).readonly else bytearray(b) for b in buffers]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _type_name(obj: Any) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
