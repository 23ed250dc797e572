"""The recorder node on the in-process bus with its real durable store: what it keeps around an
event, what it throttles, the bag a downlink window writes (read back by the `mcap` library's
own reader), a restart that resumes the queue, and bad settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vad_inspection.msgs.anomaly import parse_tags
from vad_inspection.msgs.defaults import new_message
from vad_inspection.msgs.image import Frame, frame_to_msg
from vad_inspection.msgs.time import header
from vad_inspection.nodes.recorder import RecorderNode
from vad_inspection.transport import DEFAULT, LATCHED, SENSOR_DATA, create_bus
from vad_inspection.transport.local import LocalGraph

NS = 1_000_000_000
FLAGGED = (20, 21)  # frame indices the "detector" flags


class Rig:
    def __init__(self, root: Path, graph: LocalGraph | None = None, **params: Any) -> None:
        self.graph = graph or LocalGraph()
        defaults = {"store_dir": str(root / "store"), "downlink_dir": str(root / "down"),
                    "sync": "none", "window_period_s": 0.0, "autostart": True,
                    "pre_event_s": 0.35, "post_event_s": 0.25, "routine_period_s": 1.0}  # fmt: skip
        self.bus = create_bus("local", "recorder", graph=self.graph,
                              parameters={**defaults, **params})  # fmt: skip
        self.node = RecorderNode(self.bus)
        self.cam = create_bus("local", "camera", graph=self.graph)
        self.image = self.cam.create_publisher("/image", "sensor_msgs/msg/Image", SENSOR_DATA)
        pub = self.cam.create_publisher
        self.score = pub("/detector/score", "vision_msgs/msg/Classification", DEFAULT)
        self.dets = pub("/detector/detections", "vision_msgs/msg/Detection2DArray", DEFAULT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.bus.spin_once(0.01)

    def frame(self, i: int) -> None:
        """Frame i (10 Hz) with its score; flagged ones carry a defect box and tag."""
        stamp = NS + i * NS // 10
        image = np.full((48, 64, 3), 40 + 5 * (i % 30), np.uint8)
        flagged = i in FLAGGED
        if flagged:
            image[10:20, 10:20] = 255
        self.image.publish(frame_to_msg(Frame(image, "rgb8", stamp, "cam")))
        head = header(stamp, "cam")
        box = new_message("vision_msgs/msg/BoundingBox2D", size_x=10.0, size_y=10.0)
        box.center.position.x, box.center.position.y = 15.0, 15.0
        detections = [new_message("vision_msgs/msg/Detection2D", header=head, bbox=box,
                                  id="D0001")] if flagged else []  # fmt: skip
        self.dets.publish(new_message("vision_msgs/msg/Detection2DArray", header=head,
                                      detections=detections))  # fmt: skip
        results = [new_message("vision_msgs/msg/ObjectHypothesis", class_id="anomaly",
                               score=0.9 if flagged else 0.1),
                   new_message("vision_msgs/msg/ObjectHypothesis", class_id="anomaly_raw",
                               score=5.0 + i if flagged else 1.0 + i / 100)]  # fmt: skip
        self.score.publish(new_message("vision_msgs/msg/Classification", header=head,
                                       results=results))  # fmt: skip

    def stream(self, count: int) -> None:
        for i in range(count):
            self.frame(i)
            self.cam.spin_until(lambda i=i: self._seen() >= i + 1, 5.0)

    def _seen(self) -> int:
        c = self.node.counts
        return sum(
            v
            for k, v in c.items()  # one decision per frame (pre-event comes on top)
            if k.startswith(("accepted_", "throttled")) and k != "accepted_pre-event"
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.node.close()
        self.cam.shutdown()
        self.bus.shutdown()


@pytest.fixture
def rigs() -> Iterator[Any]:
    made: list[Rig] = []

    def make(root: Path, **params: Any) -> Rig:
        made.append(Rig(root, **params))
        return made[-1]

    yield make
    for r in made:
        r.close()


def stamps_of(items: list) -> list[int]:
    return [(i.stamp_ns - NS) * 10 // NS for i in items]


def test_keeps_the_event_with_its_context_and_throttles_the_rest(rigs, tmp_path: Path) -> None:
    r = rigs(tmp_path)
    r.stream(40)
    pending = r.node.store.pending()
    anomalous = sorted(stamps_of([i for i in pending if i.anomalous]))
    # 0.35 s before 20 (17-19), the flagged 20-21, 0.25 s after 21 (22, 23)
    assert anomalous == [17, 18, 19, 20, 21, 22, 23]
    routine = sorted(stamps_of([i for i in pending if not i.anomalous]))
    assert routine == [0, 10, 24, 34]  # one per second of stream time, restarting after the event
    assert r.node.counts["throttled"] == 40 - 4 - 4  # 17-19 among them, kept later as context
    tagged = [i for i in pending if i.tag]
    assert stamps_of(tagged) == [20, 21] and {i.tag for i in tagged} == {"D0001"}


def test_a_window_writes_a_bag_the_mcap_reader_reads_and_marks_it_sent(
    rigs, tmp_path: Path
) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    r = rigs(tmp_path)
    r.stream(40)
    before = len(r.node.store.pending())
    path = r.node.downlink(60_000)
    sent = r.node.last_window
    assert 0 < sent["items"] <= before and sent["bytes"] <= 60_000
    topics: dict[str, list] = {}
    with open(next(path.glob("*.mcap")), "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages():
            topics.setdefault(channel.topic, []).append(decoded)
    metas = [parse_tags(m) for m in topics["/downlink/meta"]]
    assert len(metas) == sent["items"]
    sent_items = [next(iter(m.values())) for m in metas]
    tagged = [m for m in sent_items if m["tag"] == "D0001"]
    assert len(tagged) >= 1 and all(m["anomalous"] == "True" for m in tagged)  # the defect went
    images = topics.get("/image", []) + topics.get("/image/compressed", [])
    assert images  # frames, not only metadata
    assert len(r.node.store.pending()) == before - sent["items"]


def test_a_restart_resumes_the_same_queue(rigs, tmp_path: Path) -> None:
    r = rigs(tmp_path)
    r.stream(30)
    queue = [(i.seq, i.stamp_ns, i.anomalous) for i in r.node.store.pending()]
    r.close()
    again = rigs(tmp_path)
    assert [(i.seq, i.stamp_ns, i.anomalous) for i in again.node.store.pending()] == queue


def test_bad_settings_fail_configure_and_oversized_items_are_reported(rigs, tmp_path: Path) -> None:
    r = rigs(tmp_path / "a", autostart=False, first_window_s=-5.0)
    assert not r.node.trigger("configure") and "in the past" in r.node.last_error
    r = rigs(tmp_path / "b")
    r.stream(22)
    r.node.downlink(100)  # smaller than every form of every frame
    assert r.node.counts["larger_than_window"] >= 1 and r.node.last_window["items"] == 0
    status = r.cam.create_subscription("/recorder/status", "diagnostic_msgs/msg/DiagnosticArray",
                                       lambda m: got.append(m), LATCHED)  # fmt: skip
    got: list = []

    def windowed() -> bool:
        return bool(got) and "last_window_items" in next(iter(parse_tags(got[-1]).values()))

    assert r.cam.spin_until(windowed, 5.0) and status
    values = next(iter(parse_tags(got[-1]).values()))
    assert int(values["items_queued"]) >= 1 and "last_window_items" in values
