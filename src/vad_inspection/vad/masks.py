"""From an anomaly map to a defect mask: the calibrated threshold, and optionally a crack's width
and length.

A global threshold on a map decides *where* defects are, but not how wide they are: a deep crack's
response stays above any threshold well beyond its edges, a faint one's only along its centre. So a
mask thresholded at one level is too wide on deep cracks and too thin on faint ones (CrackForest,
README). A person annotating a crack instead marks where it is dark *relative to its own depth*.
:class:`MaskRule` does the same: within the thresholded region it keeps the pixels whose depth is at
least ``width_fraction`` of the deepest point within ``window`` px (a full width at a fraction of
the maximum, as in measuring a line's width from its profile), and then drops connected regions
shorter than ``min_length`` px (a crack is long; a grain of texture over the threshold is not).

The defaults (both off) give the plain thresholded map, so every model gets the same masks as
before unless it asks for more.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Side of the square in which a pixel's depth is compared with the local peak: wider than the
#: cracks the rule is for (CrackForest's are up to ~8 px at 64 px tiles), so a pixel at a crack's
#: edge sees the crack's centre. 11 and 21 px gave the same Dice as 15 within 0.002.
PEAK_WINDOW = 15


@dataclass(frozen=True)
class MaskRule:
    """How a thresholded anomaly map becomes a defect mask (see the module docstring).

    ``width_fraction`` 0 keeps the whole thresholded region; ``min_length`` 0 keeps every region.
    """

    width_fraction: float = 0.0
    min_length: int = 0
    window: int = PEAK_WINDOW

    def __post_init__(self) -> None:
        if not 0.0 <= self.width_fraction < 1.0:
            raise ValueError(f"mask width_fraction must be in [0, 1); got {self.width_fraction}")
        if self.min_length < 0:
            raise ValueError(f"mask min_length must be >= 0; got {self.min_length}")
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"mask window must be odd and >= 3; got {self.window}")

    @property
    def is_plain(self) -> bool:
        """True when the rule is the threshold alone."""
        return self.width_fraction == 0.0 and self.min_length == 0


#: The threshold alone (every model's masks unless it asks for more).
PLAIN = MaskRule()


def defect_masks(
    maps: np.ndarray,
    threshold: float,
    rule: MaskRule = PLAIN,
    depth: np.ndarray | None = None,
) -> np.ndarray:
    """Bool masks ``(N, H, W)``: ``maps >= threshold``, narrowed and filtered by ``rule``.

    ``depth`` ``(N, H, W)`` is what a defect's width is judged from (e.g. how much darker than
    normal each pixel is, before any line filter widened it); None uses the maps themselves.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W); got shape {maps.shape}")
    masks = maps >= threshold
    if rule.is_plain:
        return masks
    if depth is None:
        depth = maps
    elif depth.shape != maps.shape:
        raise ValueError(f"depth {depth.shape} must have the maps' shape {maps.shape}")
    kernel = np.ones((rule.window, rule.window), np.uint8)
    for mask, values in zip(masks, depth, strict=True):
        if rule.width_fraction > 0.0:
            values = np.ascontiguousarray(values, dtype=np.float32)
            peak = cv2.dilate(values, kernel)
            mask &= values >= rule.width_fraction * peak
        if rule.min_length > 0:
            mask[...] = long_regions(mask, rule.min_length)
    return masks


def long_regions(mask: np.ndarray, min_length: int) -> np.ndarray:
    """The 8-connected regions of ``mask`` whose bounding box's longer side is >= ``min_length``."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = extent >= min_length
    keep[0] = False  # the background
    return keep[labels]
