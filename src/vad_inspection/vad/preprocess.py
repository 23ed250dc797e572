"""Bring images and masks of any size and layout to a model's input grid.

Every method in a comparison must see the same pixels, so resizing happens once, here, and not in
each model. Area interpolation for images (no aliasing when shrinking 1000 px strips); nearest for
masks (labels must stay binary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from vad_inspection.errors import FrameError


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


IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class InputError(FrameError):
    """An image a model cannot take: wrong channel count, wrong dtype, NaN, empty."""


@dataclass(frozen=True)
class InputSpec:
    """How raw images become the backbone's 3-channel input; stored in every model's metadata.

    ``channels`` is the channel count the model was fitted on; ``bands`` which of them feed the
    backbone's three inputs: ``(0, 0, 0)`` replicates a gray image, ``(0, 1, 2)`` is RGB, and a
    multispectral image selects three of its bands.
    """

    size: tuple[int, int] = (256, 256)
    channels: int = 3
    bands: tuple[int, int, int] = (0, 1, 2)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @staticmethod
    def for_channels(
        channels: int, size: tuple[int, int], bands: tuple[int, int, int] | None = None
    ) -> InputSpec:
        """The default mapping: replicate gray, keep RGB, first three bands otherwise."""
        if bands is None:
            bands = (0, 0, 0) if channels == 1 else (0, 1, 2)
        if channels < 1 or any(not 0 <= b < channels for b in bands):
            raise InputError(f"bands {bands} do not exist in {channels}-channel images")
        return InputSpec(size=tuple(size), channels=channels, bands=tuple(bands))

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @staticmethod
    def from_dict(data: dict[str, object]) -> InputSpec:
        return InputSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def pixel_scale(image: np.ndarray) -> float:
    """The value full brightness has in ``image``'s dtype (what divides pixels into [0, 1])."""
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(image.dtype, np.floating):
        return 1.0
    raise InputError(f"images must be uint8, uint16 or float; got {image.dtype}")


def to_network_input(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Resize, select bands, scale to [0, 1] and normalise: ``(N, 3, H, W)`` float32.

    Refuses, rather than guesses, when an image's channel count differs from the one the model
    was fitted on: a gray model fed RGB (or the reverse) would score garbage silently.
    """
    if len(images) == 0:
        raise InputError("no images given")
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    out = np.empty((len(images), 3, *spec.size), dtype=np.float32)
    for i, raw in enumerate(images):
        image = as_hwc(np.asarray(raw))
        if image.shape[2] != spec.channels:
            raise InputError(
                f"image {i} has {image.shape[2]} channel(s); the model was fitted on "
                f"{spec.channels}-channel images"
            )
        if image.size == 0:
            raise InputError(f"image {i} is empty (shape {image.shape})")
        scale = pixel_scale(image)
        pixels = resize_image(image, spec.size)[:, :, list(spec.bands)].astype(np.float32)
        if not np.isfinite(pixels).all():
            raise InputError(f"image {i} contains NaN or infinite values")
        out[i] = (pixels.transpose(2, 0, 1) / np.float32(scale) - mean) / std
    return out
