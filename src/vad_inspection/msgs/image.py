"""Images: :class:`Frame` <-> sensor_msgs/Image and sensor_msgs/CompressedImage.

Pixels move as buffers, never pixel by pixel: an incoming Image becomes a NumPy view of the
message's bytes (``step`` padding skipped through strides, no copy unless the byte order must be
swapped), and an outgoing frame's array is handed to the message as its byte view.

Shapes follow the encoding: one-channel encodings give ``(H, W)``, the others ``(H, W, C)``.
The dtype is the encoding's, in native byte order (``uint16`` for mono16/16UC1/rgb16...,
``float32`` for 32FC1). Colour stays in the encoding's channel order (bgr8 is BGR); use
:func:`to_rgb` for a display/model-ready RGB view.

CompressedImage follows ROS's compressed_image_transport: ``format`` reads
``"<original encoding>; <jpeg|png> compressed <encoding inside the file>"`` (for example
``"rgb8; jpeg compressed bgr8"``), and decoding converts back to the original encoding when it can.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from numbers import Integral
from types import MappingProxyType
from typing import Any, NamedTuple

import cv2
import numpy as np

from .time import header, stamp_to_ns
from .types import MessageError, msg_class


class Encoding(NamedTuple):
    """Element type and channel count of a ROS image encoding."""

    dtype: np.dtype
    channels: int


def _enc(dtype: Any, channels: int) -> Encoding:
    return Encoding(np.dtype(dtype), channels)


ENCODINGS: MappingProxyType[str, Encoding] = MappingProxyType(
    {
        "mono8": _enc(np.uint8, 1),
        "mono16": _enc(np.uint16, 1),
        "rgb8": _enc(np.uint8, 3),
        "bgr8": _enc(np.uint8, 3),
        "rgba8": _enc(np.uint8, 4),
        "bgra8": _enc(np.uint8, 4),
        "rgb16": _enc(np.uint16, 3),
        "bgr16": _enc(np.uint16, 3),
        "rgba16": _enc(np.uint16, 4),
        "bgra16": _enc(np.uint16, 4),
        "8UC1": _enc(np.uint8, 1),
        "16UC1": _enc(np.uint16, 1),
        "16SC1": _enc(np.int16, 1),
        "32SC1": _enc(np.int32, 1),
        "32FC1": _enc(np.float32, 1),
        "64FC1": _enc(np.float64, 1),
    }
)
"""Named encodings: name -> (dtype, channels). Besides these, :func:`encoding_info` accepts
OpenCV's generic ``<bits><U|S|F>C<n>`` names (``8UC6``, ``32FC6``: a multispectral camera's
bands), as ROS's ``sensor_msgs/image_encodings.hpp`` does; anything else raises MessageError."""

# sensor_msgs/image_encodings.hpp matches "(8|16|32|64)(U|S|F)C([0-9]*)"; OpenCV allows 512 bands
_GENERIC = re.compile(r"(8|16|32|64)([USF])C([1-9][0-9]{0,2})")
_GENERIC_DTYPES = {
    ("8", "U"): np.uint8, ("8", "S"): np.int8, ("16", "U"): np.uint16, ("16", "S"): np.int16,
    ("32", "S"): np.int32, ("32", "F"): np.float32, ("64", "F"): np.float64,
}  # fmt: skip

_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_BIG = sys.byteorder == "big"


