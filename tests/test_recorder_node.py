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
        assert self.node.flush(10.0)  # everything decided is in the store

    def _seen(self) -> int:
        c = self.node.counts
        return sum(
            v
            for k, v in c.items()  # one decision per frame (pre-event comes on top)
            if k.startswith(("accepted_", "throttled", "refused_")) and k != "accepted_pre-event"
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
    past = ["+30=1M", "2020-01-01T00:00:00Z=2M"]
    r = rigs(tmp_path / "p", autostart=False, window_schedule=past)
    assert not r.node.trigger("configure")
    assert "window 2 '2020-01-01T00:00:00Z=2M'" in r.node.last_error and r.node.store is None
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
    assert int(values["last_window_larger_than_window"]) == int(values["items_queued"])


def test_scheduled_windows_open_on_time_and_each_writes_a_bag(rigs, tmp_path: Path) -> None:
    r = rigs(tmp_path, window_schedule=["+0.6=20k", "+1.2=20k"], status_period_s=0.05)
    r.stream(40)
    assert r.cam.spin_until(lambda: len(r.node.windows_written) == 2, 10.0)
    assert all((p / "metadata.yaml").is_file() for p in r.node.windows_written)
    assert r.node.last_window["budget"] == 20_000 and not r.node._contacts  # no third window


def status_values(r: Rig) -> dict[str, str]:
    got: list = []
    r.cam.create_subscription("/recorder/status", "diagnostic_msgs/msg/DiagnosticArray",
                              got.append, LATCHED)  # fmt: skip
    assert r.cam.spin_until(lambda: bool(got), 5.0)
    ((_, values),) = parse_tags(got[-1]).items()
    return values


def test_frames_sent_as_metadata_only_stay_queued_and_are_described_once(
    rigs, tmp_path: Path
) -> None:
    r = rigs(tmp_path)
    r.stream(30)
    queued = [i.seq for i in r.node.store.pending()]
    metas = []
    for _ in range(6):  # small windows: a defect's crop (~200 B) or a metadata record (256 B)
        r.node.downlink(400)
        metas.append(set(r.node.planner.meta_sent) - set().union(*metas))
        assert r.node.last_window["forms"].get("meta", 0) == len(metas[-1])
    assert sum(map(len, metas)) >= 3
    shown = set(queued) - {i.seq for i in r.node.store.pending()}
    assert shown == r.node.planner.delivered  # only frames sent in a form that shows them left
    assert set().union(*metas) <= {i.seq for i in r.node.store.pending()}  # described, queued
    assert sum(len(m) for m in metas) == len(set().union(*metas))  # never described twice
    r.node.downlink(10_000_000)  # a large window now sends them in full or compressed
    assert not r.node.store.pending()


def test_what_was_sent_is_remembered_across_a_restart(rigs, tmp_path: Path) -> None:
    r = rigs(tmp_path)
    r.stream(30)
    r.node.downlink(10_000_000)
    assert "D0001" in r.node.planner.sent_tags
    sent_signatures = len(r.node.planner.sent_signatures)
    r.close()
    again = rigs(tmp_path)
    assert again.node.planner.sent_tags == {"D0001"}
    assert len(again.node.planner.sent_signatures) == sent_signatures > 0


def test_a_nearly_full_disk_refuses_routine_frames_keeps_anomalous_ones_and_says_so(
    rigs, tmp_path: Path
) -> None:
    import shutil

    free_mb = shutil.disk_usage(tmp_path).free / 1e6
    r = rigs(tmp_path, min_free_mb=free_mb + 1000.0, status_period_s=0.05)
    r.stream(30)
    pending = r.node.store.pending()
    assert sorted(stamps_of(pending)) == [17, 18, 19, 20, 21, 22, 23]  # the event, nothing else
    assert all(i.anomalous for i in pending)
    assert r.node.counts["refused_disk_full"] == 3  # the routine frames 0, 10 and 24
    values = status_values(r)
    assert int(values["count_refused_disk_full"]) == 3


CUT_CHILD = """
import resource, signal, sys
from vad_inspection.nodes.recorder import RecorderNode
from vad_inspection.transport import create_bus
from vad_inspection.transport.bag import BagError
store, down, limit, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "kill":  # Python ignores SIGXFSZ (a write fails with EFBIG); restore the kernel's kill
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
bus = create_bus("local", "recorder", parameters={"store_dir": store, "downlink_dir": down,
                 "sync": "none", "window_period_s": 0.0, "autostart": True})
node = RecorderNode(bus)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    node.downlink(100_000_000)  # the bag's file passes the limit in its second chunk
except BagError as error:
    print(error, flush=True)
    sys.exit(3)
"""


@pytest.mark.parametrize("mode", ["kill", "full"])
def test_a_window_cut_off_mid_write_is_set_aside_read_up_to_the_cut_and_sent_again(
    tmp_path: Path, mode: str
) -> None:
    """Real cuts, in the bag's second chunk, by the kernel's file size limit on the child
    writing the window: ``kill``, SIGXFSZ kills it (a crash); ``full``, the write fails with
    EFBIG as on a full disk, and the window fails with a message naming the bag."""
    import signal
    import subprocess
    import sys

    from vad_inspection.downlink.store import Store
    from vad_inspection.msgs import serialize
    from vad_inspection.transport.bag import BagReader

    rng = np.random.default_rng(0)
    store_dir, down = tmp_path / "store", tmp_path / "down"
    with Store(store_dir, 1 << 30, sync="none") as store:
        for i in range(8):  # 8 full frames of 0.9 MB: the rosbags writer closes a chunk per 1 MiB
            image = rng.integers(0, 255, (480, 640, 3), np.uint8)
            payload = serialize(frame_to_msg(Frame(image, "rgb8", NS + i * NS, "cam")),
                                "sensor_msgs/msg/Image")  # fmt: skip
            store.accept(stamp_ns=NS + i * NS, topic="/image", typename="sensor_msgs/msg/Image",
                         payload=payload, score=float(i), anomalous=True,
                         meta={"forms": {"full": len(payload)}})  # fmt: skip
        queue = [(i.seq, i.stamp_ns) for i in store.pending()]
    child = subprocess.run([sys.executable, "-c", CUT_CHILD, str(store_dir), str(down),
                            str(3_000_000), mode], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    if mode == "kill":
        assert child.returncode == -signal.SIGXFSZ, child.stderr
    else:
        assert child.returncode == 3, child.stderr
        assert "cannot" in child.stdout and "File too large" in child.stdout
    (cut,) = down.iterdir()
    assert not (cut / "metadata.yaml").exists()

    r = Rig(tmp_path, store_dir=str(store_dir), downlink_dir=str(down))
    try:
        assert r.node.counts["cut_windows"] == 1 and not cut.exists()
        aside = cut.with_name(cut.name + ".cut")
        with BagReader(aside) as bag:
            read = [m.timestamp_ns for m in bag if m.topic == "/image"]
            assert any("cut off" in w for w in bag.warnings)
        assert 1 <= len(read) < 8  # the chunks written whole before the cut
        assert [(i.seq, i.stamp_ns) for i in r.node.store.pending()] == queue  # nothing sent
        path = r.node.downlink(100_000_000)
        assert not r.node.store.pending()
        with BagReader(path) as bag:
            assert sorted(m.timestamp_ns for m in bag if m.topic == "/image") == [
                stamp for _, stamp in queue
            ]
    finally:
        r.close()


def test_a_downlink_service_call_opens_a_window_now(rigs, tmp_path: Path) -> None:
    from vad_inspection.msgs.defaults import new_message

    r = rigs(tmp_path, window_bytes=50_000)
    r.stream(30)
    client = r.cam.create_client("/recorder/downlink", "std_srvs/srv/Trigger")
    assert client.wait_for_service(5.0)
    reply = client.call(new_message("std_srvs/srv/Trigger_Request"), timeout=10.0)
    assert reply.success and "of 50000 bytes" in reply.message
    assert len(r.node.windows_written) == 1 and str(r.node.windows_written[0]) in reply.message


def test_detections_arriving_after_the_score_still_tag_the_stored_frame(
    rigs, tmp_path: Path
) -> None:
    """Over DDS the detector's score often overtakes its detections: the recorder waits a little
    for a flagged frame's detections before storing it."""
    r = rigs(tmp_path)
    stamp = NS
    image = np.full((48, 64, 3), 90, np.uint8)
    r.image.publish(frame_to_msg(Frame(image, "rgb8", stamp, "cam")))
    head = header(stamp, "cam")
    results = [new_message("vision_msgs/msg/ObjectHypothesis", class_id="anomaly", score=0.9)]
    r.score.publish(new_message("vision_msgs/msg/Classification", header=head, results=results))
    r.cam.spin_until(lambda: r.node.counts["throttled"] + len(r.node._jobs) >= 1, 2.0)
    box = new_message("vision_msgs/msg/BoundingBox2D", size_x=10.0, size_y=10.0)
    late = new_message("vision_msgs/msg/Detection2D", header=head, bbox=box, id="D0042")
    r.dets.publish(new_message("vision_msgs/msg/Detection2DArray", header=head,
                               detections=[late]))  # fmt: skip
    assert r.cam.spin_until(lambda: r.node.counts["accepted_flagged"] == 1, 5.0)
    assert r.node.flush(5.0)
    (item,) = r.node.store.pending()
    assert item.tag == "D0042" and item.meta["boxes"] == [[-5, -5, 10, 10]]


def test_a_score_that_overtakes_its_frame_is_applied_when_the_frame_comes(
    rigs, tmp_path: Path
) -> None:
    """A score is a few hundred bytes, a frame a megabyte in fragments: over DDS the score of a
    frame can arrive first. It waits for its frame instead of being dropped."""
    r = rigs(tmp_path, routine_period_s=0.0)
    stamp = NS
    head = header(stamp, "cam")
    results = [new_message("vision_msgs/msg/ObjectHypothesis", class_id="anomaly", score=0.2)]
    r.score.publish(new_message("vision_msgs/msg/Classification", header=head, results=results))
    assert r.cam.spin_until(lambda: r.node.counts["score_before_frame"] == 1, 2.0)
    image = np.full((48, 64, 3), 90, np.uint8)
    r.image.publish(frame_to_msg(Frame(image, "rgb8", stamp, "cam")))
    assert r.cam.spin_until(lambda: r.node.counts["accepted_routine"] == 1, 5.0)
    assert r.node.flush(5.0) and [i.stamp_ns for i in r.node.store.pending()] == [stamp]
    assert r.node.counts["score_without_frame"] == 0
