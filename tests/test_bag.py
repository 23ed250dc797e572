"""rosbag2 bags: written by us, read back by the independent mcap reader, by rosbags and by us."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from test_msgs_cdr import assert_msg_equal

from vad_inspection.geometry import CameraModel
from vad_inspection.msgs import (
    DISTROS,
    Frame,
    MessageError,
    camera_info_to_model,
    compressed_to_frame,
    frame_to_compressed,
    frame_to_msg,
    header,
    model_to_camera_info,
    msg_class,
    msg_to_frame,
    serialize,
    typestore,
)
from vad_inspection.transport.bag import BagError, BagReader, BagWriter

IMAGE = "sensor_msgs/msg/Image"
DETECTIONS = "vision_msgs/msg/Detection2DArray"
T0 = 1_700_000_000_000_000_000


def frames(n: int = 3) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [
        Frame(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "rgb8", T0 + i * 10**8, "cam")
        for i in range(n)
    ]


def detections(i: int, distro: str = "jazzy"):
    cls = lambda name: msg_class(name, distro)  # noqa: E731
    stamp = T0 + i * 10**8
    result = cls("vision_msgs/msg/ObjectHypothesisWithPose")(
        hypothesis=cls("vision_msgs/msg/ObjectHypothesis")(class_id="crack", score=0.5 + i / 10),
        pose=cls("geometry_msgs/msg/PoseWithCovariance")(
            pose=cls("geometry_msgs/msg/Pose")(
                position=cls("geometry_msgs/msg/Point")(x=1.0, y=2.0, z=float(i)),
                orientation=cls("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=0.0, w=1.0),
            ),
            covariance=np.zeros(36),
        ),
    )
    bbox = cls("vision_msgs/msg/BoundingBox2D")(
        center=cls("vision_msgs/msg/Pose2D")(
            position=cls("vision_msgs/msg/Point2D")(x=8.0 + i, y=6.5), theta=0.0
        ),
        size_x=4.0,
        size_y=3.0,
    )
    detection = cls("vision_msgs/msg/Detection2D")(
        header=header(stamp, "cam", distro), results=[result], bbox=bbox, id=f"defect-{i}"
    )
    return cls(DETECTIONS)(header=header(stamp, "cam", distro), detections=[detection])


def write_bag(path: Path, distro: str = "jazzy", storage: str = "mcap") -> None:
    with BagWriter(path, distro, storage) as bag:
        bag.add_topic("/camera/image_raw", IMAGE, qos="sensor_data")
        for i, frame in enumerate(frames()):
            bag.write(
                "/camera/image_raw", frame.stamp_ns, serialize(frame_to_msg(frame, distro), IMAGE)
            )
            bag.write("/vad/detections", frame.stamp_ns + 5, detections(i, distro))  # object
            if i == 0:
                model = CameraModel(
                    16, 12, np.diag([20.0, 20.0, 1.0]), np.zeros(5), "plumb_bob", "cam"
                )
                bag.write(
                    "/camera/camera_info",
                    frame.stamp_ns,
                    model_to_camera_info(model, frame.stamp_ns, distro),
                )
                bag.write(
                    "/camera/image_raw/compressed",
                    frame.stamp_ns,
                    frame_to_compressed(frame, "png", distro=distro),
                )


def test_independent_mcap_reader_decodes_our_bag(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag")
    (mcap_file,) = (tmp_path / "bag").glob("*.mcap")
    seen: dict[str, list] = {}
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        schemas = {s.name: s.encoding for s in reader.get_summary().schemas.values()}
        assert schemas[DETECTIONS] == "ros2msg" and schemas[IMAGE] == "ros2msg"
        for _, channel, message, decoded in reader.iter_decoded_messages():
            assert channel.message_encoding == "cdr"
            seen.setdefault(channel.topic, []).append((message.log_time, decoded))
    images = seen["/camera/image_raw"]
    assert [t for t, _ in images] == [f.stamp_ns for f in frames()]
    for (_, msg), frame in zip(images, frames(), strict=True):
        assert (msg.height, msg.width, msg.encoding, msg.step) == (12, 16, "rgb8", 48)
        assert msg.header.frame_id == "cam"
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == frame.stamp_ns
        assert bytes(msg.data) == frame.image.tobytes()
    for i, (stamp, msg) in enumerate(seen["/vad/detections"]):
        assert stamp == T0 + i * 10**8 + 5
        (det,) = msg.detections
        assert det.id == f"defect-{i}"
        assert det.results[0].hypothesis.class_id == "crack"
        assert det.results[0].hypothesis.score == pytest.approx(0.5 + i / 10)
        assert det.results[0].pose.pose.position.z == float(i)
        assert (det.bbox.center.position.x, det.bbox.center.position.y) == (8.0 + i, 6.5)
        assert (det.bbox.size_x, det.bbox.size_y) == (4.0, 3.0)
    (info,) = [m for _, m in seen["/camera/camera_info"]]
    assert list(info.k) == [20.0, 0, 0, 0, 20.0, 0, 0, 0, 1.0]
    (compressed,) = [m for _, m in seen["/camera/image_raw/compressed"]]
    assert compressed.format == "rgb8; png compressed bgr8"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("distro", DISTROS)
def test_our_reader_and_rosbags_read_our_bag(tmp_path: Path, storage: str, distro: str) -> None:
    path = tmp_path / "bag"
    write_bag(path, distro, storage)
    with BagReader(path) as bag:
        assert bag.distro == distro  # recorded in the bag's custom data
        assert bag.topics() == {
            "/camera/image_raw": IMAGE,
            "/vad/detections": DETECTIONS,
            "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
            "/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        }
        assert bag.message_counts()["/camera/image_raw"] == 3
        assert bag.undecodable == {}
        messages = list(bag)
        assert [m.timestamp_ns for m in messages] == sorted(m.timestamp_ns for m in messages)
        decoded_frames = [msg_to_frame(m.decode()) for m in messages if m.typename == IMAGE]
        assert decoded_frames == frames()
        dets = [m.decode() for m in messages if m.topic == "/vad/detections"]
        for i, msg in enumerate(dets):
            assert_msg_equal(msg, detections(i, distro))
        (info,) = [m.decode() for m in messages if m.topic == "/camera/camera_info"]
        assert camera_info_to_model(info).K[0, 0] == 20.0
        (png,) = [m.decode() for m in messages if m.topic.endswith("compressed")]
        assert compressed_to_frame(png) == frames()[0]
        only = list(bag.messages(["/vad/detections"], start_ns=T0 + 10**8))
        assert [m.timestamp_ns for m in only] == [T0 + 10**8 + 5, T0 + 2 * 10**8 + 5]

    store = typestore(distro)
    with Reader(path) as reader:
        assert reader.message_count == 8
        raw = [
            (c.topic, store.deserialize_cdr(data, c.msgtype))
            for c, _, data in reader.messages()
            if c.topic in ("/camera/image_raw", "/vad/detections")
        ]
    assert [msg_to_frame(m) for t, m in raw if t == "/camera/image_raw"] == frames()
    assert [m.detections[0].id for t, m in raw if t == "/vad/detections"] == [
        "defect-0",
        "defect-1",
        "defect-2",
    ]


@pytest.mark.parametrize(("distro", "version"), [("humble", 8), ("jazzy", 9)])
def test_metadata_version_follows_the_distro(tmp_path: Path, distro: str, version: int) -> None:
    write_bag(tmp_path / "bag", distro)
    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    assert info["version"] == version
    qos = info["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"]
    # Humble's rosbag2 parses this field as a YAML string; Jazzy's as a list
    assert isinstance(qos, str) if distro == "humble" else isinstance(qos, list)
    profile = yaml.safe_load(qos)[0] if distro == "humble" else qos[0]
    assert profile["depth"] == 5  # the sensor_data profile
    assert profile["reliability"] in (2, "best_effort")


def test_corrupt_and_missing_bags_raise_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(BagError, match=str(missing)):
        BagReader(missing)

    write_bag(tmp_path / "cut")
    (mcap_file,) = (tmp_path / "cut").glob("*.mcap")
    mcap_file.write_bytes(mcap_file.read_bytes()[: mcap_file.stat().st_size // 2])
    with pytest.raises(BagError, match=str(tmp_path / "cut")):
        list(BagReader(tmp_path / "cut"))

    write_bag(tmp_path / "meta")
    (tmp_path / "meta" / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    with pytest.raises(BagError, match=str(tmp_path / "meta")):
        BagReader(tmp_path / "meta")

    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    with pytest.raises(BagError, match=str(garbage)):
        list(BagReader(garbage))


def test_a_bare_mcap_file_reads_too(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag")
    (mcap_file,) = (tmp_path / "bag").glob("*.mcap")
    with BagReader(mcap_file) as bag:
        assert sum(1 for m in bag if m.typename == IMAGE) == 3


WIDGET = "acme_msgs/msg/Widget"


def test_type_unknown_everywhere_is_listed_and_raises_only_on_decode(tmp_path: Path) -> None:
    """A foreign topic without a definition does not make the rest of the bag unreadable."""
    path = tmp_path / "bag"
    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        widget = writer.add_connection(
            "/acme/widget", WIDGET, msgdef="", rihs01="RIHS01_" + "0" * 64
        )
        text = writer.add_connection("/status", "std_msgs/msg/String", typestore=store)
        writer.write(widget, 1, b"\x00\x01\x00\x00\x2a\x00\x00\x00")
        writer.write(
            text, 2, serialize(msg_class("std_msgs/msg/String")(data="ok"), "std_msgs/msg/String")
        )
    with BagReader(path) as bag:
        assert bag.undecodable == {"/acme/widget": WIDGET}
        first, second = list(bag)
        assert first.data == b"\x00\x01\x00\x00\x2a\x00\x00\x00"  # raw bytes still there
        with pytest.raises(
            MessageError, match=r"/acme/widget @ 1: no definition for 'acme_msgs/msg/Widget'"
        ):
            first.decode()
        assert second.decode().data == "ok"


def test_definitions_carried_by_the_bag_are_used(tmp_path: Path) -> None:
    """A custom type, and an older vision_msgs layout, decode with the bag's own definitions."""
    foreign = get_typestore(Stores.ROS2_JAZZY)
    foreign.register(get_types_from_msg("string name\nfloat32 score\nint64[] cells", WIDGET))
    old = "vision_msgs/msg/ObjectHypothesis"
    foreign.register(get_types_from_msg("int64 id\nfloat64 score", old))  # vision_msgs 2.x
    path = tmp_path / "bag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, typename, msg in [
            (
                "/widget",
                WIDGET,
                foreign.types[WIDGET](name="w", score=0.5, cells=np.array([3, -4])),
            ),
            ("/legacy", old, foreign.types[old](id=7, score=0.25)),
        ]:
            connection = writer.add_connection(topic, typename, typestore=foreign)
            writer.write(connection, 5, foreign.serialize_cdr(msg, typename, little_endian=True))
    with BagReader(path, distro="jazzy") as bag:
        assert bag.undecodable == {}
        widget, legacy = (m.decode() for m in bag)
    assert (widget.name, widget.score, list(widget.cells)) == ("w", 0.5, [3, -4])
    assert (legacy.id, legacy.score) == (7, 0.25)
    # the shared typestore is untouched by what one bag carried
    assert WIDGET not in typestore().types
    assert "class_id" in dict(typestore().fielddefs[old][1])


