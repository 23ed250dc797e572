"""Occupancy grid cells <-> metric points in the grid's frame."""

from __future__ import annotations

import numpy as np

from vad_inspection.geometry import (
    Grid,
    cell_to_world,
    in_bounds,
    make_transform,
    planar_matrix,
    world_to_cell,
)


def test_cells_and_points_known_answers() -> None:
    # origin at (-1, 2), rotated +90 degrees: columns grow along map +y, rows along map -x
    grid = Grid(np.zeros((3, 5), np.int8), 0.5, planar_matrix(-1.0, 2.0, np.pi / 2), "map", 0)
    assert grid.shape == (3, 5)
    # cell (row 1, col 2): local centre (1.25, 0.75) -> map (-1 - 0.75, 2 + 1.25)
    np.testing.assert_allclose(cell_to_world(grid, 1, 2), [[-1.75, 3.25, 0.0]], atol=1e-12)
    rows, cols = world_to_cell(grid, [[-1.75, 3.25], [-1.01, 2.01], [-0.9, 2.1], [-1.2, 4.6]])
    np.testing.assert_array_equal(rows, [1, 0, -1, 0])
    np.testing.assert_array_equal(cols, [2, 0, 0, 5])
    np.testing.assert_array_equal(in_bounds(grid, rows, cols), [True, True, False, False])


def test_round_trip_with_a_tilted_origin_drops_points_along_its_z() -> None:
    origin = make_transform([0.1, 0.0, 0.3, 0.9], [4.0, -3.0, 1.0])
    grid = Grid(np.zeros((40, 60), np.int8), 0.1, origin, "map", 0)
    rows, cols = np.meshgrid(np.arange(40), np.arange(60), indexing="ij")
    centres = cell_to_world(grid, rows, cols)
    back_rows, back_cols = world_to_cell(grid, centres + 0.7 * origin[:3, 2])  # 0.7 m above
    np.testing.assert_array_equal(back_rows, rows.reshape(-1))
    np.testing.assert_array_equal(back_cols, cols.reshape(-1))
