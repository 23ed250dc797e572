"""What a scenario yields: views (image, depth, pose) with their ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import SetupError


class ScenarioError(SetupError, ValueError):
    """A scenario cannot be built (missing data, too few samples, a bad setting)."""


@dataclass(frozen=True)
class DefectTruth:
    """One distinct defect: an id, its 3-D position in the world frame, where it is on the
    surface (mosaic row, col of its centroid), its box and area in mosaic pixels; its size in
    metres and what it is in the source data, where known (a crater's diameter and table row)."""

    id: str
    position: tuple[float, float, float]
    mosaic_rc: tuple[float, float]
    box: tuple[int, int, int, int]
    area_px: int
    size_m: float = 0.0
    source: str = ""


@dataclass(frozen=True)
class FrameTruth:
    """Per frame: anomalous or not, the pixel mask (None where unknown), the defects whose
    centroid is in view, and the frame's category where the data has classes."""

    anomalous: bool
    mask: np.ndarray | None
    defects: tuple[DefectTruth, ...]
    category: str = ""


@dataclass(frozen=True)
class View:
    """One frame of a scenario: the image, a registered depth image (m), the pose of
    ``base_link`` in the world, the truth, and where the frame lies on the surface."""

    stamp_ns: int
    image: np.ndarray
    depth_m: np.ndarray | None
    world_from_base: np.ndarray
    truth: FrameTruth
    origin: tuple[int, int] = (0, 0)
    source: str = ""  # the dataset sample the frame shows
    encoding: str = "rgb8"  # how ``image`` travels (``8UC6`` for six bands)


class Scenario(Protocol):
    """What the stream writer needs of a scenario."""

    camera: Any
    defects: list[DefectTruth]

    @property
    def optical_frame(self) -> str: ...

    @property
    def frame_count(self) -> int: ...

    def base_from_optical(self) -> np.ndarray: ...

    def views(self, start_ns: int = 0) -> Iterator[View]: ...

    def summary(self) -> dict[str, object]: ...
