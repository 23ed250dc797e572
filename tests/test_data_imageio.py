"""read_image, read_mask, image_shape: channel order, shapes, dtypes, errors on bad files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data.imageio import image_shape, read_image, read_mask
from vad_inspection.data.types import DatasetError


def write(path: Path, array: np.ndarray) -> Path:
    """cv2.imwrite through imencode, so non-ASCII paths work; ``array`` is in OpenCV order."""
    ok, data = cv2.imencode(path.suffix, array)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    data.tofile(path)
    return path


def test_colour_file_is_rgb_not_bgr(tmp_path: Path) -> None:
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV's order
    image = read_image(write(tmp_path / "blue.png", bgr))
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [0, 0, 255]


def test_gray_file_keeps_one_channel(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    image = read_image(write(tmp_path / "g.png", gray))
    assert image.shape == (4, 5, 1)
    np.testing.assert_array_equal(image[..., 0], gray)


def test_alpha_is_dropped(tmp_path: Path) -> None:
    bgra = np.zeros((3, 3, 4), np.uint8)
    bgra[..., 2] = 200  # red
    bgra[..., 3] = 17
    image = read_image(write(tmp_path / "a.png", bgra))
    assert image.shape == (3, 3, 3)
    assert image[1, 1].tolist() == [200, 0, 0]


def test_sixteen_bit_is_kept(tmp_path: Path) -> None:
    deep = np.full((2, 2), 40000, np.uint16)
    image = read_image(write(tmp_path / "d.png", deep))
    assert image.dtype == np.uint16 and int(image.max()) == 40000


def test_forced_channels(tmp_path: Path) -> None:
    bgr = np.full((2, 2, 3), (10, 20, 30), np.uint8)
    path = write(tmp_path / "c.png", bgr)
    gray = read_image(path, channels=1)
    assert gray.shape == (2, 2, 1)
    assert int(gray[0, 0, 0]) == round(0.299 * 30 + 0.587 * 20 + 0.114 * 10)
    rgb = read_image(write(tmp_path / "g.png", np.full((2, 2), 7, np.uint8)), channels=3)
    assert rgb.shape == (2, 2, 3) and rgb[0, 0].tolist() == [7, 7, 7]


def test_odd_path(tmp_path: Path) -> None:
    path = write(tmp_path / "dossier é ü" / "image #1 ö.jpg", np.full((8, 8), 99, np.uint8))
    image = read_image(path)
    assert image.shape == (8, 8, 1)
    assert abs(int(image[4, 4, 0]) - 99) <= 2


def test_image_shape_matches_decoding(tmp_path: Path) -> None:
    arrays = {
        "gray.png": np.zeros((5, 7), np.uint8),
        "rgb.png": np.zeros((5, 7, 3), np.uint8),
        "rgba.png": np.zeros((5, 7, 4), np.uint8),
        "gray16.png": np.zeros((5, 7), np.uint16),
        "rgb.jpg": np.zeros((5, 7, 3), np.uint8),
    }
    for name, array in arrays.items():
        path = write(tmp_path / name, array)
        assert image_shape(path) == read_image(path).shape, name


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"just some text, not pixels", "not a decodable image"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=problem) as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        read_image(tmp_path / "nothing.png")
    with pytest.raises(DatasetError, match="not a file"):
        read_mask(tmp_path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_files(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    whole = write(tmp_path / f"whole{suffix}", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert read_image(whole).shape == (64, 64, 3)
    with pytest.raises(DatasetError, match="truncated") as error:
        read_image(cut)
    assert str(cut) in str(error.value)


def test_mask_threshold_is_half_scale(tmp_path: Path) -> None:
    values = np.array([[0, 9, 127], [128, 200, 255]], np.uint8)
    mask = read_mask(write(tmp_path / "m.png", values))
    assert mask.dtype == bool
    assert mask.tolist() == [[False, False, False], [True, True, True]]
    colour = np.zeros((1, 2, 3), np.uint8)
    colour[0, 1, 1] = 255
    assert read_mask(write(tmp_path / "c.png", colour)).tolist() == [[False, True]]
