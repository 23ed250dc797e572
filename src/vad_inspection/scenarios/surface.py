"""A camera scanning a flat surface laid with real imagery: a UAV along a wall, an AGV over a floor,
an arm over a part. Each frame comes with exact ground truth, because the geometry is known.

The surface is a mosaic of dataset images (CrackForest tiles, magnetic tiles) resized to square
cells of ``cell_px`` pixels; ``anomalous_fraction`` of the cells are defective images (with their
pixel masks), the rest normal ones. The mosaic lies on a plane; each mosaic pixel is ``mpp``
metres. The camera looks straight at the plane from ``distance`` m with focal length
``distance / mpp`` px, so one camera pixel sees exactly one mosaic pixel: a frame is a crop of the
mosaic, its mask the same crop of the mosaic's mask, and a defect's position is the centroid of
its pixels mapped onto the plane -- nothing interpolated, so truth and image agree to the pixel.

Frames (the plane's own coordinates): mosaic pixel ``(row, col)`` is the point
``u = col * mpp``, ``v = -row * mpp`` on the plane, ``world_from_plane`` places the plane in the
world frame (``map``). The optical frame has x along u, y along -v (down the rows) and z into the
plane, so image pixel ``(r, c)`` of a frame centred on mosaic pixel ``(R, C)`` is mosaic pixel
``(R + r - cy, C + c - cx)``. ``base_link`` carries the camera through a fixed mount.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..data.types import Dataset
from ..geometry import CameraModel
from .types import DefectTruth, FrameTruth, ScenarioError, View

#: base_link -> camera_optical: a camera looking down (floor, part) or forward (wall)
MOUNT_DOWN = np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=np.float64)
MOUNT_FORWARD = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)


@dataclass(frozen=True)
class SurfaceConfig:
    """What a surface scan is made of (the YAML under ``sim/`` gives these)."""

    name: str
    cells: tuple[int, int] = (4, 12)  # rows, cols of the mosaic
    cell_px: int = 160
    anomalous_fraction: float = 0.15
    mpp: float = 0.001  # metres per mosaic pixel
    distance: float = 0.5  # camera to plane (m)
    width: int = 320
    height: int = 240
    speed: float = 0.1  # m/s along the rows
    rate_hz: float = 10.0
    seed: int = 0
    world_from_plane: tuple[tuple[float, ...], ...] = tuple(map(tuple, np.eye(4)))
    mount: str = "down"  # down | forward
    optical_frame: str = "camera_optical"
    passes: int = 1  # boustrophedon passes over the rows (1: along the middle)


@dataclass
class Mosaic:
    """The surface: image, defect mask, and which dataset sample went into each cell."""

    image: np.ndarray
    mask: np.ndarray
    cells: list[list[str]] = field(default_factory=list)


def build_mosaic(dataset: Dataset, config: SurfaceConfig) -> Mosaic:
    """Cells of normal and defective samples (seeded), each resized to ``cell_px`` square."""
    rows, cols = config.cells
    rng = np.random.default_rng(config.seed)
    normal = [s for s in dataset.samples if not s.is_anomalous]
    defective = [s for s in dataset.samples if s.is_anomalous and s.load_mask is not None]
    n_bad = round(rows * cols * config.anomalous_fraction)
    if len(normal) < rows * cols - n_bad or len(defective) < n_bad:
        raise ScenarioError(
            f"{config.name}: {dataset.name} has {len(normal)} normal and {len(defective)} "
            f"defective samples with masks; the mosaic needs {rows * cols - n_bad} and {n_bad}"
        )
    chosen_bad = set(rng.choice(rows * cols, size=n_bad, replace=False).tolist())
    normal_pick = iter(rng.permutation(len(normal)).tolist())
    bad_pick = iter(rng.permutation(len(defective)).tolist())
    size = config.cell_px
    image = np.zeros((rows * size, cols * size, 3), np.uint8)
    mask = np.zeros((rows * size, cols * size), bool)
    names: list[list[str]] = [[""] * cols for _ in range(rows)]
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        sample = defective[next(bad_pick)] if index in chosen_bad else normal[next(normal_pick)]
        tile = sample.image()
        if tile.ndim == 2 or tile.shape[2] == 1:
            tile = np.repeat(tile.reshape(tile.shape[0], tile.shape[1], 1), 3, axis=2)
        tile = cv2.resize(np.ascontiguousarray(tile[:, :, :3]), (size, size),
                          interpolation=cv2.INTER_AREA)  # fmt: skip
        image[r * size : (r + 1) * size, c * size : (c + 1) * size] = tile.astype(np.uint8)
        if index in chosen_bad:
            cell_mask = sample.mask().astype(np.uint8)
            cell_mask = cv2.resize(cell_mask, (size, size), interpolation=cv2.INTER_NEAREST)
            mask[r * size : (r + 1) * size, c * size : (c + 1) * size] = cell_mask > 0
        names[r][c] = sample.id
    return Mosaic(image, mask, names)


def defects_of(mosaic: Mosaic, config: SurfaceConfig, min_px: int = 20) -> list[DefectTruth]:
    """Each connected defect region of the mosaic (8-connected, at least ``min_px`` pixels) with
    its centroid placed in the world."""
    count, _labels, stats, centroids = cv2.connectedComponentsWithStats(
        mosaic.mask.astype(np.uint8), connectivity=8
    )
    world = np.asarray(config.world_from_plane, dtype=np.float64)
    found = []
    for k in range(1, count):
        if stats[k, cv2.CC_STAT_AREA] < min_px:
            continue
        col, row = centroids[k]
        point = world @ np.array([col * config.mpp, -row * config.mpp, 0.0, 1.0])
        x, y, w, h = (int(v) for v in stats[k, :4])
        found.append(DefectTruth(f"T{len(found) + 1:03d}", tuple(point[:3]), (row, col),
                                 (x, y, w, h), int(stats[k, cv2.CC_STAT_AREA])))  # fmt: skip
    return found


class SurfaceScan:
    """The scenario: frames, camera model, poses and truth, in time order (pure: no transport)."""

    def __init__(
        self,
        dataset: Dataset | None,
        config: SurfaceConfig,
        mosaic: Mosaic | None = None,
        defects: list[DefectTruth] | None = None,
    ) -> None:
        """A mosaic built from ``dataset`` (cells), or a given ``mosaic`` with its ``defects``
        (the lunar pass lays whole strips and takes its craters from their tables)."""
        pose = np.asarray(config.world_from_plane, dtype=np.float64)
        rotation = pose[:3, :3] if pose.shape == (4, 4) else np.zeros((3, 3))
        if not (np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
                and np.linalg.det(rotation) > 0):  # fmt: skip
            raise ScenarioError(
                f"{config.name}: world_from_plane must be a 4x4 pose with a proper rotation "
                "(columns u, v, normal right-handed: u x v = normal)"
            )
        self.config = config
        if mosaic is None:
            if dataset is None:
                raise ScenarioError(f"{config.name}: a surface scan needs a dataset or a mosaic")
            mosaic = build_mosaic(dataset, config)
        self.mosaic = mosaic
        self.defects = defects_of(mosaic, config) if defects is None else defects
        self.encoding = "mono8" if mosaic.image.ndim == 2 else "rgb8"
        fx = config.distance / config.mpp
        cx, cy = (config.width - 1) / 2, (config.height - 1) / 2
        self.camera = CameraModel(
            config.width, config.height, np.array([[fx, 0, cx], [0, fx, cy], [0, 0, 1.0]]),
            np.zeros(5), "plumb_bob", config.optical_frame,
        )  # fmt: skip
        self.mount = MOUNT_DOWN if config.mount == "down" else MOUNT_FORWARD
        self.path = self._path()
        if not self.path:
            raise ScenarioError(f"{config.name}: the mosaic is smaller than one camera frame")

    def _path(self) -> list[tuple[float, float]]:
        """Camera centres (mosaic row, col) along the rows, one per frame."""
        c = self.config
        rows, cols = self.mosaic.mask.shape
        half_w, half_h = (c.width - 1) / 2, (c.height - 1) / 2
        step = c.speed / c.rate_hz / c.mpp  # mosaic px per frame
        lanes = np.linspace(half_h, rows - 1 - half_h, c.passes) if c.passes > 1 else [
            (rows - 1) / 2]  # fmt: skip
        path = []
        for lane, row in enumerate(lanes):
            cols_along = np.arange(half_w, cols - half_w, step)
            if lane % 2:
                cols_along = cols_along[::-1]
            path += [(float(row), float(col)) for col in cols_along]
        return path

    @property
    def optical_frame(self) -> str:
        return self.config.optical_frame

    @property
    def frame_count(self) -> int:
        return len(self.path)

    def world_from_optical(self, row: float, col: float) -> np.ndarray:
        """The optical frame's pose when centred over mosaic pixel (row, col)."""
        c = self.config
        plane_pose = np.eye(4)
        plane_pose[:3, :3] = np.diag([1.0, -1.0, -1.0])  # x = u, y = -v, z into the plane
        plane_pose[:3, 3] = (col * c.mpp, -row * c.mpp, c.distance)
        return np.asarray(c.world_from_plane, dtype=np.float64) @ plane_pose

    def base_from_optical(self) -> np.ndarray:
        mount = np.eye(4)
        mount[:3, :3] = self.mount
        return mount

    def origins(self) -> list[tuple[int, int]]:
        """Each frame's top-left mosaic pixel (row, col), in path order."""
        half_w, half_h = (self.config.width - 1) / 2, (self.config.height - 1) / 2
        return [(round(row - half_h), round(col - half_w)) for row, col in self.path]

    def defects_in_view(self, r0: int, c0: int) -> list[DefectTruth]:
        """The defects whose centroid lies in the frame at ``(r0, c0)``: no pixels needed, so a
        summary can count coverage without cutting every frame."""
        c = self.config
        return [
            d for d in self.defects
            if r0 <= d.mosaic_rc[0] < r0 + c.height and c0 <= d.mosaic_rc[1] < c0 + c.width
        ]  # fmt: skip

    def views(self, start_ns: int = 0) -> Iterator[View]:
        """Every frame with its pose and truth."""
        c = self.config
        optical_from_base = np.linalg.inv(self.base_from_optical())
        half_w, half_h = (c.width - 1) / 2, (c.height - 1) / 2
        for index, (r0, c0) in enumerate(self.origins()):
            image = self.mosaic.image[r0 : r0 + c.height, c0 : c0 + c.width]
            mask = self.mosaic.mask[r0 : r0 + c.height, c0 : c0 + c.width]
            seen = self.defects_in_view(r0, c0)
            world_from_optical = self.world_from_optical(r0 + half_h, c0 + half_w)
            yield View(
                stamp_ns=start_ns + round(index * 1e9 / c.rate_hz),
                image=np.ascontiguousarray(image),
                depth_m=np.full((c.height, c.width), c.distance, np.float32),
                world_from_base=world_from_optical @ optical_from_base,
                truth=FrameTruth(bool(mask.any()), np.ascontiguousarray(mask), tuple(seen)),
                origin=(r0, c0),
                encoding=self.encoding,
            )

    def summary(self) -> dict[str, object]:
        c = self.config
        return {
            "name": c.name, "kind": "surface", "encoding": self.encoding, "frames": len(self.path),
            "defects": len(self.defects),
            "mosaic_px": list(self.mosaic.mask.shape), "mpp": c.mpp, "distance_m": c.distance,
            "rate_hz": c.rate_hz, "speed_m_s": c.speed,
        }  # fmt: skip


def pixel_of(scan: SurfaceScan, view: View, point: Sequence[float]) -> tuple[float, float]:
    """Where a world point appears in a view's image (u, v): the camera model through the view's
    pose, for checking truth against geometry."""
    optical_from_world = np.linalg.inv(view.world_from_base @ scan.base_from_optical())
    local = optical_from_world @ np.array([*point, 1.0])
    u, v = scan.camera.project(local[None, :3])[0]
    return float(u), float(v)