def test_a_malformed_stored_message_raises_a_message_error(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    good = serialize(frame_to_msg(frames(1)[0]), IMAGE)
    with BagWriter(path) as bag:
        bag.add_topic("/camera/image_raw", IMAGE)
        bag.write("/camera/image_raw", 1, good[:-10])  # truncated on the wire
        bag.write("/camera/image_raw", 2, good)
    with BagReader(path) as bag:
        bad, fine = list(bag)
        with pytest.raises(MessageError, match=r"/camera/image_raw @ 1: sensor_msgs/msg/Image"):
            bad.decode()
        assert msg_to_frame(fine.decode()) == frames(1)[0]


def test_writer_errors(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        with pytest.raises(BagError, match="not added; call add_topic"):
            bag.write("/nowhere", 1, b"\x00\x01\x00\x00")
        with pytest.raises(MessageError, match="do not start with a CDR header"):
            bag.add_topic("/x", "std_msgs/msg/String")
            bag.write("/x", 1, b"hello")
        with pytest.raises(MessageError, match="unknown message type 'acme_msgs/msg/Widget'"):
            bag.add_topic("/w", WIDGET)
        bag.add_topic("/x", "std_msgs/String")  # same type again: fine
        with pytest.raises(BagError, match="already carries std_msgs/msg/String"):
            bag.add_topic("/x", "std_msgs/msg/Float32")
        with pytest.raises(MessageError, match="message object is a std_msgs/msg/Float32"):
            bag.write("/x", 1, msg_class("std_msgs/msg/Float32")(data=1.0))
    with pytest.raises(BagError, match="exists already"):
        BagWriter(path)
    with pytest.raises(BagError, match="unknown storage 'rosbag1'"):
        BagWriter(tmp_path / "other", storage="rosbag1")


def test_bag_closed_after_an_exception_is_still_readable(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="recorder died"), BagWriter(path) as bag:
        bag.write("/x", 1, msg_class("std_msgs/msg/String")(data="kept"))
        raise RuntimeError("recorder died")
    with BagReader(path) as reader:
        assert [m.decode().data for m in reader] == ["kept"]
