"""Frames: cloudpickle protocol 5 with out-of-band buffers, and clear pickling errors."""

from __future__ import annotations

import pickle
import re
import threading
import types

import pytest

from parl_rs import serialization
from parl_rs.serialization import (
    DeserializationError,
    SerializationError,
    dumps,
    find_unpicklable,
    loads,
)


def over_the_wire(frames: list) -> list[bytes]:
    """What the receiving side gets: every frame as immutable bytes."""
    return [bytes(frame) for frame in frames]


@pytest.mark.parametrize(
    "value",
    [None, 0, 1.5, "text", b"bytes", [1, (2, 3)], {"a": {"b": [None]}}, {1, 2}, bytearray(b"ab")],
)
def test_plain_values_round_trip_in_one_frame(value: object) -> None:
    frames = dumps(value)
    assert len(frames) == 1
    assert loads(over_the_wire(frames)) == value


def test_pickle_buffer_of_a_bytearray_travels_out_of_band() -> None:
    data = bytearray(b"x" * 100_000)
    frames = dumps({"payload": pickle.PickleBuffer(data)})
    assert len(frames) == 2
    assert len(frames[0]) < 1000  # the data is not copied into the pickle stream
    assert bytes(frames[1]) == bytes(data)
    assert bytes(loads(over_the_wire(frames))["payload"]) == bytes(data)


def test_pickle_buffer_of_a_memoryview_travels_out_of_band() -> None:
    data = memoryview(b"0123456789" * 1000)
    frames = dumps([pickle.PickleBuffer(data), "tail"])
    assert len(frames) == 2
    restored = loads(over_the_wire(frames))
    assert bytes(restored[0]) == bytes(data)
    assert restored[1] == "tail"


def test_frames_can_be_loaded_as_produced_without_copying() -> None:
    data = bytearray(range(256))
    frames = dumps(pickle.PickleBuffer(data))
    assert bytes(loads(frames)) == bytes(data)


def test_numpy_arrays_are_out_of_band_and_stay_writable() -> None:
    np = pytest.importorskip("numpy")
    array = np.arange(10_000, dtype=np.float64).reshape(100, 100)
    frames = dumps({"obs": array})
    assert len(frames) == 2
    restored = loads(over_the_wire(frames))["obs"]
    assert np.array_equal(restored, array)
    restored[0, 0] = -1.0  # received arrays can be modified in place, as with PARL
    assert restored[0, 0] == -1.0


def test_local_functions_and_classes_are_shipped_by_value() -> None:
    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    frames = dumps((lambda p: p.x * 2, Point(21)))
    function, point = loads(over_the_wire(frames))
    assert function(point) == 42


def test_code_shipped_by_value_keeps_its_file_name() -> None:
    # cloudpickle 3.1 writes "<dynamic-code>" instead: remote tracebacks would lose the user's
    # file, line and source.
    def local(x: int) -> int:
        def nested() -> int:
            return x

        return nested()

    class Local:
        def method(self) -> int:
            return 1

    loaded = loads(dumps((local, Local)))
    assert loaded[0].__code__.co_filename == __file__
    nested = [c for c in loaded[0].__code__.co_consts if isinstance(c, types.CodeType)]
    assert [code.co_filename for code in nested] == [__file__]  # nested code objects too
    assert loaded[1].method.__code__.co_filename == __file__
    assert loaded[0](3) == 3 and loaded[1]().method() == 1


def test_unpicklable_object_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="lock"):
        dumps({"lock": threading.Lock()})


def test_find_unpicklable_names_the_culprit() -> None:
    culprit = find_unpicklable([("argument 0", 1), ("argument 1", threading.Lock())])
    assert culprit.startswith("argument 1 (of type _thread.lock)")
    assert "cannot pickle" in culprit
    assert find_unpicklable([("argument 0", 1)]) == ""


@pytest.mark.parametrize("frames", [[], [b"not a pickle"], [pickle.dumps(1)[:-3]]])
def test_bad_frames_raise_deserialization_error(frames: list) -> None:
    with pytest.raises(DeserializationError):
        loads(frames)


def test_missing_out_of_band_buffer_is_a_deserialization_error() -> None:
    frames = dumps(pickle.PickleBuffer(bytearray(b"abc")))
    with pytest.raises(DeserializationError):
        loads(frames[:1])


@pytest.mark.parametrize(
    "value, plain",
    [
        (((5, 1), {}), True),
        (((1.5, "x", b"y", None, True, [1, 2], {"k": (3,)}), {"a": 1}), True),
        (((lambda: 1,), {}), False),  # only cloudpickle ships a lambda
        ((({1: "int key"},), {}), False),
        (((list(range(33)),), {}), False),
        ((((((1,),),),),), False),
    ],
)
def test_plain_data_takes_the_standard_pickler_and_the_rest_cloudpickle(
    value: object, plain: bool
) -> None:
    assert serialization._is_plain(value) is plain
    frames = serialization.dumps(value)
    restored = serialization.loads(frames)
    if plain:
        assert restored == value
    else:
        assert callable(restored[0][0]) or restored == value


def test_portable_values_are_protocol_3_pickle_of_builtins() -> None:
    value = {
        "ints": [1, -2, 2**70],
        "nested": ({"x": 1.5}, None, True),
        "raw": b"\x00",
        "keys": {(1, 2): 3, frozenset(): {4}},
    }
    frames = serialization.dumps_portable(value)
    assert len(frames) == 1 and frames[0][:2] == b"\x80\x03"  # protocol 3: what serde-pickle reads
    assert pickle.loads(frames[0]) == value


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (object(), "a value of type object has no portable form"),
        ([1, {"k": [2, threading.Lock()]}], "_thread.lock (at [1]['k'][1])"),
        ({1: bytearray(b"x")}, "bytearray (at [1])"),
    ],
)
def test_a_value_without_portable_form_is_named_with_where_it_is(value: object, named: str) -> None:
    with pytest.raises(serialization.NotPortableError, match=re.escape(named)):
        serialization.dumps_portable(value)


def test_a_portable_value_nested_too_deep_is_refused_not_a_crash() -> None:
    value: list = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(serialization.NotPortableError, match="nested deeper than 100 levels"):
        serialization.dumps_portable(value)
