"""The player on bags it did not write and on bad bags.

Bags from other writers (the ``mcap`` library's ROS 2 writer, rosbags' own sqlite3 writer) must
play exactly as recorded. A bad bag must play what can be played and report what could not: a
warning naming the topic or file and the reason, a count in ``node.counts``, and never a whole
playback lost to one bad message or a damaged tail.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap.writer import CompressionType
from mcap_ros2.writer import Writer as McapRos2Writer
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as RosbagsWriter
from rosbags.typesys import Stores, get_typestore
from test_player import QOS_DEEP, Rig, pixels

from vad_inspection.msgs import serialize
from vad_inspection.msgs.image import Frame, frame_to_msg, msg_to_frame
from vad_inspection.msgs.time import stamp_to_ns
from vad_inspection.msgs.types import typestore
from vad_inspection.replay.playback import Playback, PlaybackOptions
from vad_inspection.transport import SENSOR_DATA
from vad_inspection.transport.bag import BagReader, BagWriter

NS = 1_000_000_000
T0 = 7 * NS
PERIOD = NS // 10
IMAGE = "sensor_msgs/msg/Image"
TF = "tf2_msgs/msg/TFMessage"


@pytest.fixture
def rig() -> Iterator[Any]:
    made: list[Rig] = []

    def make(**params: Any) -> Rig:
        made.append(Rig(**params))
        return made[-1]

    yield make
    for r in made:
        r.close()


def image(i: int, shape: tuple[int, ...] = (4, 6)) -> np.ndarray:
    """A frame whose first pixel is its index (what :func:`pixels` reads back)."""
    rng = np.random.default_rng(i)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img.flat[0] = i
    return img


def write_frames(path: Path, n: int, shape: tuple[int, ...] = (4, 6), **writer: Any) -> Path:
    """Our own writer: ``n`` mono8 frames on /cam/image, PERIOD apart."""
    with BagWriter(path, **writer) as bag:
        bag.add_topic("/cam/image", IMAGE, SENSOR_DATA)
        for i in range(n):
            t = T0 + i * PERIOD
            bag.write("/cam/image", t, frame_to_msg(Frame(image(i, shape), "mono8", t, "cam")))
    return path


def played_images(r: Rig, topic: str = "/cam/image") -> list[Any]:
    box = r.listen(topic, IMAGE, QOS_DEEP)
    r.play()
    return box


# ---------------------------------------------------------------------------- other writers


def test_plays_a_bare_mcap_written_by_the_mcap_library(rig, tmp_path: Path) -> None:
    """mcap_ros2's writer: its own CDR encoder, zstd chunks, no metadata.yaml, no QoS metadata,
    a schema text we hand it (rosbags generates it from its Humble typestore)."""
    text, _ = get_typestore(Stores.ROS2_HUMBLE).generate_msgdef(IMAGE, ros_version=2)
    path = tmp_path / "foreign.mcap"
    written = [image(i, (3, 5, 3)) for i in range(4)]
    with path.open("wb") as stream:
        writer = McapRos2Writer(stream)
        schema = writer.register_msgdef(IMAGE, text)
        for i, img in enumerate(written):
            t = T0 + i * PERIOD
            msg = {
                "header": {"stamp": {"sec": t // NS, "nanosec": t % NS}, "frame_id": "cam"},
                "height": 3,
                "width": 5,
                "encoding": "rgb8",
                "is_bigendian": 0,
                "step": 15,
                "data": img.tobytes(),
            }
            writer.write_message("/camera/image_raw", schema, msg, log_time=t, publish_time=t)
        writer.finish()

    r = rig(bag=str(path), rate=0.0)
    got = played_images(r, "/camera/image_raw")
    frames = [msg_to_frame(m) for m in got]
    assert [f.stamp_ns for f in frames] == [T0 + i * PERIOD for i in range(4)]
    assert all(f.encoding == "rgb8" and f.frame_id == "cam" for f in frames)
    for frame, img in zip(frames, written, strict=True):
        np.testing.assert_array_equal(frame.image, img)
    assert r.node.counts["frames"] == 4 and r.node.bag_warnings == []


def test_plays_a_humble_sqlite3_bag_written_by_rosbags(rig, tmp_path: Path) -> None:
    """rosbags' Writer straight (sqlite3, metadata version 8 as Humble writes), messages built
    and serialised by rosbags' Humble typestore, images and /tf interleaved."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    time_, header_ = types["builtin_interfaces/msg/Time"], types["std_msgs/msg/Header"]

    def stamped(t: int, frame: str) -> Any:
        return header_(stamp=time_(sec=t // NS, nanosec=t % NS), frame_id=frame)

    def tf(t: int, x: float) -> Any:
        transform = types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=x, y=2.0, z=3.0),
            rotation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        )
        one = types["geometry_msgs/msg/TransformStamped"](
            header=stamped(t, "map"), child_frame_id="cam", transform=transform
        )
        return types[TF](transforms=[one])

    path = tmp_path / "humble"
    n = 6
    with RosbagsWriter(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        cam = writer.add_connection("/cam/image", IMAGE, typestore=store)
        tf_conn = writer.add_connection("/tf", TF, typestore=store)
        for i in range(n):
            t = T0 + i * PERIOD
            msg = types[IMAGE](header=stamped(t, "cam"), height=4, width=6, encoding="mono8",
                               is_bigendian=0, step=6, data=image(i).ravel())  # fmt: skip
            writer.write(cam, t, store.serialize_cdr(msg, IMAGE))
            writer.write(tf_conn, t + NS // 100, store.serialize_cdr(tf(t, float(i)), TF))

    with BagReader(path) as bag:  # bag order across topics, as the player gets it
        due = list(Playback(bag, PlaybackOptions()).messages())
    assert [d.topic for d in due] == ["/cam/image", "/tf"] * n
    assert [d.stamp_ns for d in due] == sorted(d.stamp_ns for d in due)

    r = rig(bag=str(path), rate=0.0, clock=False)
    transforms = r.listen("/tf", TF, QOS_DEEP)
    images = played_images(r)
    assert pixels(images) == list(range(n))
    assert [stamp_to_ns(m.header.stamp) for m in images] == [T0 + i * PERIOD for i in range(n)]
    for got, i in zip(images, range(n), strict=True):
        np.testing.assert_array_equal(msg_to_frame(got).image, image(i))
    sent = [m.transforms[0] for m in transforms]
    assert [one.transform.translation.x for one in sent] == [float(i) for i in range(n)]
    assert {(one.header.frame_id, one.child_frame_id) for one in sent} == {("map", "cam")}
    assert r.node.counts["messages"] == 2 * n and r.node.counts["frames"] == n


# ---------------------------------------------------------------------------- bad bags


def test_a_topic_of_unknown_type_is_skipped_listed_and_logged_once(
    rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A vendor topic with an empty definition and a type nobody knows: the rest plays."""
    store = typestore()
    path = tmp_path / "vendor"
    with RosbagsWriter(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        widget = writer.add_connection(
            "/acme/widget", "acme_msgs/msg/Widget", msgdef="", rihs01="RIHS01_" + "0" * 64
        )
        cam = writer.add_connection("/cam/image", IMAGE, typestore=store)
        for i in range(5):
            t = T0 + i * PERIOD
            writer.write(widget, t, b"\x00\x01\x00\x00\x2a\x00\x00\x00")
            frame = frame_to_msg(Frame(image(i), "mono8", t, "cam"))
            writer.write(cam, t + 1, serialize(frame, IMAGE))

    caplog.set_level(logging.WARNING)
    r = rig(bag=str(path), rate=0.0)
    assert pixels(played_images(r)) == list(range(5))
    assert r.node._playback is not None
    assert r.node._playback.skipped == {"/acme/widget": "acme_msgs/msg/Widget"}
    assert "acme_msgs/msg/Widget is unknown" in r.node.skipped["/acme/widget"]
    assert r.node.counts["skipped_topics"] == 1 and r.node.counts["skipped_messages"] == 5
    assert r.node.counts["messages"] == 5 and r.node.counts["errors"] == 0
    assert "/acme/widget" not in r.graph.topics()  # no publisher offered for it
    assert caplog.text.count("/acme/widget") == 1  # one warning, not one per message
    assert "acme_msgs/msg/Widget" in caplog.text


def _complete_chunk_end(path: Path, cut: int) -> int:
    """Latest message time in the chunks that lie wholly before byte ``cut`` (the mcap library's
    own index of the intact file, so the expectation does not come from the code under test)."""
    with path.open("rb") as stream:
        summary = make_reader(stream).get_summary()
    assert summary is not None
    ends = [
        c.message_end_time
        for c in summary.chunk_indexes
        if c.chunk_start_offset + c.chunk_length <= cut
    ]
    assert ends, "the cut should leave at least one whole chunk"
    return max(ends)


@pytest.mark.parametrize("metadata", ["kept", "missing"])
def test_a_cut_off_mcap_plays_up_to_the_cut(rig, tmp_path: Path, metadata: str) -> None:
    """Chosen behaviour: play what precedes the cut. rosbags refuses an MCAP without footer
    ("File end magic is invalid"), so BagReader reads such a file front to back with the mcap
    package's stream reader and stops quietly at the first torn record; configure succeeds, the
    frames of every whole chunk play in order, the bag warning names the file, says truncated and
    suggests ``mcap recover``. 'missing' is a recorder killed mid-run (no metadata.yaml either)."""
    path = write_frames(tmp_path / "cut", 10, (600, 1000))  # two frames a 1 MiB chunk
    (mcap_file,) = path.glob("*.mcap")
    size = mcap_file.stat().st_size
    cut = int(size * 0.7)
    last_ns = _complete_chunk_end(mcap_file, cut)
    expected = [i for i in range(10) if T0 + i * PERIOD <= last_ns]
    assert 0 < len(expected) < 10
    with mcap_file.open("r+b") as stream:
        stream.truncate(cut)
    if metadata == "missing":
        (path / "metadata.yaml").unlink()

    r = rig(bag=str(path), rate=0.0)
    got = played_images(r)
    assert pixels(got) == expected
    for m, i in zip(got, expected, strict=True):
        np.testing.assert_array_equal(msg_to_frame(m).image, image(i, (600, 1000)))
    assert r.node.finished.is_set() and r.node.playback_error == ""
    assert r.node.counts["errors"] == 0 and r.node.counts["messages"] == len(expected)
    warning = next(w for w in r.node.bag_warnings if "truncated" in w)
    assert str(mcap_file) in warning and "mcap recover" in warning
    assert f"{len(expected)} complete messages" in warning


def test_an_mcap_cut_before_its_first_message_fails_configure_saying_so(
    rig, tmp_path: Path
) -> None:
    path = write_frames(tmp_path / "stub", 3)
    (mcap_file,) = path.glob("*.mcap")
    with mcap_file.open("r+b") as stream:
        stream.truncate(mcap_file.stat().st_size // 3)
    r = rig(bag=str(path))
    assert not r.node.trigger("configure")
    assert str(path) in r.node.last_error and mcap_file.name in r.node.last_error
    assert "truncated" in r.node.last_error and "mcap recover" in r.node.last_error
    assert r.node.state.label == "unconfigured"


def test_a_bag_directory_without_metadata_plays_its_storage_file(rig, tmp_path: Path) -> None:
    """Chosen behaviour: one storage file and no metadata.yaml plays that file, with a warning;
    no storage file (or several, whose order only the metadata knows) fails naming the cause."""
    path = write_frames(tmp_path / "nometa", 5, storage="sqlite3")
    (path / "metadata.yaml").unlink()
    r = rig(bag=str(path), rate=0.0)
    assert pixels(played_images(r)) == list(range(5))
    assert any("no metadata.yaml" in w for w in r.node.bag_warnings)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    r = rig(bag=str(empty))
    assert not r.node.trigger("configure")
    assert str(empty) in r.node.last_error and "no metadata.yaml" in r.node.last_error

    split = write_frames(tmp_path / "split", 2)
    (one,) = split.glob("*.mcap")
    shutil.copy(one, split / "split_1.mcap")
    (split / "metadata.yaml").unlink()
    r = rig(bag=str(split))
    assert not r.node.trigger("configure")
    assert "2 storage files" in r.node.last_error and "ros2 bag reindex" in r.node.last_error


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_stale_metadata_yaml_gives_way_to_the_storage(rig, tmp_path: Path, storage: str) -> None:
    """Chosen behaviour: counts, start time and QoS that disagree with the storage file (a
    hand-edited or copied metadata.yaml) are reported and the file itself is played; rosbags alone
    would take the wrong start time and skip the frames before it, and skip a topic whose QoS
    differs altogether. A file list naming a file that is not there fails, naming it."""
    path = write_frames(tmp_path / "stale", 8, storage=storage)
    meta_path = path / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    info = meta["rosbag2_bagfile_information"]
    info["message_count"] = 3
    info["starting_time"]["nanoseconds_since_epoch"] += 4 * PERIOD  # says it starts at frame 4
    info["duration"]["nanoseconds"] = PERIOD
    topic = info["topics_with_message_count"][0]
    topic["message_count"] = 3
    topic["topic_metadata"]["offered_qos_profiles"] = []  # recorded with sensor_data QoS
    meta_path.write_text(yaml.safe_dump(meta))

    r = rig(bag=str(path), rate=0.0)
    assert pixels(played_images(r)) == list(range(8))
    (warning,) = r.node.bag_warnings
    assert "metadata.yaml does not match" in warning and "/cam/image: 3 listed, 8 stored" in warning
    assert r.node.counts["messages"] == 8

    info["relative_file_paths"] = ["elsewhere.mcap"]
    meta_path.write_text(yaml.safe_dump(meta))
    r = rig(bag=str(path))
    assert not r.node.trigger("configure")
    assert str(path) in r.node.last_error and "elsewhere.mcap" in r.node.last_error


def test_a_corrupt_message_is_sent_as_is_and_playback_goes_on(rig, tmp_path: Path) -> None:
    """The player sends recorded bytes without decoding them, so a corrupt frame costs that frame
    only: the subscriber drops it (a detector would refuse it), everything else arrives."""
    path = tmp_path / "corrupt"
    with BagWriter(path) as bag:
        bag.add_topic("/cam/image", IMAGE, SENSOR_DATA)
        for i in range(10):
            t = T0 + i * PERIOD
            good = serialize(frame_to_msg(Frame(image(i), "mono8", t, "cam")), IMAGE)
            data = {4: good[:-10], 7: b"\x00\x01\x00\x00\xff"}.get(i, good)  # torn; no header
            bag.write("/cam/image", t, data)

    r = rig(bag=str(path), rate=0.0)
    got: list[Any] = []
    sub = r.peer.create_subscription("/cam/image", IMAGE, got.append, QOS_DEEP)
    raw: list[bytes] = []
    r.peer.create_subscription("/cam/image", IMAGE, raw.append, QOS_DEEP, raw=True)
    r.play()
    assert pixels(got) == [0, 1, 2, 3, 5, 6, 8, 9]
    assert sub.dropped == 2
    assert len(raw) == 10 and raw[7] == b"\x00\x01\x00\x00\xff"  # sent exactly as recorded
    assert r.node.finished.is_set() and r.node.playback_error == ""
    assert r.node.counts["messages"] == 10 and r.node.counts["frames"] == 10
    assert r.node.counts["unstamped"] == 1 and r.node.counts["errors"] == 0


def test_a_damaged_chunk_mid_bag_keeps_what_was_played_and_finishes(rig, tmp_path: Path) -> None:
    """A chunk failing its CRC in an indexed MCAP: rosbags raises when it gets there. Playback
    ends with every earlier frame sent, the reason logged, counted and kept, and finished set."""
    text, _ = get_typestore(Stores.ROS2_HUMBLE).generate_msgdef(IMAGE, ros_version=2)
    path = tmp_path / "damaged.mcap"
    with path.open("wb") as stream:
        writer = McapRos2Writer(stream, chunk_size=1, compression=CompressionType.NONE)
        schema = writer.register_msgdef(IMAGE, text)
        for i in range(6):
            t = T0 + i * PERIOD
            msg = {"header": {"stamp": {"sec": t // NS, "nanosec": t % NS}, "frame_id": "cam"},
                   "height": 4, "width": 6, "encoding": "mono8", "is_bigendian": 0, "step": 6,
                   "data": image(i).tobytes()}  # fmt: skip
            writer.write_message("/cam/image", schema, msg, log_time=t, publish_time=t)
        writer.finish()
    with path.open("rb") as stream:
        chunks = sorted(make_reader(stream).get_summary().chunk_indexes,
                        key=lambda c: c.message_start_time)  # fmt: skip
    blob = bytearray(path.read_bytes())
    fourth = chunks[3]
    blob[fourth.chunk_start_offset + fourth.chunk_length - 3] ^= 0xFF  # a pixel of frame 3
    path.write_bytes(bytes(blob))

    r = rig(bag=str(path), rate=0.0)
    assert pixels(played_images(r)) == [0, 1, 2]
    assert r.node.finished.is_set() and r.node.counts["errors"] == 1
    assert "checksum" in r.node.playback_error and str(path) in r.node.playback_error


@pytest.mark.parametrize("name", ["notes.txt", "notes.mcap", "notes.db3"])
def test_a_text_file_as_bag_fails_configure_naming_it(rig, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("these are not the messages you are looking for\n" * 20)
    r = rig(bag=str(path))
    assert not r.node.trigger("configure")
    assert str(path) in r.node.last_error and "cannot open bag" in r.node.last_error
    assert r.node.state.label == "unconfigured"