def encoding_info(encoding: str) -> Encoding:
    """``encoding``'s element type and channels; unknown names raise :class:`MessageError`."""
    known = ENCODINGS.get(encoding)
    if known is not None:
        return known
    match = _GENERIC.fullmatch(encoding)
    dtype = _GENERIC_DTYPES.get((match[1], match[2])) if match else None
    if match is None or dtype is None or int(match[3]) > 512:
        raise MessageError(
            f"unknown image encoding {encoding!r}; supported: {', '.join(ENCODINGS)} and "
            "<bits><U|S|F>C<bands> (8UC6, 16UC4, 32FC6, ...)"
        )
    return _enc(dtype, int(match[3]))


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera image in the domain: pixels, their encoding, when and in which frame.

    ``image`` may be a read-only view of a received message's bytes; copy it before writing.
    Equality compares pixels exactly (NaN equal to NaN), encoding, stamp and frame.
    """

    image: np.ndarray
    encoding: str
    stamp_ns: int
    frame_id: str

    def __post_init__(self) -> None:
        dtype, channels = encoding_info(self.encoding)
        image = self.image
        if not isinstance(image, np.ndarray):
            raise MessageError(f"Frame.image must be a numpy array, not {type(image).__name__}")
        if image.dtype != dtype:
            raise MessageError(
                f"{self.encoding} needs {dtype} pixels in native byte order, got {image.dtype}"
            )
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        if (image.ndim != 2) if channels == 1 else (image.ndim != 3 or image.shape[2] != channels):
            raise MessageError(f"{self.encoding} needs shape {want}, got {image.shape}")
        if not isinstance(self.stamp_ns, Integral):
            raise MessageError(f"Frame.stamp_ns must be an int, got {type(self.stamp_ns).__name__}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.encoding == other.encoding
            and self.stamp_ns == other.stamp_ns
            and self.frame_id == other.frame_id
            and self.image.shape == other.image.shape
            and np.array_equal(self.image, other.image, equal_nan=self.image.dtype.kind == "f")
        )

    __hash__ = None  # type: ignore[assignment]  # holds an array: unhashable


def frame_to_msg(frame: Frame, distro: str = "jazzy") -> Any:
    """Frame -> sensor_msgs/msg/Image (tightly packed rows, native byte order)."""
    image = np.ascontiguousarray(frame.image)
    _, channels = encoding_info(frame.encoding)
    return msg_class(_IMAGE, distro)(
        header=header(frame.stamp_ns, frame.frame_id, distro),
        height=frame.height,
        width=frame.width,
        encoding=frame.encoding,
        is_bigendian=int(_BIG and image.dtype.itemsize > 1),
        step=frame.width * channels * image.dtype.itemsize,
        data=image.reshape(-1).view(np.uint8),
    )


def msg_to_frame(msg: Any) -> Frame:
    """sensor_msgs/msg/Image -> Frame, a zero-copy view where the byte order allows.

    Validates what a wrong or truncated message would otherwise turn into garbage or a crash:
    a known encoding, ``step >= width * bytes_per_pixel`` and ``len(data) >= step * height``.
    Row padding (``step`` larger than the packed row) is skipped through strides.
    """
    dtype, channels = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    pixel = dtype.itemsize * channels
    if step < width * pixel:
        raise MessageError(
            f"{_IMAGE} {msg.encoding}: step {step} < width {width} x {pixel} bytes per pixel"
        )
    data = _bytes_array(msg.data)
    if data.size < step * height:
        raise MessageError(
            f"{_IMAGE} {msg.encoding}: data is truncated: {data.size} bytes < "
            f"step {step} x height {height} = {step * height}"
        )
    order = ">" if msg.is_bigendian else "<"
    wire = dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype
    shape = (height, width) if channels == 1 else (height, width, channels)
    strides = (step, pixel) if channels == 1 else (step, pixel, dtype.itemsize)
    image = np.ndarray(shape, dtype=wire, buffer=data, strides=strides)
    if wire != dtype:  # the other byte order: one vectorised swap (copies)
        image = image.astype(dtype)
    return Frame(image, msg.encoding, stamp_to_ns(msg.header.stamp), msg.header.frame_id)


def _bytes_array(data: Any) -> np.ndarray:
    """Message ``data`` (ndarray, bytes, list) as a contiguous 1-D uint8 array; no copy if able."""
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.flags.c_contiguous:
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.ascontiguousarray(np.asarray(data, dtype=np.uint8)).reshape(-1)


# ---------------------------------------------------------------------------- compressed images

_CODECS = {"jpeg": ".jpg", "png": ".png"}

# encoding -> (encoding stored in the file per codec, conversion to it); None: not storable.
_TO_FILE: dict[str, dict[str, str | None]] = {
    "mono8": {"jpeg": "mono8", "png": "mono8"},
    "8UC1": {"jpeg": "mono8", "png": "mono8"},
    "rgb8": {"jpeg": "bgr8", "png": "bgr8"},
    "bgr8": {"jpeg": "bgr8", "png": "bgr8"},
    "rgba8": {"jpeg": "bgr8", "png": "bgra8"},
    "bgra8": {"jpeg": "bgr8", "png": "bgra8"},
    "mono16": {"jpeg": None, "png": "mono16"},
    "16UC1": {"jpeg": None, "png": "mono16"},
    "rgb16": {"jpeg": None, "png": "bgr16"},
    "bgr16": {"jpeg": None, "png": "bgr16"},
    "rgba16": {"jpeg": None, "png": "bgra16"},
    "bgra16": {"jpeg": None, "png": "bgra16"},
}

# Channel layouts, for conversions between encodings of one bit depth.
_LAYOUT = {
    "mono8": "mono", "8UC1": "mono", "mono16": "mono", "16UC1": "mono",
    "rgb8": "rgb", "rgb16": "rgb", "bgr8": "bgr", "bgr16": "bgr",
    "rgba8": "rgba", "rgba16": "rgba", "bgra8": "bgra", "bgra16": "bgra",
}  # fmt: skip
_CVT = {
    ("bgr", "rgb"): cv2.COLOR_BGR2RGB, ("rgb", "bgr"): cv2.COLOR_RGB2BGR,
    ("bgr", "rgba"): cv2.COLOR_BGR2RGBA, ("bgr", "bgra"): cv2.COLOR_BGR2BGRA,
    ("rgb", "bgra"): cv2.COLOR_RGB2BGRA, ("rgb", "rgba"): cv2.COLOR_RGB2RGBA,
    ("bgra", "rgba"): cv2.COLOR_BGRA2RGBA, ("rgba", "bgra"): cv2.COLOR_RGBA2BGRA,
    ("bgra", "bgr"): cv2.COLOR_BGRA2BGR, ("rgba", "bgr"): cv2.COLOR_RGBA2BGR,
    ("bgra", "rgb"): cv2.COLOR_BGRA2RGB, ("rgba", "rgb"): cv2.COLOR_RGBA2RGB,
    ("mono", "rgb"): cv2.COLOR_GRAY2RGB, ("mono", "bgr"): cv2.COLOR_GRAY2BGR,
    ("mono", "rgba"): cv2.COLOR_GRAY2RGBA, ("mono", "bgra"): cv2.COLOR_GRAY2BGRA,
}  # fmt: skip


def _convert(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Reorder/extend channels between two encodings of the same bit depth (OpenCV, no loops)."""
    if src == dst:
        return image
    if encoding_info(src).dtype != encoding_info(dst).dtype:
        raise MessageError(f"{_COMPRESSED}: cannot convert decoded {src} to {dst}")
    if src not in _LAYOUT or dst not in _LAYOUT:
        raise MessageError(f"{_COMPRESSED}: cannot convert decoded {src} to {dst}")
    if _LAYOUT[src] == _LAYOUT[dst]:
        return image
    code = _CVT.get((_LAYOUT[src], _LAYOUT[dst]))
    if code is None:
        raise MessageError(f"{_COMPRESSED}: cannot convert decoded {src} to {dst}")
    return cv2.cvtColor(np.ascontiguousarray(image), code)


