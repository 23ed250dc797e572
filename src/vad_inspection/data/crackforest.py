"""CrackForest (Shi et al. 2016) road-crack photos, cut into tiles labelled by their crack pixels.

Every labelled photo has cracks, so whole photos cannot serve as "normal"; tiles can: a tile with
no crack pixel is normal, any crack pixel makes it anomalous. Labels come from the published
``seg/NNN.seg`` files or, for a photo without one, from the published ``groundTruth/NNN.mat``
(both parsed at open time, since the tile labels need them; the two agree pixel for pixel on all
100 labelled photos, so a copy holding only one of the folders reads the same); the JPEGs are read
lazily. Photos with neither (ids 2xx/3xx in the published set) have no ground truth and are
skipped; :func:`unlabelled_images` names them, so the skip is never silent. Reading ``.mat`` needs
SciPy, imported only then.

The ``.seg`` format (the Berkeley segmentation format) gives every pixel a segment number. By
inspection of all 100 files here, segment 1 is the crack, 0 the background, and the segments 2 and
3 that ten files add are not cracks: 2 marks pavement enclosed by crack loops (e.g. the blocks of
093/097), 3 (084 only) a faint line along a road marking. The crack mask is therefore segment 1
only, which matches the binary masks published with CrackForest (``groundTruth/NNN.mat``
``Segmentation == 2``, that file numbering segments from 1).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from vad_inspection.data.imageio import read_image
from vad_inspection.data.layout import list_files, make_dataset, require_dir
from vad_inspection.data.tiles import (
    check_tiling,
    crop_loader,
    per_dataset_cache,
    tile_grid,
    tile_sums,
)
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, DatasetError, Sample

__all__ = [
    "CRACK_SEGMENT",
    "open_crackforest",
    "parse_seg",
    "parse_seg_labels",
    "read_mat_labels",
    "unlabelled_images",
]

CRACK_SEGMENT = 1
_LAYOUT = "the CrackForest layout image/NNN.jpg with labels seg/NNN.seg and/or groundTruth/NNN.mat"
#: Label folders and suffixes, in order of preference when a photo has both (``.seg`` first: it
#: is plain text, read without SciPy).
_LABELS = (("seg", ".seg"), ("groundTruth", ".mat"))
_RUN = re.compile(r"\s*[0-9]{1,9}(?:[ \t]+[0-9]{1,9}){3}\s*")


def _header(lines: list[str]) -> tuple[dict[str, str], int]:
    """Header ``key value`` pairs and the index of the ``data`` line."""
    try:
        data_at = next(i for i, line in enumerate(lines) if line.strip() == "data")
    except StopIteration:
        raise DatasetError("malformed .seg: no 'data' line ending the header") from None
    header = {}
    for line in lines[:data_at]:
        key, _, value = line.strip().partition(" ")
        if key:
            header[key] = value.strip()
    return header, data_at


def _header_int(header: dict[str, str], key: str) -> int:
    try:
        value = int(header[key])
    except KeyError:
        raise DatasetError(f"malformed .seg: header has no '{key}' line") from None
    except ValueError:
        raise DatasetError(f"malformed .seg: '{key} {header[key]}' is not an integer") from None
    if value < 1:
        raise DatasetError(f"malformed .seg: '{key} {value}' must be positive")
    return value


def _runs(lines: list[str], first: int) -> tuple[np.ndarray, list[int]]:
    """Data lines as an (N, 4) int array ``segment row col_start col_end``, and their numbers."""
    numbers = [n for n, line in enumerate(lines[first:], start=first + 1) if line.strip()]
    if not numbers:
        raise DatasetError("malformed .seg: no segment lines after 'data'")
    for n in numbers:
        if not _RUN.fullmatch(lines[n - 1]):
            raise DatasetError(
                f"malformed .seg line {n}: {lines[n - 1].strip()!r}, expected four non-negative "
                "integers 'segment row col_start col_end'"
            )
    fields = " ".join(lines[n - 1] for n in numbers).split()
    return np.array(fields, dtype=np.int64).reshape(-1, 4), numbers


def _tiles_rows(runs: np.ndarray, height: int, width: int) -> bool:
    """Whether ``row col_start col_end`` runs cover every pixel exactly once (no gap, overlap)."""
    order = np.lexsort((runs[:, 1], runs[:, 0]))
    row, start, end = runs[order].T
    first = np.r_[True, row[1:] != row[:-1]]
    last = np.r_[row[1:] != row[:-1], True]
    follows = np.r_[False, start[1:] == end[:-1] + 1]
    return (
        np.array_equal(row[first], np.arange(height))
        and bool(np.all(start[first] == 0))
        and bool(np.all(end[last] == width - 1))
        and bool(np.all(follows | first))
    )


def parse_seg_labels(text: str) -> np.ndarray:
    """The segment number of every pixel, ``(height, width)`` int16, from a ``.seg`` file's text.

    Raises DatasetError on a malformed header, on a line that is not four integers, on a run
    outside the image or of an undeclared segment, and unless the runs cover every pixel exactly
    once (a truncated file otherwise loses crack pixels without a word).
    """
    lines = text.splitlines()
    header, data_at = _header(lines)
    width, height = _header_int(header, "width"), _header_int(header, "height")
    segments = _header_int(header, "segments") if "segments" in header else None
    if not header.get("format", "ascii").startswith("ascii"):
        raise DatasetError(f"unsupported .seg format {header['format']!r}: only ascii is read")
    runs, numbers = _runs(lines, data_at + 1)
    seg, row, start, end = runs.T
    bad = (row >= height) | (start > end) | (end >= width)
    if segments is not None:
        bad |= seg >= segments
    if bad.any():
        i = int(np.argmax(bad))
        declared = "" if segments is None else f", or of a segment >= the declared {segments}"
        raise DatasetError(
            f"malformed .seg line {numbers[i]}: run {runs[i].tolist()} outside the {width}x{height}"
            f" image or reversed{declared}"
        )
    if not _tiles_rows(runs[:, 1:], height, width):
        raise DatasetError(
            f"malformed .seg: runs do not cover each of the {height} rows of {width} pixels "
            "exactly once (truncated or corrupt file?)"
        )
    labels = np.empty((height, width), dtype=np.int16)
    for s, r, c0, c1 in runs.tolist():
        labels[r, c0 : c1 + 1] = s
    return labels


def parse_seg(text: str) -> np.ndarray:
    """Crack pixels (segment 1) of a ``.seg`` file's text, as ``bool (height, width)``."""
    return parse_seg_labels(text) == CRACK_SEGMENT


