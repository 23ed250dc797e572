"""Cutting large images into square tiles, shared by the tiled sets (CrackForest, LROC NAC).

Both sets label whole photos or strips far larger than a detector's input, so their samples are
tiles. The grid is the same everywhere: tiles lie fully inside the image, start at the top-left
corner and step by ``stride``; a right or bottom remainder narrower than a tile is not covered
(a padded or shifted edge tile would show pixels, or overlaps, that no other tile has).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial

import cv2
import numpy as np

from vad_inspection.data.types import DatasetError, ImageFn

__all__ = ["Tile", "check_tiling", "crop_loader", "per_dataset_cache", "tile_grid", "tile_sums"]

Reader = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Tile:
    """A ``size`` x ``size`` window whose top-left pixel is at row ``y``, column ``x``."""

    y: int
    x: int
    size: int

    @property
    def key(self) -> str:
        """The id suffix, e.g. ``r0064_c0128``: sorts like the grid and says where to look."""
        return f"r{self.y:04d}_c{self.x:04d}"

    def crop(self, array: np.ndarray) -> np.ndarray:
        """A copy, so callers may write into it without touching a cached source image."""
        return array[self.y : self.y + self.size, self.x : self.x + self.size].copy()


def check_tiling(tile: int, stride: int | None) -> tuple[int, int]:
    """``(tile, stride)`` with the default stride (= tile) filled in, or a DatasetError."""
    stride = tile if stride is None else stride
    for name, value in (("tile", tile), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DatasetError(f"{name} must be a positive integer number of pixels, got {value!r}")
    return tile, stride


def tile_grid(height: int, width: int, tile: int, stride: int) -> list[Tile]:
    """Row-major grid of tiles fully inside a ``height`` x ``width`` image (empty if too small)."""
    return [
        Tile(y, x, tile)
        for y in range(0, height - tile + 1, stride)
        for x in range(0, width - tile + 1, stride)
    ]


def tile_sums(mask: np.ndarray, tiles: Sequence[Tile]) -> np.ndarray:
    """Number of True pixels of ``mask`` in each tile, from one integral image (no crop loop)."""
    integral = cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_32S)
    ys = np.array([t.y for t in tiles], dtype=np.intp)
    xs = np.array([t.x for t in tiles], dtype=np.intp)
    size = np.array([t.size for t in tiles], dtype=np.intp)
    return (
        integral[ys + size, xs + size]
        - integral[ys, xs + size]
        - integral[ys + size, xs]
        + integral[ys, xs]
    )


def per_dataset_cache(read: Reader, size: int = 2) -> Reader:
    """``read`` memoising its last ``size`` source images, for one Dataset's tiles only.

    Tiles of one source are consecutive in a dataset (and stay so in any split that keeps dataset
    order), so a tiny cache turns "decode the 480x320 photo once per tile" into "once per photo".
    It is created by each ``open_*`` call and dies with that Dataset: nothing is cached globally.
    The cached arrays are made read-only; :meth:`Tile.crop` hands out copies.
    """

    @lru_cache(maxsize=size)
    def cached(*args: object) -> np.ndarray:
        image = read(*args)
        image.flags.writeable = False
        return image

    return cached


def _crop(tile: Tile, read: Reader, *args: object) -> np.ndarray:
    return tile.crop(read(*args))


def crop_loader(tile: Tile, read: Reader, *args: object) -> ImageFn:
    """A lazy ``load_image`` for one tile of the source image ``read(*args)``."""
    return partial(_crop, tile, read, *args)