def frame_to_compressed(
    frame: Frame, fmt: str = "jpeg", quality: int = 90, distro: str = "jazzy"
) -> Any:
    """Frame -> sensor_msgs/msg/CompressedImage as JPEG (lossy, 8-bit) or PNG (lossless).

    ``quality`` (0-100) is JPEG's; PNG is always lossless (zlib level 3, OpenCV's default).
    JPEG drops alpha. 16-bit encodings need PNG; float and signed depth images raise
    :class:`MessageError` (send them as raw Image).
    """
    if fmt not in _CODECS:
        raise MessageError(f"{_COMPRESSED}: unknown format {fmt!r}; use 'jpeg' or 'png'")
    target = _TO_FILE.get(frame.encoding, {}).get(fmt)
    if target is None:
        raise MessageError(
            f"{_COMPRESSED}: {frame.encoding} cannot be stored as {fmt} (jpeg takes 8-bit "
            "mono/colour, png 8- and 16-bit unsigned; send other encodings as raw Image)"
        )
    pixels = np.ascontiguousarray(_convert(frame.image, frame.encoding, target))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(_CODECS[fmt], pixels, params)
    if not ok:
        raise MessageError(f"{_COMPRESSED}: OpenCV could not encode {frame.encoding} as {fmt}")
    return msg_class(_COMPRESSED, distro)(
        header=header(frame.stamp_ns, frame.frame_id, distro),
        format=f"{frame.encoding}; {fmt} compressed {target}",
        data=buf.reshape(-1),
    )


