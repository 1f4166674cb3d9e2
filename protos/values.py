"""Python values <-> ``excamera.common.Value`` (hand-written, beside the generated modules).

The typed values an operation may take and return: ``int``, ``float``, ``str``, ``bytes``,
``bool``, ``list[str]`` and ``ObjectRef`` (a stored object: key, sha256, size).
"""

from __future__ import annotations

from typing import Any, Mapping

from storage import ObjectRef
from protos import common_pb2

#: Python type -> the name used in error messages.
TYPES = {int: "int", float: "float", str: "str", bytes: "bytes", bool: "bool",
         list: "list[str]", ObjectRef: "ObjectRef"}


def to_value(x: Any) -> common_pb2.Value:
    """One Python value as a ``Value``; TypeError for anything outside the typed set."""
    v = common_pb2.Value()
    if isinstance(x, bool):  # before int: bool is an int subclass
        v.bool_value = x
    elif isinstance(x, int):
        v.int_value = x
    elif isinstance(x, float):
        v.float_value = x
    elif isinstance(x, str):
        v.str_value = x
    elif isinstance(x, (bytes, bytearray, memoryview)):
        v.bytes_value = bytes(x)
    elif isinstance(x, (list, tuple)) and all(isinstance(i, str) for i in x):
        v.str_list.items.extend(x)
    elif isinstance(x, ObjectRef):
        v.object.key, v.object.sha256, v.object.size = x.key, x.sha256, x.size
    else:
        raise TypeError(f"{type(x).__name__} is not a runtime value type "
                        f"(int, float, str, bytes, bool, list[str], ObjectRef)")
    return v


def from_value(v: common_pb2.Value) -> Any:
    """The Python value of a ``Value``; ValueError when it holds nothing."""
    kind = v.WhichOneof("kind")
    if kind is None:
        raise ValueError("empty value (no field set)")
    if kind == "str_list":
        return list(v.str_list.items)
    if kind == "object":
        return ObjectRef(v.object.key, v.object.sha256, v.object.size)
    return getattr(v, kind)


def to_map(values: Mapping[str, Any], target) -> None:
    """Fill a protobuf ``map<string, Value>`` field from a dict."""
    for k, x in values.items():
        target[k].CopyFrom(to_value(x))


def from_map(field) -> dict[str, Any]:
    return {k: from_value(v) for k, v in field.items()}


def type_name(x: Any) -> str:
    if isinstance(x, bool):
        return "bool"
    for t, name in TYPES.items():
        if isinstance(x, t):
            return name
    return type(x).__name__
