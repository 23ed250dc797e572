"""Geometry messages <-> the domain types of :mod:`vad_inspection.geometry`.

Poses and transforms become 4x4 matrices (quaternions normalised on the way in, ``w >= 0`` on the
way out, so a round trip is exact up to float rounding), CameraInfo a ``CameraModel``,
OccupancyGrid a ``Grid``, a TFMessage the ``(parent, child, matrix, stamp_ns)`` tuples a
``TransformBuffer`` takes. The geometry itself lives in
``vad_inspection.geometry``; a message it cannot accept raises :class:`MessageError` here, naming
the message type, because at this boundary the message is what is bad.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..geometry import (
    CameraModel,
    GeometryError,
    Grid,
    check_transform,
    make_transform,
    matrix_to_quaternion,
    planar_matrix,
    quaternion_to_matrix,
)
from .time import header, ns_to_stamp, stamp_to_ns
from .types import MessageError, msg_class


@contextmanager
def _as_message_error(typename: str) -> Iterator[None]:
    """Re-raise a :class:`GeometryError` as a :class:`MessageError` about ``typename``."""
    try:
        yield
    except MessageError:
        raise
    except GeometryError as error:
        raise MessageError(f"{typename}: {error}") from None


# ---------------------------------------------------------------------------- poses, transforms


def pose_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs Pose (or PoseStamped / PoseWithCovariance[Stamped]) -> 4x4 matrix."""
    while hasattr(msg, "pose"):
        msg = msg.pose
    p, q = msg.position, msg.orientation
    with _as_message_error("geometry_msgs/msg/Pose"):
        return make_transform(quaternion_to_matrix(q.x, q.y, q.z, q.w), [p.x, p.y, p.z])


def matrix_to_pose(matrix: Any, distro: str = "jazzy") -> Any:
    """4x4 matrix -> geometry_msgs/msg/Pose."""
    with _as_message_error("geometry_msgs/msg/Pose"):
        t = check_transform(matrix)
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
    with _as_message_error("geometry_msgs/msg/Transform"):
        return make_transform(quaternion_to_matrix(q.x, q.y, q.z, q.w), [v.x, v.y, v.z])


def matrix_to_transform(matrix: Any, distro: str = "jazzy") -> Any:
    """4x4 matrix -> geometry_msgs/msg/Transform."""
    with _as_message_error("geometry_msgs/msg/Transform"):
        t = check_transform(matrix)
        x, y, z, w = matrix_to_quaternion(t[:3, :3])
    return msg_class("geometry_msgs/msg/Transform", distro)(
        translation=msg_class("geometry_msgs/msg/Vector3", distro)(*map(float, t[:3, 3])),
        rotation=msg_class("geometry_msgs/msg/Quaternion", distro)(x=x, y=y, z=z, w=w),
    )


def tf_message_to_transforms(msg: Any) -> Iterator[tuple[str, str, np.ndarray, int]]:
    """tf2_msgs/msg/TFMessage -> ``(parent, child, matrix, stamp_ns)`` per transform.

    Ready for :meth:`TransformBuffer.set_transform` (``static=True`` for /tf_static: whether
    an edge is static is the topic's business, not the message's). A bad quaternion raises
    :class:`MessageError` naming the edge.
    """
    for stamped in msg.transforms:
        parent, child = stamped.header.frame_id, stamped.child_frame_id
        try:
            matrix = transform_to_matrix(stamped)
        except MessageError as error:
            raise MessageError(
                f"tf2_msgs/msg/TFMessage: {parent!r} -> {child!r}: {error}"
            ) from None
        yield parent, child, matrix, stamp_to_ns(stamped.header.stamp)


# ---------------------------------------------------------------------------- camera model


def camera_info_to_model(msg: Any) -> CameraModel:
    """sensor_msgs/msg/CameraInfo -> CameraModel (validates the fixed-size arrays)."""
    roi = msg.roi
    with _as_message_error("sensor_msgs/msg/CameraInfo"):
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
