"""The detector node on the local bus: lifecycle, outputs, runtime changes, latest-only dropping,
bad inputs, 3-D placement and tags on a scene with known geometry, learning normal on the robot.

The node runs on its own bus (its callbacks spun by a thread, inference on its worker); a second
bus plays the camera and the observer, as separate nodes would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scenes3d as s3
from scenes import scenes

from vad_inspection.msgs import cdr
from vad_inspection.msgs.anomaly import parse_tags
from vad_inspection.msgs.defaults import new_message
from vad_inspection.msgs.image import Frame, frame_to_compressed, frame_to_msg, msg_to_frame
from vad_inspection.msgs.time import stamp_to_ns
from vad_inspection.nodes.base import State
from vad_inspection.nodes.detector import DetectorNode
from vad_inspection.transport import LATCHED, SENSOR_DATA, ParameterError, QoS, create_bus
from vad_inspection.transport.local import LocalGraph
from vad_inspection.vad.calibration import from_normal_scores
from vad_inspection.vad.registry import CommonOptions, create_model, save_model

NS = 1_000_000_000
SIZE = 64


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAD_INSPECTION_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def floor_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PatchCore fitted on clean views of the synthetic floor (RGB, 128 px frames, 64 px input)."""
    return s3.fit_floor_model(tmp_path_factory.mktemp("m") / "floor.vad", SIZE)


