"""Heat-map overlays: what a person looks at to judge a detection at a glance."""

from __future__ import annotations

import cv2
import numpy as np

from vad_inspection.vad.preprocess import as_hwc


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """Any supported image as uint8 RGB (gray replicated, 16-bit and float scaled, bands 0-2)."""
    image = as_hwc(np.asarray(image))
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
        image = ((image - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def overlay(
    image: np.ndarray,
    heat: np.ndarray,
    alpha: float = 0.7,
    outline: np.ndarray | None = None,
    *,
    gamma: float = 2.0,
) -> np.ndarray:
    """Blend a [0, 1] heat map (JET colours) over the image at the image's own resolution.

    The colour's opacity follows the heat, ``alpha * clip(heat, 0, 1) ** gamma`` per pixel: a
    constant blend (0.5 everywhere, as before) painted the whole frame blue and hid the very
    surface a person must look at, while a defect is a small part of a frame. With the defaults
    a pixel at the calibrated threshold (heat 0.5 on the detector's normalised scale) is tinted
    at 0.18, the normal background (heat 0.2-0.4) at 0.03-0.11, so the image shows through, and
    the hottest pixels are 70 % colour. Where the heat is 0 the image is returned unchanged.

    ``outline`` (bool, the heat map's shape) is drawn as white contours: the model's defect mask,
    so the decision is visible, not only the colours.
    """
    if not 0.0 <= alpha <= 1.0 or gamma <= 0:
        raise ValueError(f"overlay wants alpha in [0, 1] and gamma > 0; got {alpha}, {gamma}")
    rgb = to_display_rgb(image)
    height, width = rgb.shape[:2]
    heat = cv2.resize(heat.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)
    colours = cv2.cvtColor(
        cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    opacity = (alpha * heat**gamma)[:, :, None]
    mixed = rgb.astype(np.float32) * (1.0 - opacity) + colours.astype(np.float32) * opacity
    blended = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if outline is not None:
        region = cv2.resize(
            outline.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
        )
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(blended, contours, -1, (255, 255, 255), 1)
    return blended


def write_png(path, rgb: np.ndarray) -> None:
    """Write an RGB array as PNG (OpenCV wants BGR)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
