"""3-D positions of image regions: by depth image (16UC1 mm, 32FC1 m) and by plane intersection.

The scene: a camera (fx = fy = 500, cx = 320, cy = 240) looking at a plane about 2 m away, its
depth image rendered in closed form (z = -d / (n . ray) for the pixel's z = 1 ray).
"""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.geometry import (
    CameraModel,
    GeometryError,
    TransformBuffer,
    axis_angle_matrix,
    intersect_plane,
    invert,
    make_transform,
    planar_matrix,
    plane_from_point_normal,
    point_from_depth,
    point_on_plane,
)

CAMERA = CameraModel(
    width=640,
    height=480,
    K=[[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]],
    D=[],
    distortion_model="plumb_bob",
    frame_id="camera",
)
# a plane 2 m ahead on the optical axis, tilted towards the camera's upper left
NORMAL = np.array([0.2, -0.3, -1.0]) / np.linalg.norm([0.2, -0.3, -1.0])
PLANE_D = -float(NORMAL @ [0.0, 0.0, 2.0])
PIXEL = (400, 300)
RAY = np.array([(400 - 320) / 500, (300 - 240) / 500, 1.0])  # z = 1 ray of PIXEL, by hand
TRUTH = RAY * -PLANE_D / (NORMAL @ RAY)
BOX = (395, 295, 406, 306)  # 11 x 11 pixels centred on PIXEL


def render_depth(width: int = 640, height: int = 480) -> np.ndarray:
    """Metric z of the plane at each pixel of the camera resized to ``width`` x ``height``."""
    s = 0.5 * width / 640
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    # pixel centres map as cv2.resize maps them: u_full = (u + 0.5) / s - 0.5
    x = ((u + 0.5) / (2 * s) - 0.5 - 320) / 500
    y = ((v + 0.5) / (2 * s) - 0.5 - 240) / 500
    return -PLANE_D / (NORMAL[0] * x + NORMAL[1] * y + NORMAL[2])


def test_truth_is_about_two_metres_away() -> None:
    assert 1.9 < TRUTH[2] < 2.3
    assert abs(NORMAL @ TRUTH + PLANE_D) < 1e-12


def test_uint16_millimetres() -> None:
    depth = np.round(render_depth() * 1000).astype(np.uint16)
    for units in ("auto", "mm"):
        found = point_from_depth(CAMERA, depth, BOX, units)  # type: ignore[arg-type]
        assert np.linalg.norm(found.point - TRUTH) < 0.01
        assert np.linalg.norm(found.point - TRUTH) < 0.002
        assert found.pixel == PIXEL and (found.valid, found.total) == (121, 121)
        assert found.width == pytest.approx(found.depth * 11 / 500)
        assert found.height == pytest.approx(found.depth * 11 / 500)
    # the same millimetres read as metres are 1000 times too far: units matter
    assert point_from_depth(CAMERA, depth, BOX, "m").depth > 1000


def test_float32_metres_with_holes_and_zeros() -> None:
    depth = render_depth().astype(np.float32)
    rng = np.random.default_rng(3)
    window = depth[295:306, 395:406]
    holes = rng.random(window.shape)
    window[holes < 0.35] = np.nan
    window[(holes >= 0.35) & (holes < 0.5)] = 0.0
    window[(holes >= 0.5) & (holes < 0.55)] = np.inf
    window[0, 0] = -1.0
    found = point_from_depth(CAMERA, depth, BOX)
    assert np.linalg.norm(found.point - TRUTH) < 0.01
    assert found.total == 121 and 30 < found.valid < 70
    # a mask works like a box: a disc centred on PIXEL has PIXEL as its centroid
    v, u = np.mgrid[0:480, 0:640]
    disc = (u - 400) ** 2 + (v - 300) ** 2 <= 36
    by_mask = point_from_depth(CAMERA, depth, disc)
    assert by_mask.pixel == (400.0, 300.0)
    assert np.linalg.norm(by_mask.point - TRUTH) < 0.01
    assert by_mask.width == pytest.approx(by_mask.depth * 13 / 500)


def test_no_valid_depth_says_why() -> None:
    depth = render_depth().astype(np.float32)
    depth[295:306, 395:406] = np.nan
    depth[295:297, 395:406] = 0.0
    with pytest.raises(
        GeometryError,
        match=r"all 121 depth pixels are NaN or zero \(99 NaN or inf, 22 zero or negative\)",
    ):
        point_from_depth(CAMERA, depth, BOX)
    zeros = np.zeros((480, 640), np.uint16)
    with pytest.raises(GeometryError, match=r"all 121 depth pixels are NaN or zero"):
        point_from_depth(CAMERA, zeros, BOX)


