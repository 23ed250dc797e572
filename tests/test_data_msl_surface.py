"""open_msl_surface on its published layout: a small copy made here, and the real one beside us."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data import open_dataset
from vad_inspection.data.msl_surface import open_msl_surface
from vad_inspection.data.types import ANOMALOUS, NORMAL, DatasetError

SYNSETS = "0 apxs\n5 drill holes\n6 drt front\n7 drt side\n8 ground\n24 wheel\n"


def make_msl(root: Path, rows: dict[str, list[tuple[str, int]]]) -> Path:
    (root / "calibrated").mkdir(parents=True)
    (root / "msl_synset_words-indexed.txt").write_text(SYNSETS)
    for listing, entries in rows.items():
        lines = []
        for name, class_id in entries:
            image = np.full((32, 40, 3), class_id * 10, np.uint8)
            cv2.imwrite(str(root / "calibrated" / name), image)
            lines.append(f"calibrated/{name} {class_id}")
        (root / listing).write_text("\n".join(lines) + "\n")
    return root


ROWS = {
    "train-calibrated-shuffled.txt": [("a.JPG", 8), ("b.JPG", 8), ("c.JPG", 24), ("d.JPG", 5)],
    "val-calibrated-shuffled.txt": [("e.JPG", 8), ("f.JPG", 6), ("g.JPG", 0)],
}


def test_roles_of_the_classes_and_the_authors_split(tmp_path: Path) -> None:
    dataset = open_msl_surface(make_msl(tmp_path, ROWS))
    got = {s.id: (s.label, s.category, s.split) for s in dataset}
    assert got == {
        "calibrated/a": (NORMAL, "ground", "train"),
        "calibrated/b": (NORMAL, "ground", "train"),
        "calibrated/d": (ANOMALOUS, "drill holes", "train"),
        "calibrated/e": (NORMAL, "ground", "test"),  # held-out sols
        "calibrated/f": (ANOMALOUS, "drt front", "test"),
    }  # wheel and apxs: clutter, left out by default
    assert dataset[0].image().shape == (32, 40, 3)
    with_clutter = open_msl_surface(tmp_path, clutter="normal")
    assert {s.category for s in with_clutter.normal} == {"ground", "wheel", "apxs"}
    only_drill = open_dataset(f"msl_surface:{tmp_path}?anomalous=drill holes")
    assert {s.category for s in only_drill.anomalous} == {"drill holes"}


def test_bad_layouts_say_what_is_wrong(tmp_path: Path) -> None:
    root = make_msl(tmp_path / "a", ROWS)
    with pytest.raises(DatasetError, match=r"unknown class\(es\) \['drill'\]"):
        open_msl_surface(root, anomalous="drill")
    with pytest.raises(DatasetError, match="both normal and anomalous"):
        open_msl_surface(root, normal="ground,drt front")
    with pytest.raises(DatasetError, match="clutter must be"):
        open_msl_surface(root, clutter="keep")
    (root / "calibrated" / "e.JPG").unlink()
    with pytest.raises(
        DatasetError, match=r"1 listed image\(s\) missing, e.g. \['calibrated/e.JPG'\]"
    ):
        open_msl_surface(root)
    bad = make_msl(tmp_path / "b", ROWS)
    with open(bad / "val-calibrated-shuffled.txt", "a") as listing:
        listing.write("calibrated/x.JPG eight\n")
    with pytest.raises(DatasetError, match=r"val-calibrated-shuffled.txt:4: expected"):
        open_msl_surface(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        open_msl_surface(tmp_path / "nowhere")


def test_the_real_copy(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "shared/data/msl_surface"
    if not root.is_dir():
        pytest.skip("../shared/data/msl_surface not found")
    dataset = open_msl_surface(root)
    counts = Counter((s.category, s.split) for s in dataset)
    assert counts[("ground", "train")] > 1000 and counts[("drill holes", "test")] > 100
    assert {s.split for s in dataset} == {"train", "test"}
    image = dataset[0].image()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
