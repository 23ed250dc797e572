"""The hazard grid's core: Nav2's cell conventions, the anomaly map projected onto the ground (a
known defect lands in the right cell, by plane and by depth), evidence accumulated over frames
and decaying, and landing sites ranked on constructed maps."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.geometry import CameraModel, GeometryError, make_transform, planar_matrix
from vad_inspection.geometry.hazard import (
    HazardConfig,
    HazardGrid,
    project_to_plane,
    project_with_depth,
)
from vad_inspection.geometry.landing import rank_sites

NS = 1_000_000_000
F, W, H = 100.0, 160, 120
CAMERA = CameraModel(W, H, [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], np.zeros(5), "plumb_bob",
                     "cam")  # fmt: skip
GROUND = (np.array([0.0, 0.0, 1.0]), 0.0)  # z = 0


def nadir(x: float, y: float, height: float) -> np.ndarray:
    """map <- optical of a camera at (x, y, height) looking straight down: optical x along map
    x, optical y along map -y, optical z (forward) along map -z."""
    rotation = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
    return make_transform(rotation, [x, y, height])


def grid(config: HazardConfig | None = None, size: int = 40, res: float = 0.5) -> HazardGrid:
    """size x size cells of res m, cell (0, 0)'s corner at (-size*res/2, -size*res/2)."""
    half = size * res / 2
    return HazardGrid(size, size, res, planar_matrix(-half, -half, 0.0), "map", config)


def test_cells_follow_nav2_conventions() -> None:
    g = grid(HazardConfig(prior=2.0, min_confidence=0.5))
    assert (g.occupancy() == -1).all()  # nothing seen: unknown everywhere
    clear, bad, once = [(0.25, 0.25)], [(3.25, 3.25)], [(-3.25, 0.25)]
    for k in range(20):
        g.observe(np.array(clear + bad), np.array([0.0, 2.0]), k * NS)
    g.observe(np.array(once), np.array([0.0]), 20 * NS)  # one frame: half the prior
    cells = g.occupancy()
    assert cells.dtype == np.int8
    assert cells[20, 20] == 0 and cells[26, 26] == 100  # free and lethal
    assert cells[20, 13] == -1  # seen once: confidence 1/3 < 0.5, still unknown
    g.observe(np.array([(-3.25, 0.25)] * 3), np.array([0.5, 0.5, 0.5]), 21 * NS)
    assert 1 <= g.occupancy()[20, 13] <= 99  # undecided evidence: a scaled value
    assert (cells == -1).sum() == 40 * 40 - 2
    assert g.seen[20, 20] == 20 and g.seen[20, 13] == 2


def test_a_known_defect_lands_in_the_right_cell_through_the_ground_plane() -> None:
    g = grid()
    heat = np.zeros((H, W), np.float32)
    u, v = 120, 30  # a defect up and right of the image centre
    heat[v - 4 : v + 4, u - 4 : u + 4] = 2.0
    pose = nadir(1.0, -2.0, 10.0)
    points, values = project_to_plane(heat, CAMERA, pose, GROUND, stride=2)
    assert np.allclose(points[:, 2], 0.0)  # on the ground
    # by hand: ray ((u - cx) / f, (v - cy) / f, 1) -> map (x + h*rx, y - h*ry, 0)
    expected = (1.0 + 10 * (u - W / 2) / F, -2.0 - 10 * (v - H / 2) / F)
    hot = points[values > 1.0]
    assert np.allclose(hot[:, :2].mean(axis=0), expected, atol=0.1)
    for k in range(10):
        g.observe(points, values, k * NS)
    cells = g.occupancy()
    row, col = np.unravel_index(np.argmax(g.probability()), cells.shape)
    x0 = -10.0 + (col + 0.5) * 0.5
    y0 = -10.0 + (row + 0.5) * 0.5
    assert abs(x0 - expected[0]) <= 0.5 and abs(y0 - expected[1]) <= 0.5
    assert cells[row, col] >= 50 and cells[16, 22] == 0  # the frame's centre, (1, -2), is free


def test_depth_projection_agrees_with_the_plane_and_a_tilted_view_misses_the_sky() -> None:
    heat = np.random.default_rng(0).random((H, W)).astype(np.float32)
    pose = nadir(0.0, 0.0, 4.0)
    by_plane, values_plane = project_to_plane(heat, CAMERA, pose, GROUND, stride=4)
    depth = np.full((H // 2, W // 2), 4.0, np.float32)  # a smaller registered depth image
    by_depth, values_depth = project_with_depth(heat, CAMERA, pose, depth, stride=4)
    assert np.allclose(by_plane, by_depth, atol=1e-9) and np.allclose(values_plane, values_depth)
    depth[:10] = np.nan
    assert len(project_with_depth(heat, CAMERA, pose, depth, stride=4)[0]) < len(by_depth)
    with pytest.raises(GeometryError, match="aspect"):
        project_with_depth(heat, CAMERA, pose, np.ones((10, 40)), stride=4)
    # looking at the horizon: the upper half of the image is sky and is left out
    level = make_transform(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]), [0, 0, 1.5])
    points, _ = project_to_plane(heat, CAMERA, level, GROUND, stride=4)
    assert 0 < len(points) < len(by_plane) and (points[:, 0] > 0).all()


