"""The hazard-map node: the detector's anomaly maps, projected into a map-frame grid over many
frames, as a Nav2 occupancy grid; and the landing sites (or stand-off points) it leaves clear.

Inputs: the detector's ``~/anomaly_map`` (32FC1, 0.5 = threshold; ``anomaly_map_topic``),
``camera_info``, ``/tf`` and ``/tf_static`` (the camera's pose in ``map_frame`` at each map's
stamp), and with ``use_depth`` the registered ``depth`` image; without depth each pixel's ray meets
the ``plane`` (``n_x n_y n_z d`` in ``map_frame``: the ground, a wall). The grid lies in the
xy plane of ``origin`` (a pose in ``map_frame``): on the ground for a rover or an orbiter, on the
wall or the part's surface for a drone along a wall or an arm. Evidence per cell is
accumulated with :class:`~vad_inspection.geometry.hazard.HazardGrid` (soft evidence, a half-life).

Outputs every ``publish_period_s`` (reliable, transient local, as Nav2's map server offers its
map, so a costmap that starts later still gets it): ``~/grid`` (nav_msgs/OccupancyGrid with
Nav2's values: -1 unknown, 0 free, 100 lethal, 1-99 scaled; a static or obstacle layer takes it
as it is), ``~/confidence`` and ``~/seen`` (the same grid geometry, 0-100: how much evidence, how
many frames saw each cell), ``~/landing_sites`` (geometry_msgs/PoseArray, best first),
``~/landing_markers`` (MarkerArray), ``~/landing_scores`` (DiagnosticArray with each site's
figures), and ``/diagnostics``. A map that cannot be placed (no camera_info yet, no transform at
its stamp, a wrong encoding) is counted and logged once per cause, and the node goes on.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import FrameError, SetupError
from ..geometry import (
    GeometryError,
    TransformNotYet,
    TransformUnavailable,
    axis_angle_matrix,
    make_transform,
)
from ..geometry.hazard import (
    HazardConfig,
    HazardGrid,
    auto_stride,
    project_to_plane,
    project_with_depth,
)
from ..geometry.landing import Site, rank_sites
from ..geometry.locate import depth_image
from ..msgs.anomaly import diagnostic_array, status
from ..msgs.geometry import grid_to_msg
from ..msgs.hazard import site_markers, site_poses, site_scores
from ..msgs.image import Frame, msg_to_frame
from ..transport import DEFAULT, LATCHED, SENSOR_DATA, Bus
from .base import LifecycleNode, declare_parameters, parameter
from .sensors import CameraInputs, Problems

NS = 1_000_000_000
GRID = "nav_msgs/msg/OccupancyGrid"
MAP_DEPTH = 50


@dataclass(frozen=True)
class HazardParams:
    anomaly_map_topic: str = parameter("/detector/anomaly_map", "the detector's anomaly maps")
    map_frame: str = parameter("map", "frame of the grid (and of the plane)")
    resolution: float = parameter(0.5, "cell size (m)")
    origin: list[float] = parameter(
        [-50.0, -50.0, 0.0, 0.0, 0.0, 0.0],
        "pose of cell (0, 0)'s corner in map_frame: x y z (m) roll pitch yaw (rad)",
    )
    width_m: float = parameter(100.0, "extent along the origin's x (m)")
    height_m: float = parameter(100.0, "extent along the origin's y (m)")
    plane: list[float] = parameter([0.0, 0.0, 1.0, 0.0], "surface n_x n_y n_z d in map_frame")
    use_depth: bool = parameter(False, "place pixels by the registered depth image")
    depth_units: str = parameter("auto", "depth pixel units", choices=("auto", "mm", "m"))
    depth_tolerance_s: float = parameter(0.05, "max stamp difference of map and depth (s)")
    stride_px: int = parameter(0, "project every stride-th pixel; 0: samples half a cell apart")
    max_range_m: float = parameter(0.0, "ignore ground farther than this (m); 0: no limit")
    tf_tolerance_s: float = parameter(0.1, "how far a transform may be extrapolated (s)")
    tf_wait_s: float = parameter(1.0, "how long a map waits for a transform still to come (s)")
    threshold: float = parameter(0.5, "anomaly map value at the detector's threshold")
    softness: float = parameter(0.1, "width of the soft step around the threshold")
    prior: float = parameter(2.0, "frames of evidence before a cell is half confident")
    half_life_s: float = parameter(0.0, "evidence halves after this long (s); 0: never")
    min_confidence: float = parameter(0.5, "below this confidence a cell is unknown (-1)")
    free_probability: float = parameter(0.1, "anomaly probability at or below: free (0)")
    lethal_probability: float = parameter(0.9, "anomaly probability at or above: lethal (100)")
    footprint_radius_m: float = parameter(5.0, "landing or stand-off footprint radius (m)")
    site_max_anomaly: float = parameter(0.3, "most anomaly probability a site's cells may have")
    sites: int = parameter(5, "landing sites published, best first")
    publish_period_s: float = parameter(1.0, "period of the grids and sites (s)")
    autostart: bool = parameter(False, "configure and activate at start-up")


class HazardNode(LifecycleNode):
    """See the module docstring. Construct with a :class:`~vad_inspection.transport.Bus`."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.params = declare_parameters(bus, HazardParams)
        bus.parameters.check_unused()
        self.problems = Problems(self.log)
        self.inputs = CameraInputs(self.problems, self.params.depth_units)
        self.counts: Counter[str] = Counter()
        self.grid: HazardGrid | None = None
        self.sites: list[Site] = []
        self._lock = threading.Lock()
        self._subs: list[Any] = []
        self._waiting: deque[tuple[Frame, float]] = deque(maxlen=100)  # maps waiting for tf
        pub = bus.create_publisher
        self._pubs = {
            "grid": pub("~/grid", GRID, LATCHED),
            "confidence": pub("~/confidence", GRID, LATCHED),
            "seen": pub("~/seen", GRID, LATCHED),
            "sites": pub("~/landing_sites", "geometry_msgs/msg/PoseArray", LATCHED),
            "markers": pub("~/landing_markers", "visualization_msgs/msg/MarkerArray", LATCHED),
            "scores": pub("~/landing_scores", "diagnostic_msgs/msg/DiagnosticArray", LATCHED),
            "diagnostics": pub("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", DEFAULT),
        }
        self._timer = bus.create_timer(self.params.publish_period_s, self.publish)
        if self.params.autostart and self.trigger("configure"):
            self.trigger("activate")

    def on_configure(self) -> bool:
        p = self.params
        if len(p.plane) != 4 or not np.linalg.norm(p.plane[:3]) > 0:
            raise SetupError(f"parameter 'plane' needs n_x n_y n_z d with a normal; got {p.plane}")
        rows, cols = round(p.height_m / p.resolution), round(p.width_m / p.resolution)
        if p.resolution <= 0 or rows <= 0 or cols <= 0 or rows * cols > 25_000_000:
            raise SetupError(
                f"a grid of {p.width_m} x {p.height_m} m at {p.resolution} m: {cols} x {rows} "
                "cells; give a positive resolution and extent (at most 25 million cells)"
            )
        if p.stride_px < 0 or p.sites < 0 or p.footprint_radius_m <= 0:
            raise SetupError("stride_px >= 0, sites >= 0 and footprint_radius_m > 0, please")
        try:
            config = HazardConfig(
                threshold=p.threshold, softness=p.softness, prior=p.prior,
                half_life_s=p.half_life_s, min_confidence=p.min_confidence,
                free_probability=p.free_probability, lethal_probability=p.lethal_probability,
            )  # fmt: skip
        except GeometryError as error:
            raise SetupError(str(error)) from None
        if len(p.origin) != 6:
            raise SetupError(f"parameter 'origin' needs x y z roll pitch yaw; got {p.origin}")
        origin = pose_from_xyz_rpy(*p.origin)
        self.grid = HazardGrid(rows, cols, p.resolution, origin, p.map_frame, config)
        self.log.info("hazard grid %d x %d cells of %g m in %s", cols, rows, p.resolution,
                      p.map_frame)  # fmt: skip
        return True

    def on_activate(self) -> bool:
        p = self.params
        self._subs = [
            # a deep queue: publishing the grids takes a while on a large map, and a map dropped
            # meanwhile is evidence lost (best effort still, so a slow node never stalls others)
            self.bus.create_subscription(p.anomaly_map_topic, "sensor_msgs/msg/Image",
                                         self._on_map, replace(SENSOR_DATA, depth=MAP_DEPTH)),
            *self.inputs.subscribe(self.bus, SENSOR_DATA, p.use_depth),
        ]  # fmt: skip
        return True

    def on_deactivate(self) -> bool:
        for sub in self._subs:
            sub.destroy()
        self._subs = []
        return True

    def on_cleanup(self) -> bool:
        self.close()
        return True

    def on_shutdown(self) -> bool:
        self.close()
        return True

    def close(self) -> None:
        """Drop the grid (the runner calls this on the way out; nothing is on disk)."""
        with self._lock:
            self.grid = None
        self.sites = []
        self.inputs.reset()

    # -- input -----------------------------------------------------------------------------------
    def _on_map(self, msg: Any) -> None:
        self.counts["maps"] += 1
        try:
            frame = msg_to_frame(msg)
            if frame.encoding != "32FC1" or frame.image.ndim != 2:
                raise FrameError(f"anomaly map encoding {frame.encoding!r}; expected 32FC1")
        except FrameError as error:
            self.problems.report("bad anomaly map", str(error))
            return
        self._retry_waiting()
        self._place(frame, time.monotonic())

    def _retry_waiting(self) -> None:
        """Maps that waited for their transform: placed if it came, dropped after ``tf_wait_s``
        (tf2's message filter does the same: tf is often a frame behind the images)."""
        waiting, self._waiting = self._waiting, deque()
        for frame, since in waiting:
            self._place(frame, since)

    def _pose(self, frame: Frame, camera_frame: str, waited: float) -> np.ndarray:
        """The camera's pose at the map's stamp. While the map may still wait, only a transform
        bracketing the stamp will do (an orbiter moves 160 m in the 100 ms a tolerance allows);
        past that, or for a stamp older than the buffer, ``tf_tolerance_s`` applies."""
        p, tf = self.params, self.inputs.tf
        source = frame.frame_id or camera_frame
        tolerance = round(p.tf_tolerance_s * NS)
        if waited >= p.tf_wait_s:
            return tf.lookup(p.map_frame, source, frame.stamp_ns, tolerance)
        try:
            return tf.lookup(p.map_frame, source, frame.stamp_ns, 0)
        except TransformNotYet:
            raise
        except TransformUnavailable:
            return tf.lookup(p.map_frame, source, frame.stamp_ns, tolerance)

    def _place(self, frame: Frame, since: float) -> None:
        p = self.params
        camera = self.inputs.camera
        if camera is None:
            self.problems.report("map not placed", "no camera_info received yet", "camera_info")
            return
        try:
            pose = self._pose(frame, camera.frame_id, time.monotonic() - since)
            if p.use_depth:
                depth, why = self.inputs.depth_for(frame.stamp_ns, p.depth_tolerance_s)
                if depth is None:
                    raise GeometryError(why)
                metres, scale = depth_image(depth.image, depth.units)
                points, values = project_with_depth(
                    frame.image, camera, pose, metres.astype(np.float64) * scale, p.stride_px or 2
                )
            else:
                plane = (np.asarray(p.plane[:3], np.float64), float(p.plane[3]))
                height, width = frame.image.shape
                stride = p.stride_px or auto_stride(camera, pose, plane, (width, height),
                                                    p.resolution)  # fmt: skip
                points, values = project_to_plane(frame.image, camera, pose, plane, stride,
                                                  p.max_range_m or None)  # fmt: skip
        except TransformNotYet as error:
            if time.monotonic() - since < p.tf_wait_s:
                self._waiting.append((frame, since))
                return
            self.problems.report("map not placed", str(error), "tf")
            return
        except (GeometryError, FrameError) as error:
            self.problems.report("map not placed", str(error), str(error).split(":")[0][:40])
            return
        with self._lock:
            if self.grid is None:
                return
            touched = self.grid.observe(points, values, frame.stamp_ns)
        self.counts["placed"] += 1
        if not touched:
            self.problems.report(
                "map off the grid",
                f"the view at {frame.stamp_ns} ns falls "
                "outside the grid's extent (origin_x/y, width_m, height_m)",
            )

    # -- output ----------------------------------------------------------------------------------
    def publish(self) -> None:
        """The grids, the sites and the diagnostics, now."""
        self._retry_waiting()
        p, distro = self.params, self.bus.distro
        with self._lock:
            grid = self.grid
            if grid is None or not self.active:
                return
            stamp = grid.stamp_ns or self.bus.now_ns()
            probability, confidence = grid.probability(), grid.confidence()
            cells = grid.occupancy()
            unseen = grid.seen == 0
            layers = {
                "grid": cells,
                "confidence": grid.layer(confidence, unseen),
                "seen": grid.layer(np.minimum(grid.seen, 100) / 100, unseen),
            }
        frame = grid.frame
        for name, values in layers.items():
            self._pubs[name].publish(grid_to_msg(values, frame.resolution, frame.origin,
                                                 frame.frame_id, stamp, distro))  # fmt: skip
        self.sites = rank_sites(
            replace(frame, grid=cells), probability, confidence, p.footprint_radius_m,
            p.site_max_anomaly, p.min_confidence, p.sites,
        )  # fmt: skip
        self._pubs["sites"].publish(site_poses(self.sites, stamp, frame.frame_id, distro))
        self._pubs["markers"].publish(
            site_markers(self.sites, p.footprint_radius_m, stamp, frame.frame_id, distro)
        )
        self._pubs["scores"].publish(site_scores(self.sites, stamp, self.bus.fqn, distro))
        known = cells >= 0
        values = {
            "maps_received": self.counts["maps"], "maps_placed": self.counts["placed"],
            "cells_known": int(known.sum()), "cells_lethal": int((cells == 100).sum()),
            "sites": len(self.sites),
            **{f"problem: {k}": v for k, v in sorted(self.problems.counts.items())},
        }  # fmt: skip
        level = 1 if self.problems.counts else 0
        text = f"{int(known.sum())} cells known, {len(self.sites)} sites"
        self._pubs["diagnostics"].publish(diagnostic_array(
            [status(self.bus.fqn, level, text, values, distro=distro)], stamp, distro))  # fmt: skip


def pose_from_xyz_rpy(x: float, y: float, z: float, roll: float, pitch: float, yaw: float
                      ) -> np.ndarray:  # fmt: skip
    """A 4x4 pose from a position and fixed-axis roll, pitch, yaw (REP 103: yaw, then pitch, then
    roll about the rotated axes, i.e. R = Rz(yaw) Ry(pitch) Rx(roll))."""
    rotation = (axis_angle_matrix([0, 0, 1], yaw) @ axis_angle_matrix([0, 1, 0], pitch)
                @ axis_angle_matrix([1, 0, 0], roll))  # fmt: skip
    return make_transform(rotation, [x, y, z])


def main(argv: list[str] | None = None) -> int:
    """``ros2 run vad_inspection hazard_map`` / ``vad-inspection run hazard_map``."""
    from .runner import run_node

    return run_node(HazardNode, "hazard_map", argv)
