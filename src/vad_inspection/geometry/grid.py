"""Occupancy grids in a frame: cells <-> metric points, as nav_msgs/OccupancyGrid lays them out.

Cell ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)`` resolutions from the grid's origin
pose, along the origin's x (columns) and y (rows) axes; its centre is
``origin @ [(col + 0.5) * res, (row + 0.5) * res, 0, 1]``. Points are in the grid's ``frame_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .transforms import invert


@dataclass(frozen=True, eq=False)
class Grid:
    """A decoded nav_msgs/OccupancyGrid.

    ``grid[row, col]`` is the cell at ``origin @ [(col + 0.5) * res, (row + 0.5) * res, 0, 1]``:
    rows grow along the origin's y axis. Values: -1 unknown, 0..100 occupancy probability.
    ``resolution`` is the message's float32 value (m/cell) widened to float.
    """

    grid: np.ndarray
    resolution: float
    origin: np.ndarray
    frame_id: str
    stamp_ns: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``: the message's ``(height, width)``."""
        rows, cols = self.grid.shape
        return int(rows), int(cols)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return (
            self.resolution == other.resolution
            and self.frame_id == other.frame_id
            and self.stamp_ns == other.stamp_ns
            and np.array_equal(self.origin, other.origin)
            and self.grid.shape == other.grid.shape
            and np.array_equal(self.grid, other.grid)
        )

    __hash__ = None  # type: ignore[assignment]


def world_to_cell(grid: Grid, points: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` int64 arrays of the cells holding ``points`` ((N, 2) or (N, 3)).

    Points are taken into the origin's frame and dropped along its z axis (a point above a cell
    is in that cell). Cells outside the grid are returned as they fall (negative or too large);
    :func:`in_bounds` says which are inside.
    """
    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if p.shape[-1] == 2:
        p = np.hstack([p, np.zeros((len(p), 1))])
    to_local = invert(grid.origin)
    local = p @ to_local[:3, :3].T + to_local[:3, 3]
    cells = np.floor(local[:, :2] / grid.resolution).astype(np.int64)
    return cells[:, 1], cells[:, 0]


def cell_to_world(grid: Grid, rows: Any, cols: Any) -> np.ndarray:
    """(N, 3) centres of cells ``(rows, cols)`` in the grid's frame (on the origin's xy plane)."""
    r, c = np.broadcast_arrays(np.asarray(rows, np.float64), np.asarray(cols, np.float64))
    local = np.stack(
        [(c.reshape(-1) + 0.5) * grid.resolution, (r.reshape(-1) + 0.5) * grid.resolution], -1
    )
    local = np.hstack([local, np.zeros((len(local), 1))])
    origin = np.asarray(grid.origin, dtype=np.float64)
    return local @ origin[:3, :3].T + origin[:3, 3]


def in_bounds(grid: Grid, rows: Any, cols: Any) -> np.ndarray:
    """Boolean array: which ``(rows, cols)`` are cells of ``grid``."""
    r, c = np.asarray(rows), np.asarray(cols)
    n_rows, n_cols = grid.shape
    return (r >= 0) & (r < n_rows) & (c >= 0) & (c < n_cols)
