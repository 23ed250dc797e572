"""Filesystem helpers every loader shares: checking folders, listing image files, making samples.

Keeping them in one place makes every loader list files the same way (sorted, suffixes matched
case-insensitively, hidden files such as macOS ``._x.jpg`` skipped) and fail with the same kind
of message: the path, and what the published layout expected there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from vad_inspection.data.imageio import IMAGE_SUFFIXES, image_shape, read_image, read_mask
from vad_inspection.data.types import Dataset, DatasetError, MaskFn, Sample

__all__ = [
    "empty_mask_like",
    "file_sample",
    "list_files",
    "list_images",
    "make_dataset",
    "require_dir",
    "sample_id",
]


def require_dir(path: Path | str, expected: str) -> Path:
    """``path`` as a Path if it is a folder, else a DatasetError saying what should be there."""
    path = Path(path)
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"{path} {problem}: expected {expected}")
    return path


def list_files(
    folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES, recursive: bool = False
) -> list[Path]:
    """Files in ``folder`` with one of ``suffixes``, sorted by path, hidden files skipped."""
    wanted = {s.lower() for s in suffixes}
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file()
    )


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    return list_files(folder, IMAGE_SUFFIXES, recursive)


def sample_id(root: Path, path: Path) -> str:
    """A stable id: the path relative to the dataset root, POSIX slashes, suffix dropped."""
    return path.relative_to(root).with_suffix("").as_posix()


def empty_mask_like(path: Path) -> np.ndarray:
    """All-False mask of the image's size: the mask of a normal image in a set with masks."""
    height, width, _ = image_shape(path)
    return np.zeros((height, width), dtype=bool)


def file_sample(
    root: Path,
    path: Path,
    label: int,
    category: str,
    channels: int,
    mask: Path | None = None,
    split: str | None = None,
    empty_mask: bool = False,
) -> Sample:
    """A whole-file sample: image read lazily, mask read from ``mask`` or all-False if asked."""
    load_mask: MaskFn | None = None
    if mask is not None:
        load_mask = partial(read_mask, mask)
    elif empty_mask:
        load_mask = partial(empty_mask_like, path)
    return Sample(
        id=sample_id(root, path),
        label=label,
        category=category,
        path=path,
        load_image=partial(read_image, path, channels),
        load_mask=load_mask,
        split=split,
    )


def make_dataset(
    name: str,
    root: Path,
    samples: Sequence[Sample],
    channels: int,
    has_masks: bool,
    expected: str,
) -> Dataset:
    """The Dataset, or a DatasetError when the layout was right but held nothing to load."""
    if not samples:
        raise DatasetError(f"{root}: no samples found: expected {expected}")
    return Dataset(name, root, tuple(samples), channels, has_masks)
