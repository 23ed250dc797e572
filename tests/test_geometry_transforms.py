"""Rigid transforms: quaternions <-> matrices (Shepperd), 4x4 helpers, slerp and interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.errors import FrameError
from vad_inspection.geometry import (
    GeometryError,
    axis_angle_matrix,
    check_transform,
    interpolate_transform,
    invert,
    make_transform,
    matrix_to_quaternion,
    planar_matrix,
    quaternion_to_matrix,
    slerp,
    transform_points,
)


def random_quaternions(n: int, seed: int = 0) -> np.ndarray:
    """Uniform random unit quaternions (x, y, z, w), canonical sign w >= 0."""
    q = np.random.default_rng(seed).standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.where(q[:, 3:] < 0, -1.0, 1.0)


def test_random_quaternions_round_trip_through_matrices() -> None:
    for q in random_quaternions(300):
        r = quaternion_to_matrix(*q)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(matrix_to_quaternion(r), q, atol=1e-12)


@pytest.mark.parametrize(
    "axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, -2, 3), (0.1, 0.0, -1.0)]
)
def test_half_turns_are_accurate(axis) -> None:
    """180 degrees (w = 0): where a trace-only conversion divides by ~0."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    r = 2 * np.outer(a, a) - np.eye(3)  # Rodrigues at pi
    q = matrix_to_quaternion(r)
    np.testing.assert_allclose(quaternion_to_matrix(*q), r, atol=1e-12)
    assert abs(q[3]) < 1e-12
    np.testing.assert_allclose(axis_angle_matrix(axis, np.pi), r, atol=1e-12)


def test_known_rotation_and_normalisation() -> None:
    s = np.sqrt(0.5)
    expected = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # +90 degrees about z
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, s, s), expected, atol=1e-15)
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, 3 * s, 3 * s), expected, atol=1e-15)
    np.testing.assert_allclose(matrix_to_quaternion(expected), (0, 0, s, s), atol=1e-15)
    # q and -q are the same rotation; the canonical output has w >= 0
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, -s, -s), expected, atol=1e-15)
    np.testing.assert_allclose(axis_angle_matrix([0, 0, 2], np.pi / 2), expected, atol=1e-15)
    with pytest.raises(GeometryError, match="no direction"):
        quaternion_to_matrix(0, 0, 0, 0)
    assert issubclass(GeometryError, FrameError)


def test_make_invert_and_apply() -> None:
    r = axis_angle_matrix([1, 2, 3], 0.7)
    t = make_transform(r, [1.0, -2.0, 0.5])
    np.testing.assert_array_equal(t[:3, :3], r)
    np.testing.assert_array_equal(t[3], [0, 0, 0, 1])
    np.testing.assert_allclose(invert(t) @ t, np.eye(4), atol=1e-15)
    np.testing.assert_allclose(invert(t), np.linalg.inv(t), atol=1e-14)
    # a quaternion is accepted as the rotation too
    np.testing.assert_allclose(make_transform(matrix_to_quaternion(r), [1, -2, 0.5]), t, atol=1e-14)
    # +90 degrees about z then a shift: (1, 0, 0) -> (0, 1, 0) -> (0, 1, 0) + (1, -2, 0.5)
    quarter = make_transform(axis_angle_matrix([0, 0, 1], np.pi / 2), [1.0, -2.0, 0.5])
    np.testing.assert_allclose(transform_points(quarter, [1.0, 0.0, 0.0]), [1, -1, 0.5], atol=1e-15)
    pts = np.array([[1.0, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(
        transform_points(quarter, pts), [[1, -1, 0.5], [1, -2, 1.5]], atol=1e-15
    )
    np.testing.assert_allclose(
        planar_matrix(1.0, 2.0, np.pi / 2),
        make_transform(axis_angle_matrix([0, 0, 1], np.pi / 2), [1.0, 2.0, 0.0]),
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
    with pytest.raises(GeometryError, match=expected):
        check_transform(matrix)


def test_slerp_known_answers() -> None:
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    half_x = np.array([1.0, 0.0, 0.0, 0.0])  # 180 degrees about x
    np.testing.assert_allclose(
        quaternion_to_matrix(*slerp(identity, half_x, 0.5)),
        axis_angle_matrix([1, 0, 0], np.pi / 2),
        atol=1e-12,
    )
    q90 = np.array(matrix_to_quaternion(axis_angle_matrix([0, 1, 0], np.pi / 2)))
    np.testing.assert_allclose(slerp(identity, q90, 0.0), identity, atol=1e-15)
    np.testing.assert_allclose(slerp(identity, q90, 1.0), q90, atol=1e-15)
    # -q90 is the same rotation: the short arc still passes through 30 degrees, not 150
    np.testing.assert_allclose(
        quaternion_to_matrix(*slerp(identity, -q90, 1 / 3)),
        axis_angle_matrix([0, 1, 0], np.pi / 6),
        atol=1e-12,
    )
    # nearly equal quaternions do not divide by ~0
    tiny = np.array(matrix_to_quaternion(axis_angle_matrix([0, 0, 1], 1e-9)))
    assert np.all(np.isfinite(slerp(identity, tiny, 0.5)))


def test_interpolate_transform_is_tf2s() -> None:
    a = planar_matrix(0.0, 0.0, 0.0)
    b = planar_matrix(2.0, -4.0, np.pi / 2)
    np.testing.assert_allclose(
        interpolate_transform(a, b, 0.5), planar_matrix(1.0, -2.0, np.pi / 4), atol=1e-12
    )
    np.testing.assert_allclose(
        interpolate_transform(a, b, 0.25), planar_matrix(0.5, -1.0, np.pi / 8), atol=1e-12
    )
    np.testing.assert_allclose(interpolate_transform(a, b, 1.0), b, atol=1e-12)
