"""Magnetic-tile surface defects (Huang et al. 2020), as published: one folder per class.

``MT_Free`` holds the defect-free tiles, every other ``MT_<Class>`` one defect type. Each JPEG
has its pixel mask beside it as a PNG; the ``MT_Free`` masks are published too and are read as
given (all 852 here are empty), so a wrongly annotated free tile would show up, not be hidden.
"""

from __future__ import annotations

from pathlib import Path

from vad_inspection.data.layout import file_sample, list_files, make_dataset, require_dir
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, DatasetError, Sample

__all__ = ["NORMAL_CLASS", "open_magnetic_tile"]

NORMAL_CLASS = "Free"
_LAYOUT = "the magnetic-tile layout MT_<Class>/Imgs/<name>.jpg with the mask <name>.png beside it"


def open_magnetic_tile(root: Path | str) -> Dataset:
    """All classes found; category is the class name (``Free`` normal, others anomalous), C=1."""
    root = require_dir(root, _LAYOUT)
    if not (root / f"MT_{NORMAL_CLASS}" / "Imgs").is_dir():
        raise DatasetError(f"no MT_{NORMAL_CLASS}/Imgs folder under {root}: expected {_LAYOUT}")
    samples: list[Sample] = []
    for folder in sorted(p for p in root.glob("MT_*") if p.is_dir()):
        images = require_dir(folder / "Imgs", _LAYOUT)
        category = folder.name.removeprefix("MT_")
        label = NORMAL if category == NORMAL_CLASS else ANOMALOUS
        for path in list_files(images, (".jpg",)):
            mask = path.with_suffix(".png")
            if not mask.is_file():
                raise DatasetError(f"{mask}: missing mask for {path}: expected {_LAYOUT}")
            samples.append(file_sample(root, path, label, category, 1, mask=mask))
    return make_dataset("magnetic_tile", root, samples, 1, True, _LAYOUT)
