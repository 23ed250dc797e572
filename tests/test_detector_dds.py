"""The detector node as its own process over Cyclone DDS, driven as a robot would drive it.

`vad-inspection run detector --transport dds` runs in a child process; this process is the camera
driver, tf and the operator: it walks the node through its lifecycle with the lifecycle services
(rmw_cyclonedds' request/reply layout), sets a parameter through the parameter services, streams a
camera flying over the synthetic floor, and checks what comes back over the wire: the defects in
the map frame within 2 cm of where they are, one tag per defect across viewpoints, and a clean
exit on SIGINT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scenes3d as s3

from vad_inspection.msgs.anomaly import parse_tags
from vad_inspection.msgs.defaults import new_message
from vad_inspection.transport import LATCHED, SENSOR_DATA, create_bus

pytest.importorskip("vad_inspection.transport._cyclone", exc_type=ImportError)

NS = 1_000_000_000
WAIT = 30.0
pytestmark = pytest.mark.slow


def _until(condition: Any, bus: Any, timeout: float = WAIT) -> bool:
    return bus.spin_until(condition, timeout)


@pytest.mark.xfail(
    strict=False,
    reason="flaky on 2026-12-01 (2 of 3 CI runs): the last /detector/tags message held three "
    "tags (sightings 1, 2, 2) while every /detector/defects message named only the two right "
    "ones, placed within 2 cm: one sighting left in 2-D got a tag of its own. Suspected cause, "
    "fixed on 2026-12-02: the camera mount's static transform still in flight for the first "
    "frame (placement now waits for a missing chain once); not reproduced here in 6 runs under "
    "load, so kept non-strict until CI confirms; the failure message now carries the log",
)
def test_detector_process_places_and_tags_defects_over_dds(domain: int, tmp_path: Path) -> None:
    model = s3.fit_floor_model(tmp_path / "floor.vad")
    log = tmp_path / "detector.log"
    command = [
        sys.executable, "-m", "vad_inspection.cli", "run", "detector", "--transport", "dds",
        "-p", f"model:={model}", "-p", "plane_frame:=map",
        "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info",
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    try:
        with create_bus("dds", "camera") as bus:
            change = bus.create_client("/detector/change_state", "lifecycle_msgs/srv/ChangeState")
            get = bus.create_client("/detector/get_state", "lifecycle_msgs/srv/GetState")
            assert change.wait_for_service(WAIT) and get.wait_for_service(WAIT), log.read_text()

            def transition(label: str) -> bool:
                request = new_message(
                    "lifecycle_msgs/srv/ChangeState_Request",
                    transition=new_message("lifecycle_msgs/msg/Transition", label=label),
                )
                return change.call(request, WAIT).success

            def state() -> str:
                reply = get.call(new_message("lifecycle_msgs/srv/GetState_Request"), WAIT)
                return reply.current_state.label

            assert state() == "unconfigured"
            assert transition("configure") and transition("activate"), log.read_text()
            assert state() == "active"

            set_params = bus.create_client(
                "/detector/set_parameters", "rcl_interfaces/srv/SetParameters"
            )
            assert set_params.wait_for_service(WAIT)
            value = new_message("rcl_interfaces/msg/ParameterValue", type=3, double_value=0.6)
            request = new_message(
                "rcl_interfaces/srv/SetParameters_Request",
                parameters=[
                    new_message("rcl_interfaces/msg/Parameter", name="threshold", value=value)
                ],
            )
            [result] = set_params.call(request, WAIT).results
            assert result.successful, result.reason

            defects: list[Any] = []
            tags: list[Any] = []
            scores: list[Any] = []
            bus.create_subscription("/detector/defects", "vision_msgs/msg/Detection3DArray",
                                    defects.append)  # fmt: skip
            bus.create_subscription("/detector/score", "vision_msgs/msg/Classification",
                                    scores.append)  # fmt: skip
            bus.create_subscription("/detector/tags", "diagnostic_msgs/msg/DiagnosticArray",
                                    tags.append, LATCHED)  # fmt: skip
            image_pub = bus.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image",
                                             SENSOR_DATA)  # fmt: skip
            info_pub = bus.create_publisher(
                "/camera/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_DATA
            )
            tf_pub = bus.create_publisher("/tf", "tf2_msgs/msg/TFMessage")
            static_pub = bus.create_publisher("/tf_static", "tf2_msgs/msg/TFMessage", LATCHED)
            for pub in (image_pub, info_pub, tf_pub, static_pub):
                assert pub.wait_for_subscribers(1, WAIT), (pub, log.read_text())
            static_pub.publish(s3.tf_message("base_link", "camera_optical", s3.optical_mount(), 0))

            views = [(0.30, 0.10), (0.24, 0.05), (2.0, 0.0), (0.36, 0.16), (-0.25, 0.40),
                     (-0.20, 0.35)]  # fmt: skip
            for i, (x, y) in enumerate(views, start=1):
                stamp = i * NS
                image, _, _ = s3.render(x, y, () if x > 1 else s3.DEFECTS)
                info_pub.publish(s3.camera_info(stamp))
                tf_pub.publish(s3.tf_message("map", "base_link", s3.base_pose(x, y), stamp))
                time.sleep(0.05)  # camera_info and tf ahead of the image, as a driver's would be
                image_pub.publish(s3.image_msg(image, stamp))
                assert _until(lambda i=i: len(scores) >= i, bus), log.read_text()
            assert _until(lambda: len(defects) == len(views), bus)

            def sightings() -> list[int]:
                return sorted(int(t["sightings"]) for t in parse_tags(tags[-1]).values())

            assert _until(lambda: bool(tags) and sum(sightings()) == 5, bus), (
                tags[-1:],
                log.read_text(),
            )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
    text = log.read_text()
    assert code == 0, text
    assert [s.header.stamp.sec for s in scores] == list(range(1, len(views) + 1))
    clean = views.index((2.0, 0.0))
    assert (
        scores[clean].results[0].score
        < 0.5
        < min(s.results[0].score for k, s in enumerate(scores) if k != clean)
    )
    assert not defects[clean].detections
    truths = {(d.x, d.y) for d in s3.DEFECTS}
    seen: dict[str, set[tuple[float, float]]] = {}
    for msg in defects:
        assert msg.header.frame_id == "map"
        for det in msg.detections:
            p = det.bbox.center.position
            nearest = min(truths, key=lambda t: np.hypot(t[0] - p.x, t[1] - p.y))
            assert np.hypot(nearest[0] - p.x, nearest[1] - p.y) < 0.02, (det.id, p)
            seen.setdefault(det.id, set()).add(nearest)
    assert len(seen) == 2 and all(len(places) == 1 for places in seen.values())
    assert sightings() == [2, 3], text  # five sightings, two defects; the log says why not
