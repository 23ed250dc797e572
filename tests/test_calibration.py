"""Thresholds from held-out normal scores, and the 0.5-at-threshold normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.vad.calibration import (
    Calibration,
    CalibrationError,
    from_normal_scores,
    from_threshold,
)


def test_mean_plus_k_std_by_hand() -> None:
    scores = np.array([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population std sqrt(1.25)
    calibration = from_normal_scores(scores, k=1.0)
    assert calibration.threshold == pytest.approx(2.5 + np.sqrt(1.25))
    assert calibration.rule == "mean+1std" and calibration.samples == 4
    assert (calibration.low, calibration.high) == (1.0, 4.0)


def test_quantile_rule() -> None:
    calibration = from_normal_scores(np.arange(101, dtype=float), quantile=0.9)
    assert calibration.threshold == pytest.approx(90.0)
    assert calibration.rule == "quantile0.9"


def test_normalised_scores_put_the_threshold_at_one_half() -> None:
    calibration = Calibration(threshold=3.0, low=1.0, high=5.0, rule="x", samples=9)
    np.testing.assert_allclose(calibration.normalize(np.array([3.0, 5.0, 1.0, 99.0, -9.0])),
                               [0.5, 1.0, 0.0, 1.0, 0.0])  # fmt: skip
    assert calibration.is_anomalous(np.array([2.99, 3.0])).tolist() == [False, True]
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_chosen_threshold_keeps_the_spread_of_its_scores() -> None:
    calibration = from_threshold(0.7, np.array([0.1, 0.9, 0.5]), "f1-optimal")
    assert calibration.normalize(np.array([0.7]))[0] == pytest.approx(0.5)
    assert (calibration.low, calibration.high, calibration.samples) == (0.1, 0.9, 3)


@pytest.mark.parametrize(
    ("scores", "kwargs", "message"),
    [
        ([1.0], {}, "at least 2"),
        ([1.0, np.nan], {}, "NaN"),
        ([1.0, 2.0], {"quantile": 1.5}, r"quantile must be in \(0, 1\)"),
    ],
)
def test_bad_calibration_input_is_refused(scores, kwargs, message) -> None:
    with pytest.raises(CalibrationError, match=message):
        from_normal_scores(np.array(scores), **kwargs)


def test_unclipped_normalisation_keeps_the_order_far_from_the_threshold() -> None:
    from vad_inspection.vad.calibration import Calibration

    cal = Calibration(threshold=1.0, low=0.0, high=1.0, rule="k", samples=10)
    far = np.array([-5.0, -3.0, 1.0, 4.0])
    assert cal.normalize(far).tolist() == [0.0, 0.0, 0.5, 1.0]  # clipped: the two lows tie
    assert cal.normalize(far, clip=False).tolist() == [-5.5, -3.5, 0.5, 3.5]
