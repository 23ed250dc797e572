"""open_mvtec on a small category folder in the published MVTec AD layout."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data.mvtec import open_mvtec
from vad_inspection.data.types import ANOMALOUS, NORMAL, DatasetError


def write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_category(root: Path, gray: bool = False) -> Path:
    shape = (16, 20) if gray else (16, 20, 3)
    for i in range(3):
        write(root / "train" / "good" / f"{i:03d}.png", np.full(shape, 100, np.uint8))
    write(root / "test" / "good" / "000.png", np.full(shape, 100, np.uint8))
    for defect in ("crack", "scratch"):
        for i in range(2):
            write(root / "test" / defect / f"{i:03d}.png", np.full(shape, 50, np.uint8))
            mask = np.zeros((16, 20), np.uint8)
            mask[2:5, 3 + i : 9] = 255
            write(root / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return root


def test_samples_splits_and_masks(tmp_path: Path) -> None:
    dataset = open_mvtec(make_category(tmp_path / "bottle"))
    assert dataset.name == "mvtec_bottle"
    assert dataset.channels == 3 and dataset.has_masks
    assert len(dataset.normal) == 4 and len(dataset.anomalous) == 4
    assert [s.split for s in dataset].count("train") == 3
    assert all(s.split == "test" for s in dataset.anomalous)
    assert dataset.counts() == {"good": 4, "crack": 2, "scratch": 2}
    scratch = next(s for s in dataset if s.id == "test/scratch/001")
    assert scratch.label == ANOMALOUS
    assert scratch.mask().shape == (16, 20) and int(scratch.mask().sum()) == 3 * 5
    good = next(s for s in dataset if s.id == "test/good/000")
    assert good.label == NORMAL and good.mask().shape == (16, 20) and not good.mask().any()
    assert good.image().shape == (16, 20, 3)


def test_gray_category(tmp_path: Path) -> None:
    dataset = open_mvtec(make_category(tmp_path / "grid", gray=True))
    assert dataset.channels == 1
    assert dataset[0].image().shape == (16, 20, 1)


def test_missing_mask(tmp_path: Path) -> None:
    root = make_category(tmp_path / "bottle")
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=re.escape("001_mask.png: missing mask")):
        open_mvtec(root)


def test_mvtec_root_instead_of_category(tmp_path: Path) -> None:
    make_category(tmp_path / "bottle")
    make_category(tmp_path / "cable")
    with pytest.raises(DatasetError, match="holds categories bottle, cable: pass one of them"):
        open_mvtec(tmp_path)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist: expected the MVTec AD"):
        open_mvtec(tmp_path / "nope")
