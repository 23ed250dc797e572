"""Landing sites and stand-off points: where a footprint fits on ground seen clear.

A site needs a disc of ``footprint_radius_m`` in which every cell has been seen (confidence at
least ``min_confidence``: ground nobody looked at is not safe) and none is anomalous beyond
``max_anomaly``. Among the cells where such a disc fits, each is scored by how much room it has
and how clean the disc is:

    score = min(clear_radius / footprint_radius, 2) / 2 * (1 - mean anomaly in the disc)

``clear_radius``: the distance from the cell to the nearest cell that is hazardous or unknown (a
Euclidean distance transform), so a site in the middle of a wide clear plain beats one squeezed
between craters. Sites are taken best first, each suppressing the others within ``spacing_m``
(default twice the footprint radius), so the list offers distinct places rather than one place
many times.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import GeometryError
from .grid import Grid, cell_to_world


@dataclass(frozen=True)
class Site:
    """A candidate: its centre in the grid's frame, the clear radius around it, the anomaly in
    its footprint (mean and max of the probability), its score."""

    x: float
    y: float
    z: float
    clear_radius_m: float
    mean_anomaly: float
    max_anomaly: float
    score: float
    row: int
    col: int


def _disc(radius_cells: float) -> np.ndarray:
    r = int(np.ceil(radius_cells))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx**2 + yy**2 <= radius_cells**2).astype(np.float32)


def rank_sites(
    frame: Grid,
    probability: np.ndarray,
    confidence: np.ndarray,
    footprint_radius_m: float,
    max_anomaly: float = 0.3,
    min_confidence: float = 0.5,
    count: int = 5,
    spacing_m: float | None = None,
) -> list[Site]:
    """The best ``count`` sites, best first (see the module docstring). ``frame`` gives the
    grid's geometry (its values are not read); ``probability`` and ``confidence`` are per cell."""
    if footprint_radius_m <= 0:
        raise GeometryError(f"footprint radius {footprint_radius_m} m must be > 0")
    if probability.shape != frame.shape or confidence.shape != frame.shape:
        raise GeometryError(
            f"layers {probability.shape} and {confidence.shape} do not match the grid {frame.shape}"
        )
    res = frame.resolution
    radius = footprint_radius_m / res
    known = confidence >= min_confidence
    clear = known & (probability <= max_anomaly)
    padded = np.pad(clear.astype(np.uint8), 1)  # the grid's edge is unknown ground
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    kernel = _disc(radius)
    hazard = np.where(known, probability, 1.0).astype(np.float32)  # unknown counts as hazard
    # mean over the disc, cells beyond the grid counted as 1 (unknown): 1 + mean of (hazard - 1)
    mean = 1.0 + cv2.filter2D(hazard - 1.0, -1, kernel / kernel.sum(),
                              borderType=cv2.BORDER_CONSTANT)  # fmt: skip
    fits = distance > radius  # every cell of the disc is known and clear
    score = np.where(fits, np.minimum(distance / radius, 2.0) / 2.0 * (1.0 - mean), -1.0)
    spacing = (2 * footprint_radius_m if spacing_m is None else spacing_m) / res
    sites: list[Site] = []
    order = np.argsort(-score, axis=None, kind="stable")
    taken: list[tuple[int, int]] = []
    for flat in order:
        if score.flat[flat] < 0 or len(sites) >= count:
            break
        row, col = divmod(int(flat), frame.shape[1])
        if any((row - r) ** 2 + (col - c) ** 2 < spacing**2 for r, c in taken):
            continue
        taken.append((row, col))
        x, y, z = cell_to_world(frame, row, col)[0]
        r = kernel.shape[0] // 2
        window = hazard[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1]
        inside = kernel[r - (row - max(row - r, 0)) :, r - (col - max(col - r, 0)) :]
        inside = inside[: window.shape[0], : window.shape[1]] > 0
        sites.append(Site(
            x=float(x), y=float(y), z=float(z), clear_radius_m=float(distance[row, col] * res),
            mean_anomaly=float(mean[row, col]), max_anomaly=float(window[inside].max()),
            score=float(score[row, col]), row=row, col=col,
        ))  # fmt: skip
    return sites
