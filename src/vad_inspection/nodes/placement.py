"""Placing a frame's defect regions in 3-D and naming them: pure code between the node and geometry.

A region becomes a point in ``target_frame`` one of two ways: from a depth image paired with the
frame (median depth under the region, so holes and zeros do not matter), or by intersecting the
region's centre ray with a plane given in any tf frame (the ground under a UAV, a wall, the part
under an arm's tool). When neither works the reason travels with the defect (no camera_info, no
depth within tolerance, transform missing or too old), so the node can say why its 3-D output is
empty instead of silently publishing nothing. Tags then follow from :class:`~..vad.tags.TagBook`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..geometry import CameraModel, GeometryError, TransformBuffer, transform_points
from ..geometry.errors import TransformNotYet, TransformUnavailable
from ..geometry.locate import point_from_depth, point_on_plane
from ..vad.detector import Region
from ..vad.tags import Defect, TagBook


@dataclass(frozen=True)
class DepthFrame:
    """A depth image (uint16 mm or float32 m, per ``units``) and when it was taken."""

    image: np.ndarray
    stamp_ns: int
    units: str = "auto"


@dataclass(frozen=True)
class PlacementConfig:
    """``target_frame`` for positions; ``plane`` ``(n_x, n_y, n_z, d)`` in ``plane_frame`` (empty:
    no plane); ``tf_tolerance_ns`` how far a lookup may reach beyond the transforms it has;
    ``tf_wait_ns`` how long a lookup waits for a transform at or after the image's stamp (the
    robot's pose for that frame, still in flight on a busy machine) before it extrapolates
    within the tolerance: extrapolating a moving robot's pose puts a defect where it is not, and
    a second sighting then starts a second tag. The same wait covers a frame not yet known or
    not yet connected (the camera mount's static transform still in flight at start-up, as
    tf2's lookup timeout does), but only until one such wait for a pair of frames has expired:
    a misconfigured frame then costs one wait, not one per image."""

    target_frame: str = "map"
    plane_frame: str = ""
    plane: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.0)
    tf_tolerance_ns: int = 100_000_000
    tf_wait_ns: int = 500_000_000


#: how much a sighting cut by the image border counts in its tag's position (its visible part's
#: centroid lies inward of the defect's centre, by up to the defect's radius)
CUT_WEIGHT = 0.05


class Placer:
    """Turns regions of one frame into named :class:`Defect` objects (3-D where possible)."""

    def __init__(self, config: PlacementConfig, tf: TransformBuffer, tags: TagBook) -> None:
        self.config = config
        self.tf = tf
        self.tags = tags
        #: (target, source) pairs whose chain stayed missing for a whole wait: not waited on again
        #: until a lookup between them succeeds
        self._missing: set[tuple[str, str]] = set()

    def defects(
        self,
        regions: tuple[Region, ...],
        frame_size: tuple[int, int],
        stamp_ns: int,
        frame_id: str,
        camera: CameraModel | None,
        depth: DepthFrame | None,
        why_no_depth: str = "",
    ) -> list[Defect]:
        """One defect per region, tagged; ``frame_size`` is ``(width, height)`` of the image."""
        out: list[Defect] = []
        taken: set[str] = set()
        for region in regions:
            position, size, why = self._place(
                region, frame_size, stamp_ns, frame_id, camera, depth, why_no_depth
            )
            frame = self.config.target_frame if position is not None else ""
            x, y, w, h = region.bbox
            cut = x <= 0 or y <= 0 or x + w >= frame_size[0] or y + h >= frame_size[1]
            tag = self.tags.observe(
                stamp_ns, region.peak, region.bbox, position, frame, frozenset(taken),
                weight=CUT_WEIGHT if cut else 1.0,
            )  # fmt: skip
            taken.add(tag.tag)
            out.append(
                Defect(
                    tag=tag.tag,
                    score=region.peak,
                    box=region.bbox,
                    centroid=region.centroid,
                    area=region.area,
                    position=position,
                    size=size,
                    frame=frame,
                    why_not_3d=why,
                )
            )
        return out

    def _place(
        self,
        region: Region,
        frame_size: tuple[int, int],
        stamp_ns: int,
        frame_id: str,
        camera: CameraModel | None,
        depth: DepthFrame | None,
        why_no_depth: str,
    ) -> tuple[tuple[float, float, float] | None, tuple[float, float, float] | None, str]:
        if camera is None:
            return None, None, "no camera_info received yet"
        if depth is None and not self.config.plane_frame:
            return None, None, why_no_depth or "no depth image and no plane configured"
        try:
            width, height = frame_size
            if camera.image_size != (width, height):
                camera = camera.scaled(width, height)
            optical = camera.frame_id or frame_id
            if depth is not None:
                return self._by_depth(region, camera, optical, stamp_ns, depth)
            return self._by_plane(region, camera, optical, stamp_ns)
        except GeometryError as error:  # includes TransformUnavailable
            return None, None, f"{type(error).__name__}: {error}"

    def _lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """The transform at ``stamp_ns``: interpolated once the buffer brackets the stamp,
        waiting up to ``tf_wait_ns`` for it (this runs on the detector's worker thread, while
        /tf keeps filling the buffer), then within ``tf_tolerance_ns``. A missing chain is waited
        for too, once per pair of frames (see :class:`PlacementConfig`)."""
        pair = (target, source)
        deadline = time.monotonic_ns() + self.config.tf_wait_ns
        while True:
            chain_missing = False
            try:
                matrix = self.tf.lookup(target, source, stamp_ns, 0)
                self._missing.discard(pair)
                return matrix
            except TransformNotYet:
                pass  # the pose at the stamp may still come
            except TransformUnavailable:
                if pair in self._missing:
                    break  # waited for this chain once already, in vain
                chain_missing = True
            except GeometryError:
                break
            if time.monotonic_ns() >= deadline:
                if chain_missing:
                    self._missing.add(pair)
                break
            time.sleep(0.005)
        matrix = self.tf.lookup(target, source, stamp_ns, self.config.tf_tolerance_ns)
        self._missing.discard(pair)
        return matrix

    def _by_depth(
        self, region: Region, camera: CameraModel, optical: str, stamp_ns: int, depth: DepthFrame
    ) -> tuple[tuple[float, float, float], tuple[float, float, float], str]:
        x, y, w, h = region.bbox
        mask = np.zeros((camera.image_size[1], camera.image_size[0]), dtype=bool)
        mask[y : y + h, x : x + w] = region.mask
        found = point_from_depth(camera, depth.image, mask, depth.units)
        to_target = self._lookup(self.config.target_frame, optical, stamp_ns)
        point = transform_points(to_target, found.point[None])[0]
        size = (found.width, found.height, min(found.width, found.height))
        return _triple(point), _triple(size), ""

    def _by_plane(
        self, region: Region, camera: CameraModel, optical: str, stamp_ns: int
    ) -> tuple[tuple[float, float, float], tuple[float, float, float], str]:
        config = self.config
        plane = (np.asarray(config.plane[:3], np.float64), float(config.plane[3]))
        to_plane = self._lookup(config.plane_frame, optical, stamp_ns)
        x, y, w, h = region.bbox
        cu, cv = region.centroid
        pixels = [(cu, cv), (x, cv), (x + w, cv), (cu, y), (cu, y + h)]
        points = np.array([point_on_plane(camera, p, to_plane, plane) for p in pixels])
        to_target = self._lookup(config.target_frame, config.plane_frame, stamp_ns)
        centre = transform_points(to_target, points[:1])[0]
        width = float(np.linalg.norm(points[2] - points[1]))
        height = float(np.linalg.norm(points[4] - points[3]))
        return _triple(centre), (width, height, 0.0), ""


def _triple(values: np.ndarray | tuple[float, ...]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c
