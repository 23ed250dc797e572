"""open_lrocnet on small chips in the LROCNet layout, flat and under split folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data.lrocnet import open_lrocnet
from vad_inspection.data.types import NORMAL, DatasetError


def chips(folder: Path, count: int, colour: bool = False) -> None:
    folder.mkdir(parents=True)
    shape = (227, 227, 3) if colour else (227, 227)
    for i in range(count):
        assert cv2.imwrite(str(folder / f"chip_{i}.png"), np.full(shape, 80, np.uint8))


def test_flat_layout(tmp_path: Path) -> None:
    chips(tmp_path / "none", 4)
    chips(tmp_path / "ejecta", 2)
    chips(tmp_path / "oldcrater", 1, colour=True)
    dataset = open_lrocnet(tmp_path)
    assert dataset.counts() == {"ejecta": 2, "none": 4, "oldcrater": 1}
    assert len(dataset.normal) == 4 and {s.category for s in dataset.normal} == {"none"}
    assert all(s.split is None for s in dataset)
    assert dataset.channels == 1 and not dataset.has_masks
    assert dataset[-1].image().shape == (227, 227, 1)  # a colour chip is made gray


def test_split_folders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        chips(tmp_path / split / "none", n)
        chips(tmp_path / split / "ejecta", 1)
    (tmp_path / "README.txt").write_text("not a class")
    dataset = open_lrocnet(tmp_path)
    assert len(dataset) == 9
    assert {s.split for s in dataset} == {"train", "val", "test"}
    train_normal = [s for s in dataset if s.split == "train" and s.label == NORMAL]
    assert len(train_normal) == 3 and train_normal[0].id == "train/none/chip_0"


def test_wrong_layout(tmp_path: Path) -> None:
    chips(tmp_path / "craters", 1)
    with pytest.raises(DatasetError, match="no ejecta, oldcrater or none folder"):
        open_lrocnet(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_lrocnet(tmp_path / "absent")
