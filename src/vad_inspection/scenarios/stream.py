"""A scenario as the timestamped messages a robot would publish, and its truth as a JSON record.

Topics (what a camera driver, tf and a simulator publish): ``/camera/image_raw`` (rgb8 Image, or
CompressedImage on ``/camera/image_raw/compressed``), ``/camera/camera_info``,
``/camera/depth/image_raw`` (32FC1, metres, registered to the image), ``/tf`` (map -> base_link
per frame), ``/tf_static`` (base_link -> camera_optical, once), ``/clock``. The same ordering a
driver gives: clock, tf and camera_info before the image of the same stamp.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..msgs.defaults import new_message
from ..msgs.geometry import matrix_to_transform, model_to_camera_info
from ..msgs.image import Frame, frame_to_compressed, frame_to_msg
from ..msgs.time import header, ns_to_stamp
from .types import Scenario

IMAGE = "/camera/image_raw"
TOPICS = {
    IMAGE: "sensor_msgs/msg/Image",
    IMAGE + "/compressed": "sensor_msgs/msg/CompressedImage",
    "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/depth/image_raw": "sensor_msgs/msg/Image",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/clock": "rosgraph_msgs/msg/Clock",
}


@dataclass(frozen=True)
class Timed:
    """One message to publish or record at ``stamp_ns``."""

    stamp_ns: int
    topic: str
    message: Any


def _tf(parent: str, child: str, matrix: Any, stamp_ns: int, distro: str) -> Any:
    stamped = new_message(
        "geometry_msgs/msg/TransformStamped", distro, header=header(stamp_ns, parent, distro),
        child_frame_id=child, transform=matrix_to_transform(matrix, distro),
    )  # fmt: skip
    return new_message("tf2_msgs/msg/TFMessage", distro, transforms=[stamped])


def messages(
    scan: Scenario,
    *,
    start_ns: int = 1_000_000_000,
    compressed: str = "",
    depth: bool = True,
    distro: str = "jazzy",
    world: str = "map",
    base: str = "base_link",
) -> Iterator[Timed]:
    """Every message of the scenario in time order. ``compressed``: "" (raw) or "jpeg"/"png"."""
    optical = scan.optical_frame
    yield Timed(start_ns, "/tf_static", _tf(base, optical, scan.base_from_optical(), 0, distro))
    for view in scan.views(start_ns):
        t = view.stamp_ns
        yield Timed(t, "/clock", new_message("rosgraph_msgs/msg/Clock", distro,
                                             clock=ns_to_stamp(t, distro)))  # fmt: skip
        yield Timed(t, "/tf", _tf(world, base, view.world_from_base, t, distro))
        yield Timed(t, "/camera/camera_info", model_to_camera_info(scan.camera, t, distro))
        if depth and view.depth_m is not None:
            frame = Frame(view.depth_m, "32FC1", t, optical)
            yield Timed(t, "/camera/depth/image_raw", frame_to_msg(frame, distro))
        frame = Frame(view.image, view.encoding, t, optical)
        if compressed:
            message = frame_to_compressed(frame, compressed, distro=distro)
            yield Timed(t, IMAGE + "/compressed", message)
        else:
            yield Timed(t, IMAGE, frame_to_msg(frame, distro))


def truth_record(
    scan: Scenario, start_ns: int = 1_000_000_000
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The scenario's ground truth as JSON-able data, and the pixel masks by frame stamp (where
    the scenario has them; they go beside it, see the CLI), from one pass over the views."""
    frames, masks = [], {}
    for v in scan.views(start_ns):
        frames.append({
            "stamp_ns": v.stamp_ns,
            "anomalous": v.truth.anomalous,
            "anomalous_px": None if v.truth.mask is None else int(v.truth.mask.sum()),
            "category": v.truth.category,
            "source": v.source,
            "defects": [d.id for d in v.truth.defects],
        })  # fmt: skip
        if v.truth.mask is not None:
            masks[str(v.stamp_ns)] = v.truth.mask
    record = {
        "scenario": scan.summary(),
        "world_frame": "map",
        "defects": [
            {
                "id": d.id,
                "position": list(d.position),
                "area_px": d.area_px,
                "size_m": d.size_m,
                "source": d.source,
            }
            for d in scan.defects
        ],
        "frames": frames,
    }
    return record, masks
