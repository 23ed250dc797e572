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


@dataclass(frozen=True)
class Prediction:
    """Scores ``(N,)`` and anomaly maps ``(N, H, W)``, both float32, higher = more anomalous."""

    scores: np.ndarray
    maps: np.ndarray

    def __post_init__(self) -> None:
        if self.scores.ndim != 1 or self.maps.ndim != 3 or len(self.scores) != len(self.maps):
            raise ValueError(
                f"Prediction wants scores (N,) and maps (N, H, W); got {self.scores.shape} "
                f"and {self.maps.shape}"
            )


@runtime_checkable
class AnomalyModel(Protocol):
    """Fit on normal images, then score any image."""

    name: str

    def fit(self, images: Sequence[np.ndarray]) -> None: ...

    def predict(self, images: Sequence[np.ndarray]) -> Prediction: ...
