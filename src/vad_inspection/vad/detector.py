"""The per-frame path every user shares: one frame in; score, decision, heat map, mask, regions out.

The detector node, ``vad-inspection predict`` and the evaluation harness used to assemble a frame's
decisions each in their own way (which calibration applies to the map, which threshold to the
mask, at which size). Here that is done once:

- :class:`PostProcessor` turns a model's raw :class:`~vad_inspection.vad.base.Prediction` into
  decisions: normalised scores (0.5 = the calibrated threshold), anomalous or not at a threshold
  that can be changed at run time, heat maps normalised the same way, defect masks by the model's
  own mask rule, and connected defect regions. It holds no model, so the harness can use it with
  thresholds set on its own validation split.
- :class:`Detector` is a fitted model plus its post-processor plus the input conversion a camera
  needs: frames of any size, gray / RGB / BGR / RGBA / 16-bit / multiband, brought to what the
  model was fitted on (a colour camera works with a model fitted on gray images, and the reverse).
  :func:`load_detector` reads one from a model file.

The runtime threshold is on the normalised scale, so one number means the same for every model
and dataset: 0.5 is the threshold the model file was calibrated with, higher is stricter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from vad_inspection.errors import FrameError, SetupError
from vad_inspection.vad import artifact
from vad_inspection.vad.base import AnomalyModel, Prediction
from vad_inspection.vad.calibration import Calibration
from vad_inspection.vad.preprocess import InputError, as_hwc

#: Channel order of the colour encodings a camera may send (ROS names). Anything else with three
#: or four channels is taken as RGB(A); one channel is gray.
BGR_ENCODINGS = frozenset({"bgr8", "bgra8", "bgr16", "bgra16"})


@dataclass(frozen=True)
class Region:
    """One connected defect region of a frame's mask (8-connectivity), in frame pixels.

    ``bbox`` is ``(x, y, width, height)``; ``peak`` and ``mean`` are the normalised heat (0.5 =
    the pixel threshold) at its strongest and on average; ``centroid`` is ``(x, y)``; ``mask`` is
    the region's own pixels inside ``bbox`` (so a depth image can be read under it).
    """

    bbox: tuple[int, int, int, int]
    area: int
    peak: float
    mean: float
    centroid: tuple[float, float]
    mask: np.ndarray


@dataclass(frozen=True)
class FrameResult:
    """What one frame amounts to.

    ``score``: the model's raw image score. ``normalized``: on the calibrated scale (0.5 = the
    file's threshold; None for an uncalibrated model), ``anomalous`` at the current threshold
    (None uncalibrated). ``heat``: float32 ``(H, W)`` at the frame's size on the normalised scale
    (uncalibrated: min-max of this frame), ``mask``: bool ``(H, W)``, ``regions`` largest peak
    first. ``seconds``: time spent in the model and post-processing.
    """

    score: float
    normalized: float | None
    anomalous: bool | None
    heat: np.ndarray
    mask: np.ndarray
    regions: tuple[Region, ...]
    seconds: float = 0.0


@dataclass
class PostProcessor:
    """Threshold, normalisation, resize, mask and regions, in one reusable object.

    ``calibration`` sets the image threshold; ``map_calibration`` the pixel threshold (None: the
    maps share the image score's scale, as for PatchCore and PaDiM whose score is a map value).
    ``threshold`` is normalised (0.5 = calibrated) and may be changed at any time.
    ``min_region_px`` drops regions smaller than that (speckle) from ``regions``, not from the mask.
    """

    calibration: Calibration | None
    map_calibration: Calibration | None = None
    threshold: float = 0.5
    min_region_px: int = 0

    def __setattr__(self, name: str, value: object) -> None:
        if name == "threshold":  # checked on every change, not only at construction
            value = check_threshold(value)  # type: ignore[arg-type]
        super().__setattr__(name, value)

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def pixel_calibration(self) -> Calibration | None:
        return self.map_calibration or self.calibration

    @property
    def image_threshold(self) -> float | None:
        """The raw image score at which a frame becomes anomalous (None uncalibrated)."""
        return None if self.calibration is None else raw_value(self.calibration, self.threshold)

    @property
    def pixel_threshold(self) -> float | None:
        """The raw map value at which a pixel becomes a defect pixel (None uncalibrated)."""
        cal = self.pixel_calibration
        return None if cal is None else raw_value(cal, self.threshold)

    def normalize(self, scores: np.ndarray) -> np.ndarray | None:
        return None if self.calibration is None else self.calibration.normalize(scores)

    def anomalous(self, scores: np.ndarray) -> np.ndarray | None:
        threshold = self.image_threshold
        return None if threshold is None else np.asarray(scores) >= threshold

    def heat(self, maps: np.ndarray) -> np.ndarray:
        """Maps on the normalised scale (float32, 0.5 = threshold, not clipped: pixels far from
        the threshold keep their order, so pixel metrics on published maps stay meaningful; the
        overlay and region scores clip to [0, 1]); uncalibrated, each map min-max stretched."""
        cal = self.pixel_calibration
        if cal is not None:
            return cal.normalize(maps, clip=False).astype(np.float32)
        maps = np.asarray(maps, np.float32)
        low = maps.min(axis=(-2, -1), keepdims=True)
        span = np.maximum(maps.max(axis=(-2, -1), keepdims=True) - low, 1e-12)
        return ((maps - low) / span).astype(np.float32)

    def masks(self, prediction: Prediction) -> np.ndarray:
        """Bool masks ``(N, H, W)`` by the model's mask rule at the pixel threshold."""
        threshold = self.pixel_threshold
        if threshold is None:
            return np.zeros(prediction.maps.shape, dtype=bool)
        return prediction.masks(threshold)

    def frames(
        self, prediction: Prediction, shapes: Sequence[tuple[int, int]] | None = None
    ) -> list[FrameResult]:
        """One :class:`FrameResult` per image, maps brought to each image's ``(H, W)`` first
        (bilinear for the map and the mask rule's depth, so the mask is made at full size)."""
        n = len(prediction.scores)
        shapes = list(shapes) if shapes is not None else [prediction.maps.shape[1:]] * n
        normalized = self.normalize(prediction.scores)
        anomalous = self.anomalous(prediction.scores)
        out = []
        for i, shape in enumerate(shapes):
            one = _resized(_pick(prediction, i), tuple(shape))
            heat = self.heat(one.maps)[0]
            mask = self.masks(one)[0]
            out.append(
                FrameResult(
                    score=float(prediction.scores[i]),
                    normalized=None if normalized is None else float(normalized[i]),
                    anomalous=None if anomalous is None else bool(anomalous[i]),
                    heat=heat,
                    mask=mask,
                    regions=regions(mask, heat, self.min_region_px),
                )
            )
        return out


def check_threshold(value: float) -> float:
    """A normalised threshold must lie in (0, 1): 0 would flag everything, 1 nothing."""
    value = float(value)
    if not 0.0 < value < 1.0:
        raise SetupError(f"threshold {value} is outside (0, 1); 0.5 is the calibrated threshold")
    return value


def raw_value(calibration: Calibration, normalized: float) -> float:
    """The raw score that :meth:`Calibration.normalize` maps to ``normalized`` (inside (0, 1))."""
    span = max(calibration.high - calibration.low, 1e-12)
    return calibration.threshold + (normalized - 0.5) * span


def _pick(prediction: Prediction, i: int) -> Prediction:
    depth = None if prediction.depth is None else prediction.depth[i : i + 1]
    return Prediction(
        prediction.scores[i : i + 1], prediction.maps[i : i + 1], depth, prediction.rule
    )


def _resized(prediction: Prediction, shape: tuple[int, int]) -> Prediction:
    if prediction.maps.shape[1:] == shape:
        return prediction

    def up(maps: np.ndarray) -> np.ndarray:
        height, width = shape
        return cv2.resize(maps[0], (width, height), interpolation=cv2.INTER_LINEAR)[None]

    depth = None if prediction.depth is None else up(prediction.depth)
    return Prediction(prediction.scores, up(prediction.maps), depth, prediction.rule)


def regions(mask: np.ndarray, heat: np.ndarray, min_area: int = 0) -> tuple[Region, ...]:
    """Connected regions (8-connectivity) of ``mask`` of at least ``min_area`` px, by peak heat."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    found = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < max(min_area, 1):
            continue
        own = labels[y : y + h, x : x + w] == label
        values = heat[y : y + h, x : x + w][own]
        found.append(
            Region(
                bbox=(x, y, w, h),
                area=area,
                peak=float(np.clip(values.max(), 0.0, 1.0)),
                mean=float(np.clip(values.mean(), 0.0, 1.0)),
                centroid=(float(centroids[label][0]), float(centroids[label][1])),
                mask=own,
            )
        )
    return tuple(sorted(found, key=lambda r: -r.peak))


def convert_channels(
    image: np.ndarray, channels: int | None, encoding: str | None = None
) -> np.ndarray:
    """``image`` with the channel count the model was fitted on (``None``: leave as is).

    Colour to gray by luminance (BGR order when ``encoding`` says so), gray replicated to RGB,
    BGR(A) reordered to RGB, alpha dropped. A multiband image must have exactly the fitted bands:
    guessing which three of six bands an RGB model wants would score garbage silently.
    """
    image = as_hwc(np.asarray(image))
    have = image.shape[2]
    bgr = encoding in BGR_ENCODINGS
    if have in (3, 4) and (bgr or have == 4):
        order = [2, 1, 0] if bgr else [0, 1, 2]
        image = image[:, :, order]
        have = 3
    if channels is None or have == channels:
        return image
    if channels == 1 and have == 3:
        weights = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as OpenCV
        gray = image.astype(np.float32) @ weights
        if image.dtype.kind in "ui":
            gray = np.clip(np.rint(gray), 0, np.iinfo(image.dtype).max)
        return gray.astype(image.dtype)[:, :, None]
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=2)
    raise InputError(
        f"a {have}-channel image{f' ({encoding})' if encoding else ''} cannot feed a model "
        f"fitted on {channels}-channel images"
    )


class Detector:
    """A fitted model, its calibration and the frame conversion: frame in, :class:`FrameResult`
    out. ``channels`` is the channel count the model was fitted on (None: any); ``size`` its
    input size (what :meth:`warm_up` feeds it)."""

    def __init__(
        self,
        model: AnomalyModel,
        post: PostProcessor,
        channels: int | None = None,
        size: tuple[int, int] = (64, 64),
        source: str = "",
    ) -> None:
        self.model = model
        self.post = post
        self.channels = channels
        self.size = size
        self.source = source

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def threshold(self) -> float:
        return self.post.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.post.threshold = value

    def with_threshold(self, value: float) -> Detector:
        """A detector sharing this one's model with another threshold."""
        post = replace(self.post, threshold=value)
        return Detector(self.model, post, self.channels, self.size, self.source)

    def prepare(self, image: np.ndarray, encoding: str | None = None) -> np.ndarray:
        """A frame as the model takes it; bad frames raise :class:`FrameError` saying why."""
        image = np.asarray(image)
        if image.size == 0:
            raise InputError(f"empty frame (shape {image.shape})")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise InputError("frame contains NaN or infinite pixel values")
        return convert_channels(image, self.channels, encoding)

    def __call__(self, image: np.ndarray, encoding: str | None = None) -> FrameResult:
        """Score one frame at its own size."""
        start = time.perf_counter()
        prepared = self.prepare(image, encoding)
        try:
            prediction = self.model.predict([prepared])
        except (FrameError, SetupError):
            raise
        except (ValueError, cv2.error) as error:  # a model refusing this frame's content
            raise InputError(f"{self.name} cannot score this frame: {error}") from error
        [result] = self.post.frames(prediction, [prepared.shape[:2]])
        return replace(result, seconds=time.perf_counter() - start)

    def warm_up(self) -> float:
        """Run one blank frame through the model (sessions created, caches filled); seconds."""
        blank = np.full((*self.size, self.channels or 3), 128, np.uint8)
        return self(blank).seconds


def detector_for_model(
    model: AnomalyModel,
    calibration: Calibration | None,
    threshold: float = 0.5,
    min_region_px: int = 0,
) -> Detector:
    """A :class:`Detector` around a model fitted in this process (what a model file would hold:
    its map calibration and input spec come from the model's own artifact metadata)."""
    meta = model.to_artifact().meta if hasattr(model, "to_artifact") else {}
    return _from_meta(model, dict(meta), calibration, threshold, min_region_px, "")


def load_detector(path: Path | str, threshold: float = 0.5, min_region_px: int = 0) -> Detector:
    """A :class:`Detector` from a model file: the model (without progress bars), its image and
    map calibrations, and the channel count it was fitted on, all read from the file."""
    from vad_inspection.vad.registry import model_from_artifact

    art = artifact.load(path)
    model = model_from_artifact(art, path)
    calibration = _calibration(art.meta.get("calibration"))
    return _from_meta(model, dict(art.meta), calibration, threshold, min_region_px, str(path))


def _from_meta(
    model: AnomalyModel,
    meta: dict[str, object],
    calibration: Calibration | None,
    threshold: float,
    min_region_px: int,
    source: str,
) -> Detector:
    post = PostProcessor(
        calibration=calibration,
        map_calibration=_calibration(meta.get("map_calibration")),
        threshold=threshold,
        min_region_px=min_region_px,
    )
    spec = dict(meta.get("input") or {})
    channels = spec.get("channels", spec.get("image_channels"))
    size = tuple(int(v) for v in spec.get("size", (64, 64)))
    return Detector(model, post, None if channels is None else int(channels), size, source)


def _calibration(data: object) -> Calibration | None:
    return Calibration.from_dict(dict(data)) if data else None
