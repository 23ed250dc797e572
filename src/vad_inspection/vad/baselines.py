"""Two training-free baselines that every results table carries.

Defects on pavement, concrete and magnetic tiles are often simply darker than their surroundings
or break the local texture. A learned model that cannot beat "the darkest pixel" or "the strongest
local contrast" has learned nothing useful; reporting both keeps every table honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from vad_inspection.vad.base import Prediction
from vad_inspection.vad.masks import PLAIN, MaskRule
from vad_inspection.vad.ops import POLARITIES, check_line_length, line_response, one_sided
from vad_inspection.vad.preprocess import to_gray


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


def _predict(
    maps: list[np.ndarray], depth: list[np.ndarray] | None = None, rule: MaskRule = PLAIN
) -> Prediction:
    stacked = np.stack(maps).astype(np.float32)
    return Prediction(
        scores=stacked.reshape(len(stacked), -1).max(axis=1),
        maps=stacked,
        depth=None if depth is None else np.stack(depth).astype(np.float32),
        rule=rule,
    )


@dataclass
class DarkestPixel:
    """Anomaly map = darkness (1 - intensity) after light smoothing; score = its maximum.

    The smoothing (``sigma`` px) keeps single-pixel sensor noise from deciding the score.
    """

    sigma: float = 1.0
    name: str = "darkest_pixel"

    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Nothing to learn: the baseline is fixed by construction."""

    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        return _predict([1.0 - _smooth(to_gray(im), self.sigma) for im in images])


@dataclass
class LocalContrast:
    """Anomaly map = |intensity - local mean| over a ``context`` px neighbourhood, smoothed.

    Responds to anything that differs from its surroundings (cracks, holes, bright spots) while
    ignoring slow illumination gradients, which the local mean absorbs. ``polarity="darker"``
    keeps only pixels darker than their surroundings: the training-free counterpart of the VAE's
    darker-than-reconstruction map, so that what the VAE adds over a high-pass filter is measured
    (on CrackForest tiles: nothing, README). ``line_length`` > 0 puts the difference through the
    line detector the VAE's crack options use (:func:`~vad_inspection.vad.ops.line_response`)
    before the smoothing. ``mask_width_fraction`` and ``mask_min_length`` are the VAE's mask
    options (:class:`~vad_inspection.vad.masks.MaskRule`), the width judged from the smoothed
    difference before the line detector.
    """

    context: float = 8.0
    sigma: float = 1.0
    polarity: str = "both"
    line_length: int = 0
    mask_width_fraction: float = 0.0
    mask_min_length: int = 0
    name: str = "local_contrast"

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}; got {self.polarity!r}")
        check_line_length(self.line_length)
        self.mask_rule  # noqa: B018 -- validates the mask options
        if self.context <= 0 or self.sigma < 0:
            raise ValueError(
                f"context must be > 0 and sigma >= 0; got context={self.context}, "
                f"sigma={self.sigma}"
            )

    @property
    def mask_rule(self) -> MaskRule:
        """How the map becomes a defect mask."""
        return MaskRule(self.mask_width_fraction, self.mask_min_length)

    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Nothing to learn: the baseline is fixed by construction."""

    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        rule = self.mask_rule
        with_depth = bool(self.line_length) and rule.width_fraction > 0
        maps, depth = [], []
        for image in images:
            gray = to_gray(image)
            difference = one_sided(gray - _smooth(gray, self.context), self.polarity)
            if with_depth:
                depth.append(self._smoothed(difference))
            if self.line_length:
                difference = line_response(difference[None], self.line_length)[0]
            maps.append(self._smoothed(difference))
        return _predict(maps, depth if with_depth else None, rule)

    def _smoothed(self, difference: np.ndarray) -> np.ndarray:
        return _smooth(difference, self.sigma) if self.sigma > 0 else difference
