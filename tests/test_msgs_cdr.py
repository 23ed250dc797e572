"""CDR codec: every message type the nodes use, both distros, and precise errors on bad bytes."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from vad_inspection.msgs import (
    DISTROS,
    MessageError,
    deserialize,
    header,
    msg_class,
    ns_to_stamp,
    serialize,
    stamp_to_ns,
    typestore,
)
from vad_inspection.msgs.types import definition_texts


def assert_msg_equal(a: Any, b: Any, path: str = "msg") -> None:
    """Field-by-field equality of rosbags messages (their arrays defeat dataclass ``==``)."""
    if dataclasses.is_dataclass(a):
        assert type(a).__msgtype__ == type(b).__msgtype__, path
        for f in dataclasses.fields(a):
            assert_msg_equal(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and np.array_equal(a, b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_msg_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def pose(distro: str, x: float = 1.5, qz: float = 0.0):
    cls = lambda name: msg_class(name, distro)  # noqa: E731
    w = float(np.sqrt(1 - qz * qz))
    return cls("geometry_msgs/msg/Pose")(
        position=cls("geometry_msgs/msg/Point")(x=x, y=-2.0, z=0.25),
        orientation=cls("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=qz, w=w),
    )


def samples(distro: str) -> dict[str, Any]:
    """One non-trivial message of every type the nodes exchange."""
    cls = lambda name: msg_class(name, distro)  # noqa: E731
    hdr = header(1_700_000_000_000_000_123, "camera_optical", distro)
    hyp = cls("vision_msgs/msg/ObjectHypothesis")
    covariance = np.arange(36, dtype=np.float64) / 7
    with_pose = cls("vision_msgs/msg/ObjectHypothesisWithPose")(
        hypothesis=hyp(class_id="crack", score=0.87),
        pose=cls("geometry_msgs/msg/PoseWithCovariance")(pose=pose(distro), covariance=covariance),
    )
    bbox2d = cls("vision_msgs/msg/BoundingBox2D")(
        center=cls("vision_msgs/msg/Pose2D")(
            position=cls("vision_msgs/msg/Point2D")(x=120.5, y=64.25), theta=0.1
        ),
        size_x=30.0,
        size_y=12.5,
    )
    bbox3d = cls("vision_msgs/msg/BoundingBox3D")(
        center=pose(distro, qz=0.6), size=cls("geometry_msgs/msg/Vector3")(x=0.5, y=0.2, z=0.1)
    )
    kv = cls("diagnostic_msgs/msg/KeyValue")
    return {
        "sensor_msgs/msg/Image": cls("sensor_msgs/msg/Image")(
            header=hdr,
            height=2,
            width=3,
            encoding="rgb8",
            is_bigendian=0,
            step=9,
            data=np.arange(18, dtype=np.uint8),
        ),
        "sensor_msgs/msg/CompressedImage": cls("sensor_msgs/msg/CompressedImage")(
            header=hdr, format="rgb8; jpeg compressed bgr8", data=np.arange(7, dtype=np.uint8)
        ),
        "sensor_msgs/msg/CameraInfo": cls("sensor_msgs/msg/CameraInfo")(
            header=hdr,
            height=480,
            width=640,
            distortion_model="plumb_bob",
            d=np.array([0.1, -0.2, 0.001, 0.002, 0.05]),
            k=np.array([500.0, 0, 320, 0, 505, 240, 0, 0, 1]),
            r=np.eye(3).reshape(9),
            p=np.array([500.0, 0, 320, 0, 0, 505, 240, 0, 0, 0, 1, 0]),
            binning_x=1,
            binning_y=2,
            roi=cls("sensor_msgs/msg/RegionOfInterest")(
                x_offset=4, y_offset=5, height=100, width=200, do_rectify=True
            ),
        ),
        "geometry_msgs/msg/PoseStamped": cls("geometry_msgs/msg/PoseStamped")(
            header=hdr, pose=pose(distro, qz=0.3)
        ),
        "geometry_msgs/msg/TransformStamped": cls("geometry_msgs/msg/TransformStamped")(
            header=hdr,
            child_frame_id="tool0",
            transform=cls("geometry_msgs/msg/Transform")(
                translation=cls("geometry_msgs/msg/Vector3")(x=0.1, y=0.2, z=0.3),
                rotation=cls("geometry_msgs/msg/Quaternion")(x=0.0, y=0.6, z=0.0, w=0.8),
            ),
        ),
        "nav_msgs/msg/OccupancyGrid": cls("nav_msgs/msg/OccupancyGrid")(
            header=hdr,
            info=cls("nav_msgs/msg/MapMetaData")(
                map_load_time=ns_to_stamp(5, distro),
                resolution=0.125,  # float32 on the wire: an exact value
                width=3,
                height=2,
                origin=pose(distro),
            ),
            data=np.array([-1, 0, 100, 50, 0, -1], dtype=np.int8),
        ),
        "vision_msgs/msg/Detection2DArray": cls("vision_msgs/msg/Detection2DArray")(
            header=hdr,
            detections=[
                cls("vision_msgs/msg/Detection2D")(
                    header=hdr, results=[with_pose, with_pose], bbox=bbox2d, id="track-7"
                ),
                cls("vision_msgs/msg/Detection2D")(header=hdr, results=[], bbox=bbox2d, id=""),
            ],
        ),
        "vision_msgs/msg/Detection3DArray": cls("vision_msgs/msg/Detection3DArray")(
            header=hdr,
            detections=[
                cls("vision_msgs/msg/Detection3D")(
                    header=hdr, results=[with_pose], bbox=bbox3d, id="dent-1"
                )
            ],
        ),
        "vision_msgs/msg/Classification": cls("vision_msgs/msg/Classification")(
            header=hdr, results=[hyp(class_id="normal", score=0.1), hyp(class_id="bad", score=0.9)]
        ),
        "vision_msgs/msg/LabelInfo": cls("vision_msgs/msg/LabelInfo")(
            header=hdr,
            class_map=[cls("vision_msgs/msg/VisionClass")(class_id=65535, class_name="unlabeled")],
            threshold=0.5,
        ),
        "vision_msgs/msg/VisionInfo": cls("vision_msgs/msg/VisionInfo")(
            header=hdr, method="patchcore", database_location="/labels", database_version=3
        ),
        "diagnostic_msgs/msg/DiagnosticArray": cls("diagnostic_msgs/msg/DiagnosticArray")(
            header=hdr,
            status=[
                cls("diagnostic_msgs/msg/DiagnosticStatus")(
                    level=b"\x01"[0],
                    name="detector",
                    message="slow",
                    hardware_id="cam0",
                    values=[kv(key="latency_ms", value="42.0"), kv(key="fps", value="9.5")],
                )
            ],
        ),
        "std_msgs/msg/String": cls("std_msgs/msg/String")(data="anomaly ✓"),
        "std_msgs/msg/Float32": cls("std_msgs/msg/Float32")(data=0.75),
    }


TYPES = list(samples("jazzy"))


@pytest.mark.parametrize("distro", DISTROS)
@pytest.mark.parametrize("typename", TYPES)
def test_round_trip_equals_for_each_type(typename: str, distro: str) -> None:
    msg = samples(distro)[typename]
    data = serialize(msg, typename, distro)
    assert isinstance(data, bytes)
    assert data[:4] == b"\x00\x01\x00\x00"  # CDR little-endian encapsulation, no options
    # exactly rosbags' own output, so every transport and bag sees the same bytes
    assert data == bytes(typestore(distro).serialize_cdr(msg, typename, little_endian=True))
    back = deserialize(data, typename, distro)
    assert_msg_equal(back, msg)
    assert deserialize(memoryview(data), typename, distro) is not None


@pytest.mark.parametrize("typename", TYPES)
def test_humble_and_jazzy_agree_on_the_wire(typename: str) -> None:
    humble = serialize(samples("humble")[typename], typename, "humble")
    assert humble == serialize(samples("jazzy")[typename], typename, "jazzy")
    assert_msg_equal(deserialize(humble, typename, "jazzy"), samples("jazzy")[typename])


@pytest.mark.parametrize(
    "typename",
    ["geometry_msgs/msg/PoseStamped", "vision_msgs/msg/Classification", "std_msgs/msg/String"],
)
def test_every_truncation_raises_message_error(typename: str) -> None:
    data = serialize(samples("jazzy")[typename], typename)
    for cut in range(len(data)):
        with pytest.raises(MessageError, match=typename) as err:
            deserialize(data[:cut], typename)
        assert ("too short" in str(err.value)) if cut < 4 else ("truncated" in str(err.value))


def test_truncated_image_payload_names_type_and_size() -> None:
    data = serialize(samples("jazzy")["sensor_msgs/msg/Image"], "sensor_msgs/msg/Image")
    with pytest.raises(
        MessageError,
        match=rf"sensor_msgs/msg/Image: cannot deserialise {len(data) - 5} bytes, truncated",
    ):
        deserialize(data[:-5], "sensor_msgs/msg/Image")


def test_trailing_garbage_is_detected() -> None:
    data = serialize(samples("jazzy")["std_msgs/msg/Float32"], "std_msgs/msg/Float32")
    with pytest.raises(MessageError, match="trailing garbage"):
        deserialize(data + b"\x00" * 8, "std_msgs/msg/Float32")


def test_unknown_type_wrong_type_and_bad_header() -> None:
    image = serialize(samples("jazzy")["sensor_msgs/msg/Image"], "sensor_msgs/msg/Image")
    with pytest.raises(MessageError, match=r"unknown message type 'acme_msgs/msg/Widget'"):
        deserialize(image, "acme_msgs/msg/Widget")
    with pytest.raises(MessageError, match=r"std_msgs/msg/String: cannot deserialise"):
        deserialize(image, "std_msgs/msg/String")
    with pytest.raises(MessageError, match=r"unsupported encapsulation 00 03"):
        deserialize(b"\x00\x03\x00\x00" + image[4:], "sensor_msgs/msg/Image")
    with pytest.raises(MessageError, match=r"expected bytes, got str"):
        deserialize("not bytes", "sensor_msgs/msg/Image")  # type: ignore[arg-type]


def test_serialize_checks_the_message_type() -> None:
    image = samples("jazzy")["sensor_msgs/msg/Image"]
    with pytest.raises(MessageError, match=r"std_msgs/msg/String: message object is a sensor_msgs"):
        serialize(image, "std_msgs/msg/String")
    with pytest.raises(MessageError, match=r"cannot serialise a dict"):
        serialize({"data": "x"}, "std_msgs/msg/String")
    broken = msg_class("std_msgs/msg/Float32")(data="not a float")
    with pytest.raises(MessageError, match=r"std_msgs/msg/Float32: cannot serialise"):
        serialize(broken, "std_msgs/msg/Float32")


def test_big_endian_cdr_is_read_too() -> None:
    msg = samples("jazzy")["geometry_msgs/msg/PoseStamped"]
    big = bytes(typestore().serialize_cdr(msg, msg.__msgtype__, little_endian=False))
    assert big[:2] == b"\x00\x00"
    assert_msg_equal(deserialize(big, msg.__msgtype__), msg)


def test_typestores_are_cached_per_distro_and_hold_vision_msgs() -> None:
    assert typestore("jazzy") is typestore("jazzy")
    assert typestore("humble") is not typestore("jazzy")
    for distro in DISTROS:
        names = set(definition_texts(distro))
        assert len(names) == 16 and names <= set(typestore(distro).types)
    fields = dict(typestore().fielddefs["vision_msgs/msg/BoundingBox2D"][1])
    assert fields["center"][1] == "vision_msgs/msg/Pose2D"  # vision_msgs >= 4.0 layout
    assert msg_class("sensor_msgs/Image") is msg_class("sensor_msgs/msg/Image")
    # the stock rosbags store is untouched: vision_msgs lives only in ours
    assert "vision_msgs/msg/Detection2D" not in get_typestore(Stores.ROS2_JAZZY).types


def test_unknown_names_raise() -> None:
    with pytest.raises(MessageError, match=r"unknown message type 'acme_msgs/msg/Widget'"):
        msg_class("acme_msgs/msg/Widget")
    with pytest.raises(MessageError, match=r"unknown ROS 2 distro 'rolling'"):
        typestore("rolling")


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1])
def test_stamps_round_trip(ns: int) -> None:
    stamp = ns_to_stamp(ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp_to_ns(stamp) == ns
    assert stamp_to_ns(deserialize(serialize(stamp, stamp.__msgtype__), stamp.__msgtype__)) == ns


def test_stamp_out_of_range_raises() -> None:
    with pytest.raises(MessageError, match="int32"):
        ns_to_stamp(2**31 * 1_000_000_000)