@pytest.mark.parametrize("size", [(320, 240), (1280, 960)])
def test_depth_at_another_resolution(size: tuple[int, int]) -> None:
    depth = np.round(render_depth(*size) * 1000).astype(np.uint16)
    found = point_from_depth(CAMERA, depth, BOX)
    assert np.linalg.norm(found.point - TRUTH) < 0.01
    assert found.total == (11 * size[0] // 640 + (size[0] < 640)) ** 2
    v, u = np.mgrid[0:480, 0:640]
    disc = (u - 400) ** 2 + (v - 300) ** 2 <= 36
    assert np.linalg.norm(point_from_depth(CAMERA, depth, disc).point - TRUTH) < 0.01


def test_bad_regions_and_images() -> None:
    depth = np.full((480, 640), 2000, np.uint16)
    with pytest.raises(GeometryError, match="differ in aspect ratio"):
        point_from_depth(CAMERA, np.full((360, 640), 2000, np.uint16), BOX)
    with pytest.raises(GeometryError, match=r"units='auto' knows uint16 .* pass units"):
        point_from_depth(CAMERA, depth.astype(np.int32), BOX)
    with pytest.raises(GeometryError, match="units must be 'mm', 'm' or 'auto', got 'cm'"):
        point_from_depth(CAMERA, depth, BOX, "cm")  # type: ignore[arg-type]
    with pytest.raises(GeometryError, match=r"mask has shape \(240, 320\)"):
        point_from_depth(CAMERA, depth, np.ones((240, 320), bool))
    with pytest.raises(GeometryError, match="mask is empty"):
        point_from_depth(CAMERA, depth, np.zeros((480, 640), bool))
    with pytest.raises(GeometryError, match="is empty"):
        point_from_depth(CAMERA, depth, (10, 10, 10, 20))
    with pytest.raises(GeometryError, match="lies outside the 640x480 image"):
        point_from_depth(CAMERA, depth, (700, 10, 720, 20))
    # a box sticking out of the image is clipped to it
    clipped = point_from_depth(CAMERA, depth, (630, 470, 650, 490))
    assert clipped.pixel == (634.5, 474.5) and clipped.total == 100


WALL = ((1.0, 0.0, 0.0), -6.0)  # the plane x = 6 m in the map
MAP_BASE_0 = planar_matrix(3.0, 0.0, 0.0)
MAP_BASE_1 = planar_matrix(4.0, 1.0, np.radians(20))
MAP_BASE_HALF = planar_matrix(3.5, 0.5, np.radians(10))  # by hand
BASE_CAMERA = make_transform(  # optical frame, pitched 5 degrees down, 0.3 m ahead, 1.2 m up
    axis_angle_matrix([0, 1, 0], np.radians(5)) @ np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]),
    [0.3, 0.0, 1.2],
)


def test_point_on_a_wall_through_the_transform_buffer() -> None:
    tf = TransformBuffer()
    tf.set_transform("map", "base_link", MAP_BASE_0, 0)
    tf.set_transform("map", "base_link", MAP_BASE_1, 1_000_000_000)
    tf.set_transform("base_link", "camera", BASE_CAMERA, 0, static=True)
    truth = np.array([6.0, 0.9, 0.8])  # on the wall
    in_camera = invert(MAP_BASE_HALF @ BASE_CAMERA) @ np.append(truth, 1.0)
    assert 1.9 < in_camera[2] < 2.5  # about 2 m ahead
    pixel = (500 * in_camera[0] / in_camera[2] + 320, 500 * in_camera[1] / in_camera[2] + 240)
    assert 0 <= pixel[0] < 640 and 0 <= pixel[1] < 480
    found = point_on_plane(CAMERA, pixel, tf.lookup("map", "camera", 500_000_000), WALL)
    assert np.linalg.norm(found - truth) < 0.01
    np.testing.assert_allclose(found, truth, atol=1e-9)
    # the same pixel at t = 0 s (robot elsewhere) lands elsewhere on the wall
    elsewhere = point_on_plane(CAMERA, pixel, tf.lookup("map", "camera", 0), WALL)
    assert elsewhere[0] == pytest.approx(6.0) and np.linalg.norm(elsewhere - truth) > 0.1


def test_plane_intersection_known_answers_and_refusals() -> None:
    np.testing.assert_allclose(
        intersect_plane([0, 0, 0], [1, 1, 0], WALL), [6.0, 6.0, 0.0], atol=1e-12
    )
    n, d = plane_from_point_normal([0, 0, 2], [0, 0, -3])
    np.testing.assert_allclose(n, [0, 0, -1])
    assert d == 2.0
    with pytest.raises(GeometryError, match=r"parallel to the plane \(its origin is 6.000 m"):
        intersect_plane([0, 0, 0], [0, 1, 0], WALL)
    with pytest.raises(GeometryError, match=r"plane is behind the camera.* 6.000 m behind"):
        intersect_plane([0, 0, 0], [-1, 0, 0], WALL)
    with pytest.raises(GeometryError, match=r"meets the plane 600.0 m away, beyond max_dis"):
        intersect_plane([0, 0, 0], [0.01, 0.99995, 0], WALL, max_distance=100)
    # a camera with its back to the wall: the error names the pixel and the camera
    backwards = planar_matrix(3.0, 0.0, np.pi) @ BASE_CAMERA
    assert backwards[:3, 2] @ [1.0, 0.0, 0.0] < 0  # optical axis points away from the wall
    with pytest.raises(GeometryError, match=r"pixel \(320.0, 240.0\) of camera 'camera': .*behind"):
        point_on_plane(CAMERA, (320, 240), backwards, WALL)
