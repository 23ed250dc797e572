"""CDR through Cyclone DDS equals rosbags' CDR, byte for byte, for every message type we use.

Three views of one message: rosbags' ``serialize_cdr``; the bytes a Cyclone DDS reader holds for
it (``ddspy_take``) after the dds binding wrote it; and Cyclone's own serialisation of the same
message as an instance of the IdlStruct the binding generates for the ROS type. The last one
checks the generated type (field order, types, bounds, nesting): it is what Cyclone announces in
discovery, so it must describe the bytes that are actually sent.

Messages are filled with seeded random values from the type definitions (strings of odd lengths,
empty and non-empty sequences, negative numbers, non-ASCII text) to hit every alignment case.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytest

from vad_inspection.msgs import cdr
from vad_inspection.msgs.types import typestore
from vad_inspection.transport import DEFAULT, create_bus

cy = pytest.importorskip("vad_inspection.transport._cyclone", exc_type=ImportError)

TYPES = [
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/CameraInfo",
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/TransformStamped",
    "nav_msgs/msg/OccupancyGrid",
    "std_msgs/msg/String",
    "diagnostic_msgs/msg/DiagnosticArray",
    "rosgraph_msgs/msg/Clock",
    "vision_msgs/msg/Detection2DArray",
]
SEEDS = [0, 1, 2]

_INT_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "byte": (0, 127),  # rosbags packs byte/char as signed, Cyclone as octet: same wire byte
    "char": (0, 127),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_DTYPES = {
    "bool": np.bool_,
    "float32": np.float32,
    "float64": np.float64,
    **{k: np.dtype(k if k not in ("byte", "char") else "uint8") for k in _INT_RANGES},
}
_TEXT = "abcdefghijklmnopqrstuvwxyz_/ éü漢"


def _base(rng: random.Random, name: str, bound: int = 0) -> Any:
    if name == "bool":
        return rng.random() < 0.5
    if name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]
        return rng.randint(lo, hi)
    if name == "float32":
        return float(np.float32(rng.uniform(-1e3, 1e3)))
    if name == "float64":
        return rng.uniform(-1e6, 1e6)
    if name == "string":
        n = rng.randint(0, bound or 11)
        return "".join(rng.choice(_TEXT) for _ in range(n))
    raise AssertionError(f"no generator for {name}")


def _array(rng: random.Random, elem: tuple, n: int, store: Any) -> Any:
    kind = int(elem[0])
    if kind == 1 and elem[1][0] != "string":
        values = [_base(rng, elem[1][0]) for _ in range(n)]
        return np.array(values, dtype=_DTYPES[elem[1][0]])
    return [_value(rng, elem, store) for _ in range(n)]


def _value(rng: random.Random, desc: tuple, store: Any) -> Any:
    kind = int(desc[0])
    if kind == 1:
        return _base(rng, *desc[1])
    if kind == 2:
        return fill(desc[1], rng, store)
    elem, size = desc[1]
    if kind == 3:
        return _array(rng, elem, size, store)
    return _array(rng, elem, rng.randint(0, size or 13), store)


def fill(typename: str, rng: random.Random, store: Any) -> Any:
    """A message of ``typename`` with every field set from ``rng``."""
    _consts, fields = store.fielddefs[typename]
    return store.types[typename](**{name: _value(rng, desc, store) for name, desc in fields})


def to_idl(msg: Any, typename: str, store: Any) -> Any:
    """The same message as an instance of the generated Cyclone IdlStruct."""
    _consts, fields = store.fielddefs[typename]
    cls = cy.idl_class(typename, store=store)
    return cls(**{name: _idl_value(getattr(msg, name), desc, store) for name, desc in fields})


def _idl_value(value: Any, desc: tuple, store: Any) -> Any:
    kind = int(desc[0])
    if kind == 1:
        return value.item() if isinstance(value, np.generic) else value
    if kind == 2:
        return to_idl(value, desc[1], store)
    elem = desc[1][0]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return [_idl_value(v, elem, store) for v in value]


@pytest.fixture(scope="module")
def store() -> Any:
    return typestore("jazzy")


@pytest.fixture(scope="module")
def bus():
    # in-process participant: no network needed, and the bytes are Cyclone's serdata all the same
    with create_bus("dds", "cdr_check", domain_id=random.randint(100, 200)) as bus:
        yield bus


def test_every_type_is_covered(store: Any) -> None:
    for typename in TYPES:
        assert typename in store.types, f"{typename} missing from the typestore"


@pytest.mark.parametrize("typename", TYPES)
def test_generated_idl_type_is_named_like_ros2(typename: str, store: Any) -> None:
    cls = cy.idl_class(typename, store=store)
    pkg, _, name = typename.split("/")
    assert cls.__idl_typename__ == f"{pkg}::msg::dds_::{name}_"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("typename", TYPES)
def test_cyclone_serialises_the_generated_type_exactly_like_rosbags(
    typename: str, seed: int, store: Any
) -> None:
    msg = fill(typename, random.Random(seed), store)
    expected = cdr.serialize(msg, typename)
    assert to_idl(msg, typename, store).serialize() == expected


@pytest.mark.parametrize("typename", TYPES)
def test_bytes_through_a_dds_reader_equal_rosbags(typename: str, store: Any, bus: Any) -> None:
    topic = "/cdr/" + typename.replace("/", "_")
    raw: list[bytes] = []
    decoded: list[Any] = []
    bus.create_subscription(topic, typename, raw.append, DEFAULT, raw=True)
    bus.create_subscription(topic, typename, decoded.append, DEFAULT)
    # a third reader of our own, to look at exactly what ddspy_take returns
    probe = cy.DataReader(bus.participant, bus._topic(topic, typename), cy.cyclone_qos(DEFAULT))
    pub = bus.create_publisher(topic, typename, DEFAULT)
    messages = [fill(typename, random.Random(seed), store) for seed in SEEDS]
    expected = [cdr.serialize(m, typename) for m in messages]
    for msg in messages:
        pub.publish(msg)
    assert bus.spin_until(lambda: len(raw) == len(messages) == len(decoded), timeout=5)
    taken: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(taken) < len(messages) and time.monotonic() < deadline:
        taken += cy.take(probe, 10, normalise=False)
    cy.delete(probe)

    assert raw == expected  # what a raw subscriber gets: rosbags' bytes exactly
    assert taken == [cy.pad(e) for e in expected]  # on the wire: padded to 4, count in options
    assert [cy.unpad(t) for t in taken] == expected
    for data, padded in zip(expected, taken, strict=True):
        n = -len(data) % 4
        assert len(padded) == len(data) + n and padded[3] & 3 == n
    assert [cdr.serialize(m, typename) for m in decoded] == expected


def test_padding_round_trip_for_every_length() -> None:
    for n in range(4, 12):
        data = b"\x00\x01\x00\x00" + bytes(range(1, n - 3))
        padded = cy.pad(data)
        assert len(padded) % 4 == 0
        assert cy.unpad(padded) == data
        assert bytes(cy.unpadded_view(padded)) == data[:3] + padded[3:4] + data[4:]
    # options that announce more padding than there is are left alone for the decoder to judge
    assert cy.unpad(b"\x00\x01\x00\x03") == b"\x00\x01\x00\x03"
