"""Hazard evidence on a map-frame grid: what the camera saw clear and what it saw anomalous, per
cell, over many frames; and the anomaly map's pixels projected onto the ground to feed it.

A single frame's anomaly map says little about a place: the next frame sees it from elsewhere, a
shadow moves, the detector has its noise. So each cell keeps two decaying sums, evidence that it
looked **anomalous** and evidence that it looked **clear**; a frame adds at most one unit of
evidence per cell (the mean of its samples there), so a cell seen close up by many pixels does not
outweigh one seen from far by a few. From the sums:

- ``probability`` = (anomalous + ``prior`` / 2) / (anomalous + clear + ``prior``): 0.5 where nothing
  is known, towards 0 for a place seen clear many times, towards 1 for one seen anomalous;
- ``confidence`` = total / (total + ``prior``): how much has been seen, in [0, 1);
- ``seen``: frames that saw the cell (not decayed).

A sample's evidence is soft: ``sigmoid((m - threshold) / softness)`` of the detector's normalised
map value ``m`` (0.5 = its threshold), so a pixel just under the threshold counts as nearly
undecided rather than clear. Evidence halves every ``half_life_s`` of stream time (0: never), so a
hazard that is gone fades back to unknown unless seen again, as an obstacle layer would.

:meth:`HazardGrid.occupancy` follows Nav2's conventions for nav_msgs/OccupancyGrid: ``-1`` unknown
(confidence below ``min_confidence``), ``0`` free (probability at most ``free_probability``),
``100`` lethal (at least ``lethal_probability``), ``1``-``99`` the probability between; Nav2's
static layer reads values at or above its ``lethal_cost_threshold`` (100 by default) as lethal,
and with ``trinary_costmap: false`` scales the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import CameraModel
from .errors import GeometryError
from .grid import Grid, in_bounds, world_to_cell
from .transforms import check_transform

NS = 1_000_000_000
Plane = tuple[np.ndarray, float]


@dataclass(frozen=True)
class HazardConfig:
    """How evidence is weighed (see the module docstring)."""

    threshold: float = 0.5  # the anomaly map's value at the detector's threshold
    softness: float = 0.1  # width of the soft step around it
    prior: float = 2.0  # pseudo-count: two frames' evidence before a cell is half confident
    half_life_s: float = 0.0  # evidence halves after this much stream time (0: never decays)
    min_confidence: float = 0.5  # below: unknown (-1) in the occupancy grid
    lethal_probability: float = 0.9  # at or above: 100 (lethal)
    free_probability: float = 0.1  # at or below: 0 (free)

    def __post_init__(self) -> None:
        if self.softness <= 0 or self.prior <= 0 or self.half_life_s < 0:
            raise GeometryError(
                f"hazard settings: softness {self.softness} and prior {self.prior} must be > 0, "
                f"half_life_s {self.half_life_s} >= 0"
            )
        if not 0 <= self.min_confidence < 1 or not (
            0 <= self.free_probability < self.lethal_probability <= 1
        ):
            raise GeometryError(
                f"hazard settings: min_confidence {self.min_confidence} must lie in [0, 1), and "
                f"0 <= free_probability {self.free_probability} < lethal_probability "
                f"{self.lethal_probability} <= 1"
            )


class HazardGrid:
    """Evidence per cell of a fixed grid (``rows`` x ``cols`` cells of ``resolution`` m, cell
    (0, 0)'s corner at ``origin``, a 4x4 pose in ``frame_id``)."""

    def __init__(
        self,
        rows: int,
        cols: int,
        resolution: float,
        origin: np.ndarray,
        frame_id: str,
        config: HazardConfig | None = None,
    ) -> None:
        if rows <= 0 or cols <= 0 or not resolution > 0:
            raise GeometryError(f"a hazard grid of {rows} x {cols} cells of {resolution} m")
        self.config = config or HazardConfig()
        self.frame = Grid(np.zeros((rows, cols), np.int8), float(resolution),
                          check_transform(origin), frame_id, 0)  # fmt: skip
        self.anomalous = np.zeros((rows, cols))
        self.clear = np.zeros((rows, cols))
        self.seen = np.zeros((rows, cols), np.int32)
        self.stamp_ns: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.frame.shape

    def decay_to(self, stamp_ns: int) -> None:
        """Age the evidence to ``stamp_ns`` (stream time; an older stamp leaves it as it is)."""
        if self.stamp_ns is not None and self.config.half_life_s > 0 and stamp_ns > self.stamp_ns:
            factor = 0.5 ** ((stamp_ns - self.stamp_ns) / NS / self.config.half_life_s)
            self.anomalous *= factor
            self.clear *= factor
        self.stamp_ns = stamp_ns if self.stamp_ns is None else max(self.stamp_ns, stamp_ns)

    def evidence(self, values: np.ndarray) -> np.ndarray:
        """Soft evidence of anomaly in [0, 1] of normalised map values."""
        c = self.config
        z = np.clip((np.asarray(values, np.float64) - c.threshold) / c.softness, -50, 50)
        return 1.0 / (1.0 + np.exp(-z))

    def observe(self, points: np.ndarray, values: np.ndarray, stamp_ns: int) -> int:
        """Add one frame: ``points`` (N, 2 or 3) in ``frame_id`` with the anomaly map's values
        there. Returns the number of cells the frame touched (points off the grid are ignored)."""
        points = np.asarray(points, np.float64)
        values = np.asarray(values, np.float64).reshape(-1)
        if len(points) != len(values):
            raise GeometryError(f"{len(points)} points but {len(values)} map values")
        self.decay_to(stamp_ns)
        if not len(points):
            return 0
        rows, cols = world_to_cell(self.frame, points)
        inside = in_bounds(self.frame, rows, cols) & np.isfinite(values)
        if not inside.any():
            return 0
        flat = rows[inside] * self.shape[1] + cols[inside]
        size = self.shape[0] * self.shape[1]
        counts = np.bincount(flat, minlength=size)
        sums = np.bincount(flat, weights=self.evidence(values[inside]), minlength=size)
        hit = counts > 0
        mean = np.zeros(size)
        mean[hit] = sums[hit] / counts[hit]
        self.anomalous.reshape(-1)[hit] += mean[hit]
        self.clear.reshape(-1)[hit] += 1.0 - mean[hit]
        self.seen.reshape(-1)[hit] += 1
        return int(hit.sum())

    def probability(self) -> np.ndarray:
        prior = self.config.prior
        return (self.anomalous + prior / 2) / (self.anomalous + self.clear + prior)

    def confidence(self) -> np.ndarray:
        total = self.anomalous + self.clear
        return total / (total + self.config.prior)

    def occupancy(self) -> np.ndarray:
        """int8 cells with Nav2's conventions (module docstring)."""
        c = self.config
        p = self.probability()
        cells = np.clip(np.round(100 * p), 1, 99).astype(np.int8)
        cells[p <= c.free_probability] = 0
        cells[p >= c.lethal_probability] = 100
        cells[self.confidence() < c.min_confidence] = -1
        return cells

    def layer(self, values: np.ndarray, unknown: np.ndarray | None = None) -> np.ndarray:
        """A [0, 1] layer (confidence, say) as 0-100 int8 cells, ``-1`` where ``unknown``."""
        cells = np.clip(np.round(100 * np.asarray(values)), 0, 100).astype(np.int8)
        if unknown is not None:
            cells[unknown] = -1
        return cells


def sample_pixels(width: int, height: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres every ``stride`` pixels, starting half a stride in: (u, v) flat arrays."""
    us = np.arange(stride / 2 - 0.5, width, stride)
    vs = np.arange(stride / 2 - 0.5, height, stride)
    u, v = np.meshgrid(us, vs)
    return u.reshape(-1), v.reshape(-1)


def auto_stride(
    camera: CameraModel, T_plane_from_camera: np.ndarray, plane: Plane, size: tuple[int, int],
    resolution: float,
) -> int:  # fmt: skip
    """The largest pixel stride whose samples, at the image centre, lie at most half a cell
    apart on the plane: every cell the view covers gets samples (a coarser stride leaves gaps of
    cells never seen; a finer one only costs time)."""
    width, height = size
    model = camera if camera.image_size == (width, height) else camera.scaled(width, height)
    u = np.array([width / 2, width / 2 + 1, width / 2])
    v = np.array([height / 2, height / 2, height / 2 + 1])
    t = check_transform(T_plane_from_camera)
    rays = model.pixel_to_ray(u, v) @ t[:3, :3].T
    n = np.asarray(plane[0], np.float64).reshape(3)
    scale = np.linalg.norm(n)
    n, d = n / scale, float(plane[1]) / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = -(n @ t[:3, 3] + d) / (rays @ n)
    if not np.all(np.isfinite(distance) & (distance > 0)):
        return 4  # the centre misses the plane (looking at the sky): any stride will do
    points = t[:3, 3] + distance[:, None] * rays
    pixel_m = max(np.linalg.norm(points[1] - points[0]), np.linalg.norm(points[2] - points[0]))
    return int(max(1, min(16, np.floor(resolution / 2 / max(pixel_m, 1e-12)))))


def project_to_plane(
    heat: np.ndarray,
    camera: CameraModel,
    T_plane_from_camera: np.ndarray,
    plane: Plane,
    stride: int = 4,
    max_distance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Where the anomaly map's pixels look on ``plane``: (N, 3) points in the plane's frame and
    the map's values there. ``heat`` may have another size than the camera's image (the camera
    is scaled to it); pixels whose ray misses the plane (horizon, behind) are left out."""
    height, width = heat.shape[:2]
    model = camera if camera.image_size == (width, height) else camera.scaled(width, height)
    u, v = sample_pixels(width, height, stride)
    t = check_transform(T_plane_from_camera)
    rays = model.pixel_to_ray(u, v) @ t[:3, :3].T
    n = np.asarray(plane[0], np.float64).reshape(3)
    n = n / np.linalg.norm(n)
    d = float(plane[1]) / np.linalg.norm(np.asarray(plane[0], np.float64))
    origin = t[:3, 3]
    cosine = rays @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = -(n @ origin + d) / cosine
    ok = np.isfinite(distance) & (distance > 0) & (np.abs(cosine) > 1e-9)
    if max_distance is not None:
        ok &= distance <= max_distance
    points = origin + distance[ok, None] * rays[ok]
    values = heat[np.round(v[ok]).astype(int), np.round(u[ok]).astype(int)]
    return points, values.astype(np.float64)


def project_with_depth(
    heat: np.ndarray,
    camera: CameraModel,
    T_map_from_camera: np.ndarray,
    depth_m: np.ndarray,
    stride: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`project_to_plane`, each sampled pixel placed at its depth (metres, registered to
    the camera; another resolution of the same aspect is scaled). Pixels without a valid depth
    (NaN, 0) are left out."""
    height, width = heat.shape[:2]
    model = camera if camera.image_size == (width, height) else camera.scaled(width, height)
    u, v = sample_pixels(width, height, stride)
    dh, dw = depth_m.shape[:2]
    if abs((dw / dh) / (width / height) - 1.0) > 0.01:
        raise GeometryError(
            f"depth image {dw}x{dh} and anomaly map {width}x{height} differ in aspect ratio: is "
            "the depth registered to this camera?"
        )
    z = np.asarray(depth_m, np.float64)[
        np.clip((v * dh / height).astype(int), 0, dh - 1),
        np.clip((u * dw / width).astype(int), 0, dw - 1),
    ]
    ok = np.isfinite(z) & (z > 0)
    rays = model.pixel_to_ray(u[ok], v[ok], normalize=False) * z[ok, None]
    t = check_transform(T_map_from_camera)
    points = rays @ t[:3, :3].T + t[:3, 3]
    values = heat[np.round(v[ok]).astype(int), np.round(u[ok]).astype(int)]
    return points, values.astype(np.float64)
