"""LROC NAC: crater tables, strips, and crater/terrain tiles (real strips and a small made one)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data.lroc_nac import (
    Crater,
    TileCensus,
    list_strips,
    open_lroc_nac,
    parse_crater_table,
    read_crater_table,
    tile_census,
)
from vad_inspection.data.types import ANOMALOUS, NORMAL, DatasetError


def test_real_strips(lroc_nac_root: Path) -> None:
    strips = list_strips(lroc_nac_root)
    assert [s.split for s in strips] == ["train"] * 12 + ["test"] * 8
    assert all(s.table == s.image.with_suffix(".txt") for s in strips)
    assert list_strips(lroc_nac_root / "LRO_DATA", split="test") == strips[12:]


def independent_labels(lroc_nac_root: Path, tile: int, min_diameter: float) -> dict[str, str]:
    """Tile id -> crater/terrain/ambiguous, by plain loops over tables parsed here."""
    labels = {}
    for split in ("train", "test"):
        for png in sorted((lroc_nac_root / "LRO_DATA" / split).glob("*.png")):
            height, width = cv2.imread(str(png), cv2.IMREAD_UNCHANGED).shape
            lines = png.with_suffix(".txt").read_text().splitlines()[1:]
            rows = [[float(v) for v in re.split("[,\t]", line)] for line in lines if line]
            large = [r for r in rows if max(r[3], r[4]) >= min_diameter]
            for y in range(0, height - tile + 1, tile):
                for x in range(0, width - tile + 1, tile):
                    centre = any(x <= r[5] < x + tile and y <= r[6] < y + tile for r in large)
                    touch = any(
                        r[1] < x + tile and r[1] + r[3] > x and r[2] < y + tile and r[2] + r[4] > y
                        for r in large
                    )
                    label = "crater" if centre else "ambiguous" if touch else "terrain"
                    labels[f"{split}/{png.stem}/r{y:04d}_c{x:04d}"] = label
    return labels


def test_real_tiles_match_an_independent_count(lroc_nac_root: Path) -> None:
    dataset = open_lroc_nac(lroc_nac_root)
    expected = independent_labels(lroc_nac_root, 128, 64)
    assert len(expected) == 12 * 6 * 6 + 8 * 7 * 7
    assert {s.id: s.category for s in dataset} == {
        k: v for k, v in expected.items() if v != "ambiguous"
    }
    assert dataset.counts() == {"crater": 166, "terrain": 410}
    assert tile_census(lroc_nac_root) == TileCensus(crater=166, terrain=410, ambiguous=248)
    assert list(expected.values()).count("ambiguous") == 248
    assert dataset.channels == 1 and dataset.has_masks
    assert open_lroc_nac(lroc_nac_root, split="test", min_diameter=48).counts() == {
        "crater": 146,
        "terrain": 112,
    }


def test_real_tile_pixels_and_masks(lroc_nac_root: Path) -> None:
    assert {s.split for s in open_lroc_nac(lroc_nac_root, split="test")} == {"test"}
    dataset = open_lroc_nac(lroc_nac_root / "LRO_DATA")
    assert len(dataset) == 166 + 410
    for sample in dataset:
        image, mask = sample.image(), sample.mask()
        assert image.shape == (128, 128, 1) and image.dtype == np.uint8, sample.id
        assert mask is not None and mask.shape == (128, 128) and mask.dtype == bool, sample.id
        assert mask.any() == (sample.label == ANOMALOUS), sample.id
    first = dataset.anomalous[0]
    strip = cv2.imread(str(first.path), cv2.IMREAD_GRAYSCALE)
    y, x = (int(v[1:]) for v in first.id.rsplit("/", 1)[1].split("_"))
    np.testing.assert_array_equal(first.image()[..., 0], strip[y : y + 128, x : x + 128])
    craters = read_crater_table(first.path.with_suffix(".txt"))
    inside = [
        c for c in craters if c.diameter >= 64 and x <= c.cx < x + 128 and y <= c.cy < y + 128
    ]
    assert inside and all(first.mask()[int(c.cy) - y, int(c.cx) - x] for c in inside)


TABLE = "ID\tX\tY\tW\tH\tC_X\tCY\n7\t40\t40\t40\t40\t60\t60\n8\t100\t200\t40\t40\t120\t220\n"


def make_strip(root: Path, table: str = TABLE, split: str = "test") -> Path:
    folder = root / "LRO_DATA" / split
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / "strip.png"), np.full((256, 256), 128, np.uint8))
    (folder / "strip.txt").write_text(table)
    return root


def test_labels_of_a_made_strip(tmp_path: Path) -> None:
    """Crater 7 sits in tile r0c0, crater 8 in r128c0 and overlaps r128c128 (ambiguous)."""
    root = make_strip(tmp_path, TABLE + "9\t150\t20\t10\t10\t155\t25\n")
    dataset = open_lroc_nac(root, min_diameter=24)
    assert [(s.id, s.category) for s in dataset] == [
        ("test/strip/r0000_c0000", "crater"),
        ("test/strip/r0000_c0128", "terrain"),  # only the small crater 9
        ("test/strip/r0128_c0000", "crater"),
    ]
    assert [s.label for s in dataset] == [ANOMALOUS, NORMAL, ANOMALOUS]
    assert {s.split for s in dataset} == {"test"}
    assert tile_census(root, min_diameter=24) == TileCensus(crater=2, terrain=1, ambiguous=1)
    mask = dataset[0].mask()
    assert mask[60, 60] and not mask[0, 0] and not mask[41, 41]
    assert abs(int(mask.sum()) - np.pi * 20 * 20) < 0.05 * np.pi * 20 * 20
    clipped = dataset[2].mask()
    assert clipped[92, 120] and clipped[92, 127] and not dataset[1].mask().any()
    assert tile_census(root, min_diameter=5) == TileCensus(crater=3, terrain=0, ambiguous=1)
    assert tile_census(root, tile=64, stride=32, min_diameter=24).ambiguous > 0


def test_tables_comma_tab_and_decimals() -> None:
    comma = "ID,X,Y,W,H,C_X,CY\n395,350.0,738.0,7.0,9.0,354.0,742.0\n\n"
    tab = "ID\tX\tY\tW\tH\tC_X\tCY\n1\t-4\t10\t7\t7\t0\t13\n"
    assert parse_crater_table(comma) == [Crater(395, 350.0, 738.0, 7.0, 9.0, 354.0, 742.0)]
    assert parse_crater_table(comma)[0].diameter == 9.0
    assert parse_crater_table(tab)[0].x == -4
    assert parse_crater_table("ID,X,Y,W,H,C_X,CY\n") == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "header ''"),
        ("ID X Y W H\n", "header"),
        ("ID,X,Y,W,H,CX,CY,R\n", "header"),
        ("ID,X,Y,W,H,C_X,CY\n1,2,3,4,5,6\n", "line 2"),
        ("ID,X,Y,W,H,C_X,CY\n1,2,3,4,5,6,7\n1,2,three,4,5,6,7\n", "line 3"),
        ("ID,X,Y,W,H,C_X,CY\n1.5,2,3,4,5,6,7\n", "an integer ID"),
        ("ID,X,Y,W,H,C_X,CY\n1,2,3,0,5,6,7\n", "line 2: box size must be positive"),
        ("ID,X,Y,W,H,C_X,CY\n1,2,3,nan,5,6,7\n", "line 2"),
    ],
)
def test_malformed_tables(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "table.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=f"table.txt: malformed crater table.*{problem}"):
        read_crater_table(path)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no LRO_DATA/train or LRO_DATA/test folder under"):
        open_lroc_nac(tmp_path)
    root = make_strip(tmp_path / "a")
    with pytest.raises(DatasetError, match="split must be one of train, test"):
        open_lroc_nac(root, split="val")
    with pytest.raises(DatasetError, match="no strips"):
        open_lroc_nac(root, split="train")
    with pytest.raises(DatasetError, match="min_diameter"):
        open_lroc_nac(root, min_diameter=-1)
    (root / "LRO_DATA" / "test" / "strip.txt").unlink()
    with pytest.raises(DatasetError, match=re.escape("strip.png: no crater table strip.txt")):
        list_strips(root)
    orphan = make_strip(tmp_path / "b")
    (orphan / "LRO_DATA" / "test" / "other.txt").write_text(TABLE)
    with pytest.raises(DatasetError, match=re.escape("other.txt: crater table without its image")):
        open_lroc_nac(orphan)
