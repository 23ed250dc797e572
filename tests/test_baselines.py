"""The training-free baselines and the resizing every model relies on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vad_inspection.vad.baselines import DarkestPixel, LocalContrast
from vad_inspection.vad.ops import gaussian_blur, line_response, one_sided
from vad_inspection.vad.preprocess import as_hwc, resize_image, resize_mask, to_gray


def _texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    return rng.integers(140, 180, size=(size, size, 3), dtype=np.uint8)


def test_darkest_pixel_scores_a_dark_spot_above_plain_texture() -> None:
    rng = np.random.default_rng(0)
    plain = _texture(rng)
    spotted = _texture(rng)
    spotted[30:34, 30:34] = 20
    prediction = DarkestPixel().predict([plain, spotted])
    assert prediction.maps.shape == (2, 64, 64)
    assert prediction.scores[1] > prediction.scores[0] + 0.2
    peak = np.unravel_index(prediction.maps[1].argmax(), (64, 64))
    assert 29 <= peak[0] <= 34 and 29 <= peak[1] <= 34


def test_local_contrast_ignores_a_smooth_gradient_but_sees_a_bright_speck() -> None:
    gradient = np.tile(np.linspace(40, 220, 64, dtype=np.float32), (64, 1)).astype(np.uint8)
    speck = gradient.copy()
    speck[10:13, 40:43] = 255
    prediction = LocalContrast().predict([gradient[..., None], speck[..., None]])
    assert prediction.maps[0][16:-16, 16:-16].max() < 0.02  # away from the reflected border
    assert prediction.scores[1] > 3 * prediction.scores[0]


def test_darker_local_contrast_sees_a_dark_line_and_ignores_a_bright_speck() -> None:
    rng = np.random.default_rng(1)
    image = _texture(rng)
    image[10:13, 40:43] = 255  # bright speck
    image[40:42, 8:56] = 90  # dark line
    both = LocalContrast().predict([image]).maps[0]
    darker = LocalContrast(polarity="darker").predict([image]).maps[0]
    brighter = LocalContrast(polarity="brighter").predict([image]).maps[0]
    speck, line = (11, 41), (40, 30)
    assert both[speck] > 0.1 and both[line] > 0.1
    assert darker[line] > 0.1 and darker[speck] < 0.02
    assert brighter[speck] > 0.1 and brighter[line] < 0.02
    assert np.unravel_index(darker.argmax(), darker.shape)[0] in (39, 40, 41, 42)


def test_one_sided_splits_a_difference_by_sign() -> None:
    difference = np.array([-2.0, 0.0, 3.0], dtype=np.float32)
    assert one_sided(difference, "both").tolist() == [2.0, 0.0, 3.0]
    assert one_sided(difference, "darker").tolist() == [2.0, 0.0, 0.0]
    assert one_sided(difference, "brighter").tolist() == [0.0, 0.0, 3.0]
    with pytest.raises(ValueError, match="polarity must be one of"):
        one_sided(difference, "dark")
    with pytest.raises(ValueError, match="polarity must be one of"):
        LocalContrast(polarity="dark")


def test_line_response_keeps_a_thin_line_and_suppresses_a_blob_of_equal_darkness() -> None:
    maps = np.zeros((2, 64, 64), dtype=np.float32)
    rows = np.arange(8, 56)
    maps[0, rows, rows] = 1.0  # a one-pixel diagonal line (a crack)
    maps[1, 28:36, 28:36] = 1.0  # an 8x8 blob (a pit) of the same value
    response = line_response(maps, 15)
    assert response.shape == maps.shape
    # on the line: mean along it 1, square mean about 1/15; in the blob's centre both about 8/15
    assert response[0, 32, 32] == pytest.approx(1.0 - 15 / 225, abs=0.02)
    assert response[1, 32, 32] < 0.5 and response[0].max() > 1.5 * response[1].max()
    flat = line_response(np.full((1, 32, 32), 0.3, np.float32), 7)
    np.testing.assert_allclose(flat, 0.0, atol=1e-6)  # no structure, no response
    for bad in (2, 8, 1):
        with pytest.raises(ValueError, match="odd and >= 3"):
            line_response(maps, bad)


def test_line_response_equals_oriented_2d_filtering() -> None:
    """The compiled kernel against an independent route: OpenCV 2-D filtering with each
    orientation's line as a kernel, the maximum, minus OpenCV's box mean."""
    import cv2

    from vad_inspection.vad.ops import LINE_ORIENTATIONS, _line_offsets

    maps = np.random.default_rng(3).random((3, 40, 56), dtype=np.float32)
    length, half = 11, 5
    want = []
    for m in maps:
        lines = []
        for offsets in _line_offsets(length, LINE_ORIENTATIONS):
            kernel = np.zeros((length, length), np.float32)
            kernel[offsets[:, 0] + half, offsets[:, 1] + half] = 1.0 / len(offsets)
            lines.append(cv2.filter2D(m, -1, kernel, borderType=cv2.BORDER_REFLECT_101))
        box = cv2.blur(m, (length, length), borderType=cv2.BORDER_REFLECT_101)
        want.append(np.max(lines, axis=0) - box)
    np.testing.assert_allclose(line_response(maps, length), np.stack(want), atol=1e-5)
    for offsets in _line_offsets(length, LINE_ORIENTATIONS):  # each line spans `length` px
        extent = np.hypot(*(offsets.max(axis=0) - offsets.min(axis=0)))
        assert length - 1 - 1.5 <= extent <= length - 1 + 1.5


def test_local_contrast_line_length_uses_the_line_detector() -> None:
    rng = np.random.default_rng(2)
    image = _texture(rng)
    image[20:22, 4:60] = 90  # a dark line
    image[44:50, 30:36] = 90  # a dark blob
    raw = LocalContrast(polarity="darker", line_length=15, sigma=0).predict([image]).maps
    assert raw[0, 20, 32] > 2 * raw[0, 46, 32]
    gray = to_gray(image)
    difference = np.maximum(cv2.GaussianBlur(gray, (0, 0), 8.0) - gray, 0)[None]
    np.testing.assert_allclose(raw, line_response(difference, 15), rtol=1e-5, atol=1e-6)
    # the smoothing (sigma 1 by default) comes after the line detector
    smoothed = LocalContrast(polarity="darker", line_length=15).predict([image]).maps
    np.testing.assert_allclose(smoothed, gaussian_blur(raw, 1.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="line_length must be 0"):
        LocalContrast(line_length=6)


def test_local_contrast_masks_judge_width_on_the_difference_before_the_line_detector() -> None:
    rng = np.random.default_rng(3)
    image = _texture(rng)
    image[30:34, 4:60] = 60  # a deep crack, 4 px wide
    options = dict(polarity="darker", line_length=15)
    plain = LocalContrast(**options).predict([image])
    narrowed = LocalContrast(**options, mask_width_fraction=0.5, mask_min_length=12).predict(
        [image]
    )
    np.testing.assert_array_equal(narrowed.maps, plain.maps)
    gray = to_gray(image)
    difference = np.maximum(cv2.GaussianBlur(gray, (0, 0), 8.0) - gray, 0)
    np.testing.assert_allclose(
        narrowed.depth[0], gaussian_blur(difference[None], 1.0)[0], atol=1e-5
    )
    threshold = float(np.quantile(plain.maps, 0.9))
    wide, narrow = plain.masks(threshold)[0], narrowed.masks(threshold)[0]
    # the line response spreads past the crack's rows; the rule brings the mask back to them
    assert wide[:, 32].sum() > narrow[:, 32].sum() >= 4 and narrow[30:34, 10:54].all()
    assert not narrow[:26].any() and not narrow[38:].any()


def test_resize_keeps_masks_binary_and_images_hwc() -> None:
    mask = np.zeros((300, 200), dtype=bool)
    mask[100:200, 50:150] = True
    small = resize_mask(mask, (64, 64))
    assert small.dtype == bool and small.shape == (64, 64)
    assert small.mean() == pytest.approx(100 * 100 / (300 * 200), abs=0.01)  # area fraction kept
    gray = np.full((300, 200), 128, dtype=np.uint8)
    assert resize_image(gray, (64, 32)).shape == (64, 32, 1)


def test_to_gray_scales_by_dtype_and_rejects_bad_shapes() -> None:
    assert to_gray(np.full((2, 2, 3), 255, np.uint8)).max() == pytest.approx(1.0)
    assert to_gray(np.full((2, 2), 65535, np.uint16)).max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        as_hwc(np.zeros((2, 2, 2, 2)))
