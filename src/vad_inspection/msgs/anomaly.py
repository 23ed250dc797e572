"""Detections, defects, tags and diagnostics <-> their ROS 2 messages (vision_msgs and friends).

What the detector node publishes, as standard messages any ROS 2 tool reads:

- the frame's score: ``vision_msgs/Classification`` with one hypothesis, class ``anomaly``, score
  on the normalised scale (0.5 = the calibrated threshold), the image's header;
- defect regions in the image: ``vision_msgs/Detection2DArray``, a box per region, ``id`` = tag;
- defects in 3-D: ``vision_msgs/Detection3DArray`` (pose and size in the target frame),
  ``geometry_msgs/PoseArray``, and ``visualization_msgs/MarkerArray`` (a box and the tag as text);
- tags: ``diagnostic_msgs/DiagnosticArray``, one status per tag (sightings, first and last seen,
  best score, position), readable with ``ros2 topic echo`` and by the recorder;
- the node's health: ``diagnostic_msgs/DiagnosticArray`` on ``/diagnostics``.

vision_msgs is 4.1.1 on both Humble and Jazzy, so these messages are the same on both (the
field that differs between vision_msgs releases is the 2-D box centre: ``vision_msgs/Pose2D``
since 4.0, ``geometry_msgs/Pose2D`` before; see :mod:`.types`). Every message is built with
defaults for the fields not set (:func:`~.defaults.new_message`), read from the distribution's
own definitions, so a field a later release adds cannot break a build for an older one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..vad.detector import FrameResult
from ..vad.tags import Defect, Tag
from .defaults import new_message
from .time import header

ANOMALY_CLASS = "anomaly"
RAW_CLASS = "anomaly_raw"  # the model's raw score, second in ~/score

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3

# visualization_msgs/Marker types and actions
_CUBE, _TEXT = 1, 9
_ADD, _DELETEALL = 0, 3


def _hypothesis(score: float, distro: str, class_id: str = "anomaly") -> Any:
    return new_message(
        "vision_msgs/msg/ObjectHypothesis", distro, class_id=class_id, score=float(score)
    )


def point_pose(position: Sequence[float], distro: str) -> Any:
    point = new_message("geometry_msgs/msg/Point", distro, x=position[0], y=position[1],
                        z=position[2])  # fmt: skip
    orientation = new_message("geometry_msgs/msg/Quaternion", distro, w=1.0)
    return new_message("geometry_msgs/msg/Pose", distro, position=point, orientation=orientation)


def score_message(result: FrameResult, stamp_ns: int, frame_id: str, distro: str = "jazzy") -> Any:
    """The frame's verdict: normalised score (raw when uncalibrated) as class ``anomaly``, then
    the model's raw score as class ``anomaly_raw``: the normalised one is clipped to [0, 1], so
    clearly normal frames all read 0, and whoever ranks frames (a recorder, an evaluation) needs
    the raw one, which keeps their order."""
    score = result.normalized if result.normalized is not None else result.score
    return new_message(
        "vision_msgs/msg/Classification",
        distro,
        header=header(stamp_ns, frame_id, distro),
        results=[_hypothesis(score, distro), _hypothesis(result.score, distro, RAW_CLASS)],
    )


def detections_2d(
    defects: Sequence[Defect], stamp_ns: int, frame_id: str, distro: str = "jazzy"
) -> Any:
    """A pixel box per defect (centre and size), its peak score, ``id`` = its tag."""
    head = header(stamp_ns, frame_id, distro)
    items = []
    for d in defects:
        x, y, w, h = d.box
        centre = new_message(
            "vision_msgs/msg/Pose2D",
            distro,
            position=new_message("vision_msgs/msg/Point2D", distro, x=x + w / 2, y=y + h / 2),
        )
        bbox = new_message(
            "vision_msgs/msg/BoundingBox2D", distro, center=centre, size_x=float(w), size_y=float(h)
        )
        result = new_message(
            "vision_msgs/msg/ObjectHypothesisWithPose",
            distro,
            hypothesis=_hypothesis(d.score, distro),
        )
        items.append(
            new_message(
                "vision_msgs/msg/Detection2D",
                distro,
                header=head,
                results=[result],
                bbox=bbox,
                id=d.tag,
            )
        )
    return new_message("vision_msgs/msg/Detection2DArray", distro, header=head, detections=items)


def _placed(defects: Sequence[Defect]) -> list[Defect]:
    return [d for d in defects if d.position is not None]


def detections_3d(
    defects: Sequence[Defect], stamp_ns: int, frame_id: str, distro: str = "jazzy"
) -> Any:
    """Pose and metric size of each defect placed in 3-D (in ``frame_id``), ``id`` = tag."""
    head = header(stamp_ns, frame_id, distro)
    items = []
    for d in _placed(defects):
        pose = point_pose(d.position, distro)
        size = d.size or (0.0, 0.0, 0.0)
        bbox = new_message(
            "vision_msgs/msg/BoundingBox3D",
            distro,
            center=pose,
            size=new_message("geometry_msgs/msg/Vector3", distro, x=size[0], y=size[1], z=size[2]),
        )
        with_pose = new_message(
            "geometry_msgs/msg/PoseWithCovariance", distro, pose=point_pose(d.position, distro)
        )
        result = new_message(
            "vision_msgs/msg/ObjectHypothesisWithPose", distro,
            hypothesis=_hypothesis(d.score, distro), pose=with_pose,
        )  # fmt: skip
        items.append(
            new_message(
                "vision_msgs/msg/Detection3D",
                distro,
                header=head,
                results=[result],
                bbox=bbox,
                id=d.tag,
            )
        )
    return new_message("vision_msgs/msg/Detection3DArray", distro, header=head, detections=items)


def defect_poses(
    defects: Sequence[Defect], stamp_ns: int, frame_id: str, distro: str = "jazzy"
) -> Any:
    """The placed defects' positions as a PoseArray (orientation identity)."""
    return new_message(
        "geometry_msgs/msg/PoseArray",
        distro,
        header=header(stamp_ns, frame_id, distro),
        poses=[point_pose(d.position, distro) for d in _placed(defects)],
    )


