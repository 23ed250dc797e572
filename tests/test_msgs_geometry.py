"""Geometry codec: poses, transforms, TFMessage, CameraInfo and OccupancyGrid <-> messages."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.geometry import CameraModel, Grid, planar_matrix, quaternion_to_matrix
from vad_inspection.msgs import (
    MessageError,
    camera_info_to_model,
    deserialize,
    grid_to_msg,
    header,
    matrix_to_pose,
    matrix_to_transform,
    model_to_camera_info,
    msg_class,
    msg_to_grid,
    pose_to_matrix,
    serialize,
    tf_message_to_transforms,
    transform_to_matrix,
)


def wire(msg, distro: str = "jazzy"):
    return deserialize(serialize(msg, msg.__msgtype__, distro), msg.__msgtype__, distro)


def random_quaternions(n: int, seed: int = 0) -> np.ndarray:
    """Uniform random unit quaternions (x, y, z, w), canonical sign w >= 0."""
    q = np.random.default_rng(seed).standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.where(q[:, 3:] < 0, -1.0, 1.0)


def random_matrix(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.eye(4)
    t[:3, :3] = quaternion_to_matrix(*random_quaternions(1, seed)[0])
    t[:3, 3] = rng.uniform(-10, 10, 3)
    return t


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_pose_and_transform_round_trip_through_cdr(distro: str) -> None:
    for seed in range(20):
        t = random_matrix(seed)
        stamped = msg_class("geometry_msgs/msg/PoseStamped", distro)(
            header=header(7, "map", distro), pose=matrix_to_pose(t, distro)
        )
        np.testing.assert_allclose(pose_to_matrix(wire(stamped, distro)), t, atol=1e-12)
        tf = msg_class("geometry_msgs/msg/TransformStamped", distro)(
            header=header(7, "map", distro),
            child_frame_id="camera",
            transform=matrix_to_transform(t, distro),
        )
        np.testing.assert_allclose(transform_to_matrix(wire(tf, distro)), t, atol=1e-12)


def test_pose_fields_are_position_and_unit_quaternion() -> None:
    t = planar_matrix(2.0, -1.0, np.pi / 2)
    p = matrix_to_pose(t)
    assert (p.position.x, p.position.y, p.position.z) == (2.0, -1.0, 0.0)
    np.testing.assert_allclose(
        [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w],
        [0, 0, np.sqrt(0.5), np.sqrt(0.5)],
        atol=1e-15,
    )


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (np.eye(3), "4x4"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "determinant"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), "orthonormal"),
        (np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]), "last row"),
        (np.full((4, 4), np.nan), "finite"),
    ],
)
def test_bad_matrices_raise(matrix, expected: str) -> None:
    with pytest.raises(MessageError, match=expected):
        matrix_to_pose(matrix)


def camera(**overrides) -> CameraModel:
    values = {
        "width": 640,
        "height": 480,
        "K": [[525.0, 0, 319.5], [0, 526.0, 239.5], [0, 0, 1]],
        "D": [0.12, -0.25, 0.001, -0.002, 0.08],
        "distortion_model": "plumb_bob",
        "frame_id": "camera_optical",
    }
    return CameraModel(**{**values, **overrides})


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_camera_info_round_trip(distro: str) -> None:
    model = camera(
        R=np.eye(3) * [1, 1, 1],
        P=[[520.0, 0, 320, -26.0], [0, 520, 240, 0], [0, 0, 1, 0]],
        binning_x=2,
        roi=(10, 20, 300, 400, True),
    )
    msg = wire(model_to_camera_info(model, 123_456, distro), distro)
    assert (msg.width, msg.height, msg.header.frame_id) == (640, 480, "camera_optical")
    assert msg.k[2] == 319.5 and msg.p[3] == -26.0 and msg.roi.do_rectify is True
    assert msg.header.stamp.nanosec == 123_456
    back = camera_info_to_model(msg)
    assert back == model
    assert back.K.shape == (3, 3) and back.P.shape == (3, 4)
    assert (back.fx, back.fy, back.cx, back.cy) == (525.0, 526.0, 319.5, 239.5)
    assert back != camera(frame_id="other")


def test_camera_info_validation() -> None:
    msg = model_to_camera_info(camera(), 0)
    msg.k = np.ones(4)
    with pytest.raises(MessageError, match=r"CameraInfo.k has 4 values, not 9"):
        camera_info_to_model(msg)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_occupancy_grid_round_trip_is_row_major(distro: str) -> None:
    rng = np.random.default_rng(1)
    grid = rng.integers(-1, 101, (3, 5), dtype=np.int8)  # not square: orientation matters
    origin = planar_matrix(-4.0, 2.5, 0.3)
    msg = wire(grid_to_msg(grid, 0.05, origin, "map", 99, distro), distro)
    assert (msg.info.width, msg.info.height) == (5, 3)
    assert msg.data[1 * 5 + 4] == grid[1, 4]  # data[row * width + col]
    back = msg_to_grid(msg)
    np.testing.assert_array_equal(back.grid, grid)
    np.testing.assert_allclose(back.origin, origin, atol=1e-12)
    assert back.resolution == float(np.float32(0.05))
    assert (back.frame_id, back.stamp_ns) == ("map", 99)
    planar = msg_to_grid(grid_to_msg(grid, 0.05, (-4.0, 2.5, 0.3), "map", 99, distro))
    assert planar == Grid(back.grid, back.resolution, planar.origin, "map", 99)
    np.testing.assert_allclose(planar.origin, origin, atol=1e-12)


def test_occupancy_grid_errors() -> None:
    msg = grid_to_msg(np.zeros((4, 4), np.int8), 0.1, np.eye(4), "map", 0)
    msg.data = msg.data[:-1]
    with pytest.raises(MessageError, match=r"data has 15 cells, width 4 x height 4 = 16"):
        msg_to_grid(msg)
    with pytest.raises(MessageError, match="2-D int8"):
        grid_to_msg(np.zeros((4, 4), np.int32), 0.1, np.eye(4), "map", 0)
    with pytest.raises(MessageError, match="resolution must be > 0"):
        grid_to_msg(np.zeros((4, 4), np.int8), 0.0, np.eye(4), "map", 0)


def test_bad_quaternion_in_a_message_is_a_message_error() -> None:
    """The geometry layer's GeometryError becomes a MessageError naming the message type."""
    pose = matrix_to_pose(np.eye(4))
    pose.orientation.w = 0.0
    with pytest.raises(MessageError, match=r"geometry_msgs/msg/Pose: quaternion .* no direction"):
        pose_to_matrix(pose)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_tf_message_to_transforms(distro: str) -> None:
    stamped = msg_class("geometry_msgs/msg/TransformStamped", distro)
    edges = [("map", "odom", random_matrix(1), 5), ("odom", "base_link", random_matrix(2), 6_000)]
    msg = msg_class("tf2_msgs/msg/TFMessage", distro)(
        transforms=[
            stamped(
                header=header(stamp, parent, distro),
                child_frame_id=child,
                transform=matrix_to_transform(matrix, distro),
            )
            for parent, child, matrix, stamp in edges
        ]
    )
    out = list(tf_message_to_transforms(wire(msg, distro)))
    assert [(p, c, s) for p, c, _, s in out] == [(p, c, s) for p, c, _, s in edges]
    for (_, _, got, _), (_, _, expected, _) in zip(out, edges, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-12)
    msg.transforms[1].transform.rotation.w = 0.0
    msg.transforms[1].transform.rotation.z = 0.0
    msg.transforms[1].transform.rotation.x = 0.0
    msg.transforms[1].transform.rotation.y = 0.0
    with pytest.raises(MessageError, match=r"TFMessage: 'odom' -> 'base_link': .*no direction"):
        list(tf_message_to_transforms(msg))