def test_evidence_accumulates_and_decays_back_to_unknown() -> None:
    g = grid(HazardConfig(half_life_s=10.0, prior=2.0, min_confidence=0.5))
    spot = np.array([(0.25, 0.25)])
    for k in range(8):
        g.observe(spot, np.array([2.0]), k * NS)
    evidence = sum(0.5 ** ((7 - k) / 10) for k in range(8))  # each frame decayed to the last
    assert g.anomalous[20, 20] == pytest.approx(evidence, rel=1e-6)
    assert g.occupancy()[20, 20] == round(100 * (evidence + 1) / (evidence + 2))
    before = g.confidence()[20, 20]
    g.decay_to(7 * NS + 10 * NS)  # one half-life later
    total_after = g.anomalous[20, 20] + g.clear[20, 20]
    assert total_after == pytest.approx((before / (1 - before)) * 2.0 / 2, rel=1e-6)
    g.decay_to(7 * NS + 60 * NS)
    assert g.occupancy()[20, 20] == -1 and g.seen[20, 20] == 8  # faded; the count stays
    g.observe(spot, np.array([0.0]), 5 * NS)  # an older stamp does not rewind the clock
    assert g.stamp_ns == 67 * NS


def constructed(size: int = 60) -> tuple[HazardGrid, list[tuple[float, float]]]:
    """A 30 m square seen clear everywhere, with hazards at known places."""
    g = grid(HazardConfig(prior=1.0, min_confidence=0.5), size=size)
    hazards = [(-5.0, -5.0), (5.0, 5.0), (-8.0, 9.0)]
    xs = np.arange(-15 + 0.25, 15, 0.5)
    points = np.array([(x, y) for x in xs for y in xs])
    values = np.zeros(len(points))
    for hx, hy in hazards:
        values[np.hypot(points[:, 0] - hx, points[:, 1] - hy) < 1.5] = 2.0
    for k in range(5):
        g.observe(points, values, k * NS)
    return g, hazards


def test_landing_sites_keep_their_footprint_clear_and_are_spread_out() -> None:
    g, hazards = constructed()
    sites = rank_sites(g.frame, g.probability(), g.confidence(), footprint_radius_m=2.0, count=5)
    assert len(sites) == 5
    scores = [s.score for s in sites]
    assert scores == sorted(scores, reverse=True)
    for s in sites:
        assert s.clear_radius_m > 2.0 and s.max_anomaly <= 0.3
        for hx, hy in hazards:  # hazard discs are 1.5 m: a footprint of 2 m must miss them
            assert np.hypot(s.x - hx, s.y - hy) > 1.5 + 2.0 - 0.5
        assert abs(s.x) <= 15 - 2.0 and abs(s.y) <= 15 - 2.0  # the edge is unknown ground
    for a in sites:
        for b in sites:
            assert a is b or np.hypot(a.x - b.x, a.y - b.y) >= 4.0 - 1e-9


def test_unseen_ground_is_no_landing_site_and_a_huge_footprint_finds_none() -> None:
    g, _ = constructed()
    confidence = g.confidence()
    confidence[:, :30] = 0.0  # the western half never seen
    sites = rank_sites(g.frame, g.probability(), confidence, footprint_radius_m=2.0, count=20)
    assert sites and all(s.x > 2.0 for s in sites)
    assert rank_sites(g.frame, g.probability(), g.confidence(), footprint_radius_m=40.0) == []
    with pytest.raises(GeometryError):
        rank_sites(g.frame, g.probability(), g.confidence(), footprint_radius_m=0.0)


def test_the_automatic_stride_leaves_no_gap_in_the_view() -> None:
    from vad_inspection.geometry.hazard import auto_stride

    pose = nadir(0.0, 0.0, 10.0)  # 10 cm of ground per pixel
    assert auto_stride(CAMERA, pose, GROUND, (W, H), 0.5) == 2  # half a 0.5 m cell: 2 px
    assert auto_stride(CAMERA, pose, GROUND, (W, H), 0.1) == 1
    g = grid(res=0.5, size=60)
    heat = np.zeros((H, W), np.float32)
    points, values = project_to_plane(heat, CAMERA, pose, GROUND, stride=2)
    g.observe(points, values, 0)
    # the view covers 16 m x 12 m: every cell well inside it was sampled
    rows = slice(30 - 10, 30 + 10)  # 5 m either side of the centre along y
    cols = slice(30 - 14, 30 + 14)  # 7 m along x
    assert (g.seen[rows, cols] == 1).all()
    coarse = grid(res=0.5, size=60)
    points, values = project_to_plane(heat, CAMERA, pose, GROUND, stride=8)
    coarse.observe(points, values, 0)
    assert (coarse.seen[rows, cols] == 0).any()  # samples 0.8 m apart leave cells unseen
