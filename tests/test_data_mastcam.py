"""open_mastcam on small .npy tiles in the published Mastcam novelty layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vad_inspection.data.mastcam import open_mastcam, to_uint8
from vad_inspection.data.types import ANOMALOUS, NORMAL, DatasetError


def make_mastcam(root: Path, tile: np.ndarray) -> Path:
    layout = {
        "train_typical": 3,
        "test_typical": 2,
        "test_novel/drill-hole": 1,
        "test_novel/veins": 2,
    }
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            np.save(root / folder / f"tile_{i}.npy", tile)
    return root


def ramp(dtype: type, scale: float) -> np.ndarray:
    """64x64x6 tile where band b holds the value b * scale everywhere."""
    bands = np.arange(6, dtype=np.float64) * scale
    return np.broadcast_to(bands, (64, 64, 6)).astype(dtype)


def test_layout_labels_and_splits(tmp_path: Path) -> None:
    dataset = open_mastcam(make_mastcam(tmp_path, ramp(np.uint8, 40)))
    assert dataset.counts() == {"typical": 5, "drill-hole": 1, "veins": 2}
    assert [s.split for s in dataset].count("train") == 3
    assert all(s.label == ANOMALOUS and s.split == "test" for s in dataset.anomalous)
    assert {s.label for s in dataset.normal} == {NORMAL}
    assert dataset.channels == 3 and not dataset.has_masks
    assert dataset[-1].id == "test_novel/veins/tile_1"


def test_uint8_kept_and_bands_ordered(tmp_path: Path) -> None:
    dataset = open_mastcam(make_mastcam(tmp_path, ramp(np.uint8, 40)), bands=(5, 0, 2))
    image = dataset[0].image()
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [200, 0, 80]


def test_unit_floats_scaled_by_255(tmp_path: Path) -> None:
    dataset = open_mastcam(make_mastcam(tmp_path, ramp(np.float32, 0.2)))
    assert dataset[0].image()[0, 0].tolist() == [0, 51, 102]


def test_other_ranges_stretched_per_tile(tmp_path: Path) -> None:
    dataset = open_mastcam(make_mastcam(tmp_path, ramp(np.uint16, 1000)), bands=(1, 2, 3))
    assert dataset[0].image()[0, 0].tolist() == [0, 128, 255]
    assert to_uint8(np.full((2, 2, 3), 7.5)).max() == 0  # constant tile: no range to stretch


def test_multispectral_keeps_all_bands(tmp_path: Path) -> None:
    dataset = open_mastcam(make_mastcam(tmp_path, ramp(np.uint16, 1000)), multispectral=True)
    image = dataset[0].image()
    assert dataset.channels == 6
    assert image.shape == (64, 64, 6) and image.dtype == np.float32
    assert image[0, 0].tolist() == [0, 1000, 2000, 3000, 4000, 5000]


@pytest.mark.parametrize("bands", [(0, 1, 6), (0, 1), (-1, 0, 1)])
def test_bad_bands(tmp_path: Path, bands: tuple[int, ...]) -> None:
    with pytest.raises(DatasetError, match="has 6 bands"):
        open_mastcam(make_mastcam(tmp_path, ramp(np.uint8, 1)), bands=bands)


def test_bad_files(tmp_path: Path) -> None:
    root = make_mastcam(tmp_path, ramp(np.uint8, 1))
    (root / "test_novel" / "veins" / "tile_1.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(root / "test_typical" / "tile_1.npy", np.zeros((64, 64)))
    dataset = open_mastcam(root)
    with pytest.raises(DatasetError, match=re.escape("tile_1.npy: not a readable .npy")):
        dataset[-1].image()
    with pytest.raises(DatasetError, match=r"shape \(64, 64\)"):
        next(s for s in dataset if s.id == "test_typical/tile_1").image()


def test_wrong_layout(tmp_path: Path) -> None:
    (tmp_path / "typical").mkdir()
    np.save(tmp_path / "typical" / "x.npy", ramp(np.uint8, 1))
    with pytest.raises(DatasetError, match=r"no \.npy tiles under .*expected the Mastcam"):
        open_mastcam(tmp_path)


def test_published_float64_reads_as_the_uint8_copy(tmp_path: Path) -> None:
    """The authors publish float64 arrays of whole numbers 0-255; the copy here is uint8. Real
    tiles, both ways, must give the same image (a per-tile stretch would not)."""
    real = Path(__file__).resolve().parents[2] / "shared/data/mastcam_novelty/test_novel"
    tiles = sorted(real.rglob("*.npy"))[:4] if real.is_dir() else []
    if not tiles:
        pytest.skip("real Mastcam tiles not found in ../shared/data")
    for copy, dtype in (("u8", np.uint8), ("f64", np.float64)):
        for i, path in enumerate(tiles):
            folder = tmp_path / copy / "test_novel" / "drill-hole"
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"t{i}.npy", np.load(path).astype(dtype))
    as_u8, as_f64 = open_mastcam(tmp_path / "u8"), open_mastcam(tmp_path / "f64")
    for a, b in zip(as_u8, as_f64, strict=True):
        assert np.array_equal(a.image(), b.image())
    assert np.load(tiles[0]).dtype == np.uint8 and as_u8[0].image().max() > 1


def test_validation_typical_is_the_val_split(tmp_path: Path) -> None:
    root = make_mastcam(tmp_path, ramp(np.uint8, 40))
    (root / "validation_typical").mkdir()
    np.save(root / "validation_typical" / "v.npy", ramp(np.uint8, 40))
    dataset = open_mastcam(root)
    [val] = [s for s in dataset if s.split == "val"]
    assert val.label == NORMAL and val.category == "typical"
