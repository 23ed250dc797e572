"""LROC NAC strips near the Chang'e-4 site (Yang et al., CraterDANet) with their crater tables.

Two uses: :func:`list_strips` hands whole strips to the replay harness (a camera "flying" over
one), and :func:`open_lroc_nac` cuts them into tiles for anomaly scoring, where a large crater
among ordinary terrain is the anomaly. Only the crater tables are read at open time (strip sizes
come from the PNG headers); pixels are read lazily.

Tile labels, for craters with ``diameter = max(W, H) >= min_diameter``:

* ``crater`` (anomalous): the table centre ``(C_X, CY)`` of a large crater lies in the tile. The
  mask is the filled ellipses inscribed in the boxes of *all* large craters overlapping the tile,
  clipped to it, so the rim of a neighbouring large crater is not counted as a false alarm.
* ``terrain`` (normal): no large crater's box overlaps the tile at all (small craters are terrain).
* otherwise ambiguous (part of a large crater, not its centre) and left out, since calling it
  either normal or anomalous would be wrong; :func:`tile_census` reports how many.

The tables are published as ``ID X Y W H C_X CY`` in pixels, comma-separated in 18 of the 20 files
here and tab-separated in 2, some with ``.0`` decimals: both separators and decimals are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from vad_inspection.data.imageio import image_shape, read_image
from vad_inspection.data.layout import list_files, make_dataset
from vad_inspection.data.tiles import Tile, check_tiling, crop_loader, per_dataset_cache, tile_grid
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, DatasetError, Sample

__all__ = [
    "SPLITS",
    "Crater",
    "Strip",
    "TileCensus",
    "list_strips",
    "open_lroc_nac",
    "parse_crater_table",
    "read_crater_table",
    "tile_census",
]

SPLITS: tuple[str, ...] = ("train", "test")
_COLUMNS = ("ID", "X", "Y", "W", "H", "CX", "CY")
_LAYOUT = (
    "the LROC NAC layout LRO_DATA/{train,test}/<image>.png with a crater table <image>.txt "
    "(ID X Y W H C_X CY)"
)
_SEPARATOR = re.compile(r"[,\t]")


@dataclass(frozen=True)
class Crater:
    """One table row, in strip pixels: box top-left ``(x, y)``, size ``w`` x ``h``, centre."""

    id: int
    x: float
    y: float
    w: float
    h: float
    cx: float
    cy: float

    @property
    def diameter(self) -> float:
        return max(self.w, self.h)


@dataclass(frozen=True)
class Strip:
    """A published strip image, its crater table and the split it belongs to."""

    image: Path
    table: Path
    split: str

    @property
    def name(self) -> str:
        return self.image.stem


@dataclass(frozen=True)
class TileCensus:
    """Tile counts of one :func:`open_lroc_nac` configuration, excluded ambiguous ones too."""

    crater: int
    terrain: int
    ambiguous: int


def _fields(line: str) -> list[str]:
    return [f.strip() for f in _SEPARATOR.split(line.strip())]


def parse_crater_table(text: str) -> list[Crater]:
    """The craters of a table's text; DatasetError naming the line for anything malformed."""
    lines = text.splitlines()
    if not lines or tuple(f.upper().replace("_", "") for f in _fields(lines[0])) != _COLUMNS:
        head = lines[0] if lines else ""
        raise DatasetError(
            f"malformed crater table: header {head!r}, expected the columns ID X Y W H C_X CY "
            "separated by tabs or commas"
        )
    craters = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = _fields(line)
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 7 or not all(np.isfinite(values)) or values[0] != int(values[0]):
            raise DatasetError(
                f"malformed crater table line {number}: {line.strip()!r}, expected 7 numbers "
                "(an integer ID, then X Y W H C_X CY)"
            )
        crater = Crater(int(values[0]), *values[1:])
        if crater.w <= 0 or crater.h <= 0:
            raise DatasetError(f"malformed crater table line {number}: box size must be positive")
        craters.append(crater)
    return craters


