"""CrackForest: the .seg parser, the .mat reader, the tiles of the real set checked against the .mat
ground truth, and copies holding only one of the two label folders."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from vad_inspection.data.crackforest import (
    open_crackforest,
    parse_seg,
    parse_seg_labels,
    read_mat_labels,
    unlabelled_images,
)
from vad_inspection.data.types import ANOMALOUS, NORMAL, DatasetError


def mat_segmentation(path: Path) -> np.ndarray:
    """``groundTruth/NNN.mat``: a 1x1 struct with Segmentation (segments numbered from 1)."""
    return scipy.io.loadmat(path)["groundTruth"][0, 0]["Segmentation"]


@pytest.fixture
def mat_cracks(crackforest_root: Path) -> dict[str, np.ndarray]:
    """Crack masks (Segmentation == 2) of all labelled images, from the .mat files only."""
    files = sorted((crackforest_root / "groundTruth").glob("*.mat"))
    return {p.stem: mat_segmentation(p) == 2 for p in files}


def test_seg_matches_mat_for_all_images(crackforest_root: Path) -> None:
    """The .seg segment numbers are the .mat's minus one, pixel for pixel, in all 100 files."""
    mats = sorted((crackforest_root / "groundTruth").glob("*.mat"))
    assert len(mats) == 100
    extra_segments = set()
    for mat in mats:
        text = (crackforest_root / "seg" / f"{mat.stem}.seg").read_text(encoding="latin-1")
        labels = parse_seg_labels(text)
        segmentation = mat_segmentation(mat)
        np.testing.assert_array_equal(labels + 1, segmentation, err_msg=mat.stem)
        np.testing.assert_array_equal(parse_seg(text), segmentation == 2, err_msg=mat.stem)
        if labels.max() > 1:
            extra_segments.add(mat.stem)
    # Segments 2/3 (enclosed pavement; one faint line in 084) occur only here and are not crack.
    assert extra_segments == {"040", "054", "084", "085", "091", "093", "097", "098", "099", "100"}


def expected_tiles(cracks: dict[str, np.ndarray], tile: int, stride: int) -> dict[str, bool]:
    """Tile id -> has crack, counted with plain loops from the .mat masks."""
    out = {}
    for stem, crack in cracks.items():
        height, width = crack.shape
        for y in range(0, height - tile + 1, stride):
            for x in range(0, width - tile + 1, stride):
                out[f"{stem}/r{y:04d}_c{x:04d}"] = bool(crack[y : y + tile, x : x + tile].any())
    return out


def test_default_tiles_match_mat(crackforest_root: Path, mat_cracks: dict[str, np.ndarray]) -> None:
    dataset = open_crackforest(crackforest_root)
    expected = expected_tiles(mat_cracks, 64, 64)
    assert len(dataset) == len(expected) == 100 * 5 * 7
    assert {s.id: s.label == ANOMALOUS for s in dataset} == expected
    assert len(dataset.anomalous) == sum(expected.values()) == 1147
    assert len(dataset.normal) == 2353
    assert dataset.counts() == {"normal": 2353, "crack": 1147}
    assert dataset.channels == 3 and dataset.has_masks


def test_overlapping_tiles_match_mat(
    crackforest_root: Path, mat_cracks: dict[str, np.ndarray]
) -> None:
    dataset = open_crackforest(crackforest_root, tile=64, stride=32)
    expected = expected_tiles(mat_cracks, 64, 32)
    assert len(dataset) == 100 * 9 * 14
    assert {s.id: s.label == ANOMALOUS for s in dataset} == expected


