"""open_magnetic_tile on the real set in ../shared/data, and on small files for the errors."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data.magnetic_tile import open_magnetic_tile
from vad_inspection.data.types import NORMAL, DatasetError

REAL_COUNTS = {"Free": 852, "Blowhole": 115, "Break": 85, "Crack": 57, "Fray": 32}


def test_real_counts(magnetic_tile_root: Path) -> None:
    dataset = open_magnetic_tile(magnetic_tile_root)
    assert dataset.counts() == REAL_COUNTS
    assert len(dataset.normal) == 852 and len(dataset.anomalous) == 115 + 85 + 57 + 32
    assert {s.category for s in dataset.normal} == {"Free"}
    assert dataset.channels == 1 and dataset.has_masks
    assert len({s.id for s in dataset}) == len(dataset)


def test_real_images_and_masks(magnetic_tile_root: Path) -> None:
    """Every image is gray uint8 with a mask of its size; defect masks non-empty, Free empty."""
    for sample in open_magnetic_tile(magnetic_tile_root):
        image, mask = sample.image(), sample.mask()
        assert image.ndim == 3 and image.shape[2] == 1 and image.dtype == np.uint8, sample.id
        assert mask is not None and mask.dtype == bool, sample.id
        assert mask.shape == image.shape[:2], sample.id
        assert mask.any() == (sample.label != NORMAL), sample.id


def make_tiles(root: Path) -> Path:
    for cls, n in (("Free", 2), ("Crack", 1)):
        folder = root / f"MT_{cls}" / "Imgs"
        folder.mkdir(parents=True)
        for i in range(n):
            assert cv2.imwrite(str(folder / f"exp{i}.jpg"), np.full((30, 40), 90, np.uint8))
            mask = np.zeros((30, 40), np.uint8)
            mask[5:9, 5:9] = 255 if cls != "Free" else 0
            assert cv2.imwrite(str(folder / f"exp{i}.png"), mask)
    return root


def test_small_layout(tmp_path: Path) -> None:
    dataset = open_magnetic_tile(make_tiles(tmp_path))
    assert [s.id for s in dataset] == [
        "MT_Crack/Imgs/exp0",
        "MT_Free/Imgs/exp0",
        "MT_Free/Imgs/exp1",
    ]
    assert int(dataset[0].mask().sum()) == 16


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist: expected the magnetic-tile layout"):
        open_magnetic_tile(tmp_path / "absent")
    (tmp_path / "Imgs").mkdir()
    with pytest.raises(DatasetError, match="no MT_Free/Imgs folder under"):
        open_magnetic_tile(tmp_path)


def test_missing_mask(tmp_path: Path) -> None:
    root = make_tiles(tmp_path)
    (root / "MT_Crack" / "Imgs" / "exp0.png").unlink()
    with pytest.raises(DatasetError, match=re.escape("exp0.png: missing mask")):
        open_magnetic_tile(root)


def test_truncated_jpeg(tmp_path: Path) -> None:
    root = make_tiles(tmp_path)
    path = root / "MT_Free" / "Imgs" / "exp1.jpg"
    path.write_bytes(path.read_bytes()[:-100])
    sample = open_magnetic_tile(root)[2]
    with pytest.raises(DatasetError, match=re.escape("exp1.jpg")):
        sample.image()
