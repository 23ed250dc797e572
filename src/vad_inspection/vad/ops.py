"""NumPy versions of the few tensor operations the methods need, and the map operations they share.

Each tensor operation reproduces the PyTorch operation the reference implementations use (same
padding, same interpolation grid), so that a model fitted here gives the same numbers as the
reference with the same weights -- without importing torch on the robot.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numba
import numpy as np


def avg_pool3(features: np.ndarray) -> np.ndarray:
    """3x3 average pooling, stride 1, zero padding 1, padding counted (torch ``AvgPool2d(3,1,1)``).

    PatchCore's "locally aware" patch features: each position summarises its neighbourhood.
    Separable: three shifted sums along each axis.
    """
    padded = np.pad(features, ((0, 0), (0, 0), (1, 1), (1, 1)))
    rows = padded[:, :, :-2] + padded[:, :, 1:-1] + padded[:, :, 2:]
    out = rows[:, :, :, :-2] + rows[:, :, :, 1:-1] + rows[:, :, :, 2:]
    return out / np.asarray(9, dtype=features.dtype)


@lru_cache(maxsize=64)
def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """Weights of ``F.interpolate(mode="bilinear", align_corners=False)`` along one axis."""
    matrix = np.zeros((dst, src), dtype=np.float32)
    scale = src / dst
    for i in range(dst):
        x = max((i + 0.5) * scale - 0.5, 0.0)
        x0 = min(int(x), src - 1)
        x1 = min(x0 + 1, src - 1)
        frac = x - x0
        matrix[i, x0] += 1.0 - frac
        matrix[i, x1] += frac
    return matrix


def resize_bilinear(features: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, C, H, W)`` to ``size`` like torch's bilinear ``interpolate`` (no antialias).

    Separable matrices rather than cv2.resize: OpenCV caps the channel count, backbones do not.
    """
    _, _, h, w = features.shape
    if (h, w) == tuple(size):
        return features
    rows = _bilinear_matrix(h, size[0])
    cols = _bilinear_matrix(w, size[1])
    return np.matmul(np.matmul(rows, features), cols.T).astype(features.dtype, copy=False)


def _centred_matrix(src: int, dst: int) -> np.ndarray:
    """Linear weights putting grid cell ``k`` at output pixel ``k * dst / src`` (clamped)."""
    scale = src / dst
    matrix = np.zeros((dst, src), dtype=np.float32)
    for i in range(dst):
        x = min(i * scale, src - 1.0)
        x0 = int(x)
        x1 = min(x0 + 1, src - 1)
        matrix[i, x0] += 1.0 - (x - x0)
        matrix[i, x1] += x - x0
    return matrix


