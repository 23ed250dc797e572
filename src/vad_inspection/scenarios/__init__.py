"""Scenarios that play as camera streams with ground truth (pure: data, geometry, msgs; never a
transport). The CLI writes them to bags; the replay node plays bags."""

from .surface import SurfaceConfig, SurfaceScan, build_mosaic, defects_of, pixel_of
from .types import DefectTruth, FrameTruth, ScenarioError, View

__all__ = [
    "DefectTruth",
    "FrameTruth",
    "ScenarioError",
    "SurfaceConfig",
    "SurfaceScan",
    "View",
    "build_mosaic",
    "defects_of",
    "pixel_of",
]
