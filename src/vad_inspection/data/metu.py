"""METU concrete crack images (Özgenel 2019): 227x227 RGB JPEGs in ``Positive/`` and ``Negative/``.

``Positive`` holds surfaces with a crack (anomalous, category ``crack``), ``Negative`` intact
concrete (normal, category ``normal``, named like CrackForest's normal tiles). No pixel labels.
"""

from __future__ import annotations

from pathlib import Path

from vad_inspection.data.layout import file_sample, list_images, make_dataset, require_dir
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset

__all__ = ["open_metu"]

_LAYOUT = "the METU crack layout Positive/<name>.jpg (crack) and Negative/<name>.jpg (intact)"
_FOLDERS = (("Negative", NORMAL, "normal"), ("Positive", ANOMALOUS, "crack"))


def open_metu(root: Path | str) -> Dataset:
    """Intact images first, then cracked ones, each sorted by name; RGB (C=3), no masks."""
    root = require_dir(root, _LAYOUT)
    samples = []
    for folder, label, category in _FOLDERS:
        images = list_images(require_dir(root / folder, _LAYOUT))
        samples += [file_sample(root, p, label, category, 3) for p in images]
    return make_dataset("metu", root, samples, 3, False, _LAYOUT)
