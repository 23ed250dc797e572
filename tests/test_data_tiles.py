"""The shared tile grid: placement, the vectorised per-tile sums, the per-dataset source cache."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.data.tiles import (
    Tile,
    check_tiling,
    crop_loader,
    per_dataset_cache,
    tile_grid,
    tile_sums,
)
from vad_inspection.data.types import DatasetError


def test_grid_stays_inside_and_drops_the_remainder() -> None:
    grid = tile_grid(320, 480, 64, 64)
    assert len(grid) == 5 * 7
    assert grid[0] == Tile(0, 0, 64) and grid[-1] == Tile(256, 384, 64)
    assert all(t.y + t.size <= 320 and t.x + t.size <= 480 for t in grid)
    assert len(tile_grid(320, 480, 64, 32)) == 9 * 14
    assert tile_grid(50, 50, 64, 64) == []


def test_key_names_the_top_left_pixel() -> None:
    assert Tile(64, 128, 32).key == "r0064_c0128"


def test_tile_sums_match_crops() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((70, 90)) < 0.05
    grid = tile_grid(70, 90, 16, 11)
    expected = [int(t.crop(mask).sum()) for t in grid]
    assert tile_sums(mask, grid).tolist() == expected


@pytest.mark.parametrize(("tile", "stride"), [(0, None), (64, 0), (-3, 2), (True, None), (6.5, 2)])
def test_bad_tiling(tile: object, stride: object) -> None:
    with pytest.raises(DatasetError, match="positive integer"):
        check_tiling(tile, stride)  # type: ignore[arg-type]


def test_default_stride_is_the_tile() -> None:
    assert check_tiling(48, None) == (48, 48)


def test_cache_reads_each_source_once_and_crops_are_private() -> None:
    reads: list[str] = []

    def read(name: str) -> np.ndarray:
        reads.append(name)
        return np.arange(16, dtype=np.uint8).reshape(4, 4)

    cached = per_dataset_cache(read)
    loaders = [crop_loader(t, cached, "a") for t in tile_grid(4, 4, 2, 2)]
    crops = [load() for load in loaders]
    assert reads == ["a"]
    assert crops[3].tolist() == [[10, 11], [14, 15]]
    crops[0][:] = 0  # a caller scribbling on its tile must not change the cached source
    assert loaders[0]().tolist() == [[0, 1], [4, 5]]