def read_mat_labels(path: Path | str) -> np.ndarray:
    """The segment number of every pixel from a published ``groundTruth/NNN.mat``, numbered as in
    a ``.seg`` (the crack is :data:`CRACK_SEGMENT`), ``(height, width)`` int16.

    The file is a MATLAB struct ``groundTruth`` (1x1) with a ``Segmentation`` array numbering the
    segments from 1 (and ``Boundaries``, not used); hence the minus one. Raises DatasetError when
    the file is unreadable or not of that structure, and when SciPy (which reads it) is missing.
    """
    try:
        import scipy.io
    except ImportError:
        raise DatasetError(
            f"{path}: reading CrackForest .mat labels needs SciPy (pip install scipy), or give the "
            "seg/ folder"
        ) from None
    try:
        data = scipy.io.loadmat(str(path))
        segmentation = np.asarray(data["groundTruth"][0, 0]["Segmentation"])
    except (OSError, ValueError, TypeError, KeyError, IndexError, NotImplementedError) as error:
        raise DatasetError(
            f"{path}: not a CrackForest ground-truth .mat (a 'groundTruth' struct with "
            f"'Segmentation'): {error}"
        ) from error
    whole = segmentation.dtype.kind in "ui" or (
        segmentation.dtype.kind == "f"  # MATLAB's default double, if someone re-saved it
        and bool(np.isfinite(segmentation).all())
        and bool((segmentation == np.round(segmentation)).all())
    )
    if segmentation.ndim != 2 or segmentation.size == 0 or not whole:
        raise DatasetError(
            f"{path}: Segmentation must be a 2-D array of segment numbers; got "
            f"{segmentation.dtype} {segmentation.shape}"
        )
    lowest = int(segmentation.min())
    if lowest < 1 or segmentation.max() > np.iinfo(np.int16).max:
        raise DatasetError(f"{path}: Segmentation numbers segments from 1; found {lowest}")
    return (segmentation.astype(np.int64) - 1).astype(np.int16)


