"""CameraModel: pixels <-> rays in the REP 103 optical frame, with distortion, resized images."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.geometry import CameraModel, GeometryError, axis_angle_matrix

K500 = [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]


def camera(**overrides) -> CameraModel:
    values = {
        "width": 640,
        "height": 480,
        "K": K500,
        "D": [],
        "distortion_model": "plumb_bob",
        "frame_id": "camera_optical",
    }
    return CameraModel(**{**values, **overrides})


def plumb_bob(point, k1, k2, p1=0.0, p2=0.0, k3=0.0, k4=0.0, k5=0.0, k6=0.0):
    """Brown-Conrady by hand (OpenCV's standard and rational models), fx=fy=500, c=(320, 240)."""
    x, y = point[0] / point[2], point[1] / point[2]
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.array([500 * xd + 320, 500 * yd + 240])


def equidistant(point, k1, k2, k3, k4):
    """Kannala-Brandt by hand (OpenCV's fisheye model)."""
    x, y = point[0] / point[2], point[1] / point[2]
    r = np.hypot(x, y)
    theta = np.arctan(r)
    theta_d = theta * (1 + k1 * theta**2 + k2 * theta**4 + k3 * theta**6 + k4 * theta**8)
    return np.array([500 * theta_d / r * x + 320, 500 * theta_d / r * y + 240])


def test_camera_model_defaults_and_validation() -> None:
    model = camera(D=[0.1, 0, 0, 0, 0])
    np.testing.assert_array_equal(model.R, np.eye(3))
    np.testing.assert_array_equal(model.P, np.hstack([model.K, np.zeros((3, 1))]))
    assert (model.fx, model.fy, model.cx, model.cy) == (500.0, 500.0, 320.0, 240.0)
    assert model.image_size == (640, 480) and model.is_distorted
    with pytest.raises(ValueError, match="read-only"):
        model.K[0, 0] = 1.0
    with pytest.raises(GeometryError, match=r"CameraModel.K: cannot shape 8 values"):
        camera(K=np.ones(8))


def test_pinhole_rays_follow_rep_103() -> None:
    """z forward, x right, y down: known pixels give known directions."""
    model = camera()
    np.testing.assert_allclose(model.pixel_to_ray(320, 240), [0, 0, 1], atol=1e-15)
    right_down = model.pixel_to_ray(820.0, 740.0)  # 500 px right and down: 45 degrees each way
    np.testing.assert_allclose(right_down, np.array([1, 1, 1]) / np.sqrt(3), atol=1e-15)
    rays = model.pixel_to_ray([320, 420], [240, 140], normalize=False)
    np.testing.assert_allclose(rays, [[0, 0, 1], [0.2, -0.2, 1]], atol=1e-15)
    np.testing.assert_allclose(model.project([[0.4, -0.4, 2.0]]), [[420, 140]], atol=1e-12)
    grid = model.pixel_to_ray(*np.meshgrid(np.arange(0, 640, 64), np.arange(0, 480, 48)))
    assert grid.shape == (10, 10, 3)
    np.testing.assert_allclose(np.linalg.norm(grid, axis=-1), 1.0, atol=1e-15)
    # behind the camera there is no pixel
    assert np.isnan(model.project([[0.0, 0.0, -1.0], [0.1, 0.0, 1.0]])[0]).all()


@pytest.mark.parametrize(
    ("model_name", "d", "by_hand"),
    [
        ("plumb_bob", [-0.28, 0.09, 0.0012, -0.0007, 0.0], plumb_bob),
        ("plumb_bob", [-0.28, 0.09, 0.0012], plumb_bob),  # short D: padded with zeros
        ("rational_polynomial", [0.6, -0.2, 0.001, 0.0005, 0.01, 0.9, -0.1, 0.02], plumb_bob),
        ("equidistant", [0.08, -0.02, 0.004, -0.001], equidistant),
    ],
)
def test_distortion_round_trips(model_name: str, d: list[float], by_hand) -> None:
    model = camera(D=d, distortion_model=model_name)
    point = np.array([0.62, -0.41, 2.0])
    pixel = model.project(point)
    np.testing.assert_allclose(pixel, by_hand(point, *d), atol=1e-9)
    assert np.linalg.norm(pixel - [320 + 155, 240 - 102.5]) > 3  # distortion really moved it
    ray = model.pixel_to_ray(*pixel)
    np.testing.assert_allclose(ray, point / np.linalg.norm(point), atol=1e-4)
    assert np.linalg.norm(ray - point / np.linalg.norm(point)) < 1e-8
    # the whole image round-trips, corners included
    u, v = np.meshgrid(np.linspace(0, 639, 17), np.linspace(0, 479, 13))
    back = model.project(model.pixel_to_ray(u, v))
    np.testing.assert_allclose(back, np.stack([u, v], -1), atol=1e-6)


def test_all_zero_or_empty_d_is_no_distortion_even_for_unknown_models() -> None:
    point = [0.3, 0.2, 1.5]
    expected = [320 + 100, 240 + 500 * 0.2 / 1.5]
    for model in (camera(D=[0.0] * 5), camera(D=[], distortion_model="")):
        np.testing.assert_allclose(model.project(point), expected, atol=1e-12)
    with pytest.raises(GeometryError, match=r"unknown distortion model 'kb8' with nonzero D"):
        camera(D=[0.1], distortion_model="kb8").pixel_to_ray(0, 0)
    with pytest.raises(GeometryError, match=r"equidistant takes 4 coefficients .*got 5"):
        camera(D=[0.1] * 5, distortion_model="equidistant").project(point)
    with pytest.raises(GeometryError, match=r"'camera_optical' is not calibrated: K has fx=0.0"):
        camera(K=np.zeros((3, 3))).pixel_to_ray(0, 0)


def test_rectified_pixels_go_through_p_and_r() -> None:
    """A rectified pixel's ray, rotated back by R, is the raw camera's ray of the same point."""
    r = axis_angle_matrix([0.2, 1.0, 0.1], 0.05)
    p = [[450.0, 0, 330, 0], [0, 450, 250, 0], [0, 0, 1, 0]]
    model = camera(D=[-0.2, 0.05, 0, 0, 0], R=r, P=p)
    point = np.array([-0.3, 0.25, 1.8])
    rect_pixel = model.project(point, rectified=True)
    in_rect = r @ point
    np.testing.assert_allclose(
        rect_pixel, [450 * in_rect[0] / in_rect[2] + 330, 450 * in_rect[1] / in_rect[2] + 250]
    )
    unit = point / np.linalg.norm(point)
    np.testing.assert_allclose(model.pixel_to_ray(*rect_pixel, rectified=True), unit, atol=1e-12)
    np.testing.assert_allclose(model.pixel_to_ray(*model.project(point)), unit, atol=1e-9)


def test_scaled_camera_sees_the_resized_image() -> None:
    """A 1280x960 calibration used on 640x480 images: pixels map as cv2.resize maps them."""
    big = camera(
        width=1280,
        height=960,
        K=[[1000.0, 0, 639.5], [0, 1000.0, 479.5], [0, 0, 1]],
        D=[-0.25, 0.07, 0.001, 0.0, 0.0],
    )
    small = big.scaled(640, 480)
    assert (small.width, small.height) == (640, 480)
    assert (small.fx, small.fy, small.cx, small.cy) == (500.0, 500.0, 319.5, 239.5)
    np.testing.assert_array_equal(small.D, big.D)
    points = np.array([[0.3, -0.2, 2.0], [-1.0, 0.7, 3.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(small.project(points), (big.project(points) + 0.5) * 0.5 - 0.5)
    np.testing.assert_allclose(small.P[:, :3], small.K)
    assert big.scaled(1280, 960) == big.scaled(1280, 960) and big.scaled(1280, 960).fx == 1000.0
    # 1920x1080 -> 640x360 is a resize; -> 640x481 is within rounding; 640x360 of 4:3 is not
    assert big.scaled(641, 481).fx == pytest.approx(1000 * 641 / 1280)
    with pytest.raises(GeometryError, match=r"640x360 \(aspect 1.778\) is not a resize of its"):
        big.scaled(640, 360)
    stretched = big.scaled(640, 360, allow_anisotropic=True)
    assert (stretched.fx, stretched.fy) == (500.0, 375.0)
    with pytest.raises(GeometryError, match="cannot scale 1280x960 images to 0x480"):
        big.scaled(0, 480)


def test_binning_and_roi_describe_the_image() -> None:
    """CameraInfo's K is the full sensor's; the images are the ROI window, binned."""
    full = camera(width=1280, height=960, K=[[1000.0, 0, 639.5], [0, 1000.0, 479.5], [0, 0, 1]])
    binned = camera(width=1280, height=960, K=full.K, binning_x=2, binning_y=2)
    assert binned.image_size == (640, 480)
    np.testing.assert_allclose(binned.image_K(), full.scaled(640, 480).K)
    windowed = camera(width=1280, height=960, K=full.K, roi=(100, 60, 400, 600, False))
    assert windowed.image_size == (600, 400)
    point = [0.1, 0.05, 2.0]
    np.testing.assert_allclose(windowed.project(point), full.project(point) - [100, 60])
    assert windowed.scaled(300, 200).width == 300
