"""Image codec: every encoding through CDR and back, padding, byte order, compression, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vad_inspection.msgs import (
    DISTROS,
    ENCODINGS,
    Frame,
    MessageError,
    compressed_to_frame,
    deserialize,
    encoding_info,
    frame_to_compressed,
    frame_to_msg,
    header,
    msg_class,
    msg_to_frame,
    serialize,
    to_rgb,
)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STAMP = 1_700_000_000_123_456_789
GENERIC = ("8UC6", "32FC6", "16SC3", "64FC2", "8SC1")  # OpenCV's names: multispectral bands


def random_image(encoding: str, height: int = 6, width: int = 9, seed: int = 0) -> np.ndarray:
    dtype, channels = encoding_info(encoding)
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        image = (rng.standard_normal(shape) * 1e3).astype(dtype)
        image.flat[0], image.flat[1] = np.nan, -np.inf  # must survive the round trip too
        return image
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    """A JPEG-friendly image whose three channels differ (so a channel swap is visible)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / 9.0)
    g = 128 + 100 * np.cos(y / 7.0)
    b = 40 + 3 * x
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def wire(msg, typename: str = IMAGE, distro: str = "jazzy"):
    return deserialize(serialize(msg, typename, distro), typename, distro)


@pytest.mark.parametrize("distro", DISTROS)
@pytest.mark.parametrize("encoding", [*ENCODINGS, *GENERIC])
def test_every_encoding_round_trips_exactly_through_cdr(encoding: str, distro: str) -> None:
    frame = Frame(random_image(encoding), encoding, STAMP, "camera_optical")
    msg = frame_to_msg(frame, distro)
    dtype, channels = encoding_info(encoding)
    assert (msg.height, msg.width, msg.encoding) == (6, 9, encoding)
    assert msg.step == 9 * channels * dtype.itemsize
    assert msg.data.size == msg.step * msg.height
    back = msg_to_frame(wire(msg, IMAGE, distro))
    assert back == frame
    assert back.image.dtype == dtype and back.image.shape == frame.image.shape
    assert back.stamp_ns == STAMP and back.frame_id == "camera_optical"


def test_decoded_frame_is_a_view_of_the_received_bytes() -> None:
    frame = Frame(random_image("rgb8", 32, 40), "rgb8", 1, "cam")
    received = wire(frame_to_msg(frame))
    back = msg_to_frame(received)
    assert np.shares_memory(back.image, received.data)
    assert back == frame


def make_image_msg(
    data: bytes, encoding: str, height: int, width: int, step: int, big: bool = False
):
    return msg_class(IMAGE)(
        header=header(5, "cam"),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big),
        step=step,
        data=np.frombuffer(data, dtype=np.uint8).copy(),
    )


@pytest.mark.parametrize("encoding", ["rgb8", "16UC1", "32FC1", "bgra8"])
def test_step_padding_is_skipped(encoding: str) -> None:
    image = random_image(encoding, 5, 7, seed=3)
    row = image.reshape(5, -1).view(np.uint8).reshape(5, -1)  # packed bytes per row
    padding = np.full((5, 13), 0xEE, dtype=np.uint8)  # 13: not a multiple of any pixel size
    data = np.hstack([row, padding]).tobytes()
    msg = make_image_msg(data, encoding, 5, 7, row.shape[1] + 13)
    back = msg_to_frame(wire(msg))
    assert back == Frame(image, encoding, 5, "cam")


def test_bigendian_mono16_is_decoded_to_native_values() -> None:
    image = np.array([[1, 2, 258], [65535, 4096, 0]], dtype=np.uint16)
    msg = make_image_msg(image.astype(">u2").tobytes(), "mono16", 2, 3, 6, big=True)
    back = msg_to_frame(wire(msg))
    assert back.image.dtype == np.dtype(np.uint16)  # native order
    np.testing.assert_array_equal(back.image, image)
    # the same bytes read as little-endian are different numbers: the flag matters
    little = msg_to_frame(make_image_msg(image.astype(">u2").tobytes(), "mono16", 2, 3, 6))
    assert not np.array_equal(little.image, image)


def test_truncated_image_data_raises_with_sizes() -> None:
    msg = make_image_msg(bytes(5 * 7 * 3 - 1), "rgb8", 5, 7, 21)
    with pytest.raises(MessageError, match=r"rgb8: data is truncated: 104 bytes < .* = 105"):
        msg_to_frame(msg)


def test_step_smaller_than_a_row_raises() -> None:
    msg = make_image_msg(bytes(200), "mono16", 5, 7, 13)
    with pytest.raises(MessageError, match=r"step 13 < width 7 x 2 bytes per pixel"):
        msg_to_frame(msg)


def test_unknown_encoding_raises_and_names_it() -> None:
    msg = make_image_msg(bytes(40), "yuv422", 4, 5, 10)
    with pytest.raises(MessageError, match=r"unknown image encoding 'yuv422'"):
        msg_to_frame(msg)
    with pytest.raises(MessageError, match=r"unknown image encoding 'bayer_rggb8'"):
        Frame(np.zeros((2, 2), np.uint8), "bayer_rggb8", 0, "cam")
    for name in ("8UC0", "32UC3", "16FC1", "8UC513", "8uc3", "8UC6x"):  # not OpenCV types
        with pytest.raises(MessageError, match="unknown image encoding"):
            encoding_info(name)


