"""Rigid transforms as 4x4 homogeneous matrices; quaternions only where they are needed.

Every pose or transform in the package is one ``float64`` 4x4 matrix ``T_a_from_b`` that maps
points in frame ``b`` to frame ``a`` (``p_a = T_a_from_b @ p_b``): it composes with ``@`` and needs
no convention table. Quaternions ``(x, y, z, w)`` appear where messages carry them and where
rotations are interpolated (:func:`slerp`); they are normalised on the way in and returned with
``w >= 0`` on the way out, so a matrix -> quaternion -> matrix round trip is exact up to rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import GeometryError

#: How far ``R @ R.T`` may stray from the identity: loose enough for float32 messages and for
#: products of many transforms, tight enough to catch a scaled or sheared matrix.
ORTHO_TOL = 1e-5


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Quaternion (normalised here; zero or not finite raises) -> 3x3 rotation matrix."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise GeometryError(f"quaternion {q.tolist()} has no direction (zero or not finite)")
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: Any) -> tuple[float, float, float, float]:
    """3x3 rotation matrix -> unit quaternion ``(x, y, z, w)`` with ``w >= 0``.

    Shepperd's method: divide by the largest of the four candidate terms, which keeps the result
    accurate near 180-degree rotations where the trace formula alone loses precision.
    """
    m = check_rotation(rotation)
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


def axis_angle_matrix(axis: Any, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about ``axis`` (any length but zero), right-handed."""
    a = np.asarray(axis, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(a)
    if not np.isfinite(norm) or norm < 1e-12:
        raise GeometryError(f"rotation axis {a.tolist()} has no direction (zero or not finite)")
    half = 0.5 * float(angle)
    x, y, z = a / norm * np.sin(half)
    return quaternion_to_matrix(x, y, z, np.cos(half))


def check_rotation(rotation: Any) -> np.ndarray:
    """Return ``rotation`` as a float64 3x3 array, or raise if it is not a proper rotation."""
    m = np.asarray(rotation, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise GeometryError(f"rotation must be a finite 3x3 matrix, got shape {m.shape}")
    if not np.allclose(m @ m.T, np.eye(3), atol=ORTHO_TOL) or np.linalg.det(m) <= 0:
        raise GeometryError("rotation matrix is not orthonormal with determinant +1")
    return m


def check_transform(matrix: Any) -> np.ndarray:
    """Return ``matrix`` as a float64 4x4 array, or raise if it is not a rigid transform."""
    t = np.asarray(matrix, dtype=np.float64)
    if t.shape != (4, 4) or not np.all(np.isfinite(t)):
        raise GeometryError(f"transform must be a finite 4x4 matrix, got shape {t.shape}")
    if not np.allclose(t[3], [0.0, 0.0, 0.0, 1.0]):
        raise GeometryError(f"transform's last row must be [0, 0, 0, 1], got {t[3].tolist()}")
    check_rotation(t[:3, :3])
    return t


def make_transform(rotation: Any = None, translation: Any = None) -> np.ndarray:
    """4x4 matrix from a 3x3 rotation (identity if None) and a translation (zero if None).

    The rotation may also be a quaternion ``(x, y, z, w)``, the form messages and calibration
    files give it in.
    """
    t = np.eye(4)
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float64)
        t[:3, :3] = quaternion_to_matrix(*r) if r.shape == (4,) else check_rotation(r)
    if translation is not None:
        v = np.asarray(translation, dtype=np.float64)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            raise GeometryError(f"translation must be 3 finite numbers, got {v.tolist()}")
        t[:3, 3] = v
    return t


def invert(matrix: Any) -> np.ndarray:
    """Inverse of a rigid transform: ``[R^T | -R^T t]``, exact where ``np.linalg.inv`` rounds."""
    t = np.asarray(matrix, dtype=np.float64)
    if t.shape != (4, 4):
        raise GeometryError(f"transform must be a finite 4x4 matrix, got shape {t.shape}")
    out = np.eye(4)
    out[:3, :3] = t[:3, :3].T
    out[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return out


def planar_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    """4x4 matrix of a pose in the plane: position ``(x, y, 0)``, rotation ``yaw`` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    t = np.eye(4)
    t[:2, :2] = [[c, -s], [s, c]]
    t[:2, 3] = [x, y]
    return t


def transform_points(matrix: Any, points: Any) -> np.ndarray:
    """Apply a 4x4 transform to points of shape (3,) or (N, 3); the result has the same shape."""
    t = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1:] != (3,) or p.ndim > 2:
        raise GeometryError(f"points must have shape (3,) or (N, 3), got {p.shape}")
    return p @ t[:3, :3].T + t[:3, 3]


def slerp(q0: Any, q1: Any, fraction: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions ``(x, y, z, w)`` along the short arc.

    ``fraction`` 0 gives ``q0``, 1 gives ``q1`` (each normalised, the result with ``w >= 0``).
    The short arc is the one tf2 takes: ``q`` and ``-q`` are one rotation, so interpolating
    towards whichever of them is nearer never swings the long way round.
    """
    a = np.asarray(q0, dtype=np.float64)
    b = np.asarray(q1, dtype=np.float64)
    for q in (a, b):
        if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
            raise GeometryError(f"quaternion {q.tolist()} has no direction (zero or not finite)")
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    dot = float(a @ b)
    if dot < 0.0:
        b, dot = -b, -dot
    if dot > 1.0 - 1e-10:  # nearly equal: the sine below would divide by ~0
        out = a + fraction * (b - a)
    else:
        theta = np.arccos(min(dot, 1.0))
        out = (np.sin((1.0 - fraction) * theta) * a + np.sin(fraction * theta) * b) / np.sin(theta)
    out /= np.linalg.norm(out)
    return -out if out[3] < 0 else out


def interpolate_transform(a: Any, b: Any, fraction: float) -> np.ndarray:
    """Transform ``fraction`` of the way from ``a`` to ``b``: slerp rotation, linear translation.

    This is how tf2 interpolates between two samples of one edge, so a lookup between two stamps
    gives what a ROS node would get.
    """
    ta, tb = check_transform(a), check_transform(b)
    q = slerp(matrix_to_quaternion(ta[:3, :3]), matrix_to_quaternion(tb[:3, :3]), fraction)
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(*q)
    out[:3, 3] = ta[:3, 3] + fraction * (tb[:3, 3] - ta[:3, 3])
    return out
