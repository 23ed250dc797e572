"""Scenarios that play as camera streams with ground truth (pure: data, geometry, msgs; never a
transport). The CLI writes them to bags; the replay node plays bags."""

from .surface import SurfaceConfig, SurfaceScan, build_mosaic, defects_of, pixel_of
from .traverse import RoverTraverse, TraverseConfig
from .types import DefectTruth, FrameTruth, Scenario, ScenarioError, View

__all__ = [
    "DefectTruth",
    "FrameTruth",
    "RoverTraverse",
    "Scenario",
    "ScenarioError",
    "SurfaceConfig",
    "SurfaceScan",
    "TraverseConfig",
    "View",
    "build_mosaic",
    "defects_of",
    "pixel_of",
]
