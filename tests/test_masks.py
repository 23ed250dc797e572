"""Masks from anomaly maps: the plain threshold, a defect's width judged by its own depth, and the
minimum length, checked on maps built by hand; and the Prediction that carries the rule."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.vad.base import Prediction
from vad_inspection.vad.masks import PLAIN, MaskRule, defect_masks, long_regions

#: Depth across a crack, one value per column: a centre, shoulders at half depth, and tails.
PROFILE = np.array([0.0, 0.2, 0.5, 1.0, 0.5, 0.2, 0.0], dtype=np.float32)


def _two_cracks() -> tuple[np.ndarray, np.ndarray]:
    """A deep vertical crack at columns 2-8 and a faint one (a tenth as deep) at 32-38, each
    running the whole 40 px height, with a map over the threshold (0.5) across both profiles."""
    depth = np.zeros((1, 40, 48), dtype=np.float32)
    depth[0, :, 2:9] = PROFILE
    depth[0, :, 32:39] = 0.1 * PROFILE
    maps = np.zeros_like(depth)
    maps[0, :, 3:8] = 1.0  # the line detector's response, wider than the crack's core
    maps[0, :, 33:38] = 1.0
    return maps, depth


def test_plain_rule_is_the_threshold() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((3, 9, 11)).astype(np.float32)
    np.testing.assert_array_equal(defect_masks(maps, 0.7), maps >= 0.7)
    np.testing.assert_array_equal(
        defect_masks(maps, 0.7, PLAIN, rng.random((3, 9, 11))), maps >= 0.7
    )
    assert PLAIN.is_plain and not MaskRule(width_fraction=0.3).is_plain


def test_width_is_judged_against_each_cracks_own_peak() -> None:
    maps, depth = _two_cracks()
    columns = np.flatnonzero(defect_masks(maps, 0.5, MaskRule(width_fraction=0.3), depth)[0, 20])
    # deep crack: 0.5, 1.0, 0.5 of its peak 1.0 are >= 0.3, the 0.2 shoulders inside the
    # thresholded band (columns 3 and 7) are not. The faint crack keeps the same three columns:
    # its 0.05 shoulders are half of its own peak 0.1, though far below the deep crack's.
    assert columns.tolist() == [4, 5, 6, 34, 35, 36]
    at_half = defect_masks(maps, 0.5, MaskRule(width_fraction=0.6), depth)[0, 20]
    assert np.flatnonzero(at_half).tolist() == [5, 35]
    # the width rule only narrows: nothing outside the thresholded map is added
    assert not defect_masks(maps, 0.5, MaskRule(width_fraction=0.01), depth)[0, :, :3].any()


def test_without_depth_the_width_is_judged_on_the_map() -> None:
    maps = np.zeros((1, 5, 20), dtype=np.float32)
    maps[0, 2, 5:12] = [0.3, 0.6, 0.9, 2.0, 0.9, 0.6, 0.3]
    masks = defect_masks(maps, 0.25, MaskRule(width_fraction=0.4))
    assert np.flatnonzero(masks[0, 2]).tolist() == [7, 8, 9]


def test_min_length_drops_short_regions_by_their_longer_side() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[2, 0:11] = True  # 11 px long: dropped at 12
    mask[6, 0:12] = True  # 12 px: kept
    mask[9:21, 2:4] = True  # vertical, 12 px: kept
    for i in range(12):  # a diagonal is one 8-connected region, 12 px on each side
        mask[14 + i, 10 + i] = True
    mask[25:29, 25:29] = True  # a 4 x 4 blob: dropped
    kept = long_regions(mask, 12)
    assert not kept[2].any() and kept[6, 0:12].all() and kept[9:21, 2:4].all()
    assert kept[25, 21] and kept[14, 10] and not kept[25:29, 25:29].any()
    maps = mask[None].astype(np.float32)
    np.testing.assert_array_equal(defect_masks(maps, 0.5, MaskRule(min_length=12))[0], kept)
    np.testing.assert_array_equal(long_regions(mask, 0), mask)


def test_bad_rules_and_shapes_are_named() -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="width_fraction must be in"):
            MaskRule(width_fraction=bad)
    with pytest.raises(ValueError, match="min_length must be >= 0"):
        MaskRule(min_length=-1)
    with pytest.raises(ValueError, match="window must be odd"):
        MaskRule(window=4)
    maps = np.zeros((2, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="must have the maps' shape"):
        defect_masks(maps, 0.5, MaskRule(width_fraction=0.3), np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match=r"maps must be \(N, H, W\)"):
        defect_masks(maps[0], 0.5)


def test_prediction_carries_its_rule_through_batches() -> None:
    maps, depth = _two_cracks()
    rule = MaskRule(width_fraction=0.3)
    one = Prediction(np.ones(1, np.float32), maps, depth=depth, rule=rule)
    both = Prediction.concat([one, one])
    assert both.rule == rule and both.depth.shape == (2, 40, 48)
    np.testing.assert_array_equal(both.masks(0.5), defect_masks(both.maps, 0.5, rule, both.depth))
    assert both.masks(0.5).sum() < (both.maps >= 0.5).sum()
    plain = Prediction(np.ones(1, np.float32), maps)
    np.testing.assert_array_equal(plain.masks(0.5), maps >= 0.5)
    assert Prediction.concat([plain, one]).depth is None
    with pytest.raises(ValueError, match="depth"):
        Prediction(np.ones(1, np.float32), maps, depth=depth[:, :10])
