"""How right a hazard grid and its landing sites are, against a scenario's ground truth.

- **Cells**: the truth masks of the frames are projected into the grid exactly as the hazard node
  projects anomaly maps (the same cameras, poses and surface), so a truth cell is one where at
  least ``min_share`` (a tenth) of the samples are defect pixels: a crack a few millimetres wide
  through a centimetre cell makes it a hazard cell, as the grid should say. Precision and recall
  of the grid's anomalous cells (at or above ``level``, 50 by default: more likely anomalous than
  not) are counted over the cells both the grid knows (not -1) and the truth saw.
- **Sites**: a site is clear when no true defect overlaps its footprint (centre distance below
  footprint radius plus the defect's radius). The same rate for sites drawn at random where a
  footprint fits in ground the grid knows is the baseline a ranking must beat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry.camera import CameraModel
from ..geometry.grid import Grid, cell_to_world, in_bounds, world_to_cell
from ..geometry.hazard import Plane, auto_stride, project_to_plane


@dataclass(frozen=True)
class TruthView:
    """One frame's truth mask with what places it: the camera and its pose in the grid's frame."""

    mask: np.ndarray  # bool (H, W)
    camera: CameraModel
    T_plane_from_camera: np.ndarray


def truth_cells(
    frame: Grid, views: Iterable[TruthView], plane: Plane, stride: int = 0,
    min_share: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(anomalous, seen): per cell, whether at least ``min_share`` of the samples projected
    into it were defect pixels, and whether any sample landed in it. ``stride`` 0 samples every
    view at a quarter of a cell (:func:`~vad_inspection.geometry.hazard.auto_stride`)."""
    size = frame.shape[0] * frame.shape[1]
    hits, total = np.zeros(size), np.zeros(size)
    for view in views:
        height, width = view.mask.shape
        step = stride or auto_stride(view.camera, view.T_plane_from_camera, plane,
                                     (width, height), frame.resolution / 2)  # fmt: skip
        points, values = project_to_plane(view.mask.astype(np.float32), view.camera,
                                          view.T_plane_from_camera, plane, step)  # fmt: skip
        rows, cols = world_to_cell(frame, points)
        inside = in_bounds(frame, rows, cols)
        flat = rows[inside] * frame.shape[1] + cols[inside]
        total += np.bincount(flat, minlength=size)
        hits += np.bincount(flat, weights=values[inside], minlength=size)
    seen = total > 0
    share = np.divide(hits, total, out=np.zeros(size), where=seen)
    return (share >= min_share).reshape(frame.shape), seen.reshape(frame.shape)


@dataclass(frozen=True)
class CellScores:
    precision: float | None
    recall: float | None
    f1: float | None
    predicted: int  # anomalous cells in the grid (known and seen by the truth)
    true: int  # anomalous truth cells among those the grid knows
    hits: int
    compared: int  # cells counted (known by the grid and seen by the truth)
    unknown_truth: int  # true anomalous cells the grid still calls unknown


def cell_scores(cells: np.ndarray, truth: np.ndarray, seen: np.ndarray, level: int = 50
                ) -> CellScores:  # fmt: skip
    known = (cells >= 0) & seen
    predicted = known & (cells >= level)
    true = known & truth
    hits = int((predicted & true).sum())
    p = hits / int(predicted.sum()) if predicted.any() else None
    r = hits / int(true.sum()) if true.any() else None
    f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    return CellScores(p, r, f1, int(predicted.sum()), int(true.sum()), hits, int(known.sum()),
                      int((truth & seen & (cells < 0)).sum()))  # fmt: skip


def clear_sites(
    sites: Sequence[Sequence[float]], footprint_radius_m: float,
    defects: Sequence[Sequence[float]],
) -> list[bool]:  # fmt: skip
    """Per site (x, y, z): no defect (x, y, z, diameter) overlaps its footprint."""
    if not len(defects):
        return [True] * len(sites)
    d = np.asarray(defects, np.float64)
    out = []
    for site in sites:
        gap = np.linalg.norm(d[:, :3] - np.asarray(site[:3], np.float64), axis=1) - d[:, 3] / 2
        out.append(bool((gap >= footprint_radius_m).all()))
    return out


def random_sites(
    frame: Grid, known: np.ndarray, footprint_radius_m: float, count: int, seed: int = 0
) -> list[tuple[float, float, float]]:
    """``count`` centres drawn uniformly among cells whose whole footprint is known ground."""
    import cv2

    padded = np.pad(known.astype(np.uint8), 1)
    room = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    rows, cols = np.nonzero(room * frame.resolution > footprint_radius_m)
    if not len(rows):
        return []
    pick = np.random.default_rng(seed).integers(0, len(rows), count)
    centres = cell_to_world(frame, rows[pick], cols[pick])
    return [(float(x), float(y), float(z)) for x, y, z in centres]
