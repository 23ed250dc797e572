"""Detector outputs as vision_msgs / visualization_msgs / diagnostic_msgs, through CDR on both
distributions, read back field by field."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.msgs import anomaly, cdr
from vad_inspection.msgs.defaults import new_message
from vad_inspection.msgs.types import MessageError
from vad_inspection.vad.detector import FrameResult
from vad_inspection.vad.tags import Defect, Tag

PLACED = Defect("D0001", 0.9, (10, 20, 30, 40), (25.0, 40.0), 900, (1.0, 2.0, 0.5),
                (0.2, 0.1, 0.0), "map")  # fmt: skip
FLAT = Defect("D0002", 0.6, (100, 5, 8, 8), (104.0, 9.0), 50, why_not_3d="no camera_info")


def _round_trip(msg, typename: str, distro: str):
    return cdr.deserialize(cdr.serialize(msg, typename, distro), typename, distro)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_score_and_2d_detections(distro: str) -> None:
    result = FrameResult(2.5, 0.8, True, np.zeros((4, 4), np.float32), np.zeros((4, 4), bool), ())
    msg = _round_trip(anomaly.score_message(result, 5_000_000_123, "cam", distro),
                      "vision_msgs/msg/Classification", distro)  # fmt: skip
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 123
    hyp, raw = msg.results
    assert hyp.class_id == "anomaly" and hyp.score == pytest.approx(0.8)
    assert raw.class_id == "anomaly_raw" and raw.score == pytest.approx(2.5)  # keeps the order
    msg = _round_trip(anomaly.detections_2d([PLACED, FLAT], 7, "cam", distro),
                      "vision_msgs/msg/Detection2DArray", distro)  # fmt: skip
    first, second = msg.detections
    assert first.id == "D0001" and second.id == "D0002"
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (25.0, 40.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (30.0, 40.0)
    assert first.results[0].hypothesis.score == pytest.approx(0.9)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_3d_outputs_carry_only_placed_defects(distro: str) -> None:
    msg = _round_trip(anomaly.detections_3d([PLACED, FLAT], 7, "map", distro),
                      "vision_msgs/msg/Detection3DArray", distro)  # fmt: skip
    [det] = msg.detections
    assert det.id == "D0001" and msg.header.frame_id == "map"
    centre = det.bbox.center.position
    assert (centre.x, centre.y, centre.z) == (1.0, 2.0, 0.5)
    assert det.bbox.center.orientation.w == 1.0 and det.bbox.size.x == pytest.approx(0.2)
    poses = _round_trip(anomaly.defect_poses([PLACED, FLAT], 7, "map", distro),
                        "geometry_msgs/msg/PoseArray", distro)  # fmt: skip
    assert len(poses.poses) == 1 and poses.poses[0].position.y == 2.0
    markers = _round_trip(anomaly.markers([PLACED, FLAT], 7, "map", distro),
                          "visualization_msgs/msg/MarkerArray", distro)  # fmt: skip
    kinds = [(m.action, m.type) for m in markers.markers]
    assert kinds == [(3, 0), (0, 1), (0, 9)]  # DELETEALL, a CUBE, its TEXT
    assert markers.markers[2].text.startswith("D0001")


def test_tags_round_trip_as_diagnostics() -> None:
    tag = Tag("D0003", 4, 10, 99, 0.95, 0.7, (1.5, -2.0, 0.0), "map", (0, 0, 1, 1))
    msg = _round_trip(anomaly.tags_message([tag], 100, "/detector"),
                      "diagnostic_msgs/msg/DiagnosticArray", "jazzy")  # fmt: skip
    table = anomaly.parse_tags(msg)
    assert table["D0003"]["sightings"] == "4" and table["D0003"]["x"] == "1.5000"
    assert table["D0003"]["first_seen_ns"] == "10" and table["D0003"]["frame"] == "map"


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_new_message_refuses_unknown_fields_and_defaults_the_rest(distro: str) -> None:
    with pytest.raises(MessageError, match="no field"):
        new_message("vision_msgs/msg/ObjectHypothesis", distro, score=1.0, clas_id="x")
    marker = new_message("visualization_msgs/msg/Marker", distro, text="hi")
    back = _round_trip(marker, "visualization_msgs/msg/Marker", distro)
    assert back.text == "hi" and back.pose.orientation.w == 0.0 and len(back.points) == 0
    info = new_message("sensor_msgs/msg/CameraInfo", distro)
    assert info.k.shape == (9,) and info.k.dtype == np.float64
