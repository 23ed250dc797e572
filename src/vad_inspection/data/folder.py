"""A plain folder of normal images: what an operator collects on a known-good asset.

It has no anomalies and no pixel labels; it exists so a model can be fitted on "whatever good
images I have" without arranging them in a benchmark layout.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vad_inspection.data.imageio import IMAGE_SUFFIXES, image_shape
from vad_inspection.data.layout import file_sample, list_images, require_dir
from vad_inspection.data.types import NORMAL, Dataset, DatasetError

__all__ = ["open_folder"]

_EXPECTED = f"a folder of normal images ({', '.join(IMAGE_SUFFIXES)}, searched recursively)"


def open_folder(root: Path | str) -> Dataset:
    """Every image under ``root`` (recursive, sorted by path), all normal, no masks.

    Ids keep the file suffix, since a casual folder may hold both ``a.png`` and ``a.jpg``.
    ``Dataset.channels`` is that of the first image and every image is converted to it, so a
    folder mixing gray and colour shots still yields one input shape.
    """
    root = require_dir(root, _EXPECTED)
    paths = list_images(root, recursive=True)
    if not paths:
        raise DatasetError(f"{root}: no image files found: expected {_EXPECTED}")
    channels = image_shape(paths[0])[2]
    samples = [
        replace(file_sample(root, p, NORMAL, "normal", channels), id=p.relative_to(root).as_posix())
        for p in paths
    ]
    return Dataset("folder", root, tuple(samples), channels, has_masks=False)
