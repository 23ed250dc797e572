"""The detector node: camera in; anomaly score, defect regions, tagged 3-D defects and images out.

Inputs (relative names, remapped by the launch): ``image`` (sensor_msgs/Image, or
``image/compressed`` with ``image_type: compressed``), ``camera_info``, ``depth`` (16UC1 mm or
32FC1 m) when ``use_depth``, ``/tf`` and ``/tf_static``. The image QoS is best effort by default so
a camera that publishes RELIABLE cannot stall the node; ``image_reliability: reliable`` to match a
reliable-only publisher. Results are reliable.

Outputs: ``~/score`` (vision_msgs/Classification), ``~/detections`` (Detection2DArray),
``~/defects`` (Detection3DArray in ``target_frame``), ``~/defect_poses`` (PoseArray),
``~/markers`` (MarkerArray), ``~/tags`` (latched, diagnostic_msgs/DiagnosticArray), ``~/mask``
(mono8), ``~/anomaly_map`` (32FC1, 0.5 = threshold), ``~/overlay`` (rgb8), and ``/diagnostics``.
The three images are computed only while someone subscribes. Services: the lifecycle ones and
``~/fit`` (std_srvs/Trigger: learn normal from the next ``fit_frames`` frames, fit, calibrate,
save and swap in).

It never blocks: the subscription callback only parks the newest frame; inference runs on a
worker thread, so timers and services answer during inference; a frame arriving while the worker
is busy replaces the parked one, and the replaced one is counted as dropped. A bad input (unknown
encoding, corrupt JPEG, a size change, NaN depth, a missing transform) is logged once per cause,
counted in diagnostics, answered on ``~/score`` with a Classification that has no result (so a
consumer waiting for that frame knows it was seen and refused), and the node goes on.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FrameError, SetupError, VadError
from ..msgs import anomaly as codec
from ..msgs.defaults import new_message
from ..msgs.image import Frame, compressed_to_frame, frame_to_msg, msg_to_frame, to_rgb
from ..transport import DEFAULT, LATCHED, SENSOR_DATA, Bus, Reliability
from ..transport.params import ParameterError
from ..vad.detector import Detector, FrameResult, load_detector
from ..vad.tags import TagBook
from ..viz import overlay
from .base import LifecycleNode, State, declare_parameters, dynamic_parameters, parameter
from .placement import DepthFrame, PlacementConfig, Placer
from .sensors import CameraInputs, Problems

NS = 1_000_000_000


@dataclass(frozen=True)
class DetectorParams:
    """The detector's ROS parameters (see the README for how each is used)."""

    model: str = parameter(
        "", "model file (.vad) loaded on configure; empty: learn normal first with ~/fit",
        dynamic=True,
    )  # fmt: skip
    threshold: float = parameter(
        0.5, "normalised decision threshold in (0, 1); 0.5 is the model file's calibrated one",
        dynamic=True,
    )  # fmt: skip
    enabled: bool = parameter(True, "score frames (false: keep running, publish nothing)",
                              dynamic=True)  # fmt: skip
    autostart: bool = parameter(False, "configure and activate at start-up")
    image_type: str = parameter("raw", "image input", choices=("raw", "compressed"))
    image_reliability: str = parameter(
        "best_effort", "QoS reliability of the image subscription",
        choices=("best_effort", "reliable"),
    )  # fmt: skip
    use_depth: bool = parameter(False, "place defects in 3-D with the depth image")
    depth_units: str = parameter("auto", "depth pixel units", choices=("auto", "mm", "m"))
    depth_tolerance_s: float = parameter(0.05, "max stamp difference of image and depth (s)")
    target_frame: str = parameter("map", "frame of defect poses and tags")
    plane_frame: str = parameter("", "frame the plane is given in (empty: no plane)")
    plane: list[float] = parameter(
        [0.0, 0.0, 1.0, 0.0], "plane n_x n_y n_z d (n.x + d = 0) in plane_frame"
    )
    tf_tolerance_s: float = parameter(0.1, "how far a transform may be extrapolated (s)")
    tf_wait_s: float = parameter(0.5, "how long a frame waits for its transform still to come (s)")
    tag_radius_m: float = parameter(0.15, "sightings closer than this are one defect (m)")
    min_region_px: int = parameter(16, "smaller defect regions are ignored (pixels)")
    fit_frames: int = parameter(200, "frames ~/fit collects as normal", dynamic=True)
    fit_method: str = parameter(
        "patchcore", "method ~/fit trains", dynamic=True, choices=("patchcore", "padim")
    )
    fit_size: int = parameter(256, "input size of models ~/fit trains (px)", dynamic=True)
    fit_output: str = parameter(
        "", "where ~/fit saves the model (empty: the cache directory)", dynamic=True
    )
    diagnostics_period_s: float = parameter(1.0, "period of /diagnostics (s)")


