"""Heat-map overlays: opacity that follows the heat, and the model's own defect mask outlined (its
mask rule, not the bare threshold)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vad_inspection.pipeline import predict_files
from vad_inspection.vad.baselines import LocalContrast
from vad_inspection.vad.calibration import Calibration
from vad_inspection.vad.detector import detector_for_model
from vad_inspection.viz import overlay, to_display_rgb

WHITE = np.array([255, 255, 255], dtype=np.uint8)


def _white(rgb: np.ndarray) -> np.ndarray:
    return (rgb == WHITE).all(axis=2)


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (where an external contour runs)."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0)
    return mask & ~inner.astype(bool)


def _cracked(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(150, 6, (64, 64)), 0, 255).astype(np.uint8)
    image[30:33, 6:58] = 70  # a deep crack, 3 px wide
    return np.repeat(image[:, :, None], 3, axis=2)


def test_overlay_outlines_the_given_mask_only() -> None:
    image = np.full((40, 50, 3), 120, np.uint8)
    heat = np.zeros((40, 50), np.float32)
    heat[10:20, 5:30] = 1.0
    mask = np.zeros((40, 50), bool)
    mask[12:18, 8:25] = True
    drawn = _white(overlay(image, heat, outline=mask))
    assert drawn.any() and not (drawn & ~_edge(mask)).any()
    assert not _white(overlay(image, heat)).any()


def test_predict_overlay_outlines_the_mask_rule_not_the_threshold(tmp_path: Path) -> None:
    image = _cracked(0)
    path = tmp_path / "crack.png"
    cv2.imwrite(str(path), image)
    model = LocalContrast(context=16.0, polarity="darker", line_length=15, mask_width_fraction=0.5)
    prediction = model.predict([image])
    threshold = float(np.quantile(prediction.maps, 0.9))
    calibration = Calibration(threshold, float(prediction.maps.min()), 1.0, "test", 2)
    detector = detector_for_model(model, calibration)
    [result] = predict_files(detector, [path], tmp_path / "out", progress=False)
    drawn = _white(cv2.cvtColor(cv2.imread(str(result.overlay)), cv2.COLOR_BGR2RGB))
    rule_mask = prediction.masks(threshold)[0]
    plain_mask = prediction.maps[0] >= threshold
    assert rule_mask.sum() < plain_mask.sum()  # the rule narrows the thresholded band
    assert drawn.any() and not (drawn & ~_edge(rule_mask)).any()
    assert (_edge(plain_mask) & ~rule_mask).any()  # the plain band's edge is not drawn


def _jet(value: float) -> np.ndarray:
    """The RGB colour the JET map gives a heat ``value`` in [0, 1]."""
    level = np.full((1, 1), int(value * 255), np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0, 0]


def test_overlay_opacity_follows_the_heat() -> None:
    """Cold pixels show the image itself, hot ones mostly the colour map: a constant blend hid
    the whole surface under blue."""
    rng = np.random.default_rng(0)
    image = rng.integers(40, 220, (30, 40, 3)).astype(np.uint8)
    heat = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (30, 1))
    heat[:, :5] = 0.0
    heat[:, -5:] = 1.0
    out = overlay(image, heat)
    np.testing.assert_array_equal(out[:, :5], image[:, :5])  # heat 0: the image, untouched
    hot = out[:, -5:].astype(float)
    colour = np.broadcast_to(_jet(1.0), hot.shape).astype(float)
    to_colour = np.abs(hot - colour).mean()
    to_image = np.abs(hot - image[:, -5:]).mean()
    assert to_colour < 0.5 * to_image  # heat 1: mostly the colour map
    np.testing.assert_allclose(hot, 0.3 * image[:, -5:] + 0.7 * colour, atol=0.51)
    # how far a pixel moves from the image grows with its heat
    moved = np.abs(out.astype(float) - image).mean(axis=(0, 2))
    assert moved[5] < moved[20] < moved[-6]
    assert moved[10] < 0.15 * moved[-1]  # heat 0.26: barely tinted
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), to_display_rgb(image))


def test_overlay_keeps_its_callers_signature_and_checks_options() -> None:
    image = np.full((8, 8), 90, np.uint8)
    heat = np.ones((4, 4), np.float32)  # resized to the image
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    positional = overlay(image, heat, 0.5, mask)
    assert positional.shape == (8, 8, 3) and _white(positional).any()
    for bad in ({"alpha": 1.5}, {"gamma": 0.0}):
        with pytest.raises(ValueError, match="alpha in"):
            overlay(image, heat, **bad)
