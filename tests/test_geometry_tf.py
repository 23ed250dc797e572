"""TransformBuffer: a frame tree with timed edges, looked up the way tf2 looks it up."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vad_inspection.errors import SetupError
from vad_inspection.geometry import (
    GeometryError,
    TransformBuffer,
    TransformUnavailable,
    axis_angle_matrix,
    invert,
    make_transform,
    planar_matrix,
)

S = 1_000_000_000
MS = 1_000_000
T0 = 100 * S  # samples at T0 and T0 + 1 s

MAP_ODOM = planar_matrix(10.0, -5.0, 0.3)
BASE_CAMERA = make_transform(  # REP 103 optical frame, 20 degrees down, 1.2 m up, 0.3 m ahead
    axis_angle_matrix([0, 1, 0], np.radians(20)) @ np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]),
    [0.3, 0.0, 1.2],
)
ODOM_BASE_0 = planar_matrix(0.0, 0.0, 0.0)
ODOM_BASE_1 = planar_matrix(2.0, -4.0, np.pi / 2)
ODOM_BASE_HALF = planar_matrix(1.0, -2.0, np.pi / 4)  # by hand: half the turn, half the way


def robot() -> TransformBuffer:
    """map -> odom (static), odom -> base_link (moving), base_link -> camera (static)."""
    tf = TransformBuffer()
    tf.set_transform("map", "odom", MAP_ODOM, 0, static=True)
    tf.set_transform("odom", "base_link", ODOM_BASE_0, T0)
    tf.set_transform("odom", "base_link", ODOM_BASE_1, T0 + S)
    tf.set_transform("base_link", "camera", BASE_CAMERA, 0, static=True)
    return tf


def test_chain_lookup_interpolates_the_moving_edge() -> None:
    tf = robot()
    expected = MAP_ODOM @ ODOM_BASE_HALF @ BASE_CAMERA
    np.testing.assert_allclose(tf.lookup("map", "camera", T0 + S // 2), expected, atol=1e-12)
    np.testing.assert_allclose(
        tf.lookup("map", "camera", T0), MAP_ODOM @ ODOM_BASE_0 @ BASE_CAMERA, atol=1e-12
    )
    # a point 2 m in front of the camera, in the map
    point = tf.lookup("map", "camera", T0 + S // 2) @ [0.0, 0.0, 2.0, 1.0]
    np.testing.assert_allclose(point, expected @ [0.0, 0.0, 2.0, 1.0], atol=1e-12)


def test_inverse_and_sideways_lookups() -> None:
    tf = robot()
    tf.set_transform("map", "dock", planar_matrix(3.0, 3.0, -1.0), 0, static=True)
    t = T0 + S // 4
    forward = tf.lookup("map", "camera", t)
    np.testing.assert_allclose(tf.lookup("camera", "map", t), invert(forward), atol=1e-12)
    np.testing.assert_allclose(tf.lookup("camera", "map", t) @ forward, np.eye(4), atol=1e-12)
    # camera -> dock goes up to map and down again
    np.testing.assert_allclose(
        tf.lookup("dock", "camera", t),
        invert(planar_matrix(3.0, 3.0, -1.0)) @ forward,
        atol=1e-12,
    )
    np.testing.assert_allclose(tf.lookup("odom", "base_link", t), tf.lookup("odom", "base_link", t))
    np.testing.assert_array_equal(tf.lookup("camera", "camera", 123), np.eye(4))
    # leading slashes (ROS 1 habit) name the same frame
    np.testing.assert_allclose(tf.lookup("/map", "/camera", t), forward, atol=0)


def test_static_edges_hold_at_any_time_and_zero_is_latest() -> None:
    tf = robot()
    for stamp in (1, T0 - 50 * S, T0 + 1000 * S):
        np.testing.assert_array_equal(tf.lookup("base_link", "camera", stamp), BASE_CAMERA)
    np.testing.assert_allclose(
        tf.lookup("map", "camera"), MAP_ODOM @ ODOM_BASE_1 @ BASE_CAMERA, atol=1e-12
    )
    assert tf.latest_common_time("map", "camera") == T0 + S
    assert tf.latest_common_time("map", "odom") == 0  # static only
    tf.set_transform("odom", "wheel", np.eye(4), T0 + S // 2)  # a slower edge bounds "latest"
    assert tf.latest_common_time("camera", "wheel") == T0 + S // 2
    np.testing.assert_allclose(tf.lookup("base_link", "wheel"), invert(ODOM_BASE_HALF), atol=1e-12)


def test_unknown_frame_names_the_known_ones() -> None:
    with pytest.raises(
        TransformUnavailable,
        match=r"source frame 'lidar' does not exist; known frames: base_link, camera, map, odom$",
    ):
        robot().lookup("map", "lidar", T0)
    ok, reason = robot().can_transform("gps", "map", T0)
    assert not ok and reason.startswith("target frame 'gps' does not exist")
    assert robot().can_transform("map", "camera", T0) == (True, "")
    with pytest.raises(TransformUnavailable, match="known frames: none yet"):
        TransformBuffer().lookup("map", "camera")


def test_disconnected_trees_name_both_roots() -> None:
    tf = robot()
    tf.set_transform("world", "sun", np.eye(4), 0, static=True)
    tf.set_transform("sun", "earth", np.eye(4), T0)
    with pytest.raises(TransformUnavailable) as info:
        tf.lookup("camera", "earth", T0)
    assert str(info.value) == (
        "frames 'earth' and 'camera' are not connected: 'earth' is in the tree rooted at "
        "'world', 'camera' in the tree rooted at 'map'"
    )


def test_extrapolation_says_by_how_much_and_on_which_edge() -> None:
    tf = robot()
    with pytest.raises(TransformUnavailable) as info:
        tf.lookup("map", "camera", T0 - 250 * MS, tolerance_ns=50 * MS)
    text = str(info.value)
    assert "extrapolation into the past on edge 'odom' -> 'base_link'" in text
    assert "250.0 ms before its oldest sample" in text
    assert "200.0 ms beyond the tolerance of 50.0 ms" in text
    with pytest.raises(TransformUnavailable, match=r"into the future .* 30.0 ms beyond the tol"):
        tf.lookup("camera", "map", T0 + S + 30 * MS)
    # within the tolerance the end sample is used
    np.testing.assert_allclose(
        tf.lookup("odom", "base_link", T0 + S + 30 * MS, tolerance_ns=30 * MS), ODOM_BASE_1
    )
    np.testing.assert_allclose(
        tf.lookup("odom", "base_link", T0 - 10 * MS, tolerance_ns=30 * MS), ODOM_BASE_0
    )


def test_cache_prunes_old_samples_and_refuses_older_ones() -> None:
    tf = TransformBuffer(cache_ns=10 * S)
    for second in range(16):
        assert tf.set_transform("odom", "base_link", planar_matrix(second, 0, 0), second * S)
    np.testing.assert_allclose(tf.lookup("odom", "base_link", 5 * S + S // 2)[0, 3], 5.5)
    with pytest.raises(TransformUnavailable, match=r"past .* 1000.0 ms before its oldest"):
        tf.lookup("odom", "base_link", 4 * S)
    assert not tf.set_transform("odom", "base_link", np.eye(4), 2 * S)  # older than the cache
    assert tf.set_transform("odom", "base_link", np.eye(4), 5 * S)  # out of order but kept
    np.testing.assert_array_equal(tf.lookup("odom", "base_link", 5 * S), np.eye(4))
    with pytest.raises(SetupError):
        TransformBuffer(cache_ns=0)


def test_tree_rules() -> None:
    tf = robot()
    with pytest.raises(GeometryError, match=r"'camera' -> 'odom' would close a loop"):
        tf.set_transform("camera", "odom", np.eye(4), T0)
    with pytest.raises(GeometryError, match="cannot be its own parent"):
        tf.set_transform("map", "map", np.eye(4), T0)
    with pytest.raises(GeometryError, match="orthonormal"):
        tf.set_transform("map", "x", np.diag([2.0, 1, 1, 1]), T0)
    # re-parenting: the camera moves from base_link to a gimbal
    tf.set_transform("map", "gimbal", planar_matrix(1, 1, 0), 0, static=True)
    tf.set_transform("gimbal", "camera", np.eye(4), 0, static=True)
    np.testing.assert_allclose(tf.lookup("map", "camera", T0), planar_matrix(1, 1, 0))
    assert "gimbal" in tf.frames()


def test_concurrent_writers_and_readers() -> None:
    tf = robot()
    errors: list[BaseException] = []

    def write() -> None:
        for i in range(300):
            tf.set_transform("odom", "base_link", planar_matrix(i, 0, 0), T0 + 2 * S + i * MS)

    def read() -> None:
        try:
            for _ in range(300):
                tf.lookup("map", "camera")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