class DetectorNode(LifecycleNode):
    """See the module docstring. Construct with a :class:`~vad_inspection.transport.Bus`."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.params = declare_parameters(bus, DetectorParams)
        self._dynamic = dynamic_parameters(DetectorParams)
        bus.parameters.check_unused()
        self.detector: Detector | None = None
        self.tags = TagBook(self.params.tag_radius_m)
        self.problems = Problems(self.log)
        self.inputs = CameraInputs(self.problems, self.params.depth_units)
        self._slot: tuple[Any, int] | None = None  # (message, receive time ns)
        self._slot_lock = threading.Condition()
        self._stop = threading.Event()
        self._subscriptions: list[Any] = []
        self._last_size: tuple[int, int] | None = None
        self._fit: list[np.ndarray] | None = None
        self._fitting = False
        self.counts: Counter[str] = Counter()
        self._latency: deque[float] = deque(maxlen=200)
        self._last_diag = (time.monotonic(), 0, 0)
        self._make_publishers()
        self._fit_service = bus.create_service("~/fit", "std_srvs/srv/Trigger", self._on_fit)
        add_hook = getattr(bus.parameters, "add_on_set_callback", None)
        if add_hook is not None:
            add_hook(self._on_parameter)
        self._diag_timer = bus.create_timer(self.params.diagnostics_period_s, self._diagnostics)
        self._worker = threading.Thread(target=self._work, name="detector-worker", daemon=True)
        self._worker.start()
        if self.params.autostart and self.trigger("configure"):
            self.trigger("activate")

    # -- wiring ----------------------------------------------------------------------------------
    def _make_publishers(self) -> None:
        bus = self.bus
        self.pub = {
            "score": bus.create_publisher("~/score", "vision_msgs/msg/Classification", DEFAULT),
            "detections": bus.create_publisher(
                "~/detections", "vision_msgs/msg/Detection2DArray", DEFAULT
            ),
            "defects": bus.create_publisher(
                "~/defects", "vision_msgs/msg/Detection3DArray", DEFAULT
            ),
            "poses": bus.create_publisher("~/defect_poses", "geometry_msgs/msg/PoseArray", DEFAULT),
            "markers": bus.create_publisher(
                "~/markers", "visualization_msgs/msg/MarkerArray", DEFAULT
            ),
            "tags": bus.create_publisher("~/tags", "diagnostic_msgs/msg/DiagnosticArray", LATCHED),
            "mask": bus.create_publisher("~/mask", "sensor_msgs/msg/Image", SENSOR_DATA),
            "anomaly_map": bus.create_publisher(
                "~/anomaly_map", "sensor_msgs/msg/Image", SENSOR_DATA
            ),
            "overlay": bus.create_publisher("~/overlay", "sensor_msgs/msg/Image", SENSOR_DATA),
            "diagnostics": bus.create_publisher(
                "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", DEFAULT
            ),
        }

    def _subscribe(self) -> None:
        p, bus = self.params, self.bus
        reliability = Reliability(p.image_reliability)
        image_qos = replace(SENSOR_DATA, reliability=reliability)
        if p.image_type == "compressed":
            topic, typename = "image/compressed", "sensor_msgs/msg/CompressedImage"
        else:
            topic, typename = "image", "sensor_msgs/msg/Image"
        subs = [
            bus.create_subscription(topic, typename, self._on_image, image_qos),
            *self.inputs.subscribe(bus, image_qos, p.use_depth),
        ]
        self._subscriptions = subs

    # -- lifecycle -------------------------------------------------------------------------------
    def on_configure(self) -> bool:
        p = self.params
        if p.model:
            self.detector = self._load(p.model)
        else:
            self.log.warning("no model file: call ~/fit to learn normal from the camera first")
        self.placer = Placer(
            PlacementConfig(
                target_frame=p.target_frame,
                plane_frame=p.plane_frame,
                plane=tuple(float(v) for v in p.plane),  # type: ignore[arg-type]
                tf_tolerance_ns=int(p.tf_tolerance_s * NS),
                tf_wait_ns=int(p.tf_wait_s * NS),
            ),
            self.inputs.tf,
            self.tags,
        )
        if len(p.plane) != 4:
            raise SetupError(f"parameter 'plane' needs 4 values (n_x n_y n_z d); got {p.plane}")
        self._subscribe()
        return True

    def on_activate(self) -> bool:
        self._publish_tags()
        return True

    def on_deactivate(self) -> bool:
        with self._slot_lock:
            self._slot = None
        return True

    def on_cleanup(self) -> bool:
        for sub in self._subscriptions:
            sub.destroy()
        self._subscriptions = []
        self.detector = None
        self.inputs.reset()
        return True

    def on_shutdown(self) -> bool:
        self.close()
        return True

    def close(self) -> None:
        """Stop the worker (called on shutdown; safe to call twice)."""
        self._stop.set()
        with self._slot_lock:
            self._slot_lock.notify_all()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=5.0)

    def _load(self, path: str) -> Detector:
        """A detector from a file, warmed up; SetupError saying why when the file will not do."""
        detector = load_detector(
            path, threshold=self.params.threshold, min_region_px=self.params.min_region_px
        )
        if not detector.post.calibrated:
            raise SetupError(
                f"{path} has no calibration (fitted with fewer than 2 held-out images): "
                "the node cannot decide what is anomalous; refit with held-out images"
            )
        seconds = detector.warm_up()
        self.log.info("model %s (%s) ready, warm-up %.0f ms", path, detector.name, seconds * 1e3)
        return detector

    # -- runtime parameters ----------------------------------------------------------------------
    def _on_parameter(self, name: str, value: Any) -> None:
        """Apply a runtime change or raise ParameterError (the old value then stays)."""
        if name not in self._dynamic:
            raise ParameterError(f"parameter {name!r} cannot change while the node runs")
        if name == "threshold" and self.detector is not None:
            try:
                self.detector.threshold = float(value)
            except SetupError as error:
                raise ParameterError(str(error)) from None
        elif name == "model" and value and value != self.params.model:
            if self.state in (State.INACTIVE, State.ACTIVE):  # else configure loads it
                try:
                    fresh = self._load(str(value))
                except VadError as error:
                    self.log.error("model %s refused, keeping %s: %s", value, self.params.model,
                                   error)  # fmt: skip
                    raise ParameterError(f"model {value}: {error}") from None
                fresh.threshold = self.params.threshold
                self.detector = fresh  # between frames: the worker reads it once per frame
        elif name == "fit_method" and value not in ("patchcore", "padim"):
            raise ParameterError(f"fit_method {value!r}: choose patchcore or padim")
        self.params = replace(self.params, **{name: value})

    # -- inputs (spin thread: short) -------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        self.counts["in"] += 1
        if not self.active or not self.params.enabled:
            self.counts["ignored_inactive"] += 1
            return
        with self._slot_lock:
            if self._slot is not None:
                self.counts["dropped_busy"] += 1
            self._slot = (msg, time.monotonic_ns())
            self._slot_lock.notify()

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            with self._slot_lock:
                while self._slot is None and not self._stop.is_set():
                    self._slot_lock.wait(0.5)
                if self._stop.is_set():
                    return
                msg, received = self._slot
                self._slot = None
            try:
                self._process(msg, received)
            except Exception as error:  # a bug must show, not kill the worker silently
                self.problems.report("internal error", f"{type(error).__name__}: {error}")
                self.log.exception("processing a frame failed")

    def _decode(self, msg: Any) -> Frame:
        if self.params.image_type == "compressed":
            return compressed_to_frame(msg)
        return msg_to_frame(msg)

    def _refuse(self, msg: Any, cause: str, detail: str) -> None:
        """Count and log the bad frame, and answer it with a score holding no result, so a
        consumer waiting for this frame (a closed-loop replay, a recorder) knows it was seen."""
        self.problems.report(cause, detail)
        head = getattr(msg, "header", None)
        if head is None:
            return
        self.pub["score"].publish(
            new_message("vision_msgs/msg/Classification", self.bus.distro, header=head, results=[])
        )

    def _process(self, msg: Any, received_ns: int) -> None:
        try:
            frame = self._decode(msg)
        except FrameError as error:
            self._refuse(msg, "undecodable image", str(error))
            return
        size = (frame.width, frame.height)
        if self._last_size is not None and size != self._last_size:
            self.problems.report(
                "image size changed", f"from {self._last_size[0]}x{self._last_size[1]} to "
                f"{size[0]}x{size[1]}: scoring at the new size, camera model rescaled",
            )  # fmt: skip
        self._last_size = size
        self._collect(frame)
        detector = self.detector
        if detector is None:
            self.counts["no_model"] += 1
            return
        try:
            result = detector(frame.image, frame.encoding)
        except FrameError as error:
            self._refuse(msg, "unscorable image", str(error))
            return
        depth, why = self._depth_for(frame.stamp_ns)
        defects = self.placer.defects(
            result.regions, size, frame.stamp_ns, frame.frame_id, self.inputs.camera, depth, why
        )
        for defect in defects:
            if defect.position is None and (self.params.use_depth or self.params.plane_frame):
                why = defect.why_not_3d
                self.problems.report("defect not placed in 3-D", why, why.split(":")[0][:40])
        self._publish(frame, result, defects)
        self.counts["out"] += 1
        self._latency.append((time.monotonic_ns() - received_ns) / 1e6)

    def _depth_for(self, stamp_ns: int) -> tuple[DepthFrame | None, str]:
        if not self.params.use_depth:
            return None, ""
        return self.inputs.depth_for(stamp_ns, self.params.depth_tolerance_s)

    # -- outputs ---------------------------------------------------------------------------------
    def _publish(self, frame: Frame, result: FrameResult, defects: list) -> None:
        distro, stamp, camera_frame = self.bus.distro, frame.stamp_ns, frame.frame_id
        target = self.params.target_frame
        pub = self.pub
        pub["score"].publish(codec.score_message(result, stamp, camera_frame, distro))
        pub["detections"].publish(codec.detections_2d(defects, stamp, camera_frame, distro))
        pub["defects"].publish(codec.detections_3d(defects, stamp, target, distro))
        pub["poses"].publish(codec.defect_poses(defects, stamp, target, distro))
        pub["markers"].publish(codec.markers(defects, stamp, target, distro))
        if defects:
            self._publish_tags()
        if pub["mask"].subscription_count:
            mask = result.mask.astype(np.uint8) * 255
            pub["mask"].publish(frame_to_msg(Frame(mask, "mono8", stamp, camera_frame), distro))
        if pub["anomaly_map"].subscription_count:
            heat = np.ascontiguousarray(result.heat, np.float32)
            pub["anomaly_map"].publish(
                frame_to_msg(Frame(heat, "32FC1", stamp, camera_frame), distro)
            )
        if pub["overlay"].subscription_count:
            picture = overlay(to_rgb(frame), result.heat, outline=result.mask)
            pub["overlay"].publish(
                frame_to_msg(Frame(picture, "rgb8", stamp, camera_frame), distro)
            )

    def _publish_tags(self) -> None:
        msg = codec.tags_message(self.tags.tags(), self.bus.now_ns(), self.bus.fqn, self.bus.distro)
        self.pub["tags"].publish(msg)

    def _diagnostics(self) -> None:
        now = time.monotonic()
        last_time, last_in, last_out = self._last_diag
        span = max(now - last_time, 1e-9)
        self._last_diag = (now, self.counts["in"], self.counts["out"])
        latency = sorted(self._latency)
        detector = self.detector
        values: dict[str, object] = {
            "state": self.state.label,
            "model": detector.source if detector else "(none)",
            "method": detector.name if detector else "",
            "threshold": self.params.threshold,
            "enabled": self.params.enabled,
            "rate_in_hz": f"{(self.counts['in'] - last_in) / span:.2f}",
            "rate_out_hz": f"{(self.counts['out'] - last_out) / span:.2f}",
            "latency_p50_ms": f"{latency[len(latency) // 2]:.1f}" if latency else "",
            "frames_in": self.counts["in"],
            "frames_out": self.counts["out"],
            "dropped_busy": self.counts["dropped_busy"],
            "ignored_inactive": self.counts["ignored_inactive"],
            "no_model": self.counts["no_model"],
            "tags": len(self.tags),
        }
        values.update({f"problem: {k}": v for k, v in sorted(self.problems.counts.items())})
        if self.last_error:
            values["last_error"] = self.last_error
        level = codec.OK
        message = f"{self.state.label}, {values['rate_out_hz']} Hz out"
        if self.problems.counts or self.last_error or (self.active and detector is None):
            level = codec.WARN
            message += "; see values for problems"
        status = codec.status(f"{self.bus.fqn}: detector", level, message, values,
                              hardware_id=self.bus.fqn, distro=self.bus.distro)  # fmt: skip
        self.pub["diagnostics"].publish(
            codec.diagnostic_array([status], self.bus.now_ns(), self.bus.distro)
        )

    # -- learning normal on the robot ------------------------------------------------------------
    def _on_fit(self, _request: Any) -> Any:
        def reply(ok: bool, message: str) -> Any:
            return new_message(
                "std_srvs/srv/Trigger_Response", self.bus.distro, success=ok, message=message
            )

        if self._fit is not None or self._fitting:
            have = len(self._fit or ())
            return reply(False, f"already learning ({have}/{self.params.fit_frames} frames)")
        if not self.active:
            return reply(False, f"the node is {self.state.label}: activate it so frames flow")
        self._fit = []
        self.log.info("learning normal: collecting the next %d frames", self.params.fit_frames)
        return reply(True, f"collecting {self.params.fit_frames} frames, then fitting "
                           f"{self.params.fit_method}")  # fmt: skip

    def _collect(self, frame: Frame) -> None:
        if self._fit is None:
            return
        self._fit.append(np.array(frame.image, copy=True))
        if len(self._fit) >= self.params.fit_frames:
            images, self._fit = self._fit, None
            self._fitting = True
            threading.Thread(target=self._fit_and_swap, args=(images,), daemon=True).start()

    def _fit_and_swap(self, images: list[np.ndarray]) -> None:
        from ..pipeline import fit_images, hold_out
        from ..vad.registry import CommonOptions, save_model

        p = self.params
        try:
            start = time.perf_counter()
            train, val = hold_out(images)
            common = CommonOptions(size=p.fit_size)
            model, report = fit_images(p.fit_method, train, val, common)
            path = Path(p.fit_output) if p.fit_output else _default_model_path(self.bus.name)
            save_model(model, path, report.calibration)
            fresh = self._load(str(path))
            fresh.threshold = self.params.threshold
            self.detector = fresh
            self.params = replace(self.params, model=str(path))
            try:  # `ros2 param get model` names the file in use (no reload: the value matches)
                self.bus.parameters.set("model", str(path))
            except ParameterError as error:
                self.log.warning("model parameter not updated: %s", error)
            self.log.info(
                "learnt normal from %d frames (%d held out) in %.1f s: %s swapped in",
                len(train), len(val), time.perf_counter() - start, path,
            )  # fmt: skip
            self.counts["fits"] += 1
        except (VadError, ValueError, OSError) as error:
            self.problems.report("fit failed", str(error))
            self.log.error("~/fit failed: %s", error)
        finally:
            self._fitting = False


def _default_model_path(node: str) -> Path:
    root = Path(os.environ.get("VAD_INSPECTION_CACHE", Path.home() / ".cache" / "vad_inspection"))
    return root / "models" / f"{node}_{time.strftime('%Y%m%d_%H%M%S')}.vad"


def main(argv: Sequence[str] | None = None) -> int:
    """``ros2 run vad_inspection detector`` / ``vad-inspection run detector``."""
    from .runner import run_node

    return run_node(DetectorNode, "detector", argv)
