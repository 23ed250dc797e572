"""What a scenario yields: views (image, depth, pose) with their ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SetupError


class ScenarioError(SetupError, ValueError):
    """A scenario cannot be built (missing data, too few samples, a bad setting)."""


@dataclass(frozen=True)
class DefectTruth:
    """One distinct defect: an id, its 3-D position in the world frame, where it is on the
    surface (mosaic row, col of its centroid), its box and area in mosaic pixels."""

    id: str
    position: tuple[float, float, float]
    mosaic_rc: tuple[float, float]
    box: tuple[int, int, int, int]
    area_px: int


@dataclass(frozen=True)
class FrameTruth:
    """Per frame: anomalous or not, the pixel mask, the defects whose centroid is in view."""

    anomalous: bool
    mask: np.ndarray
    defects: tuple[DefectTruth, ...]


@dataclass(frozen=True)
class View:
    """One frame of a scenario: the image, a registered depth image (m), the pose of
    ``base_link`` in the world, the truth, and where the frame lies on the surface."""

    stamp_ns: int
    image: np.ndarray
    depth_m: np.ndarray
    world_from_base: np.ndarray
    truth: FrameTruth
    origin: tuple[int, int]
