"""Geometry: camera models, rigid transforms and occupancy grids <-> their ROS 2 messages.

The domain side uses plain NumPy: a 4x4 homogeneous matrix for every pose or transform (it
composes with ``@`` and inverts with ``np.linalg.inv``), ``K``/``D``/``R``/``P`` arrays for a
pinhole camera, an ``int8`` array for a grid. Quaternions appear only at the message boundary;
they are normalised on the way in and returned with ``w >= 0`` on the way out, so a round trip is
exact up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .time import header, ns_to_stamp, stamp_to_ns
from .types import MessageError, msg_class

_ORTHO_TOL = 1e-5


# ---------------------------------------------------------------------------- quaternions


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (normalised here; zero raises) -> 3x3 rotation matrix."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise MessageError(f"quaternion {q.tolist()} has no direction (zero or not finite)")
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation matrix -> unit quaternion ``(x, y, z, w)`` with ``w >= 0``.

    Shepperd's method: divide by the largest of the four candidate terms, which keeps the result
    accurate near 180-degree rotations where the trace formula alone loses precision.
    """
    m = _check_rotation(rotation)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    pick = int(np.argmax([trace, m[0, 0], m[1, 1], m[2, 2]]))
    if pick == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif pick == 1:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif pick == 2:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    quat = np.asarray(q) / np.linalg.norm(q)
    if quat[3] < 0:
        quat = -quat
    return (float(quat[0]), float(quat[1]), float(quat[2]), float(quat[3]))


