"""Turning raw anomaly scores into decisions: a threshold, and scores normalised around it.

Raw scores mean different things for every method and dataset (a distance, a Mahalanobis value, a
reconstruction error). Downstream code -- the detector node, the recorder's priorities, a human
looking at a heat map -- wants one scale: 0.5 is the decision threshold, 0 is "as normal as the
calibration set", 1 is "far beyond it".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vad_inspection.errors import SetupError

#: k of the default threshold rule, mean + k * std of held-out normal scores, for ``fit``,
#: ``eval`` and the node alike: three standard deviations flag about 0.1 % of normal frames if
#: their scores were Gaussian, so a robot does not cry wolf every few seconds. The crack paper's
#: k = 1 is a command-line option.
DEFAULT_K = 3.0


class CalibrationError(SetupError, ValueError):
    """Calibration cannot be computed from what was given."""


@dataclass(frozen=True)
class Calibration:
    """A threshold and the spread of the scores it was set on.

    ``rule`` records how the threshold was chosen (e.g. ``mean+3.0std``, ``quantile0.99``,
    ``f1-optimal``) so that a model file says what its decisions mean.
    """

    threshold: float
    low: float
    high: float
    rule: str
    samples: int

    def normalize(self, scores: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map raw scores so that the threshold is 0.5, clipped to [0, 1] unless ``clip`` is
        False (then scores far below or above keep their order, which ranking metrics need:
        clipped, every clearly normal frame ties at 0).

        Linear, with the calibration set's range as the unit: a score one range above the
        threshold is 1. Min-max normalisation about the threshold, as the reference library does.
        """
        span = max(self.high - self.low, 1e-12)
        linear = (np.asarray(scores, np.float64) - self.threshold) / span + 0.5
        return np.clip(linear, 0, 1) if clip else linear

    def is_anomalous(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.threshold

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, object]) -> Calibration:
        return Calibration(**data)


def _finite(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size < 2:
        raise CalibrationError(f"calibration needs at least 2 scores; got {scores.size}")
    if not np.isfinite(scores).all():
        raise CalibrationError("calibration scores contain NaN or infinite values")
    return scores


def from_normal_scores(
    scores: np.ndarray, k: float = DEFAULT_K, quantile: float | None = None
) -> Calibration:
    """Threshold from held-out normal images: mean + k * std (the crack paper uses k = 1), or a
    quantile of their scores when ``quantile`` is given."""
    scores = _finite(scores)
    if quantile is not None:
        if not 0.0 < quantile < 1.0:
            raise CalibrationError(f"quantile must be in (0, 1); got {quantile}")
        threshold, rule = float(np.quantile(scores, quantile)), f"quantile{quantile:g}"
    else:
        threshold, rule = float(scores.mean() + k * scores.std()), f"mean+{k:g}std"
    return Calibration(threshold, float(scores.min()), float(scores.max()), rule, scores.size)


def from_threshold(threshold: float, scores: np.ndarray, rule: str) -> Calibration:
    """A calibration around a threshold chosen elsewhere (e.g. F1-optimal on labelled data)."""
    scores = _finite(scores)
    return Calibration(
        float(threshold), float(scores.min()), float(scores.max()), rule, scores.size
    )