@pytest.fixture(scope="module")
def stripes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another valid model (of other scenes), for hot swapping."""
    images, _, _ = scenes(0, SIZE, 24)
    model = create_model("patchcore", CommonOptions(size=SIZE), coreset_ratio=0.1)
    model.fit(images[:20])
    calibration = from_normal_scores(model.predict(images[20:]).scores)
    return save_model(model, tmp_path_factory.mktemp("m") / "stripes.vad", calibration)


class Rig:
    """A detector node spun by a thread, and a camera/observer bus on the same graph."""

    def __init__(self, **parameters: Any) -> None:
        self.graph = LocalGraph()
        self.bus = create_bus("local", "detector", graph=self.graph, parameters=parameters)
        self.node = DetectorNode(self.bus)
        self.cam = create_bus("local", "camera", graph=self.graph)
        self.got: dict[str, list[Any]] = {}
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        self.image_pub = self.cam.create_publisher("/image", "sensor_msgs/msg/Image",
                                                   SENSOR_DATA)  # fmt: skip
        self.info_pub = self.cam.create_publisher(
            "/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_DATA
        )
        self.tf_pub = self.cam.create_publisher("/tf", "tf2_msgs/msg/TFMessage")
        self.tf_static_pub = self.cam.create_publisher("/tf_static", "tf2_msgs/msg/TFMessage",
                                                       LATCHED)  # fmt: skip

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.bus.spin_once(0.02)

    def listen(self, topic: str, typename: str, qos: Any = None) -> list[Any]:
        box: list[Any] = []
        self.got[topic] = box
        self.cam.create_subscription(topic, typename, box.append, qos)
        return box

    def pump(self, until: Any, timeout: float = 10.0) -> bool:
        return self.cam.spin_until(until, timeout)

    def call(self, name: str, srvtype: str, **request: Any) -> Any:
        client = self.cam.create_client(name, srvtype)
        assert client.wait_for_service(5.0)
        return client.call(new_message(f"{srvtype}_Request", **request), timeout=10.0)

    def change(self, label: str) -> bool:
        transition = new_message("lifecycle_msgs/msg/Transition", label=label)
        return self.call("/detector/change_state", "lifecycle_msgs/srv/ChangeState",
                         transition=transition).success  # fmt: skip

    def state(self) -> str:
        response = self.call("/detector/get_state", "lifecycle_msgs/srv/GetState")
        return response.current_state.label

    def close(self) -> None:
        self._stop.set()
        self._spinner.join(5)
        self.node.close()
        self.cam.shutdown()
        self.bus.shutdown()


@pytest.fixture
def rig_factory() -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(**parameters: Any) -> Rig:
        rigs.append(Rig(**parameters))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def test_lifecycle_over_the_services_and_a_missing_model_file(
    rig_factory: Any, floor_model: Path, tmp_path: Path
) -> None:
    rig = rig_factory(model=str(tmp_path / "missing.vad"))
    events = rig.listen("/detector/transition_event", "lifecycle_msgs/msg/TransitionEvent",
                        QoS(depth=50))  # fmt: skip
    assert rig.state() == "unconfigured"
    assert rig.change("activate") is False  # not a transition from unconfigured
    assert rig.change("configure") is False
    assert rig.state() == "unconfigured"
    assert "missing.vad does not exist" in rig.node.last_error
    rig.bus.parameters.set("model", str(floor_model))  # accepted: unconfigured, loaded on configure
    assert rig.change("configure") and rig.state() == "inactive"
    assert rig.change("activate") and rig.state() == "active"
    assert rig.change("deactivate") and rig.state() == "inactive"
    assert rig.change("cleanup") and rig.state() == "unconfigured"
    assert rig.node.detector is None
    rig.pump(lambda: len(events) >= 10)
    goals = [e.goal_state.label for e in events]
    assert goals[:4] == ["configuring", "unconfigured", "configuring", "inactive"]
    transitions = rig.call("/detector/get_available_transitions",
                           "lifecycle_msgs/srv/GetAvailableTransitions")  # fmt: skip
    assert {t.transition.label for t in transitions.available_transitions} == {
        "configure", "shutdown"}  # fmt: skip


def test_scores_regions_and_images_only_when_someone_listens(
    rig_factory: Any, floor_model: Path
) -> None:
    rig = rig_factory(model=str(floor_model), autostart=True)
    assert rig.node.state is State.ACTIVE
    scores = rig.listen("/detector/score", "vision_msgs/msg/Classification")
    detections = rig.listen("/detector/detections", "vision_msgs/msg/Detection2DArray")
    clean, _, _ = s3.render(2.0, 0.0, ())
    broken, _, truth = s3.render(0.3, 0.1)
    rig.image_pub.publish(s3.image_msg(clean, 1 * NS))
    rig.pump(lambda: len(scores) == 1)
    rig.image_pub.publish(s3.image_msg(broken, 2 * NS))
    rig.pump(lambda: len(scores) == 2)
    assert scores[0].results[0].class_id == "anomaly"
    assert scores[0].results[0].score < 0.5 < scores[1].results[0].score
    assert scores[1].header.stamp.sec == 2 and scores[1].header.frame_id == "camera_optical"
    rig.pump(lambda: len(detections) == 2)
    assert not detections[0].detections
    [found] = detections[1].detections
    ys, xs = np.nonzero(truth)
    assert abs(found.bbox.center.position.x - xs.mean()) < 8
    assert abs(found.bbox.center.position.y - ys.mean()) < 8
    assert found.id.startswith("D")
    assert rig.node.pub["overlay"].published == 0  # nobody listened: not computed
    overlays = rig.listen("/detector/overlay", "sensor_msgs/msg/Image", SENSOR_DATA)
    masks = rig.listen("/detector/mask", "sensor_msgs/msg/Image", SENSOR_DATA)
    rig.image_pub.publish(s3.image_msg(broken, 3 * NS))
    rig.pump(lambda: overlays and masks)
    overlay = msg_to_frame(overlays[0])
    mask = msg_to_frame(masks[0]).image > 0
    assert overlay.encoding == "rgb8" and overlay.image.shape == (s3.HEIGHT, s3.WIDTH, 3)
    assert (mask & truth).sum() > 0.8 * truth.sum()
    assert rig.node.pub["anomaly_map"].published == 0


def test_runtime_threshold_model_swap_and_enabled(
    rig_factory: Any, floor_model: Path, stripes_model: Path, tmp_path: Path
) -> None:
    rig = rig_factory(model=str(floor_model), autostart=True)
    rig.bus.parameters.set("threshold", 0.9)
    assert rig.node.detector.threshold == 0.9
    with pytest.raises(ParameterError, match="outside"):
        rig.bus.parameters.set("threshold", 1.5)
    with pytest.raises(ParameterError, match="read-only"):
        rig.bus.parameters.set("image_type", "compressed")
    bad = tmp_path / "bad.vad"
    bad.write_bytes(b"PK\x03\x04 truncated")
    old = rig.node.detector
    with pytest.raises(ParameterError, match=r"bad\.vad"):
        rig.bus.parameters.set("model", str(bad))
    assert rig.node.detector is old and rig.bus.parameters.get("model") == str(floor_model)
    rig.bus.parameters.set("model", str(stripes_model))
    assert rig.node.detector is not old and rig.node.detector.source == str(stripes_model)
    assert rig.node.detector.threshold == 0.9  # the runtime threshold survives the swap
    scores = rig.listen("/detector/score", "vision_msgs/msg/Classification")
    rig.bus.parameters.set("enabled", False)
    rig.image_pub.publish(s3.image_msg(s3.render(2.0, 0.0, ())[0], NS))
    assert not rig.pump(lambda: bool(scores), timeout=0.5)
    assert rig.node.counts["ignored_inactive"] == 1


def test_only_the_latest_frame_waits_and_the_rest_are_counted(
    rig_factory: Any, floor_model: Path
) -> None:
    rig = rig_factory(model=str(floor_model), autostart=True)
    gate, started = threading.Event(), threading.Event()
    real = rig.node.detector

    class Slow:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def __call__(self, image: np.ndarray, encoding: str | None = None) -> Any:
            started.set()
            gate.wait(10)
            return real(image, encoding)

    rig.node.detector = Slow()
    scores = rig.listen("/detector/score", "vision_msgs/msg/Classification")
    clean = s3.render(2.0, 0.0, ())[0]
    rig.image_pub.publish(s3.image_msg(clean, 1 * NS))
    assert started.wait(5)
    for i in range(2, 10):  # arrive while the first is being scored
        rig.image_pub.publish(s3.image_msg(clean, i * NS))
        rig.pump(lambda i=i: rig.node.counts["in"] == i)  # (the QoS depth of 5 would drop some)
    started.clear()
    gate.set()
    rig.pump(lambda: len(scores) == 2)
    assert [s.header.stamp.sec for s in scores] == [1, 9]  # the first and the newest
    assert rig.node.counts["dropped_busy"] == 7
    diagnostics = rig.listen("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
    rig.pump(lambda: bool(diagnostics), timeout=3)
    values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
    assert values["dropped_busy"] == "7" and values["state"] == "active"


def test_bad_inputs_are_counted_once_logged_and_the_node_goes_on(
    rig_factory: Any, floor_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_factory(model=str(floor_model), autostart=True, plane_frame="map")
    scores = rig.listen("/detector/score", "vision_msgs/msg/Classification")
    broken = s3.render(0.3, 0.1)[0]
    odd = s3.image_msg(broken, NS)
    odd.encoding = "yuv422_weird"
    rig.image_pub.publish(odd)
    rig.pump(lambda: len(scores) == 1)  # one at a time: a busy worker keeps only the newest
    rig.image_pub.publish(odd)
    rig.pump(lambda: rig.node.problems.counts["undecodable image"] == 2 and len(scores) == 2)
    # refused frames are answered with an empty result, so a waiting consumer knows
    assert [(stamp_to_ns(m.header.stamp), list(m.results)) for m in scores] == [(NS, []), (NS, [])]
    rig.image_pub.publish(s3.image_msg(broken[:100, :120], 2 * NS))  # size change mid-stream
    rig.pump(lambda: len(scores) == 3)
    rig.image_pub.publish(s3.image_msg(broken, 3 * NS))
    rig.pump(lambda: len(scores) == 4)
    assert all([r.class_id for r in m.results] == ["anomaly", "anomaly_raw"] for m in scores[2:])
    counts = rig.node.problems.counts
    assert counts["image size changed"] == 1
    assert counts["defect not placed in 3-D"] >= 1  # no camera_info: 2-D goes on, 3-D says why
    assert "no camera_info received yet" in caplog.text
    assert caplog.text.count("undecodable image") == 1  # logged once, counted twice
    rig.info_pub.publish(s3.camera_info())
    rig.pump(lambda: rig.node.inputs.camera is not None)
    rig.image_pub.publish(s3.image_msg(broken, 4 * NS))
    rig.pump(lambda: len(scores) == 5)
    assert "TransformUnavailable" in caplog.text or "unknown frame" in caplog.text.lower()


def test_corrupt_compressed_frames_and_nan_depth(
    rig_factory: Any, floor_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_factory(model=str(floor_model), autostart=True, image_type="compressed",
                      use_depth=True)  # fmt: skip
    pub = rig.cam.create_publisher("/image/compressed",
                                   "sensor_msgs/msg/CompressedImage", SENSOR_DATA)  # fmt: skip
    depth_pub = rig.cam.create_publisher("/depth", "sensor_msgs/msg/Image", SENSOR_DATA)
    scores = rig.listen("/detector/score", "vision_msgs/msg/Classification")
    broken = s3.render(0.3, 0.1)[0]
    good = frame_to_compressed(Frame(broken, "rgb8", 2 * NS, "camera_optical"), "png")
    corrupt = frame_to_compressed(Frame(broken, "rgb8", NS, "camera_optical"), "jpeg")
    corrupt.data = corrupt.data[: len(corrupt.data) // 3]
    rig.info_pub.publish(s3.camera_info())
    nan = np.full((s3.HEIGHT, s3.WIDTH), np.nan, np.float32)
    depth_pub.publish(frame_to_msg(Frame(nan, "32FC1", 2 * NS, "camera_optical")))
    rig.pump(lambda: rig.node.inputs.camera is not None and rig.node.inputs.depths)
    pub.publish(corrupt)
    rig.pump(lambda: rig.node.problems.counts["undecodable image"] == 1 and len(scores) == 1)
    assert not scores[0].results  # refused, answered empty
    pub.publish(good)
    rig.pump(lambda: len(scores) == 2)
    assert scores[1].results[0].score > 0.5
    assert rig.node.problems.counts["defect not placed in 3-D"] >= 1
    assert "no valid depth in the region" in caplog.text


@pytest.mark.parametrize("how", ["plane", "depth"])
def test_defects_land_where_they_are_and_keep_their_tags_across_viewpoints(
    rig_factory: Any, floor_model: Path, how: str
) -> None:
    params: dict[str, Any] = {"model": str(floor_model), "autostart": True}
    params.update({"plane_frame": "map"} if how == "plane" else {"use_depth": True})
    rig = rig_factory(**params)
    depth_pub = rig.cam.create_publisher("/depth", "sensor_msgs/msg/Image", SENSOR_DATA)
    defects = rig.listen("/detector/defects", "vision_msgs/msg/Detection3DArray")
    tags = rig.listen("/detector/tags", "diagnostic_msgs/msg/DiagnosticArray", LATCHED)
    rig.info_pub.publish(s3.camera_info())
    rig.tf_static_pub.publish(s3.tf_message("base_link", "camera_optical", s3.optical_mount(), 0))
    views = [(0.30, 0.10), (0.24, 0.05), (0.36, 0.16), (-0.25, 0.40), (-0.20, 0.35)]
    for i, (x, y) in enumerate(views, start=1):
        stamp = i * NS
        image, depth, _ = s3.render(x, y)
        rig.tf_pub.publish(s3.tf_message("map", "base_link", s3.base_pose(x, y), stamp))
        depth_pub.publish(frame_to_msg(Frame(depth, "16UC1", stamp, "camera_optical")))
        rig.pump(lambda n=rig.node.inputs: n.camera is not None and "map" in n.tf.frames())
        rig.pump(lambda s=stamp, n=rig.node.inputs: bool(n.depths) and n.depths[-1].stamp_ns == s)
        rig.image_pub.publish(s3.image_msg(image, stamp))
        rig.pump(lambda i=i: len(defects) == i)
    truths = {(d.x, d.y) for d in s3.DEFECTS}
    seen: dict[str, list[tuple[float, float]]] = {}
    for msg in defects:
        assert msg.header.frame_id == "map"
        [det] = msg.detections
        p = det.bbox.center.position
        nearest = min(truths, key=lambda t: np.hypot(t[0] - p.x, t[1] - p.y))
        assert np.hypot(nearest[0] - p.x, nearest[1] - p.y) < 0.02  # within 2 cm
        assert abs(p.z) < 0.02
        seen.setdefault(det.id, []).append(nearest)
    assert len(seen) == 2  # two defects, one tag each, across five viewpoints
    assert all(len(set(places)) == 1 for places in seen.values())

    def sightings() -> list[int]:
        return sorted(int(t["sightings"]) for t in parse_tags(tags[-1]).values())

    rig.pump(lambda: bool(tags) and sum(sightings()) == 5)  # the last tags message
    assert sightings() == [2, 3]  # five sightings, two defects


def test_fit_service_learns_normal_from_the_camera_and_swaps_the_model_in(
    rig_factory: Any, tmp_path: Path
) -> None:
    out = tmp_path / "learnt.vad"
    rig = rig_factory(autostart=True, fit_frames=32, fit_size=SIZE, fit_output=str(out))
    assert rig.node.state is State.ACTIVE and rig.node.detector is None
    reply = rig.call("/detector/fit", "std_srvs/srv/Trigger")
    assert reply.success and "32 frames" in reply.message
    again = rig.call("/detector/fit", "std_srvs/srv/Trigger")
    assert not again.success and "already learning" in again.message
    for i, image in enumerate(s3.clean_views(32, seed=3), start=1):
        rig.image_pub.publish(s3.image_msg(image, i * NS))
        rig.pump(lambda i=i: rig.node.counts["in"] == i)
        time.sleep(0.01)  # let the worker take each frame (the slot keeps only the newest)
    rig.pump(lambda: rig.node.detector is not None, timeout=60)
    assert out.is_file() and rig.node.detector.source == str(out)
    assert rig.bus.parameters.get("model") == str(out)
    scores = rig.listen("/detector/score", "vision_msgs/msg/Classification")
    rig.image_pub.publish(s3.image_msg(s3.render(2.0, 0.0, ())[0], 100 * NS))
    rig.pump(lambda: len(scores) == 1)
    rig.image_pub.publish(s3.image_msg(s3.render(0.3, 0.1)[0], 101 * NS))
    rig.pump(lambda: len(scores) == 2)
    # 26 frames at 64 px with random weights learn a weak model: it must rank, not necessarily flag
    assert scores[1].results[0].score > scores[0].results[0].score


def test_cdr_of_every_output_decodes_on_humble_too(floor_model: Path) -> None:
    """The node's messages are built per distro; a Humble bus gets Humble's definitions."""
    graph = LocalGraph()
    bus = create_bus("local", "detector", graph=graph, distro="humble",
                     parameters={"model": str(floor_model), "autostart": True})  # fmt: skip
    try:
        node = DetectorNode(bus)
        assert node.state is State.ACTIVE
        msg = node._state_msg(State.ACTIVE)
        assert cdr.deserialize(cdr.serialize(msg, "lifecycle_msgs/msg/State", "humble"),
                               "lifecycle_msgs/msg/State", "humble").label == "active"  # fmt: skip
        node.close()
    finally:
        bus.shutdown()
