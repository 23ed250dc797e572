"""open_dataset: spec parsing, option conversion by the loader's signature, and its errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.data import DATASET_KINDS, DatasetError, open_dataset, parse_spec


def test_kinds() -> None:
    kinds = "folder mvtec magnetic_tile crackforest lroc_nac lrocnet mastcam metu msl_surface"
    assert list(DATASET_KINDS) == kinds.split()
    for kind, opener in DATASET_KINDS.items():
        assert next(iter(inspect.signature(opener).parameters)) == "root", kind


def test_parse_spec() -> None:
    assert parse_spec("crackforest:../data/cf?tile=64&stride=32") == (
        "crackforest",
        "../data/cf",
        {"tile": "64", "stride": "32"},
    )
    assert parse_spec("folder:C:\\images") == ("folder", "C:\\images", {})
    assert parse_spec("folder:/x?") == ("folder", "/x", {})


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("crackforest", "expected kind:path"),
        ("crackforest:", "expected kind:path"),
        (":/data", "expected kind:path"),
        ("crackforest:/x?tile", "option 'tile' is not key=value"),
        ("crackforest:/x?tile=1&tile=2", "option 'tile' given twice"),
        ("pictures:/x", "unknown dataset kind 'pictures'.*valid kinds are folder, mvtec"),
        (
            "crackforest:/x?size=3",
            "unknown option 'size' for crackforest: valid options are tile, stride",
        ),
        ("metu:/x?tile=3", "unknown option 'tile' for metu: valid options are none"),
        ("crackforest:/x?tile=big", "option tile='big' for crackforest: expected an integer"),
        ("mastcam:/x?multispectral=maybe", "expected true/false"),
        ("mastcam:/x?bands=0,one,2", "expected comma-separated ints"),
        ("lroc_nac:/x?min_diameter=wide", "expected a number"),
    ],
)
def test_bad_specs(spec: str, problem: str) -> None:
    with pytest.raises(DatasetError, match=problem):
        open_dataset(spec)


def make_mastcam(root: Path) -> Path:
    tile = np.broadcast_to(np.arange(6, dtype=np.uint8) * 10, (64, 64, 6))
    for folder in ("train_typical", "test_novel/veins"):
        (root / folder).mkdir(parents=True)
        np.save(root / folder / "t.npy", tile)
    return root


def test_options_are_typed_by_the_signature(tmp_path: Path) -> None:
    root = make_mastcam(tmp_path)
    rgb = open_dataset(f"mastcam:{root}?bands=2,1,0")
    assert rgb[0].image()[0, 0].tolist() == [20, 10, 0]
    spectral = open_dataset(f"mastcam:{root}?multispectral=TRUE")
    assert spectral.channels == 6 and spectral[0].image().dtype == np.float32
    assert open_dataset(f"mastcam:{root}?multispectral=no").channels == 3


def test_tiled_options(tmp_path: Path) -> None:
    folder = tmp_path / "LRO_DATA" / "test"
    folder.mkdir(parents=True)
    assert cv2.imwrite(str(folder / "s.png"), np.zeros((256, 256), np.uint8))
    (folder / "s.txt").write_text("ID,X,Y,W,H,C_X,CY\n1,40,40,40,40,60,60\n")
    # 16 (9) tiles, 3 of them ambiguous: the crater box 40..80 spans the first two rows/columns
    spec = f"lroc_nac:{tmp_path}?tile=64&stride=none&split=test&min_diameter=24"
    assert len(open_dataset(spec)) == 13
    assert len(open_dataset(f"lroc_nac:{tmp_path}?tile=128&stride=64&min_diameter=24")) == 6
    assert open_dataset(f"lroc_nac:{tmp_path}?min_diameter=50.5").counts() == {"terrain": 4}


def test_layout_error_passes_through(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no MT_Free/Imgs folder"):
        open_dataset(f"magnetic_tile:{tmp_path}")