def test_real_tile_pixels_and_masks(
    crackforest_root: Path, mat_cracks: dict[str, np.ndarray]
) -> None:
    for sample in open_crackforest(crackforest_root):
        image, mask = sample.image(), sample.mask()
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8, sample.id
        assert mask is not None and mask.shape == (64, 64) and mask.dtype == bool, sample.id
        assert mask.any() == (sample.label == ANOMALOUS), sample.id
    last = sample
    y, x = 256, 384
    assert last.id == f"100/r{y:04d}_c{x:04d}"
    np.testing.assert_array_equal(last.mask(), mat_cracks["100"][y : y + 64, x : x + 64])
    photo = cv2.cvtColor(cv2.imread(str(last.path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(last.image(), photo[y : y + 64, x : x + 64])


def test_unlabelled_images_are_counted(crackforest_root: Path) -> None:
    skipped = unlabelled_images(crackforest_root)
    assert len(skipped) == 37
    assert all(p.stem[0] in "23" for p in skipped)
    assert len(list((crackforest_root / "image").glob("*.jpg"))) == 100 + 37


SEG = """image C:\\some dir\\001.jpg
width 4
height 2
segments 2
gray 1
invert 0
flipflop 0
format ascii cr
data
0 0 0 1
1 0 2 3
1 1 0 0
0 1 1 3
"""


def test_parse_seg_fills_inclusive_ranges() -> None:
    assert parse_seg(SEG).tolist() == [[False, False, True, True], [True, False, False, False]]
    assert parse_seg_labels(SEG).shape == (2, 4)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (SEG.replace("data\n", ""), "no 'data' line"),
        (SEG.replace("width 4\n", ""), "no 'width' line"),
        (SEG.replace("height 2", "height two"), "'height two' is not an integer"),
        (SEG.replace("format ascii cr", "format binary"), "only ascii"),
        (SEG.replace("1 1 0 0", "1 1 0"), "line 12: '1 1 0'"),
        (SEG.replace("1 1 0 0", "1 1 0 x"), "line 12"),
        (SEG.replace("1 1 0 0", "1 1 -1 0"), "line 12"),
        (SEG.replace("0 1 1 3", "0 1 1 4"), "line 13: run \\[0, 1, 1, 4\\] outside"),
        (SEG.replace("0 1 1 3", "0 2 1 3"), "line 13"),
        (SEG.replace("1 0 2 3", "1 0 3 2"), "reversed"),
        (SEG.replace("1 1 0 0", "2 1 0 0"), "segment >= the declared 2"),
        (SEG.replace("0 1 1 3\n", ""), "do not cover"),
        (SEG.replace("0 1 1 3", "0 1 0 3"), "do not cover"),
        (SEG.split("data")[0] + "data\n", "no segment lines"),
    ],
)
def test_malformed_seg(text: str, problem: str) -> None:
    with pytest.raises(DatasetError, match=f"malformed .seg.*{problem}|{problem}"):
        parse_seg(text)


def make_crackforest(root: Path) -> Path:
    (root / "image").mkdir(parents=True)
    (root / "seg").mkdir()
    for stem in ("001", "201"):
        assert cv2.imwrite(str(root / "image" / f"{stem}.jpg"), np.zeros((2, 4, 3), np.uint8))
    (root / "seg" / "001.seg").write_text(SEG)
    return root


def test_small_layout(tmp_path: Path) -> None:
    root = make_crackforest(tmp_path)
    dataset = open_crackforest(root, tile=2)
    assert [(s.id, s.label) for s in dataset] == [
        ("001/r0000_c0000", ANOMALOUS),
        ("001/r0000_c0002", ANOMALOUS),
    ]
    assert [p.name for p in unlabelled_images(root)] == ["201.jpg"]
    assert open_crackforest(root, tile=1, stride=1).counts() == {"normal": 5, "crack": 3}
    assert dataset[0].label != NORMAL and dataset[0].image().shape == (2, 2, 3)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist: expected the CrackForest layout"):
        open_crackforest(tmp_path / "absent")
    root = make_crackforest(tmp_path / "cf")
    with pytest.raises(DatasetError, match="tile 64 px does not fit"):
        open_crackforest(root)
    (root / "seg" / "001.seg").write_text(SEG.replace("data\n", ""))
    with pytest.raises(DatasetError, match=re.escape("001.seg: malformed .seg: no 'data' line")):
        open_crackforest(root, tile=2)
    (root / "seg" / "001.seg").write_text(SEG)
    (root / "seg" / "005.seg").write_text(SEG)
    with pytest.raises(DatasetError, match=re.escape("labels without a photo in image/: 005.seg")):
        open_crackforest(root, tile=2)


def test_photo_size_differs_from_seg(tmp_path: Path) -> None:
    root = make_crackforest(tmp_path)
    assert cv2.imwrite(str(root / "image" / "001.jpg"), np.zeros((3, 4, 3), np.uint8))
    sample = open_crackforest(root, tile=2)[0]
    with pytest.raises(DatasetError, match=re.escape("001.jpg: image is 4x3, its labels say 4x2")):
        sample.image()


def write_mat(path: Path, segmentation: np.ndarray) -> None:
    """A ground-truth file as CrackForest publishes it (checked against groundTruth/001.mat): a
    1x1 struct ``groundTruth`` with uint8 ``Segmentation`` (segments from 1, crack 2) and
    ``Boundaries``, compressed MAT 5."""
    truth = np.empty((1, 1), dtype=[("Segmentation", "O"), ("Boundaries", "O")])
    truth[0, 0]["Segmentation"] = segmentation.astype(np.uint8)
    truth[0, 0]["Boundaries"] = (segmentation == 2).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"groundTruth": truth}, do_compression=True)


