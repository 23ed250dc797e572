"""open_folder: every image under a folder, recursive and sorted, all normal, one channel count."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data.folder import open_folder
from vad_inspection.data.types import NORMAL, DatasetError


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def test_recursive_sorted_normal_without_masks(tmp_path: Path) -> None:
    write(tmp_path / "b.png", np.zeros((5, 6, 3), np.uint8))
    write(tmp_path / "a.JPG", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "sub" / "c.bmp", np.zeros((4, 4), np.uint8))  # gray, converted to RGB
    write(tmp_path / "sub" / "d.tif", np.zeros((3, 3, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._b.png").write_bytes(b"macOS resource fork, not an image")
    dataset = open_folder(tmp_path)
    assert [s.id for s in dataset] == ["a.JPG", "b.png", "sub/c.bmp", "sub/d.tif"]
    assert {s.label for s in dataset} == {NORMAL}
    assert dataset.channels == 3 and not dataset.has_masks
    assert all(s.mask() is None for s in dataset)
    assert dataset[2].image().shape == (4, 4, 3)


def test_channels_follow_the_first_image(tmp_path: Path) -> None:
    write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    dataset = open_folder(tmp_path)
    assert dataset.channels == 1
    assert dataset[1].image().shape == (4, 4, 1)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist: expected a folder of normal images"):
        open_folder(tmp_path / "missing")
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.raises(DatasetError, match="no image files found"):
        open_folder(tmp_path)
