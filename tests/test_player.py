"""The bag player node on the in-process bus: what it plays, in which order and under which
names, the clock it publishes, the QoS it offers, and the closed loop that waits for scores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vad_inspection.msgs.cdr import header_stamp_ns
from vad_inspection.msgs.defaults import new_message
from vad_inspection.msgs.image import Frame, frame_to_msg, msg_to_frame
from vad_inspection.msgs.time import header, stamp_to_ns
from vad_inspection.nodes.player import PlayerNode
from vad_inspection.transport import DEFAULT, LATCHED, SENSOR_DATA, QoS, create_bus
from vad_inspection.transport.bag import BagWriter
from vad_inspection.transport.local import LocalGraph
from vad_inspection.transport.qos import Reliability

NS = 1_000_000_000
T0 = 5 * NS
QOS_DEEP = QoS(Reliability.BEST_EFFORT, depth=100)  # takes best effort and reliable alike


def write_bag(path: Path, frames: int = 20, period_ns: int = NS // 10, storage: str = "mcap"):
    """Frames whose first pixel is their index, camera_info with each, one latched tf_static."""
    with BagWriter(path, storage=storage) as bag:
        bag.add_topic("/cam/image", "sensor_msgs/msg/Image", SENSOR_DATA)
        bag.add_topic("/cam/info", "sensor_msgs/msg/CameraInfo", SENSOR_DATA)
        bag.add_topic("/tf_static", "tf2_msgs/msg/TFMessage", LATCHED)
        bag.add_topic("/clock", "rosgraph_msgs/msg/Clock", None)
        bag.write("/tf_static", T0, new_message("tf2_msgs/msg/TFMessage"))
        for i in range(frames):
            t = T0 + i * period_ns
            image = np.full((4, 6), i, np.uint8)
            bag.write("/clock", t, new_message("rosgraph_msgs/msg/Clock"))
            bag.write("/cam/info", t, new_message("sensor_msgs/msg/CameraInfo",
                                                  header=header(t, "cam")))  # fmt: skip
            bag.write("/cam/image", t, frame_to_msg(Frame(image, "mono8", t, "cam")))
    return path


class Rig:
    def __init__(self, **params: Any) -> None:
        self.graph = LocalGraph()
        self.bus = create_bus("local", "player", graph=self.graph, parameters=params)
        self.node = PlayerNode(self.bus)
        self.peer = create_bus("local", "peer", graph=self.graph)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.bus.spin_once(0.01)

    def listen(self, topic: str, typename: str, qos: Any = DEFAULT) -> list[Any]:
        box: list[Any] = []
        self.peer.create_subscription(topic, typename, box.append, qos)
        return box

    def play(self, timeout: float = 20.0) -> None:
        assert self.node.trigger("configure"), self.node.last_error
        assert self.node.trigger("activate")
        assert self.peer.spin_until(self.node.finished.is_set, timeout)
        self.peer.spin_once(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.node.close()
        self.peer.shutdown()
        self.bus.shutdown()


@pytest.fixture
def rig() -> Iterator[Any]:
    made: list[Rig] = []

    def make(**params: Any) -> Rig:
        made.append(Rig(**params))
        return made[-1]

    yield make
    for r in made:
        r.close()


def pixels(msgs: list[Any]) -> list[int]:
    return [int(msg_to_frame(m).image[0, 0]) for m in msgs]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_plays_everything_in_order_with_the_bag_clock(rig, tmp_path: Path, storage: str) -> None:
    bag = write_bag(tmp_path / "b", storage=storage)
    r = rig(bag=str(bag), rate=0.0)
    images = r.listen("/cam/image", "sensor_msgs/msg/Image", QOS_DEEP)
    clock = r.listen("/clock", "rosgraph_msgs/msg/Clock", QOS_DEEP)
    r.play()
    assert pixels(images) == list(range(20))
    assert [stamp_to_ns(m.header.stamp) for m in images] == [T0 + i * NS // 10 for i in range(20)]
    # our /clock from bag time (the bag's own /clock, all zeros, is not replayed)
    assert len(clock) == 1 + 20 * 2 and stamp_to_ns(clock[-1].clock) == T0 + 19 * NS // 10
    assert all(stamp_to_ns(c.clock) > 0 for c in clock)
    assert r.node.counts["frames"] == 20 and r.node.counts["messages"] == 41


def test_topics_remap_offset_and_duration(rig, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b")
    r = rig(bag=str(bag), rate=0.0, topics=["/cam/image"], remap=["/cam/image:=/camera/x"],
            start_offset_s=0.5, duration_s=0.75, clock=False)  # fmt: skip
    images = r.listen("/camera/x", "sensor_msgs/msg/Image", QOS_DEEP)
    info = r.listen("/cam/info", "sensor_msgs/msg/CameraInfo", QOS_DEEP)
    r.play()
    assert pixels(images) == list(range(5, 13))  # 0.5 s <= t < 1.25 s
    assert info == []


def test_recorded_qos_is_offered_so_tf_static_stays_latched(rig, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", frames=2)
    r = rig(bag=str(bag), rate=0.0)
    r.play()
    late = r.listen("/tf_static", "tf2_msgs/msg/TFMessage", LATCHED)  # subscribes after the end
    r.peer.spin_until(lambda: bool(late), 2.0)
    assert len(late) == 1


def test_real_time_takes_the_bag_time_over_the_rate(rig, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", frames=11)  # 1.0 s of bag time
    r = rig(bag=str(bag), rate=2.0)
    t0 = time.monotonic()
    r.play()
    assert time.monotonic() - t0 >= 0.45  # never faster than 1.0 s / 2 (a lower bound only)


def test_closed_loop_waits_for_each_score_and_loses_nothing(rig, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", frames=15)
    r = rig(bag=str(bag), rate=0.0, closed_loop=True, score_topic="/slow/score",
            qos_overrides=["/cam/image=reliable"], closed_loop_timeout_s=5.0)  # fmt: skip
    scorer = create_bus("local", "slow", graph=r.graph)
    answer = scorer.create_publisher("~/score", "vision_msgs/msg/Classification", DEFAULT)
    seen: list[int] = []

    def slow_model(msg: Any) -> None:  # a model slower than the bag: 30 ms a frame
        time.sleep(0.03)
        seen.append(int(msg_to_frame(msg).image[0, 0]))
        answer.publish(new_message("vision_msgs/msg/Classification", header=msg.header))

    scorer.create_subscription("/cam/image", "sensor_msgs/msg/Image", slow_model, DEFAULT)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [scorer.spin_once(0.01) for _ in iter(stop.is_set, True)], daemon=True
    )
    spinner.start()
    try:
        r.play()
    finally:
        stop.set()
        spinner.join(5)
        scorer.shutdown()
    assert seen == list(range(15))  # every frame, in order, though the model is slow
    assert r.node.counts["unanswered"] == 0 and len(r.node.sent_ns) == 15


def test_bad_bags_and_options_fail_configure_with_the_reason(rig, tmp_path: Path) -> None:
    r = rig(bag=str(tmp_path / "missing"))
    assert not r.node.trigger("configure")
    assert "cannot open bag" in r.node.last_error and r.node.state.label == "unconfigured"
    bag = write_bag(tmp_path / "b", frames=3)
    r = rig(bag=str(bag), topics=["/nope"])
    assert not r.node.trigger("configure") and "no topic(s) ['/nope']" in r.node.last_error
    r = rig(bag=str(bag), start_offset_s=30.0)
    assert not r.node.trigger("configure") and "outside the bag" in r.node.last_error
    r = rig(bag=str(bag), qos_overrides=["/cam/image=fast"])
    assert not r.node.trigger("configure") and "TOPIC=reliable" in r.node.last_error
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("not: a bag")
    r = rig(bag=str(tmp_path / "junk"))
    assert not r.node.trigger("configure") and "junk" in r.node.last_error


def test_header_stamp_is_read_from_the_cdr_bytes() -> None:
    from vad_inspection.msgs import serialize

    t = 1_700_000_000_123_456_789
    msg = frame_to_msg(Frame(np.zeros((2, 2), np.uint8), "mono8", t, "cam"))
    assert header_stamp_ns(serialize(msg, "sensor_msgs/msg/Image")) == t
    assert header_stamp_ns(b"\x00\x01\x00\x00\x01") is None  # too short for a header


def test_loop_starts_again_and_the_clock_keeps_bag_time(rig, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", frames=4)
    r = rig(bag=str(bag), rate=0.0, loop=True)
    images = r.listen("/cam/image", "sensor_msgs/msg/Image", QOS_DEEP)
    assert r.node.trigger("configure") and r.node.trigger("activate")
    assert r.peer.spin_until(lambda: len(images) >= 12, 10.0)  # three passes of four frames
    assert r.node.trigger("deactivate")  # pauses; a looping player never finishes by itself
    assert pixels(images)[:12] == [0, 1, 2, 3] * 3
    assert not r.node.finished.is_set()
