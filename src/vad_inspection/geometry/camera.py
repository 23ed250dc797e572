"""A calibrated camera as sensor_msgs/CameraInfo describes it: pixels <-> rays in its optical frame.

The optical frame is REP 103's: z forward along the optical axis, x right, y down, so pixel
``(cx, cy)`` looks along ``+z``. Pixel coordinates put the *centre* of the top-left pixel at
``(0, 0)``, as OpenCV and the ROS calibrators do.

Distortion follows ``distortion_model``: ``plumb_bob`` and ``rational_polynomial`` are OpenCV's
standard model (``cv2.undistortPoints`` / ``cv2.projectPoints``), ``equidistant`` its fisheye model
(``cv2.fisheye``). An empty or all-zero ``D`` means no distortion whatever the model says, as a
camera driver that publishes no calibration leaves it.

Binning and ROI are honoured as CameraInfo defines them: ``K``, ``P`` and ``width``/``height``
describe the full sensor, and the images are the ROI window, binned. :attr:`CameraModel.image_size`
is the size such images have, and every method works in their pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .errors import GeometryError

#: Lengths of ``D`` that OpenCV's standard model accepts; shorter vectors are padded with zeros.
_CV_LENGTHS = (4, 5, 8, 12, 14)
_PINHOLE_MODELS = ("plumb_bob", "rational_polynomial")
_FISHEYE_MODELS = ("equidistant",)

#: Iterate undistortion to 1e-10 px: OpenCV's default (5 iterations) leaves errors of 1e-3 rad
#: at the edges of a strongly distorted lens, more than a defect's position can afford.
_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)


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
        object.__setattr__(self, "binning_x", int(self.binning_x))
        object.__setattr__(self, "binning_y", int(self.binning_y))
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

    # ------------------------------------------------------------------ images it describes

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the images this CameraInfo describes (ROI window, binned)."""
        _, _, h, w, _ = self.roi
        width, height = (w, h) if w > 0 and h > 0 else (self.width, self.height)
        return width // max(self.binning_x, 1), height // max(self.binning_y, 1)

    @property
    def is_distorted(self) -> bool:
        """Whether any distortion coefficient is nonzero."""
        return bool(np.any(self.D != 0.0))

    def image_K(self) -> np.ndarray:
        """3x3 intrinsics in the pixels of :attr:`image_size` images (ROI and binning folded in)."""
        return self._to_image() @ self.K

    def image_P(self) -> np.ndarray:
        """3x4 projection in the pixels of :attr:`image_size` images (ROI and binning folded in)."""
        return self._to_image() @ self.P

    def _to_image(self) -> np.ndarray:
        """Full-sensor pixels -> image pixels: crop to the ROI, then bin.

        A bin of ``b`` sensor pixels has its centre ``(b - 1) / 2`` past its first one, hence the
        half-pixel terms (image_geometry divides ``cx`` by ``b`` and is off by that much).
        """
        x_off, y_off, h, w, _ = self.roi
        if not (w > 0 and h > 0):
            x_off = y_off = 0
        crop = np.array([[1.0, 0.0, -x_off], [0.0, 1.0, -y_off], [0.0, 0.0, 1.0]])
        return _scaling(1.0 / max(self.binning_x, 1), 1.0 / max(self.binning_y, 1)) @ crop

    def scaled(self, width: int, height: int, *, allow_anisotropic: bool = False) -> CameraModel:
        """The same camera for its images resized to ``width`` x ``height``.

        A detector often gets an image smaller than the camera's calibration (a 640x480 stream of
        a 1280x960 sensor, or its own resize); the rays of the resized pixels are the same as the
        original ones, so the intrinsics scale with the image. Pixel centres map as ``cv2.resize``
        maps them (``u' = (u + 0.5) s - 0.5``). ``D`` and ``R`` do not change (they act on
        normalised coordinates). The result has no ROI or binning: they are folded in.

        Raises :class:`GeometryError` for an uncalibrated camera, a size that is not positive,
        or an aspect ratio that differs from the camera's by more than integer rounding explains
        (a crop or another camera, not a resize) unless ``allow_anisotropic``.
        """
        self._check_calibrated()
        w0, h0 = self.image_size
        width, height = int(width), int(height)
        if width <= 0 or height <= 0 or w0 <= 0 or h0 <= 0:
            raise GeometryError(
                f"camera {self.frame_id!r}: cannot scale {w0}x{h0} images to {width}x{height}"
            )
        same_aspect = abs(width - w0 * height / h0) <= 1.0 or abs(height - h0 * width / w0) <= 1.0
        if not (same_aspect or allow_anisotropic):
            raise GeometryError(
                f"camera {self.frame_id!r}: an image of {width}x{height} (aspect "
                f"{width / height:.3f}) is not a resize of its {w0}x{h0} images (aspect "
                f"{w0 / h0:.3f}); a crop or another camera? (allow_anisotropic=True if the image "
                "was stretched)"
            )
        s = _scaling(width / w0, height / h0)
        return CameraModel(
            width=width,
            height=height,
            K=s @ self.image_K(),
            D=self.D,
            distortion_model=self.distortion_model,
            frame_id=self.frame_id,
            R=self.R,
            P=s @ self.image_P(),
        )

    # ------------------------------------------------------------------ pixels <-> rays

    def pixel_to_ray(
        self, u: Any, v: Any, *, normalize: bool = True, rectified: bool = False
    ) -> np.ndarray:
        """Rays in the optical frame through pixels ``(u, v)``; shape ``broadcast(u, v) + (3,)``.

        Pixels are those of the raw (distorted) image, undistorted here with ``D``; with
        ``rectified`` they are pixels of the rectified image (``image_rect``), read through ``P``
        and rotated back by ``R`` into the optical frame. Rays have unit norm, or ``z = 1`` with
        ``normalize=False`` (then a depth ``z`` gives the point ``z * ray``).
        """
        self._check_calibrated()
        uu, vv = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
        shape = uu.shape
        pixels = np.stack([uu.reshape(-1), vv.reshape(-1)], axis=-1)
        if rectified:
            p = self.image_P()
            rays = np.linalg.solve(p[:, :3], _homogeneous(pixels).T).T @ self.R
        else:
            rays = _homogeneous(self._undistort(pixels))
        if normalize:
            rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        else:
            rays /= rays[:, 2:3]
        return rays.reshape((*shape, 3))

    def project(self, points: Any, *, rectified: bool = False) -> np.ndarray:
        """Pixels ``(u, v)`` of 3-D points in the optical frame; shape ``points.shape[:-1] + (2,)``.

        Points are distorted with ``D`` into raw-image pixels, or with ``rectified`` projected
        through ``R`` and ``P`` into rectified-image pixels. Points at or behind the camera
        (``z <= 0``) have no pixel: their rows are NaN.
        """
        self._check_calibrated()
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise GeometryError(f"points must have shape (..., 3), got {p.shape}")
        shape = p.shape[:-1]
        flat = p.reshape(-1, 3)
        out = np.full((flat.shape[0], 2), np.nan)
        front = flat[:, 2] > 0
        if front.any():
            ahead = np.ascontiguousarray(flat[front])
            if rectified:
                h = np.hstack([ahead @ self.R.T, np.ones((len(ahead), 1))]) @ self.image_P().T
                out[front] = h[:, :2] / h[:, 2:3]
            else:
                out[front] = self._distort(ahead)
        return out.reshape((*shape, 2))

    def _undistort(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) raw pixels -> (N, 2) normalised coordinates ``(x / z, y / z)``."""
        k = self.image_K()
        kind, d = self._distortion()
        if kind == "none" or len(pixels) == 0:
            return np.linalg.solve(k, _homogeneous(pixels).T).T[:, :2]
        src = np.ascontiguousarray(pixels.reshape(-1, 1, 2))
        if kind == "fisheye":
            out = cv2.fisheye.undistortPoints(src, k, d, None, None, None, _CRITERIA)
        else:
            out = cv2.undistortPoints(src, k, d, None, None, None, _CRITERIA)
        return out.reshape(-1, 2)

    def _distort(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points with ``z > 0`` -> (N, 2) raw pixels."""
        k = self.image_K()
        kind, d = self._distortion()
        if kind == "none":
            h = points @ k.T
            return h[:, :2] / h[:, 2:3]
        zero = np.zeros(3)
        if kind == "fisheye":
            out, _ = cv2.fisheye.projectPoints(points.reshape(1, -1, 3), zero, zero, k, d)
        else:
            out, _ = cv2.projectPoints(points.reshape(-1, 1, 3), zero, zero, k, d)
        return out.reshape(-1, 2)

    def _distortion(self) -> tuple[str, np.ndarray]:
        """``("none" | "pinhole" | "fisheye", D as OpenCV wants it)``, or why it cannot be used."""
        if not self.is_distorted:
            return "none", self.D
        model, n = self.distortion_model, self.D.size
        if model in _PINHOLE_MODELS:
            if n > _CV_LENGTHS[-1]:
                raise GeometryError(
                    f"camera {self.frame_id!r}: {model} with {n} coefficients; OpenCV takes at "
                    f"most {_CV_LENGTHS[-1]}"
                )
            size = next(length for length in _CV_LENGTHS if length >= n)
            return "pinhole", np.pad(self.D, (0, size - n))
        if model in _FISHEYE_MODELS:
            if n > 4:
                raise GeometryError(
                    f"camera {self.frame_id!r}: {model} takes 4 coefficients (k1..k4), got {n}"
                )
            return "fisheye", np.pad(self.D, (0, 4 - n))
        raise GeometryError(
            f"camera {self.frame_id!r}: unknown distortion model {model!r} with nonzero D; "
            f"supported: {', '.join(_PINHOLE_MODELS + _FISHEYE_MODELS)}"
        )

    def _check_calibrated(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and np.all(np.isfinite(self.K))):
            raise GeometryError(
                f"camera {self.frame_id!r} is not calibrated: K has fx={self.fx}, fy={self.fy} "
                "(a driver without calibration publishes zeros)"
            )


def _scaling(sx: float, sy: float) -> np.ndarray:
    """Pixel map of a resize by ``(sx, sy)`` with pixel centres at integers (cv2.resize's)."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _homogeneous(xy: np.ndarray) -> np.ndarray:
    return np.hstack([xy, np.ones((len(xy), 1))])


def _frozen(values: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    try:
        array = array.reshape(shape)
    except ValueError:
        raise GeometryError(
            f"CameraModel.{name}: cannot shape {array.size} values as {shape}"
        ) from None
    array.flags.writeable = False
    return array