def read_crater_table(path: Path | str) -> list[Crater]:
    """:func:`parse_crater_table` of a file, the errors naming the file."""
    path = Path(path)
    try:
        return parse_crater_table(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read crater table ({error})") from error
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from error


def _data_root(root: Path | str) -> Path:
    """The ``LRO_DATA`` folder, whether ``root`` is the dataset root or ``LRO_DATA`` itself."""
    root = Path(root)
    for candidate in (root / "LRO_DATA", root):
        if any((candidate / split).is_dir() for split in SPLITS):
            return candidate
    problem = "" if root.is_dir() else " (it does not exist)"
    raise DatasetError(
        f"no LRO_DATA/train or LRO_DATA/test folder under {root}{problem}: expected {_LAYOUT}"
    )


def _check_split(split: str | None) -> tuple[str, ...]:
    if split is None:
        return SPLITS
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
    return (split,)


def list_strips(root: Path | str, split: str | None = None) -> list[Strip]:
    """Every strip with its table, train before test, sorted by name; both files required."""
    data = _data_root(root)
    strips = []
    for part in _check_split(split):
        folder = data / part
        if not folder.is_dir():
            continue
        images = list_files(folder, (".png",))
        for table in list_files(folder, (".txt",)):
            if not table.with_suffix(".png").is_file():
                raise DatasetError(f"{table}: crater table without its image: expected {_LAYOUT}")
        for image in images:
            if not image.with_suffix(".txt").is_file():
                raise DatasetError(f"{image}: no crater table {image.stem}.txt: expected {_LAYOUT}")
            strips.append(Strip(image, image.with_suffix(".txt"), part))
    if not strips:
        raise DatasetError(f"no strips (<image>.png) under {data}: expected {_LAYOUT}")
    return strips


def _crater_mask(tile: Tile, craters: tuple[Crater, ...]) -> np.ndarray:
    """Filled inscribed ellipses, drawn in tile coordinates at 1/16 px precision."""
    canvas = np.zeros((tile.size, tile.size), dtype=np.uint8)
    for c in craters:
        centre = (round((c.x + c.w / 2 - tile.x) * 16), round((c.y + c.h / 2 - tile.y) * 16))
        axes = (round(c.w / 2 * 16), round(c.h / 2 * 16))
        cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1, thickness=-1, shift=4)
    return canvas.astype(bool)


def _strip_tiles(
    strip: Strip, tile: int, stride: int, min_diameter: float
) -> tuple[list[Tile], np.ndarray, np.ndarray, list[Crater]]:
    """Tiles of a strip, which hold a large crater centre, which touch any large crater box."""
    height, width, _ = image_shape(strip.image)
    grid = tile_grid(height, width, tile, stride)
    large = [c for c in read_crater_table(strip.table) if c.diameter >= min_diameter]
    ty = np.array([t.y for t in grid], dtype=float)[:, None]
    tx = np.array([t.x for t in grid], dtype=float)[:, None]
    x, y, w, h, cx, cy = (
        np.array([getattr(c, k) for c in large], dtype=float)[None, :]
        for k in ("x", "y", "w", "h", "cx", "cy")
    )
    centre = (tx <= cx) & (cx < tx + tile) & (ty <= cy) & (cy < ty + tile)
    touch = (x < tx + tile) & (x + w > tx) & (y < ty + tile) & (y + h > ty)
    return grid, centre, touch, large


def _tiles(
    root: Path | str, tile: int, stride: int | None, min_diameter: float, split: str | None
) -> tuple[list[Sample], TileCensus]:
    tile, stride = check_tiling(tile, stride)
    if (
        isinstance(min_diameter, bool)
        or not isinstance(min_diameter, (int, float))
        or min_diameter < 0
    ):
        raise DatasetError(f"min_diameter must be a number of pixels >= 0, got {min_diameter!r}")
    read = per_dataset_cache(partial(read_image, channels=1))
    samples: list[Sample] = []
    ambiguous = 0
    for strip in list_strips(root, split):
        grid, centre, touch, large = _strip_tiles(strip, tile, stride, min_diameter)
        for t, has_centre, touching in zip(grid, centre.any(1), touch, strict=True):
            if not has_centre and touching.any():
                ambiguous += 1
                continue
            craters = tuple(c for c, hit in zip(large, touching, strict=True) if hit)
            samples.append(
                Sample(
                    id=f"{strip.split}/{strip.name}/{t.key}",
                    label=ANOMALOUS if has_centre else NORMAL,
                    category="crater" if has_centre else "terrain",
                    path=strip.image,
                    load_image=crop_loader(t, read, strip.image),
                    load_mask=partial(_crater_mask, t, craters),
                    split=strip.split,
                )
            )
    crater = sum(s.label for s in samples)
    return samples, TileCensus(crater, len(samples) - crater, ambiguous)


def tile_census(
    root: Path | str,
    tile: int = 128,
    stride: int | None = None,
    min_diameter: float = 64,
    split: str | None = None,
) -> TileCensus:
    """How :func:`open_lroc_nac` with the same options labels the tiles, excluded ones included."""
    return _tiles(root, tile, stride, min_diameter, split)[1]


def open_lroc_nac(
    root: Path | str,
    tile: int = 128,
    stride: int | None = None,
    min_diameter: float = 64,
    split: str | None = None,
) -> Dataset:
    """Crater and terrain tiles of the strips (``split`` "train", "test" or both), C=1.

    ``root`` may be the dataset root or its ``LRO_DATA`` folder. Ids are
    ``<split>/<strip>/r<row>_c<col>``; the grid is :func:`tiles.tile_grid`'s (a right/bottom
    remainder narrower than a tile is not covered). Ambiguous tiles are excluded: see
    :func:`tile_census`.
    """
    samples, _ = _tiles(root, tile, stride, min_diameter, split)
    return make_dataset("lroc_nac", _data_root(root), samples, 1, True, _LAYOUT)
