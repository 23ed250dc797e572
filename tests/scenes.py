"""Synthetic inspection scenes whose anomalies any feature extractor can see.

Random backbone weights (all these machines have) make features that do not separate real defects,
so method tests use scenes where the defect is an unmistakable change of texture: a regular stripe
pattern with sensor noise, and test images with a blob of flat, differently bright material.
"""

from __future__ import annotations

import numpy as np


def scene(rng: np.random.Generator, size: int, defect: bool) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image and its bool defect mask."""
    image = rng.normal(120, 6, (size, size, 3))
    image[:, :: max(size // 16, 2)] += 50
    mask = np.zeros((size, size), dtype=bool)
    if defect:
        radius = int(rng.integers(size // 10, size // 6))
        cy, cx = rng.integers(radius, size - radius, 2)
        yy, xx = np.ogrid[:size, :size]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image[mask] = rng.choice([20.0, 240.0])
    return np.clip(image, 0, 255).astype(np.uint8), mask


def scenes(
    seed: int, size: int, n: int, defect_every: int = 0
) -> tuple[list, np.ndarray, np.ndarray]:
    """``n`` scenes; every ``defect_every``-th one (1-based) has a defect (0 = none)."""
    rng = np.random.default_rng(seed)
    labels = np.array([defect_every > 0 and (i + 1) % defect_every == 0 for i in range(n)])
    pairs = [scene(rng, size, bool(d)) for d in labels]
    return [p[0] for p in pairs], labels.astype(int), np.stack([p[1] for p in pairs])
