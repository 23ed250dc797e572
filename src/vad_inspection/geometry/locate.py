"""Where an image region is in 3-D: by a depth image, or by where its ray meets a known plane.

A detector finds a defect as pixels; a map needs metres. Two ways cover the platforms:

- a registered depth image (RGB-D camera, stereo): :func:`point_from_depth` takes the median of
  the region's valid depths, which survives the holes, zeros and flying pixels depth sensors
  produce at edges, and puts the region's centroid pixel at that depth;
- a known surface (the ground below a UAV, a wall in front of an arm's tool): :func:`point_on_plane`
  intersects the pixel's ray with the plane, through the transform between camera and plane.

Depth images follow REP 118: ``16UC1`` in millimetres or ``32FC1`` in metres, the value being the
distance along the optical axis (``z``), 0 or NaN where there is no measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from .camera import CameraModel
from .errors import GeometryError
from .transforms import check_transform

#: A plane ``(n, d)``: the points ``x`` with ``n . x + d = 0`` (``n`` need not be unit length).
Plane = tuple[Any, float]

Units = Literal["mm", "m", "auto"]

#: Relative difference of aspect ratio above which a depth image cannot be the camera's image
#: resized: it is another sensor's, or cropped, and its pixels do not line up with the region's.
_ASPECT_TOL = 0.01


@dataclass(frozen=True)
class RegionPoint:
    """The 3-D whereabouts of an image region, in the camera's optical frame (metres).

    ``point`` is the centroid pixel's ray at ``depth``; ``width``/``height`` the region's extent
    at that depth (from its bounding box); ``pixel`` the centroid in camera pixels; ``valid`` of
    ``total`` depth pixels in the region had a measurement.
    """

    point: np.ndarray
    depth: float
    width: float
    height: float
    pixel: tuple[float, float]
    valid: int
    total: int


def plane_from_point_normal(point: Any, normal: Any) -> tuple[np.ndarray, float]:
    """The plane through ``point`` with ``normal`` as ``(unit n, d)``."""
    n = np.asarray(normal, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(n)
    if not np.isfinite(norm) or norm < 1e-12:
        raise GeometryError(f"plane normal {n.tolist()} has no direction (zero or not finite)")
    n = n / norm
    return n, -float(n @ np.asarray(point, dtype=np.float64).reshape(3))


def intersect_plane(
    ray_origin: Any, ray_direction: Any, plane: Plane, *, max_distance: float | None = None
) -> np.ndarray:
    """Where the ray from ``ray_origin`` along ``ray_direction`` meets ``plane`` (same frame).

    Raises :class:`GeometryError` when the ray runs parallel to the plane, when the plane is
    behind the origin (only the line, not the ray, meets it), or when the hit lies farther than
    ``max_distance`` metres (a ray grazing the horizon meets the ground kilometres away).
    """
    origin = np.asarray(ray_origin, dtype=np.float64).reshape(3)
    direction = np.asarray(ray_direction, dtype=np.float64).reshape(3)
    n = np.asarray(plane[0], dtype=np.float64).reshape(3)
    length, n_norm = np.linalg.norm(direction), np.linalg.norm(n)
    if not (np.isfinite(length) and length > 1e-12):
        raise GeometryError(f"ray direction {direction.tolist()} has no direction")
    if not (np.isfinite(n_norm) and n_norm > 1e-12):
        raise GeometryError(f"plane normal {n.tolist()} has no direction (zero or not finite)")
    direction, n, d = direction / length, n / n_norm, float(plane[1]) / n_norm
    height = float(n @ origin + d)  # signed distance of the origin from the plane
    cosine = float(n @ direction)
    if abs(cosine) < 1e-9:
        raise GeometryError(
            f"the ray is parallel to the plane (its origin is {abs(height):.3f} m from it); "
            "it never meets it"
        )
    t = -height / cosine
    if t < 0:
        raise GeometryError(
            f"the plane is behind the camera: the ray points away from it and only its backward "
            f"extension meets it, {-t:.3f} m behind the origin"
        )
    if max_distance is not None and t > max_distance:
        raise GeometryError(
            f"the ray meets the plane {t:.1f} m away, beyond max_distance {max_distance:g} m "
            "(nearly parallel to it)"
        )
    return origin + t * direction


def point_on_plane(
    camera: CameraModel,
    pixel: tuple[float, float],
    T_plane_from_camera: Any,
    plane: Plane,
    *,
    rectified: bool = False,
    max_distance: float | None = None,
) -> np.ndarray:
    """3-D point, in the plane's frame, where pixel ``(u, v)``'s ray meets ``plane``.

    ``T_plane_from_camera`` maps points in the camera's optical frame to the frame ``plane`` is
    expressed in (a tf lookup ``lookup(plane_frame, camera.frame_id, stamp)``). Errors name the
    pixel and the camera, then the reason from :func:`intersect_plane`.
    """
    u, v = float(pixel[0]), float(pixel[1])
    t = check_transform(T_plane_from_camera)
    ray = camera.pixel_to_ray(u, v, rectified=rectified)
    try:
        return intersect_plane(t[:3, 3], t[:3, :3] @ ray, plane, max_distance=max_distance)
    except GeometryError as error:
        raise GeometryError(
            f"pixel ({u:.1f}, {v:.1f}) of camera {camera.frame_id!r}: {error}"
        ) from None


def point_from_depth(
    camera: CameraModel, depth: Any, region: Any, units: Units = "auto"
) -> RegionPoint:
    """3-D point and metric extent of ``region`` from a depth image registered to ``camera``.

    ``region`` is a boolean mask of the camera's image size (:attr:`CameraModel.image_size`) or a
    box ``(x_min, y_min, x_max, y_max)`` in its pixels, bounds as in slicing
    (``image[y_min:y_max, x_min:x_max]``). ``depth`` is uint16 (16UC1) or float (32FC1); ``units``
    ``"auto"`` reads uint16 as millimetres and floats as metres. The depth image may have another
    resolution than the camera (an RGB-D sensor's depth stream is often smaller); the region is
    scaled onto it, which needs the same aspect ratio.

    The depth is the median of the region's valid values (finite and > 0). Raises
    :class:`GeometryError` saying why there is no answer: an empty region or one outside the image,
    a depth image of another shape or type, or no valid depth in the region.
    """
    z_image, scale = depth_image(depth, units)
    cam_w, cam_h = camera.image_size
    depth_h, depth_w = z_image.shape
    if abs((depth_w / depth_h) / (cam_w / cam_h) - 1.0) > _ASPECT_TOL:
        raise GeometryError(
            f"depth image {depth_w}x{depth_h} and camera {camera.frame_id!r} images "
            f"{cam_w}x{cam_h} differ in aspect ratio: is the depth registered to this camera?"
        )
    sx, sy = depth_w / cam_w, depth_h / cam_h
    values, (u, v), (left, top, right, bottom) = _region(region, (cam_w, cam_h), z_image, sx, sy)

    values = values.astype(np.float64) * scale
    finite = np.isfinite(values)
    valid = finite & (values > 0)
    if not valid.any():
        raise GeometryError(
            f"no valid depth in the region: all {values.size} depth pixels are NaN or zero "
            f"({int((~finite).sum())} NaN or inf, {int((finite & (values <= 0)).sum())} zero or "
            "negative)"
        )
    z = float(np.median(values[valid]))
    rays = camera.pixel_to_ray(
        [u, left, right, u, u], [v, v, v, top, bottom], normalize=False
    )  # z = 1 rays: their x, y are tangents, so metres at depth z are z times their differences
    return RegionPoint(
        point=rays[0] * z,
        depth=z,
        width=float(z * (rays[2, 0] - rays[1, 0])),
        height=float(z * (rays[4, 1] - rays[3, 1])),
        pixel=(float(u), float(v)),
        valid=int(valid.sum()),
        total=int(values.size),
    )


def depth_image(depth: Any, units: str) -> tuple[np.ndarray, float]:
    """Depth as a 2-D array and the factor that turns its values into metres."""
    z = np.asarray(depth)
    if z.ndim == 3 and z.shape[2] == 1:
        z = z[:, :, 0]
    if z.ndim != 2 or z.size == 0:
        raise GeometryError(f"depth image must be 2-D (one channel), got shape {z.shape}")
    if units == "auto":
        if z.dtype == np.uint16:
            return z, 1e-3
        if np.issubdtype(z.dtype, np.floating):
            return z, 1.0
        raise GeometryError(
            f"depth image of dtype {z.dtype}: units='auto' knows uint16 (16UC1, mm) and float "
            "(32FC1, m); pass units='mm' or 'm'"
        )
    if units not in ("mm", "m"):
        raise GeometryError(f"depth units must be 'mm', 'm' or 'auto', got {units!r}")
    return z, 1e-3 if units == "mm" else 1.0


def _region(
    region: Any, size: tuple[int, int], z_image: np.ndarray, sx: float, sy: float
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float, float, float]]:
    """Depth values under ``region``, its centroid pixel and its box edges (camera pixels).

    Edges are continuous coordinates (pixel ``i`` spans ``i - 0.5`` to ``i + 0.5``).
    """
    cam_w, cam_h = size
    depth_h, depth_w = z_image.shape
    r = np.asarray(region)
    if r.ndim == 2:
        if r.shape != (cam_h, cam_w):
            raise GeometryError(
                f"region mask has shape {r.shape}, the camera's images {(cam_h, cam_w)} "
                "(height, width)"
            )
        mask = r.astype(bool)
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            raise GeometryError("region mask is empty")
        if (depth_w, depth_h) != (cam_w, cam_h):
            shrink = depth_w * depth_h < cam_w * cam_h
            scaled = cv2.resize(
                mask.astype(np.float32),
                (depth_w, depth_h),
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST,
            )
            mask = scaled > 0
        centroid = (float(cols.mean()), float(rows.mean()))
        edges = (cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5)
        values = z_image[mask]
        if values.size == 0:  # a sliver lost in an enlarging nearest-neighbour resize
            i = min(round((centroid[1] + 0.5) * sy - 0.5), depth_h - 1)
            j = min(round((centroid[0] + 0.5) * sx - 0.5), depth_w - 1)
            values = z_image[i : i + 1, j : j + 1].reshape(-1)
        return values, centroid, tuple(float(e) for e in edges)  # type: ignore[return-value]
    if r.shape != (4,) or not np.all(np.isfinite(r.astype(np.float64))):
        raise GeometryError(
            f"region must be a 2-D mask or a box (x_min, y_min, x_max, y_max), got shape {r.shape}"
        )
    x0, y0, x1, y1 = (float(b) for b in r)
    if not (x1 > x0 and y1 > y0):
        raise GeometryError(f"region box {(x0, y0, x1, y1)} is empty (needs x_max > x_min, ...)")
    x0, x1 = max(x0, 0.0), min(x1, float(cam_w))
    y0, y1 = max(y0, 0.0), min(y1, float(cam_h))
    if not (x1 > x0 and y1 > y0):
        raise GeometryError(
            f"region box {tuple(float(b) for b in r)} lies outside the {cam_w}x{cam_h} image"
        )
    i0, i1 = int(np.floor(y0 * sy)), max(int(np.ceil(y1 * sy)), int(np.floor(y0 * sy)) + 1)
    j0, j1 = int(np.floor(x0 * sx)), max(int(np.ceil(x1 * sx)), int(np.floor(x0 * sx)) + 1)
    values = z_image[min(i0, depth_h - 1) : i1, min(j0, depth_w - 1) : j1].reshape(-1)
    centroid = (0.5 * (x0 + x1) - 0.5, 0.5 * (y0 + y1) - 0.5)
    return values, centroid, (x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5)
