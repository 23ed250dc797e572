"""The fast coreset equals the greedy rule; the NumPy ops equal the torch ops they replace."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.vad.coreset import greedy_coreset, greedy_coreset_reference, random_projection
from vad_inspection.vad.ops import avg_pool3, gaussian_blur, resize_bilinear, resize_nearest

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _clusters(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (12, 24))
    return np.concatenate([rng.normal(c, 1, (150, 24)) for c in centres]).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_pruned_greedy_selects_exactly_what_the_plain_rule_selects(seed: int) -> None:
    points = _clusters(seed)
    fast = greedy_coreset(points, 300, seed=seed)
    assert len(set(fast.tolist())) == 300
    np.testing.assert_array_equal(fast, greedy_coreset_reference(points, 300, int(fast[0])))


def test_coreset_start_is_seeded_and_explicit_start_is_kept() -> None:
    points = _clusters(3)
    assert np.array_equal(greedy_coreset(points, 50, seed=4), greedy_coreset(points, 50, seed=4))
    assert greedy_coreset(points, 50, start=17)[0] == 17
    with pytest.raises(ValueError, match="coreset size"):
        greedy_coreset(points, 0)


def test_random_projection_roughly_keeps_distances() -> None:
    points = _clusters(5)
    projected = points @ random_projection(24, 256, seed=0)
    original = np.linalg.norm(points[:100] - points[100:200], axis=1)
    kept = np.linalg.norm(projected[:100] - projected[100:200], axis=1)
    assert np.median(kept / original) == pytest.approx(1.0, abs=0.1)


@pytest.fixture
def maps() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 5, 11, 13)).astype(np.float32)


def test_avg_pool3_equals_torch(maps: np.ndarray) -> None:
    expected = torch.nn.AvgPool2d(3, 1, 1)(torch.from_numpy(maps)).numpy()
    np.testing.assert_allclose(avg_pool3(maps), expected, atol=1e-6)


@pytest.mark.parametrize("size", [(22, 26), (7, 9), (11, 13), (64, 40)])
def test_resizes_equal_torch_interpolate(maps: np.ndarray, size: tuple[int, int]) -> None:
    t = torch.from_numpy(maps)
    bilinear = F.interpolate(t, size=size, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(resize_bilinear(maps, size), bilinear, atol=1e-5)
    np.testing.assert_array_equal(resize_nearest(maps, size), F.interpolate(t, size=size).numpy())


def test_gaussian_blur_equals_a_torch_reflect_padded_convolution() -> None:
    image = np.random.default_rng(1).random((1, 48, 40)).astype(np.float32)
    sigma, size = 2.0, 17  # 2 * int(4 * sigma + 0.5) + 1
    x = torch.arange(size, dtype=torch.float64) - size // 2
    kernel_1d = torch.exp(-(x**2) / (2 * sigma**2))
    kernel_1d /= kernel_1d.sum()
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).float()[None, None]
    padded = F.pad(torch.from_numpy(image)[None], [size // 2] * 4, mode="reflect")
    expected = F.conv2d(padded, kernel)[0].numpy()
    np.testing.assert_allclose(gaussian_blur(image, sigma), expected, atol=1e-5)
