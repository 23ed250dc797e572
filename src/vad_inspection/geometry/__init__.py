"""Geometry: cameras, rigid transforms, a tf buffer, and where image regions are in 3-D.

Layer 3 of the package: NumPy and OpenCV only (no messages, no transport), so the same code runs
in a node, in a test and offline on a bag. Poses are 4x4 matrices ``T_a_from_b`` mapping points
in frame ``b`` to frame ``a``; the message layer (:mod:`vad_inspection.msgs.geometry`) converts
them to and from ROS 2 messages. Every failure is a :class:`GeometryError` (a
:class:`~vad_inspection.errors.FrameError`: drop this input, keep running) that says why.
"""

from .camera import CameraModel
from .errors import GeometryError, TransformNotYet, TransformUnavailable
from .grid import Grid, cell_to_world, in_bounds, world_to_cell
from .locate import (
    Plane,
    RegionPoint,
    intersect_plane,
    plane_from_point_normal,
    point_from_depth,
    point_on_plane,
)
from .tf import DEFAULT_CACHE_NS, TransformBuffer
from .transforms import (
    axis_angle_matrix,
    check_rotation,
    check_transform,
    interpolate_transform,
    invert,
    make_transform,
    matrix_to_quaternion,
    planar_matrix,
    quaternion_to_matrix,
    slerp,
    transform_points,
)

__all__ = [
    "DEFAULT_CACHE_NS",
    "CameraModel",
    "GeometryError",
    "Grid",
    "Plane",
    "RegionPoint",
    "TransformBuffer",
    "TransformNotYet",
    "TransformUnavailable",
    "axis_angle_matrix",
    "cell_to_world",
    "check_rotation",
    "check_transform",
    "in_bounds",
    "interpolate_transform",
    "intersect_plane",
    "invert",
    "make_transform",
    "matrix_to_quaternion",
    "planar_matrix",
    "plane_from_point_normal",
    "point_from_depth",
    "point_on_plane",
    "quaternion_to_matrix",
    "slerp",
    "transform_points",
    "world_to_cell",
]
