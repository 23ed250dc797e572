"""The lunar orbit pass over real LROC NAC strips: each crater of the chosen size is a defect
whose surface position projects onto its own pixels, and frames are crops of the strips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vad_inspection.data.imageio import read_image
from vad_inspection.data.lroc_nac import list_strips, read_crater_table
from vad_inspection.scenarios import ScenarioError, catalog, pixel_of
from vad_inspection.scenarios.orbit import OrbitConfig, OrbitPass

DATA = Path(__file__).resolve().parents[2] / "shared/data"
TWO = ("M115143943RE_cal_echo_2_2", "M1183658592LE_cal_echo_23_0")


@pytest.fixture(scope="module")
def root() -> Path:
    if not (DATA / "lroc_nac").is_dir():
        pytest.skip("../shared/data/lroc_nac not found")
    return DATA / "lroc_nac"


def test_craters_of_the_chosen_size_project_onto_their_pixels(root: Path) -> None:
    config = OrbitConfig("pass", strips=TWO, min_crater_m=40, passes=4)
    scan = OrbitPass(str(root), config)
    strips = {s.name: s for s in list_strips(root, "test")}
    expected = sum(
        c.diameter * 0.5 >= 40 for name in TWO for c in read_crater_table(strips[name].table)
    )
    assert len(scan.defects) == expected > 5
    second = read_image(strips[TWO[1]].image, channels=1)[:, :, 0]
    assert np.array_equal(scan.mosaic.image[:, 1000:], second)  # laid side by side, unchanged
    views = list(scan.views())
    assert len(views) == scan.frame_count > 20 and views[1].stamp_ns == 40_000_000
    seen = set()
    for view in views:
        assert view.encoding == "mono8" and view.image.shape == (256, 256)
        assert view.truth.anomalous == bool(view.truth.mask.any())
        assert np.allclose(view.depth_m, 50_000.0)
        assert abs(view.world_from_base[2, 3] - 50_000.0) < 1e-6  # the orbiter's altitude
        r0, c0 = view.origin
        for defect in view.truth.defects:
            u, v = pixel_of(scan, view, defect.position)
            row, col = defect.mosaic_rc
            assert abs(u - (col - c0)) < 1.0 and abs(v - (row - r0)) < 1.0
            assert view.truth.mask[int(row - r0), int(col - c0)]  # the centre is crater
            seen.add(defect.id)
    assert len(seen) >= 0.9 * len(scan.defects)  # four passes cover the strips
    summary = scan.summary()
    assert summary["craters_counted"] == expected and summary["kind"] == "orbit"
    assert summary["craters_in_view"] == len(seen)


def test_a_larger_size_counts_fewer_craters_and_names_are_checked(root: Path) -> None:
    small = OrbitPass(str(root), OrbitConfig("a", strips=TWO[:1], min_crater_m=30))
    large = OrbitPass(str(root), OrbitConfig("b", strips=TWO[:1], min_crater_m=60))
    assert 0 < len(large.defects) < len(small.defects)
    assert all(d.size_m >= 60 for d in large.defects)
    with pytest.raises(ScenarioError, match=r"no strip\(s\) \['nope'\] in split 'test'"):
        OrbitPass(str(root), OrbitConfig("c", strips=("nope",)))


def test_the_catalog_description_flies_every_test_strip(root: Path) -> None:
    scan = catalog.load("lunar_orbit", DATA, passes=1)
    assert len(scan.strips) == 8 and scan.mosaic.image.shape == (1000, 8000)
    assert scan.summary()["min_crater_m"] == 50
