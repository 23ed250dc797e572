"""What every node that puts image pixels into the world receives besides the image: the camera's
calibration, its registered depth, and the tf tree; and how such a node reports bad input.

The detector (placing defects) and the hazard map (projecting anomaly maps) both need the same
four subscriptions handled the same way, so they live here once: a bad message is reported
through :class:`Problems` (counted, logged once per cause) and the node goes on.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from ..errors import FrameError
from ..geometry import CameraModel, TransformBuffer
from ..msgs.geometry import camera_info_to_model, tf_message_to_transforms
from ..msgs.image import msg_to_frame
from ..transport import LATCHED, Bus, QoS
from ..transport.qos import TF
from .placement import DepthFrame

NS = 1_000_000_000
TF_STATIC_QOS = LATCHED  # tf2's static broadcaster: reliable, transient local
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class Problems:
    """Bad inputs by cause: counted every time, logged the first time per cause and kind.

    ``kind`` separates reasons under one cause (a defect not placed because camera_info is
    missing, later because a transform is) so a new reason is logged although the cause was.
    """

    def __init__(self, log: Any) -> None:
        self.log = log
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def report(self, cause: str, detail: str, kind: str = "") -> None:
        self.counts[cause] += 1
        if (cause, kind) not in self._logged:
            self._logged.add((cause, kind))
            self.log.warning("%s: %s (further ones counted in /diagnostics)", cause, detail)


class CameraInputs:
    """``camera_info``, ``depth`` (16UC1 mm or 32FC1 m, the last 16 kept), ``/tf`` and
    ``/tf_static``, as received. ``tf`` is the buffer lookups go to."""

    def __init__(self, problems: Problems, depth_units: str = "auto") -> None:
        self.problems = problems
        self.depth_units = depth_units
        self.tf = TransformBuffer()
        self.camera: CameraModel | None = None
        self.depths: deque[DepthFrame] = deque(maxlen=16)

    def subscribe(self, bus: Bus, qos: QoS, use_depth: bool) -> list[Any]:
        """The subscriptions (camera_info and depth at ``qos``, the camera's own)."""
        subs = [
            bus.create_subscription("camera_info", "sensor_msgs/msg/CameraInfo",
                                    self._on_camera_info, qos),
            bus.create_subscription("/tf", "tf2_msgs/msg/TFMessage", self._on_tf, TF),
            bus.create_subscription("/tf_static", "tf2_msgs/msg/TFMessage", self._on_tf_static,
                                    TF_STATIC_QOS),
        ]  # fmt: skip
        if use_depth:
            subs.append(
                bus.create_subscription("depth", "sensor_msgs/msg/Image", self._on_depth, qos)
            )
        return subs

    def reset(self) -> None:
        self.camera = None
        self.depths.clear()

    def depth_for(self, stamp_ns: int, tolerance_s: float) -> tuple[DepthFrame | None, str]:
        """The depth image nearest ``stamp_ns`` within ``tolerance_s``, or None and why not."""
        if not self.depths:
            return None, "no depth image received yet"
        best = min(self.depths, key=lambda d: abs(d.stamp_ns - stamp_ns))
        gap = abs(best.stamp_ns - stamp_ns) / NS
        if gap > tolerance_s:
            return None, (
                f"no depth image near the image's stamp: nearest {gap * 1e3:.0f} ms away "
                f"(depth_tolerance_s {tolerance_s:g})"
            )
        return best, ""

    def _on_camera_info(self, msg: Any) -> None:
        try:
            self.camera = camera_info_to_model(msg)
        except FrameError as error:
            self.problems.report("bad camera_info", str(error))

    def _on_depth(self, msg: Any) -> None:
        try:
            frame = msg_to_frame(msg)
            if frame.encoding not in DEPTH_ENCODINGS:
                raise FrameError(f"depth encoding {frame.encoding!r}; expected 16UC1 or 32FC1")
        except FrameError as error:
            self.problems.report("bad depth image", str(error))
            return
        self.depths.append(DepthFrame(frame.image, frame.stamp_ns, self.depth_units))

    def _on_tf(self, msg: Any, static: bool = False) -> None:
        try:
            for parent, child, matrix, stamp in tf_message_to_transforms(msg):
                self.tf.set_transform(parent, child, matrix, stamp, static=static)
        except FrameError as error:
            self.problems.report("bad transform", str(error))

    def _on_tf_static(self, msg: Any) -> None:
        self._on_tf(msg, static=True)