def test_published_mat_structure_is_what_the_writer_writes(crackforest_root: Path) -> None:
    real = scipy.io.loadmat(crackforest_root / "groundTruth" / "001.mat")["groundTruth"]
    assert real.shape == (1, 1) and real.dtype.names == ("Segmentation", "Boundaries")
    assert real[0, 0]["Segmentation"].dtype == np.uint8


def make_mat_only(root: Path) -> Path:
    """The small layout of :func:`make_crackforest` with groundTruth/001.mat instead of seg/."""
    make_crackforest(root)
    (root / "seg" / "001.seg").unlink()
    (root / "seg").rmdir()
    write_mat(root / "groundTruth" / "001.mat", parse_seg_labels(SEG) + 1)
    return root


def test_mat_only_layout_reads_like_seg(tmp_path: Path) -> None:
    from_seg = open_crackforest(make_crackforest(tmp_path / "seg"), tile=1, stride=1)
    root = make_mat_only(tmp_path / "mat")
    np.testing.assert_array_equal(
        read_mat_labels(root / "groundTruth" / "001.mat"), parse_seg_labels(SEG)
    )
    from_mat = open_crackforest(root, tile=1, stride=1)
    assert [(s.id, s.label) for s in from_mat] == [(s.id, s.label) for s in from_seg]
    assert from_mat.counts() == {"normal": 5, "crack": 3}
    for a, b in zip(from_mat, from_seg, strict=True):
        np.testing.assert_array_equal(a.mask(), b.mask())
    assert [p.name for p in unlabelled_images(root)] == ["201.jpg"]


def test_seg_is_preferred_and_mat_fills_in(tmp_path: Path) -> None:
    root = make_crackforest(tmp_path)
    write_mat(root / "groundTruth" / "001.mat", np.full((2, 4), 2))  # all crack: must not win
    write_mat(root / "groundTruth" / "201.mat", np.ones((2, 4)))  # no .seg: read from .mat
    dataset = open_crackforest(root, tile=2)
    assert [(s.id, s.label) for s in dataset] == [
        ("001/r0000_c0000", ANOMALOUS),
        ("001/r0000_c0002", ANOMALOUS),
        ("201/r0000_c0000", NORMAL),
        ("201/r0000_c0002", NORMAL),
    ]
    np.testing.assert_array_equal(dataset[0].mask(), parse_seg(SEG)[:, :2])
    assert unlabelled_images(root) == []
    write_mat(root / "groundTruth" / "007.mat", np.ones((2, 4)))
    with pytest.raises(DatasetError, match=re.escape("without a photo in image/: 007.mat")):
        open_crackforest(root, tile=2)


def test_mat_layout_errors(tmp_path: Path) -> None:
    root = make_mat_only(tmp_path / "cf")
    mat = root / "groundTruth" / "001.mat"
    scipy.io.savemat(mat, {"labels": np.ones((2, 4), np.uint8)})
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: not a CrackForest ground-truth")):
        open_crackforest(root, tile=2)
    mat.write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match=re.escape("001.mat: not a CrackForest ground-truth")):
        open_crackforest(root, tile=2)
    write_mat(mat, np.zeros((2, 4)))
    with pytest.raises(DatasetError, match="numbers segments from 1; found 0"):
        open_crackforest(root, tile=2)
    mat.unlink()
    mat.parent.rmdir()
    with pytest.raises(DatasetError, match="neither seg/ nor groundTruth/"):
        open_crackforest(root, tile=2)


def test_real_mat_only_copy_reads_like_the_seg_files(
    crackforest_root: Path, tmp_path: Path
) -> None:
    """A copy of a few real photos with only their groundTruth/*.mat gives the tiles, labels and
    masks the .seg files give (among them 093, whose .seg has the extra segments 2)."""
    stems = ["001", "040", "093"]
    for stem in stems:
        for folder, suffix in (("image", ".jpg"), ("groundTruth", ".mat")):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"{stem}{suffix}").symlink_to(
                crackforest_root / folder / f"{stem}{suffix}"
            )
    from_mat = open_crackforest(tmp_path)
    from_seg = [s for s in open_crackforest(crackforest_root) if s.id.split("/")[0] in stems]
    assert len(from_mat) == len(from_seg) == 3 * 35
    assert [(s.id, s.label) for s in from_mat] == [(s.id, s.label) for s in from_seg]
    assert any(s.label == ANOMALOUS for s in from_mat) and any(s.label == NORMAL for s in from_mat)
    for a, b in zip(from_mat, from_seg, strict=True):
        np.testing.assert_array_equal(a.mask(), b.mask(), err_msg=a.id)
