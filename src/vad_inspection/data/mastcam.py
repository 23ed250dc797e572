"""Mars Mastcam multispectral novelty set (Kerner et al., Zenodo 3732485): 64x64x6 ``.npy`` tiles.

``train_typical/``, ``validation_typical/`` and ``test_typical/`` hold typical terrain (normal,
category ``typical``; split ``train``, ``val``, ``test``);
``test_novel/<category>/`` the novel geology (anomalous, category = folder name; a ``.npy`` loose
in ``test_novel/`` gets category ``novel``). ``split`` is ``train`` or ``test`` from the folder.

Most detectors take RGB, so by default three of the bands (``bands``) form a ``uint8`` image;
``multispectral=True`` keeps every band instead, as ``float32`` with the stored values unscaled,
since any rescale would erase the radiometry a spectral detector relies on. The ``uint8``
conversion of the chosen bands, decided without the data at hand (it was not available here):

* ``uint8`` tiles are kept as they are, and so are tiles of any other type holding whole numbers
  in 0..255 with some value above 1: the authors publish float64 arrays of whole numbers 0-255,
  the copy here stores the same values as uint8, and both must give the same image;
* floating-point tiles whose values all lie in [0, 1] are scaled by 255 and rounded;
* anything else (other integer types, floats outside [0, 1]) is min-max stretched per tile over
  the chosen bands jointly (one min and max, so band ratios, the "colour", survive) to 0..255;
  a constant tile becomes 0. Per-tile stretching changes brightness between tiles, the price of
  having no published scale.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from vad_inspection.data.layout import list_files, make_dataset, require_dir, sample_id
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, DatasetError, Sample

__all__ = ["open_mastcam", "to_uint8"]

_LAYOUT = (
    "the Mastcam novelty layout train_typical/*.npy, [validation_typical/*.npy], "
    "test_typical/*.npy, "
    "test_novel/<category>/*.npy with (64, 64, 6) tiles"
)


def _load(path: Path, min_bands: int) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable .npy array ({error})") from error
    if array.ndim != 3 or array.shape[2] < min_bands:
        raise DatasetError(
            f"{path}: array of shape {array.shape}, expected (H, W, bands) with at least "
            f"{min_bands} bands"
        )
    return array


def _band_count(path: Path) -> int:
    """Bands of the first tile, from its header only (the tiles are assumed alike)."""
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable .npy array ({error})") from error
    if len(shape) != 3:
        raise DatasetError(f"{path}: array of shape {shape}, expected {_LAYOUT}")
    return shape[2]


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Bands to ``uint8`` by the rule in the module docstring."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and 1.0 < high <= 255.0 and np.array_equal(values, np.round(values)):
        return values.astype(np.uint8)  # the published scale (float64 of whole numbers 0-255)
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return np.round(values * 255.0).astype(np.uint8)
    if not np.isfinite([low, high]).all() or high == low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _rgb(path: Path, bands: tuple[int, ...]) -> np.ndarray:
    return to_uint8(np.ascontiguousarray(_load(path, max(bands) + 1)[:, :, list(bands)]))


def _all_bands(path: Path, count: int) -> np.ndarray:
    return _load(path, count).astype(np.float32)


def _files(root: Path) -> list[tuple[Path, int, str, str]]:
    """``(file, label, category, split)`` of every tile, in folder order."""
    found = []
    for folder, split in (
        ("train_typical", "train"), ("validation_typical", "val"), ("test_typical", "test"),
    ):  # fmt: skip
        if (root / folder).is_dir():
            found += [(p, NORMAL, "typical", split) for p in list_files(root / folder, (".npy",))]
    if (root / "test_novel").is_dir():
        for path in list_files(root / "test_novel", (".npy",), recursive=True):
            category = "novel" if path.parent.name == "test_novel" else path.parent.name
            found.append((path, ANOMALOUS, category, "test"))
    return found


def open_mastcam(
    root: Path | str, bands: tuple[int, ...] = (0, 1, 2), multispectral: bool = False
) -> Dataset:
    """Tiles as RGB ``uint8`` from ``bands`` (1 or 3 indices), or all bands as ``float32``."""
    root = require_dir(root, _LAYOUT)
    files = _files(root)
    if not files:
        raise DatasetError(f"no .npy tiles under {root}: expected {_LAYOUT}")
    count = _band_count(files[0][0])
    bands = tuple(bands)
    valid = all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < count for b in bands)
    if len(bands) not in (1, 3) or not valid:
        raise DatasetError(
            f"bands must be 1 or 3 band indices in 0..{count - 1} ({files[0][0]} has {count} "
            f"bands), got {bands}"
        )
    if multispectral:
        load, channels = partial(_all_bands, count=count), count
    else:
        load, channels = partial(_rgb, bands=bands), len(bands)
    samples = [
        Sample(sample_id(root, path), label, category, path, partial(load, path), split=split)
        for path, label, category, split in files
    ]
    return make_dataset("mastcam", root, samples, channels, False, _LAYOUT)