def _read_labels(path: Path) -> np.ndarray:
    """Crack pixels of one photo from its ``.seg`` or ``.mat``; errors name the file."""
    try:
        if path.suffix == ".mat":
            return read_mat_labels(path) == CRACK_SEGMENT
        return parse_seg(path.read_text(encoding="latin-1"))
    except DatasetError as error:
        if str(error).startswith(str(path)):
            raise
        raise DatasetError(f"{path}: {error}") from error


def _layout(root: Path | str) -> tuple[Path, list[Path], dict[str, Path]]:
    """The root, its photos, and each labelled photo id's label file (``.seg`` preferred)."""
    root = require_dir(root, _LAYOUT)
    require_dir(root / "image", _LAYOUT)
    folders = [(root / name, suffix) for name, suffix in _LABELS if (root / name).is_dir()]
    if not folders:
        raise DatasetError(f"{root}: neither seg/ nor groundTruth/ is there: expected {_LAYOUT}")
    labels: dict[str, Path] = {}
    for folder, suffix in reversed(folders):  # the preferred folder last, so it wins
        labels.update({p.stem: p for p in list_files(folder, (suffix,))})
    return root, list_files(root / "image", (".jpg",)), labels


def unlabelled_images(root: Path | str) -> list[Path]:
    """Photos under ``image/`` with neither ``seg/<id>.seg`` nor ``groundTruth/<id>.mat``, which
    are left out of the dataset."""
    _, images, labels = _layout(root)
    return [p for p in images if p.stem not in labels]


def _read_photo(path: Path, shape: tuple[int, int]) -> np.ndarray:
    image = read_image(path, 3)
    if image.shape[:2] != shape:
        raise DatasetError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, its labels say "
            f"{shape[1]}x{shape[0]}"
        )
    return image


def open_crackforest(root: Path | str, tile: int = 64, stride: int | None = None) -> Dataset:
    """Tiles (``tile`` px square, every ``stride`` px, default = tile) of the labelled photos.

    Ids are ``<photo id>/r<row>_c<col>`` (top-left pixel of the tile); category ``crack`` or
    ``normal``; masks are the tile's crack pixels. The grid is :func:`tiles.tile_grid`'s: a
    right/bottom remainder narrower than a tile is not covered.
    """
    tile, stride = check_tiling(tile, stride)
    root, images, labels = _layout(root)
    orphans = sorted(set(labels) - {p.stem for p in images})
    if orphans:
        names = ", ".join(labels[stem].name for stem in orphans)
        raise DatasetError(f"{root}: labels without a photo in image/: {names}")
    read = per_dataset_cache(_read_photo)
    samples: list[Sample] = []
    for path in (p for p in images if p.stem in labels):
        label_path = labels[path.stem]
        crack = _read_labels(label_path)
        crack.flags.writeable = False
        grid = tile_grid(*crack.shape, tile, stride)
        if not grid:
            raise DatasetError(f"{label_path}: tile {tile} px does not fit its {crack.shape} image")
        for t, count in zip(grid, tile_sums(crack, grid), strict=True):
            samples.append(
                Sample(
                    id=f"{path.stem}/{t.key}",
                    label=ANOMALOUS if count else NORMAL,
                    category="crack" if count else "normal",
                    path=path,
                    load_image=crop_loader(t, read, path, crack.shape),
                    load_mask=partial(t.crop, crack),
                )
            )
    return make_dataset("crackforest", root, samples, 3, True, _LAYOUT)
