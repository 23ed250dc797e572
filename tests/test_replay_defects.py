"""Replay finds defects in 3-D: a bag of the synthetic floor (rendered by ray casting, depth and tf
exact) with its truth beside it, replayed into a model of the clean floor; the report must count
both defects found, within 2 cm, and score defect frames above clean ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scenes3d as s3

from vad_inspection.cli import main
from vad_inspection.msgs.image import Frame, frame_to_msg
from vad_inspection.transport import LATCHED, SENSOR_DATA
from vad_inspection.transport.bag import BagWriter

NS = 1_000_000_000


def write_floor_pass(path: Path) -> None:
    """Two lanes over the floor, one over each defect, with clean stretches between; the truth
    JSON and masks as `vad-inspection sim` writes them."""
    views = [(x, 0.10) for x in np.linspace(0.0, 1.8, 10)] + [
        (x, 0.40) for x in np.linspace(0.0, -1.8, 10)
    ]
    frames, masks = [], {}
    with BagWriter(path) as bag:
        bag.add_topic("/tf_static", "tf2_msgs/msg/TFMessage", LATCHED)
        bag.add_topic("/tf", "tf2_msgs/msg/TFMessage", None)
        for topic in ("/camera/camera_info", "/camera/depth/image_raw", "/camera/image_raw"):
            typename = "sensor_msgs/msg/" + ("CameraInfo" if "info" in topic else "Image")
            bag.add_topic(topic, typename, SENSOR_DATA)
        bag.write("/tf_static", 0, s3.tf_message("base_link", "camera_optical",
                                                  s3.optical_mount(), 0))  # fmt: skip
        for i, (x, y) in enumerate(views, start=1):
            stamp = i * NS // 2
            image, depth, mask = s3.render(float(x), float(y))
            bag.write("/tf", stamp, s3.tf_message("map", "base_link", s3.base_pose(x, y), stamp))
            bag.write("/camera/camera_info", stamp, s3.camera_info(stamp))
            bag.write("/camera/depth/image_raw", stamp,
                      frame_to_msg(Frame(depth, "16UC1", stamp, "camera_optical")))  # fmt: skip
            bag.write("/camera/image_raw", stamp, s3.image_msg(image, stamp))
            frames.append({"stamp_ns": stamp, "anomalous": bool(mask.any()),
                           "category": "defect" if mask.any() else "floor"})  # fmt: skip
            masks[str(stamp)] = mask
    defects = [{"id": f"T{k}", "position": [d.x, d.y, 0.0], "size_m": 2 * d.radius}
               for k, d in enumerate(s3.DEFECTS)]  # fmt: skip
    truth = {"scenario": {"name": "floor"}, "defects": defects, "frames": frames}
    path.with_name(path.name + ".truth.json").write_text(json.dumps(truth))
    np.savez_compressed(path.with_name(path.name + ".masks.npz"), **masks)


@pytest.mark.slow
def test_replay_counts_the_defects_found_and_their_pose_error(tmp_path: Path) -> None:
    bag = tmp_path / "floor"
    write_floor_pass(bag)
    model = s3.fit_floor_model(tmp_path / "floor.vad")
    assert main(["replay", str(bag), "--model", str(model), "-o", str(tmp_path / "r"),
                 "--match-radius", "0.05", "--no-progress"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    figures = report["metrics"]
    assert report["run"]["missed"] == 0 and report["run"]["frames_sent"] == 20
    assert figures["defects_found"] == figures["defects_total"] == 2
    assert figures["pose_error_m"]["p90"] < 0.02  # depth and tf put them within 2 cm
    assert figures["image_auroc"] > 0.9 and figures["pixel_auroc"] > 0.9
    assert figures["dice"] > 0.1 and report["verdict_ok"]  # 64 px maps: blurred regions