def compressed_to_frame(msg: Any) -> Frame:
    """sensor_msgs/msg/CompressedImage (JPEG or PNG) -> Frame in the original encoding.

    ``format`` may be the full ROS form (``"rgb8; jpeg compressed bgr8"``) or a bare codec name
    (``"jpeg"``, ``"png"``, ``""``); without an original encoding the frame keeps what the file
    holds (mono8/mono16, bgr8/bgr16, bgra8/bgra16). compressedDepth is not supported.
    """
    text = str(msg.format).strip()
    original = None
    if ";" in text:
        original, rest = (part.strip() for part in text.split(";", 1))
        if "compressedDepth" in rest:
            raise MessageError(f"{_COMPRESSED}: compressedDepth ({text!r}) is not supported")
        encoding_info(original)
    data = _bytes_array(msg.data)
    if data.size == 0:
        raise MessageError(f"{_COMPRESSED}: no data (format {text!r})")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise MessageError(
            f"{_COMPRESSED}: cannot decode {data.size} bytes as an image (format {text!r})"
        )
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    depth = {np.dtype(np.uint8): "8", np.dtype(np.uint16): "16"}.get(decoded.dtype)
    inside = {1: "mono", 3: "bgr", 4: "bgra"}.get(channels)
    if depth is None or inside is None:
        raise MessageError(
            f"{_COMPRESSED}: decoded {decoded.dtype} image with {channels} channels is unsupported"
        )
    found = f"{inside}{depth}"
    image = decoded if original is None else _convert(decoded, found, original)
    return Frame(image, original or found, stamp_to_ns(msg.header.stamp), msg.header.frame_id)


# ---------------------------------------------------------------------------- display


def to_rgb(frame: Frame) -> np.ndarray:
    """An ``(H, W, 3) uint8`` RGB rendering of ``frame`` for display and RGB models.

    - rgb8 as is (may share memory with the frame); bgr8, rgba8, bgra8 reordered, alpha dropped;
    - mono8/8UC1 replicated into three channels;
    - 16-bit unsigned encodings keep their top byte (``>> 8``, as cv_bridge does for 16 -> 8 bit);
    - 16SC1, 32SC1, 32FC1, 64FC1 (depth, scores) are stretched linearly from their finite
      minimum (black) to maximum (white); NaN/inf become black, a constant image black;
    - generic ``<bits><U|S|F>C<n>`` frames (a multispectral camera's bands) show their first
      three bands as R, G, B (one band as gray), stretched jointly unless 8-bit, so band ratios
      survive: a quick look, not a colour rendering (which bands are visible is the sensor's).
    """
    image, encoding = frame.image, frame.encoding
    dtype, channels = encoding_info(encoding)
    if encoding not in ENCODINGS:
        bands = image if channels == 1 else image[..., : 3 if channels >= 3 else 1]
        shown = bands if dtype == np.uint8 else _stretch(bands)
        if shown.ndim == 3 and shown.shape[2] == 3:
            return np.ascontiguousarray(shown)
        return cv2.cvtColor(
            np.ascontiguousarray(shown.reshape(shown.shape[:2])), cv2.COLOR_GRAY2RGB
        )
    if dtype == np.uint16:
        image, encoding = (image >> 8).astype(np.uint8), encoding.replace("16", "8")
    elif dtype != np.uint8:
        image, encoding = _stretch(image), "mono8"
    layout = _LAYOUT[encoding]
    if layout == "rgb":
        return image
    if layout == "rgba":
        return np.ascontiguousarray(image[..., :3])
    code = {"bgr": cv2.COLOR_BGR2RGB, "bgra": cv2.COLOR_BGRA2RGB, "mono": cv2.COLOR_GRAY2RGB}
    return cv2.cvtColor(np.ascontiguousarray(image), code[layout])


def _stretch(image: np.ndarray) -> np.ndarray:
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(image.shape, np.uint8)
    low, high = values[finite].min(), values[finite].max()
    scale = 255.0 / (high - low) if high > low else 0.0
    out = np.where(finite, (values - low) * scale, 0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
