"""Bring images and masks of any size and layout to a model's input grid.

Every method in a comparison must see the same pixels, so resizing happens once, here, and not in
each model. Area interpolation for images (no aliasing when shrinking 1000 px strips); nearest for
masks (labels must stay binary).
"""

from __future__ import annotations

import cv2
import numpy as np


def as_hwc(image: np.ndarray) -> np.ndarray:
    """View a 2-D gray image as (H, W, 1); leave (H, W, C) alone; refuse anything else."""
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim == 3:
        return image
    raise ValueError(f"expected an image shaped (H, W) or (H, W, C); got shape {image.shape}")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` = (height, width), keeping the channel axis even for one channel."""
    image = as_hwc(image)
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return as_hwc(out)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to ``size`` = (height, width) without inventing label values."""
    height, width = size
    if mask.shape == (height, width):
        return mask.astype(bool, copy=False)
    out = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return out.astype(bool)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Luminance as float32 in [0, 1] (mean of the channels: bands are not assumed to be RGB)."""
    image = as_hwc(image)
    scale = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
    return image.astype(np.float32).mean(axis=2) / np.float32(scale)