def _check_rotation(rotation: Any) -> np.ndarray:
    m = np.asarray(rotation, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise MessageError(f"rotation must be a finite 3x3 matrix, got shape {m.shape}")
    if not np.allclose(m @ m.T, np.eye(3), atol=_ORTHO_TOL) or np.linalg.det(m) <= 0:
        raise MessageError("rotation matrix is not orthonormal with determinant +1")
    return m


def _check_matrix(matrix: Any) -> np.ndarray:
    t = np.asarray(matrix, dtype=np.float64)
    if t.shape != (4, 4) or not np.all(np.isfinite(t)):
        raise MessageError(f"transform must be a finite 4x4 matrix, got shape {t.shape}")
    if not np.allclose(t[3], [0.0, 0.0, 0.0, 1.0]):
        raise MessageError(f"transform's last row must be [0, 0, 0, 1], got {t[3].tolist()}")
    _check_rotation(t[:3, :3])
    return t


def _homogeneous(rotation: np.ndarray, translation: Any) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rotation
    t[:3, 3] = translation
    return t


# ---------------------------------------------------------------------------- poses, transforms


def pose_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs Pose (or PoseStamped / PoseWithCovariance[Stamped]) -> 4x4 matrix."""
    while hasattr(msg, "pose"):
        msg = msg.pose
    p, q = msg.position, msg.orientation
    return _homogeneous(quaternion_to_matrix(q.x, q.y, q.z, q.w), [p.x, p.y, p.z])


def matrix_to_pose(matrix: Any, distro: str = "jazzy") -> Any:
    """4x4 matrix -> geometry_msgs/msg/Pose."""
    t = _check_matrix(matrix)
    x, y, z, w = matrix_to_quaternion(t[:3, :3])
    return msg_class("geometry_msgs/msg/Pose", distro)(
        position=msg_class("geometry_msgs/msg/Point", distro)(*map(float, t[:3, 3])),
        orientation=msg_class("geometry_msgs/msg/Quaternion", distro)(x=x, y=y, z=z, w=w),
    )


def transform_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs Transform (or TransformStamped) -> 4x4 matrix (child -> parent)."""
    if hasattr(msg, "transform"):
        msg = msg.transform
    v, q = msg.translation, msg.rotation
    return _homogeneous(quaternion_to_matrix(q.x, q.y, q.z, q.w), [v.x, v.y, v.z])


def matrix_to_transform(matrix: Any, distro: str = "jazzy") -> Any:
    """4x4 matrix -> geometry_msgs/msg/Transform."""
    t = _check_matrix(matrix)
    x, y, z, w = matrix_to_quaternion(t[:3, :3])
    return msg_class("geometry_msgs/msg/Transform", distro)(
        translation=msg_class("geometry_msgs/msg/Vector3", distro)(*map(float, t[:3, 3])),
        rotation=msg_class("geometry_msgs/msg/Quaternion", distro)(x=x, y=y, z=z, w=w),
    )


def planar_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    """4x4 matrix of a pose in the plane: position ``(x, y, 0)``, rotation ``yaw`` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return _homogeneous(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), [x, y, 0.0])


# ---------------------------------------------------------------------------- camera model


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A calibrated camera as sensor_msgs/CameraInfo describes it (all arrays float64, read-only).

    ``K`` 3x3 intrinsics, ``D`` distortion coefficients for ``distortion_model`` (plumb_bob: 5,
    rational_polynomial: 8, equidistant: 4), ``R`` 3x3 rectification (identity by default),
    ``P`` 3x4 projection (``[K | 0]`` by default). ``binning_*`` and ``roi``
    ``(x_offset, y_offset, height, width, do_rectify)`` are carried so that CameraInfo round-trips.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray
    distortion_model: str
    frame_id: str
    R: np.ndarray = field(default=None)  # type: ignore[assignment]
    P: np.ndarray = field(default=None)  # type: ignore[assignment]
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple[int, int, int, int, bool] = (0, 0, 0, 0, False)

    def __post_init__(self) -> None:
        k = _frozen(self.K, (3, 3), "K")
        r = np.eye(3) if self.R is None else self.R
        p = np.hstack([k, np.zeros((3, 1))]) if self.P is None else self.P
        object.__setattr__(self, "K", k)
        object.__setattr__(self, "D", _frozen(self.D, (-1,), "D"))
        object.__setattr__(self, "R", _frozen(r, (3, 3), "R"))
        object.__setattr__(self, "P", _frozen(p, (3, 4), "P"))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        x, y, h, w, rect = self.roi
        object.__setattr__(self, "roi", (int(x), int(y), int(h), int(w), bool(rect)))

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraModel):
            return NotImplemented
        scalars = ("width", "height", "distortion_model", "frame_id", "binning_x", "binning_y")
        return all(getattr(self, n) == getattr(other, n) for n in scalars) and (
            self.roi == other.roi
            and all(
                np.array_equal(getattr(self, n), getattr(other, n)) for n in ("K", "D", "R", "P")
            )
        )

    __hash__ = None  # type: ignore[assignment]


def _frozen(values: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    try:
        array = array.reshape(shape)
    except ValueError:
        raise MessageError(
            f"CameraModel.{name}: cannot shape {array.size} values as {shape}"
        ) from None
    array.flags.writeable = False
    return array


def camera_info_to_model(msg: Any) -> CameraModel:
    """sensor_msgs/msg/CameraInfo -> CameraModel (validates the fixed-size arrays)."""
    roi = msg.roi
    return CameraModel(
        width=msg.width,
        height=msg.height,
        K=_sized(msg.k, 9, "k"),
        D=np.asarray(msg.d, dtype=np.float64),
        distortion_model=msg.distortion_model,
        frame_id=msg.header.frame_id,
        R=_sized(msg.r, 9, "r"),
        P=_sized(msg.p, 12, "p"),
        binning_x=msg.binning_x,
        binning_y=msg.binning_y,
        roi=(roi.x_offset, roi.y_offset, roi.height, roi.width, roi.do_rectify),
    )


def _sized(values: Any, size: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size != size:
        raise MessageError(f"sensor_msgs/msg/CameraInfo.{name} has {array.size} values, not {size}")
    return array


def model_to_camera_info(model: CameraModel, stamp_ns: int, distro: str = "jazzy") -> Any:
    """CameraModel -> sensor_msgs/msg/CameraInfo stamped ``stamp_ns``."""
    x, y, h, w, rect = model.roi
    return msg_class("sensor_msgs/msg/CameraInfo", distro)(
        header=header(stamp_ns, model.frame_id, distro),
        height=model.height,
        width=model.width,
        distortion_model=model.distortion_model,
        d=model.D.copy(),
        k=model.K.reshape(9).copy(),
        r=model.R.reshape(9).copy(),
        p=model.P.reshape(12).copy(),
        binning_x=model.binning_x,
        binning_y=model.binning_y,
        roi=msg_class("sensor_msgs/msg/RegionOfInterest", distro)(
            x_offset=x, y_offset=y, height=h, width=w, do_rectify=rect
        ),
    )


# ---------------------------------------------------------------------------- occupancy grid


@dataclass(frozen=True, eq=False)
class Grid:
    """A decoded nav_msgs/OccupancyGrid.

    ``grid[row, col]`` is the cell at ``origin @ [(col + 0.5) * res, (row + 0.5) * res, 0, 1]``:
    rows grow along the origin's y axis. Values: -1 unknown, 0..100 occupancy probability.
    ``resolution`` is the message's float32 value (m/cell) widened to float.
    """

    grid: np.ndarray
    resolution: float
    origin: np.ndarray
    frame_id: str
    stamp_ns: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return (
            self.resolution == other.resolution
            and self.frame_id == other.frame_id
            and self.stamp_ns == other.stamp_ns
            and np.array_equal(self.origin, other.origin)
            and self.grid.shape == other.grid.shape
            and np.array_equal(self.grid, other.grid)
        )

    __hash__ = None  # type: ignore[assignment]


def grid_to_msg(
    grid: np.ndarray,
    resolution: float,
    origin: Any,
    frame_id: str,
    stamp_ns: int,
    distro: str = "jazzy",
) -> Any:
    """``int8`` (H, W) grid -> nav_msgs/msg/OccupancyGrid, rows stored first (row-major).

    ``origin`` is the pose of cell (0, 0)'s corner: a 4x4 matrix or a planar ``(x, y, yaw)``.
    ``map_load_time`` is set to ``stamp_ns`` too.
    """
    cells = np.asarray(grid)
    if cells.dtype != np.int8 or cells.ndim != 2:
        raise MessageError(
            f"nav_msgs/msg/OccupancyGrid: grid must be a 2-D int8 array, got "
            f"{cells.dtype} {cells.shape}"
        )
    if not (np.isfinite(resolution) and resolution > 0):
        raise MessageError(f"nav_msgs/msg/OccupancyGrid: resolution must be > 0, got {resolution}")
    pose = np.asarray(origin, dtype=np.float64)
    if pose.shape == (3,):
        pose = planar_matrix(*pose)
    height, width = cells.shape
    info = msg_class("nav_msgs/msg/MapMetaData", distro)(
        map_load_time=ns_to_stamp(stamp_ns, distro),
        resolution=float(resolution),
        width=width,
        height=height,
        origin=matrix_to_pose(pose, distro),
    )
    return msg_class("nav_msgs/msg/OccupancyGrid", distro)(
        header=header(stamp_ns, frame_id, distro),
        info=info,
        data=np.ascontiguousarray(cells).reshape(-1),
    )


def msg_to_grid(msg: Any) -> Grid:
    """nav_msgs/msg/OccupancyGrid -> :class:`Grid`; ``data`` must hold exactly width x height."""
    info = msg.info
    width, height = int(info.width), int(info.height)
    data = np.asarray(msg.data)
    if data.size != width * height:
        raise MessageError(
            f"nav_msgs/msg/OccupancyGrid: data has {data.size} cells, "
            f"width {width} x height {height} = {width * height}"
        )
    if data.dtype != np.int8:
        data = data.astype(np.int8)
    return Grid(
        grid=data.reshape(height, width),
        resolution=float(np.float32(info.resolution)),
        origin=pose_to_matrix(info.origin),
        frame_id=msg.header.frame_id,
        stamp_ns=stamp_to_ns(msg.header.stamp),
    )
