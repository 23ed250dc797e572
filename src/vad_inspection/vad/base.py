"""The contract every anomaly-detection model in the engine fulfils.

Models see images already resized by the caller to their input size, as ``(H, W, C)`` arrays, and
return one score per image (higher = more anomalous) and an anomaly map of the same ``H x W``.
Keeping resizing outside the model lets the evaluation harness score every method at the same
resolution, as the papers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from vad_inspection.vad.masks import PLAIN, MaskRule, defect_masks


@dataclass(frozen=True)
class Prediction:
    """Scores ``(N,)`` and anomaly maps ``(N, H, W)``, both float32, higher = more anomalous.

    ``rule`` and ``depth`` say how the model wants its maps read as defect masks
    (:mod:`~vad_inspection.vad.masks`): the plain threshold unless the model asks for a defect's
    width to be judged from ``depth`` ``(N, H, W)`` or short regions dropped. They travel with the
    maps so that whoever picks the threshold (the model's calibration, the evaluation harness)
    gets the model's masks from :meth:`masks`.
    """

    scores: np.ndarray
    maps: np.ndarray
    depth: np.ndarray | None = None
    rule: MaskRule = PLAIN

    def __post_init__(self) -> None:
        if self.scores.ndim != 1 or self.maps.ndim != 3 or len(self.scores) != len(self.maps):
            raise ValueError(
                f"Prediction wants scores (N,) and maps (N, H, W); got {self.scores.shape} "
                f"and {self.maps.shape}"
            )
        if self.depth is not None and self.depth.shape != self.maps.shape:
            raise ValueError(
                f"Prediction depth {self.depth.shape} must have the maps' shape {self.maps.shape}"
            )

    def masks(self, threshold: float) -> np.ndarray:
        """Bool defect masks ``(N, H, W)`` at the map threshold ``threshold``, by the rule."""
        return defect_masks(self.maps, threshold, self.rule, self.depth)

    @staticmethod
    def concat(parts: Sequence[Prediction]) -> Prediction:
        """One prediction from several batches' (of one model, so one rule)."""
        depths = [p.depth for p in parts]
        return Prediction(
            scores=np.concatenate([p.scores for p in parts]),
            maps=np.concatenate([p.maps for p in parts]),
            depth=None if any(d is None for d in depths) else np.concatenate(depths),
            rule=parts[0].rule,
        )


@runtime_checkable
class AnomalyModel(Protocol):
    """Fit on normal images, then score any image."""

    name: str

    def fit(self, images: Sequence[np.ndarray]) -> None: ...

    def predict(self, images: Sequence[np.ndarray]) -> Prediction: ...
