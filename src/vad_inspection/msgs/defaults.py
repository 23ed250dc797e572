"""Messages built from the fields a caller cares about, every other field at its ROS default.

rosbags' message classes want every field, and types gain fields between releases
(visualization_msgs/Marker gained ``texture``, ``uv_coordinates`` and ``mesh_file``), so code that
spelled out every field would break when one distribution's definition moves. :func:`new_message`
fills what is not given from the distribution's own definition: zero, false, empty string, empty
sequence, nested messages likewise -- what rosidl's default constructors give.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .types import MessageError, msg_class, normalize_typename, typestore

_NUMPY = {
    "bool": np.bool_,
    "byte": np.uint8,
    "char": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


def new_message(typename: str, distro: str = "jazzy", **values: Any) -> Any:
    """An instance of ``typename`` with ``values`` set and every other field at its default.

    An unknown field name raises :class:`MessageError` listing the type's fields (a typo must not
    silently leave a field at zero).
    """
    name = normalize_typename(typename)
    store = typestore(distro)
    try:
        _consts, fields = store.fielddefs[name]
    except KeyError:
        raise MessageError(f"unknown message type {typename!r} for ROS 2 {distro}") from None
    names = [field for field, _ in fields]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise MessageError(f"{name} has no field(s) {unknown}; it has {names}")
    args = {f: values[f] if f in values else _default(desc, distro) for f, desc in fields}
    return msg_class(name, distro)(**args)


def _default(desc: tuple, distro: str) -> Any:
    kind = int(desc[0])
    if kind == 1:  # BASE
        base = desc[1][0]
        if base == "string":
            return ""
        if base == "bool":
            return False
        return 0.0 if base.startswith("float") else 0
    if kind == 2:  # NAME
        return new_message(desc[1], distro)
    elem, size = desc[1]
    numeric = int(elem[0]) == 1 and elem[1][0] in _NUMPY
    if kind == 3:  # fixed array
        if numeric:
            return np.zeros(size, dtype=_NUMPY[elem[1][0]])
        return [_default(elem, distro) for _ in range(size)]
    if numeric:  # sequence
        return np.zeros(0, dtype=_NUMPY[elem[1][0]])
    return []
