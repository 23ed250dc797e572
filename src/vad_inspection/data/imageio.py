"""Reading image and mask files into the arrays that :mod:`vad_inspection.data.types` fixes.

Every loader goes through these two functions so that channel order (RGB, never OpenCV's BGR),
the gray ``(H, W, 1)`` shape and the error on a bad file are the same for all datasets. Files are
read with ``np.fromfile`` + ``cv2.imdecode`` rather than ``cv2.imread`` because ``imread`` fails
silently (returns ``None``) on non-ASCII paths on some platforms, and because having the bytes lets
us name the exact problem (missing, empty, truncated, not an image).

Bit depth: 8-bit files give ``uint8``; 16-bit PNG/TIFF files are returned as stored (``uint16``),
not rescaled, because a rescale rule belongs to the dataset that knows its radiometry.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from vad_inspection.data.types import DatasetError

__all__ = ["IMAGE_SUFFIXES", "image_shape", "read_image", "read_mask"]

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Channels read_image returns per PNG colour type: alpha dropped, palette expanded to RGB, and
# gray+alpha is RGB too because OpenCV decodes it to BGRA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 3, 6: 3}


def _read_bytes(path: Path) -> np.ndarray:
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if not path.is_file():
        raise DatasetError(f"{path}: not a file (expected an image file)")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error})") from error
    if data.size == 0:
        raise DatasetError(f"{path}: empty file (0 bytes), expected an image")
    return data


def _jpeg_truncated(data: np.ndarray) -> bool:
    """True when a JPEG has no end-of-image marker after its first scan.

    OpenCV >= 5 refuses truncated JPEGs, but 4.x (what ROS distributions ship) decodes them and
    fills the missing rows with gray; the marker check makes both behave alike.
    """
    raw = data.tobytes()
    if not raw.startswith(b"\xff\xd8"):
        return False
    scan = raw.find(b"\xff\xda")
    return scan >= 0 and raw.rfind(b"\xff\xd9") < scan


def _decode(path: Path) -> np.ndarray:
    data = _read_bytes(path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DatasetError(
            f"{path}: not a decodable image ({data.size} bytes; corrupt, truncated or not an "
            f"image file)"
        )
    if _jpeg_truncated(data):
        raise DatasetError(f"{path}: truncated JPEG (no end-of-image marker)")
    return image


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's decoded layout (2-D gray, BGR, BGRA) to the contract's (H, W, C) gray or RGB."""
    if image.ndim == 2:
        return image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return image
    if channels == 2:  # gray + alpha
        return np.ascontiguousarray(image[:, :, :1])
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return image


def read_image(path: Path | str, channels: int | None = None) -> np.ndarray:
    """An image file as ``(H, W, C)``: C=1 for gray files, RGB (alpha dropped) for colour files.

    ``channels`` (1 or 3) forces a channel count, so a loader can promise one ``Dataset.channels``
    even when a published set mixes gray and colour files (colour to gray uses OpenCV's BT.601
    luma weights; gray to RGB repeats the plane).
    """
    path = Path(path)
    image = _to_rgb(_decode(path))
    have = image.shape[2]
    if channels is None or channels == have:
        return image
    if channels == 1 and have == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=2)
    raise DatasetError(f"{path}: has {have} channels, cannot convert to {channels}")


def read_mask(path: Path | str) -> np.ndarray:
    """A ground-truth mask file as ``bool (H, W)``: True where the value is above half-scale.

    Half-scale (``> 127`` for 8-bit), not "nonzero", because published masks are often resampled
    or JPEG-touched: the magnetic-tile masks have thousands of pixels at values 1-9 far from the
    defect, which "nonzero" would count as defect. Colour masks use the brightest colour channel.
    """
    path = Path(path)
    mask = _decode(path)
    if mask.ndim == 3:
        mask = mask[:, :, :3].max(axis=2) if mask.shape[2] >= 3 else mask[:, :, 0]
    if np.issubdtype(mask.dtype, np.integer):
        return mask > np.iinfo(mask.dtype).max // 2
    return mask > 0.5


def image_shape(path: Path | str) -> tuple[int, int, int]:
    """``(H, W, C)`` that :func:`read_image` would return, without decoding PNGs.

    Loaders call this at open time (tile grids, ``Dataset.channels``); reading a PNG header is
    what keeps opening a set of large strips instant. Other formats are decoded.
    """
    path = Path(path)
    with_header = path.suffix.lower() == ".png" and path.is_file()
    if with_header:
        with path.open("rb") as stream:
            head = stream.read(26)
        if len(head) == 26 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            if head[25] in _PNG_CHANNELS and width > 0 and height > 0:
                return height, width, _PNG_CHANNELS[head[25]]
    height, width, channels = read_image(path).shape
    return height, width, channels
