"""open_metu on small files in the METU concrete-crack layout (Positive/, Negative/)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data.metu import open_metu
from vad_inspection.data.types import ANOMALOUS, NORMAL, DatasetError


def make_metu(root: Path, positive: int = 2, negative: int = 3) -> Path:
    for folder, count in (("Positive", positive), ("Negative", negative)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            image = np.full((227, 227, 3), 120, np.uint8)
            assert cv2.imwrite(str(root / folder / f"{i + 1:05d}.jpg"), image)
    return root


def test_labels_and_shapes(tmp_path: Path) -> None:
    dataset = open_metu(make_metu(tmp_path))
    assert dataset.counts() == {"normal": 3, "crack": 2}
    assert [s.label for s in dataset] == [NORMAL] * 3 + [ANOMALOUS] * 2
    assert dataset[0].id == "Negative/00001"
    assert dataset.channels == 3 and not dataset.has_masks
    assert dataset[4].image().shape == (227, 227, 3) and dataset[4].mask() is None


def test_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "Positive").mkdir()
    with pytest.raises(DatasetError, match="Negative does not exist: expected the METU"):
        open_metu(tmp_path)


def test_corrupt_jpeg_fails_on_load_naming_the_file(tmp_path: Path) -> None:
    root = make_metu(tmp_path)
    bad = root / "Positive" / "00002.jpg"
    bad.write_bytes(bad.read_bytes()[:400])
    dataset = open_metu(root)  # lazily: opening does not read pixels
    with pytest.raises(DatasetError, match=re.escape("00002.jpg")):
        dataset[4].image()
