"""LROCNet chipouts (Zenodo 7041842): gray LROC NAC chips sorted into class folders.

Classes are ``ejecta`` (fresh crater with ejecta), ``oldcrater`` and ``none``; ``none`` is the
ordinary surface, so it is normal and the two crater classes are the anomalies. The archive may
hold the class folders directly or one level down under split folders (``train/ejecta/...``);
with split folders, each sample's ``split`` is its folder name. Other folders are not classes of
this set and are ignored.
"""

from __future__ import annotations

from pathlib import Path

from vad_inspection.data.layout import file_sample, list_images, make_dataset, require_dir
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, DatasetError, Sample

__all__ = ["CLASSES", "NORMAL_CLASS", "open_lrocnet"]

NORMAL_CLASS = "none"
CLASSES: tuple[str, ...] = ("ejecta", "none", "oldcrater")
_LAYOUT = (
    "the LROCNet layout <class>/<chip image> with classes ejecta, oldcrater, none, "
    "optionally under split folders (<split>/<class>/<chip image>)"
)


def _class_dirs(folder: Path) -> list[Path]:
    return [folder / c for c in CLASSES if (folder / c).is_dir()]


def open_lrocnet(root: Path | str) -> Dataset:
    """Chips as gray (C=1) samples, category = class folder, no masks."""
    root = require_dir(root, _LAYOUT)
    groups: list[tuple[str | None, Path]] = [(None, d) for d in _class_dirs(root)]
    if not groups:
        splits = sorted(p for p in root.iterdir() if p.is_dir())
        groups = [(s.name, d) for s in splits for d in _class_dirs(s)]
    if not groups:
        raise DatasetError(f"no ejecta, oldcrater or none folder under {root}: expected {_LAYOUT}")
    samples: list[Sample] = []
    for split, folder in groups:
        label = NORMAL if folder.name == NORMAL_CLASS else ANOMALOUS
        samples += [
            file_sample(root, p, label, folder.name, 1, split=split) for p in list_images(folder)
        ]
    return make_dataset("lrocnet", root, samples, 1, False, _LAYOUT)