def test_multiband_frames_show_their_first_three_bands_and_refuse_compression() -> None:
    bands = random_image("8UC6", 4, 5)
    assert np.array_equal(to_rgb(Frame(bands, "8UC6", 0, "cam")), bands[..., :3])
    floats = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    shown = to_rgb(Frame(floats, "32FC6", 0, "cam"))
    assert shown.dtype == np.uint8 and shown[0, 0, 0] == 0 and shown[-1, -1, 2] == 255
    gray = to_rgb(Frame(random_image("16UC2", 4, 5), "16UC2", 0, "cam"))
    assert gray.shape == (4, 5, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    with pytest.raises(MessageError, match="8UC6 cannot be stored as png"):
        frame_to_compressed(Frame(bands, "8UC6", 0, "cam"), "png")


@pytest.mark.parametrize(
    ("image", "encoding", "expected"),
    [
        (np.zeros((2, 2), np.float64), "32FC1", "float32"),
        (np.zeros((2, 2, 3), np.uint8), "mono8", r"shape \(H, W\)"),
        (np.zeros((2, 2), np.uint8), "rgb8", r"shape \(H, W, 3\)"),
        (np.zeros((2, 2), ">u2"), "mono16", "native byte order"),
    ],
)
def test_frame_rejects_pixels_that_do_not_match_the_encoding(image, encoding, expected) -> None:
    with pytest.raises(MessageError, match=expected):
        Frame(image, encoding, 0, "cam")


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_jpeg_round_trip_is_close_and_keeps_channel_order(encoding: str) -> None:
    rgb = smooth_rgb()
    image = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1].copy(),
        "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
    }[encoding]
    frame = Frame(image, encoding, STAMP, "cam")
    msg = frame_to_compressed(frame, "jpeg", quality=95)
    inside = "mono8" if encoding == "mono8" else "bgr8"
    assert msg.format == f"{encoding}; jpeg compressed {inside}"
    assert bytes(msg.data[:2]) == b"\xff\xd8"  # a JPEG stream
    back = compressed_to_frame(wire(msg, COMPRESSED))
    assert back.encoding == encoding and back.image.shape == image.shape
    assert (back.stamp_ns, back.frame_id) == (STAMP, "cam")
    assert psnr(back.image, image) > 30
    if encoding != "mono8":  # with a channel swap the same comparison fails
        assert psnr(back.image[..., ::-1], image) < 20


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1"])
def test_png_round_trip_is_exact(encoding: str) -> None:
    frame = Frame(random_image(encoding, 12, 17, seed=7), encoding, STAMP, "cam")
    msg = frame_to_compressed(frame, "png")
    assert msg.format.startswith(f"{encoding}; png compressed ")
    assert bytes(msg.data[:4]) == b"\x89PNG"
    assert compressed_to_frame(wire(msg, COMPRESSED)) == frame


def test_bare_format_keeps_what_the_file_holds() -> None:
    bgr = smooth_rgb()[..., ::-1].copy()
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    msg = msg_class(COMPRESSED)(header=header(3, "cam"), format="png", data=buf.reshape(-1))
    back = compressed_to_frame(msg)
    assert back == Frame(bgr, "bgr8", 3, "cam")


def test_compressed_errors_are_message_errors() -> None:
    compressed = msg_class(COMPRESSED)
    garbage = compressed(
        header=header(1, "cam"),
        format="rgb8; jpeg compressed bgr8",
        data=np.arange(64, dtype=np.uint8),
    )
    with pytest.raises(MessageError, match=r"cannot decode 64 bytes as an image"):
        compressed_to_frame(garbage)
    empty = compressed(header=header(1, "cam"), format="jpeg", data=np.zeros(0, np.uint8))
    with pytest.raises(MessageError, match="no data"):
        compressed_to_frame(empty)
    depth = compressed(
        header=header(1, "cam"), format="16UC1; compressedDepth png", data=np.ones(9, np.uint8)
    )
    with pytest.raises(MessageError, match="compressedDepth"):
        compressed_to_frame(depth)
    unknown = compressed(
        header=header(1, "cam"), format="yuv9; png compressed bgr8", data=np.ones(9, np.uint8)
    )
    with pytest.raises(MessageError, match="unknown image encoding 'yuv9'"):
        compressed_to_frame(unknown)
    depth_frame = Frame(np.ones((4, 4), np.float32), "32FC1", 0, "cam")
    with pytest.raises(MessageError, match="32FC1 cannot be stored as png"):
        frame_to_compressed(depth_frame, "png")
    with pytest.raises(MessageError, match="mono16 cannot be stored as jpeg"):
        frame_to_compressed(Frame(np.ones((4, 4), np.uint16), "mono16", 0, "cam"), "jpeg")
    with pytest.raises(MessageError, match="unknown format 'webp'"):
        frame_to_compressed(Frame(np.ones((4, 4), np.uint8), "mono8", 0, "cam"), "webp")


def test_to_rgb_renders_every_layout() -> None:
    rgb = smooth_rgb(8, 10)
    alpha = np.full((*rgb.shape[:2], 1), 7, np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=-1),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=-1),
        "rgb16": rgb.astype(np.uint16) * 257,
    }
    for encoding, image in cases.items():
        out = to_rgb(Frame(np.ascontiguousarray(image), encoding, 0, "cam"))
        assert out.dtype == np.uint8 and out.shape == rgb.shape, encoding
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)

    mono16 = np.array([[0, 255, 256], [65535, 32768, 511]], np.uint16)
    out = to_rgb(Frame(mono16, "mono16", 0, "cam"))
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 1], [255, 128, 1]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])

    depth = np.array([[1.0, 2.0, np.nan], [3.0, np.inf, 2.0]], np.float32)
    out = to_rgb(Frame(depth, "32FC1", 0, "cam"))
    np.testing.assert_array_equal(out[..., 1], [[0, 128, 0], [255, 0, 128]])
    flat = to_rgb(Frame(np.full((2, 2), 5.0, np.float32), "32FC1", 0, "cam"))
    assert not flat.any()