def resize_centred(features: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample a backbone's ``(N, C, H, W)`` grid to the input's ``size`` where it belongs.

    A cell of a stride-``s`` feature map built by padded 3x3 convolutions is centred on input
    pixel ``s * k``, not on the middle of the block ``[s k, s k + s)`` that nearest or
    ``align_corners=False`` upsampling paints it over: those shift every anomaly map by
    ``(s - 1) / 2`` pixels right and down (3.5 px at stride 8, measured as a 3 to 4 cm bias of
    defect positions in ``tests/scenes3d.py``). Here output pixel ``i`` interpolates the grid at
    ``i / s``.
    """
    _, _, h, w = features.shape
    if (h, w) == tuple(size):
        return features
    rows, cols = _centred_matrix(h, size[0]), _centred_matrix(w, size[1])
    return np.matmul(np.matmul(rows, features), cols.T).astype(features.dtype, copy=False)


def resize_nearest(features: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, C, H, W)`` like torch's ``interpolate(mode="nearest")``: floor(i * in / out)."""
    _, _, h, w = features.shape
    rows = np.minimum((np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return features[:, :, rows][:, :, :, cols]


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel width covering +-4 sigma, the convention of the reference implementations."""
    return 2 * int(4.0 * sigma + 0.5) + 1


def gaussian_blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``(N, H, W)`` maps with reflect padding (torch "reflect")."""
    if sigma <= 0:
        return maps
    size = gaussian_kernel_size(sigma)
    return np.stack(
        [
            cv2.GaussianBlur(
                m, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
            )
            for m in maps.astype(np.float32, copy=False)
        ]
    )


#: Which side of a signed difference (image minus its expectation) counts as anomalous.
POLARITIES: tuple[str, ...] = ("both", "darker", "brighter")


def one_sided(difference: np.ndarray, polarity: str) -> np.ndarray:
    """``|difference|`` (``both``), its negative part (``darker``) or positive part (``brighter``).

    ``difference`` is the image minus what was expected there (a reconstruction, a local mean).
    Cracks, holes and pits are darker than expected; keeping one side stops bright texture from
    competing with them. The VAE and the local-contrast baseline share this, so a table comparing
    them compares their expectations, not two readings of the sign.
    """
    if polarity == "both":
        return np.abs(difference)
    if polarity == "darker":
        return np.maximum(-difference, 0.0)
    if polarity == "brighter":
        return np.maximum(difference, 0.0)
    raise ValueError(f"polarity must be one of {POLARITIES}; got {polarity!r}")


#: Orientations of :func:`line_response`: 15 degrees apart, fine enough that a straight line of up
#: to ~30 px stays within a pixel of one of them.
LINE_ORIENTATIONS = 12


def check_line_length(length: int) -> None:
    """A model's ``line_length`` option: 0 (no line detector) or a length :func:`line_response`
    accepts. Checked where the option is set (VAEConfig, LocalContrast), so a bad value fails at
    construction rather than on the first frame."""
    if length and (length < 3 or length % 2 == 0):
        raise ValueError(f"line_length must be 0 (off) or odd >= 3; got {length}")


@lru_cache(maxsize=16)
def _line_offsets(length: int, orientations: int) -> tuple[np.ndarray, ...]:
    """Per orientation, the ``(k, 2)`` pixel offsets of a centred line of ``length`` px."""
    half = (length - 1) / 2
    steps = np.linspace(-half, half, 4 * length)
    offsets = []
    for i in range(orientations):
        angle = np.pi * i / orientations
        points = np.stack([np.rint(steps * np.sin(angle)), np.rint(steps * np.cos(angle))], 1)
        offsets.append(np.unique(points.astype(np.int64), axis=0))
    return tuple(offsets)


@lru_cache(maxsize=16)
def _packed_line_offsets(length: int, orientations: int) -> tuple[np.ndarray, ...]:
    """:func:`_line_offsets` as the kernel takes them: row offsets, column offsets, and where
    each orientation's group starts (computed once per length, not per frame)."""
    offsets = _line_offsets(length, orientations)
    flat = np.concatenate(offsets)
    starts = np.cumsum([0] + [len(o) for o in offsets]).astype(np.int64)
    return np.ascontiguousarray(flat[:, 0]), np.ascontiguousarray(flat[:, 1]), starts


def line_response(
    maps: np.ndarray, length: int, orientations: int = LINE_ORIENTATIONS
) -> np.ndarray:
    """Ricci and Perfetti's line detector on ``(N, H, W)`` maps: at each pixel, the largest mean
    along a ``length`` px line through it (over ``orientations``) minus the mean of the
    ``length x length`` square around it.

    A crack is long and thin: along its direction the line mean stays high while the square mean
    is diluted by the background, whereas a dark pit or grain of texture raises both alike. So
    elongated structure is kept and blobs are suppressed, with no training. Odd ``length`` >= 3;
    borders are reflected (OpenCV's REFLECT_101). The line sums run in a compiled kernel: for a
    256x256 frame's 16 tiles of 64 px at 23 px, 5.9 ms, where per-map 2-D filtering
    (``cv2.filter2D``) took 49 ms and shifted NumPy views 13.5 ms.
    """
    if length < 3 or length % 2 == 0:
        raise ValueError(f"line length must be odd and >= 3; got {length}")
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    r = length // 2
    padded = np.pad(maps, ((0, 0), (r, r), (r, r)), mode="reflect")
    rows, cols, starts = _packed_line_offsets(length, orientations)
    best = _max_line_mean(padded, rows + r, cols + r, starts, maps.shape[1], maps.shape[2])
    square = np.stack(
        [cv2.blur(m, (length, length), borderType=cv2.BORDER_REFLECT_101) for m in maps]
    )
    return best - square


@numba.njit(cache=True, nogil=True, fastmath=True)
def _max_line_mean(
    padded: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    starts: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:  # pragma: no cover - compiled
    """For each map and pixel, the largest mean over the orientations' offset groups
    (``starts`` delimits each orientation's offsets in ``rows`` / ``cols``). Whole shifted rows
    are added into one accumulator row, which the compiler vectorises; indexing the 3-D array
    per pixel instead was six times slower."""
    out = np.full((padded.shape[0], height, width), -np.inf, dtype=np.float32)
    line = np.zeros(width, dtype=np.float32)
    for n in range(padded.shape[0]):
        for i in range(height):
            best = out[n, i]
            for o in range(len(starts) - 1):
                line[:] = 0.0
                for k in range(starts[o], starts[o + 1]):
                    source = padded[n, i + rows[k], cols[k] : cols[k] + width]
                    for j in range(width):
                        line[j] += source[j]
                scale = np.float32(1.0) / np.float32(starts[o + 1] - starts[o])
                for j in range(width):
                    best[j] = max(best[j], line[j] * scale)
    return out