def _colour(score: float, distro: str) -> Any:
    """Yellow at the threshold to red at the top of the scale; opaque enough to see."""
    red_share = float(np.clip((score - 0.5) * 2.0, 0.0, 1.0))
    return new_message("std_msgs/msg/ColorRGBA", distro, r=1.0, g=1.0 - red_share, b=0.0, a=0.8)


def markers(defects: Sequence[Defect], stamp_ns: int, frame_id: str, distro: str = "jazzy") -> Any:
    """RViz markers: first DELETEALL (so a defect that left the view leaves the display), then per
    placed defect a box of its size and its tag as text above it."""
    head = header(stamp_ns, frame_id, distro)
    items = [new_message("visualization_msgs/msg/Marker", distro, header=head, ns="defects",
                         action=_DELETEALL)]  # fmt: skip
    for i, d in enumerate(_placed(defects)):
        w, h, depth = d.size or (0.05, 0.05, 0.05)
        box = new_message("geometry_msgs/msg/Vector3", distro, x=max(w, 0.01), y=max(h, 0.01),
                          z=max(depth, 0.01))  # fmt: skip
        items.append(
            new_message(
                "visualization_msgs/msg/Marker",
                distro,
                header=head,
                ns="defects",
                id=2 * i,
                type=_CUBE,
                action=_ADD,
                pose=point_pose(d.position, distro),
                scale=box,
                color=_colour(d.score, distro),
            )
        )
        above = (d.position[0], d.position[1], d.position[2] + max(box.z, 0.05))
        text_size = new_message("geometry_msgs/msg/Vector3", distro, z=max(0.05, 0.5 * box.x))
        items.append(
            new_message(
                "visualization_msgs/msg/Marker",
                distro,
                header=head,
                ns="defects",
                id=2 * i + 1,
                type=_TEXT,
                action=_ADD,
                pose=point_pose(above, distro),
                scale=text_size,
                color=new_message("std_msgs/msg/ColorRGBA", distro, r=1.0, g=1.0, b=1.0, a=1.0),
                text=f"{d.tag} {d.score:.2f}",
            )
        )
    return new_message("visualization_msgs/msg/MarkerArray", distro, markers=items)


def _key_values(values: Mapping[str, object], distro: str) -> list[Any]:
    return [
        new_message("diagnostic_msgs/msg/KeyValue", distro, key=str(k), value=str(v))
        for k, v in values.items()
    ]


def status(
    name: str,
    level: int,
    message: str,
    values: Mapping[str, object],
    hardware_id: str = "",
    distro: str = "jazzy",
) -> Any:
    """One diagnostic_msgs/DiagnosticStatus (``level`` OK / WARN / ERROR / STALE)."""
    return new_message(
        "diagnostic_msgs/msg/DiagnosticStatus",
        distro,
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=_key_values(values, distro),
    )


def diagnostic_array(statuses: Sequence[Any], stamp_ns: int, distro: str = "jazzy") -> Any:
    return new_message(
        "diagnostic_msgs/msg/DiagnosticArray",
        distro,
        header=header(stamp_ns, "", distro),
        status=list(statuses),
    )


def tags_message(tags: Sequence[Tag], stamp_ns: int, node: str, distro: str = "jazzy") -> Any:
    """Every tag as one DiagnosticStatus (name = tag) whose values a recorder can parse."""
    statuses = []
    for t in tags:
        values: dict[str, object] = {
            "sightings": t.sightings,
            "first_seen_ns": t.first_seen_ns,
            "last_seen_ns": t.last_seen_ns,
            "best_score": f"{t.best_score:.4f}",
            "last_score": f"{t.last_score:.4f}",
            "frame": t.frame,
        }
        if t.position is not None:
            values.update(zip("xyz", (f"{v:.4f}" for v in t.position), strict=True))
        message = f"seen {t.sightings}x, best {t.best_score:.2f}"
        statuses.append(status(t.tag, WARN, message, values, hardware_id=node, distro=distro))
    return diagnostic_array(statuses, stamp_ns, distro)


def parse_tags(msg: Any) -> dict[str, dict[str, str]]:
    """A tags message back as ``{tag: {key: value}}`` (for tests, the recorder, tools)."""
    return {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}
